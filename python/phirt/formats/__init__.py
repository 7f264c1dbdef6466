"""Model file formats: reading and validating files (GGUF now)."""

from __future__ import annotations

from phirt.formats.gguf import SUPPORTED_TYPES, GGUFFile, GGUFSummary, Tensor, TypeStats, type_name

__all__ = ["SUPPORTED_TYPES", "GGUFFile", "GGUFSummary", "Tensor", "TypeStats", "type_name"]
