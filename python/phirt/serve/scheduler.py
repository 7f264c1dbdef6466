"""The server's scheduler: HTTP handlers submit Jobs; one thread runs the model for all of them.

BatchScheduler (the native engine) does continuous batching: up to `parallel` sequences, each in
a KV cache slot of its own. Every step evaluates one prefill chunk of the oldest sequence still
reading its prompt (at most `prefill_chunk` tokens, so a long prompt delays the others by one chunk
per step, not by its whole length), then one decode pass over every sequence that is generating:
one row each through the weights, read once for all. Where every layer matrix computes each
row alone whatever else is in the call (Q4_0 in the interleaved layout:
NativeEngine.layer_rows_invariant), the chunk and the decode rows go through one pass, so a
joining prompt costs no extra weight read. Jobs join between steps and leave as soon as they
finish or their client goes away. Decode passes are batch-invariant (NativeEngine.eval_batch)
and a prompt's chunks do not depend on who else is running, so a request's tokens are the same
alone or in a crowd (docs/design.md, "Serving"). A freed slot keeps the start of its cache that
a later prompt computes to the same bits (_Slot, BatchScheduler._keepable), and a request takes the
free slot holding most of its prompt: a chat's next turn skips the history it resends.

SerialScheduler runs any other backend (phirt.load(..., device=...)) one request at a time through
the Model API.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phirt.generate import Continuation, Step
from phirt.sampling import Sampler, SamplingParams

log = logging.getLogger("phirt.serve")


@dataclass
class GenRequest:
    """What one HTTP request asks the model for, already tokenized."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: off; n: the chosen token's and the n likeliest
    reply: bool = False  # a chat reply: drop the first token's word-start space


@dataclass
class Piece:
    """Generated text; token is None for text flushed at the end (a held-back stop prefix)."""

    text: str
    token: int | None = None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


@dataclass
class Finish:
    reason: str  # "stop" or "length" (a full context is "length", as OpenAI has no other)
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose keys and values a slot already held


@dataclass
class Failure:
    message: str


Event = Piece | Finish | Failure


class Busy(Exception):
    """No slot is free and the queue is full: the client should retry later (HTTP 503)."""


class Job:
    """A request in flight; its events reach the HTTP handler through an asyncio queue."""

    def __init__(self, request: GenRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self.cancelled = False  # set by the handler when its client goes away

    def emit(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop closed (server shutting down): nobody listens
            pass

    def cancel(self) -> None:
        self.cancelled = True


def logprobs_of(
    logits: np.ndarray, token: int, n_top: int
) -> tuple[float, list[tuple[int, float]]]:
    """log softmax of the model's logits (before penalties, top-k/p and temperature: the model's
    own distribution, as OpenAI reports it): the token's value and the n_top likeliest."""
    x = logits.astype(np.float64)
    x -= x.max()
    lse = np.log(np.exp(x).sum())
    top: list[tuple[int, float]] = []
    if n_top > 0:
        ids = np.argpartition(-x, n_top - 1)[:n_top]
        ids = ids[np.argsort(-x[ids], kind="stable")]
        top = [(int(i), float(x[i] - lse)) for i in ids]
    return float(x[token] - lse), top


class _Slot:
    """A KV cache and the tokens at its first positions that a later prompt may take as they are
    (BatchScheduler._keepable): a chat's next turn resends its history, which then costs nothing."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.kept: list[int] = []

    def shared(self, prompt: list[int]) -> int:
        n, limit = 0, min(len(self.kept), len(prompt))
        while n < limit and self.kept[n] == prompt[n]:
            n += 1
        return n


class _Sequence:
    """A job in a slot: its KV cache, how far it is, and its Continuation."""

    def __init__(self, job: Job, slot: _Slot, reuse: int, tokenizer: Any, n_ctx: int) -> None:
        r = job.request
        self.job = job
        self.slot = slot
        self.cache = slot.cache
        self.cached = reuse  # prompt tokens already in the slot
        self.pos = reuse  # tokens in the cache
        self.history = list(r.prompt)  # history[:pos] is in the cache, history[pos:] pending
        self.pending = self.history[reuse:]  # tokens to evaluate next
        self.prefilling = True
        self.cont = Continuation(
            tokenizer,
            r.prompt,
            Sampler(r.sampling),
            r.max_tokens,
            n_ctx,
            stop_ids=tokenizer.eot_ids,
            stop_strings=r.stop,
            strip_leading_space=r.reply,
        )

    def advance(self, logits: np.ndarray) -> bool:
        """Sample from this step's logits and emit what it completes; True when finished."""
        r = self.job.request
        step: Step
        for step in self.cont.advance(logits, self.pos):
            if step.token is not None:
                piece = Piece(step.text, step.token)
                if r.logprobs is not None:
                    piece.logprob, piece.top_logprobs = logprobs_of(logits, step.token, r.logprobs)
                self.job.emit(piece)
            elif step.text:
                self.job.emit(Piece(step.text))
            if step.finish_reason is not None:
                reason = "length" if step.finish_reason == "context" else step.finish_reason
                self.job.emit(Finish(reason, len(r.prompt), self.cont.n_generated, self.cached))
        if self.cont.finished:
            return True
        self.pending = [self.cont.next_token]
        self.history.append(self.cont.next_token)
        return False


class BatchScheduler:
    """Continuous batching over a NativeEngine (see the module docstring)."""

    supports_logprobs = True

    def __init__(
        self, engine: Any, parallel: int, max_queue: int, prefill_chunk: int = 128
    ) -> None:
        if parallel < 1 or max_queue < 0 or prefill_chunk < 1:
            raise ValueError("parallel and prefill_chunk must be >= 1, max_queue >= 0")
        self.engine = engine
        self.n_ctx = engine.n_ctx
        self.parallel = parallel
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self._free = [_Slot(engine.new_cache()) for _ in range(parallel)]
        self._active: list[_Sequence] = []  # in admission order: the oldest prefills first
        self._waiting: deque[Job] = deque()
        self._cancelled = 0  # requests dropped because their client went away
        self._fusing: bool | None = None  # prompt chunks share the decode pass (_fuse)
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="phirt-scheduler", daemon=True)
        self._thread.start()

    # -- called from the HTTP side -------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closing:
                raise Busy("the server is shutting down")
            if len(self._active) + len(self._waiting) >= self.parallel + self.max_queue:
                raise Busy(
                    f"server busy: all {self.parallel} slots are generating and "
                    f"{len(self._waiting)} requests are waiting (--parallel {self.parallel}, "
                    f"--queue {self.max_queue}); retry later"
                )
            self._waiting.append(job)
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        with self._cond:
            busy = len(self._active)
            return {
                "slots_idle": self.parallel - busy,
                "slots_processing": busy,
                "queued": len(self._waiting),
                "cancelled": self._cancelled,
            }

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    # -- the scheduler thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._drop_cancelled()
                self._admit()
                while not self._active and not self._closing:
                    self._cond.wait()
                    self._drop_cancelled()
                    self._admit()
                if self._closing:
                    for job in [*self._waiting, *(s.job for s in self._active)]:
                        job.emit(Failure("the server is shutting down"))
                    return
            self._step()

    def _drop_cancelled(self) -> None:
        waiting = deque(j for j in self._waiting if not j.cancelled)
        self._cancelled += len(self._waiting) - len(waiting)
        self._waiting = waiting
        for seq in [s for s in self._active if s.job.cancelled]:
            self._release(seq)
            self._cancelled += 1

    def _admit(self) -> None:
        while self._waiting and self._free:
            job = self._waiting.popleft()
            prompt = job.request.prompt
            # the free slot that already holds most of this prompt; else the one holding least,
            # so that other conversations' histories stay for their next turn
            slot = max(self._free, key=lambda s: (self._reusable(s, prompt), -len(s.kept)))
            self._free.remove(slot)
            reuse = self._reusable(slot, prompt)
            self._active.append(_Sequence(job, slot, reuse, self.engine.tokenizer, self.n_ctx))

    def _reusable(self, slot: _Slot, prompt: list[int]) -> int:
        """Prompt tokens a sequence may take from the slot: the shared prefix, less at least the
        last token (its logits are needed), and where rows are not invariant only whole chunks
        (the rest of the prompt must be cut on the grid it is cut on alone: _keepable)."""
        n = min(slot.shared(prompt), len(prompt) - 1)
        if n and not self._fuse():
            n -= n % self.prefill_chunk
        return n

    def _keepable(self, seq: _Sequence) -> list[int]:
        """The tokens at the start of seq's cache that any later prompt computes to the same bits.
        Where every layer matrix gives each row what it gives it alone
        (NativeEngine.layer_rows_invariant), that is every token in the cache: a row's keys and
        values then depend on neither its chunk nor its batch. Elsewhere a prompt chunk's rows
        depend on the chunk (the packed GEMM or the GEMV by its size), so only the prompt's
        whole chunks are kept; they sit on the grid of prefill_chunk multiples from position 0
        that every prompt is cut on, so a later prompt that takes them goes on cutting its own
        chunks where it would have alone."""
        if seq.pos == 0:
            return []
        if self._fuse():
            return seq.history[: seq.pos]
        whole = min(seq.pos, len(seq.job.request.prompt)) // self.prefill_chunk
        return seq.history[: whole * self.prefill_chunk]

    def _release(self, seq: _Sequence) -> None:
        self._active.remove(seq)
        seq.slot.kept = self._keepable(seq)
        self._free.append(seq.slot)  # positions past `kept` are overwritten before being read

    def _finish(self, seqs: list[_Sequence], run: Callable[[], list[bool]]) -> None:
        """Run a model step for seqs; a failure fails those jobs, never the server."""
        try:
            done = run()
        except Exception as exc:
            log.exception("model step failed")
            done = [True] * len(seqs)
            for seq in seqs:
                seq.job.emit(Failure(f"generation failed: {type(exc).__name__}: {exc}"))
                seq.pos = 0  # the step may have written part of its caches: keep none of them
        with self._cond:
            for seq, finished in zip(seqs, done, strict=True):
                if finished and seq in self._active:
                    self._release(seq)

    def _step(self) -> None:
        prefilling = next((s for s in self._active if s.prefilling), None)
        decoding = [s for s in self._active if not s.prefilling and not s.job.cancelled]
        if prefilling is not None and decoding and self._fuse():
            # one pass for the chunk and the decode rows: the weights are read once
            seqs = [prefilling, *decoding]
            self._finish(seqs, lambda: self._fused(prefilling, decoding))
            return
        if prefilling is not None:
            self._finish([prefilling], lambda: [self._prefill(prefilling)])
        if decoding:
            self._finish(decoding, lambda: self._decode(decoding))

    def _fuse(self) -> bool:
        """Whether a prompt chunk may share the decode pass (NativeEngine.layer_rows_invariant:
        it then gets what it gets alone). Asked once: it is only asked once a forward pass has
        run (a sequence is decoding, or has left with tokens in its cache), so every layer matrix
        has settled its layout (chosen at first use)."""
        if self._fusing is None:
            self._fusing = self.engine.layer_rows_invariant()
        return self._fusing

    def _prefill_span(self, seq: _Sequence) -> tuple[Any, int, list[int]]:
        return seq.cache, seq.pos, seq.pending[: self.prefill_chunk]

    def _prefilled(self, seq: _Sequence, n: int, logits: np.ndarray) -> bool:
        """Account for n prompt tokens evaluated; sample when the prompt is complete."""
        seq.pos += n
        del seq.pending[:n]
        if seq.pending:
            return False
        seq.prefilling = False
        return seq.advance(logits)

    def _prefill(self, seq: _Sequence) -> bool:
        span = self._prefill_span(seq)
        logits = self.engine.eval_batch([span])[0]
        return self._prefilled(seq, len(span[2]), logits)

    def _fused(self, prefilling: _Sequence, decoding: list[_Sequence]) -> list[bool]:
        span = self._prefill_span(prefilling)
        decode_spans = [(s.cache, s.pos, s.pending) for s in decoding]
        logits = self.engine.eval_batch([span, *decode_spans], batch_invariant=True)
        first = self._prefilled(prefilling, len(span[2]), logits[0])
        return [first, *self._decoded(decoding, logits[1:])]

    def _decode(self, seqs: list[_Sequence]) -> list[bool]:
        spans = [(s.cache, s.pos, s.pending) for s in seqs]
        return self._decoded(seqs, self.engine.eval_batch(spans, batch_invariant=True))

    def _decoded(self, seqs: list[_Sequence], logits: np.ndarray) -> list[bool]:
        done = []
        for seq, row in zip(seqs, logits, strict=True):
            seq.pos += 1
            try:
                done.append(seq.advance(row))
            except Exception as exc:  # this sequence's sampling, not the batch's forward
                log.exception("sampling failed")
                seq.job.emit(Failure(f"sampling failed: {type(exc).__name__}: {exc}"))
                done.append(True)
        return done


class SerialScheduler:
    """One request at a time through phirt's Model API: any backend phirt.load returns."""

    supports_logprobs = False

    def __init__(self, model: Any, max_queue: int) -> None:
        self.model = model
        self.n_ctx = model.n_ctx
        self.parallel = 1
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._running = 0
        self._cancelled = 0  # requests dropped because their client went away
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="phirt-serial", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closing:
                raise Busy("the server is shutting down")
            if self._running + len(self._waiting) >= 1 + self.max_queue:
                raise Busy(
                    f"server busy: one request is generating and {len(self._waiting)} are "
                    f"waiting (this backend runs one at a time; --queue {self.max_queue}); "
                    "retry later"
                )
            self._waiting.append(job)
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "slots_idle": 1 - self._running,
                "slots_processing": self._running,
                "queued": len(self._waiting),
                "cancelled": self._cancelled,
            }

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if self._closing:
                    for job in self._waiting:
                        job.emit(Failure("the server is shutting down"))
                    return
                job = self._waiting.popleft()
                if job.cancelled:
                    self._cancelled += 1
                    continue
                self._running = 1
            try:
                self._generate(job)
            except Exception as exc:
                log.exception("generation failed")
                job.emit(Failure(f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                with self._cond:
                    self._running = 0

    def _generate(self, job: Job) -> None:
        r, p = job.request, job.request.sampling
        pieces = self.model.generate(
            r.prompt,
            max_tokens=r.max_tokens,
            stream=True,
            stop=r.stop,
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            repeat_penalty=p.repeat_penalty,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            seed=p.seed,
        )
        first = r.reply
        for text in pieces:
            if job.cancelled:
                pieces.close()
                with self._cond:
                    self._cancelled += 1
                return
            if first and text:
                text, first = text.removeprefix(" "), False
            job.emit(Piece(text))
        stats = self.model.last_stats
        reason = "length" if stats.finish_reason in ("length", "context") else "stop"
        job.emit(Finish(reason, len(r.prompt), stats.generated_tokens))
