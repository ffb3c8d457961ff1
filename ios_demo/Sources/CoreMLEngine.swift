import CoreML
import Foundation
import Tokenizers

/// A stateful .mlpackage (iOS 18) on the token loop of Generation.swift.
///
/// The package's contract is export/bitexport/bundle/manifest.schema.json, $defs.coreml_interface and
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
    private let bundle: BundleInfo

    init(bundle: BundleInfo, artifact: ArtifactInfo, computeUnits: MLComputeUnits = .all) async throws {
        self.bundle = bundle
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        model = try MLModel(contentsOf: try await Self.compiled(artifact), configuration: configuration)
        let coremlMetadata = MetadataFields(
            values: model.modelDescription.metadata[MLModelMetadataKey.creatorDefinedKey] as? [String: String] ?? [:])
        // The tokenizer named by the metadata lies beside the package (bitexport.targets.coreml).
        let packageFolder = artifact.url.deletingLastPathComponent()
        let eos = try coremlMetadata.intList("bitexport.eos_token_ids")
        // The post-processor decides about BOS; the id only names the chat template's bos_token.
        let bos = try coremlMetadata.optInt("bitexport.bos_token_id")
        tokenizer = try TokenizerLoader.load(
            packageFolder.appendingPathComponent(try coremlMetadata.string("bitexport.tokenizer")),
            bosTokenId: bos, eosTokenId: eos.first)
        eosIds = Set(eos)
        contextLength = try coremlMetadata.int("bitexport.max_seq_len")
        maskType = model.modelDescription.inputDescriptionsByName["causal_mask"]?.multiArrayConstraint?.dataType ?? .float16
        label = "Core ML \(artifact.weightFormat)"
    }

    func generate(_ request: GenerationRequest, stop: StopFlag, onText: @escaping (String) -> Void) throws -> RunFigures {
        let promptIds = try PromptEncoder.ids(request.prompt, bundle: bundle, tokenizer: tokenizer)
        let state = model.makeState()  // a fresh KV cache per generation
        return try TokenLoop.run(
            promptIds: promptIds, request: request, contextLength: contextLength,
            stopIds: eosIds.union(bundle.stopTokenIds), tokenizer: tokenizer, stop: stop,
            step: { tokens, past in try self.logits(self.step(tokens, past: past, state: state)) },
            onText: onText)
    }

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
        guard let output = outputs.featureValue(for: "logits")?.multiArrayValue else {
            throw BundleError("the Core ML program has no `logits` output; export the bundle again")
        }
        return output
    }

    /// The last position's logits as Float (the output is fp32; fp16 is read too).
    private func logits(_ output: MLMultiArray) -> [Float] {
        let vocab = output.shape.last!.intValue
        let offset = output.count - vocab
        if output.dataType == .float16 {
            return output.withUnsafeBufferPointer(ofType: Float16.self) { ptr in (0..<vocab).map { Float(ptr[offset + $0]) } }
        }
        return output.withUnsafeBufferPointer(ofType: Float.self) { ptr in Array(ptr[offset..<(offset + vocab)]) }
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
/// tests/apps/test_app_contract.py against $defs.coreml_user_defined_metadata.
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
