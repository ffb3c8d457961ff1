"""`bitexport inspect`: what a model folder or a bundle holds, as a dict and as text."""

from __future__ import annotations

from pathlib import Path

from bitexport.bundle.store import is_bundle, read_bundle
from bitexport.model.config import ATTENTION_LINEARS, MLP_LINEARS
from bitexport.formats import load_model


def describe(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir() and is_bundle(p):
        return describe_bundle(p)
    return describe_model(p)


def describe_model(path: Path) -> dict:
    loaded = load_model(path, max_seq_len=2)  # a 2-position cache: inspect needs no generation
    cfg = loaded.config
    return {
        "kind": "model",
        "path": str(path),
        "name": loaded.name,
        "format": loaded.source_format,
        **loaded.details,
        "architecture": cfg.to_dict(),
        "parameters": cfg.parameter_counts(),
        "ternary_layers": {
            "per_layer": list(ATTENTION_LINEARS + MLP_LINEARS),
            "layers": cfg.num_layers,
            "count": len(loaded.model.bitlinears()),
        },
        "not_ternary": ["embed_tokens"] + ([] if cfg.tie_word_embeddings else ["lm_head"]) + ["norms"],
        "stored": {
            group: {"format": s.format, "weights": s.weights, "bytes": s.bytes, "bits_per_weight": round(s.bits_per_weight, 3)}
            for group, s in loaded.stored.items()
        },
    }


def describe_bundle(path: Path) -> dict:
    b = read_bundle(path)
    m = b.manifest
    return {
        "kind": "bundle",
        "path": str(path),
        "target": m["target"],
        "source": {k: m["source"].get(k) for k in ("name", "format", "parameters")},
        "max_seq_len": m["max_seq_len"],
        "tokenizer": m["tokenizer"]["path"],
        "bos_token_id": m.get("bos_token_id"),
        "eos_token_ids": m.get("eos_token_ids"),
        "artifacts": [
            {"path": a.path, "target": a.target, "runtime": a.runtime, "weight_format": a.weight_format,
             "bytes": a.bytes, **a.details, "components": artifact_components(b, a)}
            for a in b.artifacts
        ],
    }


def artifact_components(bundle, artifact) -> dict | None:
    """Bytes by component (targets/components.py), read from the artifact's files by its target's
    inspect module; None where the file cannot be read here."""
    from bitexport.model.config import ModelConfig

    path = bundle.path / artifact.path
    try:
        if artifact.target == "onnx":
            from bitexport.targets.onnx.inspect import component_bytes

            return component_bytes(path)
        if artifact.target == "executorch":
            from bitexport.targets.executorch.inspect import component_bytes

            cfg = ModelConfig.from_dict(bundle.manifest["source"]["config"])
            return component_bytes(path, cfg.vocab_size, cfg.hidden_size)
        if artifact.target == "coreml":
            from bitexport.targets.coreml.inspect import component_bytes, summarize

            return component_bytes(summarize(path))
    except Exception:  # a damaged artifact: inspect still describes the rest (verify names the damage)
        return None
    return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def format_description(d: dict) -> str:
    lines = []
    if d["kind"] == "model":
        a, n = d["architecture"], d["parameters"]
        lines.append(f"model     {d['name']} ({d['format']}{', ' + d['linear_class'] + '/' + d['quantization_mode'] if 'linear_class' in d else ''})")
        lines.append(
            f"shape     {a['num_layers']} layers, hidden {a['hidden_size']}, intermediate {a['intermediate_size']}, "
            f"heads {a['num_heads']}/{a['num_kv_heads']} (q/kv), head_dim {a['head_dim']}, vocab {a['vocab_size']}"
        )
        lines.append(
            f"blocks    {a['hidden_act']} MLP, attn_sub_norm={a['attn_sub_norm']}, ffn_sub_norm={a['ffn_sub_norm']}, "
            f"rope_theta={a['rope_theta']:g}, {'tied' if a['tie_word_embeddings'] else 'separate'} output head"
        )
        lines.append(
            f"params    {n['total']:,} total: {n['ternary']:,} ternary, {n['embedding']:,} embedding, "
            f"{n['lm_head']:,} lm_head, {n['norms']:,} norms"
        )
        t = d["ternary_layers"]
        lines.append(f"ternary   {t['count']} linears ({', '.join(t['per_layer'])} in each of {t['layers']} layers)")
        lines.append("stored    group          format                                  bytes      bits/weight")
        for group, s in d["stored"].items():
            lines.append(f"          {group:<14} {s['format']:<39} {_mb(s['bytes']):>10} {s['bits_per_weight']:>8.3f}")
    else:
        src = d["source"]
        lines.append(f"bundle    {d['path']} (target {d['target']}, max_seq_len {d['max_seq_len']})")
        lines.append(f"source    {src['name']} ({src['format']}), {src['parameters']['total']:,} parameters")
        lines.append(f"tokenizer {d['tokenizer']} (bos {d['bos_token_id']}, eos {d['eos_token_ids']})")
        for a in d["artifacts"]:
            bits = a.get("ternary_bits_per_weight")
            extra = f", {bits:.3f} bits per ternary weight" if isinstance(bits, (int, float)) else ""
            lines.append(f"artifact  {a['path']}: {a['runtime']}, {a['weight_format']}, {_mb(a['bytes'])}{extra}")
            lines.append(f"          head {a.get('head', '-')}, embedding {a.get('embedding', '-')}")
            if a.get("components"):
                from bitexport.targets.components import format_components

                lines.append(f"          bytes: {format_components(a['components'])}")
    return "\n".join(lines)
