"""Chat templates rendered as Hugging Face transformers renders them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phirt.chat_template import PHI3_TEMPLATE, ChatTemplate, TemplateError
from phirt.errors import PhirtError
from phirt.formats.gguf import GGUFFile
from phirt.tokenizer import Tokenizer
from smollm2 import smollm2_path

DATA = Path(__file__).parent / "data"
PHI35 = (DATA / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(encoding="utf-8")
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]
# Written out from the template: every turn is "<|role|>\n" + content + "<|end|>\n", and the
# generation prompt opens the assistant's turn.
PHI3_EXPECTED = (
    "<|system|>\nBe brief.<|end|>\n"
    "<|user|>\nHi<|end|>\n"
    "<|assistant|>\nHello!<|end|>\n"
    "<|user|>\n2+2?<|end|>\n"
    "<|assistant|>\n"
)


def test_phi35_template_from_file() -> None:
    template = ChatTemplate(PHI35, "<s>", "<|endoftext|>")
    assert template.render(CONVERSATION) == PHI3_EXPECTED
    closed = template.render(CONVERSATION[:3], add_generation_prompt=False)
    assert closed == PHI3_EXPECTED.split("<|user|>\n2+2?")[0] + "<|endoftext|>"


@pytest.mark.parametrize(
    "messages",
    [
        CONVERSATION,
        CONVERSATION[1:],
        [{"role": "system", "content": ""}, {"role": "user", "content": "no system"}],
        [{"role": "user", "content": "multi\nline {{ not jinja }}"}],
        [],
    ],
)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_builtin_fallback_renders_as_phi35(messages: list, add_generation_prompt: bool) -> None:
    builtin = ChatTemplate(None, "<s>", "<|endoftext|>")
    assert builtin.is_builtin and builtin.source == PHI3_TEMPLATE
    shipped = ChatTemplate(PHI35, "<s>", "<|endoftext|>")
    assert builtin.render(messages, add_generation_prompt) == shipped.render(
        messages, add_generation_prompt
    )


def test_matches_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    for add in (True, False):
        rendered, _ = render_jinja_template(
            conversations=[CONVERSATION], chat_template=PHI35, add_generation_prompt=add,
            bos_token="<s>", eos_token="<|endoftext|>",
        )  # fmt: skip
        assert ChatTemplate(PHI35, "<s>", "<|endoftext|>").render(CONVERSATION, add) == rendered[0]


def test_from_metadata_uses_the_files_template_and_bos() -> None:
    path = DATA / "vocab" / "ggml-vocab-phi-3.gguf"
    meta = GGUFFile(path).metadata
    template = ChatTemplate.from_metadata(meta, Tokenizer.from_metadata(meta, path))
    assert not template.is_builtin  # this file carries Phi-3's first template, which opens with BOS
    assert template.render(CONVERSATION[1:2]) == "<s><|user|>\nHi<|end|>\n<|assistant|>\n"
    no_template = {k: v for k, v in meta.items() if k != "tokenizer.chat_template"}
    fallback = ChatTemplate.from_metadata(no_template, Tokenizer.from_metadata(no_template))
    assert fallback.is_builtin and fallback.eos_token == "<|endoftext|>"


def test_smollm2_template_from_its_gguf() -> None:
    path = smollm2_path()
    meta = GGUFFile(path).metadata
    template = ChatTemplate.from_metadata(meta, Tokenizer.from_metadata(meta, path))
    assert template.render([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.render(CONVERSATION, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
    )


def test_hf_environment_helpers() -> None:
    data = [{"role": "user", "content": "<b>&'café'"}]
    rendered = ChatTemplate("{{ messages | tojson }}").render(data)
    assert json.loads(rendered) == data and "<b>&'café'" in rendered  # no HTML escaping
    assert ChatTemplate("{{ messages[0] | tojson(indent=2) }}").render(data).count("\n") == 3
    year = ChatTemplate("{{ strftime_now('%Y') }}").render([])
    assert year.isdigit() and len(year) == 4
    tagged = "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    assert ChatTemplate(tagged).render(data) == "<b>&'café'"
    loops = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}"
    loops += "{% endfor %}"
    assert ChatTemplate(loops).render(CONVERSATION) == "system"
    blocks = "{% for m in messages %}\n    {{ m.role }}\n{% endfor %}"  # trim and lstrip blocks
    assert ChatTemplate(blocks).render(CONVERSATION[:2]) == "    system\n    user\n"
    extra = ChatTemplate("{{ tools | length }}").render([], tools=[{"name": "f"}])
    assert extra == "1"


@pytest.mark.parametrize(
    ("source", "messages", "message"),
    [
        ("{{ raise_exception('roles must alternate') }}", CONVERSATION, "roles must alternate"),
        ("{{ 1 + 'a' }}", CONVERSATION, "TypeError"),
        ("{{ messages.__class__.__mro__ }}", CONVERSATION, "unsafe"),
        ("{{ undefined_thing.attr }}", CONVERSATION, "undefined"),
        (None, [{"content": "no role"}], "needs a 'role'"),
        (None, ["not a dict"], "needs a 'role'"),
    ],
)
def test_failures_are_one_line_phirt_errors(source: str | None, messages: list, message: str):
    template = ChatTemplate(source, path="model.gguf")
    with pytest.raises(TemplateError, match=message) as info:
        template.render(messages)
    assert isinstance(info.value, PhirtError)
    assert str(info.value).startswith("model.gguf: ") and "\n" not in str(info.value)


def test_syntax_error_is_a_phirt_error() -> None:
    with pytest.raises(TemplateError, match=r"does not parse \(line 2\)") as info:
        ChatTemplate("ok\n{% for %}", path="model.gguf")
    assert "\n" not in str(info.value)
