"""Training steps with and without the shared prefix (``model.shared_prefix``), side by side in one run.

    python scripts/bench_shared_prefix.py                       # the demo's data and recipe, 6 batches, 2 repeats
    python scripts/bench_shared_prefix.py --data runs/data/sotu-trump --batches 10

Builds the demo's model (``configs/sotu-biden.yaml``'s settings: SmolLM2 NF4, LoRA r 16 on every linear layer, fp32
compute, no dropout), reads the first ``--batches`` training batches of the prepared ``--data`` as fit draws them
(chat format with the persona's system prompt, length-grouped batches of 8), and times forward and backward of each
batch with every row whole and with the rows' common prefix run once, alternating the two (ABBA order per repeat) so
that drift of the machine's speed falls on both. Prints seconds per batch of each, the ratio, the prefix's share of
the tokens, and the largest loss and gradient differences between the two (fp32 rounding only). Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/data/sotu-biden", help="prepared folder (politician-lm prepare)")
    parser.add_argument("--model", default="checkpoints/SmolLM2-135M-Instruct")
    parser.add_argument("--politician", default="biden")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)

    from politician_lm import PoliticianDataModule, PoliticianLM
    from politician_lm.batch import IGNORE_INDEX
    from politician_lm.model.shared_prefix import unscored_prefix

    dm = PoliticianDataModule(
        data_path=args.data,
        tokenizer=args.model,
        politician=args.politician,
        prompt_format="chat",
        max_length=320,
        batch_size=8,
        group_by_length=True,
    )
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(args.batches)]
    module = PoliticianLM(
        model_name_or_path=args.model, lora_r=16, lora_alpha=32, lora_dropout=0.0,
        optimizer=partial(torch.optim.AdamW, lr=4e-3),
    )  # fmt: skip
    module.configure_model()
    module.model.train()
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    prefix = sum(
        unscored_prefix(b["input_ids"], b["attention_mask"], b["labels"][:, 1:] != IGNORE_INDEX) * len(b["input_ids"])
        for b in batches
    )

    def step(batch: dict, share: bool) -> tuple[float, float, dict]:
        module.scorer.share_prefix = share
        module.zero_grad()
        start = time.perf_counter()
        loss = module.scorer.token_loss(batch)
        loss.backward()
        took = time.perf_counter() - start
        return took, loss.item(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}

    seconds = {False: 0.0, True: 0.0}
    worst_loss = worst_grad = 0.0
    for repeat in range(args.repeats):
        for batch in batches:
            order = (False, True, True, False) if repeat % 2 == 0 else (True, False, False, True)
            results = {}
            for share in order:
                took, loss, grads = step(batch, share)
                seconds[share] += took / 2
                results[share] = (loss, grads)
            (plain_loss, plain), (loss, grads) = results[False], results[True]
            worst_loss = max(worst_loss, abs(loss - plain_loss))
            relative = (float((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)) for n, g in plain.items())
            worst_grad = max(worst_grad, *relative)
    n = args.batches * args.repeats
    share = prefix / tokens
    print(f"{args.batches} batches x {args.repeats} repeats, {tokens} tokens, common prefix {share:.0%} of them")
    print(f"whole rows:            {seconds[False] / n:.2f} s a batch (forward + backward)")
    print(f"common prefix once:    {seconds[True] / n:.2f} s a batch")
    print(f"ratio (prefix once / whole): {seconds[True] / seconds[False]:.2f}x")
    print(f"largest loss difference {worst_loss:.2e}; largest gradient difference {worst_grad:.2e} of the tensor's max")


if __name__ == "__main__":
    main()
