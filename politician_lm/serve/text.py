"""Token ids -> the answer text a client sees, one rule for the model thread (which stops a row at a stop string)
and the server thread (which streams the text): the ``POLITICIAN:`` label stripped, an incomplete character or a
possible label held back, and the answer cut before the first stop string, whose text is never sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from politician_lm.artifacts.roles import may_become_reply_label, strip_reply_label


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop string (held back until known)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class ReplyText:
    """Token ids -> the answer text, incrementally: held back while it could still be a ``POLITICIAN:`` label, ends
    in an incomplete character or could be the start of a stop string, so the streamed pieces add up to exactly the
    non-streamed answer. ``stopped`` turns true once a stop string has appeared; the text ends before it."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer, self.ids, self.sent, self.labelled = tokenizer, [], "", False
        self.stop = tuple(s for s in stop if s)
        self.stopped = False

    def visible(self, final: bool) -> str | None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not final:
            if text.endswith("\ufffd"):
                return None
            if not self.labelled:
                if may_become_reply_label(text):
                    return None
                self.labelled = True
        text = strip_reply_label(text)
        if self.stop:
            found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
            if found:
                self.stopped = True
                return text[: min(found)]
            if not final:
                text = text[: len(text) - _partial_stop(text, self.stop)]
        return text

    def push(self, token: int | None, final: bool = False) -> str:
        if token is not None:
            self.ids.append(token)
        text = self.visible(final)
        if text is None or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta
