"""The text files ``export-vllm`` writes beside the adapters: ``serve.sh`` (the ``vllm serve`` line) and README.md."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from politician_lm.data.templates import PromptStyle
from politician_lm.serve.personas import PersonaSpec
from politician_lm.serve.vllm_template import KWARG

VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank
TEMPLATE = "chat_template.jinja"  # beside serve.sh, which runs from its folder
# a persona's generation settings -> the request fields vLLM reads them from (a greedy persona sends temperature 0)
REQUEST_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "min_new_tokens": "min_tokens",
    "max_new_tokens": "max_tokens",
}


@dataclass
class Exported:
    """A persona as exported: its spec, the rank of its one adapter, its prompt style, generation settings and the
    quantization of the base its adapters were trained on."""

    spec: PersonaSpec
    rank: int
    style: PromptStyle
    generation: dict[str, Any] = field(default_factory=dict)
    quantization: str = "none"

    def request(self) -> dict[str, Any]:
        """The request fields that apply the persona's generation settings in vLLM (which knows none of them)."""
        greedy = self.generation.get("do_sample") is False
        body = {
            REQUEST_FIELDS[k]: v
            for k, v in self.generation.items()
            if k in REQUEST_FIELDS and v is not None and not (greedy and k in ("temperature", "top_p", "top_k"))
        }
        return {"temperature": 0, **body} if greedy else body


def max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds an adapter of ``rank``."""
    return next(r for r in VLLM_RANKS if r >= rank)


def serve_flags(names: list[str], rank: int) -> list[list[str]]:
    """``vllm serve``'s flags after the base model, in groups (a flag and its values): every persona's adapter by
    name, all of them in one batch, and the chat template."""
    return [
        ["--enable-lora"],
        ["--max-lora-rank", str(max_lora_rank(rank))],
        ["--max-loras", str(len(names))],
        ["--chat-template", TEMPLATE],
        ["--chat-template-content-format", "openai"],
        ["--lora-modules", *(f"{n}=./{n}" for n in names)],
    ]


def serve_script(base: str, names: list[str], rank: int) -> str:
    """``serve.sh``: runs from its own folder (the adapters' paths are relative to it); ``$BASE`` overrides the
    base, and the script's own arguments are added to vllm's."""
    *flags, (modules, *paths) = serve_flags(names, rank)
    lines = [f"  {' '.join(group)} \\" for group in flags] + [f"  {modules} \\", *(f"    {p} \\" for p in paths)]
    return (
        "#!/bin/sh\n"
        "# Serve the personas of this folder with vLLM (written by politician-lm export-vllm; see README.md).\n"
        "# BASE: the base model vLLM loads (default: the adapters' own). More vllm flags go after the script's name:\n"
        "#   sh serve.sh --port 8000 --tensor-parallel-size 2\n"
        'cd "$(dirname "$0")" || exit 1\n'
        f'if [ -z "${{BASE:-}}" ]; then BASE={shlex.quote(base)}; fi\n'
        'exec vllm serve "$BASE" \\\n' + "\n".join(lines) + '\n  "$@"\n'
    )


def adapter_card(e: Exported, base: str) -> str:
    """README.md of one persona's adapter folder."""
    made = ", ".join(f"`{p}` x {w:g}" for p, w in zip(e.spec.adapters, e.spec.weights))
    return (
        f"---\nlibrary_name: peft\nbase_model: {base}\ntags: [politician-lm, lora, vllm]\n---\n\n"
        f"# {e.spec.name}\n\nThe persona `{e.spec.name}` as one LoRA adapter of rank {e.rank} on `{base}`, made "
        f"of {made} (folded by the exact `cat` combination, each weight in the adapter). Written by `politician-lm "
        "export-vllm`; the folder above holds the chat template and the `vllm serve` line.\n"
    )


def _row(e: Exported) -> str:
    made = ", ".join(f"`{p}` x {w:g}" for p, w in zip(e.spec.adapters, e.spec.weights))
    system = (e.style.system_prompt or "").replace("\n", " ").replace("|", "\\|")
    system = f"{system[:60]}..." if len(system) > 60 else system or "(none)"
    return f"| `{e.spec.name}` | {e.rank} | {made} | {e.style.prompt_format} | {system} | `{json.dumps(e.request())}` |"


def _differences(exported: list[Exported]) -> list[str]:
    """What vLLM does otherwise than ``politician-lm serve`` for these personas, each as a README bullet."""
    out = [
        "- **Sampling settings.** vLLM knows none of a persona's: send the fields in the table's last column with "
        "each request, or vLLM applies the base's `generation_config.json`.",
        "- **Precision.** vLLM's default `--dtype auto` runs a float32 base in float16; `serve` on a CPU computes "
        "in float32. Add `--dtype float32` (or `bfloat16`) to choose.",
    ]
    if any(e.style.prompt_format == "plain" for e in exported):
        out.append(
            "- **The answer's label.** A plain-format persona answers `POLITICIAN: ...`, as it was trained; `serve` "
            "strips the label, vLLM returns it: strip it in the client."
        )
    quantized = sorted({e.quantization for e in exported} - {"none"})
    if quantized:
        out.append(
            f"- **The base's weights.** These adapters were trained on a {'/'.join(quantized)}-quantized base, and "
            "`serve` (like `politician-lm export`) runs them on exactly those rounded weights, de-quantized. vLLM "
            "loads the base's original weights, which differ from those by the quantization's rounding, so its "
            "answers differ a little from `serve`'s and the adapters meet a base they were not fitted to. vLLM's "
            "`--quantization bitsandbytes` quantizes the base to 4 bits as it loads, with vLLM's settings, which "
            "politician-lm has not compared with training's."
        )
    return out


def readme(exported: list[Exported], base: str, registry: str | None) -> str:
    """README.md of the export: the personas, how to serve and ask them, what differs from ``serve``."""
    first = exported[0].spec.name
    source = f"registry `{registry}`" if registry else "`--adapters`"
    flags = serve_flags([e.spec.name for e in exported], max(e.rank for e in exported))
    args = " ".join(shlex.quote(a) for group in flags for a in group)
    body = {"model": first, "messages": [{"role": "user", "content": "What about jobs?"}]}
    body = {**body, "chat_template_kwargs": {KWARG: first}, **exported[0].request()}
    return "\n".join(
        [
            f"# {len(exported)} personas for vLLM",
            "",
            f"Written by `politician-lm export-vllm` from {source}. Base model: `{base}`. Each folder is one LoRA "
            "adapter (a weighted mix folded into one by the exact `cat` combination, as `politician-lm serve` "
            f"folds it); `{TEMPLATE}` renders every persona's prompt as `serve` renders it.",
            "",
            "| persona | rank | made of (adapter x weight) | prompt | system prompt | request settings |",
            "|---|---|---|---|---|---|",
            *(_row(e) for e in exported),
            "",
            "## Serve",
            "",
            "```bash",
            "sh serve.sh                         # BASE=/where/the/base/is sh serve.sh on another machine",
            "```",
            "",
            f"runs, from this folder: `vllm serve {shlex.quote(base)} {args}`",
            "",
            "## Ask",
            "",
            "```bash",
            "curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\",
            f"     -d {shlex.quote(json.dumps(body))}",
            "```",
            "",
            f'`model` picks the adapter and `chat_template_kwargs` `{{"{KWARG}": NAME}}` the prompt: name the same '
            "persona in both. vLLM applies one chat template to every adapter and tells it neither, and it reads a "
            "request's own `chat_template` only under `--trust-request-chat-template`, which lets every client run "
            "its Jinja on the server; `chat_template_kwargs` need no such flag. With several personas a request "
            "without the persona is refused. The persona's system prompt comes first and a client's system "
            "messages are appended to it, as in `serve`.",
            "",
            "## What differs from `politician-lm serve`",
            "",
            *_differences(exported),
            "",
        ]
    )
