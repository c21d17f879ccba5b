"""serve.text.ReplyText: token ids to the text a client sees, streamed in pieces that add up to the whole answer,
the reply label stripped and the answer cut before a stop string whose text is never sent."""

from __future__ import annotations

import pytest

from politician_lm.artifacts.roles import strip_reply_label
from politician_lm.serve.text import ReplyText

ANSWER = "POLITICIAN: Folks, here is the deal. Jobs, jobs, jobs é."


def pieces(tokenizer, text: str, stop: tuple[str, ...]) -> tuple[list[str], ReplyText]:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    reply = ReplyText(tokenizer, stop)
    out = []
    for i in ids:
        out.append(reply.push(i))
        if reply.stopped:  # the engine ends the row at this token
            break
    out.append(reply.push(None, final=True))
    return out, reply


@pytest.mark.parametrize("stop", [("the deal",), ("zzz", "deal."), (" jobs",), ("é",), ("Folks",)])
def test_the_answer_ends_before_the_first_stop_string_and_never_sends_it(tokenizer, stop):
    out, reply = pieces(tokenizer, ANSWER, stop)
    visible = strip_reply_label(tokenizer.decode(tokenizer(ANSWER, add_special_tokens=False).input_ids))
    cut = min(visible.index(s) for s in stop if s in visible)
    assert "".join(out) == visible[:cut] and reply.stopped
    sent = ""
    for piece in out:  # at no point has any stop string's text gone out, not even its first characters past the cut
        sent += piece
        assert len(sent) <= cut


def test_a_partial_stop_is_held_back_and_released_when_it_does_not_complete(tokenizer):
    out, reply = pieces(tokenizer, ANSWER, ("deal!",))
    visible = strip_reply_label(tokenizer.decode(tokenizer(ANSWER, add_special_tokens=False).input_ids))
    assert "".join(out) == visible and not reply.stopped


def test_a_stop_string_inside_the_reply_label_does_not_count(tokenizer):
    out, reply = pieces(tokenizer, ANSWER, ("POLITICIAN",))
    assert "".join(out).startswith("Folks") and not reply.stopped
