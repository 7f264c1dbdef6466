"""The Python API: `phirt.load(path)` returns a Model with generate / chat / tokenize / logits."""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from phirt.backends.base import Engine, OpenOptions, has_logits
from phirt.errors import (
    ContextFullError,
    FormatError,
    InvalidArgumentError,
    UnsupportedError,
    check_choice,
    check_int,
    check_str,
)
from phirt.generate import Step, sampled_tokens, token_steps
from phirt.sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from phirt.chat_template import ChatTemplate


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (not evaluated again)
    generated_tokens: int = 0
    prefill_seconds: float = 0.0  # to the first generated token (it comes out of the prefill)
    decode_seconds: float = 0.0  # from the first generated token to the last
    finish_reason: str | None = None
    # sampling settings the backend could not honour (streaming backends sample themselves)
    ignored: list[str] = field(default_factory=list)

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens decoded after the first over the time they took (as llama.cpp's eval rate and
        benchmarks/serve_bench.py count: n tokens are n - 1 decode steps after the prefill)."""
        steps = self.generated_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0


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
        """Token ids of `text`. InvalidArgumentError if it is not a str or holds a lone
        surrogate (not valid Unicode: decode bytes with errors="replace" first)."""
        if add_bos is not None and not isinstance(add_bos, bool):
            raise InvalidArgumentError(f"add_bos must be True, False or None, got {add_bos!r}")
        return self.tokenizer.encode(text, add_bos=add_bos, parse_special=bool(special))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of token ids; InvalidArgumentError for an id outside the vocabulary."""
        return self.tokenizer.decode(_token_list(tokens))

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits (len(tokens), n_vocab) of a fresh evaluation of `tokens` from position 0."""
        if not has_logits(self.engine):
            raise UnsupportedError(
                f"the {self.backend} backend streams tokens and does not expose logits"
            )
        tokens = _token_list(tokens)
        self.engine.reset()
        return self.engine.eval(tokens, all_logits=True)

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
        """Continue `prompt` (text or token ids). stream=True yields text pieces as they come.
        Arguments are checked here, before the first piece: a bad one raises
        InvalidArgumentError even when streaming."""
        params, stop = _check_run_args(max_tokens, stop, sampling)
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else _token_list(prompt)
        if not tokens:
            raise InvalidArgumentError("prompt is empty (and the model adds no BOS token)")
        pieces = self._run(tokens, max_tokens, stop, params)
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
        params, stop = _check_run_args(max_tokens, stop, sampling)
        tokens = self.chat_tokens(messages)
        pieces = self._run(tokens, max_tokens, stop, params, reply=True)
        return pieces if stream else "".join(pieces)

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = self.chat_template.render(_check_messages(messages), add_generation_prompt=True)
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
            raise InvalidArgumentError("the prompt is empty")
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


def _token_list(tokens: Any) -> list[int]:
    """Token ids as a list of ints; InvalidArgumentError for anything else."""
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (Sequence, np.ndarray)):
        raise InvalidArgumentError(f"tokens must be a sequence of token ids, got {tokens!r:.80}")
    try:
        return [operator.index(t) for t in tokens]
    except TypeError:
        bad = next(t for t in tokens if not hasattr(t, "__index__") or isinstance(t, bool))
        raise InvalidArgumentError(f"tokens must be integer ids, got {bad!r:.80}") from None


def _check_run_args(
    max_tokens: Any, stop: Any, sampling: dict[str, Any]
) -> tuple[SamplingParams, tuple[str, ...]]:
    check_int("max_tokens", max_tokens, 0)
    if isinstance(stop, str):
        stop = (stop,)  # one stop string, as the OpenAI API allows
    if not isinstance(stop, (Sequence, set, frozenset)) or not all(
        isinstance(s, str) for s in stop
    ):
        raise InvalidArgumentError(f"stop must be a string or a list of strings, got {stop!r:.80}")
    known = [f.name for f in fields(SamplingParams)]
    unknown = sorted(set(sampling) - set(known))
    if unknown:
        raise InvalidArgumentError(
            f"unknown sampling option {unknown[0]!r} (options: {', '.join(known)})"
        )
    return SamplingParams(**sampling), tuple(stop)


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    """A conversation: a list of {"role": str, "content": str, ...} dicts."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise InvalidArgumentError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {messages!r:.80}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise InvalidArgumentError(f"messages[{i}] needs a 'role' string, got {m!r:.80}")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidArgumentError(
                f"messages[{i}]['content'] must be a string, got {type(content).__name__}"
            )
    return [dict(m) for m in messages]


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
    own kernels read too; OpenVINO IR; mlx-lm). device: "auto" (an accelerator when a backend
    can run the model on one, else phirt's CPU kernels), "cpu", "gpu", "npu", "cuda", "metal", ... or a backend's own device
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
    from phirt.engine import _check_path
    from phirt.models.common import KV_TYPES

    path = _check_path(path)
    check_str("device", device)
    if backend is not None:
        check_str("backend", backend)
    if kv_type is not None:
        check_choice("kv_type", kv_type, KV_TYPES)
    if not os.path.exists(path):
        raise FormatError("no such file or folder", path)
    selection = choose(
        probe_all(
            path,
            device,
            [backend] if backend else None,
            quick=device in ("auto", "cpu") and backend is None,
        ),
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
