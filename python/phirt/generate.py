"""The one token generator: every front end (API, CLI chat/generate, bench) consumes it.

`generate_steps` drives the engine (prefill with cache reuse, then decode) and yields one Step per
token with the text it completes; stop tokens, stop strings, max_tokens and a full context end it.
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
    stop_ids = set(stop_ids)
    done = engine.reuse_prefix(prompt)
    logits = engine.eval(prompt[done:])
    history = list(prompt)
    decoder = tokenizer.stream_decoder(strip_leading_space=strip_leading_space)
    text = _StopStringFilter(stop_strings)
    for n in range(max_tokens):
        token = sampler(logits, history)
        if token in stop_ids:
            yield Step(None, text.finish(decoder.flush()), "stop")
            return
        history.append(token)
        piece, stopped = text.feed(decoder.push(token))
        if stopped:
            yield Step(token, piece, "stop")
            return
        last = n == max_tokens - 1
        if not last and len(engine.tokens) >= engine.n_ctx:
            yield Step(token, piece)
            yield Step(None, text.finish(decoder.flush()), "context")
            return
        yield Step(token, piece)
        if not last:
            logits = engine.eval([token])
    yield Step(None, text.finish(decoder.flush()), "length")


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
