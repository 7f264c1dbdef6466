"""phirt.load on ONNX Runtime GenAI folders against onnxruntime-genai on the same folders.

The folders are made by onnxruntime-genai's own builder (onnx_factory.py), one per architecture:
Phi-3 with a sliding window in its graph, Phi-3 LongRoPE, Phi-4-mini (partial rotary, GQA, tied
int4 embeddings), Phi-4 (8-bit weights), Phi-2 and Llama, spanning block sizes 16/32/128, zero
points or not, and accuracy levels 0 and 4.

Tolerance. phirt runs an ONNX folder with onnxruntime's numerics: MatMulNBits as its CPU kernels
compute them at the node's accuracy_level (test_nbits.py), the graph's own cos/sin tables, and an
f32 KV cache. What is left is the order of float sums (attention, norms) and libm's exp/tanh
against MLAS's polynomials: a few units in the last place, which two layers amplify to ~1e-5 of
the logits. At accuracy level 0 (float activations) logits must agree to ATOL_FLOAT = 1e-3.
At accuracy level 4 activations are rounded to int8 per block, and a last-place difference can
push one code across a rounding boundary: that moves a projection output by about one activation
step (amax/127 of its block) times the weights it meets, which on these models reaches a few
tenths of a logit at a handful of positions. There logits must agree to ATOL_INT8 = 0.05 of the
row's logit range, and on average to 1/20 of that. The DirectML folder computes every activation
in float16 in onnxruntime (a relative rounding of 2^-11 at each op) and in float32 in phirt: there
logits must agree to ATOL_HALF = 0.01 of the row's range (measured: at most 0.003). Greedy tokens
must be identical, except that
at the first difference onnxruntime-genai's own top-2 margin is inside the tolerance and phirt
chose its runner-up (greedy.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import phirt
from greedy import assert_same_greedy, phirt_greedy
from onnx_factory import LONGROPE_ORIGINAL, SLIDING_WINDOW, SPECS, OnnxFactory
from ortgenai import og_greedy, og_logits, og_model

pytest.importorskip("onnxruntime_genai")

ATOL_FLOAT = 1e-3  # accuracy level 0: float arithmetic on both sides
ATOL_INT8 = 0.05  # accuracy level 4: fraction of a row's logit range (int8 rounding flips)
ATOL_HALF = 0.01  # float16 activations in onnxruntime: fraction of a row's logit range

# name -> (prompt length, greedy steps): long enough to pass twice the sliding window (32), and
# to cross the LongRoPE switch (64) while decoding
CASES = {
    "phi3": (40, 40),
    "phi3_longrope": (40, 40),
    "phi3_longrope_dml": (40, 40),
    "phi4_mini": (40, 40),
    "phi4": (24, 16),
    "phi2": (24, 16),
    "llama": (24, 16),
}


def prompt(n: int, seed: int) -> list[int]:
    """Token ids of ordinary vocabulary pieces (no control tokens, no BOS)."""
    return np.random.default_rng(seed).integers(300, 32000, n).tolist()


def tolerance(name: str, ref: np.ndarray) -> np.ndarray:
    """Per-row absolute tolerance for logits rows ``ref``."""
    spread = ref.max(axis=-1) - ref.min(axis=-1)
    if SPECS[name].ep == "dml":
        return ATOL_HALF * spread
    if SPECS[name].accuracy_level == 0:
        return np.full(ref.shape[0], ATOL_FLOAT)
    return ATOL_INT8 * spread


def assert_logits_close(name: str, got: np.ndarray, ref: np.ndarray, what: str) -> None:
    tol = tolerance(name, ref)
    err = np.abs(got - ref).max(axis=-1)
    worst = int(np.argmax(err / tol))
    assert np.all(err <= tol), (
        f"{name} {what}: position {worst} differs by {err[worst]:.4g} (tolerance {tol[worst]:.4g})"
    )
    rounding_flips = SPECS[name].accuracy_level == 4  # rare: most positions agree to the last bits
    if rounding_flips and len(err) >= 8:
        assert err.mean() <= tol.mean() / 20, f"{name} {what}: mean difference {err.mean():.4g}"


@pytest.fixture(scope="module")
def folders(onnx_models: OnnxFactory) -> dict[str, Path]:
    return {name: onnx_models.get(name) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_onnxruntime_genai(name: str, folders: dict[str, Path]) -> None:
    """Every position: phirt's prefill of the prompt, then one token per call, against
    onnxruntime-genai fed one token at a time (the same rotary tables at each position: the
    prompt stays below the LongRoPE switch, decoding crosses it); and the prompt's last row
    against onnxruntime-genai's own prefill."""
    n_prompt, n_steps = CASES[name]
    tokens = prompt(n_prompt + n_steps, seed=len(name))
    model = phirt.load(folders[name])
    ref_model = og_model(folders[name])
    got = list(model.logits(tokens[:n_prompt]))
    got += [model.engine.eval([t]) for t in tokens[n_prompt:]]
    ref = og_logits(ref_model, tokens, one_by_one=True)
    assert_logits_close(name, np.stack(got), ref, "per-position logits")
    last = og_logits(ref_model, tokens[:n_prompt], one_by_one=False)
    assert_logits_close(name, np.stack(got[n_prompt - 1 : n_prompt]), last, "prefill logits")


@pytest.mark.parametrize("name", list(CASES))
def test_greedy_matches_onnxruntime_genai(name: str, folders: dict[str, Path]) -> None:
    n_prompt, n_steps = CASES[name]
    tokens = prompt(n_prompt, seed=7 + len(name))
    model = phirt.load(folders[name])
    ref, steps = og_greedy(og_model(folders[name]), tokens, n_steps)
    _, got, got_steps = phirt_greedy(model, tokens, n_steps)
    tol = float(tolerance(name, np.stack(steps)).max())
    assert_same_greedy(got, ref, steps, tol, got_steps)


def test_longrope_switches_tables_as_the_graph_does(folders: dict[str, Path]) -> None:
    """A prompt already past original_max_position_embeddings takes the long tables for every
    token (onnxruntime's If on total length); decoding across the switch keeps the keys cached
    with the short ones. Both against onnxruntime-genai, and the two really differ."""
    name = "phi3_longrope"
    model = phirt.load(folders[name])
    ref_model = og_model(folders[name])
    tokens = prompt(LONGROPE_ORIGINAL + 6, seed=11)
    whole = model.logits(tokens)[-1:]
    assert_logits_close(name, whole, og_logits(ref_model, tokens, one_by_one=False), "long")
    stepwise = og_logits(ref_model, tokens, one_by_one=True)[-1:]
    assert np.abs(stepwise - whole).max() > 0.1  # short-rotated keys: another answer


def test_sliding_window_comes_from_the_graph(folders: dict[str, Path]) -> None:
    """The Phi-3 graph's local_window_size is the model's window; the LongRoPE folder's config has a window the builder left out of its graph, and
    phirt follows the graph (test_logits_match_onnxruntime_genai holds both to the reference)."""
    assert phirt.load(folders["phi3"]).engine.config.sliding_window == SLIDING_WINDOW
    assert phirt.load(folders["phi3_longrope"]).engine.config.sliding_window == 0


def test_architectures_and_variants_map_as_expected(folders: dict[str, Path]) -> None:
    def engine(name: str):  # noqa: ANN202
        return phirt.load(folders[name]).engine

    e = engine("phi4_mini")
    cfg, w = e.config, e.model.w
    assert (cfg.arch, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_rot) == ("phi3", 4, 2, 64, 48)
    assert "rope_cos_long.weight" in w and cfg.rope_original_ctx == LONGROPE_ORIGINAL
    assert type(w["token_embd.weight"]).__name__ == "NBitsRows"  # lm_head's bytes, no 2nd repack
    assert e.cache.kv_type == "f32"
    assert engine("phi4").model.w["output.weight"].w.bits == 8
    assert engine("phi2").config.arch == "phi2"
    llama = engine("llama")
    assert llama.config.arch == "llama" and "attn_q.weight" in llama.model.layers[0]
    assert llama.model.layers[0]["attn_q.weight"].w.block_size == 16
    lr = engine("phi3_longrope").model.layers[0]["attn_qkv.weight"].w
    assert (lr.block_size, lr.has_zero_points, lr.accuracy_level) == (128, True, 0)
    dml = engine("phi3_longrope_dml")  # separate q/k/v + RotaryEmbedding, one shifted cache
    w = dml.model.layers[0]["attn_qkv.weight"]
    assert (w.n, w.k) == (384, 128)
    assert dml.config.rope_original_ctx == LONGROPE_ORIGINAL
    assert dml.model.w["rope_cos.weight"].shape == (LONGROPE_ORIGINAL, 16)
    assert dml.model.w["rope_cos_long.weight"].shape == (4 * LONGROPE_ORIGINAL, 16)


def test_kv_type_can_be_chosen(folders: dict[str, Path]) -> None:
    """f16 / q8_0 caches (half / a quarter of the memory) stay close to the f32 one."""
    tokens = prompt(20, seed=5)
    ref = phirt.load(folders["phi3_longrope"]).logits(tokens)
    for kv in ("f16", "q8_0"):
        got = phirt.load(folders["phi3_longrope"], kv_type=kv).logits(tokens)
        assert np.abs(got - ref).max() < 0.05 * (ref.max() - ref.min())


def test_text_generation_matches_onnxruntime_genai(folders: dict[str, Path]) -> None:
    """Text in, text out: phirt's tokenizer, generation and detokenizer on the folder against
    onnxruntime-genai's tokenizer and greedy search."""
    import onnxruntime_genai as og

    folder = folders["phi3_longrope"]
    text = "The quick brown fox jumps over the lazy dog. In 1492,"
    ref_model = og_model(folder)
    tok = og.Tokenizer(ref_model)
    ids = list(tok.encode(text))
    model = phirt.load(folder)
    assert model.tokenize(text) == ids  # no BOS, as onnxruntime-genai feeds
    ref_ids, _ = og_greedy(ref_model, ids, 12)
    got = model.generate(text, max_tokens=12, temperature=0)
    assert got == tok.decode(np.array(ref_ids, dtype=np.int32))


def test_chat_template_and_stop_ids_come_from_the_folder(folders: dict[str, Path]) -> None:
    model = phirt.load(folders["phi3"])
    text = model.chat_template.render(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True
    )
    assert text == "<s><|user|>\nHi<|end|>\n<|assistant|>\n"  # the folder's chat_template.jinja
    assert model.chat_tokens([{"role": "user", "content": "Hi"}])[:2] == [1, 32010]
    assert 32000 in model.tokenizer.eot_ids  # genai_config.json's eos_token_id


def test_cli_runs_on_a_folder(folders: dict[str, Path]) -> None:
    folder = str(folders["phi2"])

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "phirt", *args], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    info = run("info", folder)
    assert "ONNX Runtime GenAI folder" in info and "phi2" in info and "MatMulNBits" in info
    out = run("generate", folder, "-p", "Hello", "--max-tokens", "4", "--temp", "0")
    assert out.strip()
    bench = run("bench", folder, "--pp", "8", "--tg", "4", "--reps", "1")
    assert "tok/s" in bench or "t/s" in bench
    chat = subprocess.run(
        [sys.executable, "-m", "phirt", "chat", folder, "--max-tokens", "4", "--temp", "0"],
        input="Hi\n/exit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert chat.returncode == 0, chat.stderr
