"""The committed fuzz corpus (fuzz/corpus/: seeds and every input a fuzzer ever flagged) replayed
once through each coverage-guided target, so a fixed finding stays fixed. The GGUF inputs also
run through phirt.load and a generation in the fuzz corpus test (test_fuzz_corpus.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("atheris")


@pytest.mark.parametrize("target", ["gguf", "tokenizer"])
def test_committed_inputs_replay_cleanly(target: str) -> None:
    corpus = ROOT / "fuzz" / "corpus" / target
    assert any(corpus.iterdir()), f"{corpus} is empty: the seeds are missing"
    script = ROOT / "fuzz" / f"fuzz_{target}.py"
    run = subprocess.run(
        [sys.executable, str(script), "-runs=0", str(corpus)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Done" in run.stderr, run.stderr[-3000:]
