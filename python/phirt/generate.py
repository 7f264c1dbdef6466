"""The one token generator: every text front end (the API, CLI chat and generate) consumes it.

`phirt bench` does not: it times prefill and decode apart, on fixed token ids with argmax
instead of sampling, so it calls the engine's `eval` itself (as llama-bench does), or times a
streaming backend's token stream directly.

`generate_steps` drives an engine that exposes logits (prefill with cache reuse, then decode) and
yields one Step per token with the text it completes; stop tokens, stop strings, max_tokens and a
full context end it. `token_steps` is that stop handling over any token stream, so a backend that
picks tokens itself (OpenVINO GenAI) ends and detokenizes exactly like the others.
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
    stop_ids = set(stop_ids)
    decoder = tokenizer.stream_decoder(strip_leading_space=strip_leading_space)
    text = _StopStringFilter(stop_strings)
    try:
        for _ in range(max_tokens):
            token = next(tokens, None)
            if token is None:
                yield Step(None, text.finish(decoder.flush()), exhausted)
                return
            if token in stop_ids:
                yield Step(None, text.finish(decoder.flush()), "stop")
                return
            piece, stopped = text.feed(decoder.push(token))
            if stopped:
                yield Step(token, piece, "stop")
                return
            yield Step(token, piece)
        yield Step(None, text.finish(decoder.flush()), "length")
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()


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
