"""The fuzz corpus: thousands of damaged model files, each loaded in a worker process. Every case
must either load and generate, or raise a PhirtError whose one-line message names the file: no
crash, no hang, no other exception, and no allocation beyond a small multiple of the file's size.

Knobs (environment): PHIRT_FUZZ_CASES random cases (default 1300, on top of ~950
deterministic truncations), PHIRT_FUZZ_SEED, PHIRT_FUZZ_WORKERS, PHIRT_FUZZ_TIMEOUT seconds per
case, PHIRT_FUZZ_MEM_FACTOR (a case may grow the address space by this many times its file size
plus 64 MiB; 0: no limit), PHIRT_FUZZ_BOUNDARIES=0 skips the truncations, PHIRT_FUZZ_SAVE a
folder that receives every failing input. The sanitizer job (.ci/sanitize.sh) runs a share of
the corpus with the ASan build of the extension, whose runtime the workers inherit (LD_PRELOAD).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from fuzz_cases import SavedInputs
from fuzz_gguf import GGUFFamily
from fuzz_pool import WorkerPool, run_corpus
from model_factory import ModelFactory, has_llama_cpp

REGRESSIONS = Path(__file__).parents[1] / "fuzz" / "corpus" / "gguf"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def fuzz_bases(models: ModelFactory) -> tuple[dict[str, Path], dict[str, float]]:
    """The real files the corpus damages, with the share of random cases each gets: fixture
    models of the three architectures (Phi-3 vocabulary, SentencePiece) in several weight types,
    and SmolLM2 (byte-level BPE, 98 MB: few cases, each writes a whole copy) when present."""
    bases = {
        "phi3-Q4_0": models.phi3("Q4_0", "plain"),
        "phi3-longrope-F16": models.phi3("F16", "longrope", n_embd=64),
        "llama-Q8_0": models.llama("Q8_0", "gqa"),
        "phi2-Q5_1-fused": models.phi2("Q5_1", "fused_qkv"),
        "phi3-tied-Q4_1": models.phi3("Q4_1", "partial_rotary_tied"),
    }
    weights = {name: 1.0 for name in bases}
    if has_llama_cpp():
        bases["phi3-Q4_K_M"] = models.phi3("Q4_K_M", "gqa")
        weights["phi3-Q4_K_M"] = 0.7
    smollm2 = os.environ.get("PHIRT_SMOLLM2_GGUF")
    if smollm2 and Path(smollm2).is_file():
        bases["smollm2"] = Path(smollm2)
        weights["smollm2"] = 0.12
    return bases, weights


@pytest.mark.slow
def test_fuzz_corpus(models: ModelFactory, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bases, weights = fuzz_bases(models)
    gguf = GGUFFamily(bases, weights, all_cuts=("phi3-Q4_0", "llama-Q8_0", "phi2-Q5_1-fused"))
    saved = SavedInputs(REGRESSIONS)
    n_random = _env_int("PHIRT_FUZZ_CASES", 1300)
    seed = _env_int("PHIRT_FUZZ_SEED", 0)
    save = os.environ.get("PHIRT_FUZZ_SAVE")
    pairs = itertools.chain(
        ((saved, c) for c in saved.cases()),
        ((gguf, c) for c in gguf.cases(n_random, seed, _env_int("PHIRT_FUZZ_BOUNDARIES", 1) > 0)),
    )
    with WorkerPool(
        tmp_path,
        n_workers=_env_int("PHIRT_FUZZ_WORKERS", min(os.cpu_count() or 2, 4)),
        timeout=float(os.environ.get("PHIRT_FUZZ_TIMEOUT", 30)),
        mem_factor=float(os.environ.get("PHIRT_FUZZ_MEM_FACTOR", 3)),
        warm=[bases["phi3-Q4_0"]],
    ) as pool:
        summary = run_corpus(pool, pairs, Path(save) if save else None)
    with capsys.disabled():
        print("\n" + summary.lines(f"fuzz corpus (seed {seed}, {len(bases)} base files)"))
    assert summary.cases >= 2000 or n_random < 1300
    assert summary.counts["loaded"] > 0 and summary.counts["rejected"] > 0
    shown = "\n".join(r.report() for r in summary.failures[:15])
    assert not summary.failures, f"{len(summary.failures)} failing cases:\n{shown}"
