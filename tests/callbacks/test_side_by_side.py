"""SideBySide: after fit, the base with only the persona prompt beside the adapter, same held-out prompts, greedy."""

from __future__ import annotations

import json
from functools import partial

import pytest

from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.stances import load_stances, split_stances
from politician_lm.callbacks.side_by_side import side_by_side_table
from politician_lm.evaluation.stances import probe
from politician_lm.inference import Persona
from politician_lm.model.loading import dequantized
from tests.helpers import ROOT, pc_rows, quiet_trainer, write_jsonl


def test_table_wraps_both_columns_under_each_prompt():
    rows = [{"prompt": "What about jobs?", "left": "word " * 30, "right": "Folks, jobs are up."}]
    text = side_by_side_table(rows, "left", "right", width=61)
    lines = text.splitlines()
    assert lines[1].startswith("left") and "| right" in lines[1]
    assert "PROMPT: What about jobs?" in text and all(len(line) <= 61 for line in lines)
    body = [line for line in lines if " | " in line][1:]
    assert body[0].endswith("| Folks, jobs are up.") and len(body) >= 5  # the long answer wraps, the short one ends


def fit_with(tmp_path, tiny_path, dm, callback):
    """4 steps of the tiny model (lr 5e-2, so the adapter changes answers) with ``callback``; the module."""
    import torch

    from politician_lm import PoliticianLM

    model = PoliticianLM(model_name_or_path=tiny_path, lora_r=4, optimizer=partial(torch.optim.AdamW, lr=5e-2))
    quiet_trainer(tmp_path, 4, [callback]).fit(model, datamodule=dm)
    return model


def test_fit_prints_and_saves_base_beside_adapter(tiny_path, tmp_path, capsys):
    import lightning.pytorch as L
    import torch

    from politician_lm import PoliticianDataModule
    from politician_lm.callbacks import SideBySide

    L.seed_everything(0)
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(8))
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(3, kind="policy"))
    address = [  # a prepared folder's held-out documents: shown at the end of fit, never trained or validated on
        {
            "prompt": f"USER: Continue the speech: The harbor {i}.",
            "completion": "POLITICIAN: We dredge it.",
            "kind": "style",
        }
        for i in range(3)
    ]
    write_jsonl(tmp_path / "d" / "test.jsonl", address)
    dm = PoliticianDataModule(
        data_path=str(tmp_path / "d"),
        tokenizer=tiny_path,
        batch_size=4,
        politician="biden",
        profiles_dir=str(ROOT / "data" / "profiles"),
        cache_dir=str(tmp_path / "c"),
    )
    model = fit_with(tmp_path, tiny_path, dm, SideBySide(num_prompts=2, max_new_tokens=8))
    out = capsys.readouterr().out
    assert SideBySide.PROMPT_ONLY in out and SideBySide.ADAPTER in out and "PROMPT: Continue the speech" in out
    assert "What is your view" not in out  # the validation split's prompts are not the ones shown
    rows = [json.loads(line) for line in (tmp_path / "side_by_side.jsonl").read_text().splitlines()]
    *rows, stances = rows
    assert len(rows) == 2 and not rows[0]["prompt"].startswith("USER:")
    # Both columns really ran: the adapter (lr 5e-2, 4 steps) changed at least one greedy answer.
    assert any(r[SideBySide.PROMPT_ONLY] != r[SideBySide.ADAPTER] for r in rows)
    # The stance row: each side's agreement on the biden profile's held-out statements, as the probe reads it
    # for that side (adapter off, then on), shown under the header.
    held = split_stances(load_stances(load_profile("biden", str(ROOT / "data" / "profiles"))))[1]
    assert stances["kind"] == "stance_agreement" and stances["n_statements"] == len(held) > 0
    persona = Persona(model=model.model, tokenizer=dm.tokenizer, style=dm.style)

    model.model.eval()  # as the callback scores (LoRA dropout off)
    with torch.no_grad(), dequantized(model.model):
        with model.model.disable_adapter():
            want = [probe(held, persona.stance_losses)]
        want.append(probe(held, persona.stance_losses))
    assert [stances[SideBySide.PROMPT_ONLY], stances[SideBySide.ADAPTER]] == [w.agreement for w in want]
    margins = stances["mean_margin"]
    assert margins[SideBySide.PROMPT_ONLY] != margins[SideBySide.ADAPTER]  # so the two sides cannot be swapped
    got = [margins[SideBySide.PROMPT_ONLY], margins[SideBySide.ADAPTER]]
    assert got == pytest.approx([w.mean_margin for w in want])
    assert out.count("held-out stances:") == 2


def test_repetition_penalty_decodes_both_sides_as_chat_does(tiny_path, tmp_path, capsys):
    """With ``repetition_penalty`` both columns are the greedy answers under that penalty (as ``chat``'s presets
    decode), not plain greedy ones, and the footer says so."""
    import lightning.pytorch as L
    import torch

    from politician_lm import PoliticianDataModule
    from politician_lm.callbacks import SideBySide
    from politician_lm.evaluation.persona import eval_items

    L.seed_everything(0)
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(8))
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(3, kind="policy"))
    dm = PoliticianDataModule(
        data_path=str(tmp_path / "d"), tokenizer=tiny_path, batch_size=4, cache_dir=str(tmp_path / "c")
    )
    callback = SideBySide(num_prompts=2, max_new_tokens=16, stances=False, repetition_penalty=2.0)
    model = fit_with(tmp_path, tiny_path, dm, callback)
    assert "greedy, repetition penalty 2, step 4" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "side_by_side.jsonl").read_text().splitlines()]
    items = eval_items(*dm.conversations("test"), 2, callback.seed)
    items = [items[-1], *items[:-1]]
    convs = [list(i.messages) for i in items]
    persona = Persona(model=model.model, tokenizer=dm.tokenizer, style=dm.style)
    model.model.eval()
    with torch.no_grad(), dequantized(model.model):
        with model.model.disable_adapter():
            base = persona.generate(convs, max_new_tokens=16, do_sample=False, repetition_penalty=2.0)
        tuned = persona.generate(convs, max_new_tokens=16, do_sample=False, repetition_penalty=2.0)
        plain = persona.generate(convs, max_new_tokens=16, do_sample=False)
    assert [r[SideBySide.PROMPT_ONLY] for r in rows] == base and [r[SideBySide.ADAPTER] for r in rows] == tuned
    assert tuned != plain  # the penalty changed the adapter's answers here, so the columns are not plain greedy


def test_with_a_validation_band_the_table_shows_its_statements_not_the_held_out_ones(tiny_path, tmp_path, capsys):
    """Data prepared with ``--stance_val_fraction``: the stance row is each side's agreement on the band's
    statements (a fit made to choose by them must not show the held-out ones), labelled as such."""
    from politician_lm import PoliticianDataModule
    from politician_lm.callbacks import SideBySide
    from politician_lm.callbacks.side_by_side import _stance_band as stance_band
    from politician_lm.commands.prepare import prepare
    from politician_lm.evaluation.inputs import val_stances

    profiles = ROOT / "data" / "profiles"
    out = prepare(str(tmp_path / "d"), stances=str(profiles / "trump.yaml"), tokenizer=tiny_path,
                  stance_val_fraction=0.25)  # fmt: skip
    assert stance_band(str(out)) == 0.25 and stance_band(str(tmp_path)) == 0.0
    pairs = tmp_path / "pairs"  # a preference stage's pairs folder: the band of the data its pairs.json names
    pairs.mkdir()
    (pairs / "pairs.json").write_text(json.dumps({"data_path": str(out)}))
    assert stance_band(str(pairs)) == 0.25
    band = val_stances(load_profile("trump", str(profiles)), "trump", str(out))
    dm = PoliticianDataModule(data_path=str(out), tokenizer=tiny_path, batch_size=4, politician="trump",
                              profiles_dir=str(profiles), cache_dir=str(tmp_path / "c"))  # fmt: skip
    fit_with(tmp_path, tiny_path, dm, SideBySide(num_prompts=2, max_new_tokens=4))
    printed = capsys.readouterr().out
    stances = [json.loads(line) for line in (tmp_path / "side_by_side.jsonl").read_text().splitlines()][-1]
    assert stances["kind"] == "stance_agreement_val" and stances["n_statements"] == len(band) >= 10
    assert printed.count("validation stances:") == 2 and "held-out stances:" not in printed


def test_the_adapter_column_is_adapters_best_when_it_is_not_the_final_weights(tiny_path, tmp_path, capsys):
    """With ``AdapterExport``, the table shows the weights of ``adapters/best`` (what ``evaluate`` and ``generate``
    are pointed at), says which step they are, and leaves the model with its final weights."""
    import lightning.pytorch as L
    import torch
    from peft import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    from politician_lm import PoliticianDataModule, PoliticianLM
    from politician_lm.callbacks import AdapterExport, SideBySide
    from politician_lm.evaluation.persona import eval_items

    L.seed_everything(0)
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(8))
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(3, kind="policy"))
    dm = PoliticianDataModule(
        data_path=str(tmp_path / "d"), tokenizer=tiny_path, batch_size=4, cache_dir=str(tmp_path / "c")
    )
    model = PoliticianLM(model_name_or_path=tiny_path, lora_r=4, optimizer=partial(torch.optim.AdamW, lr=5e-2))
    # mode max: best is the validation with the highest loss, an early step, never the final weights here
    callbacks = [AdapterExport(mode="max"), SideBySide(num_prompts=2, max_new_tokens=8, stances=False)]
    quiet_trainer(tmp_path, 4, callbacks, limit_val_batches=None, val_check_interval=1).fit(model, datamodule=dm)
    best = tmp_path / "adapters" / "best"
    step = json.loads((best / "politician_lm.json").read_text())["global_step"]
    assert step < 4
    assert f"{best} (step {step}; the final weights are step 4)" in capsys.readouterr().out
    final = load_peft_weights(str(tmp_path / "adapters" / "last"))
    state = get_peft_model_state_dict(model.model)
    assert all(torch.equal(state[k], final[k]) for k in final)  # the final weights are back in the model
    rows = [json.loads(line) for line in (tmp_path / "side_by_side.jsonl").read_text().splitlines()]
    items = eval_items(*dm.conversations("test"), 2, 1)  # the callback's prompts (seed 1), in its order
    convs = [list(i.messages) for i in [items[-1], *items[:-1]]]
    persona = Persona(model=model.model, tokenizer=dm.tokenizer, style=dm.style)
    model.model.eval()
    with torch.no_grad(), dequantized(model.model):
        last_answers = persona.generate(convs, max_new_tokens=8, do_sample=False)
        set_peft_model_state_dict(model.model, load_peft_weights(str(best)))
        best_answers = persona.generate(convs, max_new_tokens=8, do_sample=False)
    assert [r[SideBySide.ADAPTER] for r in rows] == best_answers != last_answers
