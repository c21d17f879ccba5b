"""``PoliticianDataModule``: prompt/completion or chat JSONL in, padded completion-only-loss batches out; preference
pairs give pair batches instead (``data.pairs``). Reading, the hash split and tokenizing are in ``data.examples``;
the samplers and other collators in ``data.batching``."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
from datasets import Dataset
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorForSeq2Seq

from politician_lm.artifacts.profiles import check_prepared_for, load_profile
from politician_lm.batch import IGNORE_INDEX
from politician_lm.data import batching, examples, records
from politician_lm.data.pairs import PAIR_COLUMNS, PairCollator
from politician_lm.data.templates import PromptFormat, PromptStyle
from politician_lm.data.tokenize import Overlong
from politician_lm.errors import UserError
from politician_lm.progress import batches_done_in_epoch
from politician_lm.values import check_choice

log = logging.getLogger(__name__)


class PoliticianDataModule(L.LightningDataModule):
    """Reads JSONL, renders prompts, tokenizes with completion-only labels and batches with padding."""

    def __init__(
        self,
        data_path: str,
        tokenizer: str,
        politician: str | None = None,
        prompt_format: PromptFormat = "plain",
        separator: str = "\n",
        system_prompt: str | None = None,
        kinds: list[str] | None = None,
        max_length: int = 512,
        overlong: Overlong = "truncate",
        val_fraction: float = 0.1,
        seed: int = 42,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        profiles_dir: str = "data/profiles",
        cache_dir: str | None = None,
        packing: bool = False,
        group_by_length: bool = False,
        anchor_path: str | None = None,
    ) -> None:
        """
        Args:
            data_path: A .jsonl file, a folder of .jsonl files, or a folder with train.jsonl (+ val/test.jsonl).
            tokenizer: Tokenizer path or hub id; the CLI links it to ``model.model_name_or_path``.
            politician: Profile name in ``profiles_dir`` (e.g. ``biden``); supplies the chat system prompt.
            prompt_format: ``plain`` (texts as written, joined by ``separator``) or ``chat`` (tokenizer chat template).
            separator: Text placed after each context turn in the ``plain`` format.
            system_prompt: Persona system prompt for ``chat``; overrides the profile's ``system_prompt``.
            kinds: Keep only records whose ``kind`` is listed (e.g. ``[style]``); None keeps all.
            max_length: Longest tokenized example, prompt included.
            overlong: What to do with longer examples: ``truncate`` the completion or ``drop`` the example.
            val_fraction: Share of records held out for validation when there is no val.jsonl (seeded split).
            seed: Seed of the train/val split and of the per-epoch shuffle order.
            batch_size: Training batch size (per device).
            eval_batch_size: Validation batch size; defaults to ``batch_size``.
            num_workers: DataLoader worker processes.
            profiles_dir: Folder of ``<politician>.yaml`` profiles.
            cache_dir: ``datasets`` cache folder; None uses the Hugging Face default.
            packing: Packed training batches: examples packed best-fit-decreasing into rows of ``max_length``
                (``batch_size`` rows a batch) with ``position_ids`` restarting at every example and a block-diagonal
                causal mask, so examples never attend to each other. Validation stays unpacked. Under DDP each rank
                takes its share of the batches.
            group_by_length: Without packing, batch examples of similar length together (less padding).
            anchor_path: Preference stages: SFT records (e.g. the SFT stage's prepared folder) trained beside the
                pairs: each batch of pairs comes with ``batch_size`` of their training records, and the objective
                pays ``model.anchor_weight`` x their move from the stage's start (``model.anchor_kind``: the NLL's
                rise, or the KL of their next-token distributions); val/test never read.

        Preference pairs (``{"prompt", "chosen", "rejected"}``, see ``politician-lm pairs``) are read, split and
        validated the same way and batched as pairs for ``model.objective: dpo``; ``batch_size`` then counts pairs
        (2 sequences each). Packing is refused for pairs.
        """
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 < val_fraction < 1.0:
            raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        check_choice("data.prompt_format", prompt_format, PromptFormat)
        check_choice("data.overlong", overlong, Overlong)
        if max_length < 2:
            raise UserError(f"max_length must be at least 2, got {max_length}")
        profile = load_profile(politician, profiles_dir) if politician else {}
        check_prepared_for([data_path, anchor_path], politician, profiles_dir)
        self.style = PromptStyle(
            prompt_format=prompt_format,
            separator=separator,
            system_prompt=system_prompt if system_prompt is not None else profile.get("system_prompt"),
            politician=politician,
        )
        self.files = records.discover(data_path)
        if records.val_holds_heldout(self.files, data_path):
            msg = "%s: val.jsonl holds the held-out documents, so val_loss would select on them; prepare it again"
            log.warning(msg, data_path)
        self.preference = records.detect_preference(self.files)
        self.record_counts = examples.validated(self.files, self.preference, kinds)
        self.anchor_files = examples.anchor_files(anchor_path, self.preference, data_path) if anchor_path else None
        if self.preference and packing:
            raise UserError(
                f"{data_path}: holds preference pairs, which are not packed (a pair is scored as two "
                "padded rows); set data.packing false (data.group_by_length true also cuts padding)"
            )
        self.tokenizer: Any = None
        self._train_sampler: Any = None
        self._resume_at: tuple[int, int] | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.anchor_dataset: Dataset | None = None

    # -- building -------------------------------------------------------------------------------------------
    def _load_tokenizer(self) -> None:
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(self.hparams.tokenizer)
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token

    def _read(self, files: tuple[Path, ...]) -> Dataset:
        hp = self.hparams
        return examples.read_examples(files, hp.cache_dir, self.preference, hp.kinds, hp.data_path)

    def _tokenize(self, ds: Dataset, split: str, pairs: bool | None = None) -> Dataset:
        hp, pairs = self.hparams, self.preference if pairs is None else pairs
        return examples.tokenize_examples(ds, split, self.tokenizer, self.style, hp.max_length, hp.overlong, pairs)

    def build(self) -> None:
        """Load, split and tokenize (cached on disk by ``datasets``). Safe to call more than once."""
        if self.train_dataset is not None:
            return
        self._load_tokenizer()
        hp, train = self.hparams, self._read(self.files.train)
        if self.files.val:
            val = self._read(self.files.val)
        else:
            train, val = examples.hash_split(train, hp.seed, hp.val_fraction, hp.data_path)
        self.train_dataset = self._tokenize(train, "train")
        self.val_dataset = self._tokenize(val, "val")
        if self.anchor_files is not None:
            anchor = examples.read_anchor(self.anchor_files, hp.cache_dir, hp.seed, hp.val_fraction, hp.anchor_path)
            anchor = self._tokenize(anchor, "anchor", pairs=False)
            self.anchor_dataset = anchor.add_column("index", list(range(len(anchor))))  # for model.anchor's scores
        n_anchor = f" (+ {len(self.anchor_dataset)} anchor records)" if self.anchor_dataset is not None else ""
        log.info("data: %d train / %d val examples%s from %s", len(self.train_dataset), len(self.val_dataset), n_anchor,
                 hp.data_path)  # fmt: skip

    def prepare_data(self) -> None:
        self.build()  # fills the datasets cache on rank 0; setup() on every rank then reads it

    def setup(self, stage: str | None = None) -> None:
        self.build()

    # -- loaders --------------------------------------------------------------------------------------------
    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool, pairs: bool | None = None) -> DataLoader:
        """Every example once, in order; or with ``shuffle`` the train batches: shuffled per (seed, epoch), packed or
        length-grouped if asked (``data.batching``), sharded across DDP ranks, and able to resume mid-epoch.
        ``pairs`` (default: whether the data holds pairs) picks pair or prompt/completion batches."""
        pairs = self.preference if pairs is None else pairs
        ds = ds.select_columns(
            PAIR_COLUMNS if pairs else [c for c in ("input_ids", "labels", "index") if c in ds.features]
        )
        # A generator of its own: creating a loader iterator must not draw from the global RNG (LoRA dropout),
        # or a resumed run would draw different dropout masks than the uninterrupted one.
        generator = torch.Generator().manual_seed(self.hparams.seed)
        settings: dict[str, Any] = dict(
            collate_fn=self._collator(pairs), num_workers=self.hparams.num_workers, generator=generator
        )
        if not shuffle:
            return DataLoader(ds, batch_size=batch_size, **settings)
        world, rank = self._world()
        hp = self.hparams
        if hp.packing or hp.group_by_length:  # a batch plan: the sampler yields whole batches
            lengths = [len(ids) for ids in ds["input_ids"]]  # a pair: both answers and the prompt twice
            if pairs:
                lengths = [a + len(b) for a, b in zip(lengths, ds["rejected_input_ids"])]
            plan = batching.EpochBatchSampler(lengths, batch_size, hp.seed, hp.packing, hp.max_length, world, rank)
            if hp.packing:
                settings["collate_fn"] = batching.PackedRowsCollator(
                    hp.max_length, self.tokenizer.pad_token_id, IGNORE_INDEX
                )
            return DataLoader(batching.IndexedBatches(ds), sampler=plan, batch_size=None, **settings)
        sampler = batching.ResumableSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=hp.seed)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, **settings)

    def _collator(self, pairs: bool) -> Any:
        """Padded rows: pair rows (``data.pairs``) for preference data, else prompt/completion rows."""
        if pairs:
            return PairCollator(self.tokenizer)
        return DataCollatorForSeq2Seq(self.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    # -- resume: Lightning stores state_dict() in every checkpoint and calls load_state_dict() on resume, before
    # it builds the train loader; a run killed mid-epoch then sees exactly the batches of an uninterrupted run.
    # Where the epoch stands is read from Lightning's loop counters through politician_lm.progress, as
    # model.resume reads it.
    def state_dict(self) -> dict[str, int]:
        if self.trainer is None or self._train_sampler is None:
            return {}
        return {"epoch": int(self._train_sampler.epoch), "batches_done": batches_done_in_epoch(self.trainer)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "epoch" in state:
            self._resume_at = (int(state["epoch"]), int(state["batches_done"]))

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """The train batches; with ``anchor_path``, ``{"pairs": ..., "anchor": ...}`` batches, as many per epoch as
        there are pair batches, the anchor's drawn in order and cycled (reshuffled every epoch)."""
        resume, self._resume_at = self._resume_at, None  # set by load_state_dict() when fit resumes
        loader = self._loader(self.train_dataset, self.hparams.batch_size, shuffle=True)
        self._train_sampler = batching.start_at(loader, resume, len(loader))
        if self.anchor_dataset is None:
            return loader
        anchor = self._loader(self.anchor_dataset, self.hparams.batch_size, shuffle=True, pairs=False)
        if resume:  # where the anchor stood: its epoch ends with the pairs', and it may have cycled
            resume = (resume[0] + 1, 0) if resume[1] >= len(loader) else (resume[0], resume[1] % len(anchor))
        batching.start_at(anchor, resume, len(anchor))
        return CombinedLoader({"pairs": loader, "anchor": batching.Cycled(anchor)}, "min_size")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self._eval_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def reference_dataloaders(self) -> dict[str, DataLoader]:
        """Every train and val pair once, in dataset order and unsharded (every DDP rank sees all of them), for the
        one pass that computes the reference log-probabilities of a DPO run."""
        if not self.preference:
            raise UserError(
                f"{self.hparams.data_path}: model.objective dpo needs preference pairs "
                "({'prompt', 'chosen', 'rejected'}); build them with `politician-lm pairs`"
            )
        pairs = (("train", self.train_dataset), ("val", self.val_dataset))
        return {split: self._loader(ds, self._eval_size, False) for split, ds in pairs}

    def anchor_dataloader(self) -> DataLoader | None:
        """Every anchor record once, in order and unsharded, for the pass that scores them at the stage's start."""
        return None if self.anchor_dataset is None else self._loader(self.anchor_dataset, self._eval_size, False, False)

    def predict_dataloader(self) -> DataLoader:
        """Validation prompts alone (the completion cut off), left-padded for batched generation."""
        val = self.val_dataset
        prompts = val.map(examples.prompt_only, remove_columns=val.column_names, desc="Prompts")
        pad = partial(self.tokenizer.pad, padding=True, padding_side="left", return_tensors="pt")
        return DataLoader(prompts, batch_size=self._eval_size, collate_fn=pad, num_workers=self.hparams.num_workers)

    @property
    def _eval_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    # -- what callbacks read (politician_lm.callbacks.contracts) --------------------------------------------
    def conversations(self, split: Literal["train", "val", "test"]) -> tuple[list[list[dict[str, str]]], list[str]]:
        """Messages and ``kind`` of every example of ``split`` as trained on (after ``kinds``, the split and overlong
        drops); ``test``: the held-out documents (``test.jsonl``) or, without them, val. Reads data on first use."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.build()
        test = self._read(self.files.test) if split == "test" and self.files.test else None
        ds = self.train_dataset if split == "train" else test if test is not None else self.val_dataset
        return list(ds["messages"]), list(ds["kind"])

    @property
    def data_path(self) -> str:
        """The training data: a JSONL file or a folder of them (``train.jsonl``/``val.jsonl`` or any ``*.jsonl``)."""
        return self.hparams.data_path

    @property
    def profiles_dir(self) -> str:
        """Folder of ``<politician>.yaml`` profiles."""
        return self.hparams.profiles_dir

    @property
    def val_fraction(self) -> float:
        """Share of records held out by the split rule (``records.is_heldout``) when there is no val.jsonl."""
        return self.hparams.val_fraction

    @property
    def seed(self) -> int:
        """Seed of the split rule and of the per-epoch shuffle order."""
        return self.hparams.seed

    def prompt_metadata(self) -> dict[str, Any]:
        """What generation needs to rebuild the training prompt; exported next to every adapter."""
        split = records.recorded_split(self.hparams.data_path) if Path(self.hparams.data_path).is_dir() else None
        return {**self.style.to_dict(), "max_length": self.hparams.max_length, **({"split": split} if split else {})}
