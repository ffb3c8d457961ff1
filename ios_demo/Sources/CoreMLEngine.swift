import CoreML
import Foundation
import Tokenizers

/// A stateful .mlpackage (iOS 18) with a greedy generation loop of our own.
///
/// The package's contract is export/manifest.schema.json, $defs.coreml_interface and
/// $defs.coreml_user_defined_metadata: inputs `input_ids` (int32 [1, n]) and `causal_mask`
/// (fp16 [1, 1, n, past + n], additive), states `key_cache` / `value_cache`, output `logits`
/// (fp32 [1, V] of the last position); the tokenizer, EOS ids and cache length ride in the
/// metadata (bitexport.targets.coreml writes both).
///
/// Core ML API used: `MLModel.compileModel(at:)` (async), `MLModel(contentsOf:configuration:)`,
/// `modelDescription.metadata[.creatorDefinedKey]`, `makeState()` and
/// `prediction(from:using:options:)` (iOS 18: the state carries the KV cache between calls),
/// `MLMultiArray.withUnsafeMutableBufferPointer(ofType:)`.
final class CoreMLEngine: TextEngine, @unchecked Sendable {
    let label: String
    private let model: MLModel
    private let tokenizer: Tokenizer
    private let eosIds: Set<Int>
    private let contextLength: Int
    private let maskType: MLMultiArrayDataType
    private let stopFlag = StopFlag()

    init(bundle: BundleInfo, artifact: ArtifactInfo, computeUnits: MLComputeUnits = .all) async throws {
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        model = try MLModel(contentsOf: try await Self.compiled(artifact), configuration: configuration)
        let coremlMetadata = MetadataFields(
            values: model.modelDescription.metadata[MLModelMetadataKey.creatorDefinedKey] as? [String: String] ?? [:])
        // The tokenizer named by the metadata lies beside the package (bitexport.targets.coreml).
        let packageFolder = artifact.url.deletingLastPathComponent()
        tokenizer = try TokenizerLoader.load(packageFolder.appendingPathComponent(try coremlMetadata.string("bitexport.tokenizer")))
        eosIds = Set(try coremlMetadata.intList("bitexport.eos_token_ids"))
        contextLength = try coremlMetadata.int("bitexport.max_seq_len")
        _ = try coremlMetadata.optInt("bitexport.bos_token_id")  // validated only: the post-processor decides about BOS
        maskType = model.modelDescription.inputDescriptionsByName["causal_mask"]?.multiArrayConstraint?.dataType ?? .float16
        label = "Core ML \(artifact.weightFormat)"
    }

    func generate(prompt: String, maxNewTokens: Int, onPiece: @escaping (String) -> Void) throws -> RunFigures {
        stopFlag.reset()
        // The tokenizer's post-processor decides about BOS, exactly as in `bitexport run`.
        let promptIds = tokenizer.encode(text: prompt)
        let budget = min(maxNewTokens, contextLength - promptIds.count)
        guard budget > 0 else { throw BundleError("the prompt fills the \(contextLength)-token context") }
        let state = model.makeState()
        var clock = GenerationClock()
        var token = try argmax(step(promptIds, past: 0, state: state))
        clock.tokenOut()
        var out = [token]
        var shown = emit(out, shown: "", onPiece)
        var position = promptIds.count
        while out.count < budget, !eosIds.contains(token), !stopFlag.isRaised {
            token = try argmax(step([token], past: position, state: state))
            out.append(token)
            position += 1
            shown = emit(out, shown: shown, onPiece)
        }
        return clock.figures(promptTokens: promptIds.count, newTokens: out.count)
    }

    func stop() { stopFlag.raise() }

    /// One call of the program: `tokens` at positions past ..< past + n, cache in `state`.
    private func step(_ tokens: [Int], past: Int, state: MLState) throws -> MLMultiArray {
        let n = tokens.count
        let end = past + n
        let inputIds = try MLMultiArray(shape: [1, NSNumber(value: n)], dataType: .int32)
        inputIds.withUnsafeMutableBufferPointer(ofType: Int32.self) { ptr, _ in
            for (i, t) in tokens.enumerated() { ptr[i] = Int32(t) }
        }
        let mask = try MLMultiArray(shape: [1, 1, NSNumber(value: n), NSNumber(value: end)], dataType: maskType)
        // Query i (absolute position past + i) sees keys 0 ... past + i.
        func fill<T: BinaryFloatingPoint & MLShapedArrayScalar>(_ type: T.Type) {
            mask.withUnsafeMutableBufferPointer(ofType: T.self) { ptr, strides in
                let row = strides[2]
                for i in 0..<n {
                    for j in 0..<end { ptr[i * row + j] = j <= past + i ? 0 : -T.infinity }
                }
            }
        }
        if maskType == .float16 { fill(Float16.self) } else { fill(Float.self) }
        let inputs = try MLDictionaryFeatureProvider(dictionary: [
            "input_ids": MLFeatureValue(multiArray: inputIds),
            "causal_mask": MLFeatureValue(multiArray: mask),
        ])
        let outputs = try model.prediction(from: inputs, using: state, options: MLPredictionOptions())
        guard let logits = outputs.featureValue(for: "logits")?.multiArrayValue else {
            throw BundleError("the Core ML program has no `logits` output; export the bundle again")
        }
        return logits
    }

    /// Index of the largest logit of the last position (ties: the first, like torch.argmax).
    private func argmax(_ logits: MLMultiArray) -> Int {
        let vocab = logits.shape.last!.intValue
        let offset = logits.count - vocab
        func best<T: BinaryFloatingPoint & MLShapedArrayScalar>(_ type: T.Type) -> Int {
            logits.withUnsafeBufferPointer(ofType: T.self) { ptr in
                var index = 0
                var value = ptr[offset]
                for v in 1..<vocab where ptr[offset + v] > value {
                    value = ptr[offset + v]
                    index = v
                }
                return index
            }
        }
        return logits.dataType == .float16 ? best(Float16.self) : best(Float.self)
    }

    /// Streams the text of the tokens so far: the decoded whole, minus what was shown already
    /// (a token can end inside a multi-byte character, so pieces are cut from the whole).
    private func emit(_ tokens: [Int], shown: String, _ onPiece: (String) -> Void) -> String {
        let text = tokenizer.decode(tokens: tokens, skipSpecialTokens: true)
        if text.hasPrefix(shown), text.count > shown.count { onPiece(String(text.dropFirst(shown.count))) }
        return text
    }

    /// An .mlpackage must be compiled on the device; the compiled model is kept in Caches under
    /// the package's sha256 from the manifest, so the next launch skips the compile.
    private static func compiled(_ artifact: ArtifactInfo) async throws -> URL {
        let caches = try FileManager.default.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let target = caches.appendingPathComponent("\(artifact.sha256).mlmodelc")
        if FileManager.default.fileExists(atPath: target.path) { return target }
        let temporary = try await MLModel.compileModel(at: artifact.url)
        try FileManager.default.moveItem(at: temporary, to: target)
        return target
    }
}

/// Typed reads of the package's user-defined metadata (all values are strings in Core ML). Every
/// key the app reads goes through `coremlMetadata.<type>("key")`, checked by
/// tests/test_app_contract.py against $defs.coreml_user_defined_metadata.
struct MetadataFields {
    let values: [String: String]

    func string(_ key: String) throws -> String {
        guard let value = values[key], !value.isEmpty else { throw missing(key) }
        return value
    }

    func int(_ key: String) throws -> Int {
        guard let value = Int(try string(key)) else { throw missing(key) }
        return value
    }

    func optInt(_ key: String) throws -> Int? {
        guard let raw = values[key] else { throw missing(key) }
        if raw.isEmpty { return nil }
        guard let value = Int(raw) else { throw missing(key) }
        return value
    }

    func intList(_ key: String) throws -> [Int] {
        guard let raw = values[key] else { throw missing(key) }
        return try raw.split(separator: ",").map { part in
            guard let value = Int(part) else { throw missing(key) }
            return value
        }
    }

    private func missing(_ key: String) -> BundleError {
        BundleError("the Core ML package's metadata lacks a valid \(key); export the bundle again with bitexport")
    }
}
