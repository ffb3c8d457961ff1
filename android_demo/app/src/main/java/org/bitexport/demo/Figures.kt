package org.bitexport.demo

import org.json.JSONObject

/**
 * The figures `bitexport run` prints, computed the same way (export/model/generate.py):
 * prefill tokens/s = prompt tokens / prefill seconds; decode tokens/s = (new tokens - 1) / decode
 * seconds, because the first new token comes out of the prefill call.
 */
data class RunFigures(val promptTokens: Int, val newTokens: Int, val prefillSeconds: Double, val decodeSeconds: Double) {
    val prefillTokensPerSecond: Double
        get() = if (prefillSeconds > 0) promptTokens / prefillSeconds else 0.0

    val decodeTokensPerSecond: Double
        get() = if (decodeSeconds > 0) (newTokens - 1).coerceAtLeast(0) / decodeSeconds else 0.0

    companion object {
        /**
         * From the JSON that LlmCallback.onStats receives: ExecuTorch's stats_to_json_string
         * (extension/llm/runner/stats.h). TextLLMRunner::generate (text_llm_runner.cpp) stamps
         * inference_start_ms before encoding the prompt, prompt_eval_end_ms after the prefill that
         * yields the first token, inference_end_ms after the decode loop; generated_tokens counts
         * the decode loop's steps only, so new tokens = generated_tokens + 1. Prefill therefore runs
         * from inference_start_ms and includes the prompt's tokenization (well under a millisecond):
         * stats.h declares token_encode_end_ms, but TextLLMRunner never writes it (it stays 0), so it
         * is not read.
         */
        fun fromExecuTorchStats(json: String): RunFigures {
            val stats = JSONObject(json)
            val unitsPerSecond = stats.optDouble("SCALING_FACTOR_UNITS_PER_SECOND", 1000.0)
            val prefillStart = stats.getLong("inference_start_ms")
            val promptEvalEnd = stats.getLong("prompt_eval_end_ms")
            return RunFigures(
                promptTokens = stats.getInt("prompt_tokens"),
                newTokens = stats.getInt("generated_tokens") + 1,
                prefillSeconds = (promptEvalEnd - prefillStart) / unitsPerSecond,
                decodeSeconds = (stats.getLong("inference_end_ms") - promptEvalEnd) / unitsPerSecond,
            )
        }
    }
}

/** Median of the per-run figures, each column on its own (what the benchmark mode shows). */
data class BenchmarkResult(val runs: List<RunFigures>) {
    val medianPrefillTokensPerSecond: Double get() = median(runs.map { it.prefillTokensPerSecond })
    val medianDecodeTokensPerSecond: Double get() = median(runs.map { it.decodeTokensPerSecond })

    companion object {
        fun median(values: List<Double>): Double {
            if (values.isEmpty()) return 0.0
            val sorted = values.sorted()
            val mid = sorted.size / 2
            return if (sorted.size % 2 == 1) sorted[mid] else (sorted[mid - 1] + sorted[mid]) / 2
        }
    }
}
