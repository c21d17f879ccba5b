"""``evaluate``'s steps that run the model: the arms on one loaded persona, the judge's generic class, and each
arm's answers and held-out losses. Scoring the texts is ``evaluation.arms``'s job; this module only switches
adapters and generates."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from politician_lm.artifacts.adapter import AdapterFolder
from politician_lm.artifacts.roles import strip_politician_label
from politician_lm.evaluation.arm_cache import arm_key, load_arm, store_arm
from politician_lm.evaluation.arms import (
    BASE,
    PROMPT_ONLY,
    Arm,
    ArmContext,
    ArmRuns,
    sample_rows,
    score_arm,
    target_stances,
)
from politician_lm.evaluation.card import REAL_SPEECH
from politician_lm.evaluation.stances import PROBE_ROWS, probe_conversations, probe_losses
from politician_lm.inference import Persona
from politician_lm.model.adapters import activate, adapter_names

if TYPE_CHECKING:
    from politician_lm.evaluation.judge import JudgeSpec

__all__ = ["arm_persona", "build_arms", "model_build", "run_arms"]


def build_arms(persona: Persona, folders: list[AdapterFolder], system_prompt: str | None) -> list[Arm]:
    """Base, prompt-only, then every adapter under the name ``load_persona`` attached it, rendering prompts as that
    adapter was trained (its metadata's format, separator, system prompt and politician)."""
    bare = replace(persona.style, system_prompt=None, politician=None)
    arms = [Arm(BASE, None, bare), Arm(PROMPT_ONLY, None, bare, system_prompt)]
    for name, f in zip(adapter_names(len(folders)), folders):
        keys = ("prompt_format", "separator", "system_prompt", "politician")
        style = replace(persona.style, **{k: f.metadata[k] for k in keys if k in f.metadata})
        arms.append(Arm(str(f.path), name, style))
    return arms


@contextmanager
def arm_persona(persona: Persona, arm: Arm) -> Iterator[Persona]:
    """``persona`` as ``arm`` answers: its adapter switched on (every adapter off for the base and prompt-only arms)
    and its prompt style. The one place an arm's model state is set, for ``run_arms`` and the stance-probe script."""
    if arm.adapter is not None:
        activate(persona.model, arm.adapter)
    with persona.model.disable_adapter() if arm.adapter is None else nullcontext():
        yield replace(persona, style=arm.style)


def model_build(persona: Persona, metadata: dict[str, Any]) -> dict[str, Any]:
    """How the persona's base was loaded, for ``evaluation.arm_cache``'s key: the adapter's quantization (on CPU the
    4-bit base is de-quantized, so its weights are the rounded ones), parameter dtype, device and the hardware's
    kernels (a cache shared across machines must not mix their rounding), torch's threads, the generation defaults,
    and the tokenizer by content (the first adapter's folder may carry its own)."""
    import hashlib
    import json

    import torch

    tok = persona.tokenizer
    tokenizer = {"vocab": sorted(tok.get_vocab().items()), "chat_template": tok.chat_template,
                 "special": tok.special_tokens_map, "sides": [tok.padding_side, tok.truncation_side]}  # fmt: skip
    param = next(persona.model.parameters())
    return {
        "quantization": metadata.get("quantization") or "none",
        "dtype": str(param.dtype),
        "device": str(param.device),
        "hardware": torch.cuda.get_device_name(param.device) if param.device.type == "cuda" else None,
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),  # AVX2, AVX512, ...: which kernels ran
        "threads": torch.get_num_threads(),
        "generation": persona.generation,
        "tokenizer": hashlib.sha256(json.dumps(tokenizer, sort_keys=True, default=str).encode()).hexdigest(),
    }


def first_tokens(tokenizer: Any, texts: list[str], n: int) -> list[str]:
    """Each text cut to its first ``n`` tokens, as an answer of at most ``n`` new tokens would be."""
    return tokenizer.batch_decode([ids[:n] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])


def run_arms(
    persona: Persona,
    arms: list[Arm],
    items: list[dict[str, Any]],
    held_convs: list[list[dict[str, str]]],
    pool: list[list[dict[str, str]]],
    base_path: str,
    judge: JudgeSpec,
    ctx: ArmContext,
    max_new_tokens: int,
    batch_sizes: tuple[int, int],
    repetition_penalty: float = 1.0,
    build: dict[str, Any] | None = None,
) -> ArmRuns:
    """Generate the judge's generic class (adapters off), train or load the judge, then let every arm answer
    ``items`` (greedy) and score ``held_convs``'s completions, one progress bar over all of it.

    ``judge`` says what the style judge learns from, but its generic class; ``batch_sizes`` is ``(generation, loss
    pass)``; ``ctx`` is completed with the judge here. With ``build`` (``model_build``: how the base was loaded,
    quantization, dtype, device, threads) the arms without an adapter are reused from ``evaluation.arm_cache`` where
    an earlier run computed them with the same key, and stored there otherwise; their names go to ``runs.cached``.
    """
    from tqdm import tqdm

    from politician_lm.evaluation.generic import generic_texts

    prompts = [i["messages"] for i in items]
    batch_size, loss_batch_size = batch_sizes
    per_arm = -(-len(prompts) // batch_size) + -(-len(held_convs) // loss_batch_size)  # generation and loss batches
    batches = per_arm * len(arms) + -(-len(pool) // batch_size)
    batches += sum(len(target_stances(arm, ctx)) for arm in arms)  # one batch per stance: its prompt runs once
    runs = ArmRuns({}, {}, [], None, 0)
    with tqdm(total=batches, desc="Evaluating", file=sys.stderr) as bar:
        with persona.model.disable_adapter():
            bare = replace(persona, style=arms[0].style)
            generic = generic_texts(bare, pool, max_new_tokens, batch_size, base_path, bar.update, repetition_penalty,
                                    build, use_cache=build is not None)  # fmt: skip
        runs.classifier = judge.load(generic)
        runs.n_generic = len(generic)
        references = [strip_politician_label(i.get("reference", "")) for i in items[: ctx.n_style]]
        if references and all(references):  # the real continuations, cut to the answers' length, judged alike
            cut = first_tokens(persona.tokenizer, references, max_new_tokens)
            runs.real_speech = runs.classifier.predict(cut)
            runs.samples += sample_rows(Arm(REAL_SPEECH, None, arms[0].style), items, cut, runs.real_speech)
        ctx = replace(ctx, classifier=runs.classifier)
        for arm in arms:
            key = None
            if build is not None and arm.adapter is None:
                key = arm_key(base_path, _arm_inputs(arm, prompts, held_convs, ctx, build, max_new_tokens,
                                                     batch_sizes, repetition_penalty))  # fmt: skip
            if key and (cached := load_arm(key)):
                texts, losses, stance_losses = cached["texts"], cached["losses"], cached["stance_losses"]
                bar.update(per_arm + len(cached["stance_losses"]) // PROBE_ROWS)  # its batches, as _answer counts
                runs.cached.append(arm.name)
            else:
                texts, losses, stance_losses = _answer(persona, arm, prompts, held_convs, ctx, runs, bar.update,
                                                       (max_new_tokens, batch_size, loss_batch_size,
                                                        repetition_penalty))  # fmt: skip
                if key:
                    store_arm(key, texts, losses, stance_losses)
            texts = [strip_politician_label(t) for t in texts]
            scores, runs.corpus_distinct[arm.name] = score_arm(arm, texts, losses, ctx, stance_losses)
            runs.results[arm.name] = scores
            runs.samples += sample_rows(arm, items, texts, scores.predicted, scores)
    return runs


def _arm_inputs(
    arm: Arm,
    prompts: list[Any],
    held_convs: list[Any],
    ctx: ArmContext,
    build: dict[str, Any],
    max_new_tokens: int,
    batch_sizes: tuple[int, int],
    repetition_penalty: float,
) -> dict[str, Any]:
    """Everything an arm without an adapter answers and scores from, for its cache key."""
    stances = target_stances(arm, ctx)
    return {
        "arm": arm.name,
        "style": arm.style.to_dict(),
        "prompts": arm.conversations(prompts),
        "held_out": arm.conversations(held_convs),
        "stances": [arm.conversations(probe_conversations(s)) for s in stances],
        "decoding": {"max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty, "greedy": True},
        "batch_sizes": list(batch_sizes),
        "model": build,
    }


def _answer(
    persona: Persona,
    arm: Arm,
    prompts: list[Any],
    held_convs: list[Any],
    ctx: ArmContext,
    runs: ArmRuns,
    on_batch: Any,
    settings: tuple[int, int, int, float],
) -> tuple[list[str], list[Any], list[Any]]:
    """Run ``arm``: its greedy answers to ``prompts``, its held-out completion losses and its stance losses, adding
    the seconds of each part to ``runs.seconds``."""
    max_new_tokens, batch_size, loss_batch_size, repetition_penalty = settings
    with arm_persona(persona, arm) as answering:
        started = time.perf_counter()
        texts = answering.generate(
            arm.conversations(prompts),
            batch_size=batch_size,
            on_batch=on_batch,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
            do_sample=False,
        )
        generated = time.perf_counter()
        losses = answering.completion_losses(arm.conversations(held_convs), loss_batch_size, on_batch=on_batch)
        scored = time.perf_counter()
        stance_losses = probe_losses(
            target_stances(arm, ctx),
            lambda group, p=answering, a=arm: p.stance_losses(a.conversations(group), on_batch),
        )
        for part, seconds in (("generation", generated - started), ("heldout_loss", scored - generated),
                              ("stances", time.perf_counter() - scored)):  # fmt: skip
            runs.seconds[part] = runs.seconds.get(part, 0.0) + seconds
    return texts, losses, stance_losses
