"""``politician-lm generate`` and ``politician-lm chat``: a persona by adapters or by name from the registry."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from politician_lm.artifacts.atomic import atomic_write_text, check_output
from politician_lm.artifacts.jsonl import jsonl_text, read_jsonl
from politician_lm.artifacts.registry import entry_adapters, registry_entry
from politician_lm.artifacts.roles import assistant_turn, may_become_reply_label, strip_reply_label, user_turn
from politician_lm.errors import UserError
from politician_lm.inference import Persona, load_persona

REGISTRY = "configs/models.yaml"


def resolve_persona(
    adapters: list[str] | str | None,
    weights: list[float] | str | None,
    base_model: str | None,
    politician: str | None,
    registry: str,
    quantization: str | None,
    allow_pickle: bool,
) -> Persona:
    """The persona of ``adapters`` (on ``base_model``), or of ``politician``'s registry entry: its adapters, weights,
    base model and generation settings, where ``weights`` (one per entry adapter) and ``base_model`` (a base folder
    that moved) replace the entry's own. Both ``adapters`` and ``politician`` is refused: which persona is meant?"""
    generation_settings: dict[str, Any] = {}
    if politician and adapters:
        raise UserError("give --adapters or --politician, not both (--politician takes its adapters from the registry)")
    if politician:
        entry = registry_entry(politician, registry)
        paths, entry_weights = entry_adapters(entry)
        adapters, weights = paths or None, (weights if weights is not None else entry_weights or None)
        base_model = base_model or entry.get("base_model")
        generation_settings = entry.get("generation") or {}
    elif not adapters and not base_model:
        raise UserError("give --adapters (and optionally --weights), --base_model, or --politician NAME")
    persona = load_persona(adapters, weights, base_model, quantization, allow_pickle=allow_pickle, merge_adapters=True)
    persona.generation.update(generation_settings)
    return persona


def read_prompts(path: str) -> list[dict[str, Any]]:
    """JSONL rows with ``prompt`` (a string) or ``messages`` ending in a user turn; other keys are passed through."""
    rows = []
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: prompts file does not exist")
    for lineno, obj in read_jsonl(p):
        messages = obj.get("messages") if isinstance(obj, dict) else None
        ok = isinstance(obj, dict) and (
            isinstance(obj.get("prompt"), str)
            or (
                isinstance(messages, list)
                and messages
                and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
                and messages[-1]["role"] == "user"
            )
        )
        if not ok:
            raise UserError(f"{p}:{lineno}: need a string 'prompt' or 'messages' ending with a user turn")
        if "prompt" not in obj and not all(isinstance(m.get("content"), str) for m in messages):
            raise UserError(f"{p}:{lineno}: every message needs a string 'content'")
        rows.append(obj)
    if not rows:
        raise UserError(f"{p}: file is empty; it needs at least one prompt")
    return rows


def generate(
    prompt: str | None = None,
    prompts_file: str | None = None,
    output: str | None = None,
    adapters: list[str] | str | None = None,
    weights: list[float] | str | None = None,
    base_model: str | None = None,
    politician: str | None = None,
    registry: str = REGISTRY,
    max_new_tokens: int | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = 8,
    quantization: str | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> None:
    """Generate answers for ``--prompt`` or a JSONL ``--prompts_file``; write JSONL rows with a ``generation`` key.

    Args:
        prompt: One prompt, written as in training (e.g. "USER: What about jobs?").
        prompts_file: JSONL with ``prompt`` or ``messages`` per line.
        output: Output JSONL (written atomically); default prints to stdout.
        adapters: Adapter folders, as ``a,b`` or a list; applied together at run time.
        weights: One weight per adapter (default 1 each), as ``0.7,0.3`` or a list.
        base_model: Base model, or an exported model folder when no adapters are given.
        politician: Persona name in the registry (its adapters, weights, base model and generation settings;
            --weights and --base_model, for a base folder that moved, replace the entry's). Not with --adapters.
        registry: Model registry YAML mapping names to base model, adapters and generation settings.
        max_new_tokens: Tokens to generate (default: the adapter's generation config).
        do_sample: Sample instead of greedy decoding (default: the adapter's generation config).
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        seed: Random seed for sampling.
        batch_size: Prompts generated together.
        quantization: Base weights: nf4, fp4, int8 or none (default: as the adapter was trained).
        overwrite: Replace ``output`` if it exists.
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    if (prompt is None) == (prompts_file is None):
        raise UserError("give exactly one of --prompt or --prompts_file")
    check_new_tokens(max_new_tokens)
    rows = [{"prompt": prompt}] if prompt is not None else read_prompts(prompts_file)
    if output:
        check_output(output, overwrite, "--output", folder=False, inputs=[prompts_file])  # never the prompts
    import torch
    from tqdm import tqdm

    persona = resolve_persona(adapters, weights, base_model, politician, registry, quantization, allow_pickle)
    torch.manual_seed(seed)
    convs = [r["messages"] if "messages" in r else [{"role": "user", "content": r["prompt"]}] for r in rows]
    check_fits_window(persona, convs, max_new_tokens or persona.generation.get("max_new_tokens") or 0)
    with tqdm(
        total=-(-len(convs) // batch_size), desc="Generating", disable=len(convs) <= batch_size, file=sys.stderr
    ) as bar:
        outputs = persona.generate(
            convs,
            batch_size=batch_size,
            on_batch=bar.update,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
        )
    text = jsonl_text({**r, "generation": g} for r, g in zip(rows, outputs))
    if output:
        atomic_write_text(output, text)
        print(f"wrote {len(rows)} generations to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def check_new_tokens(max_new_tokens: int | None) -> None:
    """``--max_new_tokens`` of at least 1 where given: one line before any model loads."""
    if max_new_tokens is not None and max_new_tokens < 1:
        raise UserError(f"--max_new_tokens {max_new_tokens}: must be at least 1 (or left out for the persona's)")


def check_fits_window(persona: Persona, convs: list[list[dict[str, str]]], new_tokens: int) -> None:
    """Each prompt and ``new_tokens`` within the model's context window, as chat and serve refuse: one line naming
    the first prompt that does not fit, before any generation."""
    window = persona.context_window
    if new_tokens >= window:
        raise UserError(f"--max_new_tokens {new_tokens}: the context window is {window} tokens; give fewer")
    for i, conv in enumerate(convs, 1):
        if (n := len(persona.prompt_ids(conv))) + new_tokens > window:
            raise UserError(
                f"prompt {i}: {n} tokens and {new_tokens} new ones exceed the context window of {window}; shorten "
                "it or lower --max_new_tokens"
            )


def fit_history(persona: Persona, history: list[dict[str, str]], max_new_tokens: int) -> list[dict[str, str]]:
    """Drop the oldest exchanges until the prompt plus the answer fits the context window."""
    budget = persona.context_window - max_new_tokens
    while len(history) > 1 and len(persona.prompt_ids(history)) > budget:
        history = history[2:] if len(history) > 2 else history[1:]
    return history


def reply_streamer(tokenizer: Any) -> Any:
    """A ``TextStreamer`` that prints the answer as it is generated, without a leading ``POLITICIAN:`` label."""
    from transformers import TextStreamer

    class ReplyStreamer(TextStreamer):
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.head: str | None = ""  # text held back while it could still be the start of a label

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if self.head is not None:
                self.head += text
                if not stream_end and may_become_reply_label(self.head):
                    return
                text, self.head = strip_reply_label(self.head), None
            super().on_finalized_text(text, stream_end)

    return ReplyStreamer()


def chat(
    adapters: list[str] | str | None = None,
    weights: list[float] | str | None = None,
    base_model: str | None = None,
    politician: str | None = None,
    registry: str = REGISTRY,
    max_new_tokens: int | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int = 0,
    quantization: str | None = None,
    allow_pickle: bool = False,
) -> None:
    """Talk to a persona: one message per line, answers stream as they are generated; /reset, /exit (/quit).

    Args:
        adapters: Adapter folders, as ``a,b`` or a list; applied together at run time.
        weights: One weight per adapter (default 1 each), as ``0.7,0.3`` or a list.
        base_model: Base model, or an exported model folder when no adapters are given.
        politician: Persona name in the registry (e.g. ``biden``; --weights and --base_model, for a base folder that
            moved, replace the entry's). Not with --adapters.
        registry: Model registry YAML mapping names to base model, adapters and generation settings.
        max_new_tokens: Longest answer in tokens (default: the persona's generation settings).
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        seed: Random seed for sampling.
        quantization: Base weights: nf4, fp4, int8 or none (default: as the adapter was trained).
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    check_new_tokens(max_new_tokens)
    import torch

    persona = resolve_persona(adapters, weights, base_model, politician, registry, quantization, allow_pickle)
    torch.manual_seed(seed)
    limit = max_new_tokens or persona.generation.get("max_new_tokens") or 128
    check_fits_window(persona, [], limit)  # an answer longer than the window would refuse every message
    name = persona.style.politician or politician or "assistant"
    interactive = sys.stdin.isatty()
    print(f"Chatting with {name}. /reset clears the conversation, /exit (or /quit) quits.", file=sys.stderr)
    fmt = persona.style.prompt_format
    history: list[dict[str, str]] = []
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt ends the chat, like /exit
            print(file=sys.stderr)
            break
        if not line or line.strip() in ("/exit", "/quit"):
            break
        message = line.strip()
        if not message:
            continue
        if message == "/reset":
            history = []
            print("(conversation cleared)", flush=True)
            continue
        if re.fullmatch(r"/[a-z]+", message):  # a mistyped command is no message to the persona
            print(f"(unknown command {message}: /reset clears the conversation, /exit or /quit quits)", flush=True)
            continue
        asked = fit_history(persona, [*history, user_turn(message, fmt)], limit)
        if len(persona.prompt_ids(asked)) + limit > persona.context_window:
            print("(message too long for the context window; shorten it)", flush=True)
            continue
        print(f"{name}> ", end="", flush=True)
        try:
            reply = persona.generate(
                [asked],
                streamer=reply_streamer(persona.tokenizer),
                max_new_tokens=limit,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p,
            )[0]
        except KeyboardInterrupt:  # Ctrl-C while answering stops the answer; the conversation so far is kept
            print("\n(answer stopped; the conversation is kept. /exit quits)", flush=True)
            continue
        history = [*asked, assistant_turn(reply, fmt)]
