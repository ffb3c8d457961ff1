"""Where a bundle's bytes are: one artifact's file size split into components, derived by each
target's inspect module from the file itself (not from what the exporter meant to write).

    ternary    the ternary linears: packed codes and their scales
    head       the output head's weights and scales (0 when a tied head reads the embedding table)
    embedding  the embedding table and its scales
    norms      RMSNorm weights
    other      everything else: RoPE tables, the container's own structure, delegate graphs,
               tokenizer and config files in the artifact's folder
"""

from __future__ import annotations

COMPONENTS = ("ternary", "head", "embedding", "norms", "other")


def split(counted: dict[str, int], total: int, head_shares_embedding: bool = False) -> dict:
    """{component: bytes} with `other` = total - what was attributed, and the sharing flag."""
    out = {c: int(counted.get(c, 0)) for c in COMPONENTS if c != "other"}
    out["other"] = int(total) - sum(out.values())
    if out["other"] < 0:
        raise ValueError(f"components add up to more than the file ({sum(out.values())} > {total} bytes)")
    out["total"] = int(total)
    out["head_shares_embedding"] = bool(head_shares_embedding)
    return out


def format_components(c: dict) -> str:
    """'ternary 1.23 MB, head 0.50 MB, ...' for `bitexport inspect`."""
    parts = [f"{k} {c[k] / 1e6:.2f} MB" for k in COMPONENTS if k in c]
    return ", ".join(parts) + (" (the head reads the embedding table)" if c.get("head_shares_embedding") else "")
