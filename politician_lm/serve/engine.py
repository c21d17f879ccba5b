"""The request queue and the one thread that runs the model, one decoding step at a time.

Between two steps the thread (1) runs the adapter changes asked for meanwhile (a persona added or deleted: PEFT
changes the model's modules, so only this thread may), (2) drops the rows whose clients are gone, (3) lets queued
requests join the batch, up to ``max_batch_size`` rows, whatever their persona and settings (``scheduler``), and
(4) decodes one token for every row. A row leaves the moment it ends: end of turn, a stop string, its own
``max_tokens``, or its client gone. When the batch is empty, the first request waits up to ``batch_wait_s`` for
others so that requests sent together start together.

A persona unloaded at run time takes no new requests at once; its adapter is deleted from the model once no queued
or running request of it is left, so its open streams finish as they began.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from politician_lm.errors import UserError
from politician_lm.serve.personas import PersonaSpec
from politician_lm.serve.sampling import RowSampler, model_defaults
from politician_lm.serve.scheduler import DecodeBatch, Job, Row
from politician_lm.serve.served import ServedPersona, ServedSet, load_served
from politician_lm.serve.text import ReplyText

__all__ = ["Engine", "Job", "ServedPersona", "ServedSet", "load_served"]

log = logging.getLogger("politician_lm.serve")


class Engine:
    """The request queue, the running batch and the one thread that runs the model."""

    def __init__(
        self,
        personas: ServedSet,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.01,
        max_pending: int = 64,
    ) -> None:
        self.served = personas
        self.personas = personas.personas  # name -> ServedPersona: what the routes serve
        self.max_batch_size, self.batch_wait_s, self.max_pending = max_batch_size, batch_wait_s, max_pending
        self.eos = personas.tokenizer.eos_token_id
        self.defaults = model_defaults(personas.model)
        self.batch = DecodeBatch(personas.model, self.eos)
        self._cv = threading.Condition()
        self._queue: list[Job] = []
        self._tasks: list[Callable[[], None]] = []
        self._retired: list[ServedPersona] = []
        self.live = 0  # queued + generating, the slots in use
        self.stats = dict.fromkeys(
            (
                "completed",
                "cancelled",
                "failed",
                "batches",
                "batched_rows",
                "joined",
                "max_batch_rows",
                "steps",
                "generated_tokens",
                "prefills",
            ),
            0,
        )
        # the model thread's time, in seconds: where a load's wall time goes (scripts/serve_load_test.py prints it)
        self.stats.update(prefill_seconds=0.0, step_seconds=0.0)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="politician-lm-engine", daemon=True)
        self._thread.start()

    # -- the server thread's side --------------------------------------------------------------------------------
    def submit(self, job: Job) -> bool:
        """Queue ``job``; False when every slot is taken, KeyError when its persona is not served (any more)."""
        with self._cv:
            served = self.personas[job.persona]
            if self.live >= self.max_pending:
                return False
            job.served = served
            self.live += 1
            self._queue.append(job)
            self._cv.notify_all()
        return True

    def cancel(self, job: Job) -> None:
        """The client is gone: a queued job leaves at once, a running row before the next step."""
        job.cancelled.set()
        with self._cv:
            queued = job in self._queue
            if queued:
                self._queue.remove(job)
        if queued:
            self._finish(job, "cancelled")

    def add_persona(self, spec: PersonaSpec) -> Future:
        """Load ``spec`` onto the model between two steps; the future holds its ``ServedPersona`` (or the
        ``UserError`` that says why not)."""
        done: Future = Future()

        def task() -> None:
            try:
                done.set_result(self.served.add(spec))
            except Exception as e:  # noqa: BLE001 - handed to the caller
                done.set_exception(e)

        with self._cv:
            if spec.name in self.personas:
                raise UserError(f"persona {spec.name!r} is already loaded; unload it first")
            self._tasks.append(task)
            self._cv.notify_all()
        return done

    def remove_persona(self, name: str) -> ServedPersona:
        """Take ``name`` off the list at once (KeyError if unknown); its adapter goes when its last row has."""
        with self._cv:
            served = self.personas[name]
            if len(self.personas) == 1:
                raise UserError(f"{name!r} is the only persona served; load another before unloading it")
            del self.personas[name]
            self._retired.append(served)
            self._cv.notify_all()
        return served

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self._cv:
            return {"live": self.live, "queued": len(self._queue), "running": len(self.batch), **self.stats}

    # -- the model thread -------------------------------------------------------------------------------------------
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

    def _next(self) -> tuple[list[Callable[[], None]], list[Job]] | None:
        """Wait for work; then the adapter changes to run and the queued jobs that may join now."""
        with self._cv:
            while not (self._stop or self._queue or self._tasks or self._retired or len(self.batch)):
                self._cv.wait()
            if not len(self.batch) and self._queue:  # idle: let requests sent together start together
                deadline = self._queue[0].arrived + self.batch_wait_s
                while (
                    not self._stop
                    and not self._tasks
                    and self._queue
                    and len(self._queue) < self.max_batch_size
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cv.wait(left)
            if self._stop:
                return None
            tasks, self._tasks = self._tasks, []
            free = self.max_batch_size - len(self.batch)
            admitted, self._queue = self._queue[:free], self._queue[free:]
            return tasks, admitted

    def _run(self) -> None:
        while (work := self._next()) is not None:
            try:
                self._once(*work)
            except Exception as e:  # a bug of ours: the running rows get a 500, the thread keeps serving
                log.exception("the engine's step failed")
                for row in self.batch.clear():
                    self._finish(row.job, "error", f"{type(e).__name__}: {e}")
        if self.batch.adapters is not None:
            self.batch.adapters.release()  # closed: the model's forward is PEFT's own again

    def _once(self, tasks: list[Callable[[], None]], admitted: list[Job]) -> None:
        """Between two steps: adapter changes, rows gone, rows joining; then one step."""
        for task in tasks:
            task()
        if tasks and self.batch.adapters is not None:
            self.batch.adapters.rehook()  # a new adapter may wrap modules the others did not
        self._settle([not r.job.cancelled.is_set() for r in self.batch.rows], "cancelled")
        if admitted:
            self._admit(admitted)
        if len(self.batch):
            self._step()
        self._retire()

    def _row(self, job: Job) -> Row:
        served = job.served
        ids = list(job.prompt_ids) if job.prompt_ids is not None else served.persona.prompt_ids(job.conversation)
        sampler = RowSampler(job.settings, self.defaults, self.eos, job.seed)
        text = ReplyText(served.persona.tokenizer, job.stop) if job.stop else None
        return Row(job, served.adapter, ids, sampler, text, served.prefix)

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill the jobs that may join (a bad setting fails its own row only) and put them in the batch."""
        rows = []
        for job in jobs:
            if job.cancelled.is_set():
                self._finish(job, "cancelled")
                continue
            try:
                rows.append(self._row(job))
            except Exception as e:  # noqa: BLE001 - this request's settings: a 500 for it, the others go on
                self._finish(job, "error", f"{type(e).__name__}: {e}")
        if not rows:
            return
        running, started = len(self.batch), time.perf_counter()
        try:
            firsts = self.batch.prefill(rows)
        except Exception as e:  # a failure of ours: these rows get a 500, the running ones go on
            log.exception("prefill failed for %d rows", len(rows))
            for row in rows:
                self._finish(row.job, "error", f"{type(e).__name__}: {e}")
            return
        with self._cv:
            self.stats["prefills"] += 1
            self.stats["prefill_seconds"] += time.perf_counter() - started
            self.stats["batches"] += running == 0
            self.stats["batched_rows"] += len(rows)
            self.stats["joined"] += len(rows) if running else 0
            self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(self.batch))
        self._advance([None] * running + firsts)

    def _step(self) -> None:
        started = time.perf_counter()
        try:
            picked = self.batch.step()
        except Exception as e:  # a failure of ours: every running row gets a 500, the server keeps serving
            log.exception("decoding step failed for a batch of %d", len(self.batch))
            for row in self.batch.clear():
                self._finish(row.job, "error", f"{type(e).__name__}: {e}")
            return
        with self._cv:
            self.stats["steps"] += 1
            self.stats["step_seconds"] += time.perf_counter() - started
        self._advance(picked)

    def _advance(self, picked: list[int | None]) -> None:
        """Hand each row its new token (None: none this time) and let the rows that ended leave the batch."""
        rows, ended = self.batch.rows, {}
        for row, token in zip(rows, picked):
            if token is not None and (reason := row.advance(token, self.eos)) is not None:
                ended[id(row)] = reason
        self.batch.keep([id(row) not in ended for row in rows])
        for row in rows:
            if id(row) in ended:
                self._finish(row.job, ended[id(row)])

    def _settle(self, keep: list[bool], reason: str) -> None:
        """Let the rows not kept leave the batch, finished for ``reason``."""
        rows = self.batch.rows
        self.batch.keep(keep)
        for row, kept in zip(rows, keep):
            if not kept:
                self._finish(row.job, reason)

    def _retire(self) -> None:
        """Delete the adapters of unloaded personas that no queued or running request uses any more."""
        if not self._retired:
            return
        with self._cv:
            used = [j.served for j in self._queue] + [r.job.served for r in self.batch.rows]
            done = [s for s in self._retired if not any(s is u for u in used)]
            self._retired = [s for s in self._retired if s not in done]
        for served in done:
            self.served.remove(served)
            log.info("unloaded %s", served.spec.name)
        if done and self.batch.adapters is not None:
            self.batch.adapters.rehook()  # the deleted adapters' stacked weights go with them
