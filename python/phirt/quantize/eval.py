"""What quantization cost: the source and the quantized model on the same text.

Both models run on phirt's engine (``phirt.load(path).logits(tokens)``). The text is tokenized
once (with the quantized model's tokenizer) and cut into windows of ``ctx`` tokens; within each
window every token after the first is predicted from the ones before it. Reported:

- perplexity of each model: exp(mean negative log-likelihood of the actual next tokens);
- mean KL divergence KL(P_source || P_quantized) of the next-token distributions (nats/token);
- top-1 agreement: how often both models rank the same next token first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from phirt.errors import QuantizeError

__all__ = ["EvalReport", "evaluate", "log_softmax"]


@dataclass
class EvalReport:
    n_tokens: int  # predictions scored
    ppl_source: float
    ppl_quantized: float
    kl_mean: float
    kl_max: float
    top1_agreement: float

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("tokens scored", f"{self.n_tokens}"),
            ("perplexity (source)", f"{self.ppl_source:.4f}"),
            ("perplexity (quantized)", f"{self.ppl_quantized:.4f}"),
            ("perplexity change", f"{(self.ppl_quantized / self.ppl_source - 1) * 100:+.2f} %"),
            ("mean KL divergence", f"{self.kl_mean:.6f}"),
            ("max KL divergence", f"{self.kl_max:.6f}"),
            ("top-1 agreement", f"{self.top1_agreement * 100:.2f} %"),
        ]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def evaluate(
    source_gguf: str | os.PathLike[str],
    quantized_gguf: str | os.PathLike[str],
    text: str,
    ctx: int = 512,
    max_chunks: int = 8,
    threads: int | None = None,
    load: Callable[..., Any] | None = None,
) -> EvalReport:
    """Compare two GGUF files of the same model on ``text`` (see the module doc). ``load`` opens a
    model (default ``phirt.load``); it needs ``n_vocab``, ``tokenize(text)`` and
    ``logits(tokens) -> (len(tokens), n_vocab)``."""
    if load is None:
        import phirt

        load = phirt.load
    if ctx < 2:
        raise QuantizeError(f"eval context must be at least 2 tokens, got {ctx}")
    quant = load(quantized_gguf, n_ctx=ctx, n_threads=threads)
    ref = load(source_gguf, n_ctx=ctx, n_threads=threads)
    if ref.n_vocab != quant.n_vocab:
        raise QuantizeError(
            f"vocabularies differ ({ref.n_vocab} vs {quant.n_vocab} tokens)", quantized_gguf
        )
    tokens = quant.tokenize(text)
    if len(tokens) < 2:
        raise QuantizeError("the evaluation text is shorter than two tokens")
    nll_ref: list[np.ndarray] = []
    nll_q: list[np.ndarray] = []
    kls: list[np.ndarray] = []
    agree = 0
    for start in range(0, len(tokens) - 1, ctx):
        if len(kls) == max_chunks:
            break
        window = tokens[start : start + ctx]
        if len(window) < 2:
            break
        lp_ref = log_softmax(ref.logits(window))[:-1]
        lp_q = log_softmax(quant.logits(window))[:-1]
        targets = np.asarray(window[1:])
        rows = np.arange(len(targets))
        nll_ref.append(-lp_ref[rows, targets])
        nll_q.append(-lp_q[rows, targets])
        kls.append((np.exp(lp_ref) * (lp_ref - lp_q)).sum(axis=-1))
        agree += int((lp_ref.argmax(-1) == lp_q.argmax(-1)).sum())
    kl = np.concatenate(kls)
    return EvalReport(
        n_tokens=int(kl.size),
        ppl_source=float(np.exp(np.concatenate(nll_ref).mean())),
        ppl_quantized=float(np.exp(np.concatenate(nll_q).mean())),
        kl_mean=float(kl.mean()),
        kl_max=float(kl.max()),
        top1_agreement=agree / kl.size,
    )
