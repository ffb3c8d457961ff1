"""Hugging Face Hub ids as model inputs: `microsoft/bitnet-b1.58-2B-4T` -> a local snapshot folder.

A local path always wins: an id is looked up only when nothing exists at that path. Resolution is
huggingface_hub's `snapshot_download`, so its cache is reused (HF_HUB_CACHE / HF_HOME), `revision`
picks a branch, tag or commit, and HF_HUB_OFFLINE=1 resolves from the cache alone. Only the files
a model folder needs are fetched (no .bin, .gguf or other exports a repository may also hold).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bitexport.errors import InputError

# owner/name as the Hub spells repository ids (letters, digits, '-', '_', '.'; no '..')
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
MODEL_FILES = [
    "config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    "generation_config.json", "chat_template.jinja", "special_tokens_map.json",
]


def looks_like_hub_id(spec: str) -> bool:
    return bool(HUB_ID.fullmatch(spec)) and ".." not in spec and not spec.endswith(".gguf")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_model(spec: str | Path, revision: str | None = None) -> Path:
    """The local path of the model `spec` names: `spec` itself when it exists (or is no Hub id),
    else the Hub snapshot of that id."""
    p = Path(spec)
    if p.exists() and revision is not None:
        raise InputError(
            f"{spec} is a local path (a local path wins over a Hub id) but --revision {revision!r} was given; "
            "drop --revision, or move the local folder away to use the Hub repository"
        )
    if p.exists() or not looks_like_hub_id(str(spec)):
        if revision is not None:
            raise InputError(f"{spec}: no such file or folder; --revision applies to Hugging Face Hub ids (owner/name)")
        return p
    return snapshot(str(spec), revision)


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
        )
    except ImportError as e:
        raise InputError(
            f"{repo_id}: no such local path, and Hub ids need huggingface_hub ({e}); pip install huggingface_hub "
            "or pass a local model folder"
        ) from None
    # read at call time (huggingface_hub reads them once, at import): a caller's environment counts
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    rev = f" at revision {revision!r}" if revision else ""
    try:
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=MODEL_FILES, local_files_only=offline,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except RevisionNotFoundError:
        raise InputError(f"{repo_id}: the Hub repository has no revision {revision!r}; pass an existing branch, tag or commit to --revision") from None
    except GatedRepoError:
        raise InputError(
            f"{repo_id}: the Hub repository is gated; accept its terms on huggingface.co and log in (`hf auth login` or HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise InputError(
            f"{repo_id}: no such local path and no such Hub repository (or it is private: log in with `hf auth login` "
            "or set HF_TOKEN); check the spelling or pass a local model folder"
        ) from None
    except LocalEntryNotFoundError:
        if offline:
            raise InputError(
                f"{repo_id}{rev}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it once with "
                "network access (unset HF_HUB_OFFLINE) or pass a local model folder"
            ) from None
        raise InputError(
            f"{repo_id}{rev}: could not be downloaded from the Hugging Face Hub and is not in its cache (no network?); "
            "connect and retry, or pass a local model folder"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{repo_id}{rev}: fetching from the Hugging Face Hub failed ({reason}); retry, or pass a local model folder") from None
    return Path(folder)


def snapshot_name(path: Path) -> str | None:
    """The repository name of a Hub cache snapshot folder (.../models--owner--name/snapshots/<rev>),
    else None: a snapshot folder's own name is a commit hash."""
    parts = path.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].split("--")[-1]
    return None
