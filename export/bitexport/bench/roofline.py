"""Decode's memory roofline (bytes a token must read over the measured read bandwidth) and the
same-run ratios against llama.cpp TQ2_0 and fp32."""

from __future__ import annotations

from bitexport.bench import bandwidth as bw

REFERENCE_BITS = 8.0  # the reference decoder holds int8 codes (and widens them every call)
# bytes per cached K/V value, by the ExecuTorch target's --kv-cache (the manifest's details)
KV_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0}


def kv_bytes_per_value(variant_kind: str, details: dict | None) -> float:
    """The cache's real element size: llama.cpp's f16 cache, an ExecuTorch export's --kv-cache,
    float32 for the rest (ONNX's and the reference's caches are float32)."""
    if variant_kind == "llamacpp":
        return 2.0
    return KV_BYTES.get((details or {}).get("kv_cache", "fp32"), 4.0)


def roofline(rec, cfg, prompt_len: int, new_tokens: int, gb_per_s: float) -> None:
    """Fills rec.values' bytes_per_token, roofline_tokens_per_s and roofline_share."""
    v, vals = rec.variant, rec.values
    ternary = vals.get("bits_per_ternary_weight")
    if ternary is None and v.kind == "reference":
        ternary = REFERENCE_BITS
    if ternary is None or not vals.get("decode_tokens_per_s"):
        return
    head = vals.get("head_format") or ("fp32" if v.kind == "reference" else None)
    try:
        head_bits = bw.format_bits(head) if head else 32.0
        emb_bits = bw.format_bits((vals.get("details") or {}).get("embedding") or ("f16" if v.kind == "llamacpp" else "fp32"))
    except ValueError:
        return
    # llama-bench's tg test decodes from an empty context; ours after the prompt
    context = new_tokens / 2 if v.kind == "llamacpp" else prompt_len + new_tokens / 2
    kv_bytes = kv_bytes_per_value(v.kind, vals.get("details"))
    per_token = bw.bytes_per_token(cfg, ternary, head_bits, emb_bits, context, kv_bytes)
    limit = bw.roofline_tokens_per_s(per_token["total"], gb_per_s)
    vals["bytes_per_token"] = {k: round(x) for k, x in per_token.items()}
    vals["roofline_tokens_per_s"] = limit
    vals["roofline_share"] = vals["decode_tokens_per_s"]["median"] / limit


def ratios(records: list) -> None:
    by_key = {r.variant.key: r for r in records if r.status == "ok" and r.values.get("decode_tokens_per_s")}

    def med(key: str, what: str) -> float | None:
        r = by_key.get(key)
        return r.values[what]["median"] if r else None

    for r in by_key.values():
        v = r.variant
        # fp32 of the same runtime where there is one; else ExecuTorch's
        fp32 = "onnx-fp32" if v.target == "onnx" else "et-fp32"
        out = {}
        for name, base in (("llamacpp_tq2_0", "llamacpp-tq2_0"), ("fp32", fp32)):
            for what in ("decode", "prefill"):
                b = med(base, f"{what}_tokens_per_s")
                a = r.values[f"{what}_tokens_per_s"]["median"]
                out[f"{what}_vs_{name}"] = a / b if b else None
        out["fp32_baseline"] = fp32 if fp32 in by_key else None
        r.values["ratios"] = out
