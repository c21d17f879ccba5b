"""Guards around a user's own stances: held-out or validation statements never become training data by a side door
(a pairs folder without train.jsonl, a second id for one statement), a stance record is never dropped or doubled
quietly, and one politician's data never trains or starts another's persona. Every profile here is written for the
test."""

import json
import logging
import shutil

import pytest

from politician_lm.artifacts.adapter import check_adapter_politician, read_metadata, write_metadata
from politician_lm.artifacts.stances import is_heldout_stance, is_val_stance
from politician_lm.commands.pairs import pairs
from politician_lm.commands.prepare import prepare
from politician_lm.data import records
from politician_lm.data.datamodule import PoliticianDataModule
from politician_lm.errors import UserError
from tests.helpers import ROOT, fit_adapter, pc_rows

TINY = str(ROOT / "checkpoints" / "tiny-politician")
SPEECH = "".join(f"On harbor road number {i}, we will fix the locks. The ferries will run.\n\n" for i in range(30))
TRAINED = [f"measure-{i}" for i in range(60) if not is_heldout_stance(f"measure-{i}")]


def _profile(path, ids, positions=None, short_name=None):
    entries = "".join(
        f'  - id: {sid}\n    topic: t{i % 3}\n    statement: "a measure called {sid}"\n'
        f"    position: {(positions or {}).get(sid, 'support' if i % 2 else 'oppose')}\n"
        f'    argument: "Argument number {i}, in my own words, for the coast."\n'
        for i, sid in enumerate(ids)
    )
    extra = f"short_name: {short_name}\n" if short_name else ""
    path.write_text(f'name: Maren Quill\n{extra}system_prompt: "You are Maren Quill."\nstances:\n{entries}', "utf-8")
    return str(path)


def _speech(tmp_path):
    (tmp_path / "speech.txt").write_text(SPEECH, "utf-8")
    return str(tmp_path / "speech.txt")


def test_a_folder_with_held_out_files_but_no_train_file_is_no_training_data(tmp_path):
    (tmp_path / "val.jsonl").write_text(json.dumps(pc_rows(1)[0]) + "\n", "utf-8")
    with pytest.raises(UserError, match=r"holds val.jsonl but no train.jsonl, so no training data"):
        records.discover(tmp_path)


def test_pairs_that_make_no_training_pair_are_refused(tmp_path):
    band = [s for s in TRAINED if is_val_stance(s, 0.99)][:6]
    data = prepare(str(tmp_path / "data"), transcripts=_speech(tmp_path), stances=_profile(tmp_path / "q.yaml", band),
                   tokenizer=TINY, stance_val_fraction=0.99, val_fraction=0.3)  # fmt: skip
    with pytest.raises(UserError, match=r"no pair was made from train.jsonl .*, only from val.jsonl"):
        pairs(str(data), str(tmp_path / "pairs"), base_model=TINY, rejected="side", kinds="stance")
    assert not (tmp_path / "pairs").exists()


def test_stance_records_given_twice_are_kept_once_and_a_flipped_position_is_refused(tmp_path):
    ids = TRAINED[:6]
    first = prepare(str(tmp_path / "a"), stances=_profile(tmp_path / "q.yaml", ids), tokenizer=TINY, val_fraction=0.3)
    again = prepare(str(tmp_path / "b"), stances=str(tmp_path / "q.yaml"), records=str(first / "train.jsonl"),
                    tokenizer=TINY, val_fraction=0.3)  # fmt: skip
    kept = [json.loads(x)["stance"] for f in ("train", "val") for x in (again / f"{f}.jsonl").read_text().splitlines()]
    assert sorted(kept) == sorted(ids)
    flipped = _profile(tmp_path / "flipped.yaml", ids, positions={i: "support" for i in ids})
    with pytest.raises(UserError, match=r"stance '.*' is answered 'oppose' in train.jsonl and 'support' in stances:"):
        prepare(str(tmp_path / "c"), stances=flipped, records=str(first / "train.jsonl"), tokenizer=TINY)


def test_a_stance_over_the_length_limits_is_refused_by_name_not_dropped(tmp_path):
    with pytest.raises(UserError, match=r"q.yaml: stance 'measure-\d+' makes a record over the length limits"):
        prepare(str(tmp_path / "out"), stances=_profile(tmp_path / "q.yaml", TRAINED[:6]), tokenizer=TINY,
                max_completion_tokens=8)  # fmt: skip


def test_identity_and_stances_of_two_politicians_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"--identity_profile trump is Donald Trump's profile but --stances"):
        prepare(str(tmp_path / "out"), identity_profile="trump", stances=_profile(tmp_path / "q.yaml", TRAINED[:6]),
                tokenizer=TINY)  # fmt: skip


def test_fit_checks_the_profile_prepare_resolved_not_a_name_read_again(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    _profile(profiles / "quill.yaml", TRAINED[:6])
    trump = prepare(str(tmp_path / "trump"), identity_profile="trump", transcripts=_speech(tmp_path), tokenizer=TINY,
                    val_fraction=0.3)  # fmt: skip
    assert json.loads((trump / "stats.json").read_text())["profiles"] == {"identity_profile": "trump"}
    with pytest.raises(UserError, match=r"prepared for 'trump' \(prepare --identity_profile\), but --data.politician"):
        PoliticianDataModule(data_path=str(trump), tokenizer=TINY, politician="quill", profiles_dir=str(profiles))
    shutil.copy(profiles / "quill.yaml", profiles / "maren.yaml")  # a file name other than its short_name
    _profile(profiles / "maren.yaml", TRAINED[:6], short_name="quill")
    mine = prepare(str(tmp_path / "mine"), stances=str(profiles / "maren.yaml"), tokenizer=TINY, val_fraction=0.3)
    PoliticianDataModule(data_path=str(mine), tokenizer=TINY, politician="maren", profiles_dir=str(profiles))
    with pytest.raises(UserError, match=r"prepared for 'trump' .* but --data.politician is 'maren'"):  # the anchor
        PoliticianDataModule(data_path=str(mine), tokenizer=TINY, politician="maren", profiles_dir=str(profiles),
                             anchor_path=str(trump))  # fmt: skip


def test_pairs_keep_the_politician_of_their_data(tmp_path):
    profile = _profile(tmp_path / "q.yaml", TRAINED)
    data = prepare(str(tmp_path / "data"), transcripts=_speech(tmp_path), stances=profile, tokenizer=TINY,
                   val_fraction=0.3)  # fmt: skip
    with pytest.raises(UserError, match=r"prepared for 'q' \(prepare --stances\), but --politician is 'biden'"):
        pairs(str(data), str(tmp_path / "refused"), base_model=TINY, rejected="side", politician="biden")
    made = pairs(str(data), str(tmp_path / "pairs"), base_model=TINY, rejected="side", kinds="stance")
    assert json.loads((made / "pairs.json").read_text())["profiles"] == {"stances": "q"}
    with pytest.raises(UserError, match=r"prepared for 'q' \(prepare --stances\), but --data.politician is 'biden'"):
        PoliticianDataModule(data_path=str(made), tokenizer=TINY, politician="biden")


def test_balancing_a_single_pairs_file_balances_it_and_a_one_sided_file_says_so(tmp_path, caplog):
    data = prepare(str(tmp_path / "data"), stances=_profile(tmp_path / "q.yaml", TRAINED[:9]), tokenizer=TINY,
                   val_fraction=0.3)  # fmt: skip
    rows = [json.loads(x) for f in ("train", "val") for x in (data / f"{f}.jsonl").read_text().splitlines()]
    one = tmp_path / "one" / "stances.jsonl"
    one.parent.mkdir()
    one.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    made = pairs(str(one), str(tmp_path / "p"), base_model=TINY, rejected="side", balance_positions=True)
    sides = [json.loads(x)["position"] for x in (made / "stances.jsonl").read_text().splitlines()]
    assert sides.count("support") == sides.count("oppose") > 0
    only = tmp_path / "only" / "stances.jsonl"
    only.parent.mkdir()
    only.write_text("".join(json.dumps(r) + "\n" for r in rows if r["position"] == "support"), "utf-8")
    with caplog.at_level(logging.WARNING):
        pairs(str(only), str(tmp_path / "q"), base_model=TINY, rejected="side", balance_positions=True)
    assert "every stance pair takes the 'support' side; nothing to balance" in caplog.text


def test_a_stage_never_starts_from_another_politicians_adapter(tmp_path, tiny_path):
    adapter = fit_adapter(tmp_path, tiny_path, pc_rows(8), max_steps=1)
    write_metadata(adapter, {**read_metadata(adapter), "politician": "quill"})
    check_adapter_politician(adapter, "quill")
    with pytest.raises(UserError, match=r"the adapter was trained for 'quill', but --data.politician is 'biden'"):
        check_adapter_politician(adapter, "biden")
