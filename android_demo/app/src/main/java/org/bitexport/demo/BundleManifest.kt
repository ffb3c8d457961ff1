package org.bitexport.demo

import android.util.JsonReader
import java.io.File
import org.json.JSONArray
import org.json.JSONObject

/**
 * Typed reads of manifest.json fields by path ("source.name", "artifacts[2].bytes").
 *
 * Every manifest field the app uses is read through `manifest.<type>("path")` with a literal path,
 * so tests/apps/test_app_contract.py can list them and check each against export/bitexport/bundle/manifest.schema.json
 * (the exporter's manifests are validated against the same schema).
 */
class JsonFields(private val root: JSONObject) {
    fun string(path: String): String = resolve(path) as? String ?: fail(path, "a string")

    fun int(path: String): Int = (resolve(path) as? Number)?.toInt() ?: fail(path, "an integer")

    fun long(path: String): Long = (resolve(path) as? Number)?.toLong() ?: fail(path, "an integer")

    fun optBool(path: String, default: Boolean): Boolean = resolve(path) as? Boolean ?: default

    fun count(path: String): Int = (resolve(path) as? JSONArray)?.length() ?: fail(path, "an array")

    /** Optional fields (absent or null: null); present with another type: an error. */
    fun optString(path: String): String? = resolve(path)?.let { it as? String ?: fail(path, "a string") }

    fun optDouble(path: String): Double? = resolve(path)?.let { (it as? Number)?.toDouble() ?: fail(path, "a number") }

    fun optInt(path: String): Int? = resolve(path)?.let { (it as? Number)?.toInt() ?: fail(path, "an integer") }

    fun optIntList(path: String): List<Int>? = resolve(path)?.let { value ->
        val array = value as? JSONArray ?: fail(path, "an array of integers")
        (0 until array.length()).map { (array.opt(it) as? Number)?.toInt() ?: fail(path, "an array of integers") }
    }

    private fun resolve(path: String): Any? {
        var node: Any? = root
        for (part in path.split('.')) {
            val name = part.substringBefore('[')
            node = (node as? JSONObject)?.opt(name)
            if (part.endsWith(']')) {
                val index = part.substringAfter('[').dropLast(1).toInt()
                node = (node as? JSONArray)?.opt(index)
            }
        }
        return if (node == JSONObject.NULL) null else node
    }

    private fun fail(path: String, what: String): Nothing =
        throw BundleException("manifest.json: $path is missing or not $what; export the bundle again with bitexport")
}

class BundleException(message: String) : Exception(message)

/** One runnable artifact of a bundle, as the manifest lists it. */
data class ArtifactInfo(val file: File, val target: String, val weightFormat: String, val bytes: Long) {
    /** tq2 layers call bitexport::tq2_linear, which only an AAR with the bitexport kernels has. */
    val needsBitexportKernels: Boolean get() = target == "executorch" && weightFormat == "tq2"
}

/**
 * A chat template pre-rendered by the exporter into plain strings (manifest `chat_format`), for
 * runtimes without a Jinja engine. Each turn string holds one `{content}`; none holds the BOS token
 * (the runner adds BOS through num_bos, as for a plain prompt). The same approach as ExecuTorch's
 * own Android demo (executorch-examples llm/android/LlamaDemo PromptFormat.kt), but read from the
 * bundle instead of being written into the app per model family.
 */
data class ChatFormat(
    val prefix: String,
    val system: String,
    val user: String,
    val assistant: String,
    val generationPrompt: String,
) {
    /**
     * The prompt of a conversation: the system turn (if any), the finished turns, the new user turn,
     * the reply's opening. Contents are trimmed, as the common templates do (`| trim`).
     * tests/apps/test_app_contract.py (render_chat_format) checks this rule against Jinja renderings.
     */
    fun render(systemPrompt: String, history: List<Pair<String, String>>, userMessage: String): String = buildString {
        append(prefix)
        if (systemPrompt.isNotBlank()) append(fill(system, systemPrompt))
        for ((userText, reply) in history) {
            append(fill(user, userText))
            append(fill(assistant, reply))
        }
        append(fill(user, userMessage))
        append(generationPrompt)
    }

    private fun fill(turn: String, content: String): String = turn.replace(PLACEHOLDER, content.trim())

    companion object {
        const val PLACEHOLDER = "{content}"
    }
}

/** What the app needs from a bundle folder (`bitexport export --target android`). */
data class BundleInfo(
    val folder: File,
    val modelName: String,
    val parameters: Long,
    val exportTarget: String,
    val tokenizer: File,
    val addsBos: Boolean,
    val maxSeqLen: Int,
    val artifacts: List<ArtifactInfo>,
    /** Present when the bundle carries a chat template: the app then offers chat. */
    val chat: ChatFormat? = null,
    /** Tokens that end a chat reply besides the program's EOS ids (manifest `stop_token_ids`). */
    val stopTokenIds: List<Int> = emptyList(),
    /** Defaults for the settings (manifest `generation`); 0 = greedy, as `bitexport run`. */
    val defaultTemperature: Float = 0.0f,
    val defaultMaxNewTokens: Int = 64,
) {
    /** The BOS count LlmModule's constructor takes (the runtime ignores it anywhere else). */
    val numBos: Int get() = if (addsBos) 1 else 0

    /**
     * The text of each stop token, as the runner's tokenizer decodes it (their `content` in
     * tokenizer.json's added_tokens): LlmCallback gets text, not ids. Streams the file and stops
     * after added_tokens (the first key of tokenizer.json files), so a large vocabulary is not parsed.
     */
    fun stopTokenTexts(): Set<String> {
        if (stopTokenIds.isEmpty()) return emptySet()
        val wanted = stopTokenIds.toSet()
        val found = mutableSetOf<String>()
        JsonReader(tokenizer.bufferedReader()).use { reader ->
            reader.beginObject()
            while (reader.hasNext()) {
                if (reader.nextName() != "added_tokens") {
                    reader.skipValue()
                    continue
                }
                reader.beginArray()
                while (reader.hasNext()) {
                    var id = -1
                    var content: String? = null
                    reader.beginObject()
                    while (reader.hasNext()) {
                        when (reader.nextName()) {
                            "id" -> id = reader.nextInt()
                            "content" -> content = reader.nextString()
                            else -> reader.skipValue()
                        }
                    }
                    reader.endObject()
                    if (id in wanted && content != null) found += content
                }
                break
            }
        }
        if (found.size < wanted.size) {
            throw BundleException("${tokenizer.name}: stop_token_ids $stopTokenIds are not all special tokens of the tokenizer")
        }
        return found
    }

    /** The ExecuTorch program this app runs (an android bundle holds exactly one). */
    val pte: ArtifactInfo?
        get() = artifacts.firstOrNull { it.target == "executorch" }

    companion object {
        const val FORMAT = "bitexport-bundle"
        const val FORMAT_VERSION = 1

        fun read(folder: File): BundleInfo {
            val file = File(folder, "manifest.json")
            if (!file.isFile) throw BundleException("${folder.path}: no manifest.json; push a bundle written by `bitexport export`")
            val manifest = JsonFields(JSONObject(file.readText()))
            if (manifest.string("format") != FORMAT) throw BundleException("${file.path}: not a bitexport manifest")
            val version = manifest.int("format_version")
            if (version != FORMAT_VERSION) {
                throw BundleException("${file.path}: bundle format $version, this app reads $FORMAT_VERSION; export it again")
            }
            val artifacts = (0 until manifest.count("artifacts")).map { i ->
                ArtifactInfo(
                    file = File(folder, manifest.string("artifacts[$i].path")),
                    target = manifest.string("artifacts[$i].target"),
                    weightFormat = manifest.string("artifacts[$i].weight_format"),
                    bytes = manifest.long("artifacts[$i].bytes"),
                )
            }
            return BundleInfo(
                folder = folder,
                modelName = manifest.string("source.name"),
                parameters = manifest.long("source.parameters.total"),
                exportTarget = manifest.string("target"),
                tokenizer = File(folder, manifest.string("tokenizer.path")),
                // Bundles written before the field existed: the ExecuTorch runner's default (no BOS).
                addsBos = manifest.optBool("tokenizer.adds_bos", false),
                maxSeqLen = manifest.int("max_seq_len"),
                artifacts = artifacts,
                chat = readChat(manifest),
                stopTokenIds = manifest.optIntList("stop_token_ids") ?: emptyList(),
                defaultTemperature = (manifest.optDouble("generation.temperature") ?: 0.0).toFloat(),
                defaultMaxNewTokens = manifest.optInt("generation.max_new_tokens") ?: 64,
            )
        }

        /** Optional `chat_format` (see ChatFormat); absent: the app does plain completion only. */
        private fun readChat(manifest: JsonFields): ChatFormat? {
            val user = manifest.optString("chat_format.user") ?: return null
            return ChatFormat(
                prefix = manifest.optString("chat_format.prefix") ?: "",
                system = manifest.optString("chat_format.system") ?: "",
                user = user,
                assistant = manifest.optString("chat_format.assistant") ?: ChatFormat.PLACEHOLDER,
                generationPrompt = manifest.optString("chat_format.generation_prompt") ?: "",
            )
        }

        /**
         * Folders holding a manifest.json under the places `adb push` can reach:
         * /data/local/tmp/bitexport/<name> (the documented one) and the app's external files
         * folder (/sdcard/Android/data/org.bitexport.demo/files/bundles/<name>).
         */
        fun discover(roots: List<File>): List<File> =
            roots.flatMap { root -> root.listFiles()?.filter { File(it, "manifest.json").isFile } ?: emptyList() }
                .sortedBy { it.name }
    }
}
