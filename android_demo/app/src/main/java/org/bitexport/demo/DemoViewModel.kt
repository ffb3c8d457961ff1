package org.bitexport.demo

import android.app.Application
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.io.File
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

data class UiState(
    val bundles: List<File> = emptyList(),
    val bundle: BundleInfo? = null,
    val busy: Boolean = false,
    val status: String = "",
    val output: String = "",
    val last: RunFigures? = null,
    val benchmark: BenchmarkResult? = null,
    /** Chat turns so far (user, reply), when the bundle has a chat format. */
    val history: List<Pair<String, String>> = emptyList(),
)

class DemoViewModel(app: Application) : AndroidViewModel(app) {
    private val _state = MutableStateFlow(UiState())
    val state: StateFlow<UiState> = _state

    // LlmModule is not thread-safe: every call into it (close included) runs on this one thread.
    private val llmExecutor: ExecutorService = Executors.newSingleThreadExecutor { r -> Thread(r, "llm") }
    private val llmThread = llmExecutor.asCoroutineDispatcher()
    // Written on the llm thread, read by stop() on the UI thread.
    @Volatile private var runner: LlmRunner? = null
    // The stop flag of the job running now (a fresh one per job, made on the UI thread).
    @Volatile private var jobStop = AtomicBoolean(false)

    // Prompt token count of the benchmark prompt, learned from the warm-up run's stats.
    private var benchmarkPromptTokens: Int? = null

    val roots: List<File> = listOfNotNull(File(DEVICE_ROOT), app.getExternalFilesDir("bundles"))

    init {
        refresh()
    }

    fun refresh() {
        _state.update { it.copy(bundles = BundleInfo.discover(roots)) }
    }

    fun open(folder: File) = launchOnLlmThread("loading ${folder.name}") { _ ->
        runner?.close()
        runner = null
        benchmarkPromptTokens = null
        val info = BundleInfo.read(folder)
        _state.update { it.copy(bundle = info, output = "", last = null, benchmark = null, history = emptyList()) }
        runner = LlmRunner(info)
        "loaded ${info.modelName}"
    }

    /**
     * Plain completion of [prompt], or with a chat bundle and [chat] on, one chat turn: the
     * bundle's chat format applied to [systemPrompt], the turns so far and [prompt].
     */
    fun generate(prompt: String, maxNewTokens: Int, temperature: Float, chat: Boolean, systemPrompt: String) =
        launchOnLlmThread("generating") { stop ->
            val r = runner ?: throw BundleException("open a bundle first")
            val format = r.bundle.chat?.takeIf { chat }
            val history = _state.value.history
            val text = format?.render(systemPrompt, history, prompt) ?: prompt
            _state.update { it.copy(output = "") }
            val reply = StringBuilder()
            val figures = r.generate(text, maxNewTokens, promptTokens = null, stop = stop, temperature = temperature) { piece ->
                reply.append(piece)
                _state.update { it.copy(output = it.output + piece) }
            }
            _state.update { s ->
                s.copy(last = figures, history = if (format != null) history + (prompt to reply.toString()) else s.history)
            }
            if (stop.get()) "stopped" else "done"
        }

    /** Forgets the chat turns (the next turn starts a new conversation). */
    fun newChat() = _state.update { it.copy(history = emptyList(), output = "") }

    /** A warm-up run, then [BENCHMARK_RUNS] runs of the fixed prompt; shows the medians. */
    fun benchmark() = launchOnLlmThread("benchmark") { stop ->
        val r = runner ?: throw BundleException("open a bundle first")
        _state.update { it.copy(output = "", benchmark = null) }
        val warmup = r.generate(BENCHMARK_PROMPT, BENCHMARK_NEW_TOKENS, benchmarkPromptTokens, stop) {}
        benchmarkPromptTokens = warmup.promptTokens
        val runs = (1..BENCHMARK_RUNS).map { i ->
            _state.update { it.copy(status = "benchmark run $i of $BENCHMARK_RUNS") }
            r.generate(BENCHMARK_PROMPT, BENCHMARK_NEW_TOKENS, benchmarkPromptTokens, stop) {}
        }
        _state.update { it.copy(benchmark = BenchmarkResult(runs), last = runs.last()) }
        "benchmark done"
    }

    /**
     * Called on the UI thread while the llm thread is inside generate: raises the job's flag (which
     * LlmRunner re-issues on every piece, so a stop during prefill is not lost) and stops the runner.
     */
    fun stop() {
        jobStop.set(true)
        runner?.stop()
    }

    private fun launchOnLlmThread(what: String, block: suspend (stop: AtomicBoolean) -> String) {
        if (_state.value.busy) return
        val stop = AtomicBoolean(false)
        jobStop = stop
        _state.update { it.copy(busy = true, status = "$what…") }
        viewModelScope.launch {
            val message = try {
                withContext(llmThread) { block(stop) }
            } catch (e: Exception) {
                e.message ?: e.toString()
            }
            _state.update { it.copy(busy = false, status = message) }
        }
    }

    /**
     * On the main thread, possibly while the llm thread is inside generate, which holds LlmModule's
     * lock: close() would throw IllegalStateException there ("Cannot close module while method is
     * executing", LlmModule.kt). So: stop first, then close on the llm thread, where it runs after
     * the generate in progress has returned. (viewModelScope is already cancelled here, but the
     * blocking generate call finishes on its own thread.)
     */
    override fun onCleared() {
        stop()
        llmExecutor.execute {
            runner?.close()
            runner = null
        }
        llmExecutor.shutdown()
    }

    companion object {
        /** Where the README's `adb push` puts bundles. */
        const val DEVICE_ROOT = "/data/local/tmp/bitexport"

        // The benchmark: a fixed prompt, 128 new tokens as in `bitexport bench`, median of 5.
        const val BENCHMARK_PROMPT =
            "The quick brown fox jumps over the lazy dog. To be, or not to be, that is the question: " +
                "whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune."
        const val BENCHMARK_NEW_TOKENS = 128
        const val BENCHMARK_RUNS = 5
    }
}
