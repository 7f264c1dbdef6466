"""The greedy-comparison rule the engine tests rely on (greedy.assert_same_greedy): which partings
of two engines count as fair near-ties, and which fail."""

from __future__ import annotations

import numpy as np
import pytest

from greedy import assert_same_greedy


def logits(**values: float) -> np.ndarray:
    """A 6-token logit row: zeros except the given positions (t0 .. t5)."""
    row = np.zeros(6, dtype=np.float32)
    for name, v in values.items():
        row[int(name[1:])] = v
    return row


# llama.cpp: step 0 decided, step 1 a three-way near-tie (t2 > t3 > t4, 0.15 apart at most)
REF_STEPS = [logits(t1=5.0), logits(t2=5.0, t3=4.9, t4=4.85)]


def test_identical_continuations_pass() -> None:
    assert_same_greedy([1, 2], [1, 2], REF_STEPS, tol=0.2)


def test_runner_up_within_tolerance_passes() -> None:
    assert_same_greedy([1, 3], [1, 2], REF_STEPS, tol=0.2)


def test_third_choice_within_tolerance_passes() -> None:
    got_steps = [logits(t1=5.0), logits(t4=4.95, t2=4.9)]
    assert_same_greedy([1, 4], [1, 2], REF_STEPS, tol=0.2, got_steps=got_steps)


def test_pick_beyond_tolerance_fails() -> None:
    with pytest.raises(AssertionError, match="differ at step 1: phirt 4, llama.cpp 2"):
        assert_same_greedy([1, 4], [1, 2], REF_STEPS, tol=0.1)


def test_pick_far_down_fails_at_the_first_step() -> None:
    with pytest.raises(AssertionError, match="differ at step 0"):
        assert_same_greedy([5, 2], [1, 2], REF_STEPS, tol=0.2)


def test_reference_pick_far_down_in_phirt_fails() -> None:
    got_steps = [logits(t1=5.0), logits(t3=5.0, t2=3.0)]  # phirt ranks llama.cpp's pick 2 below
    with pytest.raises(AssertionError, match="llama.cpp's 2 below phirt's"):
        assert_same_greedy([1, 3], [1, 2], REF_STEPS, tol=0.2, got_steps=got_steps)


def test_comparison_stops_at_a_fair_parting() -> None:
    # after the near-tie at step 1 the contexts differ: step 2 is not compared
    steps = [*REF_STEPS, logits(t0=9.0)]
    assert_same_greedy([1, 3, 5], [1, 2, 0], steps, tol=0.2)
