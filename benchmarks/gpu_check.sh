#!/usr/bin/env bash
# Everything this project checks on a GPU, in one call of under ten minutes (H100-class card; the
# sections have timeouts and the benchmarks stop 540 s after the start):
#   1. the CUDA tests: CPU-vs-CUDA gradients of every parameter (fp32, 256² to 1024²; hrmedseg_b,
#      the detail path, the deep stem, HRMedSegSAM and its detail path), bf16
#      gradients against fp32, the attention-like ops against explicit formulas, fp16 + gradient
#      scaler, bf16, a weight average (ema_decay), fp16 resume, CPU/GPU agreement of predictions;
#   2. a stability run: hrmedseg_b on hc18 at 256², batch 16, the paper recipe, 10 epochs; from
#      epoch 3 on the training loss must stay at most epoch 2's (benchmarks/stability_check.py);
#   3. the same stability run under --amp bf16, to end within 0.01 Dice of fp32;
#   4. the memory/speed tables of benchmarks/memory_speed.py (hrmedseg_b fp32 and bf16), the
#      side-by-side step of benchmarks/authors_side_by_side.py at batch 16 and 1 when
#      gpu_data/authors holds the authors' HRMedSeg checkout (their .py files only), the U-Net
#      rows when segmentation-models-pytorch can be imported, then --compile default and
#      reduce-overhead.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR] [DATA]   # defaults: $OUT (else ./gpu_check), gpu_data/hc18
#
# Everything it reads travels in the git-ignored gpu_data/ (carry it; about 55 MiB), made beforehand
# on this side:
#   python benchmarks/copy_as_jpeg.py ../shared/data/hc18 gpu_data/hc18      # 25 MiB
#   bash benchmarks/gpu_site_packages.sh      # pydantic and the U-Net's packages, for the device's Python
#   mkdir -p gpu_data/authors && (cd AUTHORS_CHECKOUT && git ls-files '*.py' | tar -cf - -T -) | tar -xf - -C gpu_data/authors
# Without an installed hrmedseg the script runs it from src/. Results: gpu_check.log (everything),
# stability_log.csv, stability_bf16_log.csv, benchmarks.md; copy the numbers into docs/benchmarks.md
# with the card's name. Exit status: non-zero if a check failed.
set -uo pipefail
out="${1:-${OUT:-gpu_check}}"
data="${2:-gpu_data/hc18}"
mkdir -p "$out"
log="$out/gpu_check.log"
python -c "import hrmedseg" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# Runtime dependencies the device image lacks (pydantic), unpacked from wheels on this side.
[ -d gpu_data/site ] && export PYTHONPATH="$PWD/gpu_data/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0
section() { echo -e "\n== $* ($(date +%T))" | tee -a "$log"; }

section "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" 2>&1 | tee -a "$log"

section "CUDA tests"
timeout 150 python -m pytest -q -m cuda -rs -p no:cacheprovider tests/test_cuda.py tests/test_attention.py 2>&1 \
    | tee -a "$log" || status=1

section "stability run: hrmedseg_b, $data, 256², batch 16, paper recipe, 10 epochs"
if [ -d "$data" ]; then
    run=$(mktemp -d)/stability
    timeout 150 python -m hrmedseg.cli train --config configs/paper.yaml --data "$data" --img-size 256 \
        --batch-size 16 --epochs 10 --num-workers 8 --device cuda --output "$run" --quiet 2>&1 \
        | tee -a "$log" || status=1
    cp "$run/log.csv" "$out/stability_log.csv" 2>/dev/null
    python benchmarks/stability_check.py "$run/log.csv" 2>&1 | tee -a "$log" || status=1
    section "the same under --amp bf16"
    timeout 120 python -m hrmedseg.cli train --config configs/paper.yaml --data "$data" --img-size 256 \
        --batch-size 16 --epochs 10 --num-workers 8 --device cuda --amp bf16 --output "$run-bf16" --quiet 2>&1 \
        | tee -a "$log" || status=1
    cp "$run-bf16/log.csv" "$out/stability_bf16_log.csv" 2>/dev/null
    python benchmarks/stability_check.py "$run-bf16/log.csv" --reference "$run/log.csv" 2>&1 | tee -a "$log" || status=1
else
    echo "no data at $data: make it with benchmarks/copy_as_jpeg.py; stability run skipped" | tee -a "$log"
    status=1
fi

# Measured on an H200: the tests and both stability runs end about 230 s in, the fp32 table takes
# 90 s; the rest is ordered by what is least often measured elsewhere, compile rows last.
budget=540
section "memory and speed (within what is left of $budget s)"
left() { echo $((budget - SECONDS)); }
bench() {  # title, then memory_speed.py arguments; skipped when the time is spent
    if (($(left) < 20)); then
        echo "no time left for: $1" | tee -a "$log"
        return
    fi
    echo -e "\n### $1\n" >>"$out/benchmarks.md"
    shift
    timeout "$(left)" python benchmarks/memory_speed.py --device cuda "$@" 2>&1 | tee -a "$log" "$out/benchmarks.md"
}
bench "hrmedseg_b fp32" --amp none --sizes 1024 --batches 1 16
bench "hrmedseg_b bf16" --amp bf16 --sizes 1024 --batches 16 --modes train --no-checkpointing-rows
if [ -d gpu_data/authors ]; then
    for batch in 16 1; do
        if (($(left) < 40)); then
            echo "no time left for: the side by side at batch $batch" | tee -a "$log"
            continue
        fi
        echo -e "\n### side by side with the authors' code, batch $batch\n" >>"$out/benchmarks.md"
        timeout "$(left)" python benchmarks/authors_side_by_side.py --authors-repo gpu_data/authors \
            --device cuda --batch $batch 2>&1 | tee -a "$log" "$out/benchmarks.md"
    done
fi
if python -c "import segmentation_models_pytorch" 2>/dev/null; then
    bench "U-Net (resnet34) fp32" --model unet_resnet34 --amp none --sizes 512 1024 --batches 1 4
else
    echo "segmentation-models-pytorch not installed (benchmarks/gpu_site_packages.sh): U-Net rows skipped" \
        | tee -a "$log"
fi
bench "hrmedseg_b fp32, --compile default" --compile default --sizes 1024 --batches 16 --modes train --no-checkpointing-rows
bench "hrmedseg_b fp32, --compile reduce-overhead" --compile reduce-overhead --sizes 1024 --batches 1 --modes train --no-checkpointing-rows
section "done: status $status"
exit $status
