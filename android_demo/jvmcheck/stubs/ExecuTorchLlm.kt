// The part of ExecuTorch's Android LLM API (org.pytorch.executorch.extension.llm, 1.5 line) the app
// calls, with the behaviour of its native side modelled where the app depends on it. Written from
// a reading of ExecuTorch's sources, not copied:
// - extension/android/.../llm/LlmModule.kt: generate, resetContext, load hold a lock; close() throws
//   IllegalStateException while another thread holds it; stop() takes no lock.
// - extension/android/jni/jni_layer_llama.cpp: generate uses num_bos from the constructor
//   (`needs_bos_ ? num_bos_ : 0`), never the generation config's; resetContext re-arms BOS; on a
//   runner error it calls onError, and LlmModule.generate then throws its own exception; a
//   temperature >= 0 overrides the module's.
// - extension/llm/runner/text_token_generator.h: the prefill token's callback comes before the
//   decode loop, which clears its stop flag when it starts and checks it after each token's callback.
package org.pytorch.executorch.extension.llm

import java.io.Closeable
import java.util.concurrent.locks.ReentrantLock

interface LlmCallback {
    fun onResult(result: String)
    fun onStats(stats: String) {}
    fun onError(errorCode: Int, message: String) {}
}

class LlmModuleConfig private constructor(
    val modulePath: String, val tokenizerPath: String, val temperature: Float, val modelType: Int, val numBos: Int, val numEos: Int,
) {
    companion object {
        const val MODEL_TYPE_TEXT = 1
        fun create(): Builder = Builder()
    }

    class Builder {
        private var modulePath: String? = null
        private var tokenizerPath: String? = null
        private var temperature = 0.8f
        private var modelType = MODEL_TYPE_TEXT
        private var numBos = 0
        private var numEos = 0
        fun modulePath(v: String) = apply { modulePath = v }
        fun tokenizerPath(v: String) = apply { tokenizerPath = v }
        fun temperature(v: Float) = apply { temperature = v }
        fun modelType(v: Int) = apply { modelType = v }
        fun numBos(v: Int) = apply { numBos = v }
        fun numEos(v: Int) = apply { numEos = v }
        fun build() = LlmModuleConfig(modulePath!!, tokenizerPath!!, temperature, modelType, numBos, numEos)
    }
}

class LlmGenerationConfig private constructor(
    val echo: Boolean, val seqLen: Int, val temperature: Float, val numBos: Int, val numEos: Int,
) {
    companion object { fun create(): Builder = Builder() }

    class Builder {
        private var echo = true
        private var seqLen = -1
        private var temperature = 0.8f
        private var numBos = 0
        private var numEos = 0
        fun echo(v: Boolean) = apply { echo = v }
        fun seqLen(v: Int) = apply { seqLen = v }
        fun temperature(v: Float) = apply { temperature = v }
        fun numBos(v: Int) = apply { numBos = v }
        fun numEos(v: Int) = apply { numEos = v }
        fun build() = LlmGenerationConfig(echo, seqLen, temperature, numBos, numEos)
    }
}

/** What the modelled runner does in the next generate calls; set by the check. */
object FakeRuntime {
    /** Pieces the model produces: the first from prefill, the rest from the decode loop. */
    @Volatile var pieces: List<String> = listOf("A", "B", "C")
    /** Decode until stopped (a long generation), pausing this long per token. */
    @Volatile var untilStopped = false
    @Volatile var errorCode = 0
    val log: MutableList<String> = java.util.Collections.synchronizedList(mutableListOf())
}

class LlmModule private constructor(private val constructorNumBos: Int, private val constructorTemperature: Float) : Closeable {
    constructor(config: LlmModuleConfig) : this(config.numBos, config.temperature)
    constructor(modelType: Int, modulePath: String, tokenizerPath: String, temperature: Float) : this(0, temperature)

    companion object { const val MODEL_TYPE_TEXT = 1 }

    private val lock = ReentrantLock()
    private var needsBos = true
    @Volatile private var shouldStop = false
    @Volatile private var destroyed = false

    fun load() = locked { }

    fun resetContext() = locked { needsBos = true }

    fun stop() {
        if (destroyed) return
        shouldStop = true
        FakeRuntime.log += "stop"
    }

    override fun close() {
        if (!lock.tryLock()) throw IllegalStateException("Cannot close module while method is executing")
        try {
            destroyed = true
            FakeRuntime.log += "close on ${Thread.currentThread().name}"
        } finally {
            lock.unlock()
        }
    }

    fun generate(prompt: String, config: LlmGenerationConfig, callback: LlmCallback) = locked {
        check(!destroyed) { "LlmModule has been destroyed" }
        val bos = if (needsBos) constructorNumBos else 0
        val temperature = if (config.temperature >= 0) config.temperature else constructorTemperature
        FakeRuntime.log += "generate bos=$bos temperature=$temperature prompt=$prompt"
        if (FakeRuntime.errorCode != 0) {
            callback.onError(FakeRuntime.errorCode, "runner failed (modelled)")
            throw RuntimeException("Failed to generate")
        }
        val pieces = FakeRuntime.pieces
        callback.onResult(pieces[0])
        shouldStop = false // the decode loop starts
        var steps = 0
        var next = 1
        while (FakeRuntime.untilStopped || next < pieces.size) {
            if (FakeRuntime.untilStopped) Thread.sleep(2)
            callback.onResult(pieces[next % pieces.size])
            next++
            steps++
            if (shouldStop) break
        }
        FakeRuntime.log += "decode steps=$steps"
        callback.onStats(
            """{"prompt_tokens": 3, "generated_tokens": $steps, "inference_start_ms": 1000, "prompt_eval_end_ms": 1010,""" +
                """ "inference_end_ms": ${1010 + 10 * steps}, "SCALING_FACTOR_UNITS_PER_SECOND": 1000}""",
        )
        needsBos = false
    }

    private fun <T> locked(body: () -> T): T {
        lock.lock()
        try {
            return body()
        } finally {
            lock.unlock()
        }
    }
}
