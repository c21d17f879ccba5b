"""Which features make the real-speech style judge (``evaluation.voices``) most accurate, chosen without the
held-out addresses, then read on them once.

The judge is chosen by cross-validation over the *training* addresses only: three folds, each holding out whole
addresses of every president (Biden 2022 or 2023, one of Trump 2018-2020, two of Obama 2010-2015) and a third of the
training generic texts. Each candidate's fold accuracy (and class-balanced accuracy) is printed, then its accuracy on
the held-out addresses (Biden 2024, Trump 2026, Obama 2016) and the held-out generic texts, which is the number
``evaluate`` reports, with where each held-out class went.

Candidates: ``plain`` (what ``evaluate`` uses), ``voice`` (content words masked), ``plain+voice`` (both feature
sets joined), and with ``--embeddings``, ``plain+voice+lm``: the TF-IDF model's probabilities averaged with those of a
logistic regression on the base model's mean-pooled hidden states (layer ``--layer``) of each text. The embeddings
take about 5 minutes on 2 CPU cores for SmolLM2.

    python scripts/compare_judges.py --generic ~/.cache/politician_lm/generic/<evaluate's generic texts>.json
    python scripts/compare_judges.py --generic ... --embeddings --base checkpoints/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from politician_lm.evaluation.style import GENERIC
from politician_lm.evaluation.voices import DEFAULT_PRESIDENTS, chunk_text, distort, split_generic

FOLDS = 3


def address_chunks() -> dict[tuple[str, str, bool], list[str]]:
    """``(president, address id, held out?) -> chunks``, cleaned as ``prepare`` cleans them."""
    from politician_lm.data.corpora import sotu
    from politician_lm.data.prepare.transcripts import speech_paragraphs

    out = {}
    for president in DEFAULT_PRESIDENTS:
        heldout = sotu.default_heldout(president)
        for doc in sotu.documents(president):
            paragraphs = [p.text for p in speech_paragraphs(doc.id, doc.text, {sotu.SPEAKER})]
            out[(president, doc.id, doc.id == heldout)] = chunk_text(paragraphs)
    return out


def splits(chunks, generic: list[str]):
    """The cross-validation folds over training addresses, then the held-out split: ``(name, train, test)``."""
    train_generic, held_generic = split_generic(generic)
    for fold in range(FOLDS):
        train, test = [], []
        for president in DEFAULT_PRESIDENTS:
            docs = [d for (p, d, held) in chunks if p == president and not held]
            for j, doc in enumerate(docs):
                (test if j % FOLDS == fold else train).extend((t, president) for t in chunks[(president, doc, False)])
        for j, text in enumerate(train_generic):
            (test if j % FOLDS == fold else train).append((text, GENERIC))
        yield f"fold {fold}", train, test
    train = [(t, p) for (p, _, held), texts in chunks.items() if not held for t in texts]
    test = [(t, p) for (p, _, held), texts in chunks.items() if held for t in texts]
    yield "held-out", train + [(t, GENERIC) for t in train_generic], test + [(t, GENERIC) for t in held_generic]


def tfidf(kinds: tuple[str, ...]) -> Pipeline:
    parts = {
        "chars": TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        "words": TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True),
        "shape": TfidfVectorizer(analyzer="char", ngram_range=(2, 4), sublinear_tf=True, preprocessor=distort),
    }
    union = FeatureUnion([(k, parts[k]) for k in kinds])
    return Pipeline([("f", union), ("m", LogisticRegression(C=10, max_iter=3000, class_weight="balanced"))])


class WithEmbeddings:
    """The TF-IDF judge's class probabilities averaged with a logistic regression's on the texts' embeddings."""

    def __init__(self, embed: dict[str, np.ndarray]) -> None:
        self.embed, self.text = embed, tfidf(("chars", "words", "shape"))
        self.lm = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced"))

    def fit(self, x: list[str], y: list[str]) -> WithEmbeddings:
        self.text.fit(x, y)
        self.lm.fit(np.stack([self.embed[t] for t in x]), y)
        return self

    def predict(self, x: list[str]) -> np.ndarray:
        p = self.text.predict_proba(x) + self.lm.predict_proba(np.stack([self.embed[t] for t in x]))
        return self.text.classes_[p.argmax(1)]


def embeddings(texts: list[str], base: str, layer: int) -> dict[str, np.ndarray]:
    """Each text's mean-pooled hidden state at ``layer`` of the base model (fp32, on CPU; up to 128 tokens)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    out = {}
    with torch.no_grad():
        for start in tqdm(range(0, len(texts), 32), desc="embedding"):
            batch = texts[start : start + 32]
            enc = tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=128)
            hidden = model(**enc, output_hidden_states=True).hidden_states[layer]
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.update(zip(batch, ((hidden * mask).sum(1) / mask.sum(1)).numpy()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generic", required=True, help="a JSON list of the base model's generic answers")
    parser.add_argument("--embeddings", action="store_true", help="also the candidate with LM embeddings")
    parser.add_argument("--base", default="checkpoints/SmolLM2-135M-Instruct")
    parser.add_argument("--layer", type=int, default=20)
    args = parser.parse_args()
    with open(args.generic, encoding="utf-8") as f:
        generic = [t for t in json.load(f) if t.strip()]
    chunks = address_chunks()
    candidates = {
        "plain": lambda: tfidf(("chars", "words")),
        "voice": lambda: tfidf(("shape",)),
        "plain+voice": lambda: tfidf(("chars", "words", "shape")),
    }
    if args.embeddings:
        texts = sorted({t for c in chunks.values() for t in c} | set(generic))
        embed = embeddings(texts, args.base, args.layer)
        candidates["plain+voice+lm"] = lambda: WithEmbeddings(embed)
    for name, make in candidates.items():
        cv, line = [], ""
        for split, train, test in splits(chunks, generic):
            model = make().fit([t for t, _ in train], [y for _, y in train])
            pred, gold = np.asarray(model.predict([t for t, _ in test])), np.asarray([y for _, y in test])
            accuracy = float((pred == gold).mean())
            balanced = float(np.mean([(pred[gold == c] == c).mean() for c in sorted(set(gold))]))
            if split != "held-out":
                cv.append((accuracy, balanced))
                continue
            went = {str(c): dict(collections.Counter(pred[gold == c].tolist())) for c in sorted(set(gold))}
            line = f"held-out {accuracy:.3f} (balanced {balanced:.3f}); held-out class -> judged as: {went}"
        print(f"{name:15s} cv {np.mean([a for a, _ in cv]):.3f} (balanced {np.mean([b for _, b in cv]):.3f})  {line}")


if __name__ == "__main__":
    main()
