"""Our ternary model as a 1bitLLM folder that llama.cpp's converter re-ternarizes to the same
codes and scales, and the converter run itself (TQ2_0, TQ1_0)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from bitexport.bench.llamacpp.build import LlamaCpp
from bitexport.bench.proc import run_with_rusage
from bitexport.errors import EnvironmentProblem, InputError
from bitexport.formats import LoadedModel
from bitexport.formats.save_hf import onebitllm_config
from bitexport.model.quant import ACT_EPS, absmean_ternarize

# converter --outtype per format; both leave the (tied) embedding in F16, the converter's default
OUTTYPES = {"tq2_0": "tq2_0", "tq1_0": "tq1_0"}
# bits per weight of each block format: TQ2_0 is 64 bytes of 2-bit codes + an fp16 scale per
# 256 weights; TQ1_0 packs 5 trits a byte (48 + 4 bytes) + an fp16 scale per 256 weights
BITS_PER_WEIGHT = {"tq2_0": 66 * 8 / 256, "tq1_0": 54 * 8 / 256}
BLOCK = 256  # both formats need rows that are multiples of 256; others fall back to F16


def _scale(w: torch.Tensor) -> torch.Tensor:
    # the scale computation of absmean_ternarize, op for op (the codes are not needed here)
    inv = 1.0 / w.float().abs().mean().clamp(min=ACT_EPS)
    return 1.0 / inv


def _shadow(codes: torch.Tensor, gamma: float, dtype: torch.dtype, spread: int, from_end: bool) -> tuple[torch.Tensor, bool]:
    """One attempt: (W, whether its absmean scale is exactly gamma); see `shadow_weights`."""
    nonzero = codes != 0
    nnz, n = int(nonzero.sum()), codes.numel()
    target = torch.tensor(gamma, dtype=torch.float32)
    # lo < gamma/p < hi, `spread` ulps of dtype to each side
    mid = torch.tensor(gamma * n / nnz, dtype=dtype)
    lo, hi = mid, mid
    for _ in range(spread):
        lo = torch.nextafter(lo, torch.tensor(0.0, dtype=dtype))
        hi = torch.nextafter(hi, torch.tensor(float("inf"), dtype=dtype))
    flat_nz = nonzero.flatten()
    if from_end:
        flat_nz = flat_nz.flip(0)
    # k of the non-zero weights (the first k in memory order, or the last k) take the larger
    # magnitude: a prefix of the (possibly reversed) flat tensor, up to just past the k-th non-zero
    ends = torch.cat([torch.zeros(1, dtype=torch.long), flat_nz.nonzero().squeeze(1) + 1])
    # |W| in float32 holds the same values, in the same places, as W.float().abs(): its mean comes
    # out identical, without float16 arithmetic (slow on CPUs)
    hi_mags = torch.where(flat_nz, hi.float(), 0.0)
    lo_mags = torch.where(flat_nz, lo.float(), 0.0)

    def mags(k: int) -> torch.Tensor:
        m = torch.cat([hi_mags[: ends[k]], lo_mags[ends[k]:]])
        return (m.flip(0) if from_end else m).reshape(codes.shape)

    def below(k: int) -> bool:
        return bool(_scale(mags(k)) < target)

    # the k that makes the exact mean gamma, then a bracket around it widened until it holds
    k_star = int(round((gamma * n - nnz * float(lo)) / (float(hi) - float(lo))))
    width = max(16, n >> 12)
    while True:
        a, b = max(0, k_star - width), min(nnz, k_star + width)
        if ((a == 0 or below(a)) and (b == nnz or not below(b))) or (a == 0 and b == nnz):
            break
        width *= 8
    # invariant: below(a) (or a == 0), not below(b) (or b == nnz)
    while b - a > 1:
        m = (a + b) // 2
        if below(m):
            a = m
        else:
            b = m
    m = mags(b)
    return codes.to(dtype) * m.to(dtype), bool(_scale(m) == target)


def shadow_weights(
    codes: torch.Tensor, gamma: float, dtype: torch.dtype = torch.float16, exhaustive: bool = True
) -> torch.Tensor:
    """Full-precision weights W whose absmean ternarization gives back `codes` and `gamma` exactly.

    W = codes * gamma / p, with p the share of non-zero codes, has mean|W| = gamma and
    round(W / gamma) = round(codes / p) = codes after the clip to [-1, 1]. Floating point rounds
    gamma / p, so two nearby magnitudes are mixed instead: k non-zero weights at the larger one,
    the rest at the smaller, k found by bisection against the scale computation of
    `absmean_ternarize` (which our loader and, in the same arithmetic, llama.cpp's converter run).
    The float32 sum inside the mean rounds in a pattern that can step over gamma; other spreads
    between the two magnitudes, and the other end of the tensor, shift that pattern, so they are
    tried in turn. Small tensors in float16 are too coarse for this (one step of k moves the mean
    by more than a float32 ulp) and go to float32. A scale s with 1/(1/s) != s can never come
    back; for such (or, rarely, when every attempt misses) the closest W is returned, and
    `shadow_exactness` reports it. Without `exhaustive` only the first attempt is made (for a
    caller that adopts whatever scale W gives).
    """
    codes = codes.to(torch.int8)
    if not bool((codes != 0).any()):
        return torch.zeros(codes.shape, dtype=dtype)
    attempts = []
    if dtype == torch.float16 and codes.numel() >= 1 << 20:
        attempts += [(torch.float16, spread, end) for spread in (1, 2) for end in (False, True)]
    attempts += [(torch.float32, spread, end) for spread in (4, 1, 2, 3, 6, 8) for end in (False, True)]
    first = None
    for dt, spread, end in attempts if exhaustive else attempts[:1]:
        w, exact = _shadow(codes, gamma, dt, spread, end)
        if exact:
            return w
        first = w if first is None else first
    return first


def _sub_norm(loaded: LoadedModel, layer: int, kind: str, size: int) -> torch.Tensor:
    norm = getattr(getattr(loaded.model.layers[layer], kind), "attn_sub_norm" if kind == "self_attn" else "ffn_sub_norm")
    if norm is None:
        return torch.ones(size)  # llama.cpp's BitNet graph always applies it; ones cost the same
    return norm.weight.detach().float()


def write_sentencepiece(folder: Path) -> None:
    """A small SentencePiece model: the converter reads only `tokenizer.model` for BitNet and
    pads the vocabulary to the config's size; llama-bench feeds token ids, never text."""
    import io

    import sentencepiece as spm

    from bitexport.formats.tiny import _CORPUS

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines() * 8), model_writer=buf, vocab_size=96,
        model_type="bpe", character_coverage=1.0, minloglevel=2, byte_fallback=False,
    )
    (folder / "tokenizer.model").write_bytes(buf.getvalue())


def write_1bitllm(
    loaded: LoadedModel, folder: str | Path, dtype: torch.dtype = torch.float16, adopt_scales: bool = False
) -> Path:
    """Write `loaded` as a 1bitLLM `BitnetForCausalLM` folder for llama.cpp's converter.

    Ternary linears become shadow weights (`shadow_weights`) in `dtype`; embeddings and norms stay
    float32 (the converter casts them itself); the sub-norms use 1bitLLM's names
    (`inner_attn_ln`, `ffn_layernorm`). The model must have tied embeddings.

    Not every float32 scale can come out of absmean arithmetic (the mean's division and the
    double reciprocal skip some values). With `adopt_scales` (for random benchmark models, whose
    scales are arbitrary) a linear whose scale cannot be written exactly takes the nearby scale
    that its written weights give, so the folder and `loaded` hold the same model to the bit.
    """
    cfg = loaded.config
    if not cfg.tie_word_embeddings:
        raise InputError(
            f"{loaded.name}: llama.cpp's BitNet architecture has no separate output layer, so a model with an "
            "untied lm_head cannot be compared with llama.cpp; drop --with-llama-cpp or use a tied-embedding model"
        )
    if cfg.q_size != cfg.hidden_size:
        raise InputError(f"{loaded.name}: llama.cpp's BitNet needs num_heads*head_dim == hidden_size; drop --with-llama-cpp")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    tensors: dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.embed_tokens.weight.detach().float().contiguous(),
                                        "model.norm.weight": model.norm.weight.detach().float().contiguous()}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}"
        tensors[f"{p}.input_layernorm.weight"] = layer.input_layernorm.weight.detach().float().contiguous()
        tensors[f"{p}.post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight.detach().float().contiguous()
        tensors[f"{p}.self_attn.inner_attn_ln.weight"] = _sub_norm(loaded, i, "self_attn", cfg.q_size).contiguous()
        tensors[f"{p}.mlp.ffn_layernorm.weight"] = _sub_norm(loaded, i, "mlp", cfg.intermediate_size).contiguous()
    for name, lin in model.bitlinears():
        gamma = float(lin.scale.reshape(-1)[0])
        w = shadow_weights(lin.codes, gamma, dtype, exhaustive=not adopt_scales).contiguous()
        if adopt_scales:
            with torch.no_grad():
                lin.scale.copy_(absmean_ternarize(w)[1].reshape(lin.scale.shape))
        tensors[f"model.{name}.weight"] = w
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    # llama.cpp's BitNet graph is SiLU whatever hidden_act says; our loader reads it
    config = onebitllm_config(cfg, str(dtype).removeprefix("torch."))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_sentencepiece(folder)
    shutil.copyfile(loaded.tokenizer_path, folder / "tokenizer.json")
    return folder


def shadow_exactness(loaded: LoadedModel, folder: str | Path) -> dict:
    """Re-ternarize a written folder's shadow weights as our 1bitLLM loader does and compare with
    `loaded`: codes mismatching, and scales not identical to the bit."""
    from safetensors import safe_open

    bad_codes, bad_scales, total = 0, 0, 0
    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        for name, lin in loaded.model.bitlinears():
            codes, scale = absmean_ternarize(f.get_tensor(f"model.{name}.weight"))
            bad_codes += int((codes != lin.codes).sum())
            bad_scales += int(not torch.equal(scale.reshape(1), lin.scale.float().reshape(1)))
            total += 1
    return {"linears": total, "code_mismatches": bad_codes, "scale_mismatches": bad_scales}


# --- conversion and measurement -------------------------------------------------------------------

def convert(lc: LlamaCpp, model_folder: Path, fmt: str, out_file: Path) -> dict:
    """Run llama.cpp's converter on a 1bitLLM folder: GGUF path, time, peak memory, tensor types."""
    if fmt not in OUTTYPES:
        raise ValueError(f"llama.cpp format {fmt!r} is not one of {', '.join(OUTTYPES)}")
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # use the gguf-py of the same source tree as the binaries
    cmd = [sys.executable, str(lc.converter), str(model_folder), "--outtype", OUTTYPES[fmt], "--outfile", str(out_file)]
    rc, out, err, wall, rss = run_with_rusage(cmd, env=env, timeout=3600)
    if rc != 0 or not out_file.is_file():
        tail = "\n".join((out + err).strip().splitlines()[-8:])
        raise EnvironmentProblem(f"llama.cpp's converter failed on {model_folder} ({fmt}):\n{tail}")
    types: dict[str, int] = {}
    for line in (out + err).splitlines():
        # "blk.0.attn_q.weight, torch.float16 --> TQ2_0, shape = {...}"
        if "-->" in line:
            kind = line.split("-->", 1)[1].split(",", 1)[0].strip()
            types[kind] = types.get(kind, 0) + 1
    return {"path": str(out_file), "bytes": out_file.stat().st_size, "export_s": wall, "export_peak_rss_bytes": rss,
            "tensor_types": types}


