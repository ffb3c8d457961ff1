package org.bitexport.demo

import java.io.File
import org.json.JSONArray
import org.json.JSONObject

/**
 * Typed reads of manifest.json fields by path ("source.name", "artifacts[2].bytes").
 *
 * Every manifest field the app uses is read through `manifest.<type>("path")` with a literal path,
 * so tests/test_app_contract.py can list them and check each against export/manifest.schema.json
 * (the exporter's manifests are validated against the same schema).
 */
class JsonFields(private val root: JSONObject) {
    fun string(path: String): String = resolve(path) as? String ?: fail(path, "a string")

    fun int(path: String): Int = (resolve(path) as? Number)?.toInt() ?: fail(path, "an integer")

    fun long(path: String): Long = (resolve(path) as? Number)?.toLong() ?: fail(path, "an integer")

    fun optBool(path: String, default: Boolean): Boolean = resolve(path) as? Boolean ?: default

    fun count(path: String): Int = (resolve(path) as? JSONArray)?.length() ?: fail(path, "an array")

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
) {
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
