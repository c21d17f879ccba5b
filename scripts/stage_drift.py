"""How far a later stage (a preference stage, say) moved a persona's speech from the adapter it started from: per
token, the completion NLL under each adapter and KL(start || stage) of their next-token distributions, over the
whole vocabulary and over the KL anchor's buckets (``model.anchor_kind: kl``: the start's top 32 tokens and one
bucket for the rest), on a prepared data folder's records of each split and kind.

    python scripts/stage_drift.py runs/sotu-trump/adapters/best runs/trump-simpo/adapters/last runs/data/sotu-trump
    python scripts/stage_drift.py START STAGE DATA --splits val:style --records 64

A rise of NLL on the training records says little: the stage started from weights that fit them. The KL sees any
move of the distributions, and ``val`` (the hash split of the training addresses, never trained on) and ``test``
(the held-out address) show what the move costs on speech the adapter never saw. Each record is scored alone, with
the full logits (no batching, no padding); records are a seeded sample of each split's records of that kind.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("start", help="the adapter the stage started from (e.g. SFT's adapters/best)")
    ap.add_argument("stage", help="the stage's adapter")
    ap.add_argument("data", help="a prepared data folder (train.jsonl, val.jsonl, test.jsonl)")
    ap.add_argument("--splits", default="train:style,val:style,test:style", help="split:kind pairs, comma-separated")
    ap.add_argument("--records", type=int, default=64, help="records per split and kind (a seeded sample)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from politician_lm.batch import IGNORE_INDEX
    from politician_lm.data.records import to_conversation
    from politician_lm.data.tokenize import encode
    from politician_lm.inference import load_persona
    from politician_lm.model.anchor import bucket_kl, top_buckets

    start, stage = load_persona(args.start), load_persona(args.stage)

    @torch.no_grad()
    def logps(persona, conversation):
        tokenizer = persona.tokenizer
        row = encode(tokenizer, *persona.style.render(conversation, tokenizer), 10**6, add_bos=persona._bos)
        targets = torch.tensor(row["labels"][1:])
        keep = targets != IGNORE_INDEX
        logits = persona.model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1][keep]
        return torch.log_softmax(logits.double(), -1), targets[keep]

    print(
        f"{'split':<6}{'kind':<8}{'records':>8}{'tokens':>8}{'NLL start':>11}{'NLL stage':>11}{'rise':>9}"
        f"{'KL':>9}{'KL buckets':>12}"
    )
    for split, kind in (pair.split(":") for pair in args.splits.split(",")):
        path = Path(args.data) / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [r for r in rows if (r.get("kind") or "style") == kind]
        random.Random(args.seed).shuffle(rows)
        tokens = nll_a = nll_b = kl = kl_buckets = 0.0
        for r in rows[: args.records]:
            conversation = to_conversation(r)["messages"]
            a, targets = logps(start, conversation)
            b, _ = logps(stage, conversation)
            kl += float((a.exp() * (a - b)).sum())
            ids, buckets = top_buckets(a)
            kl_buckets += float(bucket_kl(buckets, ids, b).sum())
            nll_a -= float(a.gather(-1, targets[:, None]).sum())
            nll_b -= float(b.gather(-1, targets[:, None]).sum())
            tokens += len(targets)
        if tokens:
            n = min(len(rows), args.records)
            print(
                f"{split:<6}{kind:<8}{n:>8}{int(tokens):>8}{nll_a / tokens:>11.4f}{nll_b / tokens:>11.4f}"
                f"{(nll_b - nll_a) / tokens:>+9.4f}{kl / tokens:>9.4f}{kl_buckets / tokens:>12.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
