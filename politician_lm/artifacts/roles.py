"""The speaker labels of the project's data, in one place.

``prepare`` writes plain-format prompts as ``USER: ...`` and completions as ``POLITICIAN: ...``. The chat template
marks roles itself, so those labels are stripped there; chat adds them back to a typed message in the plain format;
the style classifier and the metrics compare words, not labels.
"""

from __future__ import annotations

import re

USER_LABEL = "USER: "
POLITICIAN_LABEL = "POLITICIAN: "
DATA_LABELS = ("USER", "POLITICIAN")  # what prepare writes
ANY_LABELS = (*DATA_LABELS, "ASSISTANT", "HUMAN")  # what users' own data may use as well
REPLY_LABELS = ("POLITICIAN", "ASSISTANT")


def _leading(names: tuple[str, ...], trailing: str = r"\s*") -> re.Pattern[str]:
    return re.compile(rf"^\s*(?:{'|'.join(names)})\s*:{trailing}", re.IGNORECASE)


DATA_LABEL = _leading(DATA_LABELS)
ANY_LABEL = _leading(ANY_LABELS)
REPLY_LABEL = _leading(REPLY_LABELS, r"[ \t]*")
POLITICIAN_ONLY = _leading(("POLITICIAN",))


def has_role_label(text: str) -> bool:
    """The text starts with any speaker label (``USER:``, ``POLITICIAN:``, ``ASSISTANT:``, ``HUMAN:``)."""
    return bool(ANY_LABEL.match(text))


def strip_role_label(text: str) -> str:
    """Drop a leading speaker label of any role."""
    return ANY_LABEL.sub("", text, count=1)


def strip_reply_label(text: str) -> str:
    """``POLITICIAN: Folks, ...`` -> ``Folks, ...`` (also ``ASSISTANT:``); keeps a line break after the label."""
    return REPLY_LABEL.sub("", text, count=1)


def may_become_reply_label(head: str) -> bool:
    """A streamed answer's first characters could still grow into ``POLITICIAN:``/``ASSISTANT:`` (or are only
    whitespace so far), so a streamer holds them back until the label can be stripped."""
    start = head.lstrip().upper()
    return any(f"{name}:".startswith(start) for name in REPLY_LABELS)


def strip_politician_label(text: str) -> str:
    """Drop a leading ``POLITICIAN:`` only, so a classifier learns the words and not the format."""
    return POLITICIAN_ONLY.sub("", text, count=1)


def user_turn(message: str, prompt_format: str) -> dict[str, str]:
    """A chat message as the training data wrote user turns (``USER: ...`` in the plain format)."""
    if prompt_format == "plain" and not has_role_label(message):
        message = USER_LABEL + message
    return {"role": "user", "content": message}


def assistant_turn(reply: str, prompt_format: str) -> dict[str, str]:
    """The answer as the training data wrote completions, for the next turn's context."""
    if prompt_format == "plain" and not has_role_label(reply):
        reply = POLITICIAN_LABEL + reply.lstrip()
    return {"role": "assistant", "content": reply}


def labelled(messages: list[dict[str, str]], prompt_format: str) -> list[dict[str, str]]:
    """``messages`` with each user and assistant turn as the training data writes it (``user_turn``,
    ``assistant_turn``); system turns as they are."""
    turn = {"user": user_turn, "assistant": assistant_turn}
    return [turn[m["role"]](m["content"], prompt_format) if m["role"] in turn else m for m in messages]
