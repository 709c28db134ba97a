"""Real-data checks on the public datasets in ../shared/data; each is skipped when its folder is
absent (e.g. on a user's machine), and all run only on request (``pytest -m realdata``).

- hc18 (fetal-head ultrasound, CC BY 4.0): hrmedseg_b from scratch with the default recipe, what
  ``hrmedseg train`` uses without a config (AdamW, warm-up, cosine decay, the default
  augmentation), 30 epochs at 256 x 256, batch 16, must reach a test Dice of at least 0.92 at
  original resolution; the left-right test-time flip must not lose Dice. 20 epochs were too
  close to the floor: the same code scored 0.944, then 0.923 and 0.913 as the random stream and
  the installed packages changed. 30 epochs: 0.945 (0.947 with the flip) with 2 threads, and with
  one thread 0.947 and 0.953 for seeds 0 and 1. 45 minutes here beside three other runs; CI
  ran the 20-epoch version and the hrf check together in 10 minutes.
- hrf (retinal vessels, 3504 x 2336): trained on windows at the images' own resolution, the
  detail path with its deeper stem and normalised mask features must draw vessels clearly better
  than hrmedseg_b at the same budget (below).
"""

from pathlib import Path

import pytest

from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.options import SegmenterOptions
from hrmedseg.training.config import load_config
from hrmedseg.training.engine import train

REPO = Path(__file__).resolve().parents[1]
HC18 = REPO.parent / "shared" / "data" / "hc18"
HRF = REPO.parent / "shared" / "data" / "hrf"
BENCHMARKS = REPO / "benchmarks"


@pytest.mark.realdata
@pytest.mark.skipif(not HC18.is_dir(), reason=f"real data not found at {HC18}")
def test_hc18_default_recipe_reaches_dice_092_in_thirty_epochs(tmp_path):
    config = load_config(
        None, data=str(HC18), output=str(tmp_path / "run"), model="hrmedseg_b", img_size=256,
        epochs=30, batch_size=16,
    )  # fmt: skip
    result = train(config, progress=False)
    test_dice = {}
    for tta in ("none", "hflip"):
        summary = evaluate(
            result["best"],
            HC18,
            tmp_path / tta,
            split="test",
            progress=False,
            options=SegmenterOptions(tta=tta),
        )
        test_dice[tta] = summary["mean"]["dice"]["mean"]
    print(f"hc18 test Dice {test_dice} (best val Dice {result['best_dice']:.4f})")
    assert test_dice["none"] >= 0.92
    assert test_dice["hflip"] >= test_dice["none"] - 0.002


@pytest.mark.realdata
@pytest.mark.skipif(not HRF.is_dir(), reason=f"real data not found at {HRF}")
def test_hrf_the_deep_stem_detail_path_draws_vessels_better_than_hrmedseg_b(tmp_path, monkeypatch):
    """Both models train the same way on 256² windows of the central 1024² of each photograph, at
    its own resolution (the default recipe, 20 epochs of 29 windows, i.e. 140 steps of batch 4,
    validated once at the end, seed 0), and are scored tiled on the test crops. The deep-stem
    model normalises its mask features (``feature_norm``), without which its predicted
    foreground swings between none and most of the image for the first tens of epochs.

    Measured here: test Dice 0.585 against hrmedseg_b's 0.000 (2 threads). On two validation
    crops after the same 20 epochs, the detail model reached Dice 0.62 with seeds 0 and 1, and
    0.42 (seed 1) without ``feature_norm``. About 5 minutes on 2 CPU cores.
    """
    # The crops benchmarks/center_crop.py writes: vessels keep their width in pixels, and a crop
    # decodes far faster than the 8-megapixel JPEG.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from center_crop import center_crop

    data = tmp_path / "hrf_crop1024"
    center_crop(HRF, data, 1024)
    test_dice = {}
    for model in ("hrmedseg_b", "hrmedseg_detail_deepstem_b"):
        config = load_config(
            None, data=str(data), output=str(tmp_path / model), model=model, img_size=256,
            input_scale="native", epochs=20, batch_size=4, val_every=20, num_workers=0,
        )  # fmt: skip
        result = train(config, progress=False)
        summary = evaluate(result["best"], data, tmp_path / f"{model}_test", split="test", progress=False)
        test_dice[model] = summary["mean"]["dice"]["mean"]
    print(f"hrf crops, test Dice {test_dice}")
    assert test_dice["hrmedseg_detail_deepstem_b"] >= 0.45
    assert test_dice["hrmedseg_detail_deepstem_b"] >= test_dice["hrmedseg_b"] + 0.10
