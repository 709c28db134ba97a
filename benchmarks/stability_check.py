"""Did a training run train? The per-epoch table of a run's ``log.csv`` and issue 9's criterion.

    python benchmarks/stability_check.py RUN/log.csv

Criterion (the CUDA collapse climbed back to a loss of about 0.5 after epoch 2–3): from epoch 3
on, every epoch's training loss is at most epoch 2's. Prints a Markdown table with the
validation Dice of every epoch and the verdict; exits 1 when the criterion fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrmedseg.training.run_log import read_log


def loss_never_climbs_above_epoch_2(rows: list[dict[str, float]]) -> tuple[bool, str]:
    if len(rows) < 3:
        return False, f"only {len(rows)} epoch(s) logged; the check needs at least 3"
    reference = rows[1]["train_loss"]
    above = [int(r["epoch"]) for r in rows[2:] if r["train_loss"] > reference]
    if above:
        return False, f"training loss above epoch 2's ({reference:.4f}) at epoch(s) {above}"
    return True, f"training loss at most epoch 2's ({reference:.4f}) in every later epoch"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log", type=Path, help="log.csv of a training run")
    rows = read_log(parser.parse_args().log)
    print("| epoch | train loss | val loss | val Dice | s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {int(r['epoch'])} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | "
            f"{r['val_dice']:.4f} | {r['epoch_seconds']:.1f} |"
        )
    passed, reason = loss_never_climbs_above_epoch_2(rows)
    print(f"\n{'PASS' if passed else 'FAIL'}: {reason}; best val Dice {max(r['val_dice'] for r in rows):.4f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
