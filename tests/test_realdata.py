"""Real-data check on ../shared/data/hc18 (fetal-head ultrasound, CC BY 4.0).

Skipped when the folder is absent (e.g. on a user's machine). Trains hrmedseg_b from scratch with
the default recipe, what ``hrmedseg train`` uses without a config (AdamW, warm-up, cosine decay,
the default augmentation), for 20 epochs at 256 x 256, batch 16, and requires a test Dice of at
least 0.92 at original resolution; the left-right test-time flip must not lose Dice. About 7
minutes on 2 CPU cores.
"""

from pathlib import Path

import pytest

from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.inference.options import SegmenterOptions
from hrmedseg.training.config import load_config
from hrmedseg.training.engine import train

REPO = Path(__file__).resolve().parents[1]
HC18 = REPO.parent / "shared" / "data" / "hc18"


@pytest.mark.realdata
@pytest.mark.skipif(not HC18.is_dir(), reason=f"real data not found at {HC18}")
def test_hc18_default_recipe_reaches_dice_092_in_twenty_epochs(tmp_path):
    config = load_config(
        None, data=str(HC18), output=str(tmp_path / "run"), model="hrmedseg_b", img_size=256,
        epochs=20, batch_size=16,
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
