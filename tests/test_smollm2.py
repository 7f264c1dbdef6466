"""The real SmolLM2-135M-Instruct (Q4_1) against llama.cpp on the same file."""

from __future__ import annotations

import numpy as np
import pytest

from greedy import assert_same_greedy, llama_cpp_greedy, phirt_greedy
from model_factory import requires_llama_cpp
from phirt.runtime import GenerationStats
from smollm2 import smollm2_path

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
    "List of prime numbers: 2, 3, 5,",
]
CONTINUATION = 32


@pytest.fixture(scope="module")
def model():
    import phirt

    return phirt.load(smollm2_path(), n_ctx=512, n_threads=2)


@pytest.fixture(scope="module")
def reference():
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(
        model_path=str(smollm2_path()), n_ctx=512, n_threads=2, logits_all=True, verbose=False
    )
    yield llm
    llm.close()


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_continuation_matches_llama_cpp(model, reference, prompt: str) -> None:
    tokens = reference.tokenize(prompt.encode(), add_bos=True, special=True)
    assert model.tokenize(prompt) == tokens
    ref_logits, ref_tokens, ref_steps = llama_cpp_greedy(reference, tokens, CONTINUATION)
    logits, got, got_steps = phirt_greedy(model, tokens, CONTINUATION)
    # 30 layers of 8-bit activations amplify float summation-order noise: phirt's own scalar,
    # AVX2 and AVX-512 paths differ from each other by up to ~4 % of the logit range (max) and
    # ~0.5 % (mean) on these prompts, exactly as much as they differ from llama.cpp. The bounds
    # are that spread plus headroom; a real bug (wrong rope, norm, GQA) moves logits by O(scale).
    scale = float(np.abs(ref_logits).max()) + 1.0
    diff = np.abs(logits - ref_logits)
    assert diff.max() <= 0.06 * scale
    assert diff.mean() <= 0.01 * scale
    assert (logits.argmax(axis=1) == ref_logits.argmax(axis=1)).all()
    assert_same_greedy(got, ref_tokens, ref_steps, 0.06 * scale, got_steps)


def test_chat_reply_is_coherent_english(model) -> None:
    reply = model.chat(
        [{"role": "user", "content": "Give me three tips for staying healthy."}],
        max_tokens=48,
        temperature=0.0,
        repeat_penalty=1.1,
    )
    words = [w.strip(".,:;!?'\"()").lower() for w in reply.split()]
    words = [w for w in words if w]
    assert len(words) >= 20, reply
    # real words, not token soup: alphabetic, common function words present, little repetition
    assert sum(w.isalpha() for w in words) >= 0.8 * len(words), reply
    assert len({"the", "and", "to", "a", "your", "of", "for"} & set(words)) >= 3, reply
    assert max(words.count(w) for w in set(words)) <= 0.2 * len(words), reply
    assert any(w in words for w in ("water", "diet", "exercise", "sleep", "hydrated")), reply


def test_generate_streams_the_same_text(model) -> None:
    # Each call starts from an empty cache: a second call would reuse the cached prompt and
    # evaluate its last token alone (GEMV instead of the batch GEMM), a float-order difference
    # that can flip a near-tie 30 layers later.
    model.engine.reset()
    text = model.generate("The capital of France is", max_tokens=16, temperature=0.0)
    model.engine.reset()
    pieces = list(
        model.generate("The capital of France is", max_tokens=16, temperature=0.0, stream=True)
    )
    assert "".join(pieces) == text
    assert len(pieces) > 1


def test_decode_rate_counts_the_steps_after_the_first_token() -> None:
    # the first token comes out of the prefill: n tokens are n - 1 decode steps
    assert GenerationStats(generated_tokens=11, decode_seconds=2.0).decode_tokens_per_second == 5.0
    assert GenerationStats(generated_tokens=1, decode_seconds=0.0).decode_tokens_per_second == 0.0


def test_seeded_sampling_is_reproducible(model) -> None:
    kw = dict(max_tokens=20, temperature=0.9, top_k=40, top_p=0.95, seed=1234)
    model.engine.reset()  # both from an empty cache (see test_generate_streams_the_same_text)
    first = model.generate("Tell me a story:", **kw)
    model.engine.reset()
    assert model.generate("Tell me a story:", **kw) == first


def test_chat_turn_reuses_the_cache(model) -> None:
    messages = [{"role": "user", "content": "Name a fruit."}]
    first = model.chat(messages, max_tokens=8, temperature=0.0)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "Another?"}]
    full = model.chat_tokens(messages)
    cached_before = list(model.engine.tokens)
    shared = 0
    while shared < min(len(full), len(cached_before)) and full[shared] == cached_before[shared]:
        shared += 1
    assert shared > len(model.chat_tokens(messages[:1])) - 1  # the whole first prompt is reused
    model.chat(messages, max_tokens=4, temperature=0.0)
    assert model.last_stats.prompt_tokens == len(full)


def test_full_context_is_a_clear_error() -> None:
    import phirt

    small = phirt.load(smollm2_path(), n_ctx=16, n_threads=2)
    with pytest.raises(phirt.ContextFullError, match="context window of 16 tokens is full"):
        small.generate("word " * 40, max_tokens=4)
    pieces = small.generate("Hi", max_tokens=100, temperature=0.0)
    assert isinstance(pieces, str)
    assert small.last_stats.finish_reason in ("context", "stop")
