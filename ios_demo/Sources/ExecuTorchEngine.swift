import ExecuTorchLLM
import Foundation
import Tokenizers

/// A .pte on ExecuTorch's LLM runner, through the ExecuTorchLLM Swift package (SwiftPM branch
/// swiftpm-1.5.1, product executorch_llm).
///
/// API used (executorch extension/llm/apple/ExecuTorchLLM/Exported/ExecuTorchLLMTextRunner.h and
/// ExecuTorchLLMConfig.h, Swift names from their NS_SWIFT_NAME):
/// - `TextRunner(modelPath:tokenizerPath:)`, `load()` (throws), `reset()` (empties the KV cache:
///   without it a generate continues the previous one), `stop()`;
/// - `generate(_:_:tokenCallback:)` (throws) with `Config { ... }`: `isEchoEnabled`,
///   `maximumNewTokens`, `sequenceLength` (total, prompt + new), `temperature` (0: greedy),
///   `bosCount` (ExecuTorch's HF tokenizer never applies tokenizer.json's post-processor, so the
///   BOS the desktop's tokenizer adds is asked for here), `eosCount`.
/// The callback gets one decoded piece per token: the prefill's token first, then one per decode
/// step (TextLLMRunner::generate). TextRunner reports no statistics to Swift, so the timing is
/// taken around the callbacks, the way GenerationClock defines it.
final class ExecuTorchEngine: TextEngine, @unchecked Sendable {
    let label: String
    private let runner: TextRunner
    private let bundle: BundleInfo
    // Only counts prompt tokens for the figures; the runner tokenizes with its own HF tokenizer.
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
        runner = TextRunner(modelPath: artifact.url.path, tokenizerPath: bundle.tokenizer.path)
        try runner.load()
        tokenizer = try TokenizerLoader.load(bundle.tokenizer)
    }

    func generate(prompt: String, maxNewTokens: Int, onPiece: @escaping (String) -> Void) throws -> RunFigures {
        runner.reset()
        let bos = bundle.addsBos ? 1 : 0
        let promptTokens = tokenizer.encode(text: prompt, addSpecialTokens: false).count + bos
        let config = ExecuTorchLLM.Config {
            $0.isEchoEnabled = false
            $0.maximumNewTokens = maxNewTokens
            $0.sequenceLength = bundle.maxSeqLen
            $0.temperature = 0
            $0.bosCount = bos
            $0.eosCount = 0
        }
        var clock = GenerationClock()
        var newTokens = 0
        try runner.generate(prompt, config) { piece in
            clock.tokenOut()
            newTokens += 1
            onPiece(piece)
        }
        return clock.figures(promptTokens: promptTokens, newTokens: newTokens)
    }

    func stop() { runner.stop() }
}
