"""One base model with every persona's adapters, and one thread that batches requests per persona.

Loading goes through ``load_persona`` (the path ``generate`` and ``chat`` use: the base de-quantized once on CPU,
the first persona's adapters at their weights), then every further persona's adapters are attached to the same
model under their own names, each LoRA update scaled by its weight. Nothing is merged, so each persona computes
exactly what ``politician-lm generate`` computes for it.

Batching policy: a batch holds requests for one persona with the same sampling settings (up to
``max_batch_size``, gathered for at most ``batch_wait_s`` after the first arrives); personas take turns in the
order their oldest request arrived. Before each batch the persona's adapters are made the active ones, so another
persona's adapter never touches a row. Each row stops on its own: end of turn, its own ``max_tokens``, or its
client gone (a ``StoppingCriteria`` marks the row finished; ``generate`` ends when every row has).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from politician_lm.artifacts.adapter import read_metadata
from politician_lm.data.templates import PromptStyle
from politician_lm.inference import Persona, generation_defaults, load_persona
from politician_lm.model.adapters import activate, adapter_names, attach_weighted
from politician_lm.serve.personas import PersonaSpec

log = logging.getLogger("politician_lm.serve")


@dataclass
class ServedPersona:
    """A persona on the shared model: ``persona`` for generation (worker thread), ``front`` for tokenizing on the
    server thread (same model and style, its own tokenizer copy: a fast tokenizer is not shared across threads)."""

    spec: PersonaSpec
    persona: Persona
    front: Persona
    adapter_names: list[str]


def load_served(
    specs: list[PersonaSpec], quantization: str | None = None, allow_pickle: bool = False, device: str | None = None
) -> dict[str, ServedPersona]:
    """Load the base once with every persona's adapters (see the module docstring)."""
    import copy

    first = specs[0]
    p0 = load_persona(
        first.adapters, first.weights, first.base_model, quantization, device=device, allow_pickle=allow_pickle
    )
    model, tokenizer = p0.model, p0.tokenizer
    served: dict[str, ServedPersona] = {}
    for k, spec in enumerate(specs):
        if k == 0:
            names, style = adapter_names(len(spec.adapters)), p0.style  # load_persona's names
        else:
            names, style = (
                adapter_names(len(spec.adapters), prefix=f"persona{k}"),
                PromptStyle.from_metadata(read_metadata(spec.adapters[0])),
            )
            model = attach_weighted(model, spec.adapters, spec.weights, names)
        generation = {**generation_defaults(Path(spec.adapters[0])), **spec.generation}
        served[spec.name] = ServedPersona(
            spec=spec,
            persona=Persona(model=model, tokenizer=tokenizer, style=style, generation=generation),
            front=Persona(model=model, tokenizer=copy.deepcopy(tokenizer), style=style, generation=generation),
            adapter_names=names,
        )
    model.eval()
    return served


@dataclass(eq=False)
class Job:
    """One request. The worker thread appends tokens and finishes it; ``events`` carries them to the server thread."""

    persona: str
    conversation: list[dict[str, str]]
    max_new_tokens: int
    settings: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    tokens: list[int] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finish_reason: str | None = None
    error: str | None = None
    arrived: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        return self.persona, tuple(sorted(self.settings.items()))

    def _send(self, item: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the server's loop is closed (shutdown)
            pass


class _Rows(StoppingCriteria):
    """Per-row bookkeeping at every generated token: hand the token to its job, and mark the row finished at end of
    turn, at its own ``max_new_tokens``, or when its client has gone."""

    def __init__(self, jobs: list[Job], eos: set[int], finish: Callable[[Job, str], None]) -> None:
        self.jobs, self.eos, self.finish = jobs, eos, finish
        self.done = [False] * len(jobs)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        for i, (job, token) in enumerate(zip(self.jobs, input_ids[:, -1].tolist())):
            if self.done[i]:
                continue
            if job.cancelled.is_set():
                self.done[i] = True
                self.finish(job, "cancelled")
            elif token in self.eos:
                self.done[i] = True
                self.finish(job, "stop")
            else:
                job.tokens.append(token)
                job._send(("token", token))
                if len(job.tokens) >= job.max_new_tokens:
                    self.done[i] = True
                    self.finish(job, "length")
        return torch.tensor(self.done, device=input_ids.device)


class Engine:
    """The request queue and the one thread that runs the model."""

    def __init__(
        self,
        personas: dict[str, ServedPersona],
        max_batch_size: int = 8,
        batch_wait_s: float = 0.01,
        max_pending: int = 64,
    ) -> None:
        self.personas = personas
        self.max_batch_size, self.batch_wait_s, self.max_pending = max_batch_size, batch_wait_s, max_pending
        self._cv = threading.Condition()
        self._queue: list[Job] = []
        self.live = 0  # queued + generating, the slots in use
        self.stats = {
            "completed": 0,
            "cancelled": 0,
            "failed": 0,
            "batches": 0,
            "batched_rows": 0,
            "max_batch_rows": 0,
            "generated_tokens": 0,
        }
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="politician-lm-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False when every slot is taken."""
        with self._cv:
            if self.live >= self.max_pending:
                return False
            self.live += 1
            self._queue.append(job)
            self._cv.notify_all()
        return True

    def cancel(self, job: Job) -> None:
        """The client is gone: a queued job leaves at once, a generating row stops at its next token."""
        job.cancelled.set()
        with self._cv:
            queued = job in self._queue
            if queued:
                self._queue.remove(job)
        if queued:
            self._finish(job, "cancelled")

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self._cv:
            return {"live": self.live, "queued": len(self._queue), **self.stats}

    def _finish(self, job: Job, reason: str, error: str | None = None) -> None:
        with self._cv:
            if job.finish_reason is not None:
                return
            job.finish_reason, job.error = reason, error
            self.live -= 1
            self.stats["generated_tokens"] += len(job.tokens)
            self.stats[{"cancelled": "cancelled", "error": "failed"}.get(reason, "completed")] += 1
            self._cv.notify_all()
        job._send(("done", reason))

    def _take_batch(self) -> list[Job] | None:
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if self._stop:
                return None
            key = self._queue[0].key
            deadline = self._queue[0].arrived + self.batch_wait_s
            while (
                sum(j.key == key for j in self._queue) < self.max_batch_size
                and not self._stop
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cv.wait(left)
                if not self._queue or self._queue[0].key != key:  # the first job was cancelled meanwhile
                    return []
            batch = [j for j in self._queue if j.key == key][: self.max_batch_size]
            for j in batch:
                self._queue.remove(j)
            return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            if batch:
                self._generate(batch)

    def _generate(self, jobs: list[Job]) -> None:
        served = self.personas[jobs[0].persona]
        persona = served.persona
        rows = _Rows(jobs, {persona.tokenizer.eos_token_id}, self._finish)
        started = time.monotonic()
        try:
            activate(persona.model, served.adapter_names)
            persona.generate(
                [j.conversation for j in jobs],
                stopping_criteria=StoppingCriteriaList([rows]),
                max_new_tokens=max(j.max_new_tokens for j in jobs),
                **jobs[0].settings,
            )
        except Exception as e:  # a failure of ours: every unfinished row gets a 500, the server keeps serving
            log.exception("generation failed for a batch of %d (%s)", len(jobs), served.spec.name)
            for job in jobs:
                self._finish(job, "error", f"{type(e).__name__}: {e}")
        for job in jobs:  # generate stopped on its own limit (the context window) before the row's
            self._finish(job, "length")
        with self._cv:
            self.stats["batches"] += 1
            self.stats["batched_rows"] += len(jobs)
            self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(jobs))
        log.debug(
            "batch of %d for %s: %d tokens in %.2f s",
            len(jobs),
            served.spec.name,
            sum(len(j.tokens) for j in jobs),
            time.monotonic() - started,
        )
