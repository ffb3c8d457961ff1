"""llama.cpp's ternary formats (TQ2_0, TQ1_0) on the same weights, for the side-by-side benchmark.

llama.cpp is built from the `llama-cpp-python` source distribution on PyPI (the llama.cpp it
bundles), once, into `${BITEXPORT_CACHE:-~/.cache/bitexport}/llama.cpp/<version>/`:

    sdist/                 the unpacked source distribution (convert_hf_to_gguf.py, gguf-py)
    build/bin/llama-bench  built with CMake + Ninja from the venv, Release, GGML_NATIVE
    build/bin/llama-quantize, build/bin/llama-completion

The model reaches llama.cpp through its own converter, which reads 1bitLLM folders
(`BitnetForCausalLM`: fp16 shadow weights that it ternarizes itself with absmean). `write_1bitllm`
writes our ternary model in that format so that re-ternarizing gives back our codes and scale
exactly. llama.cpp's BitNet graph differs from ours in ways that do not change the bytes a token
reads: it always has the two sub-norms (written as ones when the model has none), always a SiLU
gate, activations quantized per 256-block, and the output head tied to the embeddings (its
converter rejects a separate lm_head, so untied models cannot be compared).

build.py builds it once (cached); convert.py writes our model as a 1bitLLM folder and runs the
converter; run.py runs llama-bench. `python -m bitexport.bench.llamacpp build` builds it by hand.
"""

from bitexport.bench.llamacpp.build import VERSION, LlamaCpp, ensure_llamacpp, find_llamacpp, llamacpp_root
from bitexport.bench.llamacpp.convert import (
    BITS_PER_WEIGHT, BLOCK, OUTTYPES, convert, shadow_exactness, shadow_weights, write_1bitllm, write_sentencepiece,
)
from bitexport.bench.llamacpp.run import bench

__all__ = [
    "BITS_PER_WEIGHT", "BLOCK", "OUTTYPES", "VERSION", "LlamaCpp", "bench", "convert", "ensure_llamacpp",
    "find_llamacpp", "llamacpp_root", "shadow_exactness", "shadow_weights", "write_1bitllm", "write_sentencepiece",
]
