import Foundation
import Tokenizers

/// What the user asked for: a plain completion of a prompt, or a chat turn rendered with the
/// bundle's chat template.
enum PromptInput {
    case plain(String)
    case chat(system: String, history: [(user: String, reply: String)], message: String)
}

/// One generation: the prompt, and the settings of the Generate section.
struct GenerationRequest {
    let prompt: PromptInput
    let maxNewTokens: Int
    /// 0: greedy argmax (what `bitexport run` does); above 0: sampling from softmax(logits / T).
    let temperature: Float
}

/// Prompt ids, exactly as the desktop makes them.
///
/// Plain prompts go through tokenizer.json's post-processor (`encode(text:)`), as `bitexport run`
/// does; the manifest's `tokenizer.adds_bos` must agree with what it did, which catches a
/// swift-transformers tokenizer that reads the file differently from Hugging Face's `tokenizers`.
/// Chat turns go through swift-transformers' `applyChatTemplate` with the bundle's Jinja
/// `chat_template` (the template writes its own BOS, as transformers' apply_chat_template does).
enum PromptEncoder {
    static func ids(_ input: PromptInput, bundle: BundleInfo, tokenizer: Tokenizer) throws -> [Int] {
        switch input {
        case .plain(let text):
            let ids = tokenizer.encode(text: text)
            let bare = tokenizer.encode(text: text, addSpecialTokens: false)
            let prepended = ids.count > bare.count && ids.first != bare.first
            guard prepended == bundle.addsBos else {
                throw BundleError("the tokenizer \(bundle.addsBos ? "did not add" : "added") BOS, unlike `bitexport run` (manifest tokenizer.adds_bos); export the bundle again")
            }
            return ids
        case .chat(let system, let history, let message):
            guard let template = bundle.chatTemplate else { throw BundleError("this bundle has no chat template") }
            var messages: [Message] = []
            if !system.isEmpty { messages.append(["role": "system", "content": system]) }
            for turn in history {
                messages.append(["role": "user", "content": turn.user])
                messages.append(["role": "assistant", "content": turn.reply])
            }
            messages.append(["role": "user", "content": message])
            // add_generation_prompt is true in this overload (swift-transformers Tokenizer.swift).
            return try tokenizer.applyChatTemplate(messages: messages, chatTemplate: template)
        }
    }
}

/// The token loop both engines share: the prompt in one call, then one token per call, with the
/// KV cache kept by the model (ExecuTorch's mutable buffers, Core ML's state). It follows
/// ExecuTorch's TextLLMRunner::generate and TextTokenGenerator::generate
/// (extension/llm/runner/text_llm_runner.cpp, text_token_generator.h): prefill yields the first
/// token, each decode step feeds the last token at the next position, generation ends at an EOS or
/// stop token, at the token budget, or at the end of the cache. Unlike that loop it never clears
/// the stop flag (the flag is made per job by DemoModel, before the job is queued), so a stop
/// during prefill, or before the job started, is not lost.
enum TokenLoop {
    static func run(
        promptIds: [Int],
        request: GenerationRequest,
        contextLength: Int,
        stopIds: Set<Int>,
        tokenizer: Tokenizer,
        stop: StopFlag,
        step: (_ tokens: [Int], _ past: Int) throws -> [Float],
        onText: (String) -> Void
    ) throws -> RunFigures {
        guard !promptIds.isEmpty else { throw BundleError("the prompt is empty") }
        let budget = min(request.maxNewTokens, contextLength - promptIds.count)
        guard budget > 0 else { throw BundleError("the prompt fills the \(contextLength)-token context") }
        var sampler = Sampler(temperature: request.temperature)
        var streamer = TextStreamer(tokenizer: tokenizer)
        var clock = GenerationClock()
        var token = sampler.next(try step(promptIds, 0))
        clock.tokenOut()
        var generated = 1
        var position = promptIds.count
        while !stopIds.contains(token) {
            streamer.append(token, onText)
            if generated >= budget || stop.isRaised { break }
            token = sampler.next(try step([token], position))
            generated += 1
            position += 1
        }
        return clock.figures(promptTokens: promptIds.count, newTokens: generated)
    }
}

/// Greedy argmax at temperature 0 (ties: the first, like torch.argmax), else a draw from
/// softmax(logits / temperature).
struct Sampler {
    let temperature: Float
    private var generator = SystemRandomNumberGenerator()

    init(temperature: Float) { self.temperature = temperature }

    mutating func next(_ logits: [Float]) -> Int {
        var best = 0
        for i in 1..<logits.count where logits[i] > logits[best] { best = i }
        guard temperature > 0 else { return best }
        let top = logits[best]
        let weights = logits.map { Double(expf(($0 - top) / temperature)) }
        let total = weights.reduce(0, +)
        var draw = Double.random(in: 0..<total, using: &generator)
        for i in weights.indices {
            draw -= weights[i]
            if draw < 0 { return i }
        }
        return best
    }
}

/// The reply's text as it grows. A token can end inside a multi-byte UTF-8 character; decoding
/// the tokens so far then ends in U+FFFD, which is held back until the next token completes the
/// character (the same buffering as ExecuTorch's Android JNI layer, which waits for valid UTF-8).
/// The whole reply is decoded each time and handed over whole, so a piece is never lost or cut.
struct TextStreamer {
    let tokenizer: Tokenizer
    private var tokens: [Int] = []
    private var shown = ""

    init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    mutating func append(_ token: Int, _ onText: (String) -> Void) {
        tokens.append(token)
        var text = tokenizer.decode(tokens: tokens, skipSpecialTokens: true)
        while text.hasSuffix("\u{FFFD}") { text.removeLast() }
        if text != shown {
            shown = text
            onText(text)
        }
    }
}
