"""Exception family for phirt: every error a user can trigger is a PhirtError subclass whose
message is one line naming the file (when there is one) or the argument, and what is wrong.

    PhirtError
    ├── FormatError              a model file is truncated, corrupt or inconsistent
    ├── UnsupportedError         a valid file (or request) phirt does not handle
    ├── InvalidArgumentError     a bad argument to a public function (also a ValueError)
    ├── ContextFullError         the KV cache has no room for the prompt
    ├── NumericalError           the model produced NaN or Inf (corrupt weights, overflow)
    ├── BackendUnavailableError  the requested device or vendor stack is not available here
    ├── QuantizeError            the quantizer cannot convert the given source
    └── TemplateError            the chat template fails (phirt.chat_template)

The CLI prints `phirt: error: <message>` for any of them and exits with status 1.
"""

from __future__ import annotations

import os

__all__ = [
    "BackendUnavailableError",
    "ContextFullError",
    "FormatError",
    "InvalidArgumentError",
    "NumericalError",
    "PhirtError",
    "QuantizeError",
    "UnsupportedError",
]


def one_line(text: str) -> str:
    """text with line breaks escaped, so a message stays one line whatever it quotes (a file
    name, a key or a token from a damaged file)."""
    if "\n" not in text and "\r" not in text:
        return text
    return text.replace("\r", "\\r").replace("\n", "\\n")


class PhirtError(Exception):
    """Base of all phirt errors. ``str(err)`` is a single line fit for a CLI: ``path: message``
    when the error is about a file, else the message alone."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(one_line(f"{self.path}: {message}" if self.path else message))


class FormatError(PhirtError):
    """A model file is truncated, corrupt, or not the format it claims to be."""


class UnsupportedError(PhirtError):
    """The file is valid but uses an architecture, quant type or feature phirt does not support."""


class InvalidArgumentError(PhirtError, ValueError):
    """A public function got an argument it cannot use; the message names the argument, the
    value and what is allowed. Also a ValueError, as Python's own bad-value errors are."""


class ContextFullError(PhirtError):
    """The KV cache has no room for more tokens."""


class NumericalError(PhirtError):
    """The model produced non-finite logits: its weights are corrupt, or activations overflow."""


class BackendUnavailableError(PhirtError):
    """The requested device or vendor backend is not installed or not usable on this machine."""


class QuantizeError(PhirtError):
    """The quantizer cannot convert the given source."""


# -- argument checks for public entry points ---------------------------------------------------


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """`value` as an int (bool and float refused), at least `minimum`; else InvalidArgumentError
    naming the argument."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    number = value.__index__()  # type: ignore[attr-defined]
    if minimum is not None and number < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {number}")
    return number


def check_float(name: str, value: object) -> float:
    """`value` as a finite float (ints accepted); else InvalidArgumentError naming it."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    return number


def check_str(name: str, value: object) -> str:
    """A non-empty string argument (a device or backend name)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r:.80}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
