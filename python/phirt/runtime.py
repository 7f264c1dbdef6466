"""The Python API: `phirt.load(path)` returns a Model with generate / chat / tokenize / logits."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from phirt.backends import select_backend
from phirt.engine import NativeEngine
from phirt.generate import Step, generate_steps
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

    @property
    def decode_tokens_per_second(self) -> float:
        return self.generated_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Model:
    """A loaded model. Not thread-safe: one generation at a time."""

    def __init__(self, engine: NativeEngine, backend_reason: str) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.backend = engine.name
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
        stats = GenerationStats(prompt_tokens=len(tokens))
        stats.cached_tokens = self.engine.reuse_prefix(tokens)
        self.last_stats = stats
        t0 = time.perf_counter()
        t_first: float | None = None
        steps = generate_steps(
            self.engine,
            self.tokenizer,
            tokens,
            Sampler(params),
            max_tokens,
            stop_ids=self.tokenizer.eot_ids,
            stop_strings=stop,
            strip_leading_space=reply,
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
) -> Model:
    """Load a model: a GGUF file or an ONNX Runtime GenAI folder (genai_config.json, *.onnx and
    their .onnx.data). device: "auto" (best available backend, see Model.backend_reason) or "cpu"
    (phirt's own kernels). kv_type: the KV cache, by default the format's own runtime's ("f16" as
    llama.cpp for GGUF, "f32" as onnxruntime for ONNX, so the numbers are the model's own); "q8_0"
    halves f16's memory and what each token reads of it at long context."""
    selection = select_backend(device)
    engine = NativeEngine(path, n_ctx=n_ctx, n_threads=n_threads, kv_type=kv_type)
    return Model(engine, selection.reason)
