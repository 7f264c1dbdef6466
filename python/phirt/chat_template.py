"""Chat templates: a file's `tokenizer.chat_template` rendered with jinja2 as Hugging Face does.

Same environment as transformers' apply_chat_template: sandboxed, trim_blocks and lstrip_blocks,
`raise_exception`, `tojson` and `strftime_now`, with messages, add_generation_prompt, bos_token and
eos_token. Files without a template get Phi-3's (the one Phi-3.5-mini-instruct ships).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from phirt.errors import PhirtError

# Phi-3 / Phi-3.5-mini-instruct's template (microsoft/Phi-3.5-mini-instruct, MIT licence).
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


class TemplateError(PhirtError):
    """The chat template is broken or rejects the conversation."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kw)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """Renders a list of {"role", "content"} messages into the model's prompt text."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source if source else PHI3_TEMPLATE
        self.is_builtin = not source
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template does not parse: {exc}") from None

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], tokenizer: Any) -> ChatTemplate:
        return cls(meta.get("tokenizer.chat_template"), tokenizer.bos_text, tokenizer.eos_text)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise TemplateError(f"each message needs 'role' and 'content', got {m!r}")
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template failed: {exc}") from None
