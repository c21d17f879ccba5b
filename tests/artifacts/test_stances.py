"""The stance probes in data/profiles (biden, trump) and their loader: counts, the disagreement marks, the split."""

from __future__ import annotations

from pathlib import Path

import pytest

from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.stances import (
    HELDOUT_FRACTION,
    Stance,
    is_heldout_stance,
    is_val_stance,
    load_stances,
    split_stances,
)
from politician_lm.errors import UserError

PROFILES = Path(__file__).resolve().parents[2] / "data" / "profiles"
PAIR = ("biden", "trump")


@pytest.fixture(scope="module")
def stances() -> dict[str, dict[str, Stance]]:
    out = {}
    for name in PAIR:
        loaded = load_stances(load_profile(name, PROFILES), f"{name}.yaml")
        out[name] = {s.id: s for s in loaded}
        assert len(out[name]) == len(loaded), f"{name}: duplicate ids"
    return out


@pytest.mark.parametrize("name", PAIR)
def test_each_profile_has_enough_valid_stances(stances, name):
    mine = stances[name].values()
    assert len(mine) >= 60
    assert len({s.topic for s in mine}) >= 14
    assert all(s.position in ("support", "oppose") and s.opposite != s.position for s in mine)
    assert all(s.question == f"Do you support {s.statement}?" for s in mine)
    assert all(s.statement[0].islower() and s.statement[-1].isalnum() for s in mine), "reads in 'Do you support ...?'"
    assert sum(s.position == "oppose" for s in mine) / len(mine) >= 0.35, "support must not be always right"


def test_disagreement_marks_are_true_and_complete(stances):
    biden, trump = (stances[n] for n in PAIR)
    shared = sorted(biden.keys() & trump.keys())
    opposite = [i for i in shared if biden[i].position != trump[i].position]
    assert len(opposite) >= 36
    assert 4 <= len(shared) - len(opposite) <= 8, "a handful of shared ids where the two agree"
    for me, other in (("biden", "trump"), ("trump", "biden")):
        for s in stances[me].values():
            theirs = stances[other].get(s.id)
            if s.disagrees_with:
                assert s.disagrees_with == (other,), f"{me}/{s.id}"
                assert theirs is not None, f"{me}/{s.id}: {other} has no such id"
                assert theirs.statement == s.statement, f"{me}/{s.id}: the statement differs"
                assert theirs.position == s.opposite, f"{me}/{s.id}: {other} does not hold the opposite position"
            elif theirs is not None:
                assert theirs.position == s.position, f"{me}/{s.id}: opposite positions, but no disagrees_with mark"
                assert theirs.statement == s.statement, f"{me}/{s.id}: the statement differs"


def test_the_heldout_split_is_by_id_and_shared(stances):
    held = {}
    for name in PAIR:
        mine = list(stances[name].values())
        train, heldout = split_stances(mine)
        held[name] = {s.id for s in heldout}
        assert held[name].isdisjoint(s.id for s in train) and len(train) + len(heldout) == len(mine)
        assert all(is_heldout_stance(s.id) for s in heldout) and not any(is_heldout_stance(s.id) for s in train)
        assert 0.15 <= len(heldout) / len(mine) <= 0.35, f"{name}: {len(heldout)}/{len(mine)} held out"
    biden, trump = (stances[n] for n in PAIR)
    shared = biden.keys() & trump.keys()
    assert held["biden"] & shared == held["trump"] & shared, "a shared id is held out for one politician only"
    disagreeing = {i for i in shared if biden[i].position != trump[i].position}
    assert len(held["biden"] & disagreeing) >= 8


def test_the_hash_is_stable_and_near_its_fraction():
    ids = [f"probe-{i}" for i in range(4000)]
    assert [is_heldout_stance(i) for i in ids] == [is_heldout_stance(i) for i in ids]
    assert abs(sum(map(is_heldout_stance, ids)) / len(ids) - HELDOUT_FRACTION) < 0.03


def test_the_validation_band_is_a_share_of_the_training_statements_and_never_a_held_out_one():
    ids = [f"probe-{i}" for i in range(4000)]
    trained = [i for i in ids if not is_heldout_stance(i)]
    for fraction in (0.1, 0.25, 0.5):
        val = [i for i in ids if is_val_stance(i, fraction)]
        assert not any(is_heldout_stance(i) for i in val)
        assert abs(len(val) / len(trained) - fraction) < 0.03
        assert set(val) <= {i for i in ids if is_val_stance(i, fraction + 0.1)}  # a wider band keeps the narrower
    assert not any(is_val_stance(i, 0.0) for i in ids)


def entry(**changes) -> dict:
    base = {"id": "tariffs", "topic": "trade", "statement": "tariffs on steel", "position": "support"}
    return {**base, "argument": "Yes.", **changes}


def test_a_profile_without_stances_gives_none():
    assert load_stances({"name": "X"}) == []
    stance = load_stances({"stances": [entry(disagrees_with=["trump"])]})[0]
    assert stance.question == "Do you support tariffs on steel?"
    assert (stance.opposite, stance.disagrees_with) == ("oppose", ("trump",))


@pytest.mark.parametrize(
    "raw,says",
    [
        ([{k: v for k, v in entry().items() if k != "argument"}], "missing field 'argument'"),
        ([entry(position="maybe")], "position 'maybe'"),
        ([entry(), entry(argument="Again.")], "duplicate id 'tariffs'"),
        ([entry(id="Tariffs China")], "not a slug"),
        ([entry(topic="Trade")], "not a slug"),
        ([entry(statement="Tariffs on steel?")], "statement"),
        ([entry(argument="two\nlines")], "one-line string, got 2 lines"),
        ([entry(argument="  ")], "non-empty one-line string, got an empty string"),
        ([entry(argument=3)], "got int"),
        ([entry(stance="x")], "unknown field 'stance'"),
        ("not a list", "must be a list"),
        ([entry(), entry(id="steel", statement="Tariffs  on steel".lower())], "also stances[0] ('tariffs')"),
        ([entry(statement="Medicare for All")], "a name first: rephrase, as 'the Medicare for All plan'"),
        ([entry(statement="do you support tariffs")], "give only what follows 'Do you support'"),
        ([entry(position=True)], "position must be 'support' or 'oppose', got true"),
        ([entry(position=None)], "'position' is empty"),
    ],
)
def test_load_errors_are_one_line_and_name_the_entry(raw, says):
    with pytest.raises(UserError) as e:
        load_stances({"stances": raw}, "x.yaml")
    message = str(e.value)
    assert "\n" not in message and message.startswith("x.yaml") and says in message
    if isinstance(raw, list):
        assert f"stances[{len(raw) - 1}]" in message


def test_an_unknown_politician_says_where_profiles_were_looked_for(tmp_path):
    """From outside the repository the message read 'use no profiles found in data/profiles'."""
    from politician_lm.errors import UserError as Error

    with pytest.raises(Error, match=r"unknown politician 'biden': no profiles in .*empty; run from the repository"):
        load_profile("biden", tmp_path / "empty")
    with pytest.raises(Error, match=r"unknown politician 'quill'; use one of: biden, obama, trump") as e:
        load_profile("quill", PROFILES)
    assert "for a new politician write one with at least a name and a system_prompt" in str(e.value)


def test_every_pair_of_shipped_profiles_shares_ids_as_one_statement():
    from itertools import combinations

    from politician_lm.artifacts.stances import check_shared

    names = sorted(p.stem for p in PROFILES.glob("*.yaml"))
    loaded = {n: load_stances(load_profile(n, PROFILES), f"{n}.yaml") for n in names}
    for a, b in combinations(names, 2):
        check_shared(loaded[a], a, loaded[b], b)


@pytest.mark.parametrize(
    "theirs,says",
    [
        (entry(statement="tariffs on all steel imports"), "is 'tariffs on steel' in quill's profile but"),
        (entry(disagrees_with=["quill"]), "both take 'support', but disagrees_with marks them opposed"),
    ],
)
def test_an_id_two_profiles_share_must_be_one_statement_and_a_marked_disagreement_a_real_one(theirs, says):
    """``evaluate``'s opposite_sides compares two adapters' sides by id: the same id over two different statements
    compared two questions, and nothing said so."""
    from politician_lm.artifacts.stances import check_shared

    mine = load_stances({"stances": [entry()]})
    with pytest.raises(UserError) as e:
        check_shared(mine, "quill", load_stances({"stances": [theirs]}), "ink")
    assert "\n" not in str(e.value) and "stance 'tariffs'" in str(e.value) and says in str(e.value)
    check_shared(mine, "quill", load_stances({"stances": [entry(position="oppose", disagrees_with=["quill"])]}), "ink")
