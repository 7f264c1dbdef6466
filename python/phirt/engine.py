"""The native engine: a GGUF file or an ONNX Runtime GenAI folder run on phirt's own kernels, with a
reusable KV cache.

Two phases, as in every fast runtime: prefill evaluates the prompt in batches (GEMM-shaped), decode
evaluates one token at a time (GEMV-shaped). The cache remembers which tokens it holds, so a new
prompt that shares a prefix with the last one (the next chat turn) evaluates only what is new.

`eval_batch` runs tokens of several sequences, each in a KV cache of its own (`new_cache`), through
one forward pass: the server's continuous batching (phirt.serve; docs/design.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phirt import _kernels as K
from phirt.errors import ContextFullError, FormatError, UnsupportedError
from phirt.formats import open_model
from phirt.models.common import KVCache, SeqBatch, batch_invariant_matmuls
from phirt.models.registry import find_architecture
from phirt.tokenizer import Tokenizer

DEFAULT_MAX_CTX = 4096
PREFILL_BATCH = 512


class NativeEngine:
    """Runs one model (a GGUF file or an ONNX Runtime GenAI folder, formats.open_model); `eval`
    appends tokens to the cache and returns logits."""

    name = "native"

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_ctx: int | None = None,
        n_threads: int | None = None,
        kv_type: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if n_threads is not None:
            if n_threads < 1:
                raise ValueError(f"n_threads must be >= 1, got {n_threads}")
            K.set_num_threads(n_threads)
        self.source = open_model(self.path)
        meta = self.source.metadata
        arch = find_architecture(self.source.arch or "<missing general.architecture>", self.path)
        self.tokenizer = Tokenizer.from_metadata(meta, path=self.path)
        embd = self.source.tensors.get("token_embd.weight")
        if embd is None:
            raise FormatError("required tensor 'token_embd.weight' is missing", self.path)
        self.n_vocab = int(embd.shape[0])
        self.config = arch.read_config(meta, self.path, self.n_vocab)
        if self.tokenizer.vocab_size > self.n_vocab:
            raise FormatError(
                f"tokenizer has {self.tokenizer.vocab_size} tokens but token_embd has "
                f"{self.n_vocab} rows",
                self.path,
            )
        # rotary tables (ONNX graphs) hold a fixed number of positions
        table = self.source.tensors.get("rope_cos_long.weight") or self.source.tensors.get(
            "rope_cos.weight"
        )
        max_ctx = table.shape[0] if table is not None else None
        if n_ctx is None:
            n_ctx = min(self.config.n_ctx_train, DEFAULT_MAX_CTX, max_ctx or DEFAULT_MAX_CTX)
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
        if max_ctx is not None and n_ctx > max_ctx:
            raise UnsupportedError(
                f"a context of {n_ctx} tokens is longer than the model's rotary tables "
                f"({max_ctx} positions)",
                self.path,
            )
        self.n_ctx = n_ctx
        # before the weights: it checks kv_type, and its pages are only mapped as the context fills
        # the format's own runtime's cache type unless asked: llama.cpp f16, onnxruntime f32
        self.cache = KVCache(self.config, n_ctx, kv_type or self.source.native_kv_type, self.path)
        self.model = arch.model_class(self.source, self.config, n_ctx)
        # token_embd is read a row per token: it stays lazy unless it doubles as the output matrix
        tied = "output.weight" not in self.source.tensors
        self.source.prefault(n for n in self.source.tensors if tied or n != "token_embd.weight")
        self.tokens: list[int] = []  # what the cache holds, in order

    @property
    def metadata(self) -> dict[str, Any]:
        """GGUF-named metadata (for an ONNX folder, what its graph and files map to)."""
        return self.source.metadata  # type: ignore[return-value]

    def reset(self) -> None:
        self.tokens = []

    def reuse_prefix(self, tokens: Sequence[int]) -> int:
        """Keep the cached prefix shared with `tokens` (minus at least one token, whose logits we
        need); returns how many of `tokens` are already in the cache."""
        n = 0
        limit = min(len(self.tokens), len(tokens) - 1)
        while n < limit and self.tokens[n] == tokens[n]:
            n += 1
        del self.tokens[n:]
        return n

    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Append tokens to the cache; logits of the last token (n_vocab,) or of all (m, n_vocab)."""
        if len(tokens) == 0:
            raise ValueError("eval needs at least one token")
        if len(self.tokens) + len(tokens) > self.n_ctx:
            raise ContextFullError(
                f"context window of {self.n_ctx} tokens is full ({len(self.tokens)} in use, "
                f"{len(tokens)} more requested); start over or use a larger context (--ctx)",
                self.path,
            )
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            bad = int(ids[(ids < 0) | (ids >= self.n_vocab)][0])
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.n_vocab})")
        outs = []
        for start in range(0, len(ids), PREFILL_BATCH):
            batch = ids[start : start + PREFILL_BATCH].astype(np.int32)
            pos0 = len(self.tokens)
            positions = np.arange(pos0, pos0 + len(batch), dtype=np.int32)
            hidden = self.model.forward(batch, positions, self.cache)
            self.tokens.extend(int(t) for t in batch)
            if all_logits:
                outs.append(self.model.logits(hidden))
            elif start + PREFILL_BATCH >= len(ids):
                outs.append(self.model.logits(np.ascontiguousarray(hidden[-1:]))[0])
        return np.concatenate(outs, axis=0) if all_logits else outs[-1]

    def new_cache(self) -> KVCache:
        """An empty KV cache of n_ctx tokens for one more sequence (a server slot); its pages are
        mapped as it fills."""
        return KVCache(self.config, self.n_ctx, self.cache.kv_type, self.path)

    def eval_batch(
        self,
        spans: Sequence[tuple[KVCache, int, Sequence[int]]],
        batch_invariant: bool = False,
    ) -> np.ndarray:
        """One forward pass over several sequences: span (cache, pos0, tokens) puts `tokens` at
        positions pos0.. of `cache` (which already holds that sequence's first pos0 tokens).
        Returns the logits of each span's last token, (len(spans), n_vocab).

        batch_invariant: each sequence's logits are bit for bit what it would get in a pass of its
        own, whatever else is in the batch (models.common.batch_invariant_matmuls); the server
        decodes with it. Without it a span of many tokens takes the faster prefill GEMM."""
        if not spans:
            raise ValueError("eval_batch needs at least one span")
        caches, bounds, ids, positions = [], [0], [], []
        for cache, pos0, tokens in spans:
            if len(tokens) == 0:
                raise ValueError("every span needs at least one token")
            if pos0 < 0 or pos0 + len(tokens) > cache.n_ctx:
                raise ContextFullError(
                    f"{len(tokens)} tokens at position {pos0} do not fit a context window of "
                    f"{cache.n_ctx} tokens",
                    self.path,
                )
            caches.append(cache)
            bounds.append(bounds[-1] + len(tokens))
            ids.extend(tokens)
            positions.append(np.arange(pos0, pos0 + len(tokens), dtype=np.int32))
        batch = np.asarray(ids, dtype=np.int64)
        if batch.min() < 0 or batch.max() >= self.n_vocab:
            bad = int(batch[(batch < 0) | (batch >= self.n_vocab)][0])
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.n_vocab})")
        last = np.asarray(bounds[1:], dtype=np.intp) - 1
        with batch_invariant_matmuls() if batch_invariant else contextlib.nullcontext():
            hidden = self.model.forward(
                batch.astype(np.int32), np.concatenate(positions), SeqBatch(caches, bounds)
            )
            return self.model.logits(np.ascontiguousarray(hidden[last]))
