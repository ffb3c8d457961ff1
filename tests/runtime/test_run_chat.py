"""`bitexport run` on a model folder (the PyTorch reference runner): streamed text equal to the
non-streamed text, sampling flags, one-line refusals, and --chat with a scripted stdin against
transformers' apply_chat_template and the reference decoder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitexport.cli import main
from bitexport.formats import load_model
from bitexport.runtime.generate import generate_on
from bitexport.runtime.sampling import SamplingConfig

BIN = Path(sys.executable).parent / "bitexport"
MAX_SEQ = 256  # the tiny checkpoints' max_position_embeddings: the runner's KV cache
# BOS, a system turn and EOS closing each turn, as Llama-3's and Falcon3's templates are shaped;
# short markers, since the tiny vocabulary spells most text byte by byte
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'][0] + ':' + m['content'] | trim + eos_token + '\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ 'a:' }}{% endif %}")


@pytest.fixture(scope="module")
def chat_model(tiny_hf, tmp_path_factory):
    from tokenizers import Tokenizer, processors

    folder = tmp_path_factory.mktemp("chat") / "m"
    shutil.copytree(tiny_hf, folder)
    # a tokenizer that adds BOS itself, as Llama 3's and Falcon3's do: the rendered template holds
    # BOS already, so encoding it with special tokens (a bug) would give two
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": TEMPLATE, "bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    return folder


def _stdout(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("sampling", [[], ["--temperature", "0.9", "--top-p", "0.95", "--seed", "5"]],
                         ids=["greedy", "sampled"])
def test_streamed_text_is_the_json_text(capsys, tiny_hf, sampling):
    base = ["run", str(tiny_hf), "--prompt", "To be, café", "-n", "24", *sampling]
    streamed = _stdout(capsys, base)
    text, stats = streamed[: streamed.rindex("\n[")], streamed[streamed.rindex("\n[") + 1:]
    d = json.loads(_stdout(capsys, base + ["--json"]))
    assert text == d["text"] and len(d["tokens"]) == 24
    assert stats.startswith("[pytorch-reference] prefill") and stats.count("\n") == 1


def test_sampling_flags_reach_the_runner(capsys, tiny_hf):
    """Seeded runs repeat, differ from greedy, and are the sampler's picks on the reference
    decoder; --top-k 1 is greedy whatever the temperature."""
    run = lambda *a: json.loads(_stdout(capsys, ["run", str(tiny_hf), "-p", "To be", "-n", "16", "--json", *a]))["tokens"]
    greedy = run()
    sampled = run("--temperature", "1.0", "--seed", "3")
    assert sampled == run("--temperature", "1.0", "--seed", "3") != greedy
    assert run("--temperature", "1.5", "--top-k", "1", "--seed", "3") == greedy
    from bitexport.runtime.text import TextCodec

    loaded = load_model(tiny_hf)
    ids = TextCodec(tiny_hf / "tokenizer.json").encode("To be")
    assert sampled == generate_on(loaded.model, ids, 16, loaded.stop_token_ids, SamplingConfig(temperature=1.0, seed=3)).tokens


@pytest.mark.parametrize("args,flag", [
    (["--top-p", "1.5"], "--top-p"), (["--temperature", "-1"], "--temperature"), (["--top-k", "-1"], "--top-k"),
    (["--seed", "x"], "--seed"), (["--system", "hi"], "--chat"), (["--chat", "--json"], "--json"),
])
def test_bad_values_are_one_line_and_exit_2(tiny_hf, args, flag):
    r = subprocess.run([str(BIN), "run", str(tiny_hf), *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and flag in r.stderr and "Traceback" not in r.stderr


def test_chat_without_a_template_is_one_line(tiny_hf):
    r = subprocess.run([str(BIN), "run", str(tiny_hf), "--chat"], input="Hi\n", capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no chat template" in r.stderr and "chat_template.jinja" in r.stderr


def _transformers_replies(folder: Path, system: str, users: list[str], n: int) -> list[str]:
    """Each turn as transformers formats it (apply_chat_template, tokenized) and the reference
    decoder answers it greedily, the reply decoded by transformers' tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    loaded = load_model(folder)
    messages = [{"role": "system", "content": system}]
    replies = []
    for user in users:
        messages.append({"role": "user", "content": user})
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        assert ids[0] == tok.bos_token_id and len(ids) + n <= MAX_SEQ  # fits: no turn dropped
        out = generate_on(loaded.model, ids, n, loaded.stop_token_ids).tokens
        reply = tok.decode([t for t in out if t not in loaded.stop_token_ids], skip_special_tokens=True)
        replies.append(reply)
        messages.append({"role": "assistant", "content": reply})
    return replies


def test_chat_renders_the_template_as_transformers_does(chat_model):
    users = ["Hello, who are you?", "More about café.", "Bye"]
    want = _transformers_replies(chat_model, "You are brief.", users, 8)
    r = subprocess.run([str(BIN), "run", str(chat_model), "--chat", "--system", "You are brief.", "-n", "8"],
                       input="\n".join(users[:2]) + "\n\n" + users[2] + "\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(w + "\n" for w in want)
    assert len(set(want)) == 3  # three different turns, so a lost history or system line would show


def test_chat_prompt_ids_are_apply_chat_template(chat_model):
    """The ids of one turn, without generating: same as transformers' for a conversation with
    history (a template bug shows here before it shows in the replies)."""
    from transformers import AutoTokenizer

    from bitexport.runtime.chat import ChatSession, chat_template_for
    from bitexport.runtime.open import open_runner
    from bitexport.runtime.text import TextCodec

    runner, tok_path = open_runner(chat_model)
    session = ChatSession(runner, TextCodec(tok_path), chat_template_for(chat_model, tok_path), "Sys.")
    session.turns = [("Hi", "Hello! How can I help?")]
    messages = [{"role": "system", "content": "Sys."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Why?"}]
    tok = AutoTokenizer.from_pretrained(str(chat_model))
    assert session.prompt_ids("Why?") == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]


def test_chat_drops_the_oldest_turns_when_the_cache_is_full(chat_model):
    from transformers import AutoTokenizer

    from bitexport.runtime.chat import ChatSession, chat_template_for
    from bitexport.runtime.open import open_runner
    from bitexport.runtime.text import TextCodec

    runner, tok_path = open_runner(chat_model)
    session = ChatSession(runner, TextCodec(tok_path), chat_template_for(chat_model, tok_path), "Sys.")
    turns = [(f"question {i} " * 6, f"answer {i} " * 6) for i in range(8)]
    session.turns = list(turns)
    ids = session.prompt_ids("Last?")
    kept = session.turns
    assert 0 < len(kept) < len(turns) and kept == turns[-len(kept):] and len(ids) < MAX_SEQ
    tok = AutoTokenizer.from_pretrained(str(chat_model))
    messages = [{"role": "system", "content": "Sys."}]
    for u, a in kept:
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": "Last?"})
    assert ids == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    # one turn more would not have fitted
    assert len(session.codec.encode(session.template.render(session.messages("Last?", turns[-len(kept) - 1:])),
                                    add_special_tokens=False)) >= MAX_SEQ
