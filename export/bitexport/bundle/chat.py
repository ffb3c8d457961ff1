"""What a bundle carries for chat: the model's chat template, the same template pre-rendered into
plain turn strings for runtimes without a Jinja engine (Android), the extra stop tokens and the
generation defaults (manifest fields chat_template, chat_format, stop_token_ids, generation; their
schema is manifest.schema.json, the apps read them).

The template is rendered as transformers' apply_chat_template renders it (sandboxed Jinja,
trim_blocks, lstrip_blocks). chat_format is kept only where plain strings reproduce the template
exactly on probe conversations: a template that numbers turns, say, gets none, and the Android app
then offers plain completion.
"""

from __future__ import annotations

import json
from pathlib import Path

from bitexport.errors import InputError

TOKENIZER_CONFIG = "tokenizer_config.json"
GENERATION_CONFIG = "generation_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def _raise_exception(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(x, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON (tool calls)
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    from datetime import datetime

    return datetime.now().strftime(fmt)


def render_jinja(template: str, messages: list[dict], add_generation_prompt: bool, bos: str, eos: str) -> str:
    """The template rendered with what transformers' apply_chat_template gives a template: the
    helpers raise_exception and strftime_now, a tojson that does not escape HTML, bos/eos_token."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)


def render_chat_format(fmt: dict, system: str, history: list[tuple[str, str]], message: str) -> str:
    """What the Android app sends (ChatFormat.render in BundleManifest.kt), BOS left to the runner."""
    def fill(turn: str, content: str) -> str:
        return fmt[turn].replace("{content}", content.strip())

    out = fmt.get("prefix", "") + (fill("system", system) if system.strip() else "")
    for user, reply in history:
        out += fill("user", user) + fill("assistant", reply)
    return out + fill("user", message) + fmt["generation_prompt"]


def derive_chat_format(template: str, bos: str, eos: str) -> dict | None:
    """chat_format from a Jinja chat template, or None when plain strings cannot reproduce it:
    renders probe conversations, cuts them into turn strings, and keeps them only if they
    reproduce every probe (minus the leading BOS, which the runner adds through num_bos)."""
    S, U1, A1, U2, A2, U3 = "\x01sys\x01", "\x01u1\x01", "\x01a1\x01", "\x01u2\x01", "\x01a2\x01", "\x01u3\x01"
    sy, us, asst = ({"role": r, "content": c} for r, c in (("system", S), ("user", U1), ("assistant", A1)))

    def render(messages: list[dict], gen: bool = True) -> str:
        text = render_jinja(template, messages, gen, bos, eos)
        return text[len(bos):] if bos and text.startswith(bos) else text

    plain, prompt = render([us], gen=False), render([us])
    if not prompt.startswith(plain):
        return None
    generation_prompt = prompt[len(plain):]
    with_system = render([sy, us])
    tail = plain + generation_prompt
    if not with_system.endswith(tail):
        return None
    history = render([sy, us, asst, {"role": "user", "content": U2}])
    head, end = with_system[: -len(tail)] + plain, plain.replace(U1, U2) + generation_prompt
    if not (history.startswith(head) and history.endswith(end)):
        return None
    fmt = {"prefix": "", "system": with_system[: -len(tail)].replace(S, "{content}"), "user": plain.replace(U1, "{content}"),
           "assistant": history[len(head):-len(end)].replace(A1, "{content}"), "generation_prompt": generation_prompt}
    if fmt["system"] and fmt["system"].count("{content}") != 1:
        return None
    probes = [("", [], U1), (S, [], U1), (S, [(U1, A1)], U2), ("", [(U1, A1), (U2, A2)], U3)]
    for system, turns, message in probes:
        messages = [{"role": "system", "content": system}] if system else []
        for u, a in turns:
            messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": message})
        if render(messages) != render_chat_format(fmt, system, turns, message):
            return None
    return fmt


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); fix or remove it") from None
    return data if isinstance(data, dict) else {}


def _template(tokenizer_config: dict, folder: Path) -> str | None:
    jinja = folder / CHAT_TEMPLATE_FILE
    if jinja.is_file():  # transformers writes the template there now, and reads it before the config's
        t = jinja.read_text(encoding="utf-8")
    else:
        t = tokenizer_config.get("chat_template")
        if isinstance(t, list):  # named templates: [{"name": "default", "template": ...}, ...]
            t = next((x.get("template") for x in t if isinstance(x, dict) and x.get("name") == "default"), None)
    return t if isinstance(t, str) and t.strip() else None


def chat_template(folder: str | Path) -> str | None:
    """A model folder's chat template (chat_template.jinja, else tokenizer_config.json's), or None."""
    folder = Path(folder)
    return _template(_read_json(folder / TOKENIZER_CONFIG), folder)


def special_token_texts(tokenizer_json: str | Path, bos_token_id: int | None, eos_token_ids) -> tuple[str, str]:
    """(bos_token, eos_token) as a template sees them: the texts of the model's BOS and first EOS."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    bos = tok.id_to_token(bos_token_id) if bos_token_id is not None else None
    eos = tok.id_to_token(eos_token_ids[0]) if eos_token_ids else None
    return bos or "", eos or ""


def chat_fields(folder: Path, tokenizer_json: Path, bos_token_id: int | None, eos_token_ids: list[int],
                adds_bos: bool) -> dict:
    """The manifest's chat fields for the model folder (empty where it has no template or config)."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    out: dict = {}
    tok = Tokenizer.from_file(str(tokenizer_json))
    gen = _read_json(folder / GENERATION_CONFIG)
    eos = gen.get("eos_token_id")
    # stop tokens must be special tokens: Android's LlmCallback sees only text and matches their content
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    extra_stops = [int(i) for i in (eos if isinstance(eos, list) else [eos] if eos is not None else [])
                   if int(i) not in eos_token_ids and int(i) in special]
    if extra_stops:
        out["stop_token_ids"] = sorted(set(extra_stops))
    defaults = {}
    if isinstance(gen.get("temperature"), (int, float)) and gen.get("do_sample") is True:  # else greedy
        defaults["temperature"] = float(gen["temperature"])
    if isinstance(gen.get("max_new_tokens"), int) and gen["max_new_tokens"] > 0:
        defaults["max_new_tokens"] = gen["max_new_tokens"]
    if defaults:
        out["generation"] = defaults
    template = _template(_read_json(folder / TOKENIZER_CONFIG), folder)
    if template is None:
        return out
    out["chat_template"] = template
    bos = tok.id_to_token(bos_token_id) if bos_token_id is not None else ""
    eos_text = tok.id_to_token(eos_token_ids[0]) if eos_token_ids else ""
    try:
        fmt = derive_chat_format(template, bos or "", eos_text or "")
        starts_with_bos = bool(bos) and render_jinja(template, [{"role": "user", "content": "x"}], True,
                                                     bos, eos_text or "").startswith(bos)
    except Exception:  # a template Jinja cannot render here: the iOS app renders it itself, or fails there
        fmt, starts_with_bos = None, False
    # the Android runner adds BOS through num_bos exactly when the tokenizer does: the template
    # must agree, or the pre-rendered prompt would differ from the template's
    if fmt is not None and starts_with_bos == adds_bos:
        out["chat_format"] = fmt
    return out
