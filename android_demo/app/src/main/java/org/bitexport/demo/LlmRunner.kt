package org.bitexport.demo

import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmGenerationConfig
import org.pytorch.executorch.extension.llm.LlmModule

/**
 * One loaded bundle on ExecuTorch's LLM runner (org.pytorch:executorch-android, LlmModule).
 *
 * API used (executorch extension/android/executorch_android/.../extension/llm/):
 * - `LlmModule(modelType, modulePath, tokenizerPath, temperature)`; MODEL_TYPE_TEXT builds the
 *   C++ TextLLMRunner, which reads tokenizer.json with its HF tokenizer.
 * - `load()` (throws ExecutorchRuntimeException, e.g. 0x14 "Missing operator" for a tq2 program
 *   on an AAR without the bitexport kernels).
 * - `generate(prompt, LlmGenerationConfig, LlmCallback)`: blocks until done; the config's seqLen is
 *   the total length (prompt + new tokens, GenerationConfig::resolve_max_new_tokens), numBos the
 *   BOS count the tokenizer prepends (ExecuTorch never applies tokenizer.json's post-processor).
 * - LlmCallback.onResult(String) once per decoded piece, onStats(String) once with the JSON of
 *   extension/llm/runner/stats.h, onError(int, String).
 * - `stop()` (no lock, safe from another thread while generate runs), `resetContext()` (empties
 *   the KV cache and the position: without it the next generate continues the last one),
 *   `close()`.
 * Not thread-safe: the view model calls it from one thread only.
 */
class LlmRunner(val bundle: BundleInfo) : AutoCloseable {
    private val module: LlmModule

    init {
        val pte = bundle.pte ?: throw BundleException("${bundle.folder.name}: no ExecuTorch program; export with --target android")
        if (!pte.file.isFile) throw BundleException("${pte.file.path} is missing; push the whole bundle folder again")
        // Temperature 0: greedy argmax, the decoding `bitexport run` does.
        module = LlmModule(LlmModule.MODEL_TYPE_TEXT, pte.file.absolutePath, bundle.tokenizer.absolutePath, 0.0f)
        try {
            module.load()
        } catch (e: Exception) {
            module.close()
            throw BundleException(loadFailure(pte, e))
        }
    }

    /**
     * Greedy generation of up to [maxNewTokens] tokens after [prompt] (fewer at EOS or at the end
     * of the KV cache). [promptTokens] is the prompt's token count when known (from an earlier
     * run's stats): then seqLen asks for exactly [maxNewTokens]; unknown, the cache length bounds
     * the run and [onPiece] stops it once enough pieces came (a piece is one token, except that
     * the JNI layer joins tokens until they form valid UTF-8).
     */
    fun generate(prompt: String, maxNewTokens: Int, promptTokens: Int?, onPiece: (String) -> Unit): RunFigures {
        module.resetContext()
        val seqLen = if (promptTokens != null) minOf(promptTokens + maxNewTokens, bundle.maxSeqLen) else bundle.maxSeqLen
        val config = LlmGenerationConfig.create()
            .seqLen(seqLen)
            .echo(false)
            .temperature(0.0f)
            .numBos(if (bundle.addsBos) 1 else 0)
            .numEos(0)
            .build()
        var figures: RunFigures? = null
        var error: String? = null
        var pieces = 0
        module.generate(
            prompt,
            config,
            object : LlmCallback {
                override fun onResult(result: String) {
                    onPiece(result)
                    pieces += 1
                    if (promptTokens == null && pieces >= maxNewTokens) module.stop()
                }

                override fun onStats(stats: String) {
                    figures = RunFigures.fromExecuTorchStats(stats)
                }

                override fun onError(errorCode: Int, message: String) {
                    error = "ExecuTorch error 0x${errorCode.toString(16)}: $message"
                }
            },
        )
        error?.let { throw BundleException(it) }
        return figures ?: throw BundleException("the runner reported no statistics; is this an LLM-runner .pte?")
    }

    /** Ends a running [generate] after its current token (called from the UI thread). */
    fun stop() = module.stop()

    override fun close() = module.close()

    private fun loadFailure(pte: ArtifactInfo, e: Exception): String {
        val base = "could not load ${pte.file.name}: ${e.message}"
        return if (pte.needsBitexportKernels && !BuildConfig.BITEXPORT_KERNELS) {
            "$base. This bundle stores its ternary layers as tq2, which needs the bitexport kernels: " +
                "build the AAR with android_demo/scripts/build_aar_with_kernels.sh and rebuild the app with " +
                "-PbitexportAar=<that AAR>, or export with --weights int4 for the stock AAR"
        } else {
            base
        }
    }
}
