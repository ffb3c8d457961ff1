"""The sample apps and the exporter agree on one schema: export/manifest.schema.json (issue 8).

Both sides are tested against it: the manifests (and Core ML metadata) that real tiny exports write
validate against it, and every manifest field and metadata key that the Kotlin and Swift sources
read exists there with a compatible type and is marked `x-read-by` that app (and nothing is marked
that the app does not read). No phone, Android SDK or Xcode exists here; the apps' sources are
parsed with tree-sitter's Kotlin and Swift grammars so that a syntax error shows up here too.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
from tokenizers import processors

from bitexport.bundle.store import Artifact, staged_bundle, write_manifest
from bitexport.errors import TargetError
from bitexport.api import export
from bitexport.targets import PLATFORMS, get_target
from bitexport.formats.tiny import make_tiny_checkpoint, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "export" / "bitexport" / "bundle" / "manifest.schema.json").read_text())
ANDROID_SOURCES = sorted((ROOT / "android_demo" / "app" / "src" / "main" / "java").rglob("*.kt"))
IOS_SOURCES = sorted((ROOT / "ios_demo" / "Sources").rglob("*.swift"))
APPS = {"android": ANDROID_SOURCES, "ios": IOS_SOURCES}

# How the apps read: `manifest.<accessor>("path")` and `coremlMetadata.<accessor>("key")`, with
# array indices written as string templates: "artifacts[$i].bytes" (Kotlin), "artifacts[\(i)].bytes" (Swift).
READ = re.compile(r"\b(manifest|coremlMetadata)\.(string|int|long|optBool|count|intList|optInt)\(\s*\"((?:[^\"\\]|\\.)*)\"")
INDEX = re.compile(r"\[(?:\$\{?\w+\}?|\\\(\w+\))\]")
# accessor -> the JSON types it accepts
ACCESSOR_TYPES = {"string": {"string"}, "int": {"integer"}, "long": {"integer"}, "optBool": {"boolean"}, "count": {"array"}}
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
        assert node is not None, f"{app} reads {path}, which export/manifest.schema.json does not have"
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
