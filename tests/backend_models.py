"""One tiny model in every format the backends read, all made from the same weights by the tools
that own each format, so the backends can be compared with phirt native number for number:

    hf/            a Hugging Face LlamaForCausalLM checkpoint (transformers, seeded weights, f32)
                   with SmolLM2's tokenizer (transformers' GGUF tokenizer conversion): mlx-lm
                   reads it as it is
    f32.gguf, q8_0.gguf, q4_0.gguf
                   phirt's quantizer from hf/ (llama.cpp's converter layout): native, llama.cpp,
                   OpenVINO GenAI's GGUF reader (llama + byte-level BPE, which it accepts)
    onnx/          onnxruntime-genai's model builder from hf/ (fp32, CPU)
    q4_0.mlx/      phirt's mlx export of q4_0.gguf
    openvino/      an OpenVINO IR folder: OpenVINO GenAI's own GGUF reader saves the model it
                   builds from q8_0.gguf (enable_save_ov_model), with tokenizer and config files
                   beside it as an optimum-intel export has them

SmolLM2's vocabulary (a byte-level BPE one, which OpenVINO's GGUF reader needs) comes from the
real SmolLM2 file: these fixtures skip without it, like test_smollm2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

N_EMBD, N_FF, N_LAYER, N_HEAD, N_HEAD_KV = 64, 128, 2, 4, 2


def write_hf_checkpoint(out: Path, smollm2: Path) -> Path:
    """Seeded random weights scaled like model_factory's (O(1) activations, logits spread of a
    few units), saved by transformers; SmolLM2's tokenizer files beside them."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(smollm2.parent), gguf_file=smollm2.name)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=N_EMBD,
        intermediate_size=N_FF,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=N_HEAD_KV,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norms
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                gain = (
                    5.0
                    if "lm_head" in name
                    else 2.0
                    if ("q_proj" in name or "k_proj" in name)
                    else 1.0
                )
                p.copy_(torch.randn(p.shape, generator=gen) * gain / p.shape[1] ** 0.5)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


class BackendModels:
    """Builds each format on first use, once per session."""

    def __init__(self, root: Path, smollm2: Path) -> None:
        self.root = root
        self.smollm2 = smollm2

    def hf(self) -> Path:
        out = self.root / "hf"
        if not (out / "config.json").is_file():
            write_hf_checkpoint(out, self.smollm2)
        return out

    def gguf(self, qtype: str) -> Path:
        from phirt.quantize import quantize

        out = self.root / f"{qtype}.gguf"
        if not out.is_file():
            quantize(self.hf(), out, qtype)
        return out

    def onnx(self) -> Path:
        """onnxruntime-genai's builder (its own process: it imports torch and transformers)."""
        out = self.root / "onnx"
        if not (out / "genai_config.json").is_file():
            cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(self.hf())]
            cmd += ["-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(self.root / "cache")]
            subprocess.run(cmd, check=True, capture_output=True)
            shutil.copy(self.hf() / "generation_config.json", out)
        return out

    def openvino_ir(self) -> Path:
        import openvino_genai as ov_genai

        out = self.root / "openvino"
        if not (out / "openvino_model.xml").is_file():
            out.mkdir(exist_ok=True)
            gguf = out / "model.gguf"
            shutil.copy(self.gguf("q8_0"), gguf)
            ov_genai.LLMPipeline(str(gguf), "CPU", enable_save_ov_model=True)
            gguf.unlink()
            for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
                shutil.copy(self.hf() / name, out / name)
        return out

    def mlx(self, qtype: str = "q4_0") -> Path:
        from phirt.quantize.mlx import export_mlx

        out = self.root / f"{qtype}.mlx"
        if not (out / "config.json").is_file():
            export_mlx(self.gguf(qtype), out)
        return out


def greedy_ids(model, prompt: list[int], n: int) -> list[int]:
    """n greedy token ids through phirt's own generator (stop tokens not applied)."""
    from phirt.backends.base import has_logits
    from phirt.generate import sampled_tokens
    from phirt.sampling import Sampler, SamplingParams

    model.reset()
    greedy = SamplingParams.greedy()
    engine = model.engine
    stream = (
        sampled_tokens(engine, prompt, Sampler(greedy))
        if has_logits(engine)
        else engine.stream(prompt, greedy, n)
    )
    out = []
    for token in stream:
        out.append(token)
        if len(out) == n:
            break
    stream.close()
    return out


def reference_steps(native, prompt: list[int], tokens: list[int]) -> list[np.ndarray]:
    """phirt native's logits at each step of a continuation: row i picks tokens[i]."""
    logits = native.logits(prompt + tokens)
    return [logits[len(prompt) - 1 + i] for i in range(len(tokens))]


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())
