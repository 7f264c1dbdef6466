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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from phirt import _kernels as K
from phirt.errors import (
    ContextFullError,
    FormatError,
    InvalidArgumentError,
    NumericalError,
    UnsupportedError,
    check_choice,
    check_int,
)
from phirt.formats import open_model
from phirt.models.common import KV_TYPES, KVCache, SeqBatch, batch_invariant_matmuls
from phirt.models.registry import find_architecture
from phirt.tokenizer import Tokenizer

DEFAULT_MAX_CTX = 4096
MAX_CTX = 2**31 - 1
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
        self.path = _check_path(path)
        # arguments first: a bad one is reported before any work on the file
        if n_threads is not None:
            n_threads = check_int("n_threads", n_threads, 1)
        self._pool: Any = None  # the default pool until the file checks out
        if n_ctx is not None:
            n_ctx = check_int("n_ctx", n_ctx, 1)
            if n_ctx > MAX_CTX:  # positions are int32 in the kernels
                raise InvalidArgumentError(f"n_ctx must be at most {MAX_CTX}, got {n_ctx}")
        if kv_type is not None:
            check_choice("kv_type", kv_type, KV_TYPES)
        self.source = open_model(self.path)
        K.install_sigbus_note()
        self._stat = _file_identity(self.path)
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
        if max_ctx is not None and n_ctx > max_ctx:
            raise UnsupportedError(
                f"a context of {n_ctx} tokens is longer than the model's rotary tables "
                f"({max_ctx} positions)",
                self.path,
            )
        self.n_ctx = n_ctx
        # n_threads given: a pool of this engine's own, installed around its kernel calls, so two
        # models in one process keep their own thread counts; else the process default pool
        if n_threads is not None:
            self._pool = K.ThreadPool(n_threads)
        # the weights first: their shapes check the hyper-parameters that size the cache
        with self.threads():
            self.model = arch.model_class(self.source, self.config, n_ctx)
        # the format's own runtime's cache type unless asked: llama.cpp f16, onnxruntime f32;
        # its pages are only mapped as the context fills
        self.cache = KVCache(self.config, n_ctx, kv_type or self.source.native_kv_type, self.path)
        # token_embd is read a row per token: it stays lazy unless it doubles as the output matrix
        tied = "output.weight" not in self.source.tensors
        self.source.prefault(n for n in self.source.tensors if tied or n != "token_embd.weight")
        self.tokens: list[int] = []  # what the cache holds, in order

    @property
    def metadata(self) -> dict[str, Any]:
        """GGUF-named metadata (for an ONNX folder, what its graph and files map to)."""
        return self.source.metadata  # type: ignore[return-value]

    @property
    def n_threads(self) -> int:
        """Threads this engine's kernels run on: its own pool's, or (called outside any other
        model's call) the default pool's."""
        return self._pool.size if self._pool is not None else K.get_num_threads()

    @contextmanager
    def threads(self) -> Iterator[None]:
        """Run the enclosed kernel calls on this engine's pool (None: the default pool). Always
        installed, never skipped: were an interrupt to land between an install and its undo in
        another engine, that engine's pool would not leak into this one's calls."""
        previous = K.install_pool(self._pool)
        try:
            yield
        finally:
            K.install_pool(previous)

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
        ids = _token_array(tokens)
        if len(ids) == 0:
            raise InvalidArgumentError("tokens is empty: evaluation needs at least one token")
        if len(self.tokens) + len(ids) > self.n_ctx:
            raise ContextFullError(
                f"context window of {self.n_ctx} tokens is full ({len(self.tokens)} in use, "
                f"{len(ids)} more requested); start over or use a larger context (--ctx)",
                self.path,
            )
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            bad = int(ids[(ids < 0) | (ids >= self.n_vocab)][0])
            raise InvalidArgumentError(
                f"token id {bad} is outside the vocabulary [0, {self.n_vocab})"
            )
        self._check_file()
        with self.threads():
            logits = self._forward(ids, all_logits)
        if not np.isfinite(logits).all():
            raise NumericalError(
                f"the model produced non-finite logits (NaN or Inf) at position "
                f"{len(self.tokens) - 1}: its weights are corrupt or its activations overflow",
                self.path,
            )
        return logits

    def _forward(self, ids: np.ndarray, all_logits: bool) -> np.ndarray:
        outs = []
        for start in range(0, len(ids), PREFILL_BATCH):
            batch = ids[start : start + PREFILL_BATCH].astype(np.int32)
            pos0 = len(self.tokens)
            positions = np.arange(pos0, pos0 + len(batch), dtype=np.int32)
            hidden = self.model.forward(batch, positions, self.cache)
            self.tokens.extend(batch.tolist())  # one call: an interrupt cannot split it
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
            raise InvalidArgumentError("eval_batch needs at least one span")
        caches, bounds, ids, positions = [], [0], [], []
        for cache, pos0, tokens in spans:
            if len(tokens) == 0:
                raise InvalidArgumentError("every span needs at least one token")
            if pos0 < 0 or pos0 + len(tokens) > cache.n_ctx:
                raise ContextFullError(
                    f"{len(tokens)} tokens at position {pos0} do not fit a context window of "
                    f"{cache.n_ctx} tokens",
                    self.path,
                )
            caches.append(cache)
            bounds.append(bounds[-1] + len(tokens))
            ids.extend(_token_array(tokens).tolist())
            positions.append(np.arange(pos0, pos0 + len(tokens), dtype=np.int32))
        batch = np.asarray(ids, dtype=np.int64)
        if batch.min() < 0 or batch.max() >= self.n_vocab:
            bad = int(batch[(batch < 0) | (batch >= self.n_vocab)][0])
            raise InvalidArgumentError(
                f"token id {bad} is outside the vocabulary [0, {self.n_vocab})"
            )
        last = np.asarray(bounds[1:], dtype=np.intp) - 1
        self._check_file()
        invariant = batch_invariant_matmuls() if batch_invariant else contextlib.nullcontext()
        with self.threads(), invariant:
            hidden = self.model.forward(
                batch.astype(np.int32), np.concatenate(positions), SeqBatch(caches, bounds)
            )
            return self.model.logits(np.ascontiguousarray(hidden[last]))

    def layer_rows_invariant(self) -> bool:
        """True when every matrix of the layers gives each row the same result whatever else is
        in the call, on the default path too (formats.source.GGMLMatrix.rows_invariant: Q4_0 in
        the interleaved layout, decided at a matrix's first use). Then a prompt chunk evaluated
        with batch_invariant=True, beside other sequences' decode rows, gets bit for bit what it
        gets in a pass of its own (the output matrix sees one row per span either way, where the
        GEMV and the one-row dot agree), so the server can run both in one pass."""
        return all(
            getattr(m, "rows_invariant", False)
            for layer in self.model.layers
            for m in layer.values()
            if hasattr(m, "matmul")
        )

    def _check_file(self) -> None:
        """FormatError if the model file was truncated or rewritten in place since it was
        mapped: its pages are the weights, and a truncated mapping faults (SIGBUS) when read.
        A file replaced by a new one (rename, delete) is harmless: the old one stays mapped."""
        if self._stat is None:
            return  # a folder: its files are checked when it opens
        try:
            st = os.stat(self.path)
        except OSError:
            return  # deleted or renamed away: the mapping still holds the original
        if (st.st_dev, st.st_ino) != self._stat[:2]:
            return
        if (st.st_size, st.st_mtime_ns) != self._stat[2:]:
            raise FormatError(
                f"the model file changed on disk while loaded (size {self._stat[2]} -> "
                f"{st.st_size} bytes); load it again",
                self.path,
            )


def _file_identity(path: str) -> tuple[int, int, int, int] | None:
    """What _check_file compares: a file's device, inode, size and mtime (None for a folder)."""
    if not os.path.isfile(path):
        return None
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_path(path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path must be a str or os.PathLike, got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if not text or "\0" in text:
        raise InvalidArgumentError(f"path {text!r} is not a valid file name")
    return text


def _token_array(tokens: Sequence[int]) -> np.ndarray:
    """Token ids as int64; InvalidArgumentError for anything that is not a sequence of ints."""
    try:
        ids = np.asarray(tokens)
    except (TypeError, ValueError):
        ids = None
    if ids is None or ids.ndim != 1 or not (ids.dtype.kind in "iu" or ids.size == 0):
        raise InvalidArgumentError(
            f"tokens must be a sequence of integer token ids, got {tokens!r:.80}"
        )
    return ids.astype(np.int64)
