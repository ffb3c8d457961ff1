"""The bundle every target writes: a folder of artifacts, the tokenizer and manifest.json.

Bundles are written into a temporary folder beside the destination and renamed into place, so a
failed export leaves nothing half-written; an existing destination is replaced only with force.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from bitexport import __version__
from bitexport.errors import BundleError

MANIFEST = "manifest.json"
SCHEMA = Path(__file__).with_name("manifest.schema.json")
HASH_BEFORE_RUN_LIMIT = 64 << 20  # bytes: `run` hashes files up to this size before loading them
FORMAT = "bitexport-bundle"
FORMAT_VERSION = 1


@dataclass
class Artifact:
    """One runnable file (or package folder) in a bundle."""

    path: str  # relative to the bundle folder
    target: str  # "executorch" | "coreml" | "onnx"
    runtime: str  # what loads it: "executorch", "coreml", "onnxruntime-genai"
    weight_format: str  # how the ternary layers are stored: "tq2", "int4", "palettized-2bit", "matmulnbits-2bit", ...
    bytes: int = 0
    sha256: str = ""
    details: dict = field(default_factory=dict)  # per-target facts: bits per ternary weight, head format, ...


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder (its files' relative paths and contents, in sorted order)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def check_destination(out: Path, force: bool) -> None:
    """Fail before any work if `out` exists and may not be replaced."""
    if out.exists() and not force:
        raise BundleError(f"{out} already exists; pass --force to replace it or choose another -o folder")
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not a bitexport bundle; refusing to replace it, choose another -o folder")


@contextlib.contextmanager
def staged_bundle(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder; on success move it to `out` (replacing it only with force)."""
    out = Path(out)
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def tokenizer_adds_bos(tokenizer_json: Path, bos_token_id: int | None) -> bool:
    """Whether the tokenizer's post-processor puts BOS in front of a prompt.

    `bitexport run` encodes with the post-processor; ExecuTorch's LLM runners (Android LlmModule,
    iOS TextRunner) never apply it and take a BOS count instead, so the manifest records the
    count the phone apps must pass to see the same prompt ids (bundle/manifest.schema.json).
    """
    if bos_token_id is None:
        return False
    from tokenizers import Tokenizer  # the exporter's dependency; imported here to keep bundle reading light

    try:
        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception:  # not a tokenizers file: nothing can add BOS (the loader rejects such models anyway)
        return False
    with_special = tok.encode("a").ids
    plain = tok.encode("a", add_special_tokens=False).ids
    return len(with_special) > len(plain) and with_special[0] == bos_token_id


def write_manifest(
    folder: Path,
    *,
    target: str,
    source: dict,
    tokenizer: str,
    bos_token_id: int | None,
    eos_token_ids: list[int],
    max_seq_len: int,
    vocab_size: int,
    artifacts: list[Artifact],
    chat: dict | None = None,
) -> dict:
    """Hash the artifacts and write manifest.json; `chat` holds the optional chat fields
    (bundle/chat.py)."""
    for a in artifacts:
        p = folder / a.path
        if not p.exists():
            raise BundleError(f"artifact {a.path} was not written; this is a bug in the {a.target} target")
        a.bytes = size_of(p)
        a.sha256 = sha256_of(p)
    tok = folder / tokenizer
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bitexport_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": target,
        "source": source,
        "tokenizer": {
            "path": tokenizer,
            "sha256": sha256_of(tok),
            "bytes": size_of(tok),
            "adds_bos": tokenizer_adds_bos(tok, bos_token_id),
        },
        "bos_token_id": bos_token_id,
        "eos_token_ids": list(eos_token_ids),
        "max_seq_len": max_seq_len,
        "vocab_size": vocab_size,
        "artifacts": [asdict(a) for a in artifacts],
        **(chat or {}),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact(**a) for a in self.manifest["artifacts"]]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest["tokenizer"]["path"]

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return tuple(self.manifest.get("eos_token_ids", ()))

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """EOS and the manifest's extra stop tokens. The artifacts carry these and any other stop
        token of generation_config.json (the manifest lists only special tokens, which the apps
        can match in text)."""
        return tuple(dict.fromkeys((*self.eos_token_ids, *self.manifest.get("stop_token_ids", ()))))

    @property
    def max_seq_len(self) -> int:
        return int(self.manifest["max_seq_len"])

    def files(self) -> list[tuple[str, int, str]]:
        """(relative path, bytes, sha256) of every artifact and the tokenizer, as the manifest records them."""
        out = [(a.path, a.bytes, a.sha256) for a in self.artifacts]
        t = self.manifest["tokenizer"]
        return out + [(t["path"], t["bytes"], t["sha256"])]

    def hash_problems(self) -> list[str]:
        """Files whose size or sha256 differ from the manifest (empty when all agree)."""
        problems = []
        for rel, size, digest in self.files():
            p = self.path / rel
            if not p.exists():
                problems.append(f"{rel}: missing")
            elif size_of(p) != size:
                problems.append(f"{rel}: {size_of(p)} bytes, the manifest says {size} (truncated or changed)")
            elif sha256_of(p) != digest:
                problems.append(f"{rel}: sha256 differs from the manifest (file changed or corrupt)")
        return problems

    def check_before_loading(self, hash_limit: int = HASH_BEFORE_RUN_LIMIT) -> None:
        """What `run` does before handing a file to a runtime (whose loaders may crash on damaged
        input rather than raise): every size, and the sha256 of files small enough to hash in well
        under a second; one BundleError naming the file and the fix."""
        for rel, size, digest in self.files():
            p = self.path / rel
            actual = size_of(p) if p.exists() else None
            if actual is None:
                problem = "missing"
            elif actual != size:
                problem = f"{actual} bytes, the manifest says {size} (truncated or changed)"
            elif size <= hash_limit and sha256_of(p) != digest:
                problem = "sha256 differs from the manifest (changed or corrupt)"
            else:
                continue
            raise BundleError(f"{self.path}: {rel}: {problem}; copy the bundle again or export it again")


def is_bundle(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_bundle(path: str | Path) -> Bundle:
    p = Path(path)
    m = p / MANIFEST
    if not m.is_file():
        raise BundleError(f"{p}: not a bundle (no {MANIFEST}); export one with `bitexport export`")
    try:
        manifest = json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{m}: not valid JSON ({e}); export the bundle again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{m}: not a bitexport manifest; export the bundle again")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{m}: bundle format version {version} is not {FORMAT_VERSION}; export it again with this bitexport"
        )
    _validate(manifest, m)
    bundle = Bundle(p, manifest)
    for rel in [a.path for a in bundle.artifacts] + [manifest["tokenizer"]["path"]]:
        confine(p, rel, m)
    return bundle


def _validate(manifest: dict, where: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        at = "/".join(map(str, error.absolute_path)) or "(top level)"
        raise BundleError(f"{where}: does not match the bundle schema at {at}: {error.message}; export the bundle again")


def confine(bundle: Path, rel: str, where: Path) -> Path:
    """`bundle / rel`, refused unless it stays inside the bundle folder: no absolute path, no
    `..`, no symlink (of the file, or inside a folder artifact) that resolves outside it. A bundle
    is data from elsewhere; run and verify must not be made to read or hash other files."""
    rp = Path(rel)
    if rp.is_absolute() or ".." in rp.parts or rel in ("", "."):
        raise BundleError(f"{where}: path {rel!r} leaves the bundle folder; a bundle names its files relative to itself: export it again")
    root = bundle.resolve()
    target = bundle / rp
    inside = [target] + (sorted(target.rglob("*")) if target.is_dir() and not target.is_symlink() else [])
    for f in inside:
        if f.is_symlink() or f == target:
            resolved = f.resolve()
            if resolved != root and root not in resolved.parents:
                raise BundleError(f"{where}: {f.relative_to(bundle)} points outside the bundle folder (to {resolved}); "
                                  "copy the real files into the bundle or export it again")
    return target
