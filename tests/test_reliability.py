"""Crash safety: kill -9 mid-fit and mid-export, NaN/Inf steps, and identical weights after a resume."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial

import lightning.pytorch as L
import pytest
import torch
from safetensors.torch import load_file

from politician_lm import AdapterExport, PoliticianDataModule, PoliticianLM
from politician_lm.artifacts.adapter import read_adapter
from politician_lm.errors import UserError
from politician_lm.model.guard import TrainingDiverged
from tests.helpers import ROOT, pc_rows, write_jsonl

FIT = [
    "fit",
    "--config",
    "configs/demo.yaml",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.max_epochs",
    "2",
    "--checkpoint.every_n_train_steps",
    "3",
]


def cli(root, *extra):
    return [
        sys.executable,
        "-m",
        "politician_lm.cli",
        *FIT,
        "--trainer.default_root_dir",
        str(root),
        "--data.cache_dir",
        str(root.parent / "hf-cache"),
        *extra,
    ]


def adapter_tensors(root):
    return load_file(root / "adapters" / "last" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run that killed-and-resumed runs must reproduce bit for bit."""
    root = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(cli(root), cwd=ROOT, check=True, capture_output=True, timeout=900)
    return root


def kill_and_resume(root, delay):
    """Start the run, SIGKILL it ``delay`` s after its first last.ckpt, resume; the step it resumed from."""
    proc = subprocess.Popen(cli(root), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (root / "checkpoints" / "last.ckpt").exists() and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    print(f"killed {delay:.2f} s after the first checkpoint; resuming from step {step}")
    subprocess.run(cli(root, "--ckpt_path", "last"), cwd=ROOT, check=True, capture_output=True, timeout=900)
    return step


def assert_same_adapter(a_root, b_root, context=""):
    a, b = adapter_tensors(a_root), adapter_tensors(b_root)
    assert a.keys() == b.keys(), context
    for key in a:
        # bit for bit: same batches, same dropout, same optimizer state
        assert torch.equal(a[key], b[key]), f"{key} {context}".strip()


@pytest.mark.slow
def test_sigkill_mid_fit_then_resume_gives_the_same_adapter(straight, tmp_path):
    """A different kill moment on every run, drawn from a seed that the failure names; POLITICIAN_LM_KILL_SEED
    reruns that moment (the same delay after the first checkpoint; the step it lands on also depends on load)."""
    seed = int(os.environ.get("POLITICIAN_LM_KILL_SEED") or random.SystemRandom().randrange(10**6))
    delay = random.Random(seed).uniform(0.0, 1.5)
    print(f"kill seed {seed}: rerun this moment with POLITICIAN_LM_KILL_SEED={seed}")
    step = kill_and_resume(tmp_path / "killed", delay)
    rerun = f"(killed {delay:.2f} s after the first checkpoint, at step {step}; rerun: POLITICIAN_LM_KILL_SEED={seed})"
    assert_same_adapter(straight, tmp_path / "killed", rerun)


@pytest.mark.slow
def test_sigkill_before_the_first_validation_resumes_from_a_step_checkpoint(straight, tmp_path):
    """last.ckpt monitors nothing, so it is written from step 3 on, not only once val_loss exists (step 19)."""
    step = kill_and_resume(tmp_path / "early", 0.0)
    assert 3 <= step < 19  # 148 training examples / batch 8: the first validation ends epoch 0 at step 19
    assert_same_adapter(straight, tmp_path / "early")


WRITER = """
import sys, time, shutil
from pathlib import Path
from politician_lm.artifacts.atomic import atomic_dir
src, target = Path(sys.argv[1]), Path(sys.argv[2])
for i in range(10**6):
    with atomic_dir(target) as tmp:
        for f in sorted(src.iterdir()):
            shutil.copyfile(f, tmp / f.name)
            time.sleep(0.002)
        (tmp / "generation.txt").write_text(str(i))
"""


@pytest.mark.slow
def test_sigkill_during_export_never_leaves_a_broken_adapter(tmp_path, tiny_path):
    from tests.helpers import fit_adapter

    source = fit_adapter(tmp_path / "src", tiny_path, pc_rows(8), max_steps=1)
    target = tmp_path / "adapters" / "last"
    rng = random.Random(0)
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(source), str(target)], cwd=ROOT)
        time.sleep(0.6 + rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        from politician_lm.artifacts.atomic import recover_dir

        recover_dir(target)  # what the next export does first
        assert target.is_dir(), f"attempt {attempt}: the adapter folder vanished"
        read_adapter(target)  # complete: config + readable safetensors
        assert {p.name for p in target.iterdir()} >= {p.name for p in source.iterdir()} | {"generation.txt"}
        assert not [p for p in target.parent.iterdir() if p.name.startswith(".")], "temporaries left behind"


class Poison(L.Callback):
    """Mask every label of the batches at the given steps: the loss of such a batch is NaN (0/0)."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.steps:
            batch["labels"][:] = -100


class NaNGrad(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step == self.step:
            next(p for p in pl_module.parameters() if p.requires_grad).grad[0, 0] = float("nan")


class Snapshots(L.Callback):
    def __init__(self):
        self.before = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[trainer.global_step] = {
            n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad
        }


def _fit(tmp_path, tiny_path, callbacks, max_steps=6, max_bad_steps=3):
    L.seed_everything(0)
    write_jsonl(tmp_path / "d" / "train.jsonl", pc_rows(24))
    write_jsonl(tmp_path / "d" / "val.jsonl", pc_rows(4))
    dm = PoliticianDataModule(
        data_path=str(tmp_path / "d"), tokenizer=tiny_path, batch_size=4, cache_dir=str(tmp_path / "c")
    )
    model = PoliticianLM(
        tiny_path,
        lora_r=4,
        lora_dropout=0.0,
        max_bad_steps=max_bad_steps,
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path / "run",
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        val_check_interval=2,
        callbacks=[AdapterExport(), *callbacks],
    )
    return model, trainer, dm


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_non_finite_step_is_skipped_and_training_goes_on(tmp_path, tiny_path, poison):
    snaps = Snapshots()
    bad = Poison([2]) if poison == "loss" else NaNGrad(2)
    model, trainer, dm = _fit(tmp_path, tiny_path, [snaps, bad])
    trainer.fit(model, datamodule=dm)
    assert model.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if poison == "gradient":  # the step ran but changed nothing; a skipped loss step never reaches the optimizer
        after = snaps.before[3] if 3 in snaps.before else None
        assert after is not None and all(torch.equal(snaps.before[2][n], after[n]) for n in after)
    assert (tmp_path / "run" / "adapters" / "last").is_dir()


def test_consecutive_bad_steps_stop_fit_without_overwriting_exports(tmp_path, tiny_path):
    model, trainer, dm = _fit(tmp_path, tiny_path, [Poison(range(4, 100))], max_steps=20)
    with pytest.raises(TrainingDiverged, match="3 steps in a row had a non-finite loss"):
        trainer.fit(model, datamodule=dm)
    best = tmp_path / "run" / "adapters" / "best"
    assert best.is_dir() and json.loads((best / "politician_lm.json").read_text())["global_step"] <= 4
    assert not (tmp_path / "run" / "adapters" / "last").exists()  # fit did not end: no "last" from a bad state


def test_adapter_export_writes_only_during_fit(tmp_path, tiny_path):
    """validate/test/predict with a fresh AdapterExport (as the CLI builds one) must leave adapters/ alone."""
    model, trainer, dm = _fit(tmp_path, tiny_path, [], max_steps=4)
    trainer.fit(model, datamodule=dm)
    folder = tmp_path / "run" / "adapters"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with torch.no_grad():  # other weights than the exported ones, as a different checkpoint would bring
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5)
    other = L.Trainer(
        default_root_dir=tmp_path / "run",
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[AdapterExport()],
    )
    other.validate(model, datamodule=dm)
    other.test(model, datamodule=dm)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_export_refuses_a_non_finite_state(tmp_path, tiny_path):
    model, trainer, dm = _fit(tmp_path, tiny_path, [], max_steps=2)
    trainer.fit(model, datamodule=dm)
    before = (tmp_path / "run" / "adapters" / "last" / "adapter_model.safetensors").read_bytes()
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad)[0, 0] = float("inf")
    trainer.callbacks[[type(c) for c in trainer.callbacks].index(AdapterExport)].export(trainer, model, "last")
    assert (tmp_path / "run" / "adapters" / "last" / "adapter_model.safetensors").read_bytes() == before


class StopAfterBatch(L.Callback):
    """Sets ``trainer.should_stop`` after batch ``n`` of the first epoch, as ``trainer.max_time`` or a callback does."""

    def __init__(self, n):
        self.n = n

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx + 1 == self.n:
            trainer.should_stop = True


class StepLosses(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = outputs["loss"].item()


def _stoppable_fit(root, tiny_path, *callbacks, ckpt_path=None, **trainer_kw):
    """12 examples in batches of 4 (3 an epoch) for 2 epochs, LoRA dropout on, last.ckpt every 2 steps and at the
    end."""
    from politician_lm.callbacks.checkpoint import STEP_DEFAULTS, StepCheckpoint

    L.seed_everything(0)
    write_jsonl(root / "d" / "train.jsonl", pc_rows(12))
    write_jsonl(root / "d" / "val.jsonl", pc_rows(3))
    dm = PoliticianDataModule(data_path=str(root / "d"), tokenizer=tiny_path, batch_size=4, cache_dir=str(root / "c"))
    model = PoliticianLM(tiny_path, lora_r=4, lora_dropout=0.1, optimizer=partial(torch.optim.AdamW, lr=1e-2))
    step = StepCheckpoint(dirpath=str(root / "checkpoints"), **{**STEP_DEFAULTS, "every_n_train_steps": 2})
    losses = StepLosses()
    trainer = L.Trainer(
        default_root_dir=root,
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=2,
        callbacks=[AdapterExport(), step, losses, *callbacks],
        **trainer_kw,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, losses.losses


@pytest.mark.slow
def test_a_fit_stopped_mid_epoch_resumes_bit_identically(tmp_path, tiny_path):
    """A stop (not a kill) mid-epoch: Lightning counts the cut epoch as finished, and the resume used to start the
    next one and skip its first batches (here: 2 of the 5 remaining steps trained); it must finish the cut epoch."""
    straight, losses = _stoppable_fit(tmp_path / "a", tiny_path)
    stopped, before = _stoppable_fit(tmp_path / "b", tiny_path, StopAfterBatch(1))  # no checkpoint or validation due
    assert stopped.global_step == 1
    last = str(tmp_path / "b" / "checkpoints" / "last.ckpt")
    resumed, after = _stoppable_fit(tmp_path / "b", tiny_path, ckpt_path=last)
    assert (resumed.global_step, resumed.current_epoch) == (straight.global_step, straight.current_epoch) == (6, 2)
    assert {**before, **after} == losses
    assert_same_adapter(tmp_path / "a", tmp_path / "b")


def test_a_stop_inside_a_gradient_accumulation_window_refuses_to_resume_in_one_line(tmp_path, tiny_path):
    stopped, _ = _stoppable_fit(tmp_path, tiny_path, StopAfterBatch(1), accumulate_grad_batches=2)
    assert stopped.global_step == 0 and (tmp_path / "adapters" / "last").is_dir()
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(
        UserError,
        match=r"after batch 1 of an epoch, 1 batch\(es\) into a "
        r"trainer.accumulate_grad_batches window of 2: .* cannot continue exactly",
    ):
        _stoppable_fit(tmp_path, tiny_path, accumulate_grad_batches=2, ckpt_path=last)


def test_batches_done_in_epoch_counts_the_finished_batches_of_the_epoch(tmp_path):
    """Mid-epoch resume reads this one Lightning internal; it must count finished batches, restart at 0 every epoch,
    and ignore gradient accumulation and skipped steps (a Lightning release that changes this fails here)."""
    from lightning.pytorch.demos.boring_classes import BoringModel

    from politician_lm.progress import batches_done_in_epoch

    class SkipsOne(BoringModel):
        def training_step(self, batch, batch_idx):
            return None if batch_idx == 2 else super().training_step(batch, batch_idx)

    class Record(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append(("start", trainer.current_epoch, batch_idx, batches_done_in_epoch(trainer)))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append(("end", trainer.current_epoch, batch_idx, batches_done_in_epoch(trainer)))

    record = Record()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=5,
        limit_val_batches=0,
        accumulate_grad_batches=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(SkipsOne())
    expected = [
        (when, epoch, i, i + (when == "end")) for epoch in (0, 1) for i in range(5) for when in ("start", "end")
    ]
    assert record.seen == expected
    assert trainer.global_step < 10  # accumulation: fewer optimizer steps than batches


@pytest.mark.slow
def test_the_mid_epoch_resume_warning_is_silenced_by_the_cli_filters_not_by_importing_the_datamodule():
    code = (
        "import warnings\n"
        "import politician_lm.data.datamodule\n"
        "from lightning.fabric.utilities.warnings import PossibleUserWarning\n"
        "from politician_lm.quiet import quiet_libraries\n"
        'message = "You\'re resuming from a checkpoint that ended before the epoch ended and your dataloader"\n'
        "with warnings.catch_warnings(record=True) as before:\n"
        "    warnings.warn(message, PossibleUserWarning)\n"
        "quiet_libraries()\n"
        "with warnings.catch_warnings(record=True) as after:\n"
        "    warnings.warn(message, PossibleUserWarning)\n"
        "print(len(before), len(after))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "0"]
