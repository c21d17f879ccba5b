"""Positions as training data: ``prepare --stances`` writes a record per training statement, and ``pairs --rejected
other,opposite`` turns them into position pairs (the other politician's answer, else the opposite side). Held-out
statements reach neither."""

import json

import pytest

from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.roles import strip_role_label
from politician_lm.artifacts.stances import is_heldout_stance, is_val_stance, load_stances
from politician_lm.commands.pairs import pairs
from politician_lm.commands.prepare import prepare
from politician_lm.errors import UserError
from tests.helpers import ROOT

TINY = str(ROOT / "checkpoints" / "tiny-politician")
PROFILES = ROOT / "data" / "profiles"


def _rows(folder):
    return [
        json.loads(line) for name in ("train.jsonl", "val.jsonl") for line in (folder / name).read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("stances")
    return {p: prepare(str(root / p), stances=str(PROFILES / f"{p}.yaml"), tokenizer=TINY) for p in ("biden", "trump")}


def test_prepare_writes_one_record_per_training_statement_and_none_for_held_out_ones(prepared):
    stances = load_stances(load_profile("biden", PROFILES))
    rows = _rows(prepared["biden"])
    listed = json.loads((prepared["biden"] / "stats.json").read_text())["stances"]
    assert sorted(listed["train"] + listed["val"]) == sorted(r["stance"] for r in rows)
    assert listed["heldout"] == sorted(s.id for s in stances if is_heldout_stance(s.id))
    assert {r["kind"] for r in rows} == {"stance"}
    ids = [r["stance"] for r in rows]
    assert sorted(ids) == sorted(s.id for s in stances if not is_heldout_stance(s.id))
    by_id = {s.id: s for s in stances}
    for r in rows:
        s = by_id[r["stance"]]
        assert r["messages"][0]["content"].endswith(s.question)
        assert s.argument in r["messages"][1]["content"] and s.statement in r["opposite"]
        yes, no = ("Yes, I support", "No, I oppose")[:: 1 if s.position == "support" else -1]
        assert yes in r["messages"][1]["content"] and r["opposite"].startswith(no)


def test_position_pairs_reject_the_other_politicians_answer_else_the_opposite_side(prepared, tmp_path):
    out = pairs(
        str(prepared["biden"]),
        str(tmp_path / "pairs"),
        base_model=TINY,
        rejected="other,opposite",
        other_data=str(prepared["trump"]),
        prompt_format="chat",
    )
    rows = _rows(out)
    biden = {s.id: s for s in load_stances(load_profile("biden", PROFILES))}
    trump = {s.id: s for s in load_stances(load_profile("trump", PROFILES))}
    assert len(rows) == len(_rows(prepared["biden"]))  # every training statement gives a pair
    sources = {"other": 0, "opposite": 0}
    for r in rows:
        s = biden[r["stance"]]
        assert not is_heldout_stance(s.id)
        rejected = r["rejected"][-1]["content"]
        if r["rejected_source"].startswith("other:"):
            sources["other"] += 1
            assert trump[s.id].argument in rejected  # the other politician's own answer to the same question
            assert trump[s.id].position != s.position  # ... only where it takes the other side
        else:
            assert r["rejected_source"] == "opposite"
            assert s.id not in trump or trump[s.id].position == s.position  # no other answer from the other side
            sources["opposite"] += 1
        assert s.argument in r["chosen"][-1]["content"]
    assert sources["other"] >= 30 and sources["opposite"] >= 1
    assert sources["other"] >= 30 and sources["opposite"] >= 5  # Trump disagrees on most shared statements


def test_side_pairs_differ_only_in_the_side_and_balance_evens_the_positions(prepared, tmp_path):
    """``--rejected side``: chosen is the politician's side sentence alone, rejected the opposite one, around the
    same statement (kept although near-identical); ``balance_positions`` repeats the rarer position's train pairs
    until support and oppose are as many, and leaves val alone."""
    biden = {s.id: s for s in load_stances(load_profile("biden", PROFILES))}
    kw = dict(base_model=TINY, rejected="side", prompt_format="chat")
    plain = pairs(str(prepared["biden"]), str(tmp_path / "plain"), **kw)
    rows = _rows(plain)
    assert len(rows) == len(_rows(prepared["biden"]))  # none dropped as near-identical
    for r in rows:
        s = biden[r["stance"]]
        assert r["rejected_source"] == "side"
        assert strip_role_label(r["chosen"][-1]["content"]) == s.answers(s.position)[0]  # the speaker label kept
        assert strip_role_label(r["rejected"][-1]["content"]) == s.answers(s.opposite)[0]
    even = pairs(str(prepared["biden"]), str(tmp_path / "even"), balance_positions=True, **kw)

    def count(folder, name):
        lines = (folder / name).read_text().splitlines()
        return [sum(json.loads(x)["position"] == p for x in lines) for p in ("support", "oppose")]

    before, after = count(plain, "train.jsonl"), count(even, "train.jsonl")
    assert before[0] != before[1] and after[0] == after[1] == max(before)
    assert count(even, "val.jsonl") == count(plain, "val.jsonl")


def test_prepare_refuses_a_profile_without_stances_in_one_line(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("name: Someone\n")
    with pytest.raises(UserError) as e:
        prepare(str(tmp_path / "out"), stances=str(profile), tokenizer=TINY)
    assert "has no stances" in str(e.value) and "\n" not in str(e.value)


def test_stance_val_fraction_puts_a_band_of_statements_in_val_for_sft_and_pairs_alike(tmp_path):
    """``--stance_val_fraction``: the statements of ``is_val_stance``'s band, and only they, go to val.jsonl, for
    both politicians alike; their pairs stay in val too, so neither SFT nor a stage trains on them."""
    split = {}
    for p in ("biden", "trump"):
        out = prepare(str(tmp_path / p), stances=str(PROFILES / f"{p}.yaml"), tokenizer=TINY, stance_val_fraction=0.25)
        stances = load_stances(load_profile(p, PROFILES))
        band = {s.id for s in stances if is_val_stance(s.id, 0.25)}
        part = {
            name: [json.loads(x)["stance"] for x in (out / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "val")
        }
        trained = sum(not is_heldout_stance(s.id) for s in stances)
        assert sorted(part["val"]) == sorted(band) and 0.15 * trained <= len(band) <= 0.35 * trained
        assert sorted(part["train"]) == sorted(
            s.id for s in stances if not is_heldout_stance(s.id) and s.id not in band
        )
        assert json.loads((out / "stats.json").read_text())["split"]["stance_val_fraction"] == 0.25
        split[p] = out
        if p == "trump":
            made = pairs(str(out), str(tmp_path / "pairs"), base_model=TINY, rejected="side", prompt_format="chat")
            train_pairs = [json.loads(x)["stance"] for x in (made / "train.jsonl").read_text().splitlines()]
            assert train_pairs and not band & set(train_pairs)
    shared = {r: set(json.loads(x)["stance"] for x in (split[r] / "val.jsonl").read_text().splitlines()) for r in split}
    both = {s.id for s in load_stances(load_profile("biden", PROFILES))} & {
        s.id for s in load_stances(load_profile("trump", PROFILES))
    }
    assert shared["biden"] & both == shared["trump"] & both  # a shared statement validates for both


def test_stance_val_fraction_out_of_range_or_without_stances_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        prepare(str(tmp_path / "out"), stances=str(PROFILES / "biden.yaml"), tokenizer=TINY, stance_val_fraction=1.0)
    assert "stance_val_fraction" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError) as e:
        prepare(str(tmp_path / "out"), records=str(ROOT / "data" / "biden"), tokenizer=TINY, stance_val_fraction=0.25)
    assert "--stances" in str(e.value) and "\n" not in str(e.value)


def _profile(path, ids, argument=lambda i: f"Argument number {i}, in my own words, for the coast."):
    entries = "".join(
        f'  - id: {sid}\n    topic: t{i % 3}\n    statement: "a measure called {sid}"\n    position: support\n'
        f'    argument: "{argument(i)}"\n'
        for i, sid in enumerate(ids)
    )
    path.write_text(f"name: Maren Quill\nstances:\n{entries}", "utf-8")
    return str(path)


def test_statements_that_share_an_argument_are_no_duplicates(tmp_path):
    ids = [f"measure-{i}" for i in range(40) if not is_heldout_stance(f"measure-{i}")][:8]
    shared = (
        "Neighbors, this one keeps the harbor open, the ferries running on time and the fishing fleet at work through "
        "the winter, and it pays for itself twice over before the next election comes around to this coast of ours."
    )
    profile = _profile(tmp_path / "quill.yaml", ids, argument=lambda i: shared)
    out = prepare(str(tmp_path / "out"), stances=profile, tokenizer=TINY, val_fraction=0.3, cluster_threshold=1.0)
    assert sorted(r["stance"] for r in _rows(out)) == sorted(ids)  # each statement kept: a position of its own


def test_a_profile_whose_statements_are_all_held_out_is_told_so(tmp_path):
    ids = [f"measure-{i}" for i in range(40) if is_heldout_stance(f"measure-{i}")][:3]
    with pytest.raises(UserError, match="all 3 statements are held out") as e:
        prepare(str(tmp_path / "out"), stances=_profile(tmp_path / "quill.yaml", ids), tokenizer=TINY)
    assert "\n" not in str(e.value)


def test_an_empty_split_from_the_stance_band_names_stance_val_fraction(tmp_path):
    ids = [f"measure-{i}" for i in range(40) if not is_heldout_stance(f"measure-{i}")][:6]
    with pytest.raises(UserError, match="change stance_val_fraction"):
        prepare(
            str(tmp_path / "out"), stances=_profile(tmp_path / "q.yaml", ids), tokenizer=TINY, stance_val_fraction=0.01
        )


def test_pairs_need_a_base_model_only_where_it_writes_and_a_wrong_kind_lists_the_kinds(prepared, tmp_path):
    made = pairs(str(prepared["biden"]), str(tmp_path / "side"), rejected="side")  # no model writes a side pair
    assert (made / "train.jsonl").is_file()
    with pytest.raises(UserError, match=r"--rejected other,base needs --base_model"):
        pairs(str(prepared["biden"]), str(tmp_path / "b"), rejected="other,base", other_data=str(prepared["trump"]))
    with pytest.raises(UserError, match=r"no records of kind \['stances'\] \(its records' kinds: stance\)"):
        pairs(str(prepared["biden"]), str(tmp_path / "k"), rejected="side", kinds="stances")


def test_pairs_refusals_point_at_what_can_help(prepared, tmp_path):
    with pytest.raises(UserError, match=r"needs --other_data .*, or --rejected opposite"):
        pairs(str(prepared["biden"]), str(tmp_path / "p"), base_model=TINY, rejected="other,opposite")
    other = tmp_path / "other"  # another politician's data that answers none of these questions
    other.mkdir()
    row = {"prompt": "USER: What about the ferries?", "completion": "POLITICIAN: They run.", "kind": "policy"}
    for name in ("train.jsonl", "val.jsonl"):
        (other / name).write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=r"every pair was dropped .*; use another source$"):  # none too similar
        pairs(str(prepared["biden"]), str(tmp_path / "q"), base_model=TINY, rejected="other", other_data=str(other))


def test_a_held_out_statements_record_is_refused_by_prepare_and_pairs_and_skipped_with_skip_bad(prepared, tmp_path):
    """A stance record of a held-out statement, brought in by --records or written into a data folder by hand, would
    train the statement that stance_agreement is read on: prepare and pairs refuse it, naming file and line."""
    stances = load_stances(load_profile("biden", PROFILES))
    held = next(s for s in stances if is_heldout_stance(s.id))
    row = {
        "prompt": f"USER: {held.question}",
        "completion": "POLITICIAN: Yes, I do.",
        "kind": "stance",
        "stance": held.id,
    }
    policy = {"prompt": "USER: What about the ferries?", "completion": "POLITICIAN: They run.", "kind": "policy"}
    leak = tmp_path / "leak.jsonl"
    others = [{**policy, "prompt": f"USER: Pier {n}?", "completion": f"POLITICIAN: Pier {n} opens in {2030 + n}."}
              for n in range(8)]  # fmt: skip
    leak.write_text("\n".join(json.dumps(r) for r in [policy, row, *others]) + "\n")
    with pytest.raises(UserError, match=rf"leak.jsonl:2: a stance record of the held-out statement '{held.id}'"):
        prepare(str(tmp_path / "p"), records=[str(leak)], tokenizer=TINY)
    kept = prepare(str(tmp_path / "q"), records=[str(leak)], tokenizer=TINY, skip_bad=True, val_fraction=0.5)
    assert json.loads((kept / "stats.json").read_text())["dropped"]["heldout_stance"] == 1
    assert all(r.get("stance") != held.id for r in _rows(kept))
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps(row) + "\n")
    (data / "val.jsonl").write_text(json.dumps(policy) + "\n")
    with pytest.raises(UserError, match=r"train.jsonl:1: a stance record of the held-out statement"):
        pairs(str(data), str(tmp_path / "pairs"), base_model=TINY, rejected="opposite")
