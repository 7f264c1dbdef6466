"""onnxruntime-genai as the reference on an ONNX folder: per-position logits and greedy decoding,
fed the same token ids as phirt (no BOS added: onnxruntime-genai's tokenizer adds none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def og_model(folder: Path) -> Any:
    import onnxruntime_genai as og

    return og.Model(str(folder))


def _generator(model: Any, max_length: int) -> Any:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    # a windowed KV cache needs room for the whole window whatever the prompt's length
    params.set_search_options(max_length=max(max_length, 128), do_sample=False)
    return og.Generator(model, params)


def og_logits(model: Any, tokens: list[int], *, one_by_one: bool) -> np.ndarray:
    """Logits (n_tokens, n_vocab) from onnxruntime-genai: the tokens appended one at a time (its
    decode path, a row per position), or all at once (its prefill path, the last row only)."""
    gen = _generator(model, len(tokens) + 1)
    if not one_by_one:
        gen.append_tokens(np.array([tokens], dtype=np.int32))
        return np.array(gen.get_logits()[0, -1:], dtype=np.float32)
    rows = []
    for t in tokens:
        gen.append_tokens(np.array([[t]], dtype=np.int32))
        rows.append(np.array(gen.get_logits()[0, -1], dtype=np.float32))
    return np.stack(rows)


def og_greedy(model: Any, tokens: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
    """n greedy tokens after the prompt, and the logits each was picked from."""
    gen = _generator(model, len(tokens) + n)
    gen.append_tokens(np.array([tokens], dtype=np.int32))
    out: list[int] = []
    steps: list[np.ndarray] = []
    for _ in range(n):
        steps.append(np.array(gen.get_logits()[0, -1], dtype=np.float32))
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out, steps
