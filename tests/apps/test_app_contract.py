"""The sample apps and the exporter agree on one schema: export/bitexport/bundle/manifest.schema.json (issue 8).

Both sides are tested against it: the manifests (and Core ML metadata) that real tiny exports write
validate against it, and every manifest field and metadata key that the Kotlin and Swift sources
read exists there with a compatible type and is marked `x-read-by` that app (and nothing is marked
that the app does not read). No phone, Android SDK or Xcode exists here; the apps' sources are
parsed with tree-sitter's Kotlin and Swift grammars so that a syntax error shows up here too.

Issue 17 added checks that the apps use ExecuTorch the way its runtime honours (the BOS count in
LlmModuleConfig, close() after stop() and off the main thread, a stop that survives prefill, the
runtime's own error message), that the builds are set up right (the AAR script's ABI list, run
through --dry-run and against a stand-in for ExecuTorch's script; the iOS package products of every
import; the increased-memory-limit entitlement; the CMake version the README asks for), and the
optional chat fields (the exporter derives chat_format: bitexport.bundle.chat).
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
from tokenizers import processors

from bitexport.bundle.chat import derive_chat_format, render_chat_format, render_jinja
from bitexport.bundle.store import Artifact, staged_bundle, write_manifest
from bitexport.errors import TargetError
from bitexport.api import export
from bitexport.targets import PLATFORMS, get_target
from bitexport.formats.tiny import make_tiny_checkpoint, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "export" / "bitexport" / "bundle" / "manifest.schema.json"
EXPORT_SCHEMA = json.loads(SCHEMA_PATH.read_text())

SCHEMA = EXPORT_SCHEMA
ANDROID_SOURCES = sorted((ROOT / "android_demo" / "app" / "src" / "main" / "java").rglob("*.kt"))
IOS_SOURCES = sorted((ROOT / "ios_demo" / "Sources").rglob("*.swift"))
APPS = {"android": ANDROID_SOURCES, "ios": IOS_SOURCES}

# How the apps read: `manifest.<accessor>("path")` and `coremlMetadata.<accessor>("key")`, with
# array indices written as string templates: "artifacts[$i].bytes" (Kotlin), "artifacts[\(i)].bytes" (Swift).
READ = re.compile(r"\b(manifest|coremlMetadata)\.(string|int|long|optBool|count|intList|optIntList|optInt|optString|optDouble)\(\s*\"((?:[^\"\\]|\\.)*)\"")
INDEX = re.compile(r"\[(?:\$\{?\w+\}?|\\\(\w+\))\]")
# accessor -> the JSON types it accepts
ACCESSOR_TYPES = {"string": {"string"}, "int": {"integer"}, "long": {"integer"}, "optBool": {"boolean"}, "count": {"array"},
                  "intList": {"array"}, "optIntList": {"array"}, "optInt": {"integer"}, "optString": {"string"},
                  "optDouble": {"number", "integer"}}
COMMENTS_OR_STRINGS = re.compile(r'("(?:\\.|[^"\\\n])*")|//[^\n]*|/\*.*?\*/', re.S)


# --- the schema side -------------------------------------------------------------------------


def _deref(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def schema_at(path: str, root: dict = SCHEMA) -> dict | None:
    """The schema of a field path such as "artifacts[].bytes", or None if the schema lacks it."""
    node = root
    for part in path.split("."):
        name, is_item = (part[:-2], True) if part.endswith("[]") else (part, False)
        node = _deref(node).get("properties", {}).get(name)
        if node is None:
            return None
        if is_item:
            node = node.get("items")
            if node is None:
                return None
    return _deref(node)


def json_types(node: dict) -> set[str]:
    if "type" in node:
        return set(node["type"]) if isinstance(node["type"], list) else {node["type"]}
    values = [node["const"]] if "const" in node else node.get("enum", [])
    return {"string" if isinstance(v, str) else "boolean" if isinstance(v, bool) else "integer" for v in values}


def marked(app: str, node: dict = SCHEMA, prefix: str = "") -> set[str]:
    """Paths of the fields the schema marks as read by `app`."""
    found = set()
    for name, child in _deref(node).get("properties", {}).items():
        path = prefix + name
        if app in child.get("x-read-by", []):
            found.add(path)
        found |= marked(app, child, path + ".")
        if "items" in child:
            found |= marked(app, child["items"], path + "[].")
    return found


# --- the apps' side --------------------------------------------------------------------------


def app_reads(files: list[Path]) -> dict[str, set[tuple[str, str]]]:
    """{"manifest": {(path, accessor)}, "coremlMetadata": {(key, accessor)}} read by the sources."""
    reads: dict[str, set[tuple[str, str]]] = {"manifest": set(), "coremlMetadata": set()}
    for f in files:
        code = COMMENTS_OR_STRINGS.sub(lambda m: m.group(1) or " ", f.read_text())
        for doc, accessor, literal in READ.findall(code):
            reads[doc].add((INDEX.sub("[]", literal), accessor))
    return reads


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator.check_schema(SCHEMA["$defs"]["coreml_user_defined_metadata"])


@pytest.mark.parametrize("app", sorted(APPS))
def test_every_manifest_field_an_app_reads_is_in_the_schema(app):
    reads = app_reads(APPS[app])["manifest"]
    assert reads, f"found no manifest reads in the {app} sources; did the accessor pattern change?"
    for path, accessor in sorted(reads):
        node = schema_at(path)
        assert node is not None, f"{app} reads {path}, which export/bitexport/bundle/manifest.schema.json does not have"
        assert json_types(node) & ACCESSOR_TYPES[accessor], f"{app} reads {path} with {accessor}(), schema says {json_types(node)}"
    assert {p for p, _ in reads} == marked(app), f"x-read-by of {app} in the schema differs from what its sources read"


def test_every_coreml_metadata_key_the_ios_app_reads_is_in_the_schema():
    meta = SCHEMA["$defs"]["coreml_user_defined_metadata"]
    reads = {k for k, _ in app_reads(IOS_SOURCES)["coremlMetadata"]}
    assert reads, "found no Core ML metadata reads in the iOS sources"
    assert reads <= set(meta["required"]), f"the iOS app reads metadata keys the Core ML target need not write: {reads - set(meta['required'])}"
    assert reads == marked("ios", meta)
    assert not app_reads(ANDROID_SOURCES)["coremlMetadata"]


def test_the_ios_core_ml_engine_uses_the_schemas_feature_names():
    interface = SCHEMA["$defs"]["coreml_interface"]
    names = set(interface["x-inputs"]) | set(interface["x-outputs"])
    code = (ROOT / "ios_demo" / "Sources" / "CoreMLEngine.swift").read_text()
    literals = set(re.findall(r'"([A-Za-z_]+)"', code))
    assert names <= literals, f"CoreMLEngine.swift does not name {names - literals}"


def test_apps_pin_the_executorch_version_the_exporter_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    version = next(d.split("==")[1] for d in deps if d.startswith("executorch=="))
    gradle = (ROOT / "android_demo" / "gradle.properties").read_text()
    assert f"executorchVersion={version}\n" in gradle
    assert f'getOrElse("{version}")' in (ROOT / "android_demo" / "app" / "build.gradle.kts").read_text()
    assert f"branch: swiftpm-{version}\n" in (ROOT / "ios_demo" / "project.yml").read_text()
    assert f'EXECUTORCH_VERSION="${{EXECUTORCH_VERSION:-{version}}}"' in (ROOT / "android_demo" / "scripts" / "build_aar_with_kernels.sh").read_text()


def test_app_sources_parse():
    """Kotlin and Swift sources are free of syntax errors (tree-sitter grammars; no compiler here)."""
    ts = pytest.importorskip("tree_sitter", reason="pip install tree-sitter tree-sitter-kotlin tree-sitter-swift (the test extra)")
    kotlin = pytest.importorskip("tree_sitter_kotlin")
    swift = pytest.importorskip("tree_sitter_swift")
    parsers = {".kt": ts.Parser(ts.Language(kotlin.language())), ".kts": ts.Parser(ts.Language(kotlin.language())),
               ".swift": ts.Parser(ts.Language(swift.language()))}
    files = [*ANDROID_SOURCES, *sorted((ROOT / "android_demo").rglob("*.gradle.kts")), *IOS_SOURCES]
    assert len(files) >= 10
    for f in files:
        tree = parsers[f.suffix].parse(f.read_bytes())
        bad = []

        def walk(node):
            if node.type == "ERROR" or node.is_missing:
                bad.append(f"{f.relative_to(ROOT)}:{node.start_point[0] + 1}: {node.text[:60]!r}")
            for c in node.children:
                walk(c)

        walk(tree.root_node)
        assert not bad, "syntax errors:\n" + "\n".join(bad)


@pytest.mark.parametrize("script", ["android_demo/scripts/build_aar_with_kernels.sh", "ios_demo/scripts/build_kernels_ios.sh"])
def test_build_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


# --- what ExecuTorch's runtime honours, and the builds (issue 17) -------------------------------
#
# No Kotlin or Swift compiler exists here, so these read the sources: with tree-sitter where the
# structure matters (which thread a call runs on), with regular expressions on comment-free code
# where a call's presence is the point. Each was run against the code before issue 17 and fails there.

ANDROID_SRC = ROOT / "android_demo" / "app" / "src" / "main" / "java" / "org" / "bitexport" / "demo"
IOS = ROOT / "ios_demo"
AAR_SCRIPT = ROOT / "android_demo" / "scripts" / "build_aar_with_kernels.sh"


def _code(path: Path) -> str:
    """The source with comments removed (string literals kept)."""
    return COMMENTS_OR_STRINGS.sub(lambda m: m.group(1) or " ", path.read_text())


def _kotlin_tree(path: Path):
    ts = pytest.importorskip("tree_sitter", reason="pip install tree-sitter tree-sitter-kotlin (the test extra)")
    kotlin = pytest.importorskip("tree_sitter_kotlin")
    return ts.Parser(ts.Language(kotlin.language())).parse(path.read_bytes())


def _nodes(node, kind: str):
    if node.type == kind:
        yield node
    for c in node.children:
        yield from _nodes(c, kind)


def _function(tree, name: str):
    for f in _nodes(tree.root_node, "function_declaration"):
        ident = next((c for c in f.children if c.type in ("simple_identifier", "identifier")), None)
        if ident is not None and ident.text.decode() == name:
            return f
    raise AssertionError(f"no function {name}")


def _call_name(call) -> str:
    """`runner?.close()` -> "close", `llmExecutor.execute { }` -> "execute"."""
    callee = call.children[0].text.decode()
    return re.split(r"[.?!]+", callee)[-1]


def _chain(code: str, start: str) -> str:
    """The builder chain from `start` to its `.build()`."""
    i = code.index(start)
    return code[i:code.index(".build()", i)]


def test_android_bos_reaches_the_runner_through_the_constructor():
    """jni_layer_llama.cpp generate(): `.num_bos = needs_bos_ ? num_bos_ : 0`, num_bos_ being the
    constructor's count; LlmGenerationConfig.numBos and the 7-argument generate's numBos are ignored."""
    code = _code(ANDROID_SRC / "LlmRunner.kt")
    assert "LlmModuleConfig.create()" in code, "LlmModule must be built from an LlmModuleConfig (the path that sets num_bos_)"
    module_config = _chain(code, "LlmModuleConfig.create()")
    assert re.search(r"\.numBos\(\s*bundle\.numBos\s*\)", module_config), "LlmModuleConfig must get numBos from the manifest"
    assert re.search(r"LlmModule\(\s*config\s*\)", code), "LlmModule(LlmModuleConfig) is the constructor that passes numBos"
    for start in [m.start() for m in re.finditer(r"LlmGenerationConfig\.create\(\)", code)]:
        assert ".numBos(" not in _chain(code[start:], "LlmGenerationConfig.create()"), \
            "numBos in LlmGenerationConfig is ignored by the runtime; it belongs in LlmModuleConfig"
    # bundle.numBos is 1 exactly when the manifest's tokenizer.adds_bos is true
    manifest_code = _code(ANDROID_SRC / "BundleManifest.kt")
    assert re.search(r"val numBos: Int get\(\) = if \(addsBos\) 1 else 0", manifest_code)
    assert 'addsBos = manifest.optBool("tokenizer.adds_bos"' in manifest_code


def test_android_closes_the_module_after_stop_and_off_the_main_thread():
    """LlmModule.close() throws while generate holds the module's lock: onCleared (main thread) must
    stop first and leave close() to the thread that runs generate."""
    tree = _kotlin_tree(ANDROID_SRC / "DemoViewModel.kt")
    on_cleared = _function(tree, "onCleared")
    calls = list(_nodes(on_cleared, "call_expression"))
    closes = [c for c in calls if _call_name(c) == "close"]
    stops = [c for c in calls if _call_name(c) == "stop"]
    assert closes, "onCleared does not close the runner"
    assert stops, "onCleared must stop a running generation before closing"
    for close in closes:
        assert min(s.start_byte for s in stops) < close.start_byte, "stop() must come before close()"
        # close() sits in a lambda handed to the llm thread's executor
        node, dispatched = close.parent, None
        while node is not None and node != on_cleared:
            if node.type == "lambda_literal":
                call = node.parent
                while call is not None and call.type != "call_expression":
                    call = call.parent
                dispatched = call
                break
            node = node.parent
        assert dispatched is not None, f"close() runs on the main thread in onCleared: {close.text.decode()}"
        assert dispatched.children[0].text.decode() == "llmExecutor.execute", dispatched.text.decode()[:80]
    # ...and that executor is the one thread every other LlmModule call runs on
    code = _code(ANDROID_SRC / "DemoViewModel.kt")
    assert re.search(r"llmExecutor: ExecutorService = Executors\.newSingleThreadExecutor", code)
    assert "private val llmThread = llmExecutor.asCoroutineDispatcher()" in code
    assert "withContext(llmThread)" in code


def test_android_stop_is_not_lost_during_prefill():
    """TextTokenGenerator::generate clears its stop flag when the decode loop starts: a stop() in
    prefill is lost. The Stop button must raise a flag of the app's, which onResult re-issues."""
    vm = _kotlin_tree(ANDROID_SRC / "DemoViewModel.kt")
    stop_body = _function(vm, "stop").text.decode()
    assert re.search(r"jobStop\.set\(true\)", stop_body), "DemoViewModel.stop() must raise the job's flag"
    runner = _kotlin_tree(ANDROID_SRC / "LlmRunner.kt")
    on_result = _function(runner, "onResult").text.decode()
    assert re.search(r"if \(ended\.get\(\) \|\| stop\.get\(\)\) module\.stop\(\)", on_result), \
        "onResult must call module.stop() again while the app's stop flag is raised"
    assert "stop: AtomicBoolean" in _function(runner, "generate").text.decode()


def test_android_reports_the_runtimes_error_and_no_unwritten_statistic():
    runner = _code(ANDROID_SRC / "LlmRunner.kt")
    # generate throws "Failed to generate" right after onError: the onError message is what is shown
    assert re.search(r"try \{\s*module\.generate\([^)]*\)\s*\} catch \(e: Exception\) \{\s*[^}]*error \?:", runner), \
        "wrap module.generate so that its generic exception gives way to onError's message"
    # TextLLMRunner never writes token_encode_end_ms (stats.h declares it; it stays 0)
    assert "token_encode_end_ms" not in _code(ANDROID_SRC / "Figures.kt")


def test_android_manifest_leaves_native_libraries_compressed_setting_alone():
    manifest = (ROOT / "android_demo" / "app" / "src" / "main" / "AndroidManifest.xml").read_text()
    assert "extractNativeLibs" not in manifest, "AGP 8 warns about android:extractNativeLibs; ExecuTorch's demo does not set it"


def test_android_packages_the_abis_the_kernel_aar_has():
    gradle = _code(ROOT / "android_demo" / "app" / "build.gradle.kts")
    assert re.search(r"abiFilters \+= bitexportAbis", gradle)
    app_default = re.search(r'gradleProperty\("bitexportAbis"\)\.getOrElse\("([^"]+)"\)', gradle).group(1)
    script_default = re.search(r'"\$\{ANDROID_ABIS:-([^}]+)\}"', AAR_SCRIPT.read_text()).group(1)
    assert app_default.split(",") == script_default.split(), "the app's default ABIs must be the kernel AAR's"


def _run_aar_script(env: dict, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(["bash", str(AAR_SCRIPT), *args], env={**keep, **env}, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("abis", ["arm64-v8a x86_64", "arm64-v8a,x86_64", " arm64-v8a  x86_64 "])
def test_aar_script_dry_run_splits_a_space_separated_abi_list(abis):
    """No NDK or SDK needed: --dry-run checks the settings and prints the plan."""
    out = _run_aar_script({"ANDROID_ABIS": abis}, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert re.findall(r"^abi: (\S+)$", out.stdout, re.M) == ["arm64-v8a", "x86_64"]
    assert "-PbitexportAbis=arm64-v8a,x86_64" in out.stdout
    default = _run_aar_script({}, "--dry-run")
    assert re.findall(r"^abi: (\S+)$", default.stdout, re.M) == ["arm64-v8a"]
    bad = _run_aar_script({"ANDROID_ABIS": "arm64"}, "--dry-run")
    assert bad.returncode == 2 and "arm64" in bad.stderr


# A stand-in for ExecuTorch's scripts/build_android_library.sh with its interface: a configure
# line `--preset "android-${ANDROID_ABI}" \`, main() looping over the bash array ANDROID_ABIS
# (defaulting it when empty), and main run only when executed, not when sourced.
_UPSTREAM_STANDIN = r"""#!/bin/bash
set -e
build_android_native_library() {
  ANDROID_ABI="$1"
  echo configure \
    --preset "android-${ANDROID_ABI}" \
    >> "$STANDIN_LOG"
  mkdir -p "cmake-out-android-so/${ANDROID_ABI}"
  echo "bitexport::tq2_linear.out" > "cmake-out-android-so/${ANDROID_ABI}/libexecutorch.so"
}
build_aar() { echo aar > "${BUILD_AAR_DIR}/executorch.aar"; }
main() {
  if [ -z "$ANDROID_ABIS" ]; then
    ANDROID_ABIS=("arm64-v8a" "x86_64")
  fi
  for ANDROID_ABI in "${ANDROID_ABIS[@]}"; do
    build_android_native_library "${ANDROID_ABI}"
  done
  build_aar
}
if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
  main "$@"
fi
"""


def test_aar_script_hands_every_abi_to_executorchs_array_loop(tmp_path):
    """The real script, against a stand-in upstream script: two ABIs from the environment reach its
    array loop as two ABIs (a plain `export ANDROID_ABIS="a b"` reaches it as one ABI named "a b")."""
    src = tmp_path / "executorch"
    (src / ".git").mkdir(parents=True)
    (src / "scripts").mkdir()
    (src / "scripts" / "build_android_library.sh").write_text(_UPSTREAM_STANDIN)
    (tmp_path / "ndk").mkdir()
    (tmp_path / "sdk").mkdir()
    log = tmp_path / "configure.log"
    out = _run_aar_script({"ANDROID_ABIS": "arm64-v8a x86_64", "ANDROID_NDK": str(tmp_path / "ndk"),
                           "ANDROID_SDK": str(tmp_path / "sdk"), "EXECUTORCH_SRC": str(src),
                           "AAR_OUT_DIR": str(tmp_path / "aar"), "STANDIN_LOG": str(log), "PYTHON_EXECUTABLE": "python3"})
    configured = re.findall(r"--preset android-(.+?) -DCMAKE_PROJECT_executorch_INCLUDE=", log.read_text()) if log.exists() else []
    assert configured == ["arm64-v8a", "x86_64"], f"configured {configured}\n{out.stderr[-2000:]}"
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "aar" / "executorch-bitexport.aar").is_file()
    # the kernel-build definitions still reach ExecuTorch's configure step
    assert "-DEXECUTORCH_JNI_CUSTOM_LIBRARY=bitexport_kernels" in log.read_text()


def _kotlin_compiler() -> str | None:
    jvmcheck = ROOT / "android_demo" / "jvmcheck" / "node_modules" / "kotlin-compiler" / "bin" / "kotlinc-jvm"
    found = os.environ.get("KOTLINC") or shutil.which("kotlinc-jvm") or (str(jvmcheck) if jvmcheck.exists() else None)
    return found if found and shutil.which("java") else None


def test_android_sources_run_against_a_model_of_the_runtime():
    """android_demo/jvmcheck: every Kotlin source of the app compiled by a real Kotlin compiler
    (the Compose screen against signature stubs), and LlmRunner, BundleManifest and DemoViewModel
    run against ExecuTorch's LLM API with its runtime's behaviour modelled (BOS from the
    constructor only, a decode loop that clears its stop flag, close() refused while generate runs,
    onError before a generic exception), then run: BOS, temperature, stop during prefill, stop
    tokens, the runtime's error, chat turns, and leaving the screen mid-generation."""
    if _kotlin_compiler() is None:
        pytest.skip("no Kotlin compiler: android_demo/jvmcheck/run.sh --install fetches one from npm (or set KOTLINC)")
    env = {**os.environ, "KOTLINC": _kotlin_compiler()}
    out = subprocess.run(["bash", str(ROOT / "android_demo" / "jvmcheck" / "run.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "all checks passed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]


def test_android_readme_asks_for_the_cmake_executorchs_presets_need():
    """ExecuTorch's CMakePresets.json is version 6, which CMake reads from 3.25 on."""
    readme = (ROOT / "android_demo" / "README.md").read_text()
    versions = [tuple(map(int, v)) for v in re.findall(r"CMake\W{1,5}(\d+)\.(\d+)", readme)]
    assert versions, "android_demo/README.md names no CMake version"
    assert min(versions) >= (3, 25), f"README asks for CMake {min(versions)}; presets version 6 need 3.25"


# Apple's own modules, which need no package product
APPLE_MODULES = {"Foundation", "SwiftUI", "CoreML", "Observation", "Combine", "UIKit", "os", "Accelerate", "Darwin"}
# products whose module name differs from the product name (ExecuTorch's Package.swift of the
# swiftpm-* branches; swift-transformers' products are named as their modules)
PRODUCT_MODULES = {"executorch": "ExecuTorch", "executorch_llm": "ExecuTorchLLM"}


def _ios_project() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((IOS / "project.yml").read_text())


def test_ios_project_declares_every_module_the_sources_import():
    target = _ios_project()["targets"]["BitexportDemo"]
    declared = {PRODUCT_MODULES.get(d["product"], d["product"]) for d in target["dependencies"] if "product" in d}
    imported = {m for f in IOS_SOURCES for m in re.findall(r"^\s*import\s+(\w+)", f.read_text(), re.M)}
    missing = imported - APPLE_MODULES - declared
    assert not missing, f"ios_demo/project.yml does not declare the products of {sorted(missing)}"


def test_ios_entitlements_exist_and_are_referenced():
    """A 2B model is killed at load without com.apple.developer.kernel.increased-memory-limit
    (ExecuTorch's LLM demo ships it)."""
    project = _ios_project()
    settings = project["targets"]["BitexportDemo"].get("settings", {}).get("base", {})
    path = settings.get("CODE_SIGN_ENTITLEMENTS")
    assert path, "the app target sets no CODE_SIGN_ENTITLEMENTS"
    entitlements = plistlib.loads((IOS / path).read_bytes())
    assert entitlements.get("com.apple.developer.kernel.increased-memory-limit") is True


def test_ios_gets_token_ids_and_never_loses_a_stop():
    """ExecuTorchLLM's TextRunner hands Swift nil (an empty piece) for a token ending inside a
    UTF-8 character, and its loop clears its stop flag when decoding starts. The app runs the token
    loop itself: text decoded from ids with an incomplete character held back, and a per-job stop
    flag that nothing lowers."""
    code = {f.name: _code(f) for f in IOS_SOURCES}
    everything = "\n".join(code.values())
    assert not re.search(r"\bTextRunner\b", everything), "TextRunner's bridge drops split UTF-8 characters"
    assert 'hasSuffix("\\u{FFFD}")' in code["Generation.swift"], "hold back an incomplete UTF-8 character"
    stop_flag = re.search(r"final class StopFlag[^{]*\{(.*?)\n\}", everything, re.S).group(1)
    assert "= false" not in stop_flag.replace("private var raised = false", ""), "StopFlag must not be lowered"
    assert not re.search(r"\.reset\(\)", everything), "no stop flag or runner may be reset at generation start"
    makers = [name for name, c in code.items() if "StopFlag()" in c]
    assert makers == ["DemoModel.swift"], f"stop flags are made per job by DemoModel only, not by {makers}"


# --- chat_format: a reference derivation for the exporter, and the Android app's rendering rule ---

# BitNet b1.58 2B4T's template (its tokenizer_config.json) and Llama 3's; both trim the content
# and put BOS before the first message only.
BITNET_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@pytest.mark.parametrize("template", [BITNET_TEMPLATE, LLAMA3_TEMPLATE], ids=["bitnet-2b4t", "llama3"])
def test_chat_format_reproduces_the_jinja_template(template):
    pytest.importorskip("jinja2")
    bos, eos = "<|begin_of_text|>", "<|eot_id|>"
    fmt = derive_chat_format(template, bos, eos)
    assert fmt is not None
    jsonschema.Draft202012Validator(SCHEMA["properties"]["chat_format"]).validate(fmt)
    # real text, whitespace the templates trim included: the Android rendering equals Jinja's minus BOS
    messages = [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": " Hi!"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tell me a joke, café ☕"}]
    expected = render_jinja(template, messages, True, bos, eos)
    assert expected.startswith(bos)  # so the manifest's tokenizer.adds_bos must be true for the runner's BOS
    assert bos + render_chat_format(fmt, "Be brief. ", [(" Hi!", "Hello.")], "Tell me a joke, café ☕") == expected


def test_chat_format_is_refused_where_strings_cannot_follow_the_template():
    pytest.importorskip("jinja2")
    numbered = "{% for m in messages %}{{ loop.index }}. {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    assert derive_chat_format(numbered, "<s>", "</s>") is None


def test_a_manifest_with_every_chat_field_validates(tmp_path):
    with staged_bundle(tmp_path / "b", force=False) as tmp:
        manifest = _hand_manifest(tmp, tiny_tokenizer())
    chat = {**manifest, "chat_template": BITNET_TEMPLATE, "chat_format": derive_chat_format(BITNET_TEMPLATE, "<s>", "</s>"),
            "stop_token_ids": [1], "generation": {"temperature": 0.6, "max_new_tokens": 128}}
    validate(chat)
    for broken in ({**chat, "stop_token_ids": ["1"]}, {**chat, "generation": {"temperature": -1}},
                   {**chat, "chat_format": {**chat["chat_format"], "user": "no placeholder"}}):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


# --- the exporter's side ---------------------------------------------------------------------

validate = jsonschema.Draft202012Validator(SCHEMA).validate


def _hand_manifest(folder: Path, tokenizer) -> dict:
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "model.pte").write_bytes(b"pte")
    return write_manifest(
        folder, target="android", source={"name": "m", "format": "hf-bitnet", "path": "/m", "config": {},
                                          "parameters": {"ternary": 1, "embedding": 1, "lm_head": 0, "norms": 1, "total": 3}},
        tokenizer="tokenizer.json", bos_token_id=0, eos_token_ids=[1], max_seq_len=64, vocab_size=320,
        artifacts=[Artifact("model.pte", "executorch", "executorch", "tq2")],
    )


def test_written_manifest_validates_and_records_whether_the_tokenizer_adds_bos(tmp_path):
    """adds_bos is what the phone apps turn into num_bos: true exactly when `tokenizers` prepends BOS."""
    plain = tiny_tokenizer()
    with_bos = tiny_tokenizer()
    with_bos.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    for tok, expected in ((plain, False), (with_bos, True)):
        out = tmp_path / f"b{expected}"
        with staged_bundle(out, force=False) as tmp:
            manifest = _hand_manifest(tmp, tok)
        validate(manifest)
        assert manifest["tokenizer"]["adds_bos"] is expected
        assert tok.encode("ROMEO:").ids[:1] == ([0] if expected else tok.encode("ROMEO:", add_special_tokens=False).ids[:1])


def test_schema_rejects_what_the_apps_cannot_read(tmp_path):
    with staged_bundle(tmp_path / "b", force=False) as tmp:
        manifest = _hand_manifest(tmp, tiny_tokenizer())
    for broken in ({**manifest, "format_version": 2}, {**manifest, "max_seq_len": "64"},
                   {**manifest, "artifacts": [{**manifest["artifacts"][0], "bytes": None}]},
                   {k: v for k, v in manifest.items() if k != "tokenizer"}):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def _available(platform: str) -> str | None:
    """None when every target of the platform is implemented, else the reason to skip."""
    try:
        for name in PLATFORMS[platform]:
            get_target(name)
    except TargetError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_checkpoint(folder)
    return folder


# android: what the Android app loads; ios: both iOS engines; coreml: the Core ML engine's package;
# desktop: the schema covers every bundle.
@pytest.mark.parametrize("platform", ["android", "ios", "coreml", "desktop"])
def test_real_export_matches_the_schema_and_the_apps_expectations(platform, tiny_model, tmp_path):
    reason = _available(platform)
    if reason:
        pytest.skip(f"--target {platform} cannot export yet: {reason}")
    out = export(tiny_model, platform, tmp_path / platform, max_seq_len=64).path
    manifest = json.loads((out / "manifest.json").read_text())
    validate(manifest)
    # the files the apps open: the tokenizer and every artifact the manifest names
    assert (out / manifest["tokenizer"]["path"]).is_file()
    for a in manifest["artifacts"]:
        assert (out / a["path"]).exists(), a["path"]
    targets = {a["target"]: a for a in manifest["artifacts"]}
    if platform == "android":  # BundleInfo.pte: the first executorch artifact, a .pte file
        assert (out / targets["executorch"]["path"]).is_file() and targets["executorch"]["path"].endswith(".pte")
    if platform == "ios":
        assert {"executorch", "coreml"} <= set(targets)
    if "coreml" in targets:
        _check_coreml_package(out, out / targets["coreml"]["path"], manifest)


def _check_coreml_package(bundle: Path, package: Path, manifest: dict) -> None:
    ct = pytest.importorskip("coremltools")
    model = ct.models.MLModel(str(package), skip_model_load=True)
    meta = dict(model.user_defined_metadata)
    jsonschema.Draft202012Validator(SCHEMA["$defs"]["coreml_user_defined_metadata"]).validate(meta)
    # what the iOS app derives from the metadata equals what the manifest says
    assert (package.parent / meta["bitexport.tokenizer"]).resolve() == (bundle / manifest["tokenizer"]["path"]).resolve()
    assert [int(i) for i in meta["bitexport.eos_token_ids"].split(",") if i] == manifest["eos_token_ids"]
    assert int(meta["bitexport.max_seq_len"]) == manifest["max_seq_len"]
    spec = model.get_spec()
    interface = SCHEMA["$defs"]["coreml_interface"]
    assert {i.name for i in spec.description.input} == set(interface["x-inputs"])
    assert {o.name for o in spec.description.output} == set(interface["x-outputs"])
    assert {s.name for s in spec.description.state} == set(interface["x-states"])
