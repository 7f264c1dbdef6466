"""The backend interface: what every engine phirt can drive (its own kernels or a vendor stack)
answers and returns.

A backend module defines one `Backend` subclass. `devices()` lists what its stack sees on this
machine; `probe(path, device)` says whether it can run that file or folder there, or precisely why
not; `open(path, device, options)` returns an engine the runtime's `Model` drives:

- a `LogitsEngine` (native, ONNX Runtime GenAI, llama.cpp, MLX) evaluates tokens and hands back
  logits, so phirt's own sampler and stop handling run on top, identically on every backend;
- a `StreamEngine` (OpenVINO GenAI) only streams the tokens its own sampler picks: phirt maps its
  sampling parameters onto the stack's and reports those it cannot honour.

Vendor packages are imported inside their backend's methods only: `import phirt` never needs them.
"""

from __future__ import annotations

import importlib.metadata
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from phirt.errors import PhirtError

if TYPE_CHECKING:
    from phirt.sampling import SamplingParams

CPU, GPU, NPU = "cpu", "gpu", "npu"
ACCELERATORS = (GPU, NPU)

# device= values that name a family rather than one backend's device name
DEVICE_FAMILIES: dict[str, str] = {
    "cpu": "the CPU",
    "gpu": "any GPU (CUDA, Metal, DirectML, WebGPU, Intel GPU)",
    "npu": "any NPU (Intel NPU, Qualcomm QNN)",
    "cuda": "an NVIDIA GPU through CUDA",
    "metal": "an Apple GPU through Metal",
    "dml": "a DirectX 12 GPU through DirectML",
    "webgpu": "a GPU through WebGPU",
    "qnn": "a Qualcomm NPU through QNN",
    "vulkan": "a GPU through Vulkan",
}


@dataclass(frozen=True)
class Device:
    """One place a backend can run a model."""

    name: str  # the stack's own name for it: "cpu", "cuda", "GPU.0", "NPU", "metal"
    kind: str  # CPU, GPU or NPU: what device="auto" ranks by
    family: str = ""  # "cuda", "metal", "dml", "qnn", ... (device= may name it)
    detail: str = ""  # what the stack says about it (a GPU's name), for doctor
    # used only when its backend is asked for by name (llama.cpp's CPU path: phirt's own kernels
    # are the CPU backend, and llama.cpp there is a comparison, not a choice)
    named_only: bool = False

    @property
    def is_accelerator(self) -> bool:
        return self.kind in ACCELERATORS

    def matches(self, request: str) -> bool:
        """Whether a device= request ("auto", "cpu", "gpu", "cuda", "GPU.1", ...) names this."""
        r = request.strip().lower()
        return r in ("auto", self.kind, self.family.lower(), self.name.lower())

    def __str__(self) -> str:
        return self.name if self.name.lower() == self.kind else f"{self.name} ({self.kind})"


@dataclass(frozen=True)
class Probe:
    """A backend's answer for one model on one device."""

    backend: str
    device: Device | None  # None: the backend has no device to offer (not installed, none found)
    ok: bool
    reason: str  # when ok: what it would run; otherwise why not, precisely
    # when not ok but phirt can convert the model into a form this backend runs: that format
    convert: str | None = None
    # when not ok because phirt's own loader rejected the model: its error, which names the
    # problem in the file more precisely than "no backend can run it"
    error: PhirtError | None = field(default=None, compare=False)


@dataclass
class OpenOptions:
    """What `phirt.load` passes every backend; each ignores what does not apply to it."""

    n_ctx: int | None = None
    n_threads: int | None = None
    kv_type: str | None = None  # None: each backend's default (f16 for GGUF)
    extra: dict[str, Any] = field(default_factory=dict)  # backend_options, given to the stack


class Engine(Protocol):
    """What every opened backend provides to `Model`."""

    name: str  # backend name
    device: Device
    n_ctx: int
    n_vocab: int
    tokens: list[int]  # what its cache holds, in order (empty for a StreamEngine between calls)
    tokenizer: Any  # encode / decode / stream_decoder / eot_ids / bos_text (phirt.tokenizer API)
    metadata: dict[str, Any]  # GGUF-style keys; tokenizer.chat_template at least when known

    def reset(self) -> None: ...


class LogitsEngine(Engine, Protocol):
    def reuse_prefix(self, tokens: Sequence[int]) -> int: ...
    def eval(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray: ...


class StreamEngine(Engine, Protocol):
    def unsupported(self, params: SamplingParams) -> list[str]: ...
    def stream(self, prompt: Sequence[int], params: SamplingParams, max_new: int) -> Iterator[int]:
        """The stack's own sampler picks tokens until phirt stops pulling (close() cancels)."""
        ...


def has_logits(engine: Any) -> bool:
    return hasattr(engine, "eval")


class Backend(ABC):
    """One way of running models. Subclasses set the class attributes and the three methods."""

    name: ClassVar[str]  # "native", "ortgenai", "openvino", "mlx", "llamacpp"
    title: ClassVar[str]  # what users call it
    # PyPI distributions that bring the stack, any one of them (the first is what the extra
    # installs); the installed one's version is reported
    packages: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None]  # `pip install phirt[extra]` that installs it
    exposes_logits: ClassVar[bool]
    # when devices() lists candidates rather than hardware found, doctor says so with this
    devices_note: ClassVar[str] = ""

    def version(self) -> str | None:
        """The installed package's version, without importing it; None when not installed."""
        for dist in self.packages:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    def missing(self) -> str:
        return f"{self.packages[0]} is not installed (pip install 'phirt[{self.extra}]')"

    def refuses(self, path: str) -> str | None:
        """Why this backend cannot read `path` on any device (its format), from headers and
        configs only, before any device is enumerated; None when devices must be asked."""
        return None

    def no_accelerator(self) -> str | None:
        """A cheap proof, without importing the stack, that it has no accelerator here (so under
        device="auto", with phirt's kernels able to run the model, it cannot win); None when only
        asking the stack can tell."""
        return None

    @abstractmethod
    def devices(self) -> list[Device]:
        """Devices this stack can use on this machine (empty when it is not installed)."""

    @abstractmethod
    def probe(self, path: str, device: Device) -> Probe:
        """Can this backend run `path` on `device` (one of devices())? Cheap: reads headers and
        configs, loads no weights unless that is the only honest test (ONNX Runtime providers)."""

    @abstractmethod
    def open(self, path: str, device: Device, options: OpenOptions) -> Engine:
        """Load the model; errors are PhirtError subclasses naming the path."""

    def unavailable(self, reason: str) -> Probe:
        return Probe(self.name, None, False, reason)

    def yes(self, device: Device, reason: str) -> Probe:
        return Probe(self.name, device, True, reason)

    def no(
        self,
        device: Device | None,
        reason: str,
        convert: str | None = None,
        error: PhirtError | None = None,
    ) -> Probe:
        return Probe(self.name, device, False, reason, convert, error)


def model_kind(path: str | os.PathLike[str]) -> str:
    """What a path holds, by its files: "gguf", "onnx" (ONNX Runtime GenAI folder), "openvino"
    (OpenVINO IR folder), "safetensors" (Hugging Face / mlx-lm folder), "missing", or "unknown"."""
    p = os.fspath(path)
    if os.path.isfile(p):
        with open(p, "rb") as f:
            return "gguf" if f.read(4) == b"GGUF" else "unknown"
    if not os.path.isdir(p):
        return "missing"
    names = set(os.listdir(p))
    if "genai_config.json" in names:
        return "onnx"
    if "openvino_model.xml" in names:
        return "openvino"
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    return "unknown"


def gguf_header(path: str) -> Any:
    """The GGUFFile of `path`, parsed once per process while the file is unchanged: every
    backend's probe reads the same header, and the native loader takes it over."""
    from phirt.formats import gguf_header as parsed_header

    return parsed_header(path)  # the native loader takes it over (formats.open_model)


KIND_NAMES = {
    "gguf": "a GGUF file",
    "onnx": "an ONNX Runtime GenAI folder",
    "openvino": "an OpenVINO IR folder",
    "safetensors": "a safetensors model folder (Hugging Face / mlx-lm)",
    "unknown": "not a model format phirt knows",
    "missing": "no such file or folder",
}
