"""Token sampling: greedy, temperature, top-k, top-p, min-p and repetition penalties, seeded.

Filters apply in llama.cpp's order (penalty, top-k, top-p, min-p, temperature), so the same
settings mean the same thing in both tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phirt.errors import InvalidArgumentError, check_float, check_int


@dataclass
class SamplingParams:
    temperature: float = 0.8  # <= 0: greedy
    top_k: int = 40  # <= 0: off
    top_p: float = 0.95  # >= 1: off
    min_p: float = 0.05  # <= 0: off
    repeat_penalty: float = 1.0  # 1: off
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from each recent token's logit
    frequency_penalty: float = 0.0  # OpenAI's: subtracted once per occurrence
    repeat_last_n: int = 64  # the window of recent tokens (prompt included) all three look at
    seed: int | None = None

    def __post_init__(self) -> None:
        # InvalidArgumentError (a ValueError) naming the option, for a wrong type or range
        self.temperature = check_float("temperature", self.temperature)
        self.top_k = check_int("top_k", self.top_k)
        self.top_p = check_float("top_p", self.top_p)
        self.min_p = check_float("min_p", self.min_p)
        self.repeat_penalty = check_float("repeat_penalty", self.repeat_penalty)
        self.repeat_last_n = check_int("repeat_last_n", self.repeat_last_n, 0)
        if self.seed is not None:
            self.seed = check_int("seed", self.seed, 0)
        if self.top_p <= 0.0 or self.top_p > 1.0:
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_p < 0.0 or self.min_p > 1.0:
            raise InvalidArgumentError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0.0:
            raise InvalidArgumentError(
                f"repeat_penalty must be positive, got {self.repeat_penalty}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = check_float(name, getattr(self, name))
            setattr(self, name, value)
            if not -2.0 <= value <= 2.0:
                raise InvalidArgumentError(f"{name} must be in [-2, 2], got {value}")

    @classmethod
    def greedy(cls) -> SamplingParams:
        return cls(temperature=0.0)


class Sampler:
    """Picks the next token from a logits row; keeps its own seeded random stream."""

    def __init__(self, params: SamplingParams | None = None) -> None:
        self.params = params or SamplingParams()
        self.rng = np.random.default_rng(self.params.seed)

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        logits = np.asarray(logits, dtype=np.float32)
        penalized = p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty
        if penalized and history and p.repeat_last_n != 0:
            recent = history[-p.repeat_last_n :]
            if p.repeat_penalty != 1.0:
                logits = apply_repeat_penalty(logits, recent, p.repeat_penalty)
            if p.presence_penalty or p.frequency_penalty:
                logits = apply_presence_frequency(
                    logits, recent, p.presence_penalty, p.frequency_penalty
                )
        if p.temperature <= 0.0:
            return int(np.argmax(logits))
        ids = np.arange(logits.shape[0])
        if 0 < p.top_k < logits.shape[0]:
            ids = np.argpartition(-logits, p.top_k - 1)[: p.top_k]
        order = ids[np.argsort(-logits[ids], kind="stable")]
        vals = logits[order].astype(np.float64)
        probs = _softmax(vals)
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            order, vals = order[:keep], vals[:keep]
            probs = _softmax(vals)
        if p.min_p > 0.0:
            keep_mask = probs >= p.min_p * probs[0]
            order, vals = order[keep_mask], vals[keep_mask]
        with np.errstate(over="ignore"):  # a tiny temperature: -inf below the best, exp gives 0
            probs = _softmax((vals - vals.max()) / p.temperature)
        return int(order[self.rng.choice(len(order), p=probs)])


def apply_repeat_penalty(logits: np.ndarray, recent: Sequence[int], penalty: float) -> np.ndarray:
    """Divide positive (multiply negative) logits of recently seen tokens by `penalty`. An extreme
    penalty takes a logit to the end of float32's range, never to inf (which softmax turns into
    NaN)."""
    out = logits.copy()
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    vals = out[ids].astype(np.float64)
    with np.errstate(over="ignore"):  # inf is clipped below
        penalized = np.where(vals > 0, vals / penalty, vals * penalty)
    limit = float(np.finfo(np.float32).max)
    out[ids] = np.clip(penalized, -limit, limit)
    return out


def apply_presence_frequency(
    logits: np.ndarray, recent: Sequence[int], presence: float, frequency: float
) -> np.ndarray:
    """Subtract presence + count · frequency from the logit of each token seen `count` > 0 times
    in `recent` (OpenAI's definition; llama.cpp applies it after the repeat penalty, as here)."""
    out = logits.copy()
    ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    out[ids] -= np.float32(presence) + counts.astype(np.float32) * np.float32(frequency)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
