"""phirt: an on-device runtime for Microsoft Phi models."""

from __future__ import annotations

from phirt.errors import ContextFullError, FormatError, PhirtError, UnsupportedError

__version__ = "0.1.0"

__all__ = ["ContextFullError", "FormatError", "PhirtError", "UnsupportedError", "__version__"]
