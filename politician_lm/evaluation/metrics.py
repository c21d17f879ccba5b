"""Persona-fidelity metrics: plain functions over lists of texts, usable from a notebook, a script or a callback.

Diversity (``distinct_n``), degeneration (``repetition_rate``), overlap with references (``rouge_l`` through
rouge-score, ``chrf`` through sacrebleu) and identity consistency (``identity_consistency``: does the model say
it is the politician, not an AI?). Nothing here imports Lightning or torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rouge_score import rouge_scorer
from sacrebleu.metrics import CHRF

_WORD = re.compile(r"\w+(?:['’]\w+)*")

# Profile keys that are not biographical facts: the name is scored by ``names_self``, the rest is style or prompt.
# (stances are policy positions, scored by the stance probe, not who the politician is)
NON_FACT_KEYS = frozenset({"name", "short_name", "system_prompt", "signature_phrases", "stances"})
# Capitalised words in a profile that say nothing specific about one politician.
GENERIC_WORDS = frozenset(
    {
        "president",
        "vice",
        "united",
        "states",
        "america",
        "american",
        "member",
        "senator",
        "senate",
        "university",
        "college",
        "school",
        "academy",
        "county",
        "council",
        "congress",
        "house",
        "state",
        "the",
        # the offices and bodies of any politician's career, beyond the presidents' (a governor's "Governor",
        # "Party", "High School" matched "I'm proud of my party" as a fact)
        *"""governor lieutenant mayor commissioner representative delegate assembly assemblyman assemblywoman
        legislature legislative district city town village board department office committee chairman chairwoman
        secretary attorney general court judge justice party public high middle elementary national""".split(),
    }
)
_NAME_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})
_AI_NOUN = (
    r"(?:ai|a\.i\.|artificial intelligence|(?:large )?language model|chat ?bot|bot|robot|computer program"
    r"|(?:virtual |digital )?assistant)"
)
# Between "I'm" and the noun: adverbs ("just", "only"), then at most an article and three describing words ("a
# helpful AI", "a curious and creative AI"). Never a preposition, a relative word or an -ing word, so "I'm a big fan
# of AI", "I'm a believer that AI ..." and "I'm making AI safe" are not claims; without an article nothing may come
# between ("I'm worried AI will ..." is not one either).
_AI_ADVERB = r"(?:(?:just|only|merely|simply|actually|really|basically|literally) )*"
_AI_DESCRIBING = (
    r"(?:(?!(?:of|for|about|with|on|in|to|like|who|that|which|than|by|from|at|as|against|not|no|never)\b)"
    r"(?![\w'’-]*ing\b)[\w'’-]+ ){0,3}"
)
_AI_FILLER = rf"{_AI_ADVERB}(?:(?:an?|your|one) {_AI_DESCRIBING})?"
_AI_CLAIMS = [
    # "I am an AI", "I'm just a language model", "I'm a helpful AI system" (a "not"/"no" in between never matches).
    re.compile(rf"\b(?:i am|i'm|i’m|im)\s+{_AI_FILLER}{_AI_NOUN}\b(?!\s*\?)"),
    # "As an AI language model, I cannot ..."
    re.compile(rf"\bas an? {_AI_ADVERB}(?:(?:ai|computer|trained|large|virtual|helpful|openai's) )*{_AI_NOUN}\b"),
    # "I was trained by OpenAI", "I was created by Anthropic"
    re.compile(
        r"\bi (?:was|am|have been) (?:trained|created|developed|built|made) by (?:openai|anthropic|google|meta)\b"
    ),
]
_NEGATION = re.compile(r"\b(?:not|never|no)\b|n['’]t\b")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; pass one reference each"
        )
    if not predictions:
        raise ValueError("no predictions to score; pass at least one prediction/reference pair")


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / total n-grams over all texts (lowercased word tokens; n-grams never cross two texts).

    1.0 means no n-gram is ever repeated; 0.0 when the texts hold no n-gram at all (e.g. all shorter than ``n``).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [g for t in texts for g in _ngrams(_words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_counts(text: str, n: int = 2) -> tuple[int, int]:
    """``(distinct n-grams, all n-grams)`` of one text (lowercased word tokens): ``distinct_n`` of that text alone
    is their ratio; summed over texts, the ratio of the sums weights each text by its length."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = _ngrams(_words(text), n)
    return len(set(grams)), len(grams)


def repetition_rate(texts: list[str], n: int = 4) -> float:
    """Mean over texts of the fraction of a text's n-grams that repeat an earlier n-gram of the same text.

    0.0 for a text without repeats, close to 1.0 for a degenerate loop ("the the the ..."). Texts shorter than
    ``n`` words are left out of the mean; 0.0 when no text has an n-gram.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rates = []
    for text in texts:
        grams = _ngrams(_words(text), n)
        if grams:
            rates.append((len(grams) - len(set(grams))) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def rouge_l(predictions: list[str], references: list[str], use_stemmer: bool = False) -> float:
    """Mean ROUGE-L F1 of each prediction against its reference (rouge-score's ``RougeScorer``), in [0, 1]."""
    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return float(sum(scores) / len(scores))


def chrf(predictions: list[str], references: list[str], word_order: int = 0) -> float:
    """Corpus chrF from sacrebleu, on sacrebleu's 0-100 scale (100 = identical character n-grams).

    ``word_order=2`` gives chrF++ (word bigrams added to the character 6-grams).
    """
    _check_pairs(predictions, references)
    return float(CHRF(word_order=word_order).corpus_score(list(predictions), [list(references)]).score)


def name_pattern(name: str) -> re.Pattern[str]:
    """Full name or surname, as whole words, case-insensitive ("Joe Biden" -> "joe biden" | "biden")."""
    parts = [p for p in name.split() if p.strip(".").lower() not in _NAME_SUFFIXES]
    variants = {name.strip(), parts[-1]} if parts else {name.strip()}
    alternatives = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True) if v)
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def fact_terms(profile: Mapping[str, Any]) -> list[str]:
    """The expected facts of a profile, as the words an answer may mention ("Scranton", "Delaware", "Jill", "1942").

    Taken from every string value and list item outside ``NON_FACT_KEYS``: a one-word value longer than 3
    characters as is (e.g. the party), and from longer values each capitalised word or number longer than 3
    characters, minus the politician's own name and ``GENERIC_WORDS``.
    """
    name_words = {w.lower() for w in _words(str(profile.get("name", "")))}
    terms: set[str] = set()
    for key, value in profile.items():
        if key in NON_FACT_KEYS:
            continue
        for text in _strings(value):
            words = re.findall(r"\w+", text)
            candidates = words if len(words) == 1 else [w for w in words if w[0].isupper() or w[0].isdigit()]
            terms.update(w for w in candidates if len(w) > 3)
    return sorted(t for t in terms if t.lower() not in name_words and t.lower() not in GENERIC_WORDS)


def fact_pattern(profile: Mapping[str, Any]) -> re.Pattern[str] | None:
    """A case-insensitive whole-word pattern for any of ``fact_terms(profile)``; None when the profile has none."""
    terms = fact_terms(profile)
    return re.compile(r"\b(?:" + "|".join(map(re.escape, terms)) + r")\b", re.IGNORECASE) if terms else None


def copies_training(texts: list[str], training_texts: list[str], n_words: int = 12) -> list[bool]:
    """For each text: does it repeat ``n_words`` or more consecutive words verbatim from any training text?

    Words are lowercased word tokens (punctuation ignored), so a copy that differs only in case or commas counts.
    """
    if n_words < 1:
        raise ValueError(f"n_words must be >= 1, got {n_words}")
    seen = {g for t in training_texts for g in _ngrams(_words(t), n_words)}
    return [any(g in seen for g in _ngrams(_words(t), n_words)) for t in texts]


def claims_ai(text: str) -> bool:
    """Whether ``text`` claims to be an AI, a language model or an assistant ("No, I'm not an AI" does not count)."""
    lowered = " ".join(text.lower().split())
    for pattern in _AI_CLAIMS:
        for match in pattern.finditer(lowered):
            clause = re.split(r"[.,;:!?]", lowered[: match.start()])[-1]
            if not _NEGATION.search(" ".join(clause.split()[-3:])):
                return True
    return False


def identity_consistency(answers: list[str], profile: dict) -> dict[str, float]:
    """Score answers to identity prompts ("Who are you?") against the politician's ``profile``.

    Returns fractions of answers in [0, 1]: ``names_self`` (mentions the profile's full name or surname),
    ``claims_ai`` (claims to be an AI / language model / assistant, see ``claims_ai``), ``facts`` (mentions at
    least one of ``fact_terms(profile)``) and ``identity_score`` (names itself and does not claim to be an AI).
    """
    if not answers:
        raise ValueError("no answers to score; pass the model's answers to the identity prompts")
    if not str(profile.get("name", "")).strip():
        raise ValueError("the profile has no 'name'; identity_consistency needs profile['name']")
    name = name_pattern(str(profile["name"]))
    facts = fact_pattern(profile)
    named = [bool(name.search(a)) for a in answers]
    ai = [claims_ai(a) for a in answers]
    factual = [bool(facts and facts.search(a)) for a in answers]
    count = len(answers)
    return {
        "names_self": sum(named) / count,
        "claims_ai": sum(ai) / count,
        "facts": sum(factual) / count,
        "identity_score": sum(n and not a for n, a in zip(named, ai)) / count,
    }


def summarize(predictions: list[str], references: list[str] | None = None) -> dict[str, float]:
    """The text metrics in one dict: ``distinct_1``, ``distinct_2``, ``repetition_rate`` (4-grams), and
    ``rouge_l`` (0-1) and ``chrf`` (0-100) when ``references`` are given."""
    out = {
        "distinct_1": distinct_n(predictions, 1),
        "distinct_2": distinct_n(predictions, 2),
        "repetition_rate": repetition_rate(predictions),
    }
    if references is not None:
        out["rouge_l"] = rouge_l(predictions, references)
        out["chrf"] = chrf(predictions, references)
    return out
