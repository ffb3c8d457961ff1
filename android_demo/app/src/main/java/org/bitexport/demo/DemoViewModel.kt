package org.bitexport.demo

import android.app.Application
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.io.File
import java.util.concurrent.Executors
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
)

class DemoViewModel(app: Application) : AndroidViewModel(app) {
    private val _state = MutableStateFlow(UiState())
    val state: StateFlow<UiState> = _state

    // LlmModule is not thread-safe: every call into it runs on this one thread.
    private val llmThread = Executors.newSingleThreadExecutor { r -> Thread(r, "llm") }.asCoroutineDispatcher()
    // Written on the llm thread, read by stop() on the UI thread.
    @Volatile private var runner: LlmRunner? = null

    // Prompt token count of the benchmark prompt, learned from the warm-up run's stats.
    private var benchmarkPromptTokens: Int? = null

    val roots: List<File> = listOfNotNull(File(DEVICE_ROOT), app.getExternalFilesDir("bundles"))

    init {
        refresh()
    }

    fun refresh() {
        _state.update { it.copy(bundles = BundleInfo.discover(roots)) }
    }

    fun open(folder: File) = launchOnLlmThread("loading ${folder.name}") {
        runner?.close()
        runner = null
        benchmarkPromptTokens = null
        val info = BundleInfo.read(folder)
        _state.update { it.copy(bundle = info, output = "", last = null, benchmark = null) }
        runner = LlmRunner(info)
        "loaded ${info.modelName}"
    }

    fun generate(prompt: String, maxNewTokens: Int) = launchOnLlmThread("generating") {
        val r = runner ?: throw BundleException("open a bundle first")
        _state.update { it.copy(output = "") }
        val figures = r.generate(prompt, maxNewTokens, promptTokens = null) { piece ->
            _state.update { it.copy(output = it.output + piece) }
        }
        _state.update { it.copy(last = figures) }
        "done"
    }

    /** A warm-up run, then [BENCHMARK_RUNS] runs of the fixed prompt; shows the medians. */
    fun benchmark() = launchOnLlmThread("benchmark") {
        val r = runner ?: throw BundleException("open a bundle first")
        _state.update { it.copy(output = "", benchmark = null) }
        val warmup = r.generate(BENCHMARK_PROMPT, BENCHMARK_NEW_TOKENS, benchmarkPromptTokens) {}
        benchmarkPromptTokens = warmup.promptTokens
        val runs = (1..BENCHMARK_RUNS).map { i ->
            _state.update { it.copy(status = "benchmark run $i of $BENCHMARK_RUNS") }
            r.generate(BENCHMARK_PROMPT, BENCHMARK_NEW_TOKENS, benchmarkPromptTokens) {}
        }
        _state.update { it.copy(benchmark = BenchmarkResult(runs), last = runs.last()) }
        "benchmark done"
    }

    /** Called on the UI thread: the llm thread is busy inside generate. */
    fun stop() {
        runner?.stop()
    }

    private fun launchOnLlmThread(what: String, block: suspend () -> String) {
        if (_state.value.busy) return
        _state.update { it.copy(busy = true, status = "$what…") }
        viewModelScope.launch {
            val message = try {
                withContext(llmThread) { block() }
            } catch (e: Exception) {
                e.message ?: e.toString()
            }
            _state.update { it.copy(busy = false, status = message) }
        }
    }

    override fun onCleared() {
        runner?.close()
        llmThread.close()
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
