package org.bitexport.demo

import java.util.concurrent.atomic.AtomicBoolean
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmGenerationConfig
import org.pytorch.executorch.extension.llm.LlmModule
import org.pytorch.executorch.extension.llm.LlmModuleConfig

/**
 * One loaded bundle on ExecuTorch's LLM runner (org.pytorch:executorch-android, LlmModule).
 *
 * API used, read in ExecuTorch's sources (extension/android/executorch_android/.../extension/llm/
 * LlmModule.kt, LlmModuleConfig.kt, LlmGenerationConfig.kt; extension/android/jni/jni_layer_llama.cpp;
 * extension/llm/runner/text_llm_runner.cpp and text_token_generator.h):
 * - `LlmModule(LlmModuleConfig)`. The BOS count must be given HERE: the native generate builds its
 *   GenerationConfig with `.num_bos = needs_bos_ ? num_bos_ : 0`, num_bos_ being the constructor's
 *   value; the numBos of LlmGenerationConfig (and of the 7-argument generate) is ignored.
 *   needs_bos_ is set again by resetContext(), so every generate after a resetContext gets it.
 * - `load()` (throws ExecutorchRuntimeException, e.g. 0x14 "Missing operator" for a tq2 program
 *   on an AAR without the bitexport kernels).
 * - `generate(prompt, LlmGenerationConfig, LlmCallback)`: blocks, holding the module's lock; the
 *   config's seqLen is the total length (prompt + new tokens, GenerationConfig::resolve_max_new_tokens)
 *   and its temperature is honoured when >= 0 (0: greedy argmax, as `bitexport run`).
 * - LlmCallback.onResult(String) once per piece (the JNI layer joins tokens until they form valid
 *   UTF-8), onStats(String) once with the JSON of extension/llm/runner/stats.h, onError(int, String)
 *   just before generate throws its own generic "Failed to generate" exception: we keep onError's
 *   message and report it instead.
 * - `stop()`: no lock, callable from any thread. But TextTokenGenerator::generate clears its stop
 *   flag when the decode loop starts, so a stop() during prefill or from the prefill token's
 *   callback is lost. [generate] therefore takes a flag of the caller's, and every onResult re-issues
 *   stop() while it is raised: the loop checks its own flag right after each callback, so generation
 *   ends at most one token after the request, wherever it came.
 * - `resetContext()` (empties the KV cache and the position; without it the next generate
 *   continues the last one), `close()`: throws IllegalStateException while generate holds the lock,
 *   so it must run after generate returned, on the thread that ran it (DemoViewModel.onCleared).
 * Not thread-safe except [stop]: the view model calls everything else from one thread.
 */
class LlmRunner(val bundle: BundleInfo) : AutoCloseable {
    private val module: LlmModule

    /** Stop-token pieces (chat bundles): their text, as the runner decodes them. */
    private val stopTexts: Set<String> = bundle.stopTokenTexts()

    init {
        val pte = bundle.pte ?: throw BundleException("${bundle.folder.name}: no ExecuTorch program; export with --target android")
        if (!pte.file.isFile) throw BundleException("${pte.file.path} is missing; push the whole bundle folder again")
        val config = LlmModuleConfig.create()
            .modelType(LlmModuleConfig.MODEL_TYPE_TEXT)
            .modulePath(pte.file.absolutePath)
            .tokenizerPath(bundle.tokenizer.absolutePath)
            // Used only when a generate passes a negative temperature; ours always pass one.
            .temperature(0.0f)
            // ExecuTorch's tokenizer never applies tokenizer.json's post-processor; tokenizer.adds_bos
            // says whether `bitexport run`'s tokenizer puts BOS first, and this is where the runtime
            // takes the count from (see above).
            .numBos(bundle.numBos)
            .numEos(0)
            .build()
        module = LlmModule(config)
        try {
            module.load()
        } catch (e: Exception) {
            module.close()
            throw BundleException(loadFailure(pte, e))
        }
    }

    /**
     * Generates up to [maxNewTokens] tokens after [prompt] (fewer at EOS, at a stop token, when
     * [stop] is raised, or at the end of the KV cache) with [temperature] (0: greedy).
     * [promptTokens] is the prompt's token count when known (from an earlier run's stats): then
     * seqLen asks for exactly [maxNewTokens]; unknown, the cache length bounds the run and the piece
     * count stops it (a piece is one token, except that the JNI layer joins tokens until they form
     * valid UTF-8). [onPiece] gets the text as it comes; stop tokens and anything after a stop are
     * left out. [stop] is the caller's flag: raise it and call [stop] (the function) from any thread.
     */
    fun generate(
        prompt: String,
        maxNewTokens: Int,
        promptTokens: Int?,
        stop: AtomicBoolean,
        temperature: Float = 0.0f,
        onPiece: (String) -> Unit,
    ): RunFigures {
        if (stop.get()) throw BundleException("stopped")
        module.resetContext()
        val seqLen = if (promptTokens != null) minOf(promptTokens + maxNewTokens, bundle.maxSeqLen) else bundle.maxSeqLen
        val config = LlmGenerationConfig.create()
            .seqLen(seqLen)
            .echo(false)
            .temperature(temperature.coerceAtLeast(0.0f))
            .build()
        var figures: RunFigures? = null
        var error: String? = null
        var pieces = 0
        val ended = AtomicBoolean(false)
        val callback = object : LlmCallback {
            override fun onResult(result: String) {
                val alreadyEnded = ended.get() || stop.get()
                val isStopToken = result in stopTexts
                pieces += 1
                if (isStopToken || (promptTokens == null && pieces >= maxNewTokens)) ended.set(true)
                // Re-issued on every piece once raised: a stop() before the decode loop started is lost.
                if (ended.get() || stop.get()) module.stop()
                if (!alreadyEnded && !isStopToken) onPiece(result)
            }

            override fun onStats(stats: String) {
                figures = RunFigures.fromExecuTorchStats(stats)
            }

            override fun onError(errorCode: Int, message: String) {
                error = "ExecuTorch error 0x${errorCode.toString(16)}: $message"
            }
        }
        try {
            module.generate(prompt, config, callback)
        } catch (e: Exception) {
            // generate throws a generic "Failed to generate" right after onError: the runner's own
            // message is the useful one.
            throw BundleException(error ?: (e.message ?: e.toString()))
        }
        error?.let { throw BundleException(it) }
        return figures ?: throw BundleException("the runner reported no statistics; is this an LLM-runner .pte?")
    }

    /** Asks a running [generate] to end; callable from any thread (raise the generate's flag too). */
    fun stop() = module.stop()

    /** Only after [generate] returned, on the thread that ran it (LlmModule.close throws otherwise). */
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
