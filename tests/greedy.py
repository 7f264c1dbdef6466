"""Greedy decoding with llama.cpp (llama-cpp-python) and with phirt, and the comparison of the two
that the engine tests share (test_engine_llamacpp.py explains the tolerance)."""

from __future__ import annotations

from typing import Any

import numpy as np


def llama_cpp_greedy(llm: Any, tokens: list[int], n: int) -> tuple[np.ndarray, list[int], list]:
    """(prompt logits, n greedy tokens, the logits each token was picked from) from a
    ``llama_cpp.Llama`` made with ``logits_all=True``; its cache is reset first."""
    llm.reset()
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    out: list[int] = []
    steps: list[np.ndarray] = []
    for _ in range(n):
        steps.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32))
        out.append(int(np.argmax(steps[-1])))
        llm.eval([out[-1]])
    return logits, out, steps


def phirt_greedy(model: Any, tokens: list[int], n: int) -> tuple[np.ndarray, list[int]]:
    """(prompt logits, n greedy tokens) from a ``phirt.load``-ed model."""
    logits = model.logits(tokens)
    out: list[int] = []
    last = logits[-1]
    for _ in range(n):
        out.append(int(np.argmax(last)))
        last = model.engine.eval([out[-1]])
    return logits, out


def assert_same_greedy(got: list[int], ref: list[int], ref_steps: list, tol: float) -> None:
    """Token for token the same, except that at the first difference llama.cpp's top-1/top-2
    margin may be within ``tol`` and phirt picked its runner-up; the comparison stops there."""
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        if g == r:
            continue
        top2 = np.sort(ref_steps[i])[-2:]
        margin = float(top2[1] - top2[0])
        runner_up = int(np.argsort(ref_steps[i])[-2])
        assert margin <= tol and g == runner_up, (
            f"greedy continuations differ at step {i}: phirt {g}, llama.cpp {r} "
            f"(llama.cpp top-2 margin {margin:.3g}, tolerance {tol:.3g})\n"
            f"phirt:     {got}\nllama.cpp: {ref}"
        )
        return
