"""The Python API: `phirt.load(path)` returns a Model with generate / chat / tokenize / logits."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from phirt.backends.base import Engine, OpenOptions, has_logits
from phirt.errors import ContextFullError, UnsupportedError
from phirt.generate import Step, sampled_tokens, token_steps
from phirt.sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from phirt.chat_template import ChatTemplate


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (not evaluated again)
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    finish_reason: str | None = None
    # sampling settings the backend could not honour (streaming backends sample themselves)
    ignored: list[str] = field(default_factory=list)

    @property
    def decode_tokens_per_second(self) -> float:
        return self.generated_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Model:
    """A loaded model, on whichever backend `load` chose (`backend`, `device`, and
    `backend_reason` says why). Not thread-safe: one generation at a time."""

    def __init__(self, engine: Engine, backend_reason: str) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.backend = engine.name
        self.device = str(getattr(engine, "device", "cpu"))
        self.backend_reason = backend_reason
        self.last_stats = GenerationStats()

    @cached_property
    def chat_template(self) -> ChatTemplate:
        """The file's chat template, compiled on first use: jinja2 costs ~20 ms and ~5 MB to
        import, which a model that is never chatted with (bench, generate) need not pay."""
        from phirt.chat_template import ChatTemplate

        return ChatTemplate.from_metadata(self.engine.metadata, self.tokenizer)

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.engine.n_vocab

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits (len(tokens), n_vocab) of a fresh evaluation of `tokens` from position 0."""
        if not has_logits(self.engine):
            raise UnsupportedError(
                f"the {self.backend} backend streams tokens and does not expose logits"
            )
        self.engine.reset()
        return self.engine.eval(list(tokens), all_logits=True)

    def reset(self) -> None:
        """Forget the cached context."""
        self.engine.reset()

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        stream: bool = False,
        stop: Sequence[str] = (),
        **sampling: Any,
    ) -> str | Iterator[str]:
        """Continue `prompt` (text or token ids). stream=True yields text pieces as they come."""
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        pieces = self._run(tokens, max_tokens, stop, SamplingParams(**sampling))
        return pieces if stream else "".join(pieces)

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        max_tokens: int = 512,
        stream: bool = False,
        stop: Sequence[str] = (),
        **sampling: Any,
    ) -> str | Iterator[str]:
        """Reply to a conversation (list of {"role", "content"}) through the model's chat template.

        The KV cache is reused across calls: a follow-up turn evaluates only its new tokens.
        """
        tokens = self.chat_tokens(messages)
        pieces = self._run(tokens, max_tokens, stop, SamplingParams(**sampling), reply=True)
        return pieces if stream else "".join(pieces)

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = self.chat_template.render(list(messages), add_generation_prompt=True)
        bos = self.tokenizer.bos_text
        add_bos = None if not bos or not text.startswith(bos) else False
        return self.tokenize(text, add_bos=add_bos, special=True)

    def _run(
        self,
        tokens: list[int],
        max_tokens: int,
        stop: Sequence[str],
        params: SamplingParams,
        reply: bool = False,
    ) -> Iterator[str]:
        if not tokens:
            raise ValueError("the prompt is empty")
        stats = GenerationStats(prompt_tokens=len(tokens))
        self.last_stats = stats
        engine: Any = self.engine
        exhausted = "context"
        if has_logits(engine):
            stats.cached_tokens = engine.reuse_prefix(tokens)
            stream = sampled_tokens(engine, tokens, Sampler(params))
        else:
            # the backend samples: phirt's settings mapped onto its own, the rest reported
            stats.ignored = engine.unsupported(params)
            room = engine.n_ctx - len(tokens)
            if room <= 0:
                raise ContextFullError(
                    f"the prompt ({len(tokens)} tokens) fills the context window of "
                    f"{engine.n_ctx} tokens; use a larger context (--ctx)"
                )
            exhausted = "context" if room < max_tokens else "length"
            stream = engine.stream(tokens, params, min(room, max_tokens))
        t0 = time.perf_counter()
        t_first: float | None = None
        steps = token_steps(
            stream,
            self.tokenizer,
            max_tokens,
            stop_ids=self.tokenizer.eot_ids,
            stop_strings=stop,
            strip_leading_space=reply,
            exhausted=exhausted,
        )
        step: Step
        for step in steps:
            now = time.perf_counter()
            if t_first is None:
                t_first = now
                stats.prefill_seconds = now - t0
            if step.token is not None:
                stats.generated_tokens += 1
            stats.decode_seconds = now - t_first
            stats.finish_reason = step.finish_reason
            if step.text:
                yield step.text


def load(
    path: str | os.PathLike[str],
    n_threads: int | None = None,
    n_ctx: int | None = None,
    device: str = "auto",
    kv_type: str | None = None,
    backend: str | None = None,
    convert: bool = True,
    backend_options: dict[str, Any] | None = None,
) -> Model:
    """Load a model: a GGUF file, or a folder a backend reads (ONNX Runtime GenAI, which phirt's
    own kernels read too; OpenVINO IR; mlx-lm). device: "auto" (an accelerator when a backend can run the model on one, else
    phirt's CPU kernels), "cpu", "gpu", "npu", "cuda", "metal", ... or a backend's own device
    name ("GPU.1"); backend: "native", "llamacpp", "ortgenai", "openvino" or "mlx" to insist on
    one. Model.backend_reason names the choice and why every other backend was not chosen.
    convert: allow phirt to convert the model once into its cache when only the converted form
    runs on the chosen backend (a GGUF for MLX on a Mac). kv_type (native, llamacpp): by default the
    format's own runtime's ("f16" as llama.cpp for GGUF, "f32" as onnxruntime for ONNX); "q8_0"
    halves f16's memory and what each token reads of it at long context. backend_options: passed
    to the vendor stack as they are (OpenVINO properties such as {"INFERENCE_PRECISION_HINT":
    "f32"})."""
    from phirt.backends.convert import converted_path
    from phirt.backends.selection import choose, get_backend, probe_all

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    selection = choose(
        probe_all(path, device, [backend] if backend else None, quick=device == "auto"),
        path,
        device,
        backend,
        convert,
    )
    reason = selection.reason
    if selection.convert is not None:
        path, note = converted_path(path, selection.convert)
        reason = f"{reason} [{note}]"
    options = OpenOptions(n_ctx, n_threads, kv_type, dict(backend_options or {}))
    engine = get_backend(selection.backend).open(path, selection.device, options)
    return Model(engine, reason)
