"""Device selection: which engine runs a model, and why.

`device="auto"` will prefer a vendor stack when one is installed and fits the file (CUDA through
ONNX Runtime GenAI or llama.cpp, OpenVINO GenAI, MLX, QNN); until those backends land, every file
runs on phirt's own CPU kernels. Each choice carries a human-readable reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from phirt import _kernels as K
from phirt.errors import UnsupportedError

DEVICES = ("auto", "cpu")


@dataclass(frozen=True)
class Selection:
    backend: str  # "native" for phirt's kernels
    reason: str


def select_backend(device: str = "auto") -> Selection:
    if device not in DEVICES:
        raise UnsupportedError(
            f"device '{device}' is not supported (choose one of: {', '.join(DEVICES)})"
        )
    isa = K.isa()
    if device == "cpu":
        return Selection("native", f"device='cpu' requested: phirt CPU kernels ({isa})")
    return Selection("native", f"no accelerator backend installed: phirt CPU kernels ({isa})")
