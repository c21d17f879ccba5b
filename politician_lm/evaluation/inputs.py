"""What ``evaluate`` reads before any model loads: the held-out split, the judge, and the prompts every arm answers.

Each step raises its one-line ``UserError`` here, so a bad input fails in seconds, not after the model is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from politician_lm.artifacts.adapter import AdapterFolder, read_adapter
from politician_lm.artifacts.jsonl import read_jsonl
from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.roles import strip_politician_label
from politician_lm.artifacts.stances import Stance, check_shared, is_heldout_stance, load_stances
from politician_lm.artifacts.training_log import read_log
from politician_lm.data import records
from politician_lm.errors import UserError
from politician_lm.evaluation.heldout import document_rows, metadata, recorded_split, sample_heldout
from politician_lm.evaluation.lineage import evaluated_data, trained_data
from politician_lm.values import check_choice, parse_list

if TYPE_CHECKING:
    from politician_lm.evaluation.voices import ExtraVoices

__all__ = [
    "HeldOut",
    "adapter_folders",
    "check_arm_profiles",
    "check_numbers",
    "choose_judge",
    "generic_texts_pool",
    "held_out",
    "split_records",
    "trained_data",
    "training_logs",
]

JudgeChoice = Literal["auto", "records", "sotu"]


def adapter_folders(
    adapters: list[str] | str, merged: list[str] | str | None, allow_pickle: bool
) -> tuple[list[str], list[AdapterFolder]]:
    """``(the --adapters paths, every adapter and merged folder read)``; one line for a folder named twice, whose
    results would overwrite each other in metrics.json while its samples were written twice."""
    adapter_list = parse_list(adapters, "adapters")
    folders = [read_adapter(p, allow_pickle) for p in adapter_list + (parse_list(merged, "merged") if merged else [])]
    for i, f in enumerate(folders):
        if f.path.resolve() in {g.path.resolve() for g in folders[:i]}:
            raise UserError(f"--adapters/--merged name {f.path} twice: pass each adapter once")
    return adapter_list, folders


def check_numbers(repetition_penalty: float, val_fraction: float | None, **counts: int | None) -> None:
    """One line for a numeric option out of its range, before anything is read: every count at least 1 (None: unset),
    ``val_fraction`` between 0 and 1, ``repetition_penalty`` above 0."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise UserError(f"--val_fraction must be between 0 and 1, got {val_fraction}")
    if not repetition_penalty > 0:
        raise UserError(f"--repetition_penalty must be above 0 (1.0: no penalty), got {repetition_penalty}")


def generic_texts_pool(data_dir: str, n: int, val_fraction: float, split_seed: int, seed: int) -> list[list[dict]]:
    """``style.generic_pool``'s prompts for the judge's ``generic`` class; one line when ``data_dir`` holds none (no
    ``<politician>/*.jsonl``), which would drop the class from the judge."""
    from politician_lm.evaluation.style import generic_pool, require_generic_source

    require_generic_source(data_dir, "--style_data_dir")
    return generic_pool(data_dir, n, val_fraction, split_seed, seed)


def training_logs(logs: list[str] | str | None) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """The curves of the Lightning ``metrics.csv`` files that go into the report, by file: each checked to exist and
    read here, so a wrong file is refused before any model loads."""
    curves = {}
    for f in [Path(p) for p in parse_list(logs, "logs")] if logs else []:
        if not f.is_file():
            raise UserError(f"{f}: training log not found; pass a Lightning metrics.csv")
        curves[str(f)] = read_log(f)
    return curves


def split_records(data_path: str, val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """``(train, held_out)`` conversations of ``data_path``: a prepared folder's ``test.jsonl`` (its held-out
    documents) where it has one, else the validation split exactly as the DataModule makes it."""
    files = records.discover(data_path)
    preference = records.detect_preference(files)  # a DPO adapter's pairs: their prompts and chosen answers
    records.validate(files, preference)
    convert = records.to_preference if preference else records.to_conversation
    rows = [convert(obj) for f in files.train for _, obj in read_jsonl(f)]
    if files.test or files.val:
        held = [convert(obj) for f in files.test or files.val for _, obj in read_jsonl(f)]
        return rows, held
    val = [records.is_heldout(r["messages"], seed, val_fraction) for r in rows]
    return [r for r, v in zip(rows, val) if not v], [r for r, v in zip(rows, val) if v]


def other_training_completions(folders: list[AdapterFolder], politician: str) -> dict[str, list[str]]:
    """The training answers of each other politician whose adapter is among ``folders`` (the data its first adapter
    was trained on, split as it was), which that adapter's memorization is read against; one whose data cannot be
    followed is left out, and its arm's memorization is not measured (said on stderr)."""
    out: dict[str, list[str]] = {}
    for f in folders:
        target = f.metadata.get("politician")
        if not target or target == politician or target in out:
            continue
        try:
            data, trained = evaluated_data(f, None)
            rows, _ = split_records(data, float(trained.get("val_fraction", 0.1)), int(trained.get("seed", 42)))
        except (UserError, OSError) as e:
            print(f"{f.path}: memorization not measured ({str(e)[:160]})", file=sys.stderr)
            continue
        out[target] = _answers(rows)
    return out


@dataclass
class HeldOut:
    """The split evaluate scores on: training rows (for memorization), held-out rows, the sample whose loss is
    computed, and how the split was made (for metrics.json)."""

    train_rows: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    loss_rows: list[dict[str, Any]]
    info: dict[str, Any]  # the loss sample: available, used, sampled, ...
    split: dict[str, Any] | None  # the recorded leave-one-speech-out split, None for the hash split
    val_fraction: float
    split_seed: int
    val_stances: frozenset[str] = frozenset()  # statements whose stance records are in the data's val.jsonl

    def check_stances(self, stances: str, data_path: str) -> None:
        """A one-line UserError for ``--stances val`` when the data has no validation statements."""
        if stances == "val" and not self.val_stances:
            raise UserError(
                f"--stances val: {data_path} has no stance records in val.jsonl; "
                "prepare it with --stances and --stance_val_fraction"
            )

    def own_voice(self, politician: str) -> ExtraVoices:
        """``politician``'s speech (style records, labels dropped) on each side of the split, chunked, as the
        real-voice judge's class for a politician the corpus does not hold; a one-line UserError when too little."""
        from politician_lm.evaluation.own_voice import own_voice

        def speech(rows: list[dict[str, Any]]) -> list[str]:
            return [t for t in _answers(r for r in rows if r.get("kind") == "style") if t.strip()]

        return own_voice(politician, speech(self.train_rows), speech(self.rows))

    @property
    def trained_stances(self) -> frozenset[str]:
        """The statements with a stance record (its metadata's ``stance``) among the training rows: "seen"."""
        ids = (metadata(r).get("stance") for r in self.train_rows if r.get("kind") == "stance")
        return frozenset(str(i) for i in ids if i)

    def training_completions(self) -> list[str]:
        """The training answers (speaker labels dropped) a memorized generation would copy."""
        return _answers(self.train_rows)

    def record(self) -> dict[str, Any]:
        """The loss sample and the split, as metrics.json's ``heldout`` records them."""
        split = self.split or {"rule": "hash", "val_fraction": self.val_fraction, "seed": self.split_seed}
        return self.info | {"split": split}


def _answers(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Each conversation's last answer, its speaker label dropped."""
    return [strip_politician_label(r["messages"][-1]["content"]) for r in rows]


def held_out(
    data_path: str,
    first: AdapterFolder,
    trained: dict[str, Any],
    val_fraction: float | None,
    split_seed: int | None,
    max_heldout: int | None,
    seed: int,
) -> HeldOut:
    """The held-out records of ``data_path``, split as the ``first`` adapter was trained unless told otherwise."""
    fraction = val_fraction or float(trained.get("val_fraction", 0.1))
    split_seed = split_seed if split_seed is not None else int(trained.get("seed", 42))
    train_rows, held = split_records(data_path, fraction, split_seed)
    if not held:
        raise UserError(f"{data_path}: no held-out records at val_fraction={fraction}; raise it or add val.jsonl")
    # The documents the data folder holds out, else (a file, or a folder without a recorded split) those the first
    # adapter's training held out; check_held_apart then refuses an adapter that trained on any of them.
    split = (recorded_split(data_path) if Path(data_path).is_dir() else None) or first.metadata.get("split")
    if split:  # leave-one-speech-out: the real-speech numbers are on the held-out documents only
        held = document_rows(held, split["heldout_documents"])
        if not held:
            raise UserError(_no_documents(data_path, split["heldout_documents"], first))
    loss_rows, info = sample_heldout(held, max_heldout, seed)
    return HeldOut(train_rows, held, loss_rows, info, split, fraction, split_seed, val_stance_ids(data_path))


def _no_documents(data_path: str, documents: list[str], first: AdapterFolder) -> str:
    """Why ``data_path`` has no held-out record of ``documents``: no test.jsonl, or the first adapter's split."""
    if Path(data_path).is_dir() and not records.discover(data_path).test:
        return (
            f"{data_path} has no test.jsonl (the held-out documents of a prepared folder), and no held-out record "
            f"of {documents}: pass --data_path the folder `politician-lm prepare` wrote"
        )
    return (
        f"{data_path} holds no held-out record of {documents}, the documents {first.path} was trained without: "
        "pass --data_path the prepared folder it was trained on"
    )


def val_stance_ids(data_path: str) -> frozenset[str]:
    """The statements whose stance records are in ``data_path``'s val.jsonl: never trained on, by SFT or by the
    train pairs (``prepare --stance_val_fraction``), nor held out."""
    files = records.discover(data_path)
    rows = (obj for f in files.val for _, obj in read_jsonl(f))
    ids = (str(r["stance"]) for r in rows if r.get("kind") == "stance" and r.get("stance"))
    return frozenset(i for i in ids if not is_heldout_stance(i))


def val_stances(profile: dict, politician: str, data_path: str) -> list[Stance]:
    """The profile's statements whose records are in ``data_path``'s val.jsonl (``val_stance_ids``), in its order."""
    ids = val_stance_ids(data_path)
    return [s for s in load_stances(profile, politician) if s.id in ids] if ids else []


def choose_judge(
    judge: JudgeChoice,
    judge_presidents: list[str] | str,
    split: dict | None,
    politician: str,
    style_data_dir: str | None = None,
) -> tuple[str, list[str]]:
    """``(judge kind, presidents)``: ``auto`` is the real-voice judge on a leave-one-speech-out split. A judge that
    cannot know ``politician`` is one line here (``records`` learns only the folders of ``style_data_dir``), not a
    style attribution of 0 after the run."""
    check_choice("judge", judge, JudgeChoice)
    kind = judge if judge != "auto" else ("sotu" if split else "records")
    presidents = parse_list(judge_presidents, "judge_presidents")
    if kind == "sotu":
        from politician_lm.evaluation.judge import check_presidents

        check_presidents(presidents, politician, own_voice=bool(split))
    elif style_data_dir is not None:
        from politician_lm.evaluation.style import check_judge_data, training_files

        files = training_files(style_data_dir)
        known = sorted(files)
        if politician not in known:
            raise UserError(
                f"the records style judge knows {', '.join(known) or 'no one'} (the folders of --style_data_dir "
                f"{style_data_dir}), not {politician!r}: prepare its transcripts with --heldout_documents so that the "
                f"sotu judge learns its voice, or pass --style_data_dir a folder with {politician}/*.jsonl of its words"
            )
        check_judge_data(files, style_data_dir)  # else the judge would fail after the model ran
    return kind, presidents


def stance_note(profile: dict[str, Any], politician: str, profile_file: str, stances: str) -> str | None:
    """Loads the profile's statements (a malformed one fails before any model loads) and returns why
    ``stance_agreement`` will have no value, printed at once and kept in the scorecard; None when it will."""
    statements = load_stances(profile, profile_file)
    if stances == "none":
        return None
    if not statements:
        note = f"no stance_agreement: {profile_file} has no stances section"
    elif stances in ("heldout", "all") and not any(is_heldout_stance(s.id) for s in statements):
        note = (
            f"no stance_agreement: none of the {len(statements)} statements in {profile_file} is held out (a "
            "statement's id decides, about one in four is): add statements to the profile for a held-out reading"
        )
    else:
        return None
    print(note, file=sys.stderr)
    return note


def check_arm_profiles(
    folders: list[AdapterFolder], politician: str, profiles_dir: str, stances: str, identity: bool
) -> None:
    """Loads the profile and stances of each adapter's own politician where it is another (``Arm.target``: it is
    scored against them) as ``arms.target_stances`` and ``score_arm`` will, failing before any model loads."""
    first = folders[0].metadata.get("politician")  # the persona's style, which an adapter's own metadata overrides
    for other in dict.fromkeys(f.metadata["politician"] if "politician" in f.metadata else first for f in folders):
        if other and other != politician and (identity or stances != "none"):
            profile = load_profile(other, profiles_dir)
            if stances != "none":  # and one statement under each id both profiles hold (opposite_sides)
                own = load_stances(load_profile(politician, profiles_dir), f"{profiles_dir}/{politician}.yaml")
                check_shared(own, politician, load_stances(profile, f"{profiles_dir}/{other}.yaml"), other)
