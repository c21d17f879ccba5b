"""The persona scorecard: bootstrap intervals, paired differences, memorization, and the generic style class."""

from __future__ import annotations

import numpy as np
import pytest

from politician_lm.evaluation.metrics import copies_training
from politician_lm.evaluation.scorecard import (
    ArmScores,
    bootstrap,
    compare,
    confusion,
    paired_difference,
    summarize_arm,
)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    small, large = rng.random(20), rng.random(2000)
    a, b = bootstrap(small), bootstrap(large)
    assert a.low <= a.value <= a.high and a.value == pytest.approx(small.mean())
    assert b.high - b.low < (a.high - a.low) / 4
    assert bootstrap([1.0] * 10).low == 1.0 == bootstrap([1.0] * 10).high


def test_weighted_bootstrap_is_the_token_weighted_mean():
    e = bootstrap([1.0, 3.0], weights=[3.0, 1.0])
    assert e.value == pytest.approx((1 * 3 + 3 * 1) / 4)


def test_paired_difference_sees_a_consistent_gain_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 40)
    better = base + 0.1  # the same items, every one a little better
    d = paired_difference(better, base)
    assert d.value == pytest.approx(0.1) and d.low > 0.09 and d.high < 0.11
    assert paired_difference(base, base).value == 0.0
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_copies_training_flags_twelve_word_runs_only():
    train = ["Here's the deal: we will build this economy so it works for the folks in the middle and at the bottom."]
    copied = "Look. We will build this economy so it works for the folks in the middle and at the bottom, period."
    near = "We will grow this economy so it works better for the folks in the middle and at the bottom."
    assert copies_training([copied, near], train, 12) == [True, False]
    assert copies_training([near], train, 4) == [True]


def test_summary_and_comparison_keep_the_target_of_the_first_arm():
    adapter = ArmScores(
        target="biden",
        predicted=["biden"] * 8 + ["generic"] * 2,
        names_self=[1.0] * 4,
        claims_ai=[0.0] * 4,
        facts=[1.0, 0.0, 1.0, 1.0],
        memorized=[0.0] * 14,
        loss_sum=[10.0, 20.0],
        loss_tokens=[5.0, 10.0],
    )
    prompt_only = ArmScores(
        target="biden",
        predicted=["generic"] * 9 + ["biden"],
        names_self=[0.0, 1.0, 0.0, 0.0],
        claims_ai=[1.0, 0.0, 0.0, 0.0],
        facts=[0.0] * 4,
        memorized=[0.0] * 14,
        loss_sum=[15.0, 30.0],
        loss_tokens=[5.0, 10.0],
    )
    s = summarize_arm(adapter)
    assert s["style_attribution"].value == 0.8 and s["identity_score"].value == 1.0
    assert s["heldout_loss"].value == pytest.approx(2.0)
    d = compare(adapter, prompt_only)
    assert d["style_attribution"].value == pytest.approx(0.7)
    assert d["identity_score"].value == pytest.approx(0.75)
    assert d["heldout_loss"].value == pytest.approx(-1.0)
    assert confusion({"a": adapter}, ["biden", "generic", "trump"]) == {"a": {"biden": 8, "generic": 2, "trump": 0}}


@pytest.mark.slow
def test_generic_class_takes_assistant_voice_away_from_the_politicians(tmp_path):
    from politician_lm.evaluation.style import GENERIC, load_or_train
    from tests.helpers import ROOT

    generic = [
        f"As an AI assistant, I can provide a balanced overview of topic {i}. There are several factors to "
        f"consider, and it is important to weigh the perspectives involved."
        for i in range(40)
    ]
    clf = load_or_train(str(ROOT / "data"), cache_dir=str(tmp_path), generic=generic)
    assert set(clf.labels) == {"biden", "trump", GENERIC}
    assert clf.held_out_accuracy is not None and clf.held_out_accuracy > 0.6
    assert clf.predict(["As an AI assistant, I can provide an overview of several factors to consider."]) == [GENERIC]
    [entry] = tmp_path.glob("*.joblib")
    stamp = entry.stat().st_mtime_ns
    again = load_or_train(str(ROOT / "data"), cache_dir=str(tmp_path), generic=generic)
    assert again.labels == clf.labels and entry.stat().st_mtime_ns == stamp  # read from the cache, not rewritten
    load_or_train(str(ROOT / "data"), cache_dir=str(tmp_path), generic=generic[:20])
    assert len(list(tmp_path.glob("*.joblib"))) == 2  # the generic texts are part of the cache key


def test_probe_prompts_file_errors_name_file_and_line(tmp_path):
    from politician_lm.data.records import read_prompts
    from politician_lm.errors import UserError

    good = tmp_path / "p.jsonl"
    good.write_text(
        '{"prompt": "Who are you?", "kind": "identity"}\n\n'
        '{"messages": [{"role": "user", "content": "Jobs?"}, {"role": "assistant", "content": "x"}]}\n'
    )
    rows = read_prompts(good)
    assert rows == [
        {"messages": [{"role": "user", "content": "Who are you?"}], "kind": "identity"},
        {"messages": [{"role": "user", "content": "Jobs?"}], "kind": ""},
    ]  # a trailing answer is dropped
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(UserError, match=r"b.jsonl:2: need a 'prompt' string"):
        read_prompts(bad)
    (tmp_path / "j.jsonl").write_text("{oops\n")
    with pytest.raises(UserError, match=r"j.jsonl:1: malformed JSON"):
        read_prompts(tmp_path / "j.jsonl")


def test_distinct_2_counts_repeats_within_each_answer_weighted_by_length():
    from politician_lm.evaluation.metrics import distinct_counts
    from politician_lm.evaluation.scorecard import score_distinct

    assert distinct_counts("the deal the deal the deal", 2) == (2, 5)  # bigrams: the deal / deal the
    assert distinct_counts("one", 2) == (0, 0)
    loop, fine = ArmScores(target="biden"), ArmScores(target="biden")
    score_distinct(loop, ["the deal the deal the deal", "jobs jobs jobs jobs jobs"])
    score_distinct(fine, ["here is the deal folks", "we build from the middle out"])
    assert summarize_arm(loop)["distinct_2"].value == pytest.approx((2 + 1) / (5 + 4))
    assert summarize_arm(fine)["distinct_2"].value == 1.0
    d = compare(loop, fine)["distinct_2"]
    assert d.value == pytest.approx(3 / 9 - 1.0) and d.high < 0


def test_opposite_sides_of_two_one_sided_arms_is_full_and_the_dispute_counts_show_why():
    from politician_lm.evaluation.card import scorecard_text, stance_record
    from politician_lm.evaluation.scorecard import dispute_counts, opposite_sides

    ids = ["s1", "s2", "s3", "s4", "s5"]
    heldout = [True, True, True, True, False]  # s5 was trained on: never counted
    # documented: biden support/oppose/oppose/support/support, trump oppose/support/oppose/oppose/oppose
    biden = ArmScores(target="biden", stance_ids=ids, stance_sides=["oppose"] * 5, stance_heldout=heldout)
    biden.stance_agree = [0.0, 1.0, 1.0, 0.0, 0.0]
    trump = ArmScores(target="trump", stance_ids=ids, stance_sides=["support"] * 5, stance_heldout=heldout)
    trump.stance_agree = [0.0, 1.0, 0.0, 0.0, 0.0]
    assert opposite_sides(biden, trump).value == 1.0 and opposite_sides(biden, trump).n == 3  # s1, s2, s4 disputed
    assert dispute_counts(biden, trump) == {"disputed": 3, "both_documented": 1, "support_a": 0, "support_b": 3}

    record = stance_record({"a/adapters/best": biden, "b/adapters/best": trump}, n_boot=200, seed=0)
    pair = record["opposite_sides"]["a/adapters/best vs b/adapters/best"]
    assert (pair["value"], pair["both_documented"], pair["support_a"], pair["support_b"]) == (1.0, 1, 0, 3)
    report = {
        "politician": "biden", "n_style_prompts": 0, "n_identity_prompts": 0, "n_heldout_losses": 0,
        "classifier": {"held_out_accuracy": 1.0, "labels": []}, "arms": {}, "differences": {"x": {}},
        "confusion": {}, "stances": record,
    }  # fmt: skip
    assert 'both on their own documented side on 1, "support" from a/best on 0 and from b/best on 3' in (
        scorecard_text(report)
    )


def test_stance_agreement_is_reported_apart_for_held_out_validation_and_seen_statements():
    """A statement whose records are in val.jsonl (``stance_val``) counts as ``stance_agreement_val``, never as
    seen; the three parts are paired apart between arms of one target."""
    from politician_lm.evaluation.scorecard import compare, per_item

    ids = ["h1", "h2", "v1", "v2", "v3", "s1"]
    parts = dict(stance_ids=ids, stance_sides=["support"] * 6, stance_heldout=[True, True] + [False] * 4,
                 stance_val=[False, False, True, True, True, False])  # fmt: skip
    a = ArmScores(target="biden", stance_agree=[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], **parts)
    b = ArmScores(target="biden", stance_agree=[0.0, 0.0, 0.0, 1.0, 0.0, 0.0], **parts)
    items = per_item(a)
    assert items["stance_agreement"][0] == [1.0, 0.0]
    assert items["stance_agreement_val"][0] == [1.0, 1.0, 0.0]
    assert items["stance_agreement_seen"][0] == [1.0]
    diff = compare(a, b, n_boot=200)
    assert diff["stance_agreement"].value == pytest.approx(0.5) and diff["stance_agreement_val"].value == pytest.approx(
        1 / 3
    )
    assert diff["stance_agreement_seen"].value == pytest.approx(1.0)
    plain = ArmScores(target="biden", stance_agree=[1.0], stance_ids=["x"], stance_sides=["support"])
    plain.stance_heldout = [False]  # no stance_val (data without a band): the statement counts as seen
    assert "stance_agreement_val" not in per_item(plain) and per_item(plain)["stance_agreement_seen"][0] == [1.0]


def test_evaluate_reads_the_validation_statements_from_the_data_and_probes_only_them_with_stances_val(tmp_path):
    """``--stances val``: the statements of the prepared folder's val.jsonl, none held out and none trained on."""
    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.artifacts.stances import is_heldout_stance, is_val_stance
    from politician_lm.commands.prepare import prepare
    from politician_lm.evaluation.arms import Arm, ArmContext, target_stances
    from politician_lm.evaluation.inputs import val_stance_ids
    from tests.helpers import ROOT

    profiles = ROOT / "data" / "profiles"
    out = prepare(str(tmp_path / "d"), stances=str(profiles / "trump.yaml"),
                  tokenizer=str(ROOT / "checkpoints" / "tiny-politician"), stance_val_fraction=0.25)  # fmt: skip
    val = val_stance_ids(str(out))
    assert val and all(is_val_stance(i, 0.25) for i in val)
    profile = load_profile("trump", profiles)
    arm = Arm("prompt-only", None, None)  # no adapter: scored against the evaluation's target
    for kind, expected in (("val", val), ("heldout", None)):
        ctx = ArmContext("trump", profile, str(profiles), None, [], 12, 0, kind, val)
        chosen = {s.id for s in target_stances(arm, ctx)}
        if expected is not None:
            assert chosen == expected
        else:
            assert chosen and all(is_heldout_stance(i) for i in chosen) and not chosen & val


def test_stances_all_counts_as_seen_only_statements_the_training_data_holds(caplog):
    """``--stances all``: a statement with no record in the training data (added to the profile since prepare) is
    neither held out nor seen: it is left out, with a warning, rather than counted as trained."""
    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.artifacts.stances import is_heldout_stance, load_stances
    from politician_lm.evaluation.arms import Arm, ArmContext, target_stances
    from tests.helpers import ROOT

    profiles = ROOT / "data" / "profiles"
    profile = load_profile("trump", profiles)
    ids = [s.id for s in load_stances(profile)]
    trained = frozenset(i for i in ids if not is_heldout_stance(i))
    some = frozenset(sorted(trained)[:5])
    arm = Arm("prompt-only", None, None)
    everything = ArmContext("trump", profile, str(profiles), None, [], 12, 0, "all", frozenset(), trained)
    assert [s.id for s in target_stances(arm, everything)] == ids and not caplog.text
    part = ArmContext("trump", profile, str(profiles), None, [], 12, 0, "all", frozenset(), some)
    chosen = {s.id for s in target_stances(arm, part)}
    assert chosen == some | {i for i in ids if is_heldout_stance(i)}
    assert f"{len(trained) - 5} of trump's statements have no record in the training data" in caplog.text
    target_stances(arm, part)  # evaluate asks again for each arm's batches, answers and scores: one warning a run
    assert caplog.text.count("have no record in the training data") == 1


def test_another_politicians_adapter_is_probed_only_on_statements_known_unseen():
    """An arm of another politician's adapter (a Trump adapter in a Biden evaluation): the evaluated data's val band
    and training records say nothing of its statements, so ``all`` probes its held-out ones only and ``val`` none;
    it reported a stance_agreement_seen over statements its data never held."""
    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.artifacts.stances import is_heldout_stance, load_stances
    from politician_lm.data.templates import PromptStyle
    from politician_lm.evaluation.arms import Arm, ArmContext, target_stances
    from tests.helpers import ROOT

    profiles = ROOT / "data" / "profiles"
    biden = load_profile("biden", profiles)
    trump_ids = [s.id for s in load_stances(load_profile("trump", profiles))]
    trump = Arm("runs/trump/adapters/best", "adapter_1", PromptStyle(prompt_format="chat", politician="trump"))
    trained = frozenset(s.id for s in load_stances(biden) if not is_heldout_stance(s.id))
    every = ArmContext("biden", biden, str(profiles), None, [], 12, 0, "all", frozenset(trump_ids[:3]), trained)
    assert [s.id for s in target_stances(trump, every)] == [i for i in trump_ids if is_heldout_stance(i)]
    val = ArmContext("biden", biden, str(profiles), None, [], 12, 0, "val", frozenset(trump_ids[:3]), trained)
    assert target_stances(trump, val) == []


def test_another_politicians_adapter_is_read_for_memorization_against_its_own_training_answers():
    """A Trump adapter in a Biden evaluation reciting Trump's training data scored 0 and reciting Biden's scored 1."""
    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.data.templates import PromptStyle
    from politician_lm.evaluation.arms import Arm, ArmContext, score_arm
    from tests.helpers import ROOT

    profiles = ROOT / "data" / "profiles"
    biden_said = ["we are going to build back better for the middle class of this country folks"]
    trump_said = ["we are going to make america great again like never before believe me folks"]
    trump = Arm("runs/trump/adapters/best", "adapter_1", PromptStyle(prompt_format="chat", politician="trump"))
    ctx = ArmContext("biden", load_profile("biden", profiles), str(profiles), None, biden_said, 8, 0, "none",
                     other_train_texts={"trump": trump_said})  # fmt: skip
    assert score_arm(trump, trump_said, [], ctx)[0].memorized == [1.0]
    assert score_arm(trump, biden_said, [], ctx)[0].memorized == [0.0]
    unknown = ArmContext("biden", ctx.profile, str(profiles), None, biden_said, 8, 0, "none")
    assert score_arm(trump, biden_said, [], unknown)[0].memorized == []  # its data not followed: not measured
    biden_arm = Arm("prompt-only", None, None)
    assert score_arm(biden_arm, biden_said, [], ctx)[0].memorized == [1.0]


def test_stances_val_without_validation_statements_is_one_line_naming_the_prepare_flag():
    from politician_lm.errors import UserError
    from politician_lm.evaluation.inputs import HeldOut

    held = HeldOut([], [], [], {}, None, 0.1, 42)
    held.check_stances("heldout", "runs/data/x")  # the default needs no band
    with pytest.raises(UserError) as e:
        held.check_stances("val", "runs/data/x")
    assert "--stance_val_fraction" in str(e.value) and "\n" not in str(e.value)


def test_the_scorecard_says_how_many_statements_each_stance_reading_rests_on():
    from politician_lm.evaluation.card import scorecard_text

    def report(n: int, other: int | None = None) -> dict:
        def entry(k: int) -> dict:
            return {"stance_agreement": {"value": 0.0, "low": 0.0, "high": 0.0, "n": k}}

        arms = {"prompt-only": entry(n)} | ({"runs/fit-trump/adapters/best": entry(other)} if other else {})
        return {
            "politician": "quill", "n_style_prompts": 0, "n_identity_prompts": 0, "n_heldout_losses": 0,
            "classifier": {"held_out_accuracy": 1.0, "labels": []},
            "arms": arms, "differences": {}, "confusion": {},
        }  # fmt: skip

    one = scorecard_text(report(1))  # 0.000 [0.000, 0.000] from one statement looks certain, and is not
    assert "stance_agreement over 1 statements (fewer than 5: add statements to the profile" in one
    assert "stance_agreement over 27 statements\n" in scorecard_text(report(27))
    # another politician's adapter is probed on its own profile's statements: each count is named, not the first's
    both = scorecard_text(report(27, 3))
    assert "stance_agreement over prompt-only 27 statements; fit-trump/best 3 statements (fewer than 5" in both


def test_the_scorecard_gives_the_judges_accuracy_on_the_politicians_own_speech_and_warns_when_it_is_weak():
    from politician_lm.evaluation.card import scorecard_text

    def report(own: float) -> dict:
        return {
            "politician": "quill", "n_style_prompts": 0, "n_identity_prompts": 0, "n_heldout_losses": 0,
            "classifier": {"judge": "sotu", "held_out_accuracy": 0.708, "labels": [],
                           "per_class_accuracy": {"biden": 0.7, "quill": own}},
            "arms": {}, "differences": {"x": {}}, "confusion": {},
        }  # fmt: skip

    weak = scorecard_text(report(0.167))  # every arm's 0 style attribution would otherwise read as a finding
    assert "held-out accuracy 0.708, quill 0.167)" in weak
    assert (
        "tells quill's own held-out speech apart in 0.167 of its chunks: style attribution to quill says little" in weak
    )
    assert "says little" not in scorecard_text(report(0.9))


def test_a_profile_without_held_out_statements_says_why_stance_agreement_is_missing(capsys):
    from politician_lm.artifacts.stances import is_heldout_stance
    from politician_lm.evaluation.card import stance_count_lines
    from politician_lm.evaluation.inputs import stance_note

    def profile(ids):
        return {"stances": [{"id": i, "topic": "t", "statement": f"a policy number {n}", "position": "support",
                             "argument": "Yes."} for n, i in enumerate(ids)]}  # fmt: skip

    trained_only = [i for i in (f"s{n}" for n in range(40)) if not is_heldout_stance(i)][:6]
    held = next(i for i in (f"s{n}" for n in range(40)) if is_heldout_stance(i))
    note = stance_note(profile(trained_only), "quill", "p/quill.yaml", "heldout")
    assert note.startswith("no stance_agreement: none of the 6 statements in p/quill.yaml is held out"), note
    assert capsys.readouterr().err.strip() == note  # said at once, before any model loads
    assert stance_note({}, "quill", "p/quill.yaml", "all") == "no stance_agreement: p/quill.yaml has no stances section"
    assert stance_note(profile([*trained_only, held]), "quill", "p/quill.yaml", "heldout") is None
    assert stance_note(profile(trained_only), "quill", "p/quill.yaml", "none") is None  # asked for none
    assert stance_count_lines({"stance_note": note, "arms": {}}) == [note]  # and kept under the scorecard's table


def test_report_html_says_when_it_shows_only_the_first_prompts_answers(tmp_path):
    from politician_lm.evaluation.card import stance_count_lines
    from politician_lm.evaluation.report import SHOWN_PROMPTS, write_scorecard

    arms = {"prompt-only": {"style_attribution": {"value": 0.5, "low": 0.4, "high": 0.6}}}
    report = {"politician": "quill", "n_style_prompts": 20, "n_identity_prompts": 0, "n_heldout_losses": 0,
              "classifier": {"held_out_accuracy": 0.9, "labels": []}, "arms": arms, "differences": {},
              "confusion": {}}  # fmt: skip
    samples = [{"prompt": f"p{i}", "arm": "prompt-only", "generation": f"answer {i}"} for i in range(20)]
    report["stances"] = {"sides": {"prompt-only": {"s1": "support", "s2": "support", "s3": "support"}}}
    write_scorecard(tmp_path, report, samples, {})
    page = (tmp_path / "report.html").read_text()
    assert f"The first {SHOWN_PROMPTS} of 20 prompts; samples.jsonl holds every answer." in page
    assert "answer 11" in page and "answer 12" not in page
    # an arm that answers one side to everything: its agreement is no reading of positions, on the page as in the text
    said = "prompt-only takes &#x27;support&#x27; on all 3 statements: its stance agreement is the share of statements"
    assert said in page
    assert any(
        line.startswith("prompt-only takes 'support' on all 3 statements") for line in stance_count_lines(report)
    )
    report["stances"]["sides"]["prompt-only"]["s3"] = "oppose"
    assert not any("takes" in line for line in stance_count_lines(report))
    assert "<p>20 held-out prompts, 0 identity probes, 0 held-out completions; greedy decoding. Style" in page


def test_the_table_and_the_report_name_a_prompts_file_and_the_held_out_loss_sample(tmp_path):
    """A ``--prompts_file`` run's prompts are the file's, not held-out ones; a ``--max_heldout`` run's loss is a
    sample: the printed table and report.html both say so."""
    from politician_lm.evaluation.card import scorecard_text
    from politician_lm.evaluation.report import write_scorecard

    arms = {"prompt-only": {"heldout_loss": {"value": 3.0, "low": 2.9, "high": 3.1}}}
    heldout = {"sampled": True, "used": 50, "available": 290, "max_heldout": 50}
    report = {"politician": "quill", "n_style_prompts": 12, "n_identity_prompts": 4, "n_heldout_losses": 50,
              "classifier": {"held_out_accuracy": 0.9, "labels": []}, "arms": arms, "differences": {},
              "confusion": {}, "prompts_file": "probes/my_questions.jsonl",
              "heldout": heldout | {"loss_interval_width": {"prompt-only": 0.2}}}  # fmt: skip
    write_scorecard(tmp_path, report, [], {})
    page, text = (tmp_path / "report.html").read_text(), scorecard_text(report)
    counts = "12 prompts of my_questions.jsonl, 4 identity probes, 50 held-out completions"
    sample = "held-out loss on a seeded sample of 50 of 290 records (--max_heldout 50); loss interval widths: "
    assert counts in text and counts in page and "held-out prompts" not in text + page
    assert sample + "prompt-only 0.200" in text and sample + "prompt-only 0.200" in page
