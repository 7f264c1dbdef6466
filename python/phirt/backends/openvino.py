"""OpenVINO GenAI: OpenVINO IR folders (an optimum-intel export: openvino_model.xml) and the GGUF
files its own GGUF reader accepts, on the devices `openvino.Core().available_devices` lists (CPU,
GPU.N, NPU on an Intel AI PC).

Its LLMPipeline streams the tokens its own sampler picks and exposes no logits, so this is phirt's
one StreamEngine: phirt's sampling settings are mapped onto a GenerationConfig, those it cannot
honour are reported (Model.last_stats.ignored), and stopping stays phirt's (stop tokens and
strings, max_tokens): the pipeline is told to ignore EOS and is cancelled when phirt stops.
"""

from __future__ import annotations

import glob
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from phirt.backends.base import (
    CPU,
    GPU,
    NPU,
    Backend,
    Device,
    Engine,
    OpenOptions,
    Probe,
    gguf_header,
    model_kind,
)
from phirt.errors import PhirtError, UnsupportedError
from phirt.sampling import SamplingParams

DEFAULT_MAX_CTX = 4096
# What openvino-genai's GGUF reader (gguf_utils/, 2025-2026 releases) builds: these
# general.architecture values, byte-level BPE vocabularies, and these general.file_type values
# (MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q4_1, MOSTLY_Q8_0). Anything else fails inside it with an
# unhelpful "map::at", so the probe says why first.
GGUF_ARCHS = ("llama", "qwen2", "qwen3")
GGUF_TOKENIZERS = ("gpt2",)
GGUF_FILE_TYPES = {1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0"}


def _kind(name: str) -> str:
    head = name.split(".")[0].upper()
    return {"CPU": CPU, "GPU": GPU, "NPU": NPU}.get(head, GPU)


class OpenVINOBackend(Backend):
    name = "openvino"
    title = "OpenVINO GenAI"
    packages = ("openvino-genai",)
    extra = "openvino"
    exposes_logits = False

    def no_accelerator(self) -> str | None:
        # Intel GPUs are reached through a DRM render node, NPUs through an accel node: without
        # either, OpenVINO on Linux has only its CPU plugin
        if not sys.platform.startswith("linux"):
            return None
        if glob.glob("/dev/dri/renderD*") or glob.glob("/dev/accel/accel*"):
            return None
        return "no Intel GPU or NPU device node (/dev/dri/renderD*, /dev/accel/*)"

    def devices(self) -> list[Device]:
        import openvino as ov

        core = ov.Core()
        out = []
        for name in core.available_devices:
            try:
                detail = str(core.get_property(name, "FULL_DEVICE_NAME"))
            except RuntimeError:
                detail = ""
            out.append(Device(name, _kind(name), name.split(".")[0].lower(), detail))
        return out

    def refuses(self, path: str) -> str | None:
        kind = model_kind(path)
        if kind == "openvino":
            return None
        if kind != "gguf":
            return "reads OpenVINO IR folders and some GGUF files only"
        return gguf_refusal(path)

    def probe(self, path: str, device: Device) -> Probe:
        refusal = self.refuses(path)
        if refusal is not None:
            return self.no(device, refusal)
        what = "IR folder" if model_kind(path) == "openvino" else "GGUF"
        return self.yes(device, f"openvino-genai {self.version()}, {what} on {device.name}")

    def open(self, path: str, device: Device, options: OpenOptions) -> Engine:
        return OpenVINOEngine(path, device, options)


def gguf_refusal(path: str) -> str | None:
    """Why openvino-genai's GGUF reader would refuse this file, or None."""
    try:
        g = gguf_header(path)
    except PhirtError as err:
        return f"the file does not read as GGUF: {err.message}"
    if g.arch not in GGUF_ARCHS:
        return (
            f"its GGUF reader refuses architecture '{g.arch}' (it builds "
            f"{', '.join(GGUF_ARCHS)}); export an OpenVINO IR folder with optimum-intel instead"
        )
    tok = g.metadata.get("tokenizer.ggml.model")
    if tok not in GGUF_TOKENIZERS:
        return (
            f"its GGUF reader builds byte-level BPE (gpt2) tokenizers only; this file's is '{tok}'"
        )
    ftype = g.metadata.get("general.file_type")
    if ftype not in GGUF_FILE_TYPES:
        return (
            f"its GGUF reader takes file types {', '.join(GGUF_FILE_TYPES.values())}; this file "
            f"is type {ftype}"
        )
    return None


class OpenVINOEngine:
    name = "openvino"

    def __init__(self, path: str, device: Device, options: OpenOptions) -> None:
        import openvino_genai as ov_genai

        self.path = path
        self.device = device
        if model_kind(path) == "gguf":
            from phirt.formats.gguf import GGUFFile
            from phirt.tokenizer import Tokenizer

            g = GGUFFile(path)
            self.metadata: dict[str, Any] = g.metadata
            self.tokenizer: Any = Tokenizer.from_metadata(g.metadata, path=path)
            trained = int(g.metadata.get(f"{g.arch}.context_length", DEFAULT_MAX_CTX))
            self.n_vocab = int(g.tensors["token_embd.weight"].shape[0])
        else:
            from phirt.backends.folder import FolderTokenizer, folder_metadata, hf_config

            config = hf_config(path)
            self.metadata = folder_metadata(path, str(config.get("model_type", "")) or None)
            self.tokenizer = FolderTokenizer(path)
            trained = int(config.get("max_position_embeddings") or DEFAULT_MAX_CTX)
            self.n_vocab = int(config.get("vocab_size") or self.tokenizer.vocab_size)
        self.n_ctx = options.n_ctx or min(trained, DEFAULT_MAX_CTX)
        props: dict[str, Any] = dict(options.extra)
        if device.kind == CPU and options.n_threads:
            props["INFERENCE_NUM_THREADS"] = options.n_threads
        try:
            self._pipe = ov_genai.LLMPipeline(path, device.name, **props)
        except (RuntimeError, IndexError, ValueError) as exc:
            raise UnsupportedError(f"OpenVINO GenAI did not load it: {exc}", path) from None
        self.tokens: list[int] = []  # each call starts from an empty cache

    def reset(self) -> None:
        self.tokens = []

    def unsupported(self, params: SamplingParams) -> list[str]:
        out = []
        sampling = params.temperature > 0
        if sampling and params.min_p > 0:
            out.append("min_p (OpenVINO GenAI has no min-p filter)")
        if params.repeat_penalty != 1.0 and params.repeat_last_n not in (-1,):
            out.append(
                "repeat_last_n (OpenVINO GenAI penalizes every token of the sequence, "
                f"not the last {params.repeat_last_n})"
            )
        if sampling and params.seed is not None:
            out.append(
                "seed (honoured by OpenVINO's own random stream, which is not phirt's: "
                "the same seed gives other text than on other backends)"
            )
        return out

    def _config(self, params: SamplingParams, max_new: int) -> Any:
        import openvino_genai as ov_genai

        cfg = ov_genai.GenerationConfig()
        cfg.max_new_tokens = max_new
        cfg.ignore_eos = True  # phirt's stop tokens decide
        cfg.repetition_penalty = params.repeat_penalty
        cfg.do_sample = params.temperature > 0
        if cfg.do_sample:
            cfg.temperature = params.temperature
            if params.top_k > 0:
                cfg.top_k = params.top_k
            cfg.top_p = params.top_p
            if params.seed is not None:
                cfg.rng_seed = params.seed
        if hasattr(cfg, "apply_chat_template"):
            cfg.apply_chat_template = False  # the prompt is token ids phirt already templated
        return cfg

    def stream(self, prompt: Sequence[int], params: SamplingParams, max_new: int) -> Iterator[int]:
        """Runs generate() in a thread; tokens arrive through a queue. Closing the iterator
        cancels the generation (the streamer answers CANCEL) and waits for the thread."""
        import openvino as ov
        import openvino_genai as ov_genai

        ids = ov.Tensor(np.asarray([list(prompt)], dtype=np.int64))
        config = self._config(params, max_new)
        out: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()
        done = object()

        class Streamer(ov_genai.StreamerBase):
            def write(self, token: Any) -> Any:
                for t in token if isinstance(token, list) else [token]:
                    out.put(int(t))
                status = ov_genai.StreamingStatus
                return status.CANCEL if cancel.is_set() else status.RUNNING

            def end(self) -> None:
                pass

        def run() -> None:
            try:
                self._pipe.generate(ids, config, Streamer())
            except Exception as exc:  # surfaced in the consuming thread
                out.put(exc)
            finally:
                out.put(done)

        worker = threading.Thread(target=run, name="phirt-openvino", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if item is done:
                    return
                if isinstance(item, Exception):
                    raise UnsupportedError(f"OpenVINO GenAI failed: {item}", self.path)
                yield item
        finally:
            cancel.set()
            worker.join()


BACKEND = OpenVINOBackend()
