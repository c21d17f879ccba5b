"""``stats.json`` of a prepared folder and the summary ``prepare`` prints.

``records`` (train/val/total), ``kinds`` and ``sources`` (written records), ``clusters``, ``tokens`` (nearest-rank
p50/p90/p99 and max of prompt + completion tokens with ``tokenizer``, no special tokens; a chat record's prompt is
its earlier turns joined by newlines), ``dropped`` (count per reason in ``REASONS``) and ``settings`` (the arguments).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from politician_lm.data.prepare.build import Candidate

REASONS = (
    "bad_file",
    "bad_line",
    "retweet",
    "missing_profile_field",
    "too_short",
    "too_long",
    "prompt_too_long",
    "exact_duplicate",
    "near_duplicate",
)


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles."""
    v = sorted(values)
    return {f"p{p}": v[max(0, math.ceil(p / 100 * len(v)) - 1)] for p in (50, 90, 99)} | {"max": v[-1]}


def prepare_stats(
    train: list[Candidate], val: list[Candidate], clusters: int, dropped: Counter, settings: dict[str, Any]
) -> dict:
    every = train + val
    return {
        "records": {"train": len(train), "val": len(val), "total": len(every)},
        "kinds": dict(sorted(Counter(c.record["kind"] for c in every).items())),
        "sources": dict(sorted(Counter(c.record["source"] for c in every).items())),
        "clusters": clusters,
        "tokens": percentiles([c.tokens for c in every]),
        "dropped": {r: dropped[r] for r in REASONS},
        "settings": settings,
    }


def summary(out: Path, stats: dict[str, Any]) -> str:
    def counts(d: dict, most: int = 8) -> str:
        top = Counter({k: v for k, v in d.items() if v}).most_common()
        more = f", and {len(top) - most} more" if len(top) > most else ""
        return ", ".join(f"{k} {v}" for k, v in top[:most]) + more or "none"

    r, t = stats["records"], stats["tokens"]
    return "\n".join(
        [
            f"prepared {r['total']} records ({r['train']} train / {r['val']} val) in {out}",
            f"  kinds:   {counts(stats['kinds'])}",
            f"  sources: {counts(stats['sources'])}",
            f"  tokens (prompt+completion): p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}",
            f"  dropped: {counts(stats['dropped'])}",
        ]
    )
