"""BitNetDecoder -> compressed Core ML ML program (iOS 18), in memory.

lower (coreml_module) -> fp16 analysis (coreml_fp16) -> torch.jit.trace -> ct.convert with the
fp16 op selector, KV-cache states and flexible shapes -> weight compression (coreml_compress).
Metadata and saving are the target's business (targets/coreml.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from bitexport.targets.coreml.compress import WeightConst, compression_pipeline, find_embedding, find_linear_weights
from bitexport.targets.coreml.fp16 import DEFAULT_HEADROOM, FP16_MAX, Fp16Report, analyze, fp16_selector, op_scope
from bitexport.targets.coreml.module import INPUT_NAMES, OUTPUT_NAME, STATE_NAMES, causal_mask, lower_for_coreml
from bitexport.model.decoder import BitNetDecoder


@dataclass
class Conversion:
    mlmodel: object  # ct.models.MLModel, compressed, not yet saved
    program: object  # the MIL program as converted and compressed, op scopes intact (for inspection)
    fp16: Fp16Report
    ternary: list[WeightConst]
    head: WeightConst | None
    table: WeightConst | None = None


# (head, embedding) formats that a tied model stores as one table: the float one, or int4 blocks
SHARED_TABLE = {("fp32", "fp16"), ("int4", "int4")}


def _pass_pipeline():
    import coremltools as ct

    pipeline = ct.PassPipeline.DEFAULT
    # const_deduplication would merge a tied head's copy back into the embedding table, and
    # then compressing the head would compress the embedding with it
    pipeline.remove_passes(["common::const_deduplication"])
    return pipeline


def trace(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """Trace with a prompt of 3 tokens after 2 cached ones: n != end, so both shapes stay symbolic."""
    example = (torch.zeros(1, 3, dtype=torch.int32), causal_mask(2, 3))
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript, not torch.export, on purpose: only the TorchScript frontend of coremltools
        # carries module scopes onto MIL ops, which the fp16 op selector needs
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated", category=DeprecationWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    module.reset_cache()
    return traced


def convert(
    model: BitNetDecoder,
    calibration_ids: list[int],
    weights: str = "tq2",
    head: str = "int4",
    headroom: float = DEFAULT_HEADROOM,
    embedding: str = "fp16",
) -> Conversion:
    import coremltools as ct

    module = lower_for_coreml(model, separate_head=(head, embedding) not in SHARED_TABLE)
    report = analyze(module, calibration_ids, headroom)
    if report.kv_max >= FP16_MAX:
        raise ValueError(
            f"keys/values reach {report.kv_max:.3g} on the calibration prompt, beyond fp16; Core ML keeps "
            "its state (the KV cache) in fp16 only"
        )
    traced = trace(module)
    seq = ct.RangeDim(lower_bound=1, upper_bound=module.max_seq_len, default=1)
    end = ct.RangeDim(lower_bound=1, upper_bound=module.max_seq_len, default=1)
    program = ct.convert(
        traced,
        inputs=[
            ct.TensorType(name=INPUT_NAMES[0], shape=(1, seq), dtype=np.int32),
            ct.TensorType(name=INPUT_NAMES[1], shape=(1, 1, seq, end), dtype=np.float16),
        ],
        outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
        states=[
            ct.StateType(wrapped_type=ct.TensorType(shape=module.cache_shape, dtype=np.float16), name=name)
            for name in STATE_NAMES
        ],
        minimum_deployment_target=ct.target.iOS18,
        convert_to="milinternal",
        compute_precision=ct.transform.FP16ComputePrecision(op_selector=fp16_selector(report.fp32)),
        pass_pipeline=_pass_pipeline(),
    )
    seen = {op_scope(op) for op in program.functions["main"].operations}
    lost = report.fp32 - seen
    if lost:
        # the selector matches nothing for these scopes: the fp32 decision would silently not apply
        raise RuntimeError(f"fp32 scopes missing from the converted program: {sorted(lost)}")
    ternary, head_const = find_linear_weights(program)
    table = find_embedding(program)
    if len(ternary) != 7 * model.config.num_layers:
        raise RuntimeError(f"found {len(ternary)} ternary linears in the program, expected {7 * model.config.num_layers}")
    # second leg: only the compression passes (and the backend) run on the converted program
    mlmodel = ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT32,  # the program is already cast; cast nothing more
        pass_pipeline=compression_pipeline(ternary, head_const, weights, head, table, embedding),
        skip_model_load=True,
    )
    return Conversion(mlmodel, program, report, ternary, head_const, table)
