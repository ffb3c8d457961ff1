package org.bitexport.demo

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.viewModels
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Surface
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import java.util.Locale

class MainActivity : ComponentActivity() {
    private val model: DemoViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) { DemoScreen(model) }
            }
        }
    }
}

@Composable
fun DemoScreen(model: DemoViewModel) {
    val state by model.state.collectAsStateWithLifecycle()
    var prompt by remember { mutableStateOf("ROMEO:") }
    var maxNew by remember { mutableStateOf("64") }
    var temperature by remember { mutableStateOf("0") }
    var chat by remember { mutableStateOf(false) }
    var systemPrompt by remember { mutableStateOf("You are a helpful assistant.") }
    // A newly opened bundle brings its own defaults (manifest `generation`) and chat support.
    LaunchedEffect(state.bundle) {
        state.bundle?.let { b ->
            maxNew = b.defaultMaxNewTokens.toString()
            temperature = b.defaultTemperature.toString()
            chat = b.chat != null
        }
    }

    Column(
        Modifier.fillMaxSize().safeDrawingPadding().imePadding().padding(12.dp).verticalScroll(rememberScrollState()),
        verticalArrangement = Arrangement.spacedBy(8.dp),
    ) {
        Text("Runtime: ${BuildConfig.EXECUTORCH_RUNTIME}" + if (BuildConfig.BITEXPORT_KERNELS) " (with bitexport kernels)" else "")
        if (state.bundles.isEmpty()) {
            Text("No bundle found. Push one with\nadb push BUNDLE ${DemoViewModel.DEVICE_ROOT}/", fontFamily = FontFamily.Monospace)
        }
        state.bundles.forEach { folder ->
            OutlinedButton(onClick = { model.open(folder) }, enabled = !state.busy, modifier = Modifier.fillMaxWidth()) {
                Text(folder.name)
            }
        }
        OutlinedButton(onClick = model::refresh, enabled = !state.busy) { Text("Rescan") }

        state.bundle?.let { b -> BundleCard(b) }

        if (state.bundle?.chat != null) {
            Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                Switch(checked = chat, onCheckedChange = { chat = it }, enabled = !state.busy)
                Text(if (chat) "Chat (the bundle's chat template)" else "Plain completion")
                if (chat) OutlinedButton(onClick = model::newChat, enabled = !state.busy) { Text("New chat") }
            }
            if (chat) {
                OutlinedTextField(systemPrompt, { systemPrompt = it }, label = { Text("System prompt") }, modifier = Modifier.fillMaxWidth())
                state.history.forEach { (user, reply) -> Text("> $user\n$reply", fontFamily = FontFamily.Monospace) }
            }
        }
        OutlinedTextField(prompt, { prompt = it }, label = { Text(if (chat) "Message" else "Prompt") }, modifier = Modifier.fillMaxWidth())
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            OutlinedTextField(
                maxNew,
                { maxNew = it.filter(Char::isDigit) },
                label = { Text("New tokens") },
                modifier = Modifier.weight(1f),
            )
            OutlinedTextField(
                temperature,
                { temperature = it.filter { c -> c.isDigit() || c == '.' } },
                label = { Text("Temperature (0: greedy)") },
                modifier = Modifier.weight(1f),
            )
        }
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(
                onClick = {
                    model.generate(
                        prompt,
                        maxNew.toIntOrNull() ?: 64,
                        temperature.toFloatOrNull() ?: 0f,
                        chat = chat && state.bundle?.chat != null,
                        systemPrompt = systemPrompt,
                    )
                },
                enabled = !state.busy && state.bundle != null,
            ) {
                Text(if (chat) "Send" else "Generate")
            }
            Button(onClick = model::benchmark, enabled = !state.busy && state.bundle != null) {
                Text("Benchmark")
            }
            OutlinedButton(onClick = model::stop, enabled = state.busy) { Text("Stop") }
        }
        Text(state.status)
        state.last?.let { f ->
            Text(
                "prompt ${f.promptTokens} tokens, ${fmt(f.prefillTokensPerSecond)} tokens/s prefill; " +
                    "${f.newTokens} new tokens, ${fmt(f.decodeTokensPerSecond)} tokens/s decode",
            )
        }
        state.benchmark?.let { r ->
            Text(
                "Benchmark, median of ${r.runs.size} runs (${r.runs.first().promptTokens}-token prompt, " +
                    "${DemoViewModel.BENCHMARK_NEW_TOKENS} new tokens):\n" +
                    "prefill ${fmt(r.medianPrefillTokensPerSecond)} tokens/s, decode ${fmt(r.medianDecodeTokensPerSecond)} tokens/s",
                style = MaterialTheme.typography.titleMedium,
            )
        }
        Text(state.output, fontFamily = FontFamily.Monospace)
    }
}

@Composable
fun BundleCard(b: BundleInfo) {
    val pte = b.pte
    Text(
        "${b.modelName}: ${"%.1f".format(Locale.ROOT, b.parameters / 1e6)} M parameters, " +
            (pte?.let { "${it.file.name} ${"%.1f".format(Locale.ROOT, it.bytes / 1e6)} MB, ${it.weightFormat}" } ?: "no .pte") +
            ", context ${b.maxSeqLen}",
        style = MaterialTheme.typography.bodyLarge,
    )
    if (pte?.needsBitexportKernels == true && !BuildConfig.BITEXPORT_KERNELS) {
        Text(
            "tq2 bundle: this build uses the stock AAR, which lacks the bitexport kernels. " +
                "See android_demo/README.md (build_aar_with_kernels.sh, -PbitexportAar).",
            color = MaterialTheme.colorScheme.error,
        )
    }
}

private fun fmt(x: Double): String = "%.1f".format(Locale.ROOT, x)
