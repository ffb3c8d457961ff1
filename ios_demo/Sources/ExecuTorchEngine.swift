import ExecuTorch
import Foundation
import Tokenizers

/// A .pte on ExecuTorch's `Module` (Swift package branch swiftpm-1.5.1, product `executorch`,
/// module ExecuTorch), driven by the token loop of Generation.swift.
///
/// Why not ExecuTorchLLM's `TextRunner`: its Objective-C bridge
/// (extension/llm/apple/ExecuTorchLLM/Exported/ExecuTorchLLMTextRunner.mm) turns each token's bytes
/// into `@(token.c_str())`, which is nil when a token ends inside a multi-byte UTF-8 character, so
/// Swift receives an empty piece and the character (both halves) vanishes from the text; and its
/// decode loop clears its stop flag when it starts (text_token_generator.h), so a stop during
/// prefill is lost. Driving the program ourselves gives the token ids: the text is decoded by
/// swift-transformers from the ids (TextStreamer holds back an incomplete character), the stop
/// flag is ours, and the prompt ids are exactly those of `bitexport run` (post-processor
/// included) or of the chat template.
///
/// The program follows ExecuTorch's LLM-runner contract (what TextRunner itself calls):
/// `forward(tokens int64 [1, n], start_pos int64 [1]) -> logits float [1, vocab]` with the KV
/// cache in the program's mutable buffers, so a generation starts at start_pos 0 and needs no reset.
/// API used (extension/apple/ExecuTorch/Exported/ExecuTorchModule.h, ExecuTorch+Module.swift,
/// ExecuTorch+Tensor.swift, ExecuTorch+Value.swift): `Module(filePath:loadMode:)`, `load(_:)`,
/// `forward(_: [ValueConvertible]) -> [Value]`, `Tensor<Int64>(_:shape:)`, `Value.tensor()`,
/// `Tensor.scalars()`. The LLM operators (KV cache, SDPA) come from the `kernels_llm` product,
/// XNNPACK from `backend_xnnpack`, tq2 from libbitexport_kernels.a (all force-loaded).
final class ExecuTorchEngine: TextEngine, @unchecked Sendable {
    let label: String
    private let module: Module
    private let bundle: BundleInfo
    private let tokenizer: Tokenizer

    init(bundle: BundleInfo, artifact: ArtifactInfo) throws {
        #if !BITEXPORT_KERNELS
        if artifact.needsBitexportKernels {
            throw BundleError(
                "\(artifact.url.lastPathComponent) stores its ternary layers as tq2, which needs the bitexport kernels: "
                + "run ios_demo/scripts/build_kernels_ios.sh and build the app again (or export with --weights int4)")
        }
        #endif
        self.bundle = bundle
        label = "ExecuTorch \(artifact.weightFormat)"
        // mmap, as ExecuTorch's LLM runners load programs: the default (.file) would read the whole
        // .pte into memory first.
        module = Module(filePath: artifact.url.path, loadMode: .mmap)
        try module.load("forward")
        tokenizer = try TokenizerLoader.load(bundle.tokenizer, bosTokenId: bundle.bosTokenId, eosTokenId: bundle.eosTokenIds.first)
    }

    func generate(_ request: GenerationRequest, stop: StopFlag, onText: @escaping (String) -> Void) throws -> RunFigures {
        let promptIds = try PromptEncoder.ids(request.prompt, bundle: bundle, tokenizer: tokenizer)
        return try TokenLoop.run(
            promptIds: promptIds, request: request, contextLength: bundle.maxSeqLen,
            stopIds: Set(bundle.eosTokenIds).union(bundle.stopTokenIds), tokenizer: tokenizer, stop: stop,
            step: { tokens, past in try self.logits(tokens, past: past) },
            onText: onText)
    }

    /// One call of forward: `tokens` at positions past ..< past + n; the last position's logits.
    private func logits(_ tokens: [Int], past: Int) throws -> [Float] {
        let input = Tensor<Int64>(tokens.map { Int64($0) }, shape: [1, tokens.count])
        let startPos = Tensor<Int64>([Int64(past)], shape: [1])
        let outputs: [Value] = try module.forward([input, startPos])
        guard let output: Tensor<Float> = outputs.first?.tensor() else {
            throw BundleError("forward returned no float logits; is this an LLM-runner .pte from bitexport?")
        }
        let all = output.scalars()
        let vocab = output.shape.last ?? all.count
        return Array(all[(all.count - vocab)...])
    }
}
