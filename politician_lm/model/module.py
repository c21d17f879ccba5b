"""``PoliticianLM``: a LightningModule around a (quantized) causal LM with trainable LoRA adapters.

The Lightning glue; each concern it wires has a module of its own: ``build`` (base + LoRA), ``scoring`` (the forward
passes), ``objectives`` / ``dpo`` (the loss: a strategy chosen once from ``objective``), ``guard`` (non-finite
steps) and ``resume`` (what a checkpoint needs to resume exactly).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from peft import LoraConfig

from politician_lm.allocator import release_freed_heap
from politician_lm.artifacts.adapter import check_fits_base, read_adapter
from politician_lm.batch import PreferenceSource
from politician_lm.model import loading, resume
from politician_lm.model.anchor import AnchorKind
from politician_lm.model.build import build_trainable_model, check_lora_settings, lora_config, optimizer_and_schedule
from politician_lm.model.decoding import generate_new_text
from politician_lm.model.dpo import DPOHandles, objective_for
from politician_lm.model.guard import NonFiniteGuard
from politician_lm.model.loading import ComputeDtype, Quantization, QuantStorage, resolve_compute_dtype
from politician_lm.model.objectives import TrainingObjective
from politician_lm.model.scoring import Scorer, split_head
from politician_lm.quiet import quiet_libraries

Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]
Objective = Literal["sft", "dpo", "simpo"]


class PoliticianLM(DPOHandles, L.LightningModule):
    """QLoRA fine-tuning of any Hugging Face causal LM loaded with ``from_pretrained``.

    The base model is built in ``configure_model`` (on the target device, quantized there), so constructing
    this class is cheap and ``--print_config`` never touches weights. Checkpoints hold only the trainable
    (LoRA) parameters plus optimizer and scheduler state; the frozen base is reloaded from ``model_name_or_path``.

    ``objective: dpo`` trains on preference pairs (``model.preference``) against the policy at the start of the stage,
    scored once before the first step and kept in checkpoints (``model.dpo``): no second copy of the model is loaded.
    """

    def __init__(
        self,
        model_name_or_path: str,
        quantization: Quantization = "nf4",
        compute_dtype: ComputeDtype = "auto",
        quant_storage: QuantStorage = "uint8",
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        target_modules: str | list[str] = "all-linear",
        use_dora: bool = False,
        use_rslora: bool = False,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        attn_implementation: loading.AttnImplementation | None = "sdpa",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: Scheduler = "cosine",
        warmup_ratio: float = 0.05,
        max_new_tokens: int = 64,
        init_adapter: str | None = None,
        max_bad_steps: int = 5,
        objective: Objective = "sft",
        beta: float = 0.1,
        sft_weight: float = 0.0,
        gamma: float = 0.0,
        anchor_weight: float = 1.0,
        anchor_kind: AnchorKind = "hinge",
    ) -> None:
        """
        Args:
            model_name_or_path: Base model: a local folder or a hub id (Mistral, Llama, ...).
            quantization: Base weights: ``nf4`` (QLoRA: 4-bit NormalFloat + double quant), ``fp4``, ``int8`` or
                ``none``.
            compute_dtype: Matmul dtype; ``auto`` is bf16 on a GPU that supports it and fp32 on CPU.
            quant_storage: Storage dtype of packed 4-bit weights; set it to the compute dtype (``bfloat16``) for FSDP,
                which can then shard the 4-bit base along with everything else.
            lora_r: LoRA rank.
            lora_alpha: LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).
            lora_dropout: Dropout on the LoRA input.
            target_modules: Modules that get adapters; ``all-linear`` is every linear layer but the output head.
            use_dora: Weight-decomposed LoRA (DoRA).
            use_rslora: Rank-stabilised scaling alpha / sqrt(r).
            gradient_checkpointing: Recompute activations in backward to save memory.
            trust_remote_code: Allow model code from the hub to run. Off unless you trust the source.
            attn_implementation: ``sdpa`` (else ``eager``), ``eager`` or ``flash_attention_2``; None: transformers'.
            optimizer: Optimizer class and arguments, e.g. ``torch.optim.AdamW`` or
                ``bitsandbytes.optim.PagedAdamW8bit``.
            scheduler: Learning-rate schedule after linear warmup (from ``transformers.get_scheduler``).
            warmup_ratio: Share of the optimizer steps spent in linear warmup.
            max_new_tokens: Tokens generated per prompt by ``politician-lm predict`` (greedy).
            max_bad_steps: A step whose loss or gradients are NaN/Inf is skipped (no weight changes); fit stops with
                an error after this many in a row.
            init_adapter: Start from this PEFT adapter folder (e.g. a previous stage's ``adapters/best``) and keep
                training it; its LoRA settings (r, alpha, targets, DoRA, rsLoRA) replace the ``lora_*`` options.
            objective: ``sft`` (completion cross-entropy), ``dpo`` (preference pairs from ``politician-lm pairs``;
                the reference is the policy at the start of the stage, scored once before the first step) or
                ``simpo`` (the same pairs, reference-free: rewards are beta x the mean per-token log-probability).
            beta: DPO: strength of the pull away from the reference (the implicit reward's scale); SimPO: the
                reward's scale (the SimPO paper uses about 2).
            sft_weight: DPO and SimPO: weight of an added SFT loss on the chosen answers (RPO); 0: none.
            gamma: SimPO only: the target reward margin between chosen and rejected answers.
            anchor_weight: DPO and SimPO with ``data.anchor_path``: weight of the anchor records' penalty.
            anchor_kind: ``hinge``: an anchor record's NLL rising above the stage's start; ``kl``: KL(start || now)
                of the next-token distributions at its completion tokens (``model.anchor``).
        """
        super().__init__()
        # the one place the objective is looked at (one-line errors first): from here on the strategy decides
        self.objective: TrainingObjective = objective_for(
            objective, beta, gamma, sft_weight, attn_implementation, anchor_weight, anchor_kind
        )
        self.save_hyperparameters(ignore=["optimizer"])  # a callable; LightningCLI's config.yaml records it
        if init_adapter is not None:  # clear errors now, before any load: the adapter's shapes, or PEFT's refusal
            check_fits_base(read_adapter(init_adapter), model_name_or_path)
        else:
            check_lora_settings(model_name_or_path, self.lora_config(), trust_remote_code)
        self.optimizer_factory = optimizer
        self.model: Any = None
        self.scorer: Scorer | None = None  # the forward passes, set in configure_model
        self.compute_dtype: torch.dtype | None = None  # the matmul dtype, set in configure_model
        self.strict_loading = False  # checkpoints hold only the trainable parameters
        self._val_losses: list[tuple[float, int]] = []
        self.guard = NonFiniteGuard(max_bad_steps)

    # -- what callbacks read (politician_lm.callbacks.contracts) --------------------------------------------
    @property
    def model_name_or_path(self) -> str:
        """The base model as configured (a local folder or a hub id)."""
        return self.hparams.model_name_or_path

    @property
    def quantization(self) -> str:
        """How the base weights are stored: ``nf4``, ``fp4``, ``int8`` or ``none``."""
        return self.hparams.quantization

    @property
    def skipped_steps(self) -> int:
        """Steps skipped so far for a non-finite loss or gradient."""
        return self.guard.skipped_steps

    @property
    def head_on_labels_only(self) -> bool:
        """Whether the head runs on labelled positions only (``model.scoring``); known after ``configure_model``."""
        return self.scorer is not None and self.scorer.parts is not None

    # -- model ----------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        device = self._trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
        dtype = resolve_compute_dtype(hp.compute_dtype, device)
        self.model = build_trainable_model(
            hp.model_name_or_path,
            hp.quantization,
            dtype,
            device,
            quant_storage=hp.quant_storage,
            trust_remote_code=hp.trust_remote_code,
            attn_implementation=hp.attn_implementation,
            gradient_checkpointing=hp.gradient_checkpointing,
            adapter=hp.init_adapter or self.lora_config(),
        )
        self.compute_dtype = dtype
        flash = "flash" in str(getattr(self.model.config, "_attn_implementation", None) or "")
        self.scorer = Scorer(self.model, split_head(self.model), dtype, flatten_packed=flash)

    def lora_config(self) -> LoraConfig:
        """The PEFT LoRA settings of ``hparams`` (a new adapter; ``init_adapter`` brings its own)."""
        return lora_config(self.hparams)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable}

    # -- checkpoints (model.resume) -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = self.trainable_state_dict()
        self.objective.save(checkpoint)
        resume.save_rng(checkpoint)
        if self._trainer is not None:
            resume.reopen_stopped_epoch(self.trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        resume.refuse_unresumable(checkpoint, self._trainer)
        resume.restore_rng(checkpoint)
        resume.check_checkpoint_fits(checkpoint["state_dict"], dict(self.named_parameters()))
        self.objective.load(checkpoint)

    # -- the objective (model.objectives, model.dpo) ----------------------------------------------------------
    def _data_source(self) -> PreferenceSource | None:
        dm = self._trainer.datamodule if self._trainer is not None else None
        return dm if isinstance(dm, PreferenceSource) else None

    def setup(self, stage: str) -> None:
        """Objective and data must agree (checked after the data is read, before the model loads). The library noise
        filters go in here too, so a fit from Python (not the CLI) is as quiet as one from the command line."""
        quiet_libraries()
        self.objective.check_data(self._data_source())

    def on_fit_start(self) -> None:
        """Any pass the objective needs before its steps (DPO: the reference), also before validate and test."""
        self.objective.prepare(self._data_source(), self.scorer, self.device)

    on_validation_start = on_test_start = on_fit_start

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.device.type == "cpu":  # glibc without tcmalloc: the last step's freed heap back to the system
            release_freed_heap()
        self.objective.on_train_batch_start()

    # -- steps ----------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> Any:
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            position_ids=position_ids,
            use_cache=False,
        )

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> tuple[torch.Tensor, int]:
        """The objective's loss, with its metrics logged as ``<split>_reward_accuracy`` and so on."""
        loss, n, metrics = self.objective.step(self.scorer, batch, split, self.device)
        if metrics and torch.isfinite(loss):
            self.log_dict({f"{split}_{k}": v for k, v in metrics.items()}, batch_size=n, sync_dist=split != "train")
        return loss, n

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss, n = self._step(batch, "train")
        if not torch.isfinite(loss):
            self.guard.skip(f"loss is {loss.item()}", self.global_step, self.log)
            return None  # Lightning skips backward and the optimizer step
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        why = self.guard.check_gradients(self.parameters())
        if why:
            self.guard.skip(why, self.global_step, self.log)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._step(batch, "val")
        self._val_losses.append((loss.detach(), n))
        self.log("val_loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        return loss

    def on_validation_epoch_end(self) -> None:
        if not self._val_losses:
            return
        total = sum(n for _, n in self._val_losses)
        value = float(sum(v * n for v, n in self._val_losses) / total)  # same weighting as val_loss
        self._val_losses.clear()
        extra = self.objective.validation_metrics(value, at_start=self.trainer.sanity_checking)
        if not self.trainer.sanity_checking:
            for name, metric in extra.items():
                self.log(name, metric, sync_dist=True)
            return
        # Lightning drops sanity-check metrics; keep its loss as "before training" (all val: num_sanity_val_steps -1)
        for logger in self.loggers:
            logger.log_metrics({"val_loss_at_start": value, **extra}, step=0)
        self.print(f"val_loss before training (sanity check, {total} examples): {value:.4f}")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._step(batch, "test")
        self.log("test_loss", loss, sync_dist=True, batch_size=n)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, str]]:
        """Greedy continuation of each prompt, as ``{"prompt", "generation"}`` (the DataModule's tokenizer)."""
        tokenizer = self.trainer.datamodule.tokenizer
        prompt_ids = batch["input_ids"]
        generations = generate_new_text(
            self.model,
            tokenizer,
            prompt_ids,
            batch["attention_mask"],
            max_new_tokens=self.hparams.max_new_tokens,
            do_sample=False,
        )
        prompts = tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
        return [{"prompt": p, "generation": g} for p, g in zip(prompts, generations)]

    # -- optimisation ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return optimizer_and_schedule(
            self.optimizer_factory(params), self.hparams.scheduler, self.hparams.warmup_ratio, total
        )
