"""One line of a fit's numbers from its Lightning ``metrics.csv``, and a copy of that file (and ``hparams.yaml``).

``scripts/device_checks.sh`` runs it after the ``fit`` step: ``QLoRAThroughput`` logs ``perf/*`` (tokens/s,
padding, peak memory, MFU) to the run's loggers only, so without this they stay on the device machine.

    python scripts/fit_summary.py /tmp/fit-biden --copy-to "$OUT"   # -> $OUT/fit-metrics.csv, fit-hparams.yaml
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from politician_lm.artifacts.training_log import read_log

SHOWN = {  # metric: (label, format)
    "perf/tokens_per_s": ("tokens/s", "{:.0f}"),
    "perf/mfu": ("MFU", "{:.3f}"),
    "perf/peak_memory_mb": ("peak memory MB", "{:.0f}"),
    "perf/padding_fraction": ("padding", "{:.2f}"),
}


def summary(series: dict[str, list[tuple[int, float]]]) -> str:
    """``label median (min-max over N windows)`` per perf metric, peak memory's maximum, and the losses' ends."""
    parts = []
    for key, (label, fmt) in SHOWN.items():
        values = [v for _, v in series.get(key, [])]
        if not values:
            parts.append(f"{label} -")
        elif key == "perf/peak_memory_mb":
            parts.append(f"{label} {fmt.format(max(values))}")
        else:
            lo, mid, hi = (fmt.format(x) for x in (min(values), statistics.median(values), max(values)))
            parts.append(f"{label} {mid} ({lo}-{hi} over {len(values)} windows)")
    for key in ("train_loss", "val_loss"):
        if values := [v for _, v in series.get(key, [])]:
            parts.append(f"{key} {values[0]:.3f} -> {values[-1]:.3f}")
    return "fit: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the fit's --trainer.default_root_dir")
    parser.add_argument("--copy-to", type=Path, help="folder to copy metrics.csv (and hparams.yaml) into")
    args = parser.parse_args(argv)
    logs = sorted(args.run_dir.glob("**/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        print(f"fit: no metrics.csv under {args.run_dir} (the fit logged nothing; see fit.log)", file=sys.stderr)
        return 1
    if args.copy_to is not None:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(logs[-1], args.copy_to / "fit-metrics.csv")
        if (hparams := logs[-1].with_name("hparams.yaml")).is_file():
            shutil.copyfile(hparams, args.copy_to / "fit-hparams.yaml")
    print(summary(read_log(logs[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
