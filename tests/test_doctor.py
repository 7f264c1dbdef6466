"""`phirt doctor`, `doctor --verify` and `bench --vs` on this machine, across the backends that
are installed here, and the verdict that tells rounding from an accelerator answering wrongly."""

from __future__ import annotations

import numpy as np
import pytest

from phirt.backends import get_backend
from phirt.cli import main
from phirt.doctor import _verdict

BACKENDS = ("native", "llamacpp", "ortgenai", "openvino", "mlx")


def _installed() -> list[str]:
    return [n for n in BACKENDS if n == "native" or get_backend(n).version() is not None]


def test_doctor_lists_every_backend_honestly(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for word in ("ISA path", "threads", "memory", "CPU"):
        assert word in out
    for name in BACKENDS:
        backend = get_backend(name)
        assert name in out
        version = backend.version()
        if backend.packages:
            assert (version in out) if version else ("is not installed" in out)


def test_doctor_with_a_model_names_the_choice(models, capsys) -> None:
    assert main(["doctor", str(models.llama("Q4_0"))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "device='auto' chooses: native on cpu" in out


@pytest.mark.slow
def test_doctor_verify_across_the_installed_backends(backend_models, capsys) -> None:
    if len(_installed()) < 3:
        pytest.skip("needs two vendor backends installed")
    assert main(["doctor", str(backend_models.gguf("q8_0")), "--verify"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("verify: greedy") :]
    rows = [line for line in table.splitlines() if line.startswith("│ ") and "/16" in line]
    verified = {line.split("│")[1].strip() for line in rows}
    assert {"native"} < verified and len(verified) >= 3
    llamacpp = [line for line in rows if line.split("│")[1].strip() == "llamacpp"]
    if llamacpp:  # same numerics as native: every token
        assert "16/16" in llamacpp[0] and "agrees" in llamacpp[0]


@pytest.mark.slow
def test_bench_vs_tabulates_the_installed_backends(backend_models, capsys) -> None:
    if len(_installed()) < 3:
        pytest.skip("needs two vendor backends installed")
    args = ["bench", str(backend_models.gguf("q8_0")), "--vs", "--pp", "16", "--tg", "4"]
    assert main([*args, "--reps", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("│ ") and "MiB" in line]
    assert len(rows) >= 3
    assert rows[0].split("│")[1].strip() == "native"


def test_verdict_tells_rounding_from_a_wrong_answer() -> None:
    ref = [5, 6, 7]
    steps = np.zeros((3, 10), dtype=np.float32)
    steps[:, 0] = -5.0  # logit range 10 at each step
    steps[0, 5] = steps[1, 6] = 5.0
    steps[2, 7], steps[2, 8] = 5.0, 4.9  # step 2: a near-tie between 7 and 8
    assert _verdict(3, [5, 6, 7], ref, steps) == "agrees"
    assert "near-tie" in _verdict(2, [5, 6, 8], ref, steps)
    assert _verdict(1, [5, 9, 7], ref, steps).startswith("DIFFERS at token 1")
