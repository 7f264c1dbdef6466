"""``phirt quantize SRC OUT --format onnx``: the exported folders, judged by onnxruntime-genai (which
runs them), onnxruntime-genai's own model builder (whose graph they reproduce) and phirt's GGUF
engine (whose numbers they hold).

- Semantics: each architecture's export at accuracy_level 0 (float activations) runs in
  onnxruntime-genai with logits equal to phirt's on the same weights dequantized to F32, within
  the rounding of phirt's f16 KV cache (measured 0.007-0.04 on logits spread ~5; bound 0.08), past
  a sliding window and on both LongRoPE caches. At the default level 4 (int8 activations) each
  side's int8 rounding moves logits by ~0.5 on these 2-layer models, so there the check is that
  onnxruntime-genai agrees with phirt's Q4_0 engine within that.
- Losslessness: Q4_0 / Q8_0 GGUF -> ONNX -> GGUF gives every tensor back bit for bit (the Q6_K
  output of llama.cpp's Q4_0 mix too), and the hyperparameters.
- The graph: on the same Hugging Face checkpoint, the export with plain round-to-nearest scales
  equals the builder's folder node for node and initializer for initializer (values bit for bit,
  rotary caches within 1 ulp), except the deliberate differences onnx_graph.py lists.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model_factory import ModelFactory, llama_spec, phi2_spec, phi3_spec
from phirt.errors import QuantizeError

og = pytest.importorskip("onnxruntime_genai")
onnx = pytest.importorskip("onnx")

PROMPT = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889] * 3

# GGUF fixtures onnxruntime can run: its fused rotary needs (rotary dims / 2) % 8 == 0, so the
# partial-rotary ones rotate 16 of their 32 head dims.
GGUF_SPECS = {
    "phi3": phi3_spec("Q4_0"),
    "phi3_gqa": phi3_spec("Q4_0", "gqa"),
    "phi3_swa": phi3_spec("Q4_0", "swa", sliding_window=16),
    "phi3_longrope": phi3_spec("Q4_0", "longrope", n_ctx_orig=32),
    "phi4_mini": replace(phi3_spec("Q4_0", "partial_rotary_tied"), n_rot=16),
    "phi2": replace(phi2_spec("Q4_0"), n_rot=16),
    "phi2_fused": replace(phi2_spec("Q4_0", "fused_qkv"), n_rot=16),
    "llama": llama_spec("Q4_0"),
}


def og_run(folder: Path, tokens: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy tokens and the logits each was picked from, from onnxruntime-genai."""
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(tokens) + steps, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(tokens)
    out, logits = [], []
    for _ in range(steps):
        logits.append(np.array(gen.get_logits(), dtype=np.float32).reshape(-1))
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out, logits


def phirt_run(gguf: Path, tokens: list[int], picks: list[int], n_ctx: int | None = None
              ) -> list[np.ndarray]:  # fmt: skip
    """phirt's logits after the prompt and after each of `picks` (teacher-forced)."""
    import phirt

    model = phirt.load(str(gguf), n_ctx=n_ctx)
    logits = [model.logits(tokens)[-1]]
    for t in picks[:-1]:
        logits.append(np.asarray(model.engine.eval([t])).reshape(-1))
    return logits


@pytest.fixture(scope="module")
def exported(models: ModelFactory, tmp_path_factory: pytest.TempPathFactory):
    """name, accuracy level -> (GGUF source, exported folder), made once per module."""
    from phirt.quantize.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx-export")
    cache: dict[tuple[str, int], tuple[Path, Path]] = {}

    def get(name: str, level: int = 4) -> tuple[Path, Path]:
        if (name, level) not in cache:
            gguf = models.build(GGUF_SPECS[name])
            out = root / f"{name}-level{level}"
            export_onnx(gguf, out, accuracy_level=level)
            cache[name, level] = (gguf, out)
        return cache[name, level]

    return get


# ---- semantics: onnxruntime-genai on the export == phirt on the same weights -------------------


@pytest.mark.parametrize("name", list(GGUF_SPECS))
def test_float_activation_export_equals_phirt(name: str, exported, tmp_path: Path) -> None:
    from phirt.quantize import quantize

    gguf, folder = exported(name, level=0)
    dequantized = quantize(gguf, tmp_path / "f32.gguf", "f32").path
    # LongRoPE: the graph picks the short cache while the sequence fits the original context (32)
    # and the long one past it; phirt's GGUF engine picks by its context size, as llama.cpp does
    runs = [(PROMPT, None)]
    if name == "phi3_longrope":
        runs = [(PROMPT[:20], 32), (PROMPT, None)]
    for prompt, n_ctx in runs:
        picks, ours = og_run(folder, prompt, 6)
        ref = phirt_run(Path(dequantized), prompt, picks, n_ctx)
        for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
            err = float(np.abs(a - b).max())
            assert err <= 0.08, f"{name}: step {step} logits differ by {err:.3g}"


@pytest.mark.parametrize("name", ["phi3", "phi4_mini", "phi2", "llama"])
def test_int8_activation_export_runs_close_to_phirt(name: str, exported) -> None:
    gguf, folder = exported(name)
    genai = json.loads((folder / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["num_hidden_layers"] == GGUF_SPECS[name].n_layer
    picks, ours = og_run(folder, PROMPT, 4)
    ref = phirt_run(gguf, PROMPT, picks)
    for a, b in zip(ours, ref, strict=True):
        assert float(np.abs(a - b).max()) <= 1.5
        assert float(np.corrcoef(a, b)[0, 1]) > 0.99


@pytest.mark.parametrize("level", [0, 4])
@pytest.mark.parametrize("name", ["phi3", "phi2", "llama"])
def test_phirt_runs_its_exports_as_onnxruntime_genai_does(name: str, level: int, exported) -> None:
    """An export's own quantized token table (GatherBlockQuantized on its codes, the untied form
    ONNX Runtime's quantizer names Gather_Q4) reaches phirt's native loader, and phirt's logits on
    the folder are onnxruntime-genai's: equal at accuracy level 0 (measured 0.0), and at level 4
    apart only where an int8 activation rounds the other way (measured up to 2 % of the logit
    range on the Llama fixture, 0.0 on the others)."""
    import phirt

    gguf, folder = exported(name, level=level)
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    embed = [n for n in graph.node if n.name.startswith("/model/embed_tokens/")]
    assert [n.op_type for n in embed] == ["GatherBlockQuantized"], embed
    assert phirt.load(str(folder)).backend == "native"  # device='auto' keeps it on phirt
    picks, ref = og_run(folder, PROMPT, 6)
    ours = phirt_run(folder, PROMPT, picks)
    for step, (a, b) in enumerate(zip(ours, ref, strict=True)):
        err, spread = float(np.abs(a - b).max()), float(b.max() - b.min())
        bound = 1e-3 if level == 0 else 0.05 * spread
        assert err <= bound, f"{name}: step {step} logits differ by {err:.3g}"


# ---- losslessness: GGUF -> ONNX -> GGUF, bit for bit ------------------------------------------


def gguf_tensors(path: Path) -> dict[str, tuple[int, bytes]]:
    import gguf

    reader = gguf.GGUFReader(path)
    return {
        t.name: (int(t.tensor_type), bytes(np.asarray(t.data).tobytes())) for t in reader.tensors
    }


def gguf_hparams(path: Path, arch: str) -> dict[str, object]:
    """The {arch}.* keys, less what the fixture factory leaves out and llama.cpp's converter
    writes with no new information (a sliding window of 0, Llama's vocab_size, the default rope
    base)."""
    import gguf

    reader = gguf.GGUFReader(path)
    out = {k: f.contents() for k, f in reader.fields.items() if k.startswith(arch + ".")}
    if out.get(f"{arch}.attention.sliding_window") == 0:
        del out[f"{arch}.attention.sliding_window"]
    out.pop(f"{arch}.vocab_size", None)  # the converter's copy of the token count (Llama)
    out.setdefault(f"{arch}.rope.freq_base", 10000.0)  # llama.cpp's default when absent
    return out


@pytest.mark.parametrize(
    ("name", "qtype", "via"),
    [
        # phirt's quantizer writes llama.cpp's mixes: q4_0 has a Q6_K output (int8 block 16 with
        # zero points 32 in ONNX), q8_0 is Q8_0 throughout
        ("phi3", "q4_0", "F16"),
        ("phi3", "Q8_0", None),  # gguf-py's Q8_0 file
        ("phi4_mini", "q4_0", "F16"),  # tied: the table rides on the lm_head's codes
        ("llama", "q4_0", "F16"),  # q/k rows reordered for ONNX's rotary and back
        ("phi2", "Q8_0", None),
    ],
)
def test_gguf_onnx_gguf_round_trip_is_bit_for_bit(
    name: str, qtype: str, via: str | None, models: ModelFactory, tmp_path: Path
) -> None:
    from phirt.quantize import quantize
    from phirt.quantize.onnx_export import export_onnx

    spec = GGUF_SPECS[name]
    if via is None:
        src = models.build(replace(spec, qtype=qtype))
    else:  # phirt's own quantizer, which mixes types as llama.cpp does
        src = quantize(models.build(replace(spec, qtype=via)), tmp_path / "src.gguf", qtype).path
        src = Path(src)
    result = export_onnx(src, tmp_path / "onnx")
    assert all("exact" in kind for kind in result.formats), result.formats
    assert not result.warnings
    back = quantize(tmp_path / "onnx", tmp_path / "back.gguf", qtype.lower())
    assert not [w for w in back.warnings if "quantized again" in w]
    a, b = gguf_tensors(Path(src)), gguf_tensors(Path(back.path))
    assert a.keys() == b.keys()
    for tensor in a:
        assert a[tensor] == b[tensor], tensor
    arch = spec.arch
    ha, hb = gguf_hparams(Path(src), arch), gguf_hparams(Path(back.path), arch)
    assert ha == hb


def test_int4_folder_back_to_f32_holds_onnxruntimes_numbers(exported, tmp_path: Path) -> None:
    """The other direction for weights that are not a GGML type's: a folder's MatMulNBits weights
    dequantize to exactly onnxruntime's numbers, so an F32 GGUF of the folder computes what
    onnxruntime-genai computes (at accuracy level 0)."""
    from phirt.quantize import quantize

    _, folder = exported("phi3_gqa", level=0)
    f32 = quantize(folder, tmp_path / "f32.gguf", "f32").path
    picks, ours = og_run(folder, PROMPT, 4)
    for a, b in zip(ours, phirt_run(Path(f32), PROMPT, picks), strict=True):
        assert float(np.abs(a - b).max()) <= 0.08


# ---- the graph: the builder's, on the same checkpoint -----------------------------------------


def graph_summary(folder: Path) -> tuple[dict, dict, list]:
    from onnx import helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    nodes = {}
    for n in model.graph.node:
        attrs = {}
        for a in n.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, onnx.GraphProto):
                v = (v.name, tuple(o.name for o in v.output), tuple(x.name for x in v.node))
            elif hasattr(v, "dims"):
                v = (tuple(v.dims), v.data_type)
            elif isinstance(v, float):
                v = float(np.float32(v))
            elif isinstance(v, bytes):
                v = v.decode()
            attrs[a.name] = v
        nodes[n.name] = (n.op_type, n.domain or "", tuple(n.input), tuple(n.output), attrs)
    inits = {t.name: (t.data_type, tuple(t.dims)) for t in model.graph.initializer}
    io = [
        (v.name, v.type.tensor_type.elem_type,
         tuple(d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim))
        for v in [*model.graph.input, *model.graph.output]
    ]  # fmt: skip
    return nodes, inits, io


def initializer_values(folder: Path) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    return {t.name: numpy_helper.to_array(t, base_dir=str(folder)) for t in model.graph.initializer}


def _builder_spec(name: str):
    from onnx_factory import SPECS, OnnxSpec

    base = SPECS[name]
    config = {k: v for k, v in base.config if k not in ("layer_types", "sliding_window")}
    return OnnxSpec(f"{name}_default", base.hf_class, tuple(sorted(config.items())))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["phi3", "phi4_mini", "phi2", "llama"])
def test_graph_equals_the_builders(name: str, onnx_models, tmp_path: Path) -> None:
    """Same checkpoint, the builder's default int4 (symmetric, block 32, accuracy level 4) against
    the export with --rtn: the same graph and the same weights."""
    from onnx_factory import has_builder, run_builder, write_checkpoint
    from phirt.quantize.onnx_export import export_onnx

    if not has_builder():
        pytest.skip("needs the ORT GenAI builder")
    spec = _builder_spec(name)
    hf_dir = write_checkpoint(spec, tmp_path / "hf", onnx_models.tokenizer_dir)
    run_builder(spec, hf_dir, tmp_path / "builder", tmp_path / "cache")
    export_onnx(hf_dir, tmp_path / "ours", search=False)
    nodes_b, inits_b, io_b = graph_summary(tmp_path / "builder")
    nodes_o, inits_o, io_o = graph_summary(tmp_path / "ours")
    assert nodes_o.keys() == nodes_b.keys()
    for key in nodes_b:
        ours, theirs = nodes_o[key], nodes_b[key]
        if name == "phi2" and "LayerNorm" in key:
            # builder 0.18 gives Phi-2's LayerNorms epsilon 1e-6 whatever the config says (it
            # reads rms_norm_eps, which PhiConfig lacks); phirt writes the config's layer_norm_eps
            assert ours[4]["epsilon"] == float(np.float32(1e-5)) and theirs[4]["epsilon"] == float(np.float32(1e-6))  # fmt: skip
            ours, theirs = ours[:4], theirs[:4]
        assert ours == theirs, key
    assert inits_o == inits_b
    assert io_o == io_b
    vals_b, vals_o = initializer_values(tmp_path / "builder"), initializer_values(tmp_path / "ours")
    for key, ref in vals_b.items():
        if key.endswith(("cos_cache", "sin_cache")):
            np.testing.assert_allclose(vals_o[key], ref, rtol=0, atol=2.0**-23)
        else:
            np.testing.assert_array_equal(vals_o[key], ref, err_msg=key)
    genai_b = json.loads((tmp_path / "builder" / "genai_config.json").read_text())
    genai_o = json.loads((tmp_path / "ours" / "genai_config.json").read_text())
    for key in ("type", "context_length", "vocab_size", "bos_token_id"):
        assert genai_o["model"][key] == genai_b["model"][key]
    for key in ("head_size", "hidden_size", "num_attention_heads", "num_key_value_heads",
                "num_hidden_layers", "inputs", "outputs"):  # fmt: skip
        assert genai_o["model"]["decoder"][key] == genai_b["model"]["decoder"][key]


# ---- quantization: never worse than onnxruntime's ---------------------------------------------


def test_rtn_is_onnxruntimes_and_search_is_never_worse() -> None:
    import phirt._kernels as K

    quantize_4bits = pytest.importorskip("onnxruntime.capi._pybind_state").quantize_matmul_4bits
    rng = np.random.default_rng(3)
    n, k, bs = 96, 640, 32
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 3, (n, 1))).astype(np.float32)
    w[rng.random((n, k)) < 0.01] *= 8  # outliers
    nb = k // bs
    packed = np.zeros((n, nb, bs // 2), np.uint8)
    scales = np.zeros(n * nb, np.float32)
    zp = np.zeros(n * ((nb + 1) // 2), np.uint8)
    quantize_4bits(packed, np.ascontiguousarray(w.T), scales, zp, bs, n, k, True)
    b_rtn, s_rtn = K.nbits_quantize(w, bs, 4, False)
    np.testing.assert_array_equal(b_rtn, packed)
    np.testing.assert_array_equal(s_rtn.reshape(-1), scales)

    def block_err(b: np.ndarray, s: np.ndarray) -> np.ndarray:
        deq = K.nbits_dequantize(K.nbits_repack(b, s, None, k, bs)).astype(np.float64)
        return ((deq - w) ** 2).reshape(n, nb, bs).sum(axis=2)

    b, s = K.nbits_quantize(w, bs, 4, True)
    err, err_rtn = block_err(b, s), block_err(b_rtn, s_rtn)
    assert np.all(err <= err_rtn)
    assert err.sum() < 0.95 * err_rtn.sum()


# ---- tokenizer files from a GGUF vocabulary ----------------------------------------------------


def test_tokenizer_json_from_the_phi3_gguf_vocabulary(vocab_path: Path, exported) -> None:
    """tokenizer.json written from the real Phi-3 GGUF vocabulary: the `tokenizers` library gives
    llama.cpp's ids on llama.cpp's own test vectors, and onnxruntime-genai's tokenizer on an
    exported folder gives phirt's ids (it adds no BOS) and decodes them back."""
    from tokenizers import Tokenizer as HfTokenizer

    from phirt.tokenizer import Tokenizer

    _, folder = exported("phi3")
    hf = HfTokenizer.from_file(str(folder / "tokenizer.json"))
    texts = vocab_path.with_suffix(".gguf.inp").read_text(encoding="utf-8")
    ids = vocab_path.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    for text, want in zip(texts.split("\n__ggml_vocab_test__\n")[:-1], ids, strict=False):
        assert hf.encode(text, add_special_tokens=False).ids == [int(t) for t in want.split()]
    ours = Tokenizer.from_gguf(vocab_path)
    gtok = og.Tokenizer(og.Model(str(folder)))
    for text in ["Hello world", "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", "  a\tb\n\nc",
                 "naïve café 日本語 🦙", "<s>x</s> <|endoftext|>"]:  # fmt: skip
        want = ours.encode(text, add_bos=False)
        assert list(gtok.encode(text)) == want, text
        # decoding gives the text back; whether the space SentencePiece puts before the first
        # word survives differs (onnxruntime-genai keeps it at the start, `tokenizers` and phirt
        # drop it there, phirt keeps it after a special token), so it is left out here
        assert gtok.decode(want).lstrip(" ") == ours.decode(want).lstrip(" ")


# ---- bad input ---------------------------------------------------------------------------------


def test_export_errors(models: ModelFactory, tmp_path: Path) -> None:
    from phirt.quantize.onnx_export import export_onnx

    gguf = models.build(GGUF_SPECS["phi3"])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(QuantizeError, match="exists and is not empty"):
        export_onnx(gguf, busy)
    with pytest.raises(QuantizeError, match="block-size must be"):
        export_onnx(gguf, tmp_path / "a", block_size=48)
    with pytest.raises(QuantizeError, match="accuracy-level"):
        export_onnx(gguf, tmp_path / "a", accuracy_level=5)
    with pytest.raises(QuantizeError, match="unknown ONNX weight type"):
        export_onnx(gguf, tmp_path / "a", weight_type="q4_k")
    with pytest.raises(QuantizeError, match="no such file"):
        export_onnx(tmp_path / "nope.gguf", tmp_path / "a")
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()


def test_nan_weights_leave_no_folder(models: ModelFactory, tmp_path: Path) -> None:
    from gguf import GGUFReader

    from phirt.quantize.onnx_export import export_onnx

    src = models.build(replace(GGUF_SPECS["phi3"], qtype="F32"))
    bad = tmp_path / "nan.gguf"
    shutil.copy(src, bad)
    reader = GGUFReader(bad, "r+")
    tensor = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    tensor.data[0, 0] = np.nan
    del reader
    with pytest.raises(QuantizeError, match="blk.1.ffn_down.weight.*NaN"):
        export_onnx(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_cli(models: ModelFactory, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from phirt.cli import main

    gguf = models.build(replace(GGUF_SPECS["llama"], qtype="F16"))
    out = tmp_path / "int8"
    assert main(["quantize", str(gguf), str(out), "--format", "onnx", "--type", "int8"]) == 0
    assert "int8 block 32 x11" in " ".join(capsys.readouterr().err.split())
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    bits = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
            if a.name == "bits"}  # fmt: skip
    assert bits == {8}
    assert (
        main(["quantize", str(gguf), str(tmp_path / "x"), "--format", "onnx", "--type", "q4_0"])
        == 1
    )
    assert "--format onnx takes --type auto, int4, int8" in capsys.readouterr().err
