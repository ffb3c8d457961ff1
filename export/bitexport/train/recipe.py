"""The training loop: one variant (ternary or full precision), one schedule, data parallel.

Every rank draws its own random windows and DistributedDataParallel averages the gradients, so
all ranks hold the same weights after every step (the run records a digest of each rank's
weights to show it). Rank 0 evaluates on the held-out split and keeps the weights of the best
validation loss: on a corpus as small as Tiny Shakespeare a model this size overfits within a
few dozen epochs, and the best point is the model worth keeping.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from bitexport.model.config import ModelConfig
from bitexport.model.decoder import BitNetDecoder
from bitexport.train.data import TokenData
from bitexport.train.distributed import DistContext, gather_strings, tensors_sha256
from bitexport.train.models import LossModule, build_model


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int  # windows per rank and step
    seq_len: int
    lr: float
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    log_every: int = 50
    eval_batch_size: int = 16
    seed: int = 1234
    bf16: bool = False

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to `min_lr_ratio * lr` at the last step."""
        if step <= self.warmup:
            return self.lr * step / max(self.warmup, 1)
        t = (step - self.warmup) / max(self.steps - self.warmup, 1)
        floor = self.lr * self.min_lr_ratio
        return floor + 0.5 * (self.lr - floor) * (1.0 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class RunResult:
    variant: str
    model: BitNetDecoder  # on the training device, holding the best-validation weights
    metrics: dict


def _optimizer(model: torch.nn.Module, s: Schedule, device: torch.device) -> torch.optim.Optimizer:
    # decay matrices (linears, embedding) but not norm gains, as in GPT-style recipes
    decay = [p for p in model.parameters() if p.ndim >= 2]
    keep = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(model: BitNetDecoder, windows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) over all validation windows, in float32."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch_size):
        w = windows[i : i + batch_size]
        logits = model.forward_train(w[:, :-1]).float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum")
        total += float(loss)
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count


def ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def train_variant(
    ctx: DistContext,
    cfg: ModelConfig,
    data: TokenData,
    s: Schedule,
    full_precision: bool,
    log=print,
) -> RunResult:
    variant = "full-precision" if full_precision else "ternary"
    torch.manual_seed(s.seed)  # same initial weights on every rank and for both variants
    model = build_model(cfg, s.seq_len, full_precision).to(ctx.device)
    model.train()
    step_module: torch.nn.Module = LossModule(model)
    if ctx.distributed:
        # the decoder's buffers (RoPE tables, causal mask, KV cache) never change in training:
        # broadcasting them before every step would be wasted traffic
        step_module = DistributedDataParallel(
            step_module, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    opt = _optimizer(model, s, ctx.device)
    # a different stream of windows per rank; the same streams for both variants
    gen = torch.Generator().manual_seed(s.seed * 1000 + ctx.rank + 1)
    windows = data.val_windows() if ctx.is_main else None

    curve: list[dict] = []
    best_loss, best_step, best_state = float("inf"), 0, None
    log_acc = torch.zeros((), device=ctx.device)
    eval_acc = torch.zeros((), device=ctx.device)
    log_n = eval_n = 0
    first_loss = last_log_loss = float("nan")
    first_batch_sha = ""
    eval_s = 0.0
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for step in range(1, s.steps + 1):
        lr = s.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        tokens = data.batch(s.batch_size, gen)
        if step == 1:
            first_batch_sha = tensors_sha256([tokens])
        with _autocast(ctx.device, s.bf16):
            loss = step_module(tokens)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        d = loss.detach()
        log_acc += d
        eval_acc += d
        log_n += 1
        eval_n += 1
        if step == 1:
            first_loss = float(d)
        if step % s.log_every == 0 or step == s.steps:
            last_log_loss = float(log_acc) / log_n
            if not math.isfinite(last_log_loss):
                raise FloatingPointError(f"{variant}: training loss became {last_log_loss} at step {step}")
            if ctx.is_main:
                seen = step * s.batch_size * s.seq_len * ctx.world_size
                el = time.perf_counter() - t0 - eval_s
                log(f"[{variant}] step {step}/{s.steps} loss {last_log_loss:.4f} lr {lr:.2e} "
                    f"{seen / max(el, 1e-9):,.0f} tok/s")
            log_acc.zero_()
            log_n = 0
        if ctx.is_main and (step % s.eval_every == 0 or step == s.steps):
            te = time.perf_counter()
            val = evaluate(model, windows, s.eval_batch_size)
            eval_s += time.perf_counter() - te
            train_mean = float(eval_acc) / eval_n
            eval_acc.zero_()
            eval_n = 0
            curve.append({"step": step, "train_loss": round(train_mean, 4), "val_loss": round(val, 4),
                          "lr": lr, "elapsed_s": round(time.perf_counter() - t0, 2)})
            log(f"[{variant}] step {step} val {val:.4f} (ppl {ppl(val):.2f})")
            if val < best_loss:
                best_loss, best_step = val, step
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0

    # each rank's final weights, before rank 0 swaps in its best checkpoint: DDP keeps them equal
    weight_shas = gather_strings(ctx, tensors_sha256(list(model.parameters())))
    batch_shas = gather_strings(ctx, first_batch_sha)
    metrics: dict = {}
    if ctx.is_main:
        final_val = curve[-1]["val_loss"]
        model.load_state_dict(best_state)
        tokens_seen = s.steps * s.batch_size * s.seq_len * ctx.world_size
        metrics = {
            "variant": variant,
            "schedule": asdict(s),
            "world_size": ctx.world_size,
            "tokens_seen": tokens_seen,
            "epochs": round(tokens_seen / data.train.numel(), 2),
            "wall_s": round(wall, 2),
            "eval_s": round(eval_s, 2),
            "train_tokens_per_s": round(tokens_seen / max(wall - eval_s, 1e-9)),
            "first_train_loss": round(first_loss, 4),
            "final_train_loss": round(last_log_loss, 4),
            "final_val_loss": final_val,
            "final_val_ppl": round(ppl(final_val), 3),
            "best_val_loss": round(best_loss, 4),
            "best_val_ppl": round(ppl(best_loss), 3),
            "best_step": best_step,
            "curve": curve,
            "rank_weight_sha256": weight_shas,
            "rank_first_batch_sha256": batch_shas,
        }
    return RunResult(variant, model, metrics)
