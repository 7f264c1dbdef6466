"""python -m phirt driven end to end as a user would: subprocesses with piped stdin and signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smollm2 import smollm2_path

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def phirt(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "phirt", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def test_chat_two_turns_reuse_cache_and_exit(models) -> None:
    model = models.phi3("Q4_0", "plain")
    result = phirt(
        "chat", str(model), "--temp", "0", "--max-tokens", "8", "--ctx", "512",
        stdin="Hello there\nTell me more\n/exit\nthis line is never read\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = re.findall(r"prompt (\d+) tokens \((\d+) cached\)", result.stderr)
    assert len(stats) == 2, result.stderr  # two replies, then /exit stopped the loop
    (p1, c1), (p2, c2) = [(int(a), int(b)) for a, b in stats]
    assert c1 == 0
    assert c2 >= p1  # the whole first turn came from the cache
    assert p2 > p1


def test_chat_reset_clears_the_conversation(models) -> None:
    model = models.phi3("Q4_0", "plain")
    result = phirt(
        "chat", str(model), "--temp", "0", "--max-tokens", "4",
        stdin="Hello\n/reset\nHello\n/exit\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[conversation cleared]" in result.stderr
    prompts = [int(n) for n in re.findall(r"prompt (\d+) tokens", result.stderr)]
    assert prompts[0] == prompts[1]


def test_ctrl_c_stops_the_reply_not_the_program() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "phirt", "chat", str(smollm2_path()), "--temp", "0",
         "--max-tokens", "3000", "--ctx", "4096"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert proc.stdin and proc.stdout
        proc.stdin.write("Count from 1 to 2000, separated by commas.\n")
        proc.stdin.flush()
        proc.stdout.read(8)  # the reply is streaming
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.stdin.write("/exit\n")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "[stopped]" in err
    assert "Traceback" not in err


def test_generate_reads_prompt_from_stdin(models) -> None:
    model = models.llama("Q8_0")
    a = phirt("generate", str(model), "-p", "-", "--temp", "0", "--max-tokens", "6", stdin="Hi")
    b = phirt("generate", str(model), "-p", "Hi", "--temp", "0", "--max-tokens", "6")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout.strip()


def test_info_describes_the_file(models) -> None:
    result = phirt("info", str(models.phi3("Q4_0", "gqa")))
    assert result.returncode == 0, result.stderr
    for needle in ("phi3", "Q4_0", "32064"):
        assert needle in result.stdout


def _corrupt(tmp_path: Path, src: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    out = tmp_path / f"{how}.gguf"
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bad_magic":
        data[:4] = b"GGUX"
    elif how == "unknown_arch":
        i = data.find(b"phi3")
        data[i : i + 4] = b"zeta"
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"past end of file|truncated"),
        ("bad_magic", r"not a GGUF file|magic"),
        ("unknown_arch", r"unsupported architecture 'zeta'"),
    ],
)
def test_corrupt_files_are_one_line_errors(models, tmp_path: Path, how: str, message: str) -> None:
    bad = _corrupt(tmp_path, models.phi3("Q4_0", "plain"), how)
    for command in (["generate", str(bad), "-p", "hi"], ["chat", str(bad)]):
        result = phirt(*command, stdin="/exit\n")
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"phirt: error: {bad}")
        assert re.search(message, lines[0]), lines[0]


def test_corrupt_files_raise_in_the_api(models, tmp_path: Path) -> None:
    import phirt as api

    for how in ("truncated", "bad_magic", "unknown_arch"):
        bad = _corrupt(tmp_path, models.phi3("Q4_0", "plain"), how)
        with pytest.raises(api.PhirtError, match=re.escape(str(bad))):
            api.load(bad)


def test_unsupported_quant_type_is_named(models, tmp_path: Path) -> None:
    # IQ4_NL (type 20) has Q4_0's block size and bytes: flipping a tensor's type id keeps the file
    # valid, so the engine itself must say it cannot run that type.
    data = bytearray(models.phi3("Q4_0", "plain").read_bytes())
    name = b"blk.0.attn_qkv.weight"
    type_at = data.find(name) + len(name) + 4 + 2 * 8  # after n_dims (u32) and two u64 dims
    assert int.from_bytes(data[type_at : type_at + 4], "little") == 2
    data[type_at : type_at + 4] = (20).to_bytes(4, "little")
    bad = tmp_path / "iq4nl.gguf"
    bad.write_bytes(bytes(data))
    result = phirt("generate", str(bad), "-p", "hi")
    assert result.returncode == 1
    assert "blk.0.attn_qkv.weight" in result.stderr and "IQ4_NL" in result.stderr


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    result = phirt("generate", str(tmp_path / "nope.gguf"), "-p", "hi")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
