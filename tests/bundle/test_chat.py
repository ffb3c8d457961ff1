"""The chat fields an export writes (bundle/chat.py): the model's template verbatim, chat_format only
where plain strings reproduce the template and its BOS agrees with the tokenizer's, extra stop
tokens from generation_config.json, generation defaults; all valid against the manifest schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bitexport.api import export
from bitexport.bundle.chat import render_chat_format, render_jinja
from bitexport.formats.tiny import make_tiny_checkpoint

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "export" / "bitexport" / "bundle" /
                     "manifest.schema.json").read_text())
# a Llama-3-like template without BOS (the tiny tokenizer adds none), and the same with BOS first
PLAIN = ("{% for m in messages %}{{ m['role'] | capitalize + ': ' + m['content'] | trim + eos_token }}{% endfor %}"
         "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")
WITH_BOS = "{{ bos_token }}" + PLAIN
NUMBERED = "{% for m in messages %}{{ loop.index }}. {{ m['content'] }}\n{% endfor %}"


def _model(tmp_path: Path, template: str | None, generation: dict | None) -> Path:
    folder = make_tiny_checkpoint(tmp_path / "m", "hf-bitnet")
    if template is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def _manifest(tmp_path: Path, template: str | None, generation: dict | None = None) -> dict:
    bundle = export(_model(tmp_path, template, generation), "desktop", tmp_path / "b", max_seq_len=32)
    manifest = bundle.manifest
    jsonschema.Draft202012Validator(SCHEMA).validate(manifest)
    return manifest


def test_template_and_generation_config_reach_the_manifest(tmp_path):
    m = _manifest(tmp_path, PLAIN, {"eos_token_id": [1, 0], "temperature": 0.6, "do_sample": True,
                                    "max_new_tokens": 100})
    assert m["chat_template"] == PLAIN
    assert m["stop_token_ids"] == [0]  # the eos already in eos_token_ids is not repeated
    assert m["generation"] == {"temperature": 0.6, "max_new_tokens": 100}
    # the pre-rendered strings give what Jinja gives, for a conversation the probes never saw
    fmt = m["chat_format"]
    messages = [{"role": "system", "content": " Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello. "}, {"role": "user", "content": "café?"}]
    assert render_chat_format(fmt, " Be brief.", [("Hi", "Hello. ")], "café?") == \
        render_jinja(PLAIN, messages, True, "<s>", "</s>")


def test_bos_in_the_template_but_not_in_the_tokenizer_gives_no_chat_format(tmp_path):
    """The Android runner adds BOS only when the tokenizer does (num_bos): pre-rendered strings
    from a template that starts with BOS would then lose it, so none are written."""
    m = _manifest(tmp_path, WITH_BOS)
    assert m["chat_template"] == WITH_BOS and "chat_format" not in m


@pytest.mark.parametrize("template,generation", [(None, None), (NUMBERED, {"do_sample": False, "temperature": 0.7})])
def test_what_cannot_be_carried_is_left_out(tmp_path, template, generation):
    m = _manifest(tmp_path, template, generation)
    assert "chat_format" not in m and "generation" not in m and "stop_token_ids" not in m
    assert m.get("chat_template") == template


def test_chat_template_jinja_comes_before_tokenizer_config(tmp_path):
    """transformers reads chat_template.jinja before tokenizer_config.json's chat_template: so do
    the manifest and `run --chat`."""
    from transformers import AutoTokenizer

    from bitexport.bundle.chat import chat_template

    folder = _model(tmp_path, PLAIN, None)
    (folder / "chat_template.jinja").write_text(WITH_BOS)
    assert AutoTokenizer.from_pretrained(str(folder)).chat_template == WITH_BOS == chat_template(folder)
    m = export(folder, "desktop", tmp_path / "b", max_seq_len=32).manifest
    assert m["chat_template"] == WITH_BOS


# what real templates call: raise_exception for unsupported roles, tojson for tool arguments
# (transformers' own tojson keeps non-ASCII and does not escape HTML), strftime_now for dates
HELPERS = ("{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
           "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
           "{{ m['role'] }}={{ m['content'] | tojson }};{% endfor %}{{ strftime_now('%Y') | length }}")


def test_render_gives_templates_transformers_helpers(tmp_path):
    from jinja2.exceptions import TemplateError
    from transformers import PreTrainedTokenizerFast

    folder = make_tiny_checkpoint(tmp_path / "m", "hf-bitnet")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>", eos_token="</s>",
                                  chat_template=HELPERS)
    messages = [{"role": "system", "content": "<b>café</b> & \"quotes\""}, {"role": "user", "content": "日本"}]
    want = tok.apply_chat_template(messages, tokenize=False)
    assert render_jinja(HELPERS, messages, False, "<s>", "</s>") == want and "café" in want and "<b>" in want
    with pytest.raises(TemplateError, match="unknown role tool"):
        render_jinja(HELPERS, [{"role": "tool", "content": "x"}], False, "<s>", "</s>")
