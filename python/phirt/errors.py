"""Exception family for phirt: every error names the file (when there is one) and what is wrong."""

from __future__ import annotations

import os


class PhirtError(Exception):
    """Base of all phirt errors. ``str(err)`` is a single line fit for a CLI."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class FormatError(PhirtError):
    """A model file is truncated, corrupt, or not the format it claims to be."""


class UnsupportedError(PhirtError):
    """The file is valid but uses an architecture, quant type or feature phirt does not support."""


class ContextFullError(PhirtError):
    """The KV cache has no room for more tokens."""


class QuantizeError(PhirtError):
    """The quantizer cannot convert the given source."""
