"""serve.row_lora: the stacked per-row LoRA gives every row what PEFT's mixed-batch forward gives it (adapters of two
ranks, a weighted mix folded by ``cat``, the bare base), in prefill and decode shapes, and each row its own adapter's
update only. Real tiny-model adapters and PEFT."""

from __future__ import annotations

import pytest
import torch

from politician_lm.serve.engine import load_served
from politician_lm.serve.personas import PersonaSpec
from politician_lm.serve.row_lora import RowAdapters
from politician_lm.serve.scheduler import BASE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(voices, tiny_path):
    a, b = voices
    specs = [
        PersonaSpec("alpha", [str(a)], [1.0], tiny_path),
        PersonaSpec("beta", [str(b)], [1.0], tiny_path),
        PersonaSpec("mix", [str(a), str(b)], [0.7, 0.6], tiny_path),  # folded: rank 16 beside the others' 8
    ]
    return load_served(specs)


def logits(model, ids: torch.Tensor, rows: RowAdapters | None, names: list[str]) -> torch.Tensor:
    with torch.no_grad():
        if rows is None:  # PEFT's own mixed batch
            return model(input_ids=ids, adapter_names=names).logits
        rows.names = names
        try:
            return model(input_ids=ids).logits
        finally:
            rows.names = None


@pytest.mark.parametrize("width", [1, 7])  # a decoding step's one token, a prompt's several
def test_stacked_rows_give_what_peft_mixed_batch_gives(served, width):
    from peft.tuners.lora import LoraLayer

    model = served.model
    adapters = [served.personas[p].adapter for p in ("alpha", "beta", "mix")]
    names = [adapters[0], BASE, adapters[1], adapters[2], adapters[0]]
    ids = torch.randint(3, 200, (1, width), generator=torch.Generator().manual_seed(0)).repeat(len(names), 1)
    rows = RowAdapters(model)
    try:
        lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        assert lora_layers and all(m in rows.stacks for m in lora_layers)  # every layer takes the stacked path
        ours = logits(model, ids, rows, names)
    finally:
        rows.release()
    peft = logits(model, ids, None, names)
    assert torch.allclose(ours, peft, rtol=0, atol=1e-5), (ours - peft).abs().max()
    # the rows differ only by their adapter: each got its own update, not another's, not a sum
    assert torch.allclose(ours[0], ours[4], rtol=0, atol=1e-5)
    for i, j in [(0, 1), (0, 2), (2, 3), (1, 3)]:
        assert (ours[i] - ours[j]).abs().max() > 1e-3


def test_without_names_and_after_release_every_layer_is_peft_own(served):
    model = served.model
    alpha = served.personas["alpha"].adapter
    ids = torch.randint(3, 200, (2, 5), generator=torch.Generator().manual_seed(1))
    model.set_adapter(alpha)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        rows = RowAdapters(model)
        during = model(input_ids=ids).logits  # names None: PEFT's forward with its active adapter
        rows.release()
        after = model(input_ids=ids).logits
    assert torch.equal(before, during) and torch.equal(before, after)
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_unstacked_rows_are_peft_mixed_batch_in_every_layer(served):
    model = served.model
    names = [served.personas["alpha"].adapter, BASE, served.personas["mix"].adapter]
    ids = torch.randint(3, 200, (1, 4), generator=torch.Generator().manual_seed(2)).repeat(len(names), 1)
    rows = RowAdapters(model, stacked=False)
    try:
        assert not rows.stacks and rows.handles  # no layer stacked: every one gets the names by the hook
        ours = logits(model, ids, rows, names)
    finally:
        rows.release()
    assert torch.equal(ours, logits(model, ids, None, names))
