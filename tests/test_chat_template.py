"""Chat templates rendered as Hugging Face renders them."""

from __future__ import annotations

from pathlib import Path

import pytest

from phirt.chat_template import PHI3_TEMPLATE, ChatTemplate, TemplateError

DATA = Path(__file__).parent / "data"
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]
PHI3_EXPECTED = (
    "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
    "<|user|>\n2+2?<|end|>\n<|assistant|>\n"
)


def test_phi35_template_from_file() -> None:
    source = (DATA / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(encoding="utf-8")
    assert ChatTemplate(source, "<s>", "<|endoftext|>").render(CONVERSATION) == PHI3_EXPECTED


def test_builtin_fallback_is_phi3() -> None:
    template = ChatTemplate(None, "<s>", "<|endoftext|>")
    assert template.is_builtin and template.source == PHI3_TEMPLATE
    assert template.render(CONVERSATION) == PHI3_EXPECTED
    closed = template.render(CONVERSATION[:3], add_generation_prompt=False)
    assert closed.endswith("Hello!<|end|>\n<|endoftext|>")


def test_matches_transformers_apply_chat_template() -> None:
    transformers = pytest.importorskip("transformers")
    source = (DATA / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(encoding="utf-8")
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[CONVERSATION], chat_template=source, add_generation_prompt=True,
        bos_token="<s>", eos_token="<|endoftext|>",
    )  # fmt: skip
    assert transformers is not None
    assert ChatTemplate(source, "<s>", "<|endoftext|>").render(CONVERSATION) == rendered[0]


def test_raise_exception_and_bad_templates_are_phirt_errors() -> None:
    strict = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError, match="roles must alternate"):
        strict.render(CONVERSATION)
    with pytest.raises(TemplateError, match="does not parse"):
        ChatTemplate("{% for %}")
    with pytest.raises(TemplateError, match="role"):
        ChatTemplate(None).render([{"content": "no role"}])
