"""Build the tiny Mistral-architecture model and tokenizer committed under ``checkpoints/tiny-politician``.

Reproducible: a byte-level BPE tokenizer is trained on the bundled corpus (every record under ``data/``), then a
2-layer Mistral model is pre-trained briefly on the same text with a fixed seed on one CPU thread, so its
generations are word-like. The result loads with ``AutoModelForCausalLM.from_pretrained`` like any hub model.

Like a hub model, which has never seen your fine-tuning data, the tiny model pre-trains on only part of the
corpus: a fixed hash half of every politician's records, never those that the DataModule's default split puts in
validation (seed 42, val_fraction up to 0.15). So a demo fine-tune has new material to learn from, and its
validation loss measures text the base model has not seen.

    python scripts/make_tiny_model.py            # about a minute on a laptop CPU
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from politician_lm.artifacts.atomic import atomic_dir
from politician_lm.data.records import split_bucket, to_conversation

ROOT = Path(__file__).resolve().parents[1]

# Mistral-style template that also accepts a leading system turn (the persona prompt).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '[SYS] ' + m['content'] + ' [/SYS]\n' }}"
    "{% elif m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)


PRETRAIN_SEED = 1


def corpus(
    data_dir: Path, holdout_seed: int, holdout_fraction: float, pretrain_share: float
) -> tuple[list[str], list[str]]:
    """(all texts, texts outside the held-out validation buckets)."""
    texts, train = [], []
    for path in sorted(data_dir.glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                conv = to_conversation(json.loads(line))
                text = "\n".join(m["content"] for m in conv["messages"])
                texts.append(text)
                unseen = split_bucket(conv["messages"], holdout_seed) < holdout_fraction
                if not unseen and split_bucket(conv["messages"], PRETRAIN_SEED) < pretrain_share:
                    train.append(text)
    if not texts:
        raise SystemExit(f"no JSONL records under {data_dir}/*/")
    return texts, train


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def pretrain(
    model: MistralForCausalLM, ids: list[int], steps: int, block: int, batch: int, lr: float, seed: int
) -> float:
    gen = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        starts = torch.randint(0, len(data) - block - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + block] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "data")
    ap.add_argument("--output", type=Path, default=ROOT / "checkpoints" / "tiny-politician")
    ap.add_argument("--vocab-size", type=int, default=1536)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout-seed", type=int, default=42, help="split seed of the DataModule to stay clear of")
    ap.add_argument("--holdout-fraction", type=float, default=0.15, help="val_fraction to keep out of pre-training")
    ap.add_argument(
        "--pretrain-share", type=float, default=0.5, help="share of the other records used for pre-training"
    )
    args = ap.parse_args()

    torch.manual_seed(args.seed), random.seed(args.seed), torch.set_num_threads(1)
    texts, train_texts = corpus(args.data_dir, args.holdout_seed, args.holdout_fraction, args.pretrain_share)
    tokenizer = train_tokenizer(texts, args.vocab_size)
    ids = [i for t in train_texts for i in tokenizer(t).input_ids + [tokenizer.eos_token_id]]
    print(
        f"corpus: {len(train_texts)} of {len(texts)} documents ({len(ids)} tokens) for pre-training, "
        f"vocab {len(tokenizer)}"
    )

    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
    )
    model = MistralForCausalLM(config)
    final = pretrain(model, ids, args.steps, block=128, batch=16, lr=3e-3, seed=args.seed)
    print(f"final pre-training loss {final:.3f}; parameters {sum(p.numel() for p in model.parameters()):,}")

    model.generation_config.pad_token_id = tokenizer.eos_token_id
    with atomic_dir(args.output) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    model.eval()
    prompt = tokenizer("USER: What is your plan for the economy?\n", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=30, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    print("sample:", tokenizer.decode(out[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
