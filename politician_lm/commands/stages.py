"""``politician-lm stages``: multi-stage training (for example style -> policy -> identity) from one config.

Every stage is an ordinary ``fit`` of the base config with the stage's record kinds and overrides, written to
``<root_dir>/<NN>-<name>/`` (adapters, checkpoints, logs, persona metrics when the config enables them).

* ``mode: continue``: each stage starts from the previous stage's exported adapter (``model.init_adapter``).
* ``mode: separate``: each stage trains a fresh adapter; at the end they are merged with ``merge_weights``
  (``politician-lm merge``, exact ``cat`` by default) into ``<root_dir>/merged``.

A finished stage leaves ``stage.json`` (its settings and final metrics). A re-run skips finished stages whose
settings are unchanged; ``redo: true`` re-runs everything, and a changed stage re-runs with every stage after it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from politician_lm.artifacts.atomic import atomic_write_text
from politician_lm.commands.merge import MergeMethod, merge
from politician_lm.errors import UserError
from politician_lm.training import FitConfig, check, fit

STAGE_FILE = "stage.json"


@dataclass
class Stage:
    """One stage: a name, the record kinds it trains on (None: every kind), and config overrides (dotted keys).

    A DPO stage is one whose overrides set ``model.objective: dpo`` and ``data.data_path`` to preference pairs
    (``politician-lm pairs``); in ``continue`` mode its reference is the adapter the earlier stages handed on.
    """

    name: str
    kinds: list[str] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def _folder(root: Path, index: int, stage: Stage) -> Path:
    return root / f"{index + 1:02d}-{stage.name}"


def _fit_config(stage: Stage, index: int, base_config: str, root: Path) -> FitConfig:
    overrides = {
        "trainer.default_root_dir": str(_folder(root, index, stage)),
        "data.kinds": stage.kinds,
        **stage.overrides,
    }
    return FitConfig(configs=[base_config], overrides=overrides)


def _fingerprint(stage: Stage, base_config: str, mode: str, previous: str | None, data: str) -> str:
    text = json.dumps([asdict(stage), Path(base_config).read_text(encoding="utf-8"), mode, previous], sort_keys=True)
    return hashlib.sha256((text + data).encode()).hexdigest()[:16]


def _data_digest(dm: Any) -> str:
    """SHA-256 of a stage's training and validation files and its anchor's (``dm``: its DataModule), names and
    bytes: a stage whose data was prepared again (a flipped position, new records) runs again, as one whose settings
    changed does."""
    digest = hashlib.sha256()
    for files in filter(None, (dm.files, dm.anchor_files)):  # the anchor's where the stage has one
        for path in (*files.train, *files.val):
            digest.update(f"{path}\0".encode())
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def stages(
    stages: list[Stage],
    base_config: str = "configs/demo.yaml",
    root_dir: str = "runs/stages",
    mode: Literal["continue", "separate"] = "continue",
    merge_weights: list[float] | None = None,
    merge_method: MergeMethod = "cat",
    adapter: Literal["best", "last"] = "best",
    redo: bool = False,
) -> Path:
    """Run training stages in order (e.g. style -> policy -> identity); finished stages are skipped on re-runs.

    Args:
        stages: The stages, each ``{name, kinds, overrides}``; overrides are dotted config keys
            (``trainer.max_epochs``).
        base_config: LightningCLI config that every stage starts from.
        root_dir: Folder that receives one sub-folder per stage (and ``merged/`` in separate mode).
        mode: ``continue`` trains one adapter through all stages; ``separate`` trains one per stage and merges them.
        merge_weights: Weight of each stage's adapter in the final merge (separate mode).
        merge_method: Merge method for separate mode (``cat`` is exact).
        adapter: Which export of a stage is handed on: ``best`` (by the monitored metric) or ``last``.
        redo: Re-run every stage even if it finished.
    """
    if not stages:
        raise UserError("no stages given; list them under 'stages:' in the config")
    if not Path(base_config).is_file():
        raise UserError(f"{base_config}: base config not found")
    names = [s.name for s in stages]
    if len(set(names)) != len(names) or not all(n.replace("-", "").replace("_", "").isalnum() for n in names):
        raise UserError(f"stage names must be unique plain words, got {names}")
    if mode == "separate" and (merge_weights is None or len(merge_weights) != len(stages)):
        raise UserError(f"mode 'separate' needs merge_weights with one weight per stage ({len(stages)})")
    root = Path(root_dir)
    data, exports = [], []  # build every stage's classes now: a typo fails before hours of training
    for index, stage in enumerate(stages):
        try:
            checked = check(_fit_config(stage, index, base_config, root))
        except UserError as e:  # name the stage whose override or kinds failed, not only the base config
            raise UserError(f"stage {stage.name}: {e}") from None
        data.append(_data_digest(checked.datamodule))
        exports.append(checked.config.adapter_export.dirname)  # where its fit exports (adapters/ unless set)
    previous: str | None = None
    summary = []
    changed = redo
    for index, stage in enumerate(stages):
        folder = _folder(root, index, stage)
        fingerprint = _fingerprint(stage, base_config, mode, previous, data[index])
        done = folder / STAGE_FILE
        adapter_dir = folder / exports[index] / adapter
        if (
            not changed
            and done.is_file()
            and json.loads(done.read_text()).get("fingerprint") == fingerprint
            and adapter_dir.is_dir()
        ):
            print(f"stage {stage.name}: finished before, skipped ({adapter_dir})")
        else:
            changed = True  # every later stage depends on this one
            print(f"stage {stage.name}: training on kinds {stage.kinds or 'all'}")
            config = _fit_config(stage, index, base_config, root)
            config.overwrite = True  # a stage that runs again replaces its earlier run on purpose
            if mode == "continue" and previous:
                config.overrides["model.init_adapter"] = previous
            metrics = fit(config).metrics
            if not adapter_dir.is_dir():  # nothing to hand on, or to name as the final adapter
                raise UserError(
                    f"stage {stage.name}: fit wrote no {adapter_dir} (no validation ran, or none improved the "
                    "monitored metric); set adapter: last, or validate within the stage (trainer.val_check_interval)"
                )
            atomic_write_text(
                done,
                json.dumps(
                    {
                        "stage": asdict(stage),
                        "fingerprint": fingerprint,
                        "init_adapter": previous,
                        "adapter": str(adapter_dir),
                        "metrics": metrics,
                    },
                    indent=2,
                )
                + "\n",
            )
        record = json.loads(done.read_text())
        summary.append(record)
        previous = str(adapter_dir) if mode == "continue" else None
    final = Path(summary[-1]["adapter"])
    if mode == "separate":
        final = merge(
            [r["adapter"] for r in summary], merge_weights, str(root / "merged"), method=merge_method, overwrite=True
        )
    atomic_write_text(
        root / "stages.json",
        json.dumps({"mode": mode, "final_adapter": str(final), "stages": summary}, indent=2) + "\n",
    )
    print(f"stages done: final adapter {final}")
    return final
