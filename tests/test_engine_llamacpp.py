"""phirt against llama.cpp (llama-cpp-python) on the same GGUF files: logits and greedy tokens.

Tolerance: both engines quantize activations to the same 8-bit blocks and use integer block dot
products, so what differs is float summation order (SIMD lanes, threading) and the exp
implementation: ~1e-7 relative. Rarely, such a difference pushes one activation across an 8-bit
rounding boundary, which moves that position's logits by up to ~2 % of their range on these tiny
random models (phirt's own scalar and SIMD paths differ from each other the same way).
Tolerance: max |Δlogit| ≤ 0.03 · (max |logit| + 1) and mean |Δlogit| ≤ 5e-3 · (max |logit| + 1);
observed means are ≤ 2e-3 · scale, while a real error (rope, norm, GQA mapping) is O(0.1 · scale).

Greedy continuations must be identical token for token, up to the first step where the engines
part fairly: a near-tie within the logit tolerance in both engines' logits (each engine's pick within
the tolerance of the other's best; tests/greedy.py). Past such a step the contexts differ, so the
comparison stops. This matters most on the AVX2 path, whose rounding differs from AVX-512's and from
llama.cpp's: on the Q4_K_M Phi-4-mini-style fixture llama.cpp holds three tokens within 0.1 of each
other at step 19 (tolerance 0.78) and phirt's AVX2 path picks the third. The unquantized twin is no
judge there: it prefers llama.cpp's pick by 1.85, but quantization itself moves that very gap by
1.75 and the logits by up to 11, so it cannot arbitrate between two faithful computations of the
same quantized model.
"""

from __future__ import annotations

import numpy as np
import pytest

from greedy import assert_same_greedy, llama_cpp_greedy, phirt_greedy
from model_factory import requires_llama_cpp

pytestmark = [requires_llama_cpp, pytest.mark.llamacpp]

PROMPT_LEN = 64
CONTINUATION = 32
N_CTX = 512


def prompt_tokens(seed: int = 0) -> list[int]:
    # Ordinary vocabulary ids (3 .. 31999 are text pieces in the Phi-3 vocabulary).
    return np.random.default_rng(seed).integers(3, 32000, size=PROMPT_LEN).tolist()


# llama.cpp's settings for each phirt KV cache type: a q8_0 cache needs its flash-attention path.
LLAMA_KV = {"f16": {}, "q8_0": {"type_k": 8, "type_v": 8, "flash_attn": True}}


def assert_same(path, n_ctx: int = N_CTX, seed: int = 0, kv_type: str = "f16") -> None:
    import llama_cpp

    import phirt

    tokens = prompt_tokens(seed)
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=2,
        n_batch=512,
        logits_all=True,
        verbose=False,
        **LLAMA_KV[kv_type],
    )
    try:
        ref_logits, ref_tokens, ref_steps = llama_cpp_greedy(llm, tokens, CONTINUATION)
    finally:
        llm.close()
    model = phirt.load(path, n_ctx=n_ctx, n_threads=2, kv_type=kv_type)
    got_logits, got_tokens, got_steps = phirt_greedy(model, tokens, CONTINUATION)
    assert got_logits.shape == ref_logits.shape
    scale = np.abs(ref_logits).max() + 1.0
    diff = np.abs(got_logits - ref_logits)
    assert diff.max() <= 0.03 * scale, f"max |Δlogit| {diff.max():.3g} > {0.03 * scale:.3g}"
    assert diff.mean() <= 5e-3 * scale, f"mean |Δlogit| {diff.mean():.3g} > {5e-3 * scale:.3g}"
    assert_same_greedy(got_tokens, ref_tokens, ref_steps, 0.03 * scale, got_steps)


QTYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_K_M"]


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("variant", ["plain", "gqa", "partial_rotary_tied"])
def test_phi3_matches_llama_cpp(models, qtype: str, variant: str) -> None:
    assert_same(models.phi3(qtype, variant))


@pytest.mark.parametrize("qtype", ["F32", "Q4_0", "Q4_K_M"])
def test_phi3_sliding_window_within_window_matches_llama_cpp(models, qtype: str) -> None:
    # llama.cpp 0.3.36 ignores Phi-3's sliding window; inside the window both must agree.
    assert_same(models.phi3(qtype, "swa", sliding_window=PROMPT_LEN + CONTINUATION + 1))


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_K_M"])
def test_phi3_longrope_past_original_context_matches_llama_cpp(models, qtype: str) -> None:
    # The fixture's original context is 256 tokens: n_ctx 512 selects the long factors.
    assert_same(models.phi3(qtype, "longrope"), n_ctx=512)


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("variant", ["plain", "fused_qkv"])
def test_phi2_matches_llama_cpp(models, qtype: str, variant: str) -> None:
    assert_same(models.phi2(qtype, variant))


@pytest.mark.parametrize("qtype", QTYPES + ["Q4_1", "Q5_0", "Q5_1", "Q6_K", "Q5_K_M"])
def test_llama_matches_llama_cpp(models, qtype: str) -> None:
    assert_same(models.llama(qtype, "gqa"))


@pytest.mark.parametrize(
    ("arch", "qtype", "variant"),
    [
        ("phi3", "F32", "gqa"),
        ("phi3", "Q8_0", "plain"),
        ("phi3", "Q4_K_M", "partial_rotary_tied"),
        ("phi3", "Q4_0", "longrope"),
        ("llama", "Q4_0", "gqa"),
        ("llama", "Q4_1", "gqa"),
    ],
)
def test_q8_0_kv_cache_matches_llama_cpp(models, arch: str, qtype: str, variant: str) -> None:
    """kv_type q8_0 against llama.cpp with type_k = type_v = q8_0 (its flash-attention path):
    the same quantized cache, integer score dots and f32 softmax weights (~1e-7 apart)."""
    assert_same(getattr(models, arch)(qtype, variant), kv_type="q8_0")
