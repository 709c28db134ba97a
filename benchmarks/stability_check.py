"""Did a training run train? The per-epoch table of a run's ``log.csv`` and the stability criterion.

    python benchmarks/stability_check.py RUN/log.csv
    python benchmarks/stability_check.py RUN-bf16/log.csv --reference RUN/log.csv   # mixed precision

Criterion (the CUDA collapse climbed back to a loss of about 0.5 after epoch 2–3): from epoch 3
on, every epoch's training loss is at most epoch 2's. With ``--reference`` (the same run in
fp32), the best validation Dice must also be at most ``--max-dice-drop`` (0.01) below the
reference's. Prints a Markdown table with the validation Dice of every epoch and the verdicts;
exits 1 when a criterion fails.
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


def best_dice_within(
    rows: list[dict[str, float]], reference: list[dict[str, float]], max_drop: float
) -> tuple[bool, str]:
    best, best_reference = (max(r["val_dice"] for r in log) for log in (rows, reference))
    drop = best_reference - best
    return drop <= max_drop, (
        f"best val Dice {best:.4f} against the reference's {best_reference:.4f} "
        f"({drop:+.4f} below it; allowed {max_drop})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log", type=Path, help="log.csv of a training run")
    parser.add_argument("--reference", type=Path, help="log.csv of the same run in fp32")
    parser.add_argument("--max-dice-drop", type=float, default=0.01)
    args = parser.parse_args()
    rows = read_log(args.log)
    norms = bool(rows) and "grad_norm" in rows[0]  # logs written before the columns existed lack them
    print("| epoch | train loss | val loss | val Dice |" + (" grad norm (max) |" if norms else "") + " s |")
    print("|---|---|---|---|" + ("---|" if norms else "") + "---|")
    for r in rows:
        norm = f" {r['grad_norm']:.3g} ({r['grad_norm_max']:.3g}) |" if norms else ""
        print(
            f"| {int(r['epoch'])} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | "
            f"{r['val_dice']:.4f} |{norm} {r['epoch_seconds']:.1f} |"
        )
    passed, reason = loss_never_climbs_above_epoch_2(rows)
    print(f"\n{'PASS' if passed else 'FAIL'}: {reason}; best val Dice {max(r['val_dice'] for r in rows):.4f}")
    if args.reference is not None:
        close, reason = best_dice_within(rows, read_log(args.reference), args.max_dice_drop)
        print(f"{'PASS' if close else 'FAIL'}: {reason}")
        passed = passed and close
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
