"""The one token generator: every front end (API, CLI chat/generate, bench, server) consumes it.

`Continuation` holds one generation's sampling and stop conditions (stop tokens, stop strings,
max_tokens, a full context) and turns each step's logits into Steps with the text they complete.
`generate_steps` drives one engine with it (prefill with cache reuse, then decode); the server's
scheduler drives many Continuations through one batched forward pass per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from phirt.sampling import Sampler


class StreamingTokenizer(Protocol):
    def stream_decoder(self, strip_leading_space: bool = False) -> StreamDecoder: ...


class StreamDecoder(Protocol):
    def push(self, token_id: int) -> str: ...
    def flush(self) -> str: ...


class Engine(Protocol):
    n_ctx: int
    tokens: list[int]

    def reuse_prefix(self, tokens: Sequence[int]) -> int: ...
    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray: ...


@dataclass
class Step:
    token: int | None  # None on the final step that only carries finish_reason / flushed text
    text: str  # text completed by this step (may be empty mid-character)
    finish_reason: str | None = None  # "stop", "length", "context" on the last step


def generate_steps(
    engine: Engine,
    tokenizer: StreamingTokenizer,
    prompt: Sequence[int],
    sampler: Sampler,
    max_tokens: int,
    stop_ids: Iterable[int] = (),
    stop_strings: Sequence[str] = (),
    strip_leading_space: bool = False,
) -> Iterator[Step]:
    """Yield generated tokens with their text until a stop condition; the last Step says why.

    strip_leading_space: drop the SentencePiece word-start space of the first token (a chat reply
    starts a new text; a continuation must keep it: "France is" + " Paris").
    """
    if not prompt:
        raise ValueError("the prompt is empty")
    done = engine.reuse_prefix(prompt)
    logits = engine.eval(prompt[done:])
    seq = Continuation(
        tokenizer,
        prompt,
        sampler,
        max_tokens,
        engine.n_ctx,
        stop_ids,
        stop_strings,
        strip_leading_space,
    )
    while True:
        yield from seq.advance(logits, len(engine.tokens))
        if seq.finished:
            return
        logits = engine.eval([seq.next_token])


class Continuation:
    """One generation's sampling and stop conditions, fed the logits of each step by whoever runs
    the model: generate_steps for one sequence, the server's scheduler for many at once.

    advance(logits, n_cached) samples a token and returns the Steps it completes (the last one
    carries finish_reason); until `finished`, the caller evaluates `next_token` and calls again.
    n_cached is how many tokens the sequence's KV cache holds, for the context-full stop.
    """

    def __init__(
        self,
        tokenizer: StreamingTokenizer,
        prompt: Sequence[int],
        sampler: Sampler,
        max_tokens: int,
        n_ctx: int,
        stop_ids: Iterable[int] = (),
        stop_strings: Sequence[str] = (),
        strip_leading_space: bool = False,
    ) -> None:
        self.sampler = sampler
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        self.stop_ids = set(stop_ids)
        self.history = list(prompt)
        self.decoder = tokenizer.stream_decoder(strip_leading_space=strip_leading_space)
        self.text = _StopStringFilter(stop_strings)
        self.n_generated = 0
        self.next_token: int | None = None
        self.finished = False

    def advance(self, logits: np.ndarray, n_cached: int) -> list[Step]:
        if self.finished:
            raise RuntimeError("advance() after the generation finished")
        if self.n_generated >= self.max_tokens:  # max_tokens == 0: nothing to sample
            return self._finish([], "length")
        token = self.sampler(logits, self.history)
        if token in self.stop_ids:
            return self._finish([], "stop")
        self.history.append(token)
        self.n_generated += 1
        piece, stopped = self.text.feed(self.decoder.push(token))
        if stopped:
            self.finished = True
            return [Step(token, piece, "stop")]
        steps = [Step(token, piece)]
        if self.n_generated == self.max_tokens:
            return self._finish(steps, "length")
        if n_cached >= self.n_ctx:
            return self._finish(steps, "context")
        self.next_token = token
        return steps

    def _finish(self, steps: list[Step], reason: str) -> list[Step]:
        self.finished = True
        self.next_token = None
        steps.append(Step(None, self.text.finish(self.decoder.flush()), reason))
        return steps


class _StopStringFilter:
    """Holds back text that may be the start of a stop string, and cuts at a complete one."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stops = [s for s in stop_strings if s]
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            return piece, False
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending = self.pending[:cut], ""
            return out, True
        hold = max((_overlap(self.pending, s) for s in self.stops), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out, False

    def finish(self, tail: str) -> str:
        out, _ = self.feed(tail)
        out += self.pending
        self.pending = ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
