"""CUDA paths: fp16 with a gradient scaler, bf16, resume of the scaler state, CPU/GPU agreement.

Skipped without a GPU (the default CI machine has none); ``benchmarks/gpu_check.sh`` runs them
together with the GPU memory/speed benchmarks when one is available.
"""

import copy
import math

import numpy as np
import pytest
import torch
from helpers import run_until_crash

import hrmedseg
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import train
from hrmedseg.training.logging import read_log

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = {"model": "hrmedseg_t", "img_size": 64, "batch_size": 4, "num_workers": 0, "device": "cuda"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("cuda"), num_images=16, size_range=(60, 90))


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_mixed_precision_training_on_cuda_lowers_the_loss(tmp_path, data, amp):
    run = tmp_path / amp
    train(TrainConfig(data=str(data), output=str(run), epochs=4, lr=3e-3, amp=amp, **TINY), progress=False)
    losses = [row["train_loss"] for row in read_log(run / "log.csv")]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    scaler = torch.load(run / "last.pt", weights_only=False)["scaler"]
    if amp == "fp16":  # the scaler is live and its scale finite
        assert 0 < scaler["scale"] < float("inf")
    model = hrmedseg.load_model(run / "best.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp16_resume_ends_like_an_uninterrupted_run(tmp_path, data):
    base = {"data": str(data), "epochs": 2, "amp": "fp16", **TINY}
    train(TrainConfig(output=str(tmp_path / "straight"), **base), progress=False)

    run_until_crash(train, TrainConfig(output=str(tmp_path / "resumed"), **base), progress=False)
    train(TrainConfig(output=str(tmp_path / "resumed"), **base), resume=True, progress=False)

    straight, resumed = (
        torch.load(tmp_path / r / "last.pt", weights_only=False) for r in ("straight", "resumed")
    )
    assert straight["scaler"] == resumed["scaler"]
    # CUDA's atomic-add kernels (e.g. the bilinear upsampling's backward) are not bit-reproducible,
    # so the weights are compared with a tolerance rather than for equality.
    a, b = (torch.cat([v.flatten().float() for v in s["model"].values()]) for s in (straight, resumed))
    assert (a - b).norm() <= 1e-2 * a.norm()


def test_segmenter_on_cuda_agrees_with_the_cpu():
    model = hrmedseg.create_model("hrmedseg_t", img_size=128).eval()
    image = np.random.default_rng(0).integers(0, 256, (150, 110, 3), dtype=np.uint8)
    (on_cpu,) = hrmedseg.Segmenter(copy.deepcopy(model), device="cpu").iter_probabilities([image])
    (on_gpu,) = hrmedseg.Segmenter(model, device="cuda").iter_probabilities([image])
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)
