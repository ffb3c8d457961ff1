import Foundation
import Hub
import Tokenizers

/// tokenizer.json through swift-transformers' `Tokenizers` (Hugging Face): its BPE model, pre-
/// tokenizer, decoder and post-processor, so prompts encode to the ids `bitexport run` gets from
/// the `tokenizers` library. `Config` comes from the `Hub` module: project.yml declares both
/// products (Hub and Tokenizers), and tests/apps/test_app_contract.py checks that every import is declared.
enum TokenizerLoader {
    /// `bosTokenId` / `eosTokenId` (the manifest's) name the tokens a chat template's `bos_token`
    /// and `eos_token` stand for; their text is looked up in tokenizer.json's added_tokens.
    static func load(_ url: URL, bosTokenId: Int? = nil, eosTokenId: Int? = nil) throws -> Tokenizer {
        let data = try Data(contentsOf: url)
        guard let json = try JSONSerialization.jsonObject(with: data) as? [NSString: Any] else {
            throw BundleError("\(url.lastPathComponent) is not a tokenizer.json object")
        }
        // A bundle ships tokenizer.json alone (no tokenizer_config.json). "PreTrainedTokenizer"
        // selects the plain BPE model (swift-transformers' TokenizerModel.knownTokenizers), which
        // is what the byte-level BPE tokenizers of BitNet models are. bos_token / eos_token are what
        // applyChatTemplate puts into the template's context (swift-transformers Tokenizer.swift,
        // specialTokenAttributes).
        // API: AutoTokenizer.from(tokenizerConfig:tokenizerData:) and Config([NSString: Any]).
        var config: [NSString: Any] = ["tokenizer_class": "PreTrainedTokenizer"]
        let added = (json["added_tokens"] as? [[String: Any]]) ?? []
        func content(_ id: Int?) -> String? {
            guard let id else { return nil }
            return added.first { ($0["id"] as? Int) == id }?["content"] as? String
        }
        if let bos = content(bosTokenId) { config["bos_token"] = bos }
        if let eos = content(eosTokenId) { config["eos_token"] = eos }
        return try AutoTokenizer.from(tokenizerConfig: Config(config), tokenizerData: Config(json))
    }
}
