"""Feature distillation from a SAM teacher: a tiny teacher with SAM's architecture and key names
and random weights, saved as a SAM-format checkpoint, distilled into hrmedseg_t at 64 x 64."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import run_until_crash
from PIL import Image
from safetensors.torch import load_file

import hrmedseg
from hrmedseg.checkpoint import CheckpointMismatchError
from hrmedseg.cli import main
from hrmedseg.data.io import DataError
from hrmedseg.distillation import CacheMismatchError, DistillConfig, EmbeddingCache, distill, engine
from hrmedseg.distillation.data import find_images, split_images
from hrmedseg.distillation.engine import DistillationObjective
from hrmedseg.distillation.teacher import TeacherSpec, build_teacher, load_teacher, resize_position_tables
from hrmedseg.modeling import embedding_encoder
from hrmedseg.training.guards import TrainingDivergedError

TINY_TEACHER = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": [1], "window_size": 4}
NATIVE_SIZE = 128  # the size the tiny teacher "was trained" at; runs use 64, so tables are resized
NUM_IMAGES = 10
PATCH = hrmedseg.get_model_config("hrmedseg_t").patch_size  # the student's, which the teacher shares


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory):
    """A SAM-format checkpoint: image_encoder.* (random, incl. non-zero relative positions) plus
    another SAM part that the teacher must ignore."""
    torch.manual_seed(1)
    encoder = build_teacher(TeacherSpec(**TINY_TEACHER), NATIVE_SIZE, PATCH)
    for name, param in encoder.named_parameters():
        if "rel_pos" in name or "pos_embed" in name:
            torch.nn.init.normal_(param, std=0.02)
    state = {f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["prompt_encoder.not_a_teacher_key"] = torch.zeros(3)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Unlabeled images of mixed sizes, formats and modes, in nested folders, plus files to skip."""
    root = tmp_path_factory.mktemp("unlabeled")
    rng = np.random.default_rng(0)
    for i in range(NUM_IMAGES):
        folder = root / ("sa_000000" if i % 2 else "extra/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        yy, xx = np.mgrid[:h, :w]
        base = (np.sin(xx / (3 + i)) + np.cos(yy / (4 + i)) + 2) * 60
        pixels = np.stack([base, base[::-1], base[:, ::-1]], -1) + rng.normal(0, 5, (h, w, 3))
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        (image.convert("L") if i % 3 == 0 else image).save(
            folder / f"img_{i:02d}.{'jpg' if i % 4 == 1 else 'png'}"
        )
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".hidden" / "skip.png")
    return root


def make_config(image_folder, sam_checkpoint, output, **overrides) -> DistillConfig:
    values = dict(
        data=str(image_folder), output=str(output), teacher=dict(TINY_TEACHER),
        teacher_checkpoint=str(sam_checkpoint), student="hrmedseg_t", img_size=64, epochs=2,
        batch_size=4, val_fraction=0.2, num_workers=0, device="cpu", cache_shard_size=3,
    )  # fmt: skip
    values.update(overrides)
    return DistillConfig(**values)


class TeacherCalls:
    """Counts teacher loads and the images the teacher embeds."""

    def __init__(self, monkeypatch):
        self.loads, self.images = 0, 0
        original = engine.load_teacher

        def counting_load(*args, **kwargs):
            self.loads += 1
            teacher, spec = original(*args, **kwargs)
            teacher.register_forward_hook(lambda module, inputs, out: self._count(len(inputs[0])))
            return teacher, spec

        monkeypatch.setattr(engine, "load_teacher", counting_load)

    def _count(self, n: int) -> None:
        self.images += n


def test_image_folder_is_searched_recursively_and_split_with_a_seed(image_folder):
    files = find_images(image_folder)
    assert len(files) == NUM_IMAGES
    assert "extra/deeper/img_00.png" in files and not any("hidden" in f for f in files)
    split = split_images(files, seed=3, val_fraction=0.2)
    assert split == split_images(files, seed=3, val_fraction=0.2)
    assert len(split["val"]) == 2 and sorted(split["train"] + split["val"]) == files
    assert split != split_images(files, seed=4, val_fraction=0.2)


def test_a_segmentation_dataset_folder_gives_its_images_not_its_masks(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        Image.new("L", (16, 16)).save(tmp_path / folder / "case.png")
    assert find_images(tmp_path) == ["images/case.png"]


def test_unreadable_images_are_named(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "a" / "good.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        find_images(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        find_images(tmp_path / "a" / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_images(tmp_path / "empty")


def test_teacher_loads_sam_keys_and_resizes_position_tables(sam_checkpoint):
    saved = torch.load(sam_checkpoint, weights_only=True)
    spec = TeacherSpec(**TINY_TEACHER)
    reference = build_teacher(spec, NATIVE_SIZE, PATCH).eval()
    reference.load_state_dict(
        {k[len("image_encoder.") :]: v for k, v in saved.items() if "image_encoder" in k}
    )
    teacher, _ = load_teacher(TINY_TEACHER, sam_checkpoint, img_size=NATIVE_SIZE, patch_size=PATCH)
    x = torch.randn(1, 3, NATIVE_SIZE, NATIVE_SIZE)
    torch.testing.assert_close(teacher(x), reference(x))  # same weights at the native size
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training

    small, _ = load_teacher(TINY_TEACHER, sam_checkpoint, img_size=64, patch_size=PATCH)
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 256, 4, 4)
    assert small.pos_embed.shape == (1, 4, 4, 32)
    assert small.blocks[1].attn.rel_pos_h.shape == (7, 16)  # global block: 2 * 4 - 1 offsets
    torch.testing.assert_close(small.blocks[0].attn.rel_pos_h, reference.blocks[0].attn.rel_pos_h)  # windowed
    # Resizing to the native size changes nothing.
    weights = reference.state_dict()
    resized = resize_position_tables(weights, spec, NATIVE_SIZE // PATCH)
    assert all(torch.equal(resized[k], weights[k]) for k in weights)


def test_teacher_checkpoint_errors_name_the_problem(sam_checkpoint, tmp_path):
    with pytest.raises(CheckpointMismatchError, match=r"width 32, depth 2.*not the requested teacher vit_b"):
        load_teacher("vit_b", sam_checkpoint, img_size=64, patch_size=PATCH)
    other = tmp_path / "other.pth"
    torch.save({"mask_decoder.w": torch.zeros(2)}, other)
    with pytest.raises(CheckpointMismatchError, match="no 'image_encoder.\\*' keys"):
        load_teacher(TINY_TEACHER, other, img_size=64, patch_size=PATCH)
    with pytest.raises(FileNotFoundError, match="teacher checkpoint not found"):
        load_teacher(TINY_TEACHER, tmp_path / "nope.pth", img_size=64, patch_size=PATCH)
    with pytest.raises(ValueError, match="unknown teacher 'vit_x'"):
        load_teacher("vit_x", sam_checkpoint, img_size=64, patch_size=PATCH)
    with pytest.raises(
        CheckpointMismatchError, match=rf"embeds {PATCH} x {PATCH} patches, the student 8 x 8"
    ):
        load_teacher(TINY_TEACHER, sam_checkpoint, img_size=64, patch_size=8)


@pytest.mark.parametrize("name", ["hrmedseg_t", "hrmedseg_detail_deepstem_t"])
def test_distillation_loss_falls_over_a_few_steps(sam_checkpoint, name):
    teacher, _ = load_teacher(TINY_TEACHER, sam_checkpoint, img_size=64, patch_size=PATCH)
    student = embedding_encoder(hrmedseg.create_model(name, img_size=64))
    objective = DistillationObjective(student, amp_dtype=None)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        targets = teacher(images)
    losses = []
    for _ in range(15):
        loss, predicted = objective(images, targets)
        assert predicted.shape == targets.shape == (4, 256, 4, 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_cached_run_embeds_each_image_once_and_reuses_the_cache(
    tmp_path, image_folder, sam_checkpoint, monkeypatch
):
    calls = TeacherCalls(monkeypatch)
    cache_dir = tmp_path / "cache"
    config = make_config(image_folder, sam_checkpoint, tmp_path / "run", epochs=3, cache=str(cache_dir))
    result = distill(config, progress=False)
    assert (calls.loads, calls.images) == (1, NUM_IMAGES)  # three epochs, each image embedded once
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header = "epoch,lr,train_loss,grad_norm,grad_norm_max,val_loss,val_cosine,epoch_seconds"
    assert rows[0] == header and len(rows) == 4
    assert np.isfinite(result["best_loss"])

    # The cache holds what the teacher computes, within float16 precision.
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["header"]["embedding_shape"] == [256, 4, 4] and manifest["header"]["dtype"] == "float16"
    assert len(list(cache_dir.glob("shard_*.safetensors"))) == 4  # 10 images, 3 per shard
    cache = EmbeddingCache(
        cache_dir, manifest["header"], manifest["files"], shard_size=manifest["shard_size"]
    )
    teacher, _ = load_teacher(TINY_TEACHER, sam_checkpoint, img_size=64, patch_size=PATCH)
    dataset = engine.UnlabeledImages(
        image_folder, manifest["files"], size=(64, 64), pixel_mean=(0.485, 0.456, 0.406),
        pixel_std=(0.229, 0.224, 0.225),
    )  # fmt: skip
    for i in (0, 4, 9):
        cached = cache.read(i)
        assert cached.dtype == torch.float16
        with torch.no_grad():
            expected = teacher(dataset[i]["image"][None])[0]
        torch.testing.assert_close(cached.float(), expected, atol=2e-3, rtol=2e-3)

    # A second run with the complete cache never loads the teacher.
    calls.loads = calls.images = 0
    distill(make_config(image_folder, sam_checkpoint, tmp_path / "run2", epochs=1, cache=str(cache_dir)),
            progress=False)  # fmt: skip
    assert (calls.loads, calls.images) == (0, 0)

    # An interrupted fill (a shard missing) resumes with just that shard.
    (cache_dir / "shard_00002.safetensors").unlink()
    distill(make_config(image_folder, sam_checkpoint, tmp_path / "run3", epochs=1, cache=str(cache_dir)),
            progress=False)  # fmt: skip
    assert (calls.loads, calls.images) == (1, 3)

    # Another input size needs another cache.
    with pytest.raises(CacheMismatchError, match=r"header.embedding_shape, header.img_size"):
        config = make_config(
            image_folder, sam_checkpoint, tmp_path / "run4", img_size=32, cache=str(cache_dir)
        )
        distill(config, progress=False)


def test_resume_ends_with_the_same_encoder_as_an_uninterrupted_run(tmp_path, image_folder, sam_checkpoint):
    full = make_config(image_folder, sam_checkpoint, tmp_path / "full", epochs=3)
    distill(full, progress=False)

    part = make_config(image_folder, sam_checkpoint, tmp_path / "part", epochs=3)
    run_until_crash(distill, part, progress=False)
    distill(part, resume=True, progress=False)
    a = load_file(tmp_path / "full" / "last.safetensors")
    b = load_file(tmp_path / "part" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "part" / "log.csv").read_text().splitlines()) == 4
    with pytest.raises(ValueError, match="already holds a run"):
        distill(part, progress=False)


def test_distilled_encoder_initialises_hrmedseg_and_hrmedseg_sam(tmp_path, image_folder, sam_checkpoint):
    distill(make_config(image_folder, sam_checkpoint, tmp_path / "run", epochs=1), progress=False)
    encoder_file = tmp_path / "run" / "best.safetensors"
    stored = load_file(encoder_file)
    assert stored and all(k.startswith("image_encoder.") for k in stored)
    for name in ("hrmedseg_t", "hrmedseg_sam_t"):
        model = hrmedseg.create_model(name, img_size=64)
        hrmedseg.load_encoder_weights(model, encoder_file)
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in stored.items())
    with pytest.raises(
        CheckpointMismatchError, match="hrmedseg_t encoder \\(C=24\\); it does not fit hrmedseg_s"
    ):
        hrmedseg.load_encoder_weights(hrmedseg.create_model("hrmedseg_s"), encoder_file)
    with pytest.raises(ValueError, match="holds only encoder weights"):
        hrmedseg.load_model(encoder_file)


@pytest.mark.parametrize("student", ["hrmedseg_detail_deepstem_t", "hrmedseg_sam_detail_t"])
def test_a_student_whose_encoder_reads_a_stem_learns_with_it(tmp_path, image_folder, sam_checkpoint, student):
    # Its encoder patchifies the stem's 1/4 map: the stem and the encoder learn together, the file
    # holds both, and --init-encoder loads both.
    config = make_config(image_folder, sam_checkpoint, tmp_path / "run", student=student, epochs=2)
    full = make_config(image_folder, sam_checkpoint, tmp_path / "full", student=student, epochs=2)
    distill(full, progress=False)
    run_until_crash(distill, config, progress=False)
    distill(config, resume=True, progress=False)
    stored = load_file(tmp_path / "run" / "last.safetensors")
    uninterrupted = load_file(tmp_path / "full" / "last.safetensors")
    assert stored.keys() == uninterrupted.keys() and all(
        torch.equal(stored[k], uninterrupted[k]) for k in stored
    )

    torch.manual_seed(config.seed)  # the run's initial weights
    initial = hrmedseg.create_model(student, img_size=64).state_dict()
    expected = {k for k in initial if k.startswith(("detail_stem.", "image_encoder."))}
    assert stored.keys() == expected
    moved = {
        k.split(".")[0] for k, v in stored.items() if v.is_floating_point() and not torch.equal(v, initial[k])
    }
    assert moved == {"detail_stem", "image_encoder"}

    model = hrmedseg.create_model(student, img_size=64)
    hrmedseg.load_encoder_weights(model, tmp_path / "run" / "best.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in load_file(tmp_path / "run" / "best.safetensors").items())
    with pytest.raises(
        CheckpointMismatchError,
        match=r"reads a detail stem's map, the one of hrmedseg_t \(C=24\) reads the image",
    ):
        hrmedseg.load_encoder_weights(
            hrmedseg.create_model("hrmedseg_t"), tmp_path / "run" / "best.safetensors"
        )


def test_an_encoder_file_fits_a_detail_model_all_or_nothing(tmp_path, image_folder, sam_checkpoint):
    distill(make_config(image_folder, sam_checkpoint, tmp_path / "plain", epochs=1), progress=False)
    detail = hrmedseg.create_model("hrmedseg_detail_deepstem_t", img_size=64)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"\(hrmedseg_t\) reads the image, the one of hrmedseg_detail_deepstem_t \(C=24\) reads a "
        r"detail stem's map; distil one for it with `hrmedseg distill --student hrmedseg_detail_deepstem_t`",
    ):
        hrmedseg.load_encoder_weights(detail, tmp_path / "plain" / "best.safetensors")

    # A stem that fits beside an encoder that does not: the model keeps its own stem as well.
    small = hrmedseg.create_model("hrmedseg_detail_deepstem_s", img_size=64)
    torch.manual_seed(3)
    tiny = hrmedseg.create_model("hrmedseg_detail_deepstem_t", img_size=64)
    stem_shapes = {k: v.shape for k, v in tiny.detail_stem.state_dict().items()}
    assert stem_shapes == {k: v.shape for k, v in small.detail_stem.state_dict().items()}
    hrmedseg.save_model(tiny, tmp_path / "t.safetensors")
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(
        CheckpointMismatchError, match="hrmedseg_detail_deepstem_t encoder \\(C=24\\); it does not fit"
    ):
        hrmedseg.load_encoder_weights(small, tmp_path / "t.safetensors")
    assert all(torch.equal(v, before[k]) for k, v in small.state_dict().items())


def test_cli_distill_with_a_config_file(tmp_path, image_folder, sam_checkpoint, capsys):
    config_file = tmp_path / "distill.yaml"
    config_file.write_text(yaml.safe_dump({"teacher": TINY_TEACHER, "val_fraction": 0.2, "num_workers": 0}))
    args = ["distill", "--config", str(config_file), "--data", str(image_folder), "--teacher-checkpoint",
            str(sam_checkpoint), "--student", "hrmedseg_t", "--img-size", "64", "--epochs", "1",
            "--batch-size", "4", "--output", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
            "--device", "cpu", "--clip-grad", "0.5", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "--init-encoder" in out and str(tmp_path / "run" / "best.safetensors") in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["teacher"] == TINY_TEACHER and saved["img_size"] == 64 and saved["clip_grad"] == 0.5
    assert main(["distill", "--resume", "--output", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 0
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 3

    assert main(["distill", "--data", str(image_folder), "--output", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--teacher-checkpoint is required" in capsys.readouterr().err
    missing = ["distill", "--data", str(image_folder), "--output", str(tmp_path / "x"),
               "--teacher-checkpoint", str(tmp_path / "none.pth"), "--quiet"]  # fmt: skip
    assert main(missing) == 2
    assert "teacher checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
def test_distill_ddp_on_gloo_with_two_processes_shares_the_cache(tmp_path, image_folder, sam_checkpoint):
    config_file = tmp_path / "distill.yaml"
    config_file.write_text(
        yaml.safe_dump({"teacher": TINY_TEACHER, "val_fraction": 0.2, "cache_shard_size": 2})
    )
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
        "-m", "hrmedseg.cli", "distill", "--config", str(config_file), "--data", str(image_folder),
        "--teacher-checkpoint", str(sam_checkpoint), "--student", "hrmedseg_t", "--img-size", "64",
        "--epochs", "2", "--batch-size", "4", "--output", str(tmp_path / "run"),
        "--cache", str(tmp_path / "cache"), "--num-workers", "0", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "cache").glob("shard_*.safetensors"))) == 5  # both ranks filled their shards
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 3
    model = hrmedseg.create_model("hrmedseg_t", img_size=64)
    hrmedseg.load_encoder_weights(model, tmp_path / "run" / "best.safetensors")


def test_bf16_checkpointed_distillation_with_a_cache_runs(tmp_path, image_folder, sam_checkpoint):
    config = make_config(image_folder, sam_checkpoint, tmp_path / "run", epochs=1, amp="bf16",
                         grad_checkpointing=True, accumulate=2, cache=str(tmp_path / "cache"))  # fmt: skip
    result = distill(config, progress=False)
    assert np.isfinite(result["last"]["train_loss"]) and np.isfinite(result["last"]["val_loss"])
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["header"]["amp"] == "bf16"  # bf16 teacher embeddings are not mixed with fp32 ones
    with pytest.raises(ValueError, match="amp fp16 needs a CUDA device"):
        distill(make_config(image_folder, sam_checkpoint, tmp_path / "fp16", amp="fp16"), progress=False)


def test_a_diverged_distillation_stops_and_says_how_to_resume(
    tmp_path, image_folder, sam_checkpoint, monkeypatch
):
    mse = engine.F.mse_loss
    poisoned = {"on": False}

    def mse_nan_once_poisoned(predicted, target):  # training steps only: validation runs without grad
        loss = mse(predicted, target)
        return loss * float("nan") if poisoned["on"] and torch.is_grad_enabled() else loss

    def poison_after_epoch_1(epoch, row):
        poisoned["on"] = True

    config = make_config(image_folder, sam_checkpoint, tmp_path / "run", epochs=3, clip_grad=0.5)
    monkeypatch.setattr(engine.F, "mse_loss", mse_nan_once_poisoned)
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 2, step 1 of") as caught:
        distill(config, progress=False, on_epoch_end=poison_after_epoch_1)
    assert f"hrmedseg distill --resume --output {tmp_path / 'run'} --clip-grad" in str(caught.value)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["clip_grad"] == 0.5
