"""Persona evaluation: prompt choice, scores, the fit-time callback with real offline W&B (``evaluate`` is tested in
tests/commands/test_evaluate.py)."""

import csv
import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from politician_lm.evaluation.persona import EvalItem, eval_items, score
from tests.helpers import ROOT

SECRETS = {"WANDB_API_KEY": "fake-wandb-secret-0123456789", "HF_TOKEN": "hf_fake_secret_token_987654321"}


def conv(i, kind):
    return [
        {"role": "user", "content": f"USER: question {i}"},
        {"role": "assistant", "content": f"POLITICIAN: answer {i}"},
    ]


def test_eval_items_are_seeded_and_put_identity_prompts_first():
    kinds = ["identity"] * 5 + ["policy"] * 20
    convs = [conv(i, k) for i, k in enumerate(kinds)]
    a, b = eval_items(convs, kinds, 9, seed=1), eval_items(convs, kinds, 9, seed=1)
    assert a == b and len(a) == 9
    assert [i.kind for i in a[:3]] == ["identity"] * 3 and all(i.kind == "policy" for i in a[3:])
    assert a != eval_items(convs, kinds, 9, seed=2)
    few = eval_items(convs[:7], kinds[:7], 10, seed=0)  # 5 identity + 2 policy: all of them
    assert len(few) == 7 and sum(i.kind == "identity" for i in few) == 5


def test_the_bare_identity_probes_are_asked_as_the_training_data_wrote_user_turns(chdir_root):
    from politician_lm.callbacks import PersonaEvaluation
    from politician_lm.data.templates import PromptStyle

    cb = PersonaEvaluation(num_prompts=2, max_new_tokens=2)
    cb.items = [
        EvalItem(({"role": "user", "content": "USER: Continue the speech: Folks,"},), "POLITICIAN: more", "style"),
        EvalItem(({"role": "user", "content": "Who are you?"},), "", "identity"),
    ]
    plain = cb.asked(PromptStyle(prompt_format="plain"))
    assert [c[-1]["content"] for c in plain] == ["USER: Continue the speech: Folks,", "USER: Who are you?"]
    assert cb.asked(PromptStyle(prompt_format="chat"))[1] == [{"role": "user", "content": "Who are you?"}]


def test_score_on_known_texts():
    items = [
        EvalItem(({"role": "user", "content": "Who are you?"},), "POLITICIAN: I'm Joe Biden.", "identity"),
        EvalItem(({"role": "user", "content": "Jobs?"},), "POLITICIAN: Jobs, jobs for the middle class.", "policy"),
    ]
    profile = {"name": "Joe Biden", "party": "Democratic"}
    perfect = score(items, [i.reference for i in items], profile=profile)
    assert perfect["rouge_l"] == pytest.approx(1.0) and perfect["chrf"] == pytest.approx(100.0)
    assert perfect["names_self"] == 1.0 and perfect["identity_score"] == 1.0 and perfect["claims_ai"] == 0.0
    bad = score(items, ["As an AI language model, no comment.", "zzz qqq"], profile=profile)
    assert bad["claims_ai"] == 1.0 and bad["identity_score"] == 0.0 and bad["rouge_l"] == 0.0
    assert "style_attribution" not in bad  # no classifier given


def wandb_records(path):
    """Records of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


@pytest.fixture(scope="module")
def wandb_fit(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb-fit")
    env = {**os.environ, **SECRETS, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "politician_lm.cli",
            "fit",
            "--config",
            "configs/demo.yaml",
            "--wandb",
            "true",
            "--trainer.max_epochs",
            "2",
            "--trainer.default_root_dir",
            str(root),
            "--trainer.enable_progress_bar",
            "false",
            "--data.cache_dir",
            str(root / "hf-cache"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


@pytest.mark.slow
def test_fit_logs_persona_metrics_to_offline_wandb_and_csv(wandb_fit):
    root, proc = wandb_fit
    assert "W&B is offline" in proc.stderr and "wandb sync" in proc.stderr
    run_file = glob.glob(str(root / "wandb" / "offline-run-*" / "run-*.wandb"))[0]
    keys = set()
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    for metric in (
        "style_attribution",
        "classifier_accuracy",
        "identity_score",
        "rouge_l",
        "chrf",
        "distinct_1",
        "distinct_2",
        "repetition_rate",
        "memorization",
        "stance_agreement",  # the biden profile's held-out stance statements
    ):
        assert f"persona/{metric}" in keys and f"persona/{metric}_at_start" in keys
    assert {"val_loss", "val_perplexity"} <= keys
    tables = glob.glob(
        str(root / "wandb" / "offline-run-*" / "files" / "media" / "table" / "persona" / "samples*.table.json")
    )
    assert tables
    table = json.loads(Path(tables[0]).read_text())
    assert table["columns"] == ["prompt", "kind", "reference", "generation"]
    assert len(table["data"]) == 16 + 16  # held-out prompts + the reworded identity probes
    assert sum(1 for row in table["data"] if row[2] == "") == 16  # probes have no reference
    rows = list(csv.DictReader(open(glob.glob(str(root / "lightning_logs" / "version_*" / "metrics.csv"))[0])))
    assert any(r.get("persona/style_attribution") for r in rows)  # CSV stays on beside W&B


@pytest.mark.slow
def test_no_secret_lands_in_any_output(wandb_fit):
    root, proc = wandb_fit
    leaks = [
        str(p) for p in root.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in SECRETS.values())
    ]
    assert not leaks
    assert not any(s in proc.stdout + proc.stderr for s in SECRETS.values())


def test_persona_evaluation_checks_its_prompts_file_up_front(tmp_path):
    from politician_lm.callbacks import PersonaEvaluation
    from politician_lm.errors import UserError

    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "USER: hi"}\n')
    with pytest.raises(UserError, match=r"p.jsonl:1: missing key"):
        PersonaEvaluation(prompts_file=str(bad))


@pytest.mark.slow  # a tiny-model probe of 32 statements: a few seconds
def test_fit_time_stance_metrics_split_the_held_out_statements_from_the_datas_validation_band(
    tmp_path, tiny_path, chdir_root
):
    """With a band of statements in val.jsonl (``prepare --stance_val_fraction``), the callback reports their agreement
    as ``stance_agreement_val`` beside the held-out ``stance_agreement``: each over its own statements, as the probe
    reads each set alone; without a band, the statements the hash rule put in val.jsonl, as ``evaluate`` counts them."""
    from types import SimpleNamespace

    from politician_lm import PoliticianDataModule, PoliticianLM
    from politician_lm.artifacts.profiles import load_profile
    from politician_lm.artifacts.stances import heldout_stances, is_heldout_stance, load_stances
    from politician_lm.callbacks import PersonaEvaluation
    from politician_lm.commands.prepare import prepare
    from politician_lm.evaluation.inputs import val_stance_ids
    from politician_lm.evaluation.stances import probe
    from politician_lm.inference import Persona

    profiles = ROOT / "data" / "profiles"
    module = PoliticianLM(tiny_path, lora_r=4)
    module.configure_model()
    reported, sizes = {}, {}
    for fraction in (0.25, 0.0):
        out = prepare(str(tmp_path / f"d{fraction}"), stances=str(profiles / "trump.yaml"), tokenizer=tiny_path,
                      stance_val_fraction=fraction)  # fmt: skip
        dm = PoliticianDataModule(data_path=str(out), tokenizer=tiny_path, politician="trump",
                                  profiles_dir=str(profiles), cache_dir=str(tmp_path / "c"))  # fmt: skip
        cb = PersonaEvaluation(num_prompts=2, max_new_tokens=2, identity_probes=None, generic_prompts=0)
        trainer = SimpleNamespace(datamodule=dm)
        cb.setup(trainer, module, "fit")
        reported[fraction] = cb._stance_agreement(Persona(model=module.model, tokenizer=dm.tokenizer, style=dm.style))
        profile = load_profile("trump", profiles)
        band = [s for s in load_stances(profile) if s.id in val_stance_ids(str(out))]
        assert [s.id for s in cb.stances["stance_agreement"]] == [s.id for s in heldout_stances(profile)]
        assert not any(is_heldout_stance(s.id) for s in band)
        assert [s.id for s in cb.stances.get("stance_agreement_val", [])] == [s.id for s in band]
        persona = Persona(model=module.model, tokenizer=dm.tokenizer, style=dm.style)
        for name, stances in (("stance_agreement", heldout_stances(profile)), ("stance_agreement_val", band)):
            if stances:
                assert reported[fraction][name] == pytest.approx(probe(stances, persona.stance_losses).agreement)
        sizes[fraction] = len(band)
    # the band holds a quarter of the training statements; without it, the hash rule's few val records' statements
    assert sizes[0.25] >= 10 and sizes[0.0] < sizes[0.25]
    assert reported[0.0]["stance_agreement"] == pytest.approx(reported[0.25]["stance_agreement"])


@pytest.mark.slow  # two setups of the tiny model's data: seconds
def test_a_style_data_dir_without_politician_records_is_refused_at_setup(tmp_path, tiny_path, chdir_root):
    """The judge's generic class is the base's answers to those records' prompts: without them the callback must
    stop before fit trains, as ``evaluate`` does, not judge without a generic class."""
    from types import SimpleNamespace

    from politician_lm import PoliticianDataModule, PoliticianLM
    from politician_lm.callbacks import PersonaEvaluation
    from politician_lm.errors import UserError

    empty = tmp_path / "style"
    empty.mkdir()
    dm = PoliticianDataModule(data_path="data/biden", tokenizer=tiny_path, politician="biden",
                              cache_dir=str(tmp_path / "c"))  # fmt: skip
    cb = PersonaEvaluation(num_prompts=2, max_new_tokens=2, identity_probes=None, style_data_dir=str(empty))
    with pytest.raises(UserError, match=rf"PersonaEvaluation style_data_dir {empty}: no <politician>/\*.jsonl"):
        cb.setup(SimpleNamespace(datamodule=dm), PoliticianLM(tiny_path, lora_r=4), "fit")
    # with the repository's data/ the same setup goes through
    PersonaEvaluation(num_prompts=2, max_new_tokens=2, identity_probes=None).setup(
        SimpleNamespace(datamodule=dm), PoliticianLM(tiny_path, lora_r=4), "fit"
    )
