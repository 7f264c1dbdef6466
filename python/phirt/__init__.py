"""phirt: an on-device runtime for Microsoft Phi models."""

from __future__ import annotations

from phirt.errors import (
    BackendUnavailableError,
    ContextFullError,
    FormatError,
    InvalidArgumentError,
    NumericalError,
    PhirtError,
    UnsupportedError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ContextFullError",
    "FormatError",
    "InvalidArgumentError",
    "Model",
    "NumericalError",
    "PhirtError",
    "UnsupportedError",
    "__version__",
    "load",
]


def __getattr__(name: str):  # lazy: `import phirt` must not need the compiled extension
    if name in ("load", "Model"):
        from phirt import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'phirt' has no attribute {name!r}")
