"""The one token generator: every text front end (the API, CLI chat and generate, the server)
consumes it.

`Continuation` holds one generation's stop conditions (stop tokens, stop strings, max_tokens, a
full context) and turns each token into Steps with the text it completes; it samples the token
from logits (`advance`) or takes one a backend picked itself (`accept`). `generate_steps` drives
one engine that exposes logits (prefill with cache reuse, then decode); the server's scheduler
drives many Continuations through one batched forward pass per step; `token_steps` runs the same
stop handling over any token stream, so a backend that samples on its own (OpenVINO GenAI) ends
and detokenizes exactly like the others.

`phirt bench` does not use it: it times prefill and decode apart, on fixed token ids with argmax
instead of sampling, so it calls the engine's `eval` itself (as llama-bench does), or times a
streaming backend's token stream directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from phirt.errors import InvalidArgumentError
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
        raise InvalidArgumentError("the prompt is empty")
    yield from token_steps(
        sampled_tokens(engine, prompt, sampler),
        tokenizer,
        max_tokens,
        stop_ids,
        stop_strings,
        strip_leading_space,
    )


def sampled_tokens(engine: Engine, prompt: Sequence[int], sampler: Sampler) -> Iterator[int]:
    """Tokens phirt's sampler picks from an engine's logits: prefill (reusing the cached prefix),
    then one decode step per token pulled. A token is evaluated only when the next one is asked
    for, so the last token of a reply costs nothing; the stream ends when the cache is full."""
    done = engine.reuse_prefix(prompt)
    logits = engine.eval(prompt[done:])
    history = list(prompt)
    while True:
        token = sampler(logits, history)
        history.append(token)
        yield token
        if len(engine.tokens) >= engine.n_ctx:
            return
        logits = engine.eval([token])


def token_steps(
    tokens: Iterator[int],
    tokenizer: StreamingTokenizer,
    max_tokens: int,
    stop_ids: Iterable[int] = (),
    stop_strings: Sequence[str] = (),
    strip_leading_space: bool = False,
    exhausted: str = "context",
) -> Iterator[Step]:
    """Stop handling and detokenization over any token stream: phirt's sampler over logits
    (sampled_tokens) or a backend that picks tokens itself. `exhausted` is the finish reason when
    the stream ends on its own. The stream is closed when this generator finishes, which is how a
    streaming backend learns to stop."""
    seq = Continuation(
        tokenizer, (), None, max_tokens, None, stop_ids, stop_strings, strip_leading_space
    )
    try:
        if max_tokens <= 0:
            yield from seq.end("length")
            return
        while not seq.finished:
            token = next(tokens, None)
            yield from seq.end(exhausted) if token is None else seq.accept(token)
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()


class Continuation:
    """One generation's sampling and stop conditions, fed each step's logits by the server's
    scheduler (many sequences at once) or each token of a stream by token_steps (one sequence).

    advance(logits, n_cached) samples a token and returns the Steps it completes (the last one
    carries finish_reason); until `finished`, the caller evaluates `next_token` and calls again.
    n_cached is how many tokens the sequence's KV cache holds, for the context-full stop (n_ctx
    None: the caller's stream says when the context is full, token_steps).
    """

    def __init__(
        self,
        tokenizer: StreamingTokenizer,
        prompt: Sequence[int],
        sampler: Sampler | None,
        max_tokens: int,
        n_ctx: int | None,
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
        """Sample the next token from `logits` and take it (see accept)."""
        if self.finished:
            raise RuntimeError("advance() after the generation finished")
        if self.n_generated >= self.max_tokens:  # max_tokens == 0: nothing to sample
            return self._finish([], "length")
        if self.sampler is None:
            raise RuntimeError("a Continuation without a sampler takes tokens by accept()")
        return self.accept(self.sampler(logits, self.history), n_cached)

    def accept(self, token: int, n_cached: int = 0) -> list[Step]:
        """Take the next token (sampled here or by a backend) and return the Steps it completes."""
        if token in self.stop_ids:
            return self._finish([], "stop")
        self.history.append(token)
        self.n_generated += 1
        piece, stopped = self.text.feed(self.decoder.push(token))
        if stopped:
            self.finished = True
            self.next_token = None
            return [Step(token, piece, "stop")]
        steps = [Step(token, piece)]
        if self.n_generated >= self.max_tokens:
            return self._finish(steps, "length")
        if self.n_ctx is not None and n_cached >= self.n_ctx:
            return self._finish(steps, "context")
        self.next_token = token
        return steps

    def end(self, reason: str) -> list[Step]:
        """Finish now (the token stream ended): the held-back text and `reason`."""
        return self._finish([], reason)

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
