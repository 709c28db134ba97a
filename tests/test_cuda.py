"""CUDA paths: backward agreement with the CPU (fp32) and bf16 gradients, fp16 with a gradient
scaler, bf16 training, a weight average, resume of the scaler state, CPU/GPU agreement of
predictions.

Skipped without a GPU (the default CI machine has none); ``benchmarks/gpu_check.sh`` runs them
together with the GPU memory/speed benchmarks when one is available.
"""

import copy
import math

import numpy as np
import pytest
import torch
from helpers import (
    GradientComparison,
    cosine_similarity,
    gradient_batch,
    gradient_model,
    model_loss,
    parameter_gradients,
    run_until_crash,
)
from safetensors.torch import load_file

import hrmedseg
from hrmedseg.data.synthetic import make_synthetic_dataset
from hrmedseg.training.config import TrainConfig
from hrmedseg.training.engine import train
from hrmedseg.training.run_log import read_log

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = {"model": "hrmedseg_t", "img_size": 64, "batch_size": 4, "num_workers": 0, "device": "cuda"}


@pytest.fixture
def exact_fp32(monkeypatch):
    """cuDNN convolutions default to TF32 (10-bit mantissa); compare true fp32 with the CPU."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


GRADIENT_CASES = [
    pytest.param("hrmedseg_b", 256, 8, "", id="hrmedseg_b-256"),
    pytest.param("hrmedseg_b", 1024, 2, "", id="hrmedseg_b-1024"),
    pytest.param("hrmedseg_detail_b", 1024, 2, "", id="hrmedseg_detail_b-1024"),
    pytest.param("hrmedseg_sam_b", 256, 4, "boxes+points+mask", id="hrmedseg_sam_b-256"),
    # The deep stem's residual blocks at 1/4 and feature_norm, and the promptable detail path:
    pytest.param("hrmedseg_detail_deepstem_b", 512, 2, "", id="hrmedseg_detail_deepstem_b-512"),
    pytest.param("hrmedseg_sam_detail_b", 256, 4, "boxes+points+mask", id="hrmedseg_sam_detail_b-256"),
]


def gradients(model, batch, prompts, device, autocast_dtype=None):
    model = copy.deepcopy(model).to(device).train()
    with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = model_loss(model, batch, prompts or "boxes")
    return parameter_gradients(model, loss)


@pytest.mark.parametrize("name,size,batch_size,prompts", GRADIENT_CASES)
def test_cuda_gradients_match_the_cpu(exact_fp32, name, size, batch_size, prompts):
    # The check that caught the channels-last avg_pool2d backward (docs/model.md): same weights,
    # same batch, loss equal to 6 digits, gradients off by 100 %.
    model, batch = gradient_model(name, size), gradient_batch(batch_size, size)
    on_cpu, on_gpu = (gradients(model, batch, prompts, device) for device in ("cpu", "cuda"))
    GradientComparison.of(on_gpu, on_cpu).assert_agree()


@pytest.mark.parametrize("name,size,batch_size,prompts", GRADIENT_CASES)
def test_bf16_gradients_point_where_fp32_ones_do(exact_fp32, name, size, batch_size, prompts):
    model, batch = gradient_model(name, size), gradient_batch(batch_size, size)
    fp32 = gradients(model, batch, prompts, "cuda")
    bf16 = gradients(model, batch, prompts, "cuda", torch.bfloat16)
    assert cosine_similarity(bf16, fp32) > 0.99


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


def test_a_weight_average_on_cuda_leaves_training_alone_and_is_what_is_saved(tmp_path, data):
    base = {"data": str(data), "epochs": 2, "amp": "bf16", **TINY}
    train(TrainConfig(output=str(tmp_path / "plain"), **base), progress=False)
    train(TrainConfig(output=str(tmp_path / "ema"), ema_decay=0.9, **base), progress=False)
    plain, averaged = (torch.load(tmp_path / r / "last.pt", weights_only=False) for r in ("plain", "ema"))
    # The same training up to CUDA's non-deterministic atomic adds (see the fp16 resume test).
    a, b = (torch.cat([v.flatten().float() for v in s["model"].values()]) for s in (plain, averaged))
    assert (a - b).norm() <= 1e-2 * a.norm()
    assert averaged["average"]["updates"] == averaged["scheduler"]["last_epoch"] > 0
    saved = load_file(str(tmp_path / "ema" / "last.safetensors"))
    for key, value in averaged["average"]["weights"].items():
        assert value.is_cuda and torch.isfinite(value).all() and torch.equal(saved[key], value.cpu()), key


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
