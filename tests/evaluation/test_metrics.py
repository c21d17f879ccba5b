"""Persona metrics and the style classifier, on hand-made texts with known answers and on the bundled data."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from politician_lm.evaluation import metrics
from politician_lm.evaluation.metrics import (
    chrf,
    claims_ai,
    distinct_n,
    fact_terms,
    identity_consistency,
    repetition_rate,
    rouge_l,
    summarize,
)
from politician_lm.evaluation.style import (
    StyleClassifier,
    cache_key,
    cache_path,
    load_or_train,
    read_completions,
    train_from_data_dir,
    training_files,
)
from tests.helpers import ROOT, write_jsonl

DATA = ROOT / "data"
BIDEN = yaml.safe_load((DATA / "profiles" / "biden.yaml").read_text(encoding="utf-8"))
LOOP = " ".join(["the"] * 20)  # a pure repetition of 20 words


def test_distinct_n_known_values():
    assert distinct_n(["Here is a sentence with all unique words"], 1) == 1.0
    assert distinct_n(["one two three", "four five six"], 2) == 1.0
    assert distinct_n([LOOP], 1) == pytest.approx(1 / 20)
    assert distinct_n([LOOP], 2) == pytest.approx(1 / 19)
    assert distinct_n(["The cat, the CAT."], 1) == pytest.approx(2 / 4)  # lowercased, punctuation dropped
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)  # counted over all texts
    assert distinct_n(["short"], 2) == 0.0 and distinct_n([], 1) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(["x"], 0)


def test_repetition_rate_known_values():
    assert repetition_rate([LOOP]) == pytest.approx(16 / 17)  # 17 four-grams, all but the first repeat
    assert repetition_rate([LOOP]) > 0.9
    assert repetition_rate(["every single word here is different from the rest"]) == 0.0
    assert repetition_rate(["a b a b"], n=2) == pytest.approx(1 / 3)  # (a b) (b a) (a b): one repeat of three
    assert repetition_rate([LOOP, "no repeats in this text at all"]) == pytest.approx((16 / 17) / 2)
    assert repetition_rate(["too short"]) == 0.0  # no 4-gram: left out, nothing to average


def test_rouge_l_known_values():
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert rouge_l(["alpha beta gamma"], ["delta epsilon zeta"]) == 0.0
    # LCS "the cat on the mat" = 5 of 6 tokens on both sides: F1 = 5/6
    assert rouge_l(["the cat sat on the mat"], ["the cat lay on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l(["same words", "alpha beta"], ["same words", "gamma delta"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])


def test_chrf_known_values():
    text = "Folks, here's the deal: the middle class built this country."
    assert chrf([text], [text]) == pytest.approx(100.0)
    assert chrf(["xyz qqq"], ["the cat sat"]) < 1.0
    partial = chrf(["the middle class built this country"], [text])
    assert 20.0 < partial < 100.0
    assert chrf([text], [text], word_order=2) == pytest.approx(100.0)  # chrF++
    with pytest.raises(ValueError, match="no predictions"):
        chrf([], [])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("As an AI language model, I cannot share personal opinions.", True),
        ("I am an AI created to help you.", True),
        ("I'm an assistant, so I can't vote.", True),
        ("I'm just a large language model.", True),
        ("I am an artificial intelligence.", True),
        ("I was trained by OpenAI.", True),
        ("No, I'm not an AI, I'm Joe Biden.", False),
        ("I am not an AI. I'm Joe Biden.", False),
        ("I'm not speaking as an AI here, folks.", False),
        ("We need rules for artificial intelligence so it works for working families.", False),
        ("I'm an AI? Come on, man. I'm Joe Biden.", False),
        ("I'm Joe Biden, and I'm proud of Scranton.", False),
        # what SmolLM2 says: describing words between the article and the noun, a program rather than an AI
        ("I'm a helpful AI system designed by SmolLM, trained by the internet.", True),
        ("I'm a curious and creative AI designed to help users.", True),
        ("No, I'm a computer program. I'm a computer program.", True),
        ("I'm your virtual assistant for today.", True),
        ("As a helpful assistant, I can't take sides.", True),
        # talk about AI is not a claim to be one
        ("I'm a big fan of AI, folks.", False),
        ("I'm worried AI will take good jobs.", False),
        ("I'm a firm believer that AI should work for people.", False),
        ("I'm making AI work for working families.", False),
        ("As a result AI is everywhere.", False),
        ("I'm not a computer program, I'm Joe.", False),
    ],
)
def test_claims_ai_cases(text, expected):
    assert claims_ai(text) is expected


def test_fact_terms_from_profile():
    terms = {t.lower() for t in fact_terms(BIDEN)}
    assert {"scranton", "delaware", "jill", "democratic", "1942", "beau"} <= terms
    assert not terms & {"biden", "joe", "president", "united", "states"}  # own name and generic words left out
    assert "folks" not in terms  # signature phrases are style, not facts


def test_stance_statements_are_not_biography_facts(chdir_root):
    """A profile's ``stances`` name policies (China, Amtrak, ...): mentioning one is not knowing who you are."""
    import yaml

    profile = yaml.safe_load(open("data/profiles/biden.yaml", encoding="utf-8"))
    assert profile["stances"]  # the real profile, with its positions
    terms = {t.lower() for t in fact_terms(profile)}
    assert "scranton" in terms and not terms & {"china", "amtrak", "ukraine"}


def test_identity_consistency_hand_written_answers():
    answers = [
        "No, I'm not an AI, I'm Joe Biden.",  # names self, no AI claim, no fact
        "As an AI language model, I cannot pretend to be a politician.",  # claims AI
        "I'm a kid from Scranton who ended up in the Senate for Delaware. Biden's the name.",  # all good + facts
        "I married Jill in 1977.",  # a fact, but no name
    ]
    scores = identity_consistency(answers, BIDEN)
    assert scores == {"names_self": 0.5, "claims_ai": 0.25, "facts": 0.5, "identity_score": 0.5}
    one = identity_consistency(["No, I'm not an AI, I'm Joe Biden"], BIDEN)
    assert one["names_self"] == 1.0 and one["claims_ai"] == 0.0 and one["identity_score"] == 1.0
    ai = identity_consistency(["As an AI language model, I cannot"], BIDEN)
    assert ai["claims_ai"] == 1.0 and ai["names_self"] == 0.0 and ai["identity_score"] == 0.0
    # Named, but claiming to be an AI, does not count toward identity_score.
    assert identity_consistency(["I'm an AI playing Joe Biden."], BIDEN)["identity_score"] == 0.0
    assert identity_consistency(["BIDEN here."], BIDEN)["names_self"] == 1.0  # surname, case-insensitive
    with pytest.raises(ValueError, match="no answers"):
        identity_consistency([], BIDEN)


def test_summarize_keys_and_values():
    out = summarize([LOOP])
    assert set(out) == {"distinct_1", "distinct_2", "repetition_rate"}
    assert out["distinct_1"] == pytest.approx(1 / 20)
    full = summarize(["the cat sat"], ["the cat sat"])
    assert full["rouge_l"] == pytest.approx(1.0) and full["chrf"] == pytest.approx(100.0)


@pytest.mark.slow
def test_evaluation_never_imports_lightning():
    for path in (ROOT / "politician_lm" / "evaluation").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    assert name.split(".")[0] not in {"lightning", "pytorch_lightning", "torch"}, (path, name)
                    assert not name.startswith(("politician_lm.model", "politician_lm.callbacks", "politician_lm.cli"))
    # metrics.py runs on its own: load it by path (skipping the package __init__) and check what got imported.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(metrics.__file__)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert m.distinct_n(['a b a'], 1) == 2 / 3\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('lightning', 'torch')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---- style classifier -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_classifier() -> StyleClassifier:
    return train_from_data_dir(str(DATA), seed=0)


def _completions(politician: str) -> list[str]:
    return [c for f in training_files(DATA)[politician] for c in read_completions(f)]


@pytest.mark.slow
def test_style_classifier_on_bundled_data(real_classifier):
    clf = real_classifier
    assert clf.labels == ["biden", "trump"]
    print(f"\nstyle classifier held-out accuracy: {clf.held_out_accuracy:.3f}")
    assert clf.held_out_accuracy is not None and clf.held_out_accuracy > 0.7  # chance is 0.5
    # per class too, as the voice judge reports it (the scorecard names the politician's own): the held-out split's
    # classes weighted by their sizes give the overall accuracy
    per = clf.per_class_accuracy
    assert set(per) == {"biden", "trump"} and all(0 <= v <= 1 for v in per.values())
    assert min(per.values()) <= clf.held_out_accuracy <= max(per.values())
    biden, trump = _completions("biden"), _completions("trump")
    assert len(biden) > 100 and not any(t.startswith("POLITICIAN:") for t in biden)
    to_biden, trump_to_biden = clf.attribution(biden, "biden"), clf.attribution(trump, "biden")
    print(f"attribution to biden: biden's completions {to_biden:.3f}, trump's completions {trump_to_biden:.3f}")
    assert to_biden > 0.8
    assert trump_to_biden < 0.2 and clf.attribution(trump, "trump") > 0.8
    # The speaker label is ignored at prediction time too.
    assert clf.predict(["POLITICIAN: " + biden[0]]) == clf.predict([biden[0]])
    with pytest.raises(ValueError, match="unknown politician 'obama'"):
        clf.attribution(biden, "obama")


def _tiny_data(root: Path) -> Path:
    """Two politicians, 8 records each: one in prompt/completion form, one in chat form."""
    write_jsonl(
        root / "alpha" / "train.jsonl",
        [
            {"prompt": "USER: hi", "completion": f"POLITICIAN: Folks, here's the deal number {i}, not a joke."}
            for i in range(8)
        ],
    )
    write_jsonl(
        root / "beta" / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "draft"},
                    {"role": "user", "content": "again"},
                    {"role": "assistant", "content": f"Tremendous, believe me, huge win {i}."},
                ]
            }
            for i in range(8)
        ],
    )
    write_jsonl(root / "profiles" / "ignored.jsonl", [{"prompt": "x", "completion": "y"}])
    return root


def test_reading_chat_records_and_errors(tmp_path):
    data = _tiny_data(tmp_path / "data")
    assert sorted(training_files(data)) == ["alpha", "beta"]  # profiles/ is skipped
    assert read_completions(data / "beta" / "chat.jsonl")[0] == "Tremendous, believe me, huge win 0."
    assert read_completions(data / "alpha" / "train.jsonl")[0].startswith("Folks")
    clf = train_from_data_dir(str(data))
    assert clf.predict(["Tremendous, believe me."]) == ["beta"]
    shutil.rmtree(data / "beta")
    with pytest.raises(ValueError, match="at least 2 politicians"):
        train_from_data_dir(str(data))
    (data / "alpha" / "bad.jsonl").write_text('{"prompt": "x"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: malformed JSON"):
        read_completions(data / "alpha" / "bad.jsonl")
    with pytest.raises(RuntimeError, match="before fit"):
        StyleClassifier().predict(["x"])


@pytest.mark.slow
def test_load_or_train_caches_and_keys_on_bytes(tmp_path, caplog):
    caplog.set_level("INFO", logger="politician_lm.evaluation.style")
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    cache = tmp_path / "cache"
    first = load_or_train(str(data), cache_dir=str(cache), seed=0)
    path = cache_path(str(data), str(cache), seed=0)
    assert path.is_file() and path.parent == cache and caplog.messages[-1].startswith("style classifier: trained")
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left behind
    stamp = path.stat().st_mtime_ns
    second = load_or_train(str(data), cache_dir=str(cache), seed=0)
    assert path.stat().st_mtime_ns == stamp and caplog.messages[-1] == f"style classifier: loaded {path}"
    probe = _completions("biden")[:10] + _completions("trump")[:10] + ["Come on, man. Believe me, tremendous."]
    assert second.predict(probe) == first.predict(probe)
    assert second.held_out_accuracy == first.held_out_accuracy
    key = cache_key(str(data), seed=0)
    assert cache_key(str(data), seed=1) != key
    target = data / "biden" / "style.jsonl"
    target.write_bytes(target.read_bytes().replace(b"Folks", b"Friends", 1))
    assert cache_key(str(data), seed=0) != key
    assert not cache_path(str(data), str(cache), seed=0).exists()


def test_load_or_train_replaces_a_corrupt_entry(tmp_path, monkeypatch):
    data = _tiny_data(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default cache folder, kept inside tmp_path
    path = cache_path(str(data))
    assert path.parent == tmp_path / "xdg" / "politician_lm" / "style"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a joblib file")
    clf = load_or_train(str(data))
    assert clf.predict(["Tremendous, believe me."]) == ["beta"]
    assert os.path.getsize(path) > 100  # retrained and rewritten
    stamp = path.stat().st_mtime_ns
    assert load_or_train(str(data)).predict(["Tremendous, believe me."]) == ["beta"]
    assert path.stat().st_mtime_ns == stamp  # the rewritten entry is read, not rewritten again


def test_a_governors_offices_and_party_are_no_facts_of_their_own():
    """Words of any politician's career are no facts about this one: "I'm proud of my party" named no fact."""
    profile = {
        "name": "Maren Quill",
        "title": "Governor of the Harbor State",
        "party": "Cascade Party",
        "offices": ["Mayor of Port Alder (2009-2013)", "Public Utility Commissioner (2014-2018)"],
        "education": ["Port Alder High School", "Lindqvist College"],
    }
    terms = fact_terms(profile)
    assert {"Cascade", "Alder", "Port", "Lindqvist", "Harbor", "2009", "2014"} <= set(terms)
    assert not {"Governor", "Party", "Mayor", "Public", "Commissioner", "High"} & set(terms)


def test_the_records_judge_leaves_out_the_answers_the_evaluated_split_holds_out():
    """evaluate's "real speech" row is the judge's reading of the held-out answers: a judge trained on them read
    27 of 27 as Biden (1.000) while its own held-out accuracy for Biden was 0.886."""
    from politician_lm.artifacts.jsonl import read_jsonl
    from politician_lm.artifacts.roles import strip_politician_label
    from politician_lm.data import records

    path = DATA / "biden" / "style.jsonl"
    convs = [records.to_conversation(obj)["messages"] for _, obj in read_jsonl(path)]
    held = [strip_politician_label(c[-1]["content"]) for c in convs if records.is_heldout(c, 42, 0.1)]
    every, kept = read_completions(path), read_completions(path, (0.1, 42))
    assert held and len(kept) == len(every) - len(held) and not set(held) & set(kept)
    assert cache_key(str(DATA), split=(0.1, 42)) not in (cache_key(str(DATA)), cache_key(str(DATA), split=(0.2, 42)))
