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


def phirt_greedy(model: Any, tokens: list[int], n: int) -> tuple[np.ndarray, list[int], list]:
    """(prompt logits, n greedy tokens, the logits each token was picked from) from a
    ``phirt.load``-ed model."""
    logits = model.logits(tokens)
    out: list[int] = []
    steps: list[np.ndarray] = []
    last = logits[-1]
    for _ in range(n):
        steps.append(last)
        out.append(int(np.argmax(last)))
        last = model.engine.eval([out[-1]])
    return logits, out, steps


def assert_same_greedy(
    got: list[int], ref: list[int], ref_steps: list, tol: float, got_steps: list | None = None
) -> None:
    """Token for token the same, up to the first step where the two engines part fairly; the
    comparison stops there. A parting is fair when it is a near-tie within the logit tolerance
    ``tol`` in llama.cpp's logits (phirt's pick within ``tol`` of llama.cpp's best) and, when
    phirt's step logits are given, in phirt's too (llama.cpp's pick within ``tol`` of phirt's
    best): both engines then hold the other's choice as good as their own, up to the float-order
    noise the logit comparison already allows. A pick that either engine ranks more than ``tol``
    below its best is a real difference and fails."""
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        if g == r:
            continue
        ref_behind = float(ref_steps[i].max() - ref_steps[i][g])
        got_behind = float(got_steps[i].max() - got_steps[i][r]) if got_steps else 0.0
        assert ref_behind <= tol and got_behind <= tol, (
            f"greedy continuations differ at step {i}: phirt {g}, llama.cpp {r} (phirt's pick is "
            f"{ref_behind:.3g} below llama.cpp's best, llama.cpp's {got_behind:.3g} below "
            f"phirt's; tolerance {tol:.3g})\nphirt:     {got}\nllama.cpp: {ref}"
        )
        return
