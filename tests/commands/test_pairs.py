"""``politician-lm pairs``: rejected answers from another politician or from the base model, the drops, the
sources each pair records, one-line errors, and a resume that ends where an uninterrupted run ends."""

import json

import pytest

from politician_lm.cli import main
from politician_lm.commands._pairs_steps import PairItem, pair_record, partial_path, similarity
from politician_lm.data import records
from tests.helpers import pc_rows, write_jsonl


def test_a_pair_keeps_the_speaker_label_and_drops_near_copies_and_empty_answers(tmp_path):
    record = {"prompt": "USER: Jobs?", "completion": "POLITICIAN: We build things here.", "topic": "jobs"}
    messages = [{"role": "user", "content": "USER: Jobs?"}, {"role": "assistant", "content": record["completion"]}]
    item = PairItem(tmp_path / "policy.jsonl", 1, record, messages, source="base", key="k")
    row = pair_record(item, "ASSISTANT: Jobs matter to many people.", 0.8, "tiny")
    assert row == {
        "prompt": "USER: Jobs?",
        "chosen": record["completion"],
        "rejected": "POLITICIAN: Jobs matter to many people.",
        "topic": "jobs",
        "rejected_source": "base",
        "similarity": row["similarity"],
        "rejected_model": "tiny",
    }
    assert pair_record(item, "We build things here.", 0.8, "tiny") == "similar"
    assert pair_record(item, "POLITICIAN:  ", 0.8, "tiny") == "empty"
    assert similarity("We build, things!", "we BUILD things") == 1.0


def test_pairs_from_another_politician_drop_near_identical_and_record_sources(tmp_path, capsys):
    mine = write_jsonl(tmp_path / "me" / "policy.jsonl", pc_rows(3))
    other = pc_rows(3)
    other[1]["completion"] = "POLITICIAN: Nobody has ever seen a topic like this one, believe me, tremendous."
    write_jsonl(tmp_path / "them" / "policy.jsonl", other)  # rows 0 and 2: the same answer, row 1 a different one
    out = tmp_path / "pairs"
    main(
        [
            "pairs",
            "--data_path",
            str(mine.parent),
            "--output_dir",
            str(out),
            "--base_model",
            "unused",
            "--rejected",
            "other",
            "--other_data",
            str(tmp_path / "them"),
        ]
    )
    rows = [json.loads(line) for line in (out / "policy.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["rejected"] == other[1]["completion"]
    assert rows[0]["chosen"] == pc_rows(3)[1]["completion"] and rows[0]["prompt"] == pc_rows(3)[1]["prompt"]
    assert rows[0]["rejected_source"] == f"other:{tmp_path / 'them' / 'policy.jsonl'}:2" and rows[0]["topic"] == "t1"
    assert "dropped 2 near-identical" in capsys.readouterr().err
    assert records.detect_preference(records.discover(out))


def test_kinds_is_given_as_on_the_command_line(tmp_path):
    """``--kinds policy`` (a plain word, as ``--rejected`` takes ``a,b``) keeps only those records."""
    style = [{**r, "kind": "style", "prompt": r["prompt"].replace("view", "style")} for r in pc_rows(2)]
    write_jsonl(tmp_path / "me" / "all.jsonl", pc_rows(2) + style)
    loud = "POLITICIAN: Nobody has ever seen a topic like this one, believe me, tremendous."
    write_jsonl(tmp_path / "them" / "all.jsonl", [{**r, "completion": loud} for r in pc_rows(2) + style])
    out = tmp_path / "pairs"
    args = ["pairs", "--data_path", str(tmp_path / "me"), "--output_dir", str(out), "--base_model", "unused"]
    main(args + ["--rejected", "other", "--other_data", str(tmp_path / "them"), "--kinds", "policy"])
    rows = [json.loads(line) for line in (out / "all.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in pc_rows(2)]


def test_pairs_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(pc_rows(1)[0]) + "\n{not json\n")
    with pytest.raises(SystemExit) as e:
        main(["pairs", "--data_path", str(data), "--output_dir", str(tmp_path / "out"), "--base_model", "x"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith(f"politician-lm: error: {data}:2: malformed JSON") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


@pytest.mark.slow
def test_pairs_generate_with_the_base_model_and_resume_where_they_stopped(tmp_path, tiny_path, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "d" / "style.jsonl", pc_rows(6, "style"))
    out = tmp_path / "pairs"
    args = [
        "pairs",
        "--data_path",
        str(data.parent),
        "--output_dir",
        str(out),
        "--base_model",
        tiny_path,
        "--max_new_tokens",
        "12",
        "--batch_size",
        "4",
        "--max_similarity",
        "1.0",
    ]
    main(args)
    rows = [json.loads(line) for line in (out / "style.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["rejected_source"] == "base" and r["rejected_model"] == tiny_path for r in rows)
    assert all(
        r["rejected"].startswith("POLITICIAN: ") and r["chosen"] == c["completion"]
        for r, c in zip(rows, pc_rows(6, "style"))
    )
    assert not partial_path(out).exists()
    assert "Generating rejected answers" in capsys.readouterr().err

    # a run interrupted after its first batch (Ctrl-C in the second) keeps that batch in the partial file, writes no
    # output, and the re-run generates only the prompts still missing, ending with what an uninterrupted run wrote
    from politician_lm.inference import Persona

    real, calls = Persona.generate, []

    def interrupted(self, conversations, **kw):
        calls.append(len(conversations))
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt
        return real(self, conversations, **kw)

    monkeypatch.setattr(Persona, "generate", interrupted)
    again = tmp_path / "again"
    interrupt = True
    with pytest.raises(SystemExit):
        main(args[:4] + [str(again)] + args[5:])
    assert not again.exists() and len(partial_path(again).read_text().splitlines()) == 1 + 4
    interrupt, calls[:] = False, []
    main(args[:4] + [str(again)] + args[5:])
    assert calls == [2]  # 6 prompts, 4 already done
    assert (again / "style.jsonl").read_text() == (out / "style.jsonl").read_text()
    assert not partial_path(again).exists()
