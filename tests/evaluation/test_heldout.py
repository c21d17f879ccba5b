"""The held-out records evaluate scores: the recorded document split and the seeded --max_heldout sample."""

import json

import pytest

from politician_lm.errors import UserError
from politician_lm.evaluation.heldout import document_rows, recorded_split, sample_heldout


def _row(source: str, n: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{n}"}], "metadata": json.dumps({"source": source})}


def test_sample_is_seeded_ordered_and_recorded():
    rows = [_row("a", i) for i in range(50)]
    kept, info = sample_heldout(rows, 10, seed=3)
    again, _ = sample_heldout(rows, 10, seed=3)
    other, _ = sample_heldout(rows, 10, seed=4)
    assert kept == again and kept != other
    assert info["indices"] == sorted(info["indices"]) and [rows[i] for i in info["indices"]] == kept
    assert info | {"indices": None} == {
        "available": 50,
        "max_heldout": 10,
        "seed": 3,
        "used": 10,
        "sampled": True,
        "indices": None,
    }
    everything, info = sample_heldout(rows, None, seed=3)
    assert everything == rows and not info["sampled"] and info["used"] == 50
    with pytest.raises(UserError, match="--max_heldout 0"):
        sample_heldout(rows, 0, seed=3)


def test_document_split_is_read_from_stats_and_filters_rows(tmp_path):
    assert recorded_split(tmp_path) is None  # no stats.json: the hash split
    (tmp_path / "stats.json").write_text(json.dumps({"split": {"rule": "hash"}}))
    assert recorded_split(tmp_path) is None
    split = {"rule": "document", "heldout_documents": ["2024-Biden-1"]}
    (tmp_path / "stats.json").write_text(json.dumps({"split": split}))
    assert recorded_split(tmp_path) == split
    rows = [_row("2024-Biden-1", 0), _row("policy.jsonl", 1), _row("2024-Biden-1", 2)]
    assert document_rows(rows, split["heldout_documents"]) == [rows[0], rows[2]]


def test_trained_stances_are_read_from_the_training_records(tmp_path):
    """``--stances all``'s "seen" statements: those with a stance record among the training rows, as evaluate reads
    them (``split_records`` keeps a record's extra keys, ``stance`` among them, in its metadata)."""
    from politician_lm.evaluation.inputs import HeldOut, split_records

    def record(stance: str | None, kind: str) -> str:
        extra = {"stance": stance} if stance else {}
        return json.dumps({"prompt": f"USER: Do you support {stance}?", "completion": "POLITICIAN: Yes.", "kind": kind,
                           **extra})  # fmt: skip

    lines = [record("carbon-tax", "stance"), record("rail-expansion", "stance"), record(None, "style")]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "val.jsonl").write_text(record("tariffs", "stance") + "\n")
    train, held = split_records(str(tmp_path), 0.1, 42)
    found = HeldOut(train, held, held, {}, None, 0.1, 42).trained_stances
    assert found == {"carbon-tax", "rail-expansion"}


def test_a_merged_adapters_source_that_is_not_here_is_said_not_skipped(tmp_path, capsys):
    """merge records its sources' paths as given; from another folder, or after a source moved, the check of what
    that source held out was skipped without a word."""
    from politician_lm.artifacts.adapter import AdapterFolder
    from politician_lm.evaluation.lineage import check_held_apart

    merged = tmp_path / "merged"
    merged.mkdir()
    meta = {"split": {"heldout_documents": ["a.txt"]}, "merged_from": [{"path": str(tmp_path / "moved"), "weight": 1}]}
    check_held_apart([AdapterFolder(merged, {}, meta)], ["a.txt"])
    assert f"was merged from {tmp_path / 'moved'}, which is not here" in capsys.readouterr().err
