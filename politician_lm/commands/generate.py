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
    """Adapters given directly win; otherwise ``politician`` is looked up in the registry."""
    generation_settings: dict[str, Any] = {}
    if not adapters and not base_model:
        if not politician:
            raise UserError("give --adapters (and optionally --weights), --base_model, or --politician NAME")
        entry = registry_entry(politician, registry)
        paths, entry_weights = entry_adapters(entry)
        adapters, weights = paths or None, entry_weights or None
        base_model = entry.get("base_model")
        generation_settings = entry.get("generation") or {}
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
        ok = isinstance(obj, dict) and (
            isinstance(obj.get("prompt"), str)
            or (
                isinstance(obj.get("messages"), list)
                and obj["messages"]
                and isinstance(obj["messages"][-1], dict)
                and obj["messages"][-1].get("role") == "user"
            )
        )
        if not ok:
            raise UserError(f"{p}:{lineno}: need a string 'prompt' or 'messages' ending with a user turn")
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
        politician: Persona name in the registry, used when no adapters or base model are given.
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
    rows = [{"prompt": prompt}] if prompt is not None else read_prompts(prompts_file)
    if output:
        check_output(output, overwrite, "--output", folder=False)
    import torch
    from tqdm import tqdm

    persona = resolve_persona(adapters, weights, base_model, politician, registry, quantization, allow_pickle)
    torch.manual_seed(seed)
    convs = [r["messages"] if "messages" in r else [{"role": "user", "content": r["prompt"]}] for r in rows]
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
        politician: Persona name in the registry (e.g. ``biden``), used when no adapters or base model are given.
        registry: Model registry YAML mapping names to base model, adapters and generation settings.
        max_new_tokens: Longest answer in tokens (default: the persona's generation settings).
        do_sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        seed: Random seed for sampling.
        quantization: Base weights: nf4, fp4, int8 or none (default: as the adapter was trained).
        allow_pickle: Accept pickle (.bin) weights, which can run code when loaded.
    """
    import torch

    persona = resolve_persona(adapters, weights, base_model, politician, registry, quantization, allow_pickle)
    torch.manual_seed(seed)
    limit = max_new_tokens or persona.generation.get("max_new_tokens") or 128
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
