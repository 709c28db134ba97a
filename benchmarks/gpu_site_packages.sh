#!/usr/bin/env bash
# Unpacks, into a folder that travels with the checkout to the device machine, the wheels of the
# packages its image lacks: pydantic (a runtime dependency of hrmedseg) and
# segmentation-models-pytorch with what it imports (the U-Net rows of the GPU tables). The device
# has no package index, so they are fetched here for its Python and unpacked as a site folder;
# benchmarks/gpu_check.sh puts gpu_data/site first on PYTHONPATH when it exists. About 28 MiB;
# with the 25 MiB hc18 copy, within the 64 MiB a checkout may carry.
#
#   bash benchmarks/gpu_site_packages.sh [SITE] [PYTHON_VERSION]   # defaults: gpu_data/site, 3.12
set -euo pipefail
site="${1:-gpu_data/site}"
python_version="${2:-3.12}"
# The device image already has torch, torchvision, numpy, pillow, safetensors, pyyaml and tqdm;
# the rest of the dependency closure is listed by hand because `pip download` cannot leave torch
# out of a resolution.
packages=(
    pydantic pydantic-core annotated-types typing-extensions typing-inspection
    segmentation-models-pytorch timm huggingface-hub click httpx2 httpcore2 anyio h11
    truststore idna filelock fsspec packaging
)
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$wheels" "${packages[@]}"
rm -rf "$site"
mkdir -p "$site"
for wheel in "$wheels"/*.whl; do
    python -m zipfile -e "$wheel" "$site"
done
echo "$(ls "$wheels" | wc -l) wheels unpacked into $site ($(du -sh "$site" | cut -f1))"
