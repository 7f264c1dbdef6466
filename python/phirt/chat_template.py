"""Chat templates: a file's `tokenizer.chat_template` rendered with jinja2 as Hugging Face does.

The environment is transformers' apply_chat_template's: sandboxed (templates come from model files,
so they are untrusted code), trim_blocks and lstrip_blocks, loop controls, the `{% generation %}`
tag, `raise_exception`, a `tojson` that does not HTML-escape, and `strftime_now`; the template sees
messages, add_generation_prompt, bos_token and eos_token. Files without a template get Phi-3's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from phirt.errors import PhirtError

__all__ = ["PHI3_TEMPLATE", "ChatTemplate", "TemplateError"]

# Phi-3's chat format, written to render exactly as Phi-3.5-mini-instruct's template does.
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


class TemplateError(PhirtError):
    """The chat template does not parse, fails, or rejects the conversation."""


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for transformers' training
    masks; rendering only needs the body, but templates using it must still parse."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja2's own tojson HTML-escapes <, >, & and ': wrong for prompts
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class ChatTemplate:
    """Turns a conversation (a list of {"role", "content", ...} dicts) into prompt text."""

    def __init__(
        self,
        template_source: str | None,
        bos_token: str = "",
        eos_token: str = "",
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.source = template_source or PHI3_TEMPLATE
        self.is_builtin = not template_source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.path = path
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols, _GenerationTag],
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template does not parse (line {exc.lineno}): {_one_line(exc)}", path
            ) from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], tokenizer: Any) -> ChatTemplate:
        """The file's `tokenizer.chat_template`, or Phi-3's when it has none; BOS/EOS texts come
        from the tokenizer (its bos_text / eos_text)."""
        return cls(
            metadata.get("tokenizer.chat_template"),
            tokenizer.bos_text,
            tokenizer.eos_text,
            getattr(tokenizer, "path", None),
        )

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **context: Any,
    ) -> str:
        """The prompt text; add_generation_prompt opens the assistant's turn. Extra keyword
        arguments (tools, documents, ...) are passed to the template as transformers does."""
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise TemplateError(f"message {i} needs a 'role', got {message!r}", self.path)
        try:
            return self._template.render(
                **context,
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            # raise_exception() from the template, undefined names, sandbox violations
            raise TemplateError(f"chat template: {_one_line(exc)}", self.path) from None
        except Exception as exc:  # a template is code: any failure in it is the template's
            raise TemplateError(
                f"chat template failed: {type(exc).__name__}: {_one_line(exc)}", self.path
            ) from None
