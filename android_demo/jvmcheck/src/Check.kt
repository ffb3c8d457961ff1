// Runs the app's LlmRunner, BundleManifest and DemoViewModel on the JVM against the modelled
// runtime of stubs/ExecuTorchLlm.kt (tests/apps/test_app_contract.py compiles and runs this when a
// Kotlin compiler is at hand). Prints one line per check; exits 1 at the first failure.
import android.app.Application
import java.io.File
import java.nio.file.Files
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.system.exitProcess
import org.bitexport.demo.BundleException
import org.bitexport.demo.BundleInfo
import org.bitexport.demo.DemoViewModel
import org.bitexport.demo.LlmRunner
import org.pytorch.executorch.extension.llm.FakeRuntime

fun check(what: String, ok: Boolean, detail: () -> String = { "" }) {
    println((if (ok) "ok    " else "FAIL  ") + what + (if (ok) "" else ": " + detail()))
    if (!ok) exitProcess(1)
}

fun bundle(chat: Boolean): File {
    val dir = Files.createTempDirectory("bundle").toFile()
    File(dir, "model.pte").writeText("pte")
    File(dir, "tokenizer.json").writeText(
        """{"version": "1.0", "added_tokens": [{"id": 0, "content": "<s>", "special": true},
           {"id": 7, "content": "<|eot_id|>", "special": true}], "model": {"type": "BPE", "vocab": {"a": 1}}}""",
    )
    val chatFields = if (!chat) "" else """,
        "chat_template": "(jinja)",
        "chat_format": {"prefix": "", "system": "System: {content}<|eot_id|>", "user": "User: {content}<|eot_id|>",
                        "assistant": "Assistant: {content}<|eot_id|>", "generation_prompt": "Assistant: "},
        "stop_token_ids": [7],
        "generation": {"temperature": 0.6, "max_new_tokens": 100}"""
    File(dir, "manifest.json").writeText(
        """{"format": "bitexport-bundle", "format_version": 1, "target": "android",
            "source": {"name": "tiny", "parameters": {"total": 1000}},
            "tokenizer": {"path": "tokenizer.json", "adds_bos": true},
            "bos_token_id": 0, "eos_token_ids": [1], "max_seq_len": 64,
            "artifacts": [{"path": "model.pte", "target": "executorch", "weight_format": "int4", "bytes": 3}]$chatFields}""",
    )
    return dir
}

fun waitIdle(model: DemoViewModel) {
    val until = System.currentTimeMillis() + 10_000
    while (model.state.value.busy && System.currentTimeMillis() < until) Thread.sleep(5)
    check("the job finished", !model.state.value.busy) { model.state.value.status }
}

fun main() {
    // --- BundleManifest: optional chat fields, stop-token text from tokenizer.json
    val plain = BundleInfo.read(bundle(chat = false))
    check("a manifest without chat fields reads as plain completion", plain.chat == null && plain.stopTokenIds.isEmpty() && plain.defaultTemperature == 0f)
    val info = BundleInfo.read(bundle(chat = true))
    check("chat fields read", info.chat != null && info.stopTokenIds == listOf(7) && info.defaultTemperature == 0.6f && info.defaultMaxNewTokens == 100)
    check("stop token text from added_tokens", info.stopTokenTexts() == setOf("<|eot_id|>")) { info.stopTokenTexts().toString() }
    val prompt = info.chat!!.render(" Be brief. ", listOf(" Hi!" to "Hello."), "Joke, café ☕ ")
    check("chat prompt rendered", prompt == "System: Be brief.<|eot_id|>User: Hi!<|eot_id|>Assistant: Hello.<|eot_id|>User: Joke, café ☕<|eot_id|>Assistant: ") { prompt }

    // --- LlmRunner
    val runner = LlmRunner(info)
    FakeRuntime.pieces = listOf("A", "B", "C")
    val out = StringBuilder()
    val figures = runner.generate("p", 100, null, AtomicBoolean(false), 0.6f) { out.append(it) }
    check("BOS reaches the runner (constructor count)", FakeRuntime.log.any { it.startsWith("generate bos=1 ") }) { FakeRuntime.log.toString() }
    check("temperature reaches the runner", FakeRuntime.log.any { "temperature=0.6" in it }) { FakeRuntime.log.toString() }
    check("every piece streamed", out.toString() == "ABC") { out.toString() }
    check("figures from the stats", figures.promptTokens == 3 && figures.newTokens == 3) { figures.toString() }

    FakeRuntime.log.clear(); out.clear()
    val stop = AtomicBoolean(false)
    runner.generate("p", 100, null, stop, 0f) { piece -> out.append(piece); if (piece == "A") { stop.set(true); runner.stop() } }
    check("a stop from the prefill token ends generation one token later", "decode steps=1" in FakeRuntime.log && out.toString() == "A") { "${FakeRuntime.log} $out" }

    FakeRuntime.log.clear(); out.clear()
    runner.generate("p", 1, null, AtomicBoolean(false), 0f) { out.append(it) }
    check("one new token asked, one given", "decode steps=1" in FakeRuntime.log && out.toString() == "A") { "${FakeRuntime.log} $out" }

    FakeRuntime.log.clear(); out.clear()
    FakeRuntime.pieces = listOf("Hi", " there", "<|eot_id|>", "User:", " more")
    runner.generate("p", 100, null, AtomicBoolean(false), 0f) { out.append(it) }
    check("a stop token ends the reply and is not shown", out.toString() == "Hi there" && "decode steps=2" in FakeRuntime.log) { "${FakeRuntime.log} $out" }

    FakeRuntime.errorCode = 0x12
    val message = try { runner.generate("p", 5, null, AtomicBoolean(false), 0f) {}; "no error" } catch (e: BundleException) { e.message ?: "" }
    FakeRuntime.errorCode = 0
    check("the runner's error is reported, not the generic one", "0x12" in message && "runner failed" in message) { message }
    runner.close()

    // --- DemoViewModel: stop before anything came, and leaving the screen mid-generation
    FakeRuntime.pieces = listOf("A", "B", "C")
    FakeRuntime.log.clear()
    Thread.currentThread().name = "main"
    val model = DemoViewModel(Application())
    model.open(info.folder)
    waitIdle(model)
    check("bundle opened", model.state.value.bundle != null) { model.state.value.status }
    FakeRuntime.untilStopped = true
    model.generate("Hello", 10_000, 0f, chat = true, systemPrompt = "Be brief.")
    val until = System.currentTimeMillis() + 5_000
    while (model.state.value.output.length < 20 && System.currentTimeMillis() < until) Thread.sleep(2)
    check("generating", model.state.value.busy && model.state.value.output.isNotEmpty())
    model.stop()
    waitIdle(model)
    check("Stop ends a long generation", model.state.value.status == "stopped") { model.state.value.status }
    check("the chat turn is kept", model.state.value.history.size == 1 && model.state.value.history[0].first == "Hello")

    FakeRuntime.log.clear()
    model.generate("Again", 10_000, 0f, chat = true, systemPrompt = "")
    while (!FakeRuntime.log.any { it.startsWith("generate") }) Thread.sleep(2)
    check("the second turn sends the first one again", FakeRuntime.log.any { "User: Hello<|eot_id|>Assistant: " in it && "User: Again" in it }) { FakeRuntime.log.toString() }
    Thread.sleep(20)
    val cleared = runCatching { model.clear() }  // the screen goes away, on the main thread
    check("leaving the screen mid-generation does not throw", cleared.isSuccess) { cleared.exceptionOrNull().toString() }
    val closeBy = System.currentTimeMillis() + 5_000
    while (FakeRuntime.log.none { it.startsWith("close") } && System.currentTimeMillis() < closeBy) Thread.sleep(5)
    val log = FakeRuntime.log.toList()
    val closed = log.indexOfFirst { it.startsWith("close") }
    check("the module is closed, on the llm thread", closed >= 0 && log[closed] == "close on llm") { log.toString() }
    check("after the generation ended", log.indexOfFirst { it.startsWith("decode steps") } in 0 until closed) { log.toString() }
    FakeRuntime.untilStopped = false
    println("all checks passed")
}
