"""Every runner this machine runs (the PyTorch reference, onnxruntime-genai, ExecuTorch) against one
checkpoint whose generation_config.json adds a stop token: the artifacts carry it (the .pte's
get_eos_ids, genai_config.json, the Core ML package's metadata, read back from the files), each
runner stops at it, and the shared sampler gives each runner the same seeded tokens.

One desktop bundle (ORT, accuracy level 0, fp32 head) and one ios bundle (ExecuTorch fp32 with an
fp32 head, and Core ML) for the module: their greedy tokens equal the reference's on this prompt,
so a stop token and a seed mean the same thing on all of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitexport.api import export
from bitexport.formats import load_model
from bitexport.formats.tiny import make_tiny_checkpoint
from bitexport.runtime.generate import generate_on
from bitexport.runtime.open import open_runner
from bitexport.runtime.sampling import SamplingConfig
from bitexport.targets.coreml.config import CoreMLConfig
from bitexport.targets.executorch.config import ExecutorchConfig
from bitexport.targets.onnx.config import OnnxConfig

PROMPT = list(range(5, 25))
N = 12
STOP_AT = 4  # the stop token is the reference's 5th greedy token (first seen there)
SEQ = 64
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.95, seed=7)
BIN = Path(sys.executable).parent / "bitexport"
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'][0] + ':' + m['content'] | trim + eos_token }}"
            "{% endfor %}{% if add_generation_prompt %}{{ 'a:' }}{% endif %}")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny checkpoint, its unstopped greedy tokens, and the stop token generation_config.json adds."""
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp("stop") / "m", "hf-bitnet")
    free = generate_on(load_model(folder, SEQ).model, PROMPT, N).tokens  # config.json's eos (1) not met
    assert 1 not in free
    k = next(i for i in range(STOP_AT, N) if free[i] not in free[:i])
    stop = free[k]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, stop], "do_sample": False}))
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    return folder, free, k, stop


@pytest.fixture(scope="module")
def bundles(model, tmp_path_factory):
    folder = model[0]
    root = tmp_path_factory.mktemp("bundles")
    desktop = export(folder, "desktop", root / "desktop", config=OnnxConfig(accuracy_level=0, head="fp32", embedding="fp32"), max_seq_len=SEQ)
    ios = export(folder, "ios", root / "ios", config=[ExecutorchConfig(weights="fp32", head="fp32", embedding="fp32"), CoreMLConfig()],
                 max_seq_len=SEQ)
    return {"onnx": desktop.path, "executorch": ios.path, "coreml": ios.path}


def test_the_artifacts_carry_every_stop_token(model, bundles):
    import coremltools as ct
    from executorch.runtime import Runtime

    _, _, _, stop = model
    want = [1, stop]
    ios = json.loads((bundles["executorch"] / "manifest.json").read_text())
    pte = next(a["path"] for a in ios["artifacts"] if a["target"] == "executorch")
    program = Runtime.get().load_program(bundles["executorch"] / pte)
    assert list(program.load_method("get_eos_ids").execute([])) == want
    genai = json.loads((bundles["onnx"] / "onnx" / "genai_config.json").read_text())
    assert genai["model"]["eos_token_id"] == want
    package = ct.models.MLModel(str(bundles["coreml"] / "model.mlpackage"), skip_model_load=True)
    assert package.user_defined_metadata["bitexport.stop_token_ids"] == ",".join(map(str, want))
    assert package.user_defined_metadata["bitexport.eos_token_ids"] == "1"
    # the manifest keeps config.json's eos; its stop_token_ids list special tokens only (the
    # Android app matches them as text), and this random stop token is an ordinary one
    assert ios["eos_token_ids"] == [1] and "stop_token_ids" not in ios


def _runners(model, bundles):
    folder = model[0]
    yield "pytorch-reference", open_runner(folder, max_seq_len=SEQ)[0]
    for target in ("onnx", "executorch"):
        runner, _ = open_runner(bundles[target], artifact=_index(bundles[target], target))
        yield target, runner


def _index(bundle: Path, target: str) -> int:
    artifacts = json.loads((bundle / "manifest.json").read_text())["artifacts"]
    return next(i for i, a in enumerate(artifacts) if a["target"] == target)


def test_every_runner_stops_at_the_stop_token_and_samples_alike(model, bundles):
    folder, free, k, stop = model
    ref = load_model(folder, SEQ)
    sampled = generate_on(ref.model, PROMPT, N, (), SAMPLED).tokens
    assert sampled != free[: len(sampled)]
    for name, runner in _runners(model, bundles):
        assert set(runner.stop_ids) == {1, stop}, name
        got = runner.generate(PROMPT, N).tokens
        assert got == free[: k + 1], name  # stopped right after the stop token
        streamed: list[int] = []
        assert runner.generate(PROMPT, N, on_token=streamed.append).tokens == streamed == got, name
        runner.stop_ids = ()  # the same runner without stop tokens runs on: the stop was the stop token
        assert runner.generate(PROMPT, N).tokens == free, name
        # the shared sampler: a seed repeats, differs from greedy, and picks the same tokens on
        # every runner (their logits agree); top-k 1 is greedy at any temperature
        assert runner.generate(PROMPT, N, SAMPLED).tokens == sampled, name
        assert runner.generate(PROMPT, N, SAMPLED).tokens == sampled, name
        assert runner.generate(PROMPT, N, SamplingConfig(temperature=3.0, top_k=1, seed=1)).tokens == free, name


def test_run_streams_a_bundle_and_stops(model, bundles):
    """`bitexport run` on a bundle: the streamed text is the --json text, and both stop at the
    generation_config.json stop token the artifact carries."""
    _, free, k, _ = model
    from bitexport.runtime.text import TextCodec

    codec = TextCodec(bundles["onnx"] / "tokenizer.json")
    prompt = codec.decode(PROMPT)
    assert codec.encode(prompt) == PROMPT
    base = [str(BIN), "run", str(bundles["onnx"]), "-p", prompt, "-n", str(N)]
    d = json.loads(subprocess.run(base + ["--json"], capture_output=True, text=True, check=True).stdout)
    assert d["tokens"] == free[: k + 1] and d["runner"] == "onnxruntime-genai"
    out = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert out[: out.rindex("\n[")] == d["text"] == codec.decode(PROMPT + free[: k + 1])


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the Core ML runner runs: covered by the loop above there")
def test_coreml_runner_reads_its_stop_tokens_from_the_package(model, bundles):
    """Core ML's runtime is macOS-only; the stop tokens its runner would use come from the
    package's own metadata, read here with the runner's function."""
    import coremltools as ct

    from bitexport.targets.coreml.runner import metadata_stop_ids

    package = ct.models.MLModel(str(bundles["coreml"] / "model.mlpackage"), skip_model_load=True)
    assert metadata_stop_ids(dict(package.user_defined_metadata)) == (1, model[3])


def test_chat_on_every_runner_is_the_reference_chat(model, bundles):
    """`run --chat` on each bundle (its template from the manifest, its stop tokens from the
    artifact) answers a scripted conversation exactly as the model folder's reference does."""
    folder = model[0]
    script = "Hi\nAnd then?\n"
    chat = lambda path: subprocess.run([str(BIN), "run", str(path), "--chat", "--system", "Be brief.", "-n", "6"],
                                       input=script, capture_output=True, text=True, check=True).stdout
    want = chat(folder)
    assert want.count("\n") == 2 and want.strip()
    assert chat(bundles["onnx"]) == want
    assert chat(bundles["executorch"]) == want  # the ios bundle's first runnable artifact: the .pte
