import Foundation

struct BundleError: LocalizedError {
    let message: String
    init(_ message: String) { self.message = message }
    var errorDescription: String? { message }
}

/// Typed reads of manifest.json fields by path ("source.name", "artifacts[2].bytes").
///
/// Every manifest field the app uses is read through `manifest.<type>("path")` with a literal
/// path, so tests/apps/test_app_contract.py can list them and check each against
/// export/bitexport/bundle/manifest.schema.json (the exporter's manifests are validated against the same schema).
struct JSONFields {
    let root: Any

    func string(_ path: String) throws -> String {
        guard let value = resolve(path) as? String else { throw missing(path, "a string") }
        return value
    }

    func int(_ path: String) throws -> Int {
        guard let value = resolve(path) as? NSNumber, !isBool(value) else { throw missing(path, "an integer") }
        return value.intValue
    }

    func optBool(_ path: String, default fallback: Bool) -> Bool {
        guard let value = resolve(path) as? NSNumber, isBool(value) else { return fallback }
        return value.boolValue
    }

    func count(_ path: String) throws -> Int {
        guard let value = resolve(path) as? [Any] else { throw missing(path, "an array") }
        return value.count
    }

    func intList(_ path: String) throws -> [Int] {
        guard let value = try optIntList(path) else { throw missing(path, "an array of integers") }
        return value
    }

    // Optional fields: absent or null gives nil; present with another type is an error.

    func optInt(_ path: String) throws -> Int? {
        guard let raw = resolve(path) else { return nil }
        guard let value = raw as? NSNumber, !isBool(value) else { throw missing(path, "an integer") }
        return value.intValue
    }

    func optDouble(_ path: String) throws -> Double? {
        guard let raw = resolve(path) else { return nil }
        guard let value = raw as? NSNumber, !isBool(value) else { throw missing(path, "a number") }
        return value.doubleValue
    }

    func optString(_ path: String) throws -> String? {
        guard let raw = resolve(path) else { return nil }
        guard let value = raw as? String else { throw missing(path, "a string") }
        return value
    }

    func optIntList(_ path: String) throws -> [Int]? {
        guard let raw = resolve(path) else { return nil }
        guard let array = raw as? [Any] else { throw missing(path, "an array of integers") }
        return try array.map { item in
            guard let n = item as? NSNumber, !isBool(n) else { throw missing(path, "an array of integers") }
            return n.intValue
        }
    }

    private func resolve(_ path: String) -> Any? {
        var node: Any? = root
        for part in path.split(separator: ".") {
            let name = part.split(separator: "[", maxSplits: 1).first.map(String.init) ?? String(part)
            node = (node as? [String: Any])?[name]
            if part.hasSuffix("]"), let open = part.firstIndex(of: "["),
               let index = Int(part[part.index(after: open)..<part.index(before: part.endIndex)]) {
                let array = node as? [Any]
                node = array.flatMap { index < $0.count ? $0[index] : nil }
            }
        }
        return node is NSNull ? nil : node
    }

    private func isBool(_ n: NSNumber) -> Bool { CFGetTypeID(n) == CFBooleanGetTypeID() }

    private func missing(_ path: String, _ what: String) -> BundleError {
        BundleError("manifest.json: \(path) is missing or not \(what); export the bundle again with bitexport")
    }
}

/// One runnable artifact of a bundle, as the manifest lists it.
struct ArtifactInfo: Hashable {
    let url: URL
    let target: String        // "executorch" | "coreml" | "onnx"
    let weightFormat: String
    let bytes: Int
    let sha256: String

    /// tq2 layers call bitexport::tq2_linear, which only an app linked with the kernels has.
    var needsBitexportKernels: Bool { target == "executorch" && weightFormat == "tq2" }
}

/// What the app needs from a bundle folder (`bitexport export --target ios`).
struct BundleInfo: Hashable {
    static let format = "bitexport-bundle"
    static let formatVersion = 1

    let folder: URL
    let modelName: String
    let parameters: Int
    let exportTarget: String
    let tokenizer: URL
    let addsBos: Bool
    let maxSeqLen: Int
    let artifacts: [ArtifactInfo]
    let bosTokenId: Int?
    let eosTokenIds: [Int]
    /// The Jinja chat template (manifest `chat_template`, as in tokenizer_config.json); nil: plain completion only.
    let chatTemplate: String?
    /// Tokens that end a chat reply besides EOS (manifest `stop_token_ids`).
    let stopTokenIds: [Int]
    /// Defaults of the Generate settings (manifest `generation`); temperature 0 = greedy, as `bitexport run`.
    let defaultTemperature: Double
    let defaultMaxNewTokens: Int

    /// The artifacts this app can run: the ExecuTorch program and the Core ML package.
    var runnable: [ArtifactInfo] { artifacts.filter { $0.target == "executorch" || $0.target == "coreml" } }

    static func read(_ folder: URL) throws -> BundleInfo {
        let file = folder.appendingPathComponent("manifest.json")
        guard let data = try? Data(contentsOf: file) else {
            throw BundleError("\(folder.lastPathComponent): no manifest.json; copy a whole bundle written by `bitexport export`")
        }
        let manifest = JSONFields(root: try JSONSerialization.jsonObject(with: data))
        guard try manifest.string("format") == format else { throw BundleError("\(file.path): not a bitexport manifest") }
        let version = try manifest.int("format_version")
        guard version == formatVersion else {
            throw BundleError("\(file.path): bundle format \(version), this app reads \(formatVersion); export it again")
        }
        let artifacts = try (0..<manifest.count("artifacts")).map { i in
            ArtifactInfo(
                url: folder.appendingPathComponent(try manifest.string("artifacts[\(i)].path")),
                target: try manifest.string("artifacts[\(i)].target"),
                weightFormat: try manifest.string("artifacts[\(i)].weight_format"),
                bytes: try manifest.int("artifacts[\(i)].bytes"),
                sha256: try manifest.string("artifacts[\(i)].sha256")
            )
        }
        return BundleInfo(
            folder: folder,
            modelName: try manifest.string("source.name"),
            parameters: try manifest.int("source.parameters.total"),
            exportTarget: try manifest.string("target"),
            tokenizer: folder.appendingPathComponent(try manifest.string("tokenizer.path")),
            // Bundles written before the field existed: no BOS (checked against the tokenizer's output).
            addsBos: manifest.optBool("tokenizer.adds_bos", default: false),
            maxSeqLen: try manifest.int("max_seq_len"),
            artifacts: artifacts,
            bosTokenId: try manifest.optInt("bos_token_id"),
            eosTokenIds: try manifest.intList("eos_token_ids"),
            chatTemplate: try manifest.optString("chat_template"),
            stopTokenIds: try manifest.optIntList("stop_token_ids") ?? [],
            defaultTemperature: try manifest.optDouble("generation.temperature") ?? 0,
            defaultMaxNewTokens: try manifest.optInt("generation.max_new_tokens") ?? 64
        )
    }

    /// Bundle folders (with a manifest.json) in the app's Documents (Finder / Files app) and in
    /// the Bundles folder shipped inside the app.
    static func discover() -> [URL] {
        var roots: [URL] = []
        if let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask).first { roots.append(documents) }
        if let shipped = Bundle.main.url(forResource: "Bundles", withExtension: nil) { roots.append(shipped) }
        return roots.flatMap { root in
            ((try? FileManager.default.contentsOfDirectory(at: root, includingPropertiesForKeys: nil)) ?? [])
                .filter { FileManager.default.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
        }.sorted { $0.lastPathComponent < $1.lastPathComponent }
    }
}
