"""Continuous batching in the engine: several sequences, each in its own KV cache, share one forward
pass (NativeEngine.eval_batch). A sequence's logits must be bit for bit the same whether it runs
alone or beside others, on every kernel ISA this CPU has (the server's guarantee that batching
never changes a greedy answer), and the same as the single-sequence engine's decode."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import phirt._kernels as K
import pytest
from gguf import GGMLQuantizationType as T

from model_factory import ModelFactory
from onnx_factory import OnnxFactory
from phirt.engine import NativeEngine
from phirt.errors import ContextFullError
from phirt.sampling import SamplingParams
from phirt.serve.scheduler import BatchScheduler, Finish, GenRequest, Job, Piece
from smollm2 import smollm2_path

WEIGHT_TYPES = [
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "F16",
    "BF16",
    "F32",
]


@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_batch_invariant_matmul_rows_are_the_gemv(name: str, each_isa: str) -> None:
    """Every row of a batch_invariant product equals the m = 1 product of that row alone, for
    batches large enough that the default path takes the packed GEMM (m >= 4) where the ISA has
    one, in any order and next to any other rows."""
    rng = np.random.default_rng(3)
    n, k = 48, 512
    w = K.QMatrix(
        K.quantize(int(T[name]), rng.standard_normal((n, k)).astype(np.float32)), int(T[name]), n, k
    )
    x = rng.standard_normal((9, k)).astype(np.float32)
    alone = np.concatenate([K.matmul(w, x[i : i + 1]) for i in range(len(x))])
    for rows in (range(9), [8, 3, 0, 5], [2, 7], [4, 4, 4, 4, 1, 6]):
        got = K.matmul(w, np.ascontiguousarray(x[list(rows)]), batch_invariant=True)
        np.testing.assert_array_equal(
            got, alone[list(rows)], err_msg=f"{name} {each_isa} rows {rows}"
        )


def greedy_solo(engine: NativeEngine, prompt: list[int], n: int, chunk: int) -> list[np.ndarray]:
    """Logits of each decode step of one sequence alone: prefill in chunks, then n greedy steps."""
    cache = engine.new_cache()
    pos = 0
    for i in range(0, len(prompt), chunk):
        logits = engine.eval_batch([(cache, pos, prompt[i : i + chunk])])[0]
        pos += len(prompt[i : i + chunk])
    out = [logits]
    for _ in range(n):
        logits = engine.eval_batch([(cache, pos, [int(np.argmax(logits))])], batch_invariant=True)[
            0
        ]
        pos += 1
        out.append(logits)
    return out


def greedy_batched(
    engine: NativeEngine,
    prompts: list[list[int]],
    n: int,
    chunk: int,
    joins: list[int],
    fuse: bool = False,
) -> tuple[list[list[np.ndarray]], int]:
    """The same sequences run together: sequence i is prefilled (chunk by chunk, one chunk per
    step, as the server does) from step joins[i], then decodes beside whoever is active; each
    leaves after n steps, so the batch grows and shrinks. fuse: the step's chunk goes through the
    decode pass (batch_invariant, first span), as the server does when the engine's layer rows
    are invariant. Also returns the widest decode step."""
    caches = [engine.new_cache() for _ in prompts]
    pos = [0] * len(prompts)
    logits: list[list[np.ndarray]] = [[] for _ in prompts]
    step = widest = 0
    while any(len(lg) < n + 1 for lg in logits):
        active = [i for i, p in enumerate(prompts) if pos[i] >= len(p) and 0 < len(logits[i]) <= n]
        spans = [(caches[i], pos[i], [int(np.argmax(logits[i][-1]))]) for i in active]
        reading = [i for i, p in enumerate(prompts) if joins[i] <= step and pos[i] < len(p)]
        if reading:  # one prefill chunk per step, oldest first
            i = reading[0]
            part = prompts[i][pos[i] : pos[i] + chunk]
            if fuse and spans:
                rows = engine.eval_batch([(caches[i], pos[i], part), *spans], batch_invariant=True)
                row, decoded = rows[0], rows[1:]
            else:
                row, decoded = engine.eval_batch([(caches[i], pos[i], part)])[0], None
            pos[i] += len(part)
            if pos[i] == len(prompts[i]):
                logits[i].append(row)
        else:
            decoded = None
        if spans:
            if decoded is None:
                decoded = engine.eval_batch(spans, batch_invariant=True)
            widest = max(widest, len(spans))
            for i, row in zip(active, decoded, strict=True):
                pos[i] += 1
                logits[i].append(row)
        step += 1
    return logits, widest


def check_batched_equals_solo(path: Path, chunk: int = 8, n: int = 8, fuse: bool = False) -> None:
    engine = NativeEngine(path, n_ctx=96)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 1000, size).tolist() for size in (3, 12, 21, 1, 6)]
    solo = [greedy_solo(engine, p, n, chunk) for p in prompts]
    if fuse:
        assert engine.layer_rows_invariant()
    batched, widest = greedy_batched(engine, prompts, n, chunk, joins=[0, 0, 1, 3, 9], fuse=fuse)
    assert widest >= 4  # the default path would take the packed GEMM here
    for i, (a, b) in enumerate(zip(solo, batched, strict=True)):
        assert len(a) == len(b) == n + 1
        for step, (x, y) in enumerate(zip(a, b, strict=True)):
            np.testing.assert_array_equal(x, y, err_msg=f"sequence {i} step {step} ({K.isa()})")


@pytest.mark.parametrize(
    "arch,qtype,variant",
    [
        ("phi3", "Q4_0", "gqa"),
        ("phi3", "Q8_0", "swa"),
        ("phi2", "Q5_1", "plain"),
        ("llama", "Q4_1", "gqa"),
    ],
)
def test_batched_decode_is_bit_identical_to_solo(
    models: ModelFactory, arch: str, qtype: str, variant: str, each_isa: str
) -> None:
    check_batched_equals_solo(getattr(models, arch)(qtype, variant))


@pytest.mark.parametrize("arch,variant", [("phi3", "gqa"), ("phi3", "partial_rotary_tied")])
def test_prompt_chunks_in_the_decode_pass_are_bit_identical_to_solo(
    models: ModelFactory, arch: str, variant: str, each_isa: str
) -> None:
    """Where every layer matrix is Q4_0 in the interleaved layout, a prompt chunk evaluated in the
    decode pass (batch_invariant) gets what it gets alone (the server then reads the weights once
    per step); elsewhere the engine says its rows are not invariant and the server keeps them
    apart."""
    path = getattr(models, arch)("Q4_0", variant)
    engine = NativeEngine(path, n_ctx=32)
    engine.eval([1, 2])
    if K.q4x16_native() and os.environ.get("PHIRT_Q4_0_INTERLEAVE") != "0":
        assert engine.layer_rows_invariant()
        check_batched_equals_solo(path, fuse=True)
    else:  # the file's layout (scalar): rows of the packed GEMM are not the one-row dots'
        assert not engine.layer_rows_invariant()


def test_layer_rows_are_not_invariant_for_other_types(models: ModelFactory) -> None:
    engine = NativeEngine(models.phi3("Q4_1", "gqa"), n_ctx=32)
    engine.eval([1, 2])
    assert not engine.layer_rows_invariant()


def test_batched_decode_is_bit_identical_to_solo_smollm2(each_isa: str) -> None:
    check_batched_equals_solo(smollm2_path(), chunk=16, n=6)


@pytest.mark.parametrize("name", ["phi3", "phi4_mini"])
def test_batched_decode_is_bit_identical_to_solo_onnx(
    onnx_models: OnnxFactory, name: str, each_isa: str
) -> None:
    """ONNX folders' MatMulNBits at accuracy level 4 (int8 activations; phi4_mini with zero
    points): their batch-invariant decode skips the packed GEMM as GGML matrices' does."""
    check_batched_equals_solo(onnx_models.get(name))


def test_solo_decode_is_the_engines_own(models: ModelFactory) -> None:
    """A sequence decoded through eval_batch (batch_invariant) gets the logits NativeEngine.eval
    gives it, prefill included when the chunk is the engine's own batch: the server's greedy
    answer is phirt.load(...).generate's."""
    engine = NativeEngine(models.phi3("Q4_0", "plain"), n_ctx=64)
    prompt = np.random.default_rng(2).integers(0, 1000, 13).tolist()
    solo = greedy_solo(engine, prompt, 5, chunk=512)
    engine.reset()
    logits = engine.eval(prompt)
    for step in range(6):
        np.testing.assert_array_equal(logits, solo[step], err_msg=f"step {step}")
        logits = engine.eval([int(np.argmax(logits))])


def test_eval_batch_rejects_what_does_not_fit(models: ModelFactory) -> None:
    engine = NativeEngine(models.llama("Q4_0", "gqa"), n_ctx=16)
    cache = engine.new_cache()
    with pytest.raises(
        ContextFullError, match="4 tokens at position 14 do not fit a context window of 16"
    ):
        engine.eval_batch([(cache, 14, [1, 2, 3, 4])])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.eval_batch([(cache, 0, [1]), (engine.new_cache(), 0, [10**6])])
    with pytest.raises(ValueError, match="at least one token"):
        engine.eval_batch([(cache, 0, [])])


def run_scheduler(engine: NativeEngine, prompts: list[list[int]], parallel: int) -> list[list[int]]:
    """Greedy tokens of each prompt through a BatchScheduler (all submitted at once)."""

    async def main() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        scheduler = BatchScheduler(engine, parallel=parallel, max_queue=8, prefill_chunk=8)
        try:
            jobs = [
                Job(GenRequest(p, max_tokens=6, sampling=SamplingParams(temperature=0)), loop)
                for p in prompts
            ]
            for job in jobs:
                scheduler.submit(job)
            out = []
            for job in jobs:
                tokens = []
                while not isinstance(event := await job.events.get(), Finish):
                    assert isinstance(event, Piece), event
                    if event.token is not None:
                        tokens.append(event.token)
                out.append(tokens)
            return out
        finally:
            scheduler.close()

    return asyncio.run(main())


def test_the_scheduler_fuses_prompt_chunks_into_decode_passes(models: ModelFactory) -> None:
    """With Q4_0 interleaved, the server's scheduler puts a joining prompt's chunk into the decode
    pass (one eval_batch: the chunk first, then one row per generating sequence), and every
    request's tokens are those it gets alone."""
    engine = NativeEngine(models.phi3("Q4_0", "gqa"), n_ctx=96)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(0, 1000, size).tolist() for size in (4, 30, 12, 21)]
    solo = [run_scheduler(engine, [p], parallel=1)[0] for p in prompts]
    calls: list[tuple[list[int], bool]] = []
    real = engine.eval_batch

    def spy(spans, batch_invariant=False):  # noqa: ANN001, ANN202
        calls.append(([len(t) for _, _, t in spans], batch_invariant))
        return real(spans, batch_invariant=batch_invariant)

    engine.eval_batch = spy  # type: ignore[method-assign]
    batched = run_scheduler(engine, prompts, parallel=4)
    assert batched == solo
    fused = [sizes for sizes, inv in calls if inv and len(sizes) > 1 and sizes[0] > 1]
    if engine.layer_rows_invariant():
        assert fused, calls
    else:  # no interleaved Q4_0 kernel on this CPU: chunks keep passes of their own
        assert not fused, calls


def run_in_turn(
    engine: NativeEngine, prompts: list[list[int]], parallel: int, chunk: int = 8
) -> list[tuple[list[int], int]]:
    """Greedy tokens and cached prompt tokens of each prompt through one BatchScheduler, each
    request submitted when the one before has finished (a chat's turns)."""

    async def main() -> list[tuple[list[int], int]]:
        loop = asyncio.get_running_loop()
        scheduler = BatchScheduler(engine, parallel=parallel, max_queue=8, prefill_chunk=chunk)
        try:
            out = []
            for p in prompts:
                job = Job(GenRequest(p, max_tokens=6, sampling=SamplingParams(temperature=0)), loop)
                scheduler.submit(job)
                tokens = []
                while not isinstance(event := await job.events.get(), Finish):
                    assert isinstance(event, Piece), event
                    if event.token is not None:
                        tokens.append(event.token)
                out.append((tokens, event.cached_tokens))
            return out
        finally:
            scheduler.close()

    return asyncio.run(main())


@pytest.mark.parametrize("qtype", ["Q4_1", "Q4_0"])
def test_a_prompt_that_resends_a_slots_history_takes_its_cache(
    models: ModelFactory, qtype: str
) -> None:
    """A chat's next turn (the previous prompt, its answer and more), a repeat and a prompt that
    shares only a prefix take what a free slot already holds, and answer exactly what they answer
    on a fresh server. Where rows are not invariant (Q4_1; Q4_0 without the interleaved kernel)
    only the earlier prompt's whole chunks are taken, so the rest is cut on the grid it is cut on
    alone; where they are, the whole history but the answer's last token is."""
    engine = NativeEngine(models.phi3(qtype, "gqa"), n_ctx=96)
    rng = np.random.default_rng(7)
    first = rng.integers(0, 1000, 30).tolist()
    other = rng.integers(0, 1000, 11).tolist()  # in the second slot: the first's history stays
    (answer, cached0), (_, cached1) = run_in_turn(engine, [first, other], parallel=2)
    assert cached0 == cached1 == 0
    turn = first + answer + rng.integers(0, 1000, 9).tolist()
    prefix = first[:21] + rng.integers(0, 1000, 14).tolist()
    prompts = [first, other, turn, prefix, first]
    fresh = [run_in_turn(engine, [p], parallel=1)[0][0] for p in prompts]
    got = run_in_turn(engine, prompts, parallel=2)
    assert [tokens for tokens, _ in got] == fresh
    cached = [n for _, n in got]
    if engine.layer_rows_invariant():
        # the repeat of `first` follows `prefix` in the same slot: they share 21 tokens
        assert cached == [0, 0, len(first) + len(answer) - 1, 21, 21]
    else:
        assert cached == [0, 0, 24, 16, 16]
