"""Every vendor backend, for real on this CPU: each loads a tiny model through
`phirt.load(..., backend=...)`, and its greedy output is held to phirt native's on the same weights
(backend_models.py makes one model in every format), or to the vendor's own generator where the
format carries numbers native does not read yet (int4 ONNX folders).

Where the backends' numerics differ (llama.cpp and native quantize activations to 8 bits, MLX and
ONNX Runtime keep them float32, OpenVINO runs its own kernels), greedy continuations are compared
as test_engine_llamacpp does: token for token, except that at the first difference the
reference's top-2 margin must be within the tolerance and the other side picked its runner-up.
"""

from __future__ import annotations

import numpy as np
import pytest

import phirt
from backend_models import greedy_ids, reference_steps
from greedy import assert_same_greedy
from phirt.backends import get_backend
from phirt.backends.base import Device
from phirt.errors import PhirtError, UnsupportedError

PROMPT = "The capital of France is"
N = 16


def _installed(name: str) -> None:
    if get_backend(name).version() is None:
        pytest.skip(f"{name} is not installed")


def _compare(backend_model, native, tol: float) -> list[int]:
    prompt = native.tokenize(PROMPT)
    ref = greedy_ids(native, prompt, N)
    got = greedy_ids(backend_model, prompt, N)
    assert_same_greedy(got, ref, reference_steps(native, prompt, ref), tol)
    return got


def _logit_diff(backend_model, native) -> tuple[float, float]:
    ids = native.tokenize(PROMPT + " Paris, and the capital of Italy is Rome.")
    ref = native.logits(ids)
    got = backend_model.logits(ids)
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max()), float(ref.max() - ref.min())


@pytest.mark.slow
def test_llamacpp_cpu_matches_native(backend_models) -> None:
    _installed("llamacpp")
    path = backend_models.gguf("q8_0")
    native = phirt.load(path, backend="native")
    model = phirt.load(path, backend="llamacpp")
    assert (model.backend, model.device) == ("llamacpp", "cpu")
    assert "backend='llamacpp' requested" in model.backend_reason
    diff, spread = _logit_diff(model, native)
    assert diff < 1e-3 * spread  # same 8-bit activation blocks, same integer dots
    _compare(model, native, tol=1e-3 * spread)
    # the text API on top: phirt's sampler, stop handling and detokenizer, as on native
    assert model.generate(PROMPT, max_tokens=8, temperature=0) == native.generate(
        PROMPT, max_tokens=8, temperature=0
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["llamacpp", "ortgenai", "mlx"])
def test_follow_up_turns_reuse_and_trim_the_cache(backend_models, backend) -> None:
    """A second chat turn evaluates only its new tokens (the shared prefix stays in the
    backend's cache, the rest is trimmed) and answers as a fresh load of the same backend."""
    _installed(backend)
    path = {"llamacpp": backend_models.gguf("q8_0"), "mlx": backend_models.hf()}.get(backend)
    path = path or backend_models.onnx()
    model = phirt.load(path, backend=backend)
    msgs = [{"role": "user", "content": "Hi"}]
    first = model.chat(msgs, max_tokens=4, temperature=0)
    assert model.last_stats.cached_tokens == 0
    follow = [*msgs, {"role": "assistant", "content": first}, {"role": "user", "content": "Why"}]
    again = model.chat(follow, max_tokens=4, temperature=0)
    assert model.last_stats.cached_tokens > 0
    # a different second turn: the cache keeps only the shared prefix
    other = model.chat([{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0)
    fresh = phirt.load(path, backend=backend)
    assert again == fresh.chat(follow, max_tokens=4, temperature=0)
    fresh.reset()
    assert other == fresh.chat([{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0)


@pytest.mark.slow
def test_folder_tokenizer_matches_the_gguf_vocabulary(backend_models) -> None:
    """tokenizer.json (folder backends) and the GGUF vocabulary (native) give the same ids, and
    streaming decoding gives the same text, word-start spaces included."""
    from phirt.backends.folder import FolderTokenizer
    from phirt.tokenizer import Tokenizer

    folder = FolderTokenizer(backend_models.hf())
    gguf = Tokenizer.from_gguf(backend_models.gguf("q8_0"))
    text = "Hello world, ünïcode 日本語 🦙 <|im_end|> x  y\n\tz"
    assert folder.encode(text) == gguf.encode(text)
    ids = gguf.encode(" France is Paris. 🦙 über", add_bos=False)
    for strip in (False, True):
        a, b = (
            folder.stream_decoder(strip_leading_space=strip),
            gguf.stream_decoder(strip_leading_space=strip),
        )
        assert (
            "".join(a.push(i) for i in ids) + a.flush()
            == "".join(b.push(i) for i in ids) + b.flush()
        )
    assert folder.eot_ids == gguf.eot_ids and folder.bos_text == gguf.bos_text


@pytest.mark.slow
def test_ortgenai_cpu_matches_native_on_the_same_f32_weights(backend_models) -> None:
    _installed("ortgenai")
    native = phirt.load(backend_models.gguf("f32"), backend="native")
    model = phirt.load(backend_models.onnx(), backend="ortgenai", device="cpu")
    assert (model.backend, model.device) == ("ortgenai", "cpu")
    diff, spread = _logit_diff(model, native)
    assert diff < 2e-3 * spread  # native keeps its KV cache in f16, ONNX Runtime in f32
    _compare(model, native, tol=2e-3 * spread)


@pytest.mark.slow
def test_ortgenai_matches_its_own_generator_on_an_int4_folder(onnx_models) -> None:
    """phirt's sampler over onnxruntime-genai's logits picks what onnxruntime-genai's own greedy
    search picks, token for token (the int4 MatMulNBits folder native cannot read yet)."""
    _installed("ortgenai")
    import onnxruntime_genai as og

    folder = onnx_models.get("phi3")
    model = phirt.load(folder, backend="ortgenai")
    prompt = model.tokenize(PROMPT)
    got = greedy_ids(model, prompt, N)
    og_model = og.Model(str(folder))
    params = og.GeneratorParams(og_model)
    params.set_search_options(do_sample=False, max_length=model.n_ctx, batch_size=1)
    gen = og.Generator(og_model, params)
    gen.append_tokens(np.asarray(prompt, dtype=np.int32))
    ref = []
    while not gen.is_done() and len(ref) < N:
        gen.generate_next_token()
        ref.append(int(gen.get_next_tokens()[0]))
    assert got[: len(ref)] == ref


def test_ortgenai_probes_a_provider_by_creating_the_model(backend_models) -> None:
    """is_cuda_available() and friends report build flags; the probe appends the provider and
    creates the model, and remembers the answer for the process."""
    _installed("ortgenai")
    backend = get_backend("ortgenai")
    folder = str(backend_models.onnx())
    cuda = Device("cuda", "gpu", "cuda")
    first = backend.probe(folder, cuda)
    try:
        import onnxruntime_genai as og

        has_cuda_build = og.is_cuda_available()
    except AttributeError:
        has_cuda_build = False
    if not has_cuda_build:
        assert not first.ok and "provider cuda" in first.reason
    assert backend.probe(folder, cuda) == first  # cached per process
    assert backend.probe(folder, Device("cpu", "cpu", "cpu")).ok


@pytest.mark.slow
def test_openvino_runs_a_gguf_it_reads_like_native(backend_models) -> None:
    _installed("openvino")
    path = backend_models.gguf("q8_0")
    native = phirt.load(path, backend="native")
    # f32 inference: on CPUs with bf16 OpenVINO would otherwise compute in bf16
    model = phirt.load(
        path, backend="openvino", backend_options={"INFERENCE_PRECISION_HINT": "f32"}
    )
    assert model.backend == "openvino" and model.device.startswith("CPU")
    prompt = native.tokenize(PROMPT)
    ref = greedy_ids(native, prompt, N)
    got = greedy_ids(model, prompt, N)
    steps = reference_steps(native, prompt, ref)
    spread = float(np.ptp(steps[0]))
    assert_same_greedy(got, ref, steps, 0.02 * spread)
    with pytest.raises(UnsupportedError, match="does not expose logits"):
        model.logits(prompt)


@pytest.mark.slow
def test_openvino_runs_an_ir_folder(backend_models) -> None:
    _installed("openvino")
    native = phirt.load(backend_models.gguf("q8_0"), backend="native")
    folder = backend_models.openvino_ir()
    model = phirt.load(folder, backend_options={"INFERENCE_PRECISION_HINT": "f32"})
    # auto: native cannot read an IR folder, so OpenVINO runs it (on the CPU here)
    assert model.backend == "openvino"
    assert "native: phirt's native loader cannot read it" in model.backend_reason
    prompt = native.tokenize(PROMPT)
    assert model.tokenize(PROMPT) == prompt  # tokenizer.json gives the GGUF's tokens
    ref = greedy_ids(native, prompt, N)
    steps = reference_steps(native, prompt, ref)
    assert_same_greedy(greedy_ids(model, prompt, N), ref, steps, 0.02 * float(np.ptp(steps[0])))


@pytest.mark.slow
def test_openvino_stop_handling_and_unhonoured_settings_are_phirts(backend_models) -> None:
    _installed("openvino")
    path = backend_models.gguf("q8_0")
    native = phirt.load(path, backend="native")
    model = phirt.load(
        path, backend="openvino", backend_options={"INFERENCE_PRECISION_HINT": "f32"}
    )
    full = native.generate(PROMPT, max_tokens=N, temperature=0)
    words = full.split()
    stop = words[len(words) // 2]
    cut = model.generate(PROMPT, max_tokens=N, temperature=0, stop=[stop])
    assert stop not in cut and model.last_stats.finish_reason == "stop"
    model.generate(PROMPT, max_tokens=3, temperature=0)
    assert model.last_stats.finish_reason == "length" and model.last_stats.generated_tokens == 3
    assert model.last_stats.ignored == []  # greedy without a penalty: all honoured
    model.generate(PROMPT, max_tokens=3, temperature=0.7, min_p=0.1, seed=1)
    ignored = " ".join(model.last_stats.ignored)
    assert "min_p" in ignored and "seed" in ignored


def test_openvino_refuses_phi3_gguf_and_says_why(models) -> None:
    _installed("openvino")
    path = models.phi3("Q4_0")
    probe = get_backend("openvino").refuses(str(path))
    assert probe is not None and "architecture 'phi3'" in probe
    with pytest.raises(UnsupportedError, match="phi3"):
        phirt.load(path, backend="openvino")
    # and an SPM vocabulary, which its GGUF reader cannot build a tokenizer for
    assert "gpt2" in (get_backend("openvino").refuses(str(models.llama("Q4_0"))) or "")


@pytest.mark.slow
def test_mlx_reads_the_hf_folder_like_native_reads_its_f32_gguf(backend_models) -> None:
    _installed("mlx")
    native = phirt.load(backend_models.gguf("f32"), backend="native")
    model = phirt.load(backend_models.hf(), backend="mlx")
    assert model.backend == "mlx"
    diff, spread = _logit_diff(model, native)
    assert diff < 2e-3 * spread
    _compare(model, native, tol=2e-3 * spread)


@pytest.mark.slow
def test_mlx_runs_a_gguf_through_the_exact_export(backend_models) -> None:
    """backend="mlx" on a GGUF converts it once (quantize/mlx.py, Q4_0 blocks exactly) into the
    cache and runs it; greedy tokens follow native's on the same Q4_0 weights."""
    _installed("mlx")
    path = backend_models.gguf("q4_0")
    native = phirt.load(path, backend="native")
    model = phirt.load(backend_models.mlx("q4_0"), backend="mlx")
    spread = _logit_diff(model, native)[1]
    _compare(model, native, tol=0.05 * spread)
    with pytest.raises(UnsupportedError, match="convert"):
        phirt.load(path, backend="mlx", convert=False)


@pytest.mark.slow
def test_mlx_conversion_into_the_cache_happens_once(backend_models, tmp_path, monkeypatch) -> None:
    _installed("mlx")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = backend_models.gguf("q8_0")
    first = phirt.load(path, backend="mlx")
    assert "converted once to" in first.backend_reason
    again = phirt.load(path, backend="mlx")
    assert "converted from it earlier" in again.backend_reason
    assert first.generate(PROMPT, max_tokens=6, temperature=0) == again.generate(
        PROMPT, max_tokens=6, temperature=0
    )


def test_auto_picks_native_here_and_says_why_not_the_others(models) -> None:
    model = phirt.load(models.llama("Q4_0"))
    assert model.backend == "native"
    reason = model.backend_reason
    assert reason.startswith("native on cpu")
    for name in ("llamacpp", "ortgenai", "openvino", "mlx"):
        assert f"{name}: " in reason


@pytest.mark.slow
def test_auto_on_an_onnx_folder(backend_models) -> None:
    """Native reads ONNX folders once the format seam lands; until then ONNX Runtime GenAI runs
    it on the CPU. Either way the reason says what native answered."""
    _installed("ortgenai")
    model = phirt.load(backend_models.onnx())
    native = get_backend("native").probe(str(backend_models.onnx()), Device("cpu", "cpu", "cpu"))
    if native.ok:
        assert model.backend == "native"
    else:
        assert (
            model.backend == "ortgenai" and "native: phirt's native loader" in model.backend_reason
        )


def test_explicit_device_that_cannot_run_it_is_a_clear_error(models) -> None:
    with pytest.raises(PhirtError, match="device='cuda'") as err:
        phirt.load(models.llama("Q4_0"), device="cuda")
    assert "\n" not in str(err.value)
    with pytest.raises(PhirtError, match="unknown backend"):
        phirt.load(models.llama("Q4_0"), backend="tensorrt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "fmt"),
    [("llamacpp", "q8_0"), ("openvino", "q8_0"), ("mlx", "hf"), ("ortgenai", "onnx")],
)
def test_cli_runs_each_backend_end_to_end(backend_models, capsys, backend, fmt) -> None:
    _installed(backend)
    from phirt.cli import main

    path = {"hf": backend_models.hf, "onnx": backend_models.onnx}.get(fmt)
    path = path() if path else backend_models.gguf(fmt)
    args = ["generate", str(path), "-p", PROMPT, "--max-tokens", "6", "--temp", "0", "-v"]
    assert main([*args, "--backend", backend]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and f"{backend} on " in err
