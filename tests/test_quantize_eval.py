"""Quantization quality report (phirt.quantize.eval): perplexity, KL divergence, top-1 agreement.

The metric arithmetic is checked with llama.cpp as the engine (an adapter with the same
``tokenize`` / ``logits`` surface as phirt's Model) against torch's cross entropy and KL; phirt's
own numbers are held to llama.cpp's on the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_factory import requires_llama_cpp
from phirt.quantize import quantize
from phirt.quantize.eval import evaluate

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_quantize import TEXT, make_phi3  # noqa: E402  (checkpoint builders)

EVAL_TEXT = " ".join(TEXT * 6)
CTX = 48


class LlamaCppModel:
    """llama-cpp-python behind the surface evaluate() uses."""

    def __init__(self, path: str | Path, n_ctx: int, n_threads: int | None = None) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=n_threads or 2
        )
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=True)

    def logits(self, tokens: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    src = make_phi3(root / "hf", seed=11)
    return {t: Path(quantize(src, root / f"{t}.gguf", t).path) for t in ("f32", "q8_0", "q4_0")}


def _torch_reference(ref: Any, quant: Any, text: str) -> tuple[float, float, float, float]:
    """(ppl source, ppl quantized, mean KL, top-1) computed with torch on the same windows."""
    tokens = quant.tokenize(text)
    nll_r, nll_q, kls, agree, n = [], [], [], 0, 0
    for start in range(0, len(tokens) - 1, CTX):
        window = tokens[start : start + CTX]
        if len(window) < 2:
            break
        lr = torch.tensor(ref.logits(window), dtype=torch.float64)[:-1]
        lq = torch.tensor(quant.logits(window), dtype=torch.float64)[:-1]
        target = torch.tensor(window[1:])
        nll_r.append(torch.nn.functional.cross_entropy(lr, target, reduction="none"))
        nll_q.append(torch.nn.functional.cross_entropy(lq, target, reduction="none"))
        pr, pq = torch.log_softmax(lr, -1), torch.log_softmax(lq, -1)
        kls.append(torch.nn.functional.kl_div(pq, pr, log_target=True, reduction="none").sum(-1))
        agree += int((lr.argmax(-1) == lq.argmax(-1)).sum())
        n += len(target)
    return (
        float(torch.cat(nll_r).mean().exp()),
        float(torch.cat(nll_q).mean().exp()),
        float(torch.cat(kls).mean()),
        agree / n,
    )


@requires_llama_cpp
@pytest.mark.llamacpp
def test_metrics_match_torch(files: dict[str, Path]) -> None:
    report = evaluate(
        files["f32"], files["q4_0"], EVAL_TEXT, ctx=CTX, max_chunks=1000, load=LlamaCppModel
    )
    ref = LlamaCppModel(files["f32"], CTX)
    quant = LlamaCppModel(files["q4_0"], CTX)
    ppl_r, ppl_q, kl, top1 = _torch_reference(ref, quant, EVAL_TEXT)
    assert report.ppl_source == pytest.approx(ppl_r, rel=1e-6)
    assert report.ppl_quantized == pytest.approx(ppl_q, rel=1e-6)
    assert report.kl_mean == pytest.approx(kl, rel=1e-4, abs=1e-9)
    assert report.top1_agreement == pytest.approx(top1)
    assert report.n_tokens > 2 * CTX


@requires_llama_cpp
@pytest.mark.llamacpp
def test_same_file_has_zero_divergence_and_kl_grows_as_bits_fall(files: dict[str, Path]) -> None:
    same = evaluate(files["f32"], files["f32"], EVAL_TEXT, ctx=CTX, load=LlamaCppModel)
    assert same.kl_mean == pytest.approx(0.0, abs=1e-9)
    assert same.top1_agreement == 1.0
    assert same.ppl_quantized == pytest.approx(same.ppl_source)
    q8 = evaluate(files["f32"], files["q8_0"], EVAL_TEXT, ctx=CTX, load=LlamaCppModel)
    q4 = evaluate(files["f32"], files["q4_0"], EVAL_TEXT, ctx=CTX, load=LlamaCppModel)
    assert 0 < q8.kl_mean < q4.kl_mean
    assert q8.top1_agreement >= q4.top1_agreement


@requires_llama_cpp
@pytest.mark.llamacpp
def test_phirt_eval_agrees_with_llama_cpp(files: dict[str, Path]) -> None:
    ours = evaluate(files["f32"], files["q4_0"], EVAL_TEXT, ctx=CTX)
    ref = evaluate(files["f32"], files["q4_0"], EVAL_TEXT, ctx=CTX, load=LlamaCppModel)
    assert ours.n_tokens == ref.n_tokens
    assert ours.ppl_source == pytest.approx(ref.ppl_source, rel=1e-2)
    assert ours.ppl_quantized == pytest.approx(ref.ppl_quantized, rel=1e-2)
    assert ours.kl_mean == pytest.approx(ref.kl_mean, rel=0.2, abs=1e-4)


def test_cli_eval_quant_prints_table(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from phirt.cli import main

    text = tmp_path / "text.txt"
    text.write_text(EVAL_TEXT, encoding="utf-8")
    args = ["eval-quant", str(files["f32"]), str(files["q4_0"]), str(text), "--ctx", str(CTX)]
    args += ["--chunks", "3"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    # every figure of the same evaluation through the API, on its row
    report = evaluate(files["f32"], files["q4_0"], EVAL_TEXT, ctx=CTX, max_chunks=3)
    assert report.n_tokens == 3 * (CTX - 1)
    for label, value in report.rows():
        assert any(label in line and value in line for line in lines), (label, value, lines)
