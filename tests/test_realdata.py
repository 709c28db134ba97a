"""Real-data check on ../shared/data/hc18 (fetal-head ultrasound, CC BY 4.0).

Skipped when the folder is absent (e.g. on a user's machine). Trains hrmedseg_b from scratch with
configs/quick_256.yaml (the paper's optimiser and loss, 10 epochs at 256 x 256, batch 8) and
requires a test Dice of at least 0.90 at original resolution. About 3.5 minutes on 2 CPU cores.
"""

from pathlib import Path

import pytest

from hrmedseg.evaluation.evaluate import evaluate
from hrmedseg.training.config import load_config
from hrmedseg.training.engine import train

REPO = Path(__file__).resolve().parents[1]
HC18 = REPO.parent / "shared" / "data" / "hc18"


@pytest.mark.realdata
@pytest.mark.skipif(not HC18.is_dir(), reason=f"real data not found at {HC18}")
def test_hc18_reaches_dice_090_in_ten_epochs(tmp_path):
    config = load_config(REPO / "configs" / "quick_256.yaml", data=str(HC18), output=str(tmp_path / "run"))
    result = train(config, progress=False)
    summary = evaluate(result["best"], HC18, tmp_path / "eval", split="test", progress=False)
    dice = summary["mean"]["dice"]["mean"]
    print(f"hc18 test Dice {dice:.4f} (best val Dice {result['best_dice']:.4f})")
    assert dice >= 0.90
