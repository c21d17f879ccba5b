"""One batched generation call for every caller: ``Persona.generate`` (generate, chat, evaluate, serve, pairs) and
``PoliticianLM.predict_step``."""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def generate_new_text(
    model: Any,
    tokenizer: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    streamer: Any = None,
    **settings: Any,
) -> list[str]:
    """Generate from a left-padded batch with the KV cache and decode only the new tokens of each row."""
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        **settings,
    )
    return tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
