"""Faults at run time: a full context, Ctrl-C in the middle of a generation, two models with their
own thread counts in one process, and a model file replaced or truncated while it is mapped."""

from __future__ import annotations

import _thread
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import phirt._kernels as K
import pytest

import phirt
from model_factory import ModelFactory
from phirt.errors import ContextFullError, FormatError

PROMPT = "Once upon a time, in a land far away,"


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ModelFactory(tmp_path_factory.mktemp("faults")).phi3("Q4_0", "gqa")


def greedy(model: phirt.Model, prompt: Any = PROMPT, n: int = 12) -> str:
    return model.generate(prompt, max_tokens=n, temperature=0)


# -- a full context ----------------------------------------------------------------------------


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_context_full_stops_cleanly(path: Path, kv_type: str) -> None:
    """Generation that reaches the end of the context stops with finish_reason "context" after
    exactly the tokens that fit, and they are the tokens a larger context gives: no wrap-around,
    no garbage after the last position."""
    roomy = phirt.load(path, n_ctx=256, n_threads=1, kv_type=kv_type)
    prompt = roomy.tokenize(PROMPT)
    n_ctx = len(prompt) + 10
    tight = phirt.load(path, n_ctx=n_ctx, n_threads=1, kv_type=kv_type)
    pieces = list(tight.generate(prompt, max_tokens=100, stream=True, temperature=0))
    stats = tight.last_stats
    assert stats.finish_reason == "context"
    # the last generated token is sampled from the logits of the last position; it is not stored
    assert stats.generated_tokens == n_ctx - len(prompt) + 1
    assert len(tight.engine.tokens) == n_ctx
    reference = greedy(roomy, prompt, stats.generated_tokens)
    assert roomy.last_stats.finish_reason == "length"
    assert "".join(pieces) == reference
    # the cache is full: a continuation is refused with a clear error, not wrapped
    with pytest.raises(ContextFullError, match=f"context window of {n_ctx} tokens is full"):
        tight.generate(list(tight.engine.tokens) + [1], max_tokens=4)
    # and a fresh prompt still works
    assert greedy(tight, prompt, 3) == greedy(roomy, prompt, 3)


def test_prompt_longer_than_the_context(path: Path) -> None:
    model = phirt.load(path, n_ctx=8, n_threads=1)
    with pytest.raises(ContextFullError) as info:
        model.generate(PROMPT * 3, max_tokens=4)
    assert str(path) in str(info.value) and "--ctx" in str(info.value)
    assert greedy(model, "Hi", 2) is not None


def test_chat_that_outgrows_the_context(path: Path) -> None:
    model = phirt.load(path, n_ctx=96, n_threads=1)
    messages = [{"role": "user", "content": "Tell me a story."}]
    with pytest.raises(ContextFullError):
        for _ in range(20):
            reply = model.chat(messages, max_tokens=16, temperature=0)
            messages += [
                {"role": "assistant", "content": reply},
                {"role": "user", "content": "More"},
            ]
    assert len(model.engine.tokens) <= 96


# -- Ctrl-C in the middle of a generation ------------------------------------------------------


def test_interrupt_at_every_layer_leaves_the_model_usable(path: Path) -> None:
    """KeyboardInterrupt raised inside the forward pass at each cache write in turn (every layer
    of the prefill and of each decoded token): afterwards the same call gives the same text."""
    model = phirt.load(path, n_ctx=128, n_threads=1)
    expected = greedy(model)
    chat = [{"role": "user", "content": "Hello there"}]
    expected_chat = model.chat(chat, max_tokens=8, temperature=0)
    cache = model.engine.cache
    store = cache.store
    writes = 0

    def counting(*args: Any) -> None:
        nonlocal writes
        writes += 1
        store(*args)

    cache.store = counting
    greedy(model)
    total = writes
    assert total > 2 * model.engine.config.n_layer
    for at in range(0, total, 3):
        writes = 0

        def interrupting(*args: Any, at: int = at) -> None:
            nonlocal writes
            writes += 1
            if writes == at + 1:
                raise KeyboardInterrupt
            store(*args)

        cache.store = interrupting
        with pytest.raises(KeyboardInterrupt):
            greedy(model)
        cache.store = store
        assert greedy(model) == expected, f"after an interrupt at cache write {at}"
        assert model.chat(chat, max_tokens=8, temperature=0) == expected_chat


def test_ctrl_c_at_random_moments_leaves_the_model_usable(path: Path) -> None:
    """A real interrupt (the SIGINT path: _thread.interrupt_main) at random moments of a
    streamed generation, which may land anywhere in Python code, the thread-pool scope
    included."""
    default = K.get_num_threads()
    model = phirt.load(path, n_ctx=256, n_threads=default + 1)
    other = phirt.load(path, n_ctx=256)  # the default pool: must never run on the first one's
    seen: list[int] = []
    forward = other.engine.model.forward

    def spy(*args: Any) -> Any:
        seen.append(K.get_num_threads())
        return forward(*args)

    other.engine.model.forward = spy
    expected = greedy(model, n=24)
    rng = random.Random(0)
    interrupted = 0
    for _ in range(25):
        timer = threading.Timer(rng.uniform(0.0, 0.05), _thread.interrupt_main)
        try:
            timer.start()
            for _ in model.generate(PROMPT, max_tokens=24, temperature=0, stream=True):
                pass
            timer.join()
            for _ in range(10**6):  # absorb an interrupt that came after the generation
                pass
        except KeyboardInterrupt:
            interrupted += 1
        timer.join()
        assert greedy(model, n=24) == expected
        greedy(other, n=2)
        assert set(seen) == {default}
    assert interrupted > 5


# -- two models, two thread counts -------------------------------------------------------------


def test_two_models_keep_their_own_thread_counts(path: Path) -> None:
    default = K.get_num_threads()
    one = phirt.load(path, n_ctx=64, n_threads=1)
    three = phirt.load(path, n_ctx=64, n_threads=3)
    shared = phirt.load(path, n_ctx=64)
    assert K.get_num_threads() == default  # loading no longer changes the process default
    assert (one.engine.n_threads, three.engine.n_threads) == (1, 3)
    assert shared.engine.n_threads == default
    seen: dict[str, set[int]] = {}
    for name, m in (("one", one), ("three", three), ("shared", shared)):
        forward = m.engine.model.forward

        def spy(*args: Any, name: str = name, forward: Any = forward) -> Any:
            seen.setdefault(name, set()).add(K.get_num_threads())
            return forward(*args)

        m.engine.model.forward = spy
    outputs = {name: greedy(m) for name, m in (("one", one), ("three", three), ("shared", shared))}
    assert seen == {"one": {1}, "three": {3}, "shared": {default}}
    assert len(set(outputs.values())) == 1  # same model, same tokens, whatever the threads
    # both at once from two Python threads (kernels release the GIL): each on its own pool
    results: dict[str, str] = {}

    def run(name: str, m: phirt.Model) -> None:
        results[name] = greedy(m)

    workers = [
        threading.Thread(target=run, args=(n, m)) for n, m in (("one", one), ("three", three))
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == {"one": outputs["one"], "three": outputs["three"]}
    assert seen["one"] == {1} and seen["three"] == {3}


def test_thread_pool_scopes_nest_and_restore() -> None:
    pool = K.ThreadPool(2)
    assert pool.size == 2 and K.ThreadPool(0).size == 1 and K.ThreadPool(10**6).size == 256
    before = K.get_num_threads()
    previous = K.install_pool(pool)
    try:
        assert previous is None and K.get_num_threads() == 2
        inner = K.install_pool(None)
        assert inner is pool and K.get_num_threads() == before
        K.install_pool(inner)
    finally:
        assert K.install_pool(previous) is pool
    assert K.get_num_threads() == before


# -- the model file changes while it is mapped -------------------------------------------------


@pytest.fixture
def own_copy(path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model.gguf"
    shutil.copyfile(path, copy)
    return copy


def test_file_replaced_while_loaded_keeps_working(own_copy: Path, tmp_path: Path) -> None:
    """Replacing the file (write a new one, rename it over) is safe: the loaded model keeps the
    original, which stays mapped until the model goes."""
    model = phirt.load(own_copy, n_ctx=64, n_threads=1)
    expected = greedy(model)
    new = tmp_path / "new.gguf"
    new.write_bytes(b"GGUF" + bytes(100))
    os.replace(new, own_copy)
    assert greedy(model) == expected
    own_copy.unlink()
    assert greedy(model) == expected


def test_file_truncated_in_place_is_detected(own_copy: Path) -> None:
    model = phirt.load(own_copy, n_ctx=64, n_threads=1)
    greedy(model)
    size = own_copy.stat().st_size
    os.truncate(own_copy, size // 2)
    with pytest.raises(FormatError, match="changed on disk while loaded") as info:
        greedy(model)
    assert str(own_copy) in str(info.value) and f"{size} -> {size // 2}" in str(info.value)


def test_file_rewritten_in_place_is_detected(own_copy: Path) -> None:
    """Same size, new bytes (e.g. `cp other.gguf model.gguf` onto the loaded file): the mapping
    would show the new weights mid-conversation; the modification time gives it away."""
    model = phirt.load(own_copy, n_ctx=64, n_threads=1)
    greedy(model)
    stat = own_copy.stat()
    with open(own_copy, "r+b") as f:
        f.seek(stat.st_size - 4096)
        f.write(bytes(4096))
    os.utime(own_copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(FormatError, match="changed on disk"):
        greedy(model)


def test_truncation_during_a_call_ends_with_a_note(own_copy: Path) -> None:
    """A truncation between the check and the reads cannot be caught: the read faults (SIGBUS)
    and the process ends, after one line that says why."""
    script = textwrap.dedent(
        f"""
        import os, numpy as np, phirt
        model = phirt.load({str(own_copy)!r}, n_ctx=64, n_threads=1)
        engine = model.engine
        os.truncate({str(own_copy)!r}, engine.source.data_offset)
        engine._forward(np.array([1, 2, 3]), False)  # past the check: reads the weights
        print("not reached")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == -signal.SIGBUS, run.stderr
    assert "phirt: SIGBUS reading memory-mapped data: a model file was truncated" in run.stderr
    assert "not reached" not in run.stdout
