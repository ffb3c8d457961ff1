import Foundation
import Hub
import Tokenizers

/// tokenizer.json through swift-transformers' `Tokenizers` (Hugging Face): its BPE model, pre-
/// tokenizer, decoder and post-processor, so prompts encode to the ids `bitexport run` gets from
/// the `tokenizers` library.
enum TokenizerLoader {
    static func load(_ url: URL) throws -> Tokenizer {
        let data = try Data(contentsOf: url)
        guard let json = try JSONSerialization.jsonObject(with: data) as? [NSString: Any] else {
            throw BundleError("\(url.lastPathComponent) is not a tokenizer.json object")
        }
        // A bundle ships tokenizer.json alone (no tokenizer_config.json). "PreTrainedTokenizer"
        // selects the plain BPE model (swift-transformers' TokenizerModel.knownTokenizers), which
        // is what the byte-level BPE tokenizers of BitNet models are.
        // API: AutoTokenizer.from(tokenizerConfig:tokenizerData:) and Config([NSString: Any]).
        let tokenizerConfig = Config(["tokenizer_class": "PreTrainedTokenizer"] as [NSString: Any])
        return try AutoTokenizer.from(tokenizerConfig: tokenizerConfig, tokenizerData: Config(json))
    }
}
