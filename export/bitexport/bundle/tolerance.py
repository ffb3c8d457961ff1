"""How far each artifact may move from the PyTorch reference, from what it computes.

All three bounds are relative: `token` and `logits` to the reference's largest |logit| at the step,
`ppl` to the reference's perplexity. A bundle's tolerance is the sum of its parts' terms: the
ternary layers' arithmetic, the head's format, the embedding's format. Measured on random tiny
models of both checkpoint formats (README, "How it is checked"); each term leaves about 2x margin
over the largest value measured, and each is far below what a broken export moves (a flipped
scale convention, a dropped sub-norm or a wrong packing order: 30-100 % of max|logit|).
"""

from __future__ import annotations

from dataclasses import dataclass

from bitexport.bundle.store import Artifact


@dataclass(frozen=True)
class Tolerance:
    token: float  # margin by which the artifact's pick may trail the reference's argmax
    logits: float  # largest logit difference
    ppl: float  # |ppl_artifact / ppl_reference - 1|
    why: str

    def __add__(self, other: "Tolerance") -> "Tolerance":
        return Tolerance(round(self.token + other.token, 6), round(self.logits + other.logits, 6), round(self.ppl + other.ppl, 6),
                         f"{self.why}; {other.why}")


# the ternary layers, by (target, weight format[, accuracy level])
LINEARS: dict[tuple, Tolerance] = {
    # bitexport::tq2_linear does BitLinear's integer arithmetic bit for bit; only float rounding
    # order elsewhere (norms, attention) differs, which can flip an int8 activation at a rounding tie
    ("executorch", "tq2"): Tolerance(0.02, 0.02, 0.01, "tq2: exact integer dot products, float order differs"),
    # float weights codes*scale on XNNPACK, activations quantized in the graph: the same arithmetic
    ("executorch", "fp32"): Tolerance(0.02, 0.02, 0.01, "fp32: codes*scale in float, same int8 activations"),
    # XNNPACK's int8 activations are asymmetric per token (not BitNet's symmetric absmax)
    ("executorch", "int4"): Tolerance(0.05, 0.06, 0.03, "int4: XNNPACK's asymmetric per-token int8 activations"),
    # MatMulNBits at accuracy 0 dequantizes to fp32: exact codes, float order differs
    ("onnx", 0): Tolerance(0.02, 0.02, 0.01, "ORT accuracy 0: fp32 MatMulNBits, exact codes"),
    # accuracy 4 requantizes activations to int8 per K block (scale = block max / 127)
    ("onnx", 4): Tolerance(0.05, 0.06, 0.03, "ORT accuracy 4: activations requantized per K block"),
}
# the output head and embedding formats (per the artifact's details)
HEADS: dict[str, Tolerance] = {
    "fp32": Tolerance(0.0, 0.0, 0.0, "head fp32"),
    # a random Gaussian head loses ~8.6 % rms to int4 groups: measured up to 0.081 token margin,
    # 0.14 of max|logit| and 5.3 % perplexity on the tiny models (trained heads lose less)
    "int4": Tolerance(0.10, 0.20, 0.10, "head int4 groups of 32 (lossy by design)"),
    # int8 (ExecuTorch per row, ONNX blocks of up to 256): ~0.4 % rms weight error; measured 0.007
    # of the logit range (ExecuTorch tq2, tests/targets/executorch) with its int8 activations
    "int8": Tolerance(0.01, 0.02, 0.01, "head int8 (per row / blocks of up to 256)"),
    # fp16 weights computed in fp32: each weight within 2^-11 relative
    "fp16": Tolerance(0.005, 0.005, 0.005, "head fp16"),
}
EMBEDDINGS: dict[str, Tolerance] = {
    "fp32": Tolerance(0.0, 0.0, 0.0, "embedding fp32"),
    # fp16 rows: each element within 2^-11 of itself relative
    "fp16": Tolerance(0.01, 0.01, 0.01, "embedding fp16"),
    # per-row int8 keeps each element within 0.4 % of its row's max (not measured through verify yet)
    "int8": Tolerance(0.01, 0.02, 0.01, "embedding int8 per row"),
    # int4 groups of 32: with the int4 head sharing the table (tied), the tiny hf model's logits
    # moved 0.39-0.43 of max|logit| in all (tests/targets/onnx); with an int8 head 0.36, nearly all
    # of it the embedding's
    "int4": Tolerance(0.10, 0.40, 0.10, "embedding int4 groups of 32 (lossy by design)"),
}

# the KV cache's dtype (ExecuTorch's --kv-cache; other targets keep float32 caches)
KV_CACHES: dict[str, Tolerance] = {
    "fp32": Tolerance(0.0, 0.0, 0.0, "KV cache fp32"),
    # q, k and v rounded to 11 significant bits before attention (sums stay float32): measured
    # 0.0144 of max|logit| on the tiny hf model teacher-forced, perplexity -1 % (tests/targets/executorch)
    "fp16": Tolerance(0.03, 0.03, 0.02, "KV cache fp16"),
    # bf16 (8 significant bits) is not measured yet: verify reports it as a kind it does not know
}


def _format(label: str | None) -> str:
    """"int4-block32", "int4-group32", "int4-per-row" -> "int4"; None (old manifests) -> "int4"."""
    return (label or "int4").split("-")[0]


def tolerance_for(artifact: Artifact) -> Tolerance | None:
    """The artifact's tolerance, or None for a kind this table does not know (verify says so)."""
    d = artifact.details
    if artifact.target == "onnx":
        key = ("onnx", int(d.get("accuracy_level", 4)))
    else:
        key = (artifact.target, artifact.weight_format)
    base = LINEARS.get(key)
    head, emb = HEADS.get(_format(d.get("head"))), EMBEDDINGS.get(_format(d.get("embedding", "fp32")))
    kv = KV_CACHES.get(d.get("kv_cache", "fp32"))
    if base is None or head is None or emb is None or kv is None:
        return None
    total = base + head + emb
    return total + kv if kv.why != "KV cache fp32" else total
