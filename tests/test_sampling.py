"""Sampler semantics: each filter checked against its definition on hand-made distributions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from phirt.sampling import (
    Sampler,
    SamplingParams,
    apply_presence_frequency,
    apply_repeat_penalty,
)

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], dtype=np.float32))


def draw(params: SamplingParams, n: int = 4000, logits: np.ndarray = LOGITS) -> np.ndarray:
    sampler = Sampler(params)
    return np.bincount([sampler(logits) for _ in range(n)], minlength=len(logits)) / n


def test_greedy_is_argmax() -> None:
    assert Sampler(SamplingParams.greedy())(np.array([0.1, 3.0, 2.9])) == 1


def test_temperature_one_follows_softmax() -> None:
    freq = draw(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=0))
    np.testing.assert_allclose(freq, np.exp(LOGITS), atol=0.03)


def test_top_k_keeps_k_most_likely() -> None:
    freq = draw(SamplingParams(temperature=1.0, top_k=2, top_p=1.0, min_p=0.0, seed=1))
    assert freq[2:].sum() == 0
    np.testing.assert_allclose(freq[:2], [0.5 / 0.7, 0.2 / 0.7], atol=0.03)


def test_top_p_keeps_smallest_prefix_reaching_p() -> None:
    freq = draw(SamplingParams(temperature=1.0, top_k=0, top_p=0.8, min_p=0.0, seed=2))
    assert freq[3:].sum() == 0  # 0.5 + 0.2 + 0.15 = 0.85 >= 0.8
    assert freq[2] > 0


def test_min_p_drops_tokens_below_fraction_of_best() -> None:
    freq = draw(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.35, seed=3))
    assert freq[2:].sum() == 0  # 0.15 < 0.35 * 0.5
    assert freq[1] > 0


def test_seed_makes_sampling_reproducible() -> None:
    params = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    runs = [[s(LOGITS) for _ in range(50)] for s in (Sampler(params), Sampler(params))]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1  # really sampled: a constant stream would repeat trivially
    other = Sampler(dataclasses.replace(params, seed=43))
    assert [other(LOGITS) for _ in range(50)] != runs[0]


def test_repeat_penalty_divides_positive_multiplies_negative() -> None:
    out = apply_repeat_penalty(np.array([2.0, -2.0, 1.0], np.float32), [0, 1, 1], 2.0)
    np.testing.assert_array_equal(out, [1.0, -4.0, 1.0])
    sampler = Sampler(SamplingParams(temperature=0.0, repeat_penalty=10.0))
    assert sampler(np.array([2.0, 1.0], np.float32), history=[0]) == 1


@pytest.mark.parametrize("penalty", [3.4e37, 1e300, 1e-300, 5e-324])
def test_extreme_repeat_penalty_keeps_logits_finite(penalty: float) -> None:
    """Any positive finite penalty (SamplingParams accepts them) pushes a seen token's logit at
    most to float32's largest magnitude: an inf would turn the softmax into NaN."""
    logits = np.array([20.0, -20.0, 1.0, 0.5], np.float32)
    out = apply_repeat_penalty(logits, [0, 1], penalty)
    assert np.isfinite(out).all() and out[2] == 1.0 and out[3] == 0.5
    sampler = Sampler(SamplingParams(temperature=1.0, repeat_penalty=penalty, seed=0))
    assert sampler(logits, history=[0, 1]) in range(4)


@pytest.mark.parametrize("temperature", [5e-324, 1e-310, 1e-45])
def test_tiny_temperature_picks_the_best(temperature: float) -> None:
    """A positive temperature too small to divide by without overflow is still greedy, not NaN."""
    sampler = Sampler(SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0))
    assert sampler(np.array([1.0, 20.0, -20.0], np.float32)) == 1


@pytest.mark.parametrize("bad", [dict(top_p=0.0), dict(min_p=1.5), dict(repeat_penalty=0.0)])
def test_bad_parameters_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**bad)


@pytest.mark.llamacpp
def test_penalties_match_llama_cpp() -> None:
    """Repeat, frequency and presence penalties over the last n tokens give the logits of
    llama.cpp's llama_sampler_init_penalties (OpenAI's presence/frequency definition)."""
    import ctypes

    L = pytest.importorskip("llama_cpp")
    rng = np.random.default_rng(4)
    logits = rng.standard_normal(50).astype(np.float32) * 3
    history = rng.integers(0, 50, 40).tolist()
    for repeat, freq, present, last_n in [
        (1.0, 0.4, 0.9, 64),
        (1.3, -0.5, 1.5, 16),
        (1.1, 0, 0, 8),
    ]:
        smpl = L.llama_sampler_init_penalties(len(logits), last_n, repeat, freq, present)
        for t in history:
            L.llama_sampler_accept(smpl, t)
        data = (L.llama_token_data * len(logits))(
            *[L.llama_token_data(i, float(v), 0.0) for i, v in enumerate(logits)]
        )
        arr = L.llama_token_data_array(data, len(logits), -1, False)
        L.llama_sampler_apply(smpl, ctypes.byref(arr))
        L.llama_sampler_free(smpl)
        want = np.array([data[i].logit for i in range(len(logits))], dtype=np.float32)
        recent = history[-last_n:]
        got = logits if repeat == 1.0 else apply_repeat_penalty(logits, recent, repeat)
        got = apply_presence_frequency(got, recent, present, freq)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        p = SamplingParams(
            temperature=0.0,
            repeat_penalty=repeat,
            frequency_penalty=freq,
            presence_penalty=present,
            repeat_last_n=last_n,
        )
        assert Sampler(p)(logits, history) == int(np.argmax(want))
