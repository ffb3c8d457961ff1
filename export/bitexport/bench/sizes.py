"""Bundle size by component computed from a shape, without exporting (a real 2B-4T export takes
minutes and ~12 GB of memory): per-tensor byte counts of each target's storage formats.

Bits a weight, scales included (what the inspect modules measure on real exports):
- ternary: ExecuTorch tq2 2.02 (packed rows + a per-row scale, measured on the large shape),
  ONNX MatMulNBits 2-bit 2.0 (per-tensor scale stored once), Core ML 2-bit LUT 2.0;
- int4 (groups/blocks of 32): 4 + 16/32 with 16-bit scales (ExecuTorch bf16 head and fp16
  embedding, Core ML fp16), 4 + 32/32 with ONNX's fp32 scales;
- int8: 8 + scale bits / row length (ONNX: one fp32 scale per block of up to 256);
- float tables: 32 (fp32) or 16 (fp16; Core ML keeps float weights in fp16).
A tied head stored once (ONNX: same int4/int8/fp16/fp32 format as the embedding; Core ML:
int4/int4 or fp32/fp16) counts under embedding. Norms are float32 (fp16 on Core ML).
"""

from __future__ import annotations

from bitexport.model.config import ModelConfig

TERNARY_BITS = {"executorch": 2.02, "onnx": 2.0, "coreml": 2.0}
SCALE_BITS = {"executorch": 16, "onnx": 32, "coreml": 16}


def table_bits(target: str, fmt: str, hidden: int, role: str) -> float:
    """Bits a weight of a [V, hidden] table in `fmt` on `target` (role: "head" or "embedding")."""
    if fmt == "int4":
        return 4 + SCALE_BITS[target] / 32
    if fmt == "int8":
        if target == "onnx":
            block = next((b for b in (256, 128, 64, 32) if hidden % b == 0), 32)
            return 8 + 32 / block
        return 8 + (32 if target == "executorch" else 16) / hidden
    if fmt == "fp16" or target == "coreml":
        return 16.0
    return 32.0


def shared(target: str, head: str, embedding: str) -> bool:
    if target == "onnx":
        return head == embedding or (head, embedding) == ("fp32", "fp32")
    if target == "coreml":
        return (head, embedding) in {("int4", "int4"), ("fp32", "fp16")}
    return False


def bundle_components(cfg: ModelConfig, target: str, head: str = "int4", embedding: str = "int4") -> dict:
    """{component: bytes} of the weights a bundle of `cfg` holds on `target` (other: not counted)."""
    n = cfg.parameter_counts()
    table = cfg.vocab_size * cfg.hidden_size
    emb = table * table_bits(target, embedding, cfg.hidden_size, "embedding") / 8
    tied = cfg.tie_word_embeddings and shared(target, head, embedding)
    head_bytes = 0 if tied else table * table_bits(target, head, cfg.hidden_size, "head") / 8
    return {
        "ternary": round(n["ternary"] * TERNARY_BITS[target] / 8),
        "head": round(head_bytes),
        "embedding": round(emb),
        "norms": n["norms"] * (2 if target == "coreml" else 4),
        "head_shares_embedding": tied,
    }


def total(components: dict) -> int:
    return sum(v for k, v in components.items() if k in ("ternary", "head", "embedding", "norms"))


__all__ = ["bundle_components", "table_bits", "total"]
