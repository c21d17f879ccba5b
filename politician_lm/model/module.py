"""``PoliticianLM``: a LightningModule around a (quantized) causal LM with trainable LoRA adapters."""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any, Literal

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import get_scheduler

from politician_lm.artifacts.adapter import attach_adapter, check_fits_base, read_adapter
from politician_lm.batch import IGNORE_INDEX, PreferenceSource
from politician_lm.errors import UserError
from politician_lm.model.generate import generate_new_text
from politician_lm.model.loading import ComputeDtype, Quantization, QuantStorage, load_base_model, resolve_compute_dtype
from politician_lm.model.preference import PreferenceOutput, dpo_loss, pair_attention_mask, sequence_logps


class TrainingDiverged(UserError):
    """Too many consecutive steps with a non-finite loss or gradient."""


Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]
Objective = Literal["sft", "dpo"]
REFERENCE_KEY = "politician_lm_dpo_reference"
UNRESUMABLE_KEY = "politician_lm_unresumable"  # why fit cannot resume a checkpoint exactly (reopen_stopped_epoch)


class PoliticianLM(L.LightningModule):
    """QLoRA fine-tuning of any Hugging Face causal LM loaded with ``from_pretrained``.

    The base model is built in ``configure_model`` (on the target device, quantized there), so constructing
    this class is cheap and ``--print_config`` never touches weights. Checkpoints hold only the trainable
    (LoRA) parameters plus optimizer and scheduler state; the frozen base is reloaded from ``model_name_or_path``.

    ``objective: dpo`` trains on preference pairs (``model.preference``). Its reference model is the policy at the
    start of the stage (the base plus ``init_adapter``): before the first step one no-grad pass stores the chosen and
    rejected log-probabilities of every train and val pair, and checkpoints carry them. No second copy of the model
    is loaded or run, and a resumed run keeps the reference of the run it resumes.
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
        attn_implementation: str | None = "sdpa",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: Scheduler = "cosine",
        warmup_ratio: float = 0.05,
        max_new_tokens: int = 64,
        init_adapter: str | None = None,
        max_bad_steps: int = 5,
        objective: Objective = "sft",
        beta: float = 0.1,
        sft_weight: float = 0.0,
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
            attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``; None lets transformers choose.
            optimizer: Optimizer class and arguments, e.g. ``torch.optim.AdamW`` or
                ``bitsandbytes.optim.PagedAdamW8bit``.
            scheduler: Learning-rate schedule after linear warmup (from ``transformers.get_scheduler``).
            warmup_ratio: Share of the optimizer steps spent in linear warmup.
            max_new_tokens: Tokens generated per prompt by ``politician-lm predict`` (greedy).
            max_bad_steps: A step whose loss or gradients are NaN/Inf is skipped (no weight changes); fit stops with
                an error after this many in a row.
            init_adapter: Start from this PEFT adapter folder (e.g. a previous stage's ``adapters/best``) and keep
                training it; its LoRA settings (r, alpha, targets, DoRA, rsLoRA) replace the ``lora_*`` options.
            objective: ``sft`` (completion cross-entropy) or ``dpo`` (preference pairs from ``politician-lm pairs``;
                the reference is the policy at the start of the stage, scored once before the first step).
            beta: DPO only: strength of the pull away from the reference (the implicit reward's scale).
            sft_weight: DPO only: weight of an added SFT loss on the chosen answers (RPO); 0 is plain DPO.
        """
        super().__init__()
        if objective not in ("sft", "dpo"):
            raise UserError(f"unknown model.objective {objective!r}; use 'sft' or 'dpo'")
        if beta <= 0 or not math.isfinite(beta) or sft_weight < 0 or not math.isfinite(sft_weight):
            raise UserError(f"model.beta must be > 0 and model.sft_weight >= 0, got {beta} and {sft_weight}")
        if init_adapter is not None:
            check_fits_base(read_adapter(init_adapter), model_name_or_path)  # a clear error now, before any load
        self.save_hyperparameters(ignore=["optimizer"])  # a callable; LightningCLI's config.yaml records it
        self.optimizer_factory = optimizer
        self.model: Any = None
        # (backbone, head), set in configure_model
        self._backbone_and_head: tuple[torch.nn.Module, torch.nn.Module] | None = None
        self.compute_dtype: torch.dtype | None = None  # the matmul dtype, set in configure_model
        self._flatten_packed = False
        self.strict_loading = False  # checkpoints hold only the trainable parameters
        self._val_losses: list[tuple[float, int]] = []
        self.bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient
        self.skipped_steps = 0
        # DPO: per split, [pairs, 2] reference log-probabilities (chosen, rejected) indexed by the pair's "index"
        self.reference: dict[str, torch.Tensor] = {}
        self._reference_data: str | None = None  # fingerprint of the pairs the reference was computed on
        self._reference_is_policy = False  # True from the reference pass until the first training step

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
    def head_on_labels_only(self) -> bool:
        """Whether the output head runs only on the positions that have a label (see ``_loss``); known once
        ``configure_model`` has run."""
        return self._backbone_and_head is not None

    # -- model ----------------------------------------------------------------------------------------------
    def _target_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def configure_model(self) -> None:
        if self.model is not None:
            return
        hp = self.hparams
        device = self._target_device()
        dtype = resolve_compute_dtype(hp.compute_dtype, device)
        model = load_base_model(
            hp.model_name_or_path,
            hp.quantization,
            dtype,
            device,
            hp.trust_remote_code,
            hp.attn_implementation,
            quant_storage=hp.quant_storage,
        )
        if hp.quantization != "none":
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=hp.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        elif hp.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        if hp.init_adapter:
            self.model = attach_adapter(model, hp.init_adapter, is_trainable=True)
        else:
            self.model = get_peft_model(model, self.lora_config())
        # from_pretrained returns the base in eval mode and Lightning keeps module modes as it finds them; in eval
        # mode transformers silently skips gradient checkpointing, so the whole model goes to train mode here.
        self.model.train()
        self.compute_dtype = dtype
        self._backbone_and_head = _split_head(self.model)
        # FlashAttention reads packing from position_ids only in a batch of one sequence (varlen); other kernels
        # get a block-diagonal mask built from position_ids, which is cheapest per row.
        self._flatten_packed = "flash" in str(getattr(self.model.config, "_attn_implementation", None) or "")

    def lora_config(self) -> LoraConfig:
        """The PEFT LoRA settings of ``hparams`` (a new adapter; ``init_adapter`` brings its own)."""
        hp = self.hparams
        return LoraConfig(
            task_type="CAUSAL_LM",
            r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=hp.target_modules,
            use_dora=hp.use_dora,
            use_rslora=hp.use_rslora,
        )

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = self.trainable_state_dict()
        if self.hparams.objective == "dpo" and self.reference:
            checkpoint[REFERENCE_KEY] = {"logps": self.reference, "data": self._reference_data}
        # RNG streams (LoRA dropout), so a resumed run draws what the uninterrupted run would have drawn
        checkpoint["politician_lm_rng"] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        if self._trainer is not None:
            reopen_stopped_epoch(self.trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if UNRESUMABLE_KEY in checkpoint and self._trainer is not None and self._trainer.state.fn == "fit":
            raise UserError(checkpoint[UNRESUMABLE_KEY])
        rng = checkpoint.get("politician_lm_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
        check_checkpoint_fits(checkpoint["state_dict"], dict(self.named_parameters()))
        saved = checkpoint.get(REFERENCE_KEY)
        if self.hparams.objective == "dpo":
            if saved is None:
                raise UserError(
                    "the checkpoint is not from a DPO run (it has no reference log-probabilities); start "
                    "a DPO stage from an SFT adapter with --model.init_adapter, not from an SFT checkpoint"
                )
            self.reference, self._reference_data = dict(saved["logps"]), saved["data"]
        elif saved is not None:
            raise UserError("the checkpoint is from a DPO run; resume it with --model.objective dpo")

    # -- DPO reference ----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Objective and data must agree (checked after the data is read, before the model loads)."""
        dm = self._trainer.datamodule if self._trainer is not None else None
        if not isinstance(dm, PreferenceSource):
            if self.hparams.objective == "dpo":
                raise UserError("model.objective dpo needs the PoliticianDataModule (data:) with preference pairs")
            return
        preference, path = dm.preference, dm.data_path
        if self.hparams.objective == "dpo" and "flash" in str(self.hparams.attn_implementation or ""):
            raise UserError(
                f"model.objective dpo scores both answers after one copy of the prompt with a 4D attention mask, "
                f"which {self.hparams.attn_implementation} cannot take; set model.attn_implementation: sdpa"
            )
        if self.hparams.objective == "dpo" and not preference:
            raise UserError(
                f"{path}: model.objective dpo needs preference pairs ({{'prompt', 'chosen', 'rejected'}});"
                " build them with `politician-lm pairs`"
            )
        if self.hparams.objective == "sft" and preference:
            raise UserError(f"{path}: holds preference pairs; train them with --model.objective dpo")

    def on_fit_start(self) -> None:
        self._ensure_reference()

    def on_validation_start(self) -> None:
        self._ensure_reference()

    def on_test_start(self) -> None:
        self._ensure_reference()

    def _ensure_reference(self) -> None:
        """Score every pair once with the current (starting) weights, unless a checkpoint brought the reference."""
        if self.hparams.objective != "dpo":
            return
        dm = self.trainer.datamodule
        if not isinstance(dm, PreferenceSource):
            raise UserError("model.objective dpo needs the PoliticianDataModule (data:) with preference pairs")
        loaders = dm.reference_dataloaders()
        fingerprint = _pairs_fingerprint([loader.dataset for loader in loaders.values()])
        if self.reference:
            if self._reference_data != fingerprint:
                raise UserError(
                    "the pairs differ from those the run started on (its reference log-probabilities "
                    "were computed on other data); resume with the same data, or start a new run"
                )
            return
        counts = ", ".join(f"{len(loader.dataset)} {split}" for split, loader in loaders.items())
        rank_zero_info(f"DPO reference: scoring {counts} pairs with the starting weights (one pass, no gradients)")
        self.reference = {split: self._reference_logps(loader) for split, loader in loaders.items()}
        self._reference_data = fingerprint
        self._reference_is_policy = True

    @torch.no_grad()
    def _reference_logps(self, loader: Any) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()  # no dropout: the exact policy at the start of the stage
        out = torch.full((len(loader.dataset), 2), float("nan"), dtype=torch.float64)
        try:
            for batch in loader:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logps, _ = self._pair_logps(batch)
                n = batch["index"].shape[0]
                out[batch["index"].cpu()] = torch.stack([logps[:n], logps[n:]], dim=1).double().cpu()
        finally:
            self.model.train(was_training)
        return out

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

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over the completion tokens (labels other than -100).

        Packed batches carry ``position_ids`` (restarting at every example) and no attention mask: transformers then
        masks block-diagonally. The output head runs only on the positions that have a label, so the prompt tokens'
        logits (a [tokens, vocab] tensor, and its gradient) are never built: for a 7B model at 1024 tokens x 8 rows
        that is about 1 GiB of fp32 logits per batch. Falls back to the model's own loss where the head cannot be
        split off (see ``_split_head``). With FlashAttention, packed rows are flattened into one varlen sequence.
        """
        if self._flatten_packed and "position_ids" in batch:
            # rows -> one sequence; every row starts an example at position 0, so no segment runs across rows
            batch = {k: batch[k].reshape(1, -1) for k in ("input_ids", "labels", "position_ids")}
        labels = batch["labels"]
        if self._backbone_and_head is None:
            return self(batch["input_ids"], batch.get("attention_mask"), labels, batch.get("position_ids")).loss
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = self._labelled_logits(batch, keep)
        return F.cross_entropy(logits.float(), targets[keep])  # no completion token: NaN, as transformers gives

    def _labelled_logits(self, batch: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """Logits of the positions ``keep`` marks (those with a label): the backbone, then the head on those only."""
        backbone, head = self._backbone_and_head
        hidden = backbone(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
        ).last_hidden_state
        return head(hidden[:, :-1][keep])

    def _pair_logps(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability of each answer's labelled tokens and their count: ``[2n]`` each, the n chosen answers
        then the n rejected ones. One forward pass over pair rows, where both answers follow one copy of the prompt
        (``politician_lm.batch``); the head runs only on positions that predict an answer token."""
        n = batch["input_ids"].shape[0]
        eager = getattr(self.model.config, "_attn_implementation", None) == "eager"
        mask = pair_attention_mask(batch["segments"], self.compute_dtype if eager else None)
        chosen, rejected = batch["chosen_targets"], batch["rejected_targets"]
        keep_c, keep_r = chosen != IGNORE_INDEX, rejected != IGNORE_INDEX
        if self._backbone_and_head is None:
            out = self.model(
                input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False
            )
            hidden, head = out.logits, (lambda x: x)
        else:
            backbone, head = self._backbone_and_head
            hidden = backbone(
                input_ids=batch["input_ids"],
                attention_mask=mask,
                position_ids=batch["position_ids"],
                use_cache=False,
            ).last_hidden_state
        logits = head(torch.cat([hidden[keep_c], hidden[keep_r]]))
        targets = torch.cat([chosen[keep_c], rejected[keep_r]])
        rows = torch.cat([keep_c.nonzero()[:, 0], keep_r.nonzero()[:, 0] + n])  # row-major, as boolean indexing
        return sequence_logps(logits, targets, rows, 2 * n)

    def _preference(self, batch: dict[str, torch.Tensor], split: str) -> PreferenceOutput:
        """DPO on a batch of n pairs (one row each): log-probabilities [0, n) are the chosen answers', [n, 2n) the
        rejected ones'."""
        n = batch["index"].shape[0]
        reference = self.reference[split][batch["index"].cpu()]
        if self._reference_is_policy and not torch.is_grad_enabled():
            # no step since the reference pass: the policy's log-probabilities are the reference's (same loader,
            # same batches), so the validation before training reads them instead of scoring the pairs again
            counts = torch.cat([(batch[k] != IGNORE_INDEX).sum(1) for k in ("chosen_targets", "rejected_targets")])
            logps = torch.cat([reference[:, 0], reference[:, 1]]).float()
            logps, counts = logps.to(self.device), counts.to(self.device)
        else:
            logps, counts = self._pair_logps(batch)
        reference = reference.to(logps.device)
        return dpo_loss(
            logps[:n],
            logps[n:],
            reference[:, 0],
            reference[:, 1],
            counts[:n],
            self.hparams.beta,
            self.hparams.sft_weight,
        )

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> tuple[torch.Tensor, int]:
        """The objective's loss, with the DPO metrics logged as ``<split>_reward_accuracy`` and so on."""
        if self.hparams.objective != "dpo":
            return self._loss(batch), batch["input_ids"].shape[0]
        out = self._preference(batch, "train" if split == "train" else "val")
        n = batch["index"].shape[0]
        if torch.isfinite(out.loss):
            self.log_dict(
                {f"{split}_{k}": v for k, v in out.metrics().items()}, batch_size=n, sync_dist=split != "train"
            )
        return out.loss, n

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._reference_is_policy = False

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss, n = self._step(batch, "train")
        if not torch.isfinite(loss):
            self._bad_step(f"loss is {loss.item()}")
            return None  # Lightning skips backward and the optimizer step
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.detach().abs().max() for g in grads])).all():
            for p in self.parameters():
                p.grad = None  # optimizers skip parameters without a gradient: no update, no moment change
            self._bad_step("a gradient is NaN/Inf")
        elif grads:
            self.bad_steps = 0

    def _bad_step(self, why: str) -> None:
        self.bad_steps += 1
        self.skipped_steps += 1
        self.log("skipped_steps", float(self.skipped_steps))
        rank_zero_warn(f"step {self.global_step}: {why}; step skipped ({self.bad_steps} in a row)")
        if self.bad_steps >= self.hparams.max_bad_steps:
            raise TrainingDiverged(
                f"training stopped at step {self.global_step}: {self.bad_steps} steps in a row had a non-finite loss "
                "or gradient; lower the learning rate, check the data, or resume from an earlier checkpoint"
            )

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
        if self.trainer.sanity_checking:
            # Lightning discards metrics of the sanity check; keep its loss as the "before training" reference.
            # With `trainer.num_sanity_val_steps: -1` it covers the whole validation set.
            for logger in self.loggers:
                start = {"val_loss_at_start": value}
                if self.hparams.objective == "sft":  # a DPO loss is no per-token NLL
                    start["val_perplexity_at_start"] = math.exp(value)
                logger.log_metrics(start, step=0)
            self.print(f"val_loss before training (sanity check, {total} examples): {value:.4f}")
        elif self.hparams.objective == "sft":  # a DPO loss is no per-token NLL
            self.log("val_perplexity", math.exp(min(value, 50.0)), sync_dist=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._step(batch, "test")
        self.log("test_loss", loss, sync_dist=True, batch_size=n)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[dict[str, str]]:
        """Greedy continuation of each prompt, as ``{"prompt", "generation"}`` (decoded with the DataModule's
        tokenizer)."""
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
        optimizer = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_scheduler(
            self.hparams.scheduler,
            optimizer,
            num_warmup_steps=int(self.hparams.warmup_ratio * total),
            num_training_steps=total,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def reopen_stopped_epoch(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
    """Save an epoch that a stop cut short (``trainer.should_stop``: ``max_time``, a callback) as still open.

    Lightning ends such an epoch as if it were complete (its ``on_train_epoch_end`` runs and the epoch counts as done),
    so the ``last.ckpt`` written as fit ends said "epoch finished" while the DataModule's position said "batch k of
    n": a resume started the next epoch, the sampler shuffled for that epoch and skipped its first k batches, and the
    rest of the cut epoch was never trained on (found on a DPO run; SFT the same). The saved epoch counters are set
    back to those a checkpoint at that batch's end holds (started, not processed), so the resume finishes the cut
    epoch on its own shuffle, as after a kill, and ``current_epoch`` and ``max_epochs`` keep counting as the
    uninterrupted run does. Reads Lightning's fit-loop progress counters (lightning 2.5-2.6; the stop-and-resume
    tests in tests/test_reliability.py and tests/test_preference.py fail if they move).

    A stop inside a gradient-accumulation window cannot be resumed exactly: the gradients of the batches since the
    last optimizer step are not in the checkpoint, and the dropout draws of those batches are already spent. Such a
    checkpoint is marked, and fit refuses to resume it in one line (``UNRESUMABLE_KEY``).
    """
    fit = trainer.fit_loop
    epochs, batches = fit.epoch_progress.current, fit.epoch_loop.batch_progress.current.processed
    total = trainer.num_training_batches
    if (
        trainer.state.fn != "fit"
        or not math.isfinite(total)
        or not 0 < batches < total
        or epochs.processed != epochs.started
    ):
        return  # mid-epoch (the epoch is not counted yet), or the epoch ran to its end
    window = trainer.accumulate_grad_batches
    if batches % window:
        checkpoint[UNRESUMABLE_KEY] = (
            f"this checkpoint was saved when fit stopped after batch {batches} of an epoch, {batches % window} "
            f"batch(es) into a trainer.accumulate_grad_batches window of {window}: their gradients were never applied "
            "or saved, so a resume cannot continue exactly; start a new run from its adapter (--model.init_adapter)"
        )
    progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    for counts in (progress["total"], progress["current"]):
        counts["processed"] = counts["completed"] = counts["started"] - 1
    checkpoint["epoch"] = progress["current"]["completed"]


def check_checkpoint_fits(saved: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter]) -> None:
    """A checkpoint from other LoRA settings (rank, targets) or another base: one line naming the difference,
    instead of Lightning's list of size mismatches."""
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    missing = sorted(trainable.keys() - saved.keys())
    if missing:
        raise UserError(
            f"the checkpoint lacks {len(missing)} of this run's {len(trainable)} trainable tensors (e.g. "
            f"{missing[0]}): it was made with other model.target_modules or another base model; resume "
            "with the settings it was trained with, or start a new run"
        )
    for name, param in trainable.items():
        shape = tuple(saved[name].shape)
        if shape == tuple(param.shape):
            continue
        if ".lora_A." in name and shape[1:] == tuple(param.shape[1:]):
            raise UserError(
                f"the checkpoint was trained with model.lora_r {shape[0]}, this run has "
                f"model.lora_r {param.shape[0]}; resume with --model.lora_r "
                f"{shape[0]}, or start a new run"
            )
        raise UserError(
            f"the checkpoint's {name} has shape {list(shape)}, this run's has {list(param.shape)}: it was "
            "made with other LoRA settings or another base model; resume with the settings it was "
            "trained with, or start a new run"
        )


def _pairs_fingerprint(datasets: list[Any]) -> str:
    """A hash of the token ids of every pair, in order: the data a DPO reference belongs to."""
    digest = hashlib.sha256()
    for ds in datasets:
        for column in ("input_ids", "rejected_input_ids"):
            for ids in ds[column]:
                digest.update(len(ids).to_bytes(4, "little"))
                digest.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


def _split_head(model: Any) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(backbone, output head)`` of a PEFT-wrapped causal LM whose logits are exactly ``head(backbone(x))``.

    Checked once on a short fixed input (no randomness drawn): models that post-process logits (soft-capping,
    scaling) or have no separable backbone return None, and training uses the model's own loss.
    """
    base = model.get_base_model()
    backbone, head = getattr(base, getattr(base, "base_model_prefix", ""), None), base.get_output_embeddings()
    if not isinstance(backbone, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return None
    device = next(head.parameters()).device
    ids = (torch.arange(16, device=device) * 7919 % base.config.get_text_config().vocab_size).view(2, 8)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits.float()
            split = head(backbone(input_ids=ids, use_cache=False).last_hidden_state).float()
    except (TypeError, AttributeError, ValueError):
        return None
    finally:
        model.train(was_training)
    close = split.shape == full.shape and torch.allclose(
        split, full, rtol=1e-3, atol=1e-3 * float(full.abs().max()) + 1e-5
    )
    return (backbone, head) if close else None
