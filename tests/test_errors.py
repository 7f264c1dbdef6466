"""One error hierarchy: every public entry point (phirt.load, Model.generate / chat / tokenize /
detokenize / logits, quantize, the CLI) answers bad input with a PhirtError subclass whose message
is one line naming the argument or the file, never a bare ValueError, TypeError or a traceback.
The table below is the explicit list; a hypothesis test throws values of every type at each
keyword on top of it."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import phirt
from model_factory import ModelFactory
from phirt.cli import main as cli_main
from phirt.errors import (
    ContextFullError,
    FormatError,
    InvalidArgumentError,
    PhirtError,
    QuantizeError,
    UnsupportedError,
    one_line,
)
from phirt.quantize import quantize


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ModelFactory(tmp_path_factory.mktemp("errors")).phi3("Q4_0", "plain")


@pytest.fixture(scope="module")
def model(model_path: Path) -> phirt.Model:
    return phirt.load(model_path, n_ctx=64, n_threads=1)


def expect_phirt_error(
    call: Callable[[], Any], names: str, kind: type[PhirtError] = PhirtError
) -> PhirtError:
    """call() must raise `kind` (a PhirtError) with a one-line message containing `names`."""
    try:
        result = call()
        if hasattr(result, "__next__"):  # a stream: the error may only come when iterated
            list(result)
    except PhirtError as exc:
        text = str(exc)
        assert isinstance(exc, kind), f"{type(exc).__name__} is not a {kind.__name__}: {text}"
        assert "\n" not in text and "\r" not in text, text
        assert names in text, f"{names!r} not in {text!r}"
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: anything else fails the test
        pytest.fail(f"raised {type(exc).__name__} (not a PhirtError): {exc}")
    pytest.fail(f"no error for input naming {names!r}")


# -- the hierarchy itself --------------------------------------------------------------------


def test_hierarchy_and_compatibility() -> None:
    assert issubclass(InvalidArgumentError, ValueError)  # bad values stay ValueErrors
    for cls in (FormatError, UnsupportedError, InvalidArgumentError, ContextFullError):
        assert issubclass(cls, PhirtError)
        assert getattr(phirt, cls.__name__) is cls
    from phirt.chat_template import TemplateError

    assert issubclass(TemplateError, PhirtError) and issubclass(QuantizeError, PhirtError)


def test_messages_are_one_line_whatever_they_quote() -> None:
    err = FormatError("tensor 'a\nb' is bad", "/tmp/x\ny.gguf")
    assert str(err) == "/tmp/x\\ny.gguf: tensor 'a\\nb' is bad"
    assert err.path == "/tmp/x\ny.gguf" and err.message == "tensor 'a\nb' is bad"
    assert one_line("plain") == "plain"


# -- phirt.load ------------------------------------------------------------------------------


def _garbage(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


LOAD_ARGS = [
    (dict(n_threads=0), "n_threads", InvalidArgumentError),
    (dict(n_threads="2"), "n_threads", InvalidArgumentError),
    (dict(n_threads=1.5), "n_threads", InvalidArgumentError),
    (dict(n_threads=True), "n_threads", InvalidArgumentError),
    (dict(n_ctx=0), "n_ctx", InvalidArgumentError),
    (dict(n_ctx=-3), "n_ctx", InvalidArgumentError),
    (dict(n_ctx="big"), "n_ctx", InvalidArgumentError),
    (dict(n_ctx=2**31), "n_ctx", InvalidArgumentError),
    (dict(n_ctx=2**31 - 1), "n_ctx", InvalidArgumentError),  # needs TiBs of cache
    (dict(kv_type="q4_0"), "kv_type", InvalidArgumentError),
    (dict(kv_type=""), "kv_type", InvalidArgumentError),
    (dict(device="quantum"), "device", PhirtError),
    (dict(device=None), "device", PhirtError),
]


@pytest.mark.parametrize(("kwargs", "names", "kind"), LOAD_ARGS, ids=[str(a[0]) for a in LOAD_ARGS])
def test_load_bad_arguments(model_path: Path, kwargs: dict, names: str, kind: type) -> None:
    expect_phirt_error(lambda: phirt.load(model_path, **kwargs), names, kind)


def test_load_bad_paths(tmp_path: Path) -> None:
    for path in (None, 42, b"", "", ["a.gguf"]):
        expect_phirt_error(lambda p=path: phirt.load(p), "path", InvalidArgumentError)
    missing = tmp_path / "missing.gguf"
    expect_phirt_error(lambda: phirt.load(missing), str(missing))
    expect_phirt_error(lambda: phirt.load(tmp_path), str(tmp_path), FormatError)
    for name, data in [
        ("text.gguf", b"hello, world\n"),
        ("empty.gguf", b""),
        ("magic-only.gguf", b"GGUF"),
        ("v3-empty.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 0)),  # valid, but no model
        ("v9.gguf", b"GGUF" + struct.pack("<IQQ", 9, 0, 0)),
    ]:
        path = _garbage(tmp_path, name, data)
        expect_phirt_error(lambda p=path: phirt.load(p), str(path))


def test_load_vocabulary_only_file(vocab_path: Path) -> None:
    expect_phirt_error(lambda: phirt.load(vocab_path), str(vocab_path))


# -- Model methods -----------------------------------------------------------------------------


def _methods(model: phirt.Model) -> list[tuple[str, Callable[[], Any], str, type]]:
    n = model.n_vocab
    chat = model.chat
    gen = model.generate
    user = [{"role": "user", "content": "hi"}]
    return [
        ("generate prompt None", lambda: gen(None, 2), "tokens", InvalidArgumentError),
        ("generate prompt int", lambda: gen(7, 2), "tokens", InvalidArgumentError),
        ("generate prompt bytes", lambda: gen(b"hi", 2), "tokens", InvalidArgumentError),
        ("generate prompt []", lambda: gen([], 2), "prompt", InvalidArgumentError),
        ("generate id -1", lambda: gen([1, -1], 2), "token id -1", InvalidArgumentError),
        ("generate id n_vocab", lambda: gen([n], 2), f"token id {n}", InvalidArgumentError),
        ("generate id float", lambda: gen([1.5], 2), "1.5", InvalidArgumentError),
        ("generate id str", lambda: gen(["a"], 2), "'a'", InvalidArgumentError),
        ("generate surrogate", lambda: gen("a\ud800b", 2), "surrogate", InvalidArgumentError),
        ("generate max_tokens -1", lambda: gen("hi", -1), "max_tokens", InvalidArgumentError),
        ("generate max_tokens str", lambda: gen("hi", "5"), "max_tokens", InvalidArgumentError),
        ("generate max_tokens None", lambda: gen("hi", None), "max_tokens", InvalidArgumentError),
        ("generate stop int", lambda: gen("hi", 2, stop=5), "stop", InvalidArgumentError),
        ("generate stop [1]", lambda: gen("hi", 2, stop=[1]), "stop", InvalidArgumentError),
        ("temperature str", lambda: gen("hi", 2, temperature="hot"), "temperature", InvalidArgumentError),
        ("temperature nan", lambda: gen("hi", 2, temperature=float("nan")), "temperature", InvalidArgumentError),
        ("top_p 0", lambda: gen("hi", 2, top_p=0), "top_p", InvalidArgumentError),
        ("top_p 2", lambda: gen("hi", 2, top_p=2), "top_p", InvalidArgumentError),
        ("top_k 1.5", lambda: gen("hi", 2, top_k=1.5), "top_k", InvalidArgumentError),
        ("min_p -1", lambda: gen("hi", 2, min_p=-1), "min_p", InvalidArgumentError),
        ("repeat_penalty 0", lambda: gen("hi", 2, repeat_penalty=0), "repeat_penalty", InvalidArgumentError),
        ("repeat_last_n -2", lambda: gen("hi", 2, repeat_last_n=-2), "repeat_last_n", InvalidArgumentError),
        ("seed -1", lambda: gen("hi", 2, seed=-1), "seed", InvalidArgumentError),
        ("seed str", lambda: gen("hi", 2, seed="x"), "seed", InvalidArgumentError),
        ("unknown option", lambda: gen("hi", 2, temprature=0), "temprature", InvalidArgumentError),
        ("stream bad option", lambda: gen("hi", 2, stream=True, top_p=9), "top_p", InvalidArgumentError),
        ("prompt too long", lambda: gen(list(range(100)), 2), "context window", ContextFullError),
        ("chat None", lambda: chat(None), "messages", InvalidArgumentError),
        ("chat str", lambda: chat("hello"), "messages", InvalidArgumentError),
        ("chat dict", lambda: chat({"role": "user"}), "messages", InvalidArgumentError),
        ("chat no role", lambda: chat([{"content": "x"}]), "role", InvalidArgumentError),
        ("chat role int", lambda: chat([{"role": 1, "content": "x"}]), "role", InvalidArgumentError),
        ("chat content int", lambda: chat([{"role": "user", "content": 5}]), "content", InvalidArgumentError),
        ("chat items", lambda: chat([1, 2]), "messages[0]", InvalidArgumentError),
        ("chat surrogate", lambda: chat([{"role": "user", "content": "\udcff"}]), "surrogate", InvalidArgumentError),
        ("chat max_tokens", lambda: chat(user, max_tokens=-5), "max_tokens", InvalidArgumentError),
        ("chat top_p", lambda: chat(user, top_p=-1), "top_p", InvalidArgumentError),
        ("chat long", lambda: chat([{"role": "user", "content": "word " * 200}]), "context window", ContextFullError),
        ("tokenize None", lambda: model.tokenize(None), "text", InvalidArgumentError),
        ("tokenize bytes", lambda: model.tokenize(b"hi"), "text", InvalidArgumentError),
        ("tokenize int", lambda: model.tokenize(3), "text", InvalidArgumentError),
        ("tokenize surrogate", lambda: model.tokenize("\udcff"), "surrogate", InvalidArgumentError),
        ("tokenize add_bos", lambda: model.tokenize("hi", add_bos="yes"), "add_bos", InvalidArgumentError),
        ("detokenize None", lambda: model.detokenize(None), "tokens", InvalidArgumentError),
        ("detokenize int", lambda: model.detokenize(5), "tokens", InvalidArgumentError),
        ("detokenize str", lambda: model.detokenize("abc"), "tokens", InvalidArgumentError),
        ("detokenize -1", lambda: model.detokenize([-1]), "token id -1", InvalidArgumentError),
        ("detokenize huge", lambda: model.detokenize([10**12]), "outside", InvalidArgumentError),
        ("detokenize float", lambda: model.detokenize([1.0]), "1.0", InvalidArgumentError),
        ("detokenize None item", lambda: model.detokenize([None]), "None", InvalidArgumentError),
        ("logits []", lambda: model.logits([]), "empty", InvalidArgumentError),
        ("logits None", lambda: model.logits(None), "tokens", InvalidArgumentError),
        ("logits 2-D", lambda: model.logits([[1, 2]]), "tokens", InvalidArgumentError),
        ("logits -1", lambda: model.logits([-1]), "token id -1", InvalidArgumentError),
        ("logits n_vocab", lambda: model.logits([n]), f"token id {n}", InvalidArgumentError),
        ("logits too long", lambda: model.logits([1] * 65), "context window", ContextFullError),
    ]  # fmt: skip


def test_model_methods_bad_input(model: phirt.Model) -> None:
    for name, call, names, kind in _methods(model):
        try:
            expect_phirt_error(call, names, kind)
        except BaseException as exc:
            raise AssertionError(f"case {name!r}: {exc}") from None
    # and the model still works afterwards
    assert model.generate("Hello", max_tokens=3, temperature=0)


# every keyword of every method, given a value of any type: it works or raises a PhirtError
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(-5, 40000), max_size=4),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
CALLS = {
    "generate": ["prompt", "max_tokens", "stop", "temperature", "top_k", "top_p", "min_p",
                 "repeat_penalty", "repeat_last_n", "seed"],
    "chat": ["messages", "max_tokens", "stop", "temperature", "seed"],
    "tokenize": ["text", "add_bos"],
    "detokenize": ["tokens"],
    "logits": ["tokens"],
}  # fmt: skip
GOOD = {"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}], "text": "Hi",
        "tokens": [1, 2], "max_tokens": 2}  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(sorted(CALLS)),
    key_index=st.integers(0, 9),
    value=anything,
)
def test_any_value_for_any_argument(model: phirt.Model, method: str, key_index: int, value: Any):
    keys = CALLS[method]
    key = keys[key_index % len(keys)]
    positional = [k for k in ("prompt", "messages", "text", "tokens") if k in keys][0]
    kwargs = {k: v for k, v in GOOD.items() if k in keys and k != positional}
    kwargs[key] = value
    first = kwargs.pop(positional, GOOD[positional])
    try:
        result = getattr(model, method)(first, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    except PhirtError as exc:
        assert "\n" not in str(exc)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{method}({key}={value!r}) raised {type(exc).__name__}: {exc}")


# -- quantize ----------------------------------------------------------------------------------


def test_quantize_bad_input(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out.gguf"
    garbage = _garbage(tmp_path, "garbage.gguf", b"GGUF" + bytes(40))
    cases = [
        (lambda: quantize(None, out, "q8_0"), "src", InvalidArgumentError),
        (lambda: quantize(model_path, None, "q8_0"), "out", InvalidArgumentError),
        (lambda: quantize(model_path, out, 8), "file_type", InvalidArgumentError),
        (lambda: quantize(model_path, out, "q9_9"), "q9_9", QuantizeError),
        (lambda: quantize(model_path, out, "q8_0", threads=0), "threads", InvalidArgumentError),
        (lambda: quantize(tmp_path / "nope", out, "q8_0"), "nope", QuantizeError),
        (lambda: quantize(garbage, out, "q8_0"), str(garbage), PhirtError),
        (lambda: quantize(model_path, model_path, "q8_0"), "overwrite", QuantizeError),
        (lambda: quantize(model_path, tmp_path / "no" / "dir.gguf", "q8_0"), "dir.gguf", QuantizeError),
        (lambda: quantize(tmp_path, out, "q8_0"), str(tmp_path), PhirtError),  # empty folder
    ]  # fmt: skip
    for call, names, kind in cases:
        expect_phirt_error(call, names, kind)
    assert not list(tmp_path.glob("**/*.partial"))


# -- the CLI -----------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    try:
        code = cli_main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capsys.readouterr().err


def test_cli_prints_one_line_errors(
    capsys: pytest.CaptureFixture, tmp_path: Path, model_path: Path
):
    garbage = _garbage(tmp_path, "garbage.gguf", b"GGUF" + bytes(40))
    text = _garbage(tmp_path, "notes.txt", "héllo".encode())
    m = str(model_path)
    runs = [
        (["generate", str(tmp_path / "missing.gguf"), "-p", "x"], "no such file"),
        (["generate", str(garbage), "-p", "x"], str(garbage)),
        (["generate", str(tmp_path), "-p", "x"], "not an ONNX Runtime GenAI folder"),
        (["info", str(garbage)], str(garbage)),
        (["info", str(text)], "not a GGUF file"),
        (["generate", m, "-p", "x", "--threads", "0"], "n_threads"),
        (["generate", m, "-p", "x", "--ctx", "0"], "n_ctx"),
        (["generate", m, "-p", "x", "--top-p", "0"], "top_p"),
        (["generate", m, "-p", "x", "--seed", "-4"], "seed"),
        (["generate", m, "-p", "x", "--device", "tpu"], "tpu"),
        (["generate", m, "-p", "x" * 400, "--ctx", "16"], "context window"),
        (["quantize", str(tmp_path / "nope"), str(tmp_path / "o.gguf"), "--type", "q8_0"], "nope"),
        (["quantize", m, str(tmp_path / "no" / "o.gguf"), "--type", "q8_0"], "o.gguf"),
        (["bench", str(garbage)], str(garbage)),
        (["eval-quant", m, str(garbage), str(text)], str(garbage)),
    ]
    for argv, names in runs:
        code, err = _cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 1, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("phirt: error: "), (argv, err)
        assert names in lines[0], (argv, err)


def test_cli_subprocess_exit_status_and_no_traceback(tmp_path: Path, model_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(model_path.read_bytes()[:100_000])
    run = subprocess.run(
        [sys.executable, "-m", "phirt", "generate", str(bad), "-p", "hi"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert run.returncode == 1
    assert run.stderr.startswith(f"phirt: error: {bad}: ") and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1
    # a prompt on stdin that is not UTF-8
    run = subprocess.run(
        [sys.executable, "-m", "phirt", "generate", str(model_path), "-p", "-"],
        input=b"\xff\xfe bad bytes",
        capture_output=True,
    )
    assert run.returncode == 1 and b"not valid UTF-8" in run.stderr
    assert b"Traceback" not in run.stderr


def test_kernel_argument_errors_do_not_reach_users(model: phirt.Model) -> None:
    """phirt._kernels raises ValueError/TypeError for bad arrays (its own contract, tested in
    test_kernel_errors.py); the engine never passes it one a user could make bad: the checks
    above stop bad token ids, and load-time checks stop bad shapes (the fuzz corpus holds those
    to account). A kernel error that did get through would name the tensor as a FormatError."""
    ids = np.array([1, 2, 3], dtype=np.int64)
    assert model.logits(ids).shape == (3, model.n_vocab)
    assert model.logits(np.array([1, 2], dtype=np.int32)).shape == (2, model.n_vocab)
