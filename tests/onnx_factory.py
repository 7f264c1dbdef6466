"""Tiny random ONNX Runtime GenAI folders, made the way users make real ones.

Each fixture is a Hugging Face checkpoint saved by transformers (a scaled-down Phi-3, Phi-3 128k
LongRoPE, Phi-4-mini, Phi-4, Phi-2 or Llama, with the real Phi-3 tokenizer in tokenizer.json form),
converted offline by onnxruntime-genai's own model builder
(``python -m onnxruntime_genai.models.builder -p int4|int8 -e cpu``). The tests then load the
folder in phirt and in onnxruntime-genai and compare the two; nobody here writes the graphs.

The folders span the builder's MatMulNBits options: block sizes 16, 32 and 128, symmetric and
asymmetric (zero points), accuracy levels 0 (float activations) and 4 (int8 activations), one
8-bit folder, quantized tied embeddings (GatherBlockQuantized), a graph-level sliding window and
LongRoPE's short/long caches. Weights are drawn as in model_factory.py (~1/sqrt(fan_in), so every
block moves the residual stream and logits spread over several units) from a generator seeded by
the spec, so a folder is the same from run to run.

Facts about the builder (0.18) the specs follow: it needs ``onnx_ir``; the sliding window reaches
the graph (GroupQueryAttention local_window_size) only when the config lists ``layer_types``;
ONNX Runtime's fused rotary needs (rotary_dim / 2) % 8 == 0, so partial-rotary models use head
size 64; and it reads the tokenizer with AutoTokenizer, so each checkpoint carries one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

VOCAB_DIR = Path(__file__).parent / "data" / "vocab"
VOCAB_GGUF = "ggml-vocab-phi-3.gguf"
N_VOCAB = 32064


def has_builder() -> bool:
    """Whether the builder and what it needs are installed (found, not imported: torch and
    transformers take seconds to import, which a test session that builds nothing need not pay)."""
    needed = ("onnx_ir", "onnxruntime_genai", "torch", "transformers")
    return all(importlib.util.find_spec(name) is not None for name in needed)


requires_builder = pytest.mark.skipif(
    not has_builder(), reason="needs onnxruntime-genai, onnx_ir, torch and transformers"
)


@dataclass(frozen=True)
class OnnxSpec:
    """One fixture folder: a Hugging Face config plus the builder's quantization options."""

    name: str  # what tests call it: "phi3", "phi3_longrope", ...
    hf_class: str  # config.architectures[0]
    config: tuple[tuple[str, Any], ...]  # Hugging Face config fields
    precision: str = "int4"  # builder -p
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    options: tuple[tuple[str, str], ...] = field(default=())  # more builder extra_options
    seed: int = 0

    @property
    def hf_config(self) -> dict[str, Any]:
        return dict(self.config)

    def folder_name(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:10]}"

    def builder_options(self) -> list[str]:
        opts = {
            "block_size": str(self.block_size),
            "is_symmetric": str(self.symmetric).lower(),
            "accuracy_level": str(self.accuracy_level),
            "hf_token": "false",
            **dict(self.options),
        }
        return [f"{k}={v}" for k, v in opts.items()]


def _phi3_config(**over: Any) -> tuple[tuple[str, Any], ...]:
    base: dict[str, Any] = {
        "vocab_size": N_VOCAB,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 32000,
        "pad_token_id": 32000,
        "tie_word_embeddings": False,
    }
    base.update(over)
    return tuple(sorted(base.items()))


LONGROPE_ORIGINAL = 64  # original_max_position_embeddings of the LongRoPE fixture
SLIDING_WINDOW = 32  # window of the sliding-window fixture (in its graph)

SPECS: dict[str, OnnxSpec] = {
    # Phi-3-mini-4k: MHA, sliding window in the graph, int4 block 32 symmetric, int8 activations
    "phi3": OnnxSpec(
        "phi3",
        "Phi3ForCausalLM",
        _phi3_config(
            sliding_window=SLIDING_WINDOW, layer_types=["sliding_attention"] * 2, rope_theta=10000.0
        ),
    ),
    # Phi-3-mini-128k / Phi-3.5-mini: LongRoPE with short and long caches; the config's sliding
    # window does not reach this graph (no layer_types). Block 128, zero points, float activations.
    "phi3_longrope": OnnxSpec(
        "phi3_longrope",
        "Phi3ForCausalLM",
        _phi3_config(
            max_position_embeddings=4 * LONGROPE_ORIGINAL,
            original_max_position_embeddings=LONGROPE_ORIGINAL,
            sliding_window=16,
            rope_parameters={
                "rope_type": "longrope",
                "type": "longrope",
                "rope_theta": 10000.0,
                "short_factor": [1.0 + 0.25 * (i / 7) ** 2 for i in range(16)],
                "long_factor": [float(x) for x in np.geomspace(1.0, 16.0, 16)],
            },
        ),
        block_size=128,
        symmetric=False,
        accuracy_level=0,
    ),
    # Phi-4-mini: GQA, partial rotary (3/4 of a 64-wide head), LongRoPE, tied embeddings read by
    # GatherBlockQuantized from the lm_head's own int4 weights; zero points, block 32.
    "phi4_mini": OnnxSpec(
        "phi4_mini",
        "Phi3ForCausalLM",
        _phi3_config(
            hidden_size=256,
            intermediate_size=384,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4 * LONGROPE_ORIGINAL,
            original_max_position_embeddings=LONGROPE_ORIGINAL,
            tie_word_embeddings=True,
            rope_parameters={
                "rope_type": "longrope",
                "type": "longrope",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.75,
                "short_factor": [1.0 + 0.1 * i / 23 for i in range(24)],
                "long_factor": [float(x) for x in np.geomspace(1.0, 8.0, 24)],
            },
        ),
        symmetric=False,
        options=(
            ("algo_config", "rtn"),  # the default algorithm cannot tie asymmetric embeddings
            ("op_types_to_quantize", "MatMul/Gather"),
            ("shared_embeddings", "true"),
        ),
    ),
    # Phi-4: GQA, full rotary, rope_theta 250000, no window; 8-bit weights
    "phi4": OnnxSpec(
        "phi4",
        "Phi3ForCausalLM",
        _phi3_config(
            num_key_value_heads=2,
            max_position_embeddings=16384,
            original_max_position_embeddings=16384,
            rope_theta=250000.0,
        ),
        precision="int8",
    ),
    # Phi-2: LayerNorm with biases, parallel attention and GELU MLP, partial rotary, biases on
    # every projection and on lm_head; block 128 symmetric, float activations
    "phi2": OnnxSpec(
        "phi2",
        "PhiForCausalLM",
        (
            ("bos_token_id", 1),
            ("eos_token_id", 32000),
            ("hidden_act", "gelu_new"),
            ("hidden_size", 256),
            ("intermediate_size", 512),
            ("layer_norm_eps", 1e-5),
            ("max_position_embeddings", 2048),
            ("num_attention_heads", 4),
            ("num_hidden_layers", 2),
            ("num_key_value_heads", 4),
            (
                "rope_parameters",
                {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
            ),
            ("tie_word_embeddings", False),
            ("vocab_size", N_VOCAB),
        ),
        block_size=128,
        accuracy_level=0,
    ),
    # Llama: GQA, separate q/k/v and gate/up in the checkpoint; block 16 with zero points
    "llama": OnnxSpec(
        "llama",
        "LlamaForCausalLM",
        (
            ("bos_token_id", 1),
            ("eos_token_id", 32000),
            ("hidden_size", 128),
            ("intermediate_size", 256),
            ("max_position_embeddings", 4096),
            ("num_attention_heads", 4),
            ("num_hidden_layers", 2),
            ("num_key_value_heads", 2),
            ("rms_norm_eps", 1e-5),
            ("rope_parameters", {"rope_type": "default", "rope_theta": 10000.0}),
            ("tie_word_embeddings", False),
            ("vocab_size", N_VOCAB),
        ),
        block_size=16,
        symmetric=False,
    ),
}


# -- the checkpoint ----------------------------------------------------------------------------


def _gain(name: str) -> float:
    """Std multiplier over 1/sqrt(fan_in) by role (as model_factory.py): q/k > 1 so attention is
    sharp and the context matters, a strong lm_head so logits spread over several units."""
    if "lm_head" in name:
        return 5.0
    if any(p in name for p in ("q_proj", "k_proj", "qkv_proj")):
        return 2.0
    if any(p in name for p in ("gate_up_proj", "gate_proj", "up_proj", "fc1")):
        return 1.5
    return 1.0


def _init_weights(model: Any, spec: OnnxSpec) -> None:
    import torch

    gen = torch.Generator().manual_seed(int(hashlib.sha256(spec.name.encode()).hexdigest()[:8], 16))
    tied = bool(spec.hf_config.get("tie_word_embeddings"))
    hidden = int(spec.hf_config["hidden_size"])
    emb_std = 0.1 if tied else 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            if name.endswith("embed_tokens.weight"):
                value = torch.randn(shape, generator=gen) * emb_std
            elif p.ndim == 2:
                value = torch.randn(shape, generator=gen) * (_gain(name) / np.sqrt(shape[1]))
            elif name.endswith("bias"):
                value = torch.randn(shape, generator=gen) * (0.5 if "lm_head" in name else 0.1)
            else:  # norm weights
                center = 1.0
                if tied and name in ("model.norm.weight", "model.final_layernorm.weight"):
                    center = 5.0 / (emb_std * np.sqrt(hidden))  # logits = h · embdᵀ spread ~5
                value = center + 0.1 * torch.randn(shape, generator=gen)
            p.copy_(value.to(p.dtype))


def make_tokenizer_files(out: Path) -> Path:
    """The real Phi-3 vocabulary (tests/data/vocab) as tokenizer.json + tokenizer_config.json +
    chat_template.jinja, converted offline by transformers from the GGUF vocabulary."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(VOCAB_DIR), gguf_file=VOCAB_GGUF)
    tok.save_pretrained(str(out))
    return out


def write_checkpoint(spec: OnnxSpec, out: Path, tokenizer_dir: Path) -> Path:
    """The spec's Hugging Face checkpoint (config.json, model.safetensors, tokenizer files)."""
    import torch
    import transformers

    config_class = getattr(transformers, spec.hf_class.replace("ForCausalLM", "Config"))
    fields = spec.hf_config
    layer_types = fields.pop("layer_types", None)
    config = config_class(**fields)
    config.architectures = [spec.hf_class]
    if layer_types is not None:
        config.layer_types = layer_types  # not a Phi-3 field: the builder reads it when present
    torch.manual_seed(0)
    model = getattr(transformers, spec.hf_class)(config)
    _init_weights(model, spec)
    model.save_pretrained(str(out))
    for f in tokenizer_dir.iterdir():
        shutil.copy2(f, out / f.name)
    return out


# -- the builder -------------------------------------------------------------------------------


def run_builder(spec: OnnxSpec, hf_dir: Path, out: Path, cache: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-m", str(hf_dir),
        "-i", str(hf_dir),
        "-o", str(out),
        "-p", spec.precision,
        "-e", "cpu",
        "-c", str(cache),
        "--extra_options", *spec.builder_options(),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"the ORT GenAI builder failed for {spec.name}:\n{tail}")


def build(spec: OnnxSpec, root: Path, tokenizer_dir: Path) -> Path:
    """The spec's ONNX folder under ``root`` (reused if already there)."""
    folder = root / spec.folder_name()
    if (folder / "genai_config.json").is_file():
        return folder
    work = root / f"{spec.folder_name()}.work"
    shutil.rmtree(work, ignore_errors=True)
    hf_dir = write_checkpoint(spec, work / "hf", tokenizer_dir)
    run_builder(spec, hf_dir, work / "onnx", work / "cache")
    (work / "onnx").replace(folder)  # atomic: a half-built folder never has the final name
    shutil.rmtree(work, ignore_errors=True)
    return folder


class OnnxFactory:
    """Fixture folders for tests (the ``onnx_models`` fixture): ``onnx_models.get("phi3")`` ->
    Path of an ONNX Runtime GenAI folder, built once per session. ``build_seconds`` records the
    time spent in builds (the CI cost of these fixtures)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.build_seconds = 0.0
        self._tokenizer_dir: Path | None = None

    @property
    def tokenizer_dir(self) -> Path:
        """The Phi-3 vocabulary as Hugging Face tokenizer files (made once per session)."""
        if self._tokenizer_dir is None:
            if not has_builder():
                pytest.skip("needs transformers to write tokenizer.json")
            self._tokenizer_dir = make_tokenizer_files(self.root / "phi3-tokenizer")
        return self._tokenizer_dir

    def get(self, name: str) -> Path:
        if not has_builder():
            pytest.skip("ONNX fixtures need onnxruntime-genai, onnx_ir, torch and transformers")
        spec = SPECS[name]
        t0 = time.perf_counter()
        folder = build(spec, self.root, self.tokenizer_dir)
        self.build_seconds += time.perf_counter() - t0
        return folder

    def spec(self, name: str) -> OnnxSpec:
        return SPECS[name]


__all__ = [
    "LONGROPE_ORIGINAL",
    "SLIDING_WINDOW",
    "SPECS",
    "OnnxFactory",
    "OnnxSpec",
    "build",
    "has_builder",
    "make_tokenizer_files",
    "requires_builder",
    "run_builder",
    "write_checkpoint",
]
