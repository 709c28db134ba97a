#!/usr/bin/env bash
# Everything this project checks on a GPU, in one call of about five minutes (H100-class card):
# the CUDA tests (fp16 + gradient scaler, bf16, fp16 resume, CPU/GPU agreement), then the
# memory/speed tables of benchmarks/memory_speed.py for hrmedseg_b and, when
# segmentation-models-pytorch is installed, the U-Net baseline.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]      # default: $OUT, else ./gpu_check
#
# Needs the project installed (pip install -e ".[test]"; add ".[benchmark]" for the U-Net).
# Copy the tables from RESULTS_DIR/*.md into docs/benchmarks.md with the card's name.
set -uo pipefail
out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.csv" 2>&1
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" >>"$out/gpu.csv"

python -m pytest -q -m cuda -rs tests/test_cuda.py 2>&1 | tee "$out/pytest_cuda.txt"

bench() {  # name, then memory_speed.py arguments
    local name=$1
    shift
    python benchmarks/memory_speed.py --device cuda --json "$out/$name.json" "$@" | tee "$out/$name.md"
}
bench hrmedseg_b_fp32 --amp none --sizes 512 1024 --batches 1 4 16
bench hrmedseg_b_bf16 --amp bf16 --sizes 1024 --batches 1 16
bench hrmedseg_b_fp16 --amp fp16 --sizes 1024 --batches 1 16
if python -c "import segmentation_models_pytorch" 2>/dev/null; then
    bench unet_resnet34_fp32 --model unet_resnet34 --amp none --sizes 512 1024 --batches 1 4
else
    echo "segmentation-models-pytorch not installed: U-Net rows skipped" | tee "$out/unet_skipped.txt"
fi
