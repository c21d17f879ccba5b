"""Render a conversation to (prompt text, completion text): the part the model reads and the part it learns.

* ``plain``: the turns' contents as written, joined by ``separator``. A prompt/completion record becomes
  ``prompt + separator + completion``, which is what users of the old ``USER: ... / POLITICIAN: ...`` format expect.
* ``chat``: the tokenizer's own chat template, with an optional persona system prompt placed first. Leading
  ``USER:``/``POLITICIAN:`` labels are stripped in this mode, because the template already marks the roles.

Only the last assistant turn is learned; earlier turns are context. The same rendering is stored with exported
adapters so generation can rebuild the exact prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from politician_lm.artifacts.roles import strip_role_label

PromptFormat = Literal["plain", "chat"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptStyle:
    """Everything needed to rebuild a training prompt; saved as ``politician_lm.json`` next to adapters."""

    prompt_format: PromptFormat = "plain"
    separator: str = "\n"
    system_prompt: str | None = None
    politician: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> PromptStyle:
        """The style saved in ``politician_lm.json`` (its other keys ignored; missing ones take the defaults)."""
        return cls(**{f.name: metadata[f.name] for f in fields(cls) if f.name in metadata})

    def render(self, messages: list[dict[str, str]], tokenizer: Any = None) -> tuple[str, str]:
        """Return ``(prompt, completion)`` for a conversation whose last turn is the assistant's."""
        context, target = messages[:-1], messages[-1]
        if self.prompt_format == "plain":
            prompt = "".join(m["content"] + self.separator for m in context)
            return prompt, target["content"]
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_format 'chat' needs a tokenizer with a chat template")
        msgs = [{"role": m["role"], "content": strip_role_label(m["content"])} for m in messages]
        if self.system_prompt and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the conversation as prompt + answer; use 'plain'")
        completion = full[len(prompt) :]
        eos = getattr(tokenizer, "eos_token", None)
        if eos and completion.rstrip().endswith(eos):
            # ChatML writes "<|im_end|>\n": end the completion at the end-of-turn token, so EOS is learned once
            # and is the last label, as for templates that end with "</s>".
            completion = completion.rstrip()
        return prompt, completion

    def generation_prompt(self, messages: list[dict[str, str]], tokenizer: Any = None) -> str:
        """The prompt for generating the next assistant turn after ``messages`` (which ends with a user turn)."""
        return self.render([*messages, {"role": "assistant", "content": ""}], tokenizer)[0]


def warn_template_system_prompt(style: PromptStyle, tokenizer: Any) -> str | None:
    """Warn, and return its start, when ``chat`` with no persona system prompt meets a chat template that writes a
    system prompt of its own (SmolLM2's "You are a helpful AI assistant named SmolLM, ..."): the adapter would
    train, and answer, under that identity."""
    if style.prompt_format != "chat" or style.system_prompt or not getattr(tokenizer, "chat_template", None):
        return None
    probe = "\u2063probe\u2063"
    head = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False).split(probe)[0]
    if "system" not in head:
        return None
    shown = " ".join(head.split())[:100]
    log.warning(
        "data.prompt_format chat without a system prompt (no data.politician, data.system_prompt or profile "
        "system_prompt): the tokenizer's chat template writes its own (%s...), and the adapter trains under it; "
        "set data.politician to a profile or data.system_prompt",
        shown,
    )
    return shown
