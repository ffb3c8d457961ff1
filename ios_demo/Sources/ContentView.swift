import SwiftUI

struct ContentView: View {
    @State private var model = DemoModel()
    @State private var prompt = "ROMEO:"
    @State private var maxNewTokens = 64
    @State private var temperature = 0.0
    @State private var chat = false
    @State private var systemPrompt = "You are a helpful assistant."

    var body: some View {
        NavigationStack {
            Form {
                Section("Bundles") {
                    if model.bundles.isEmpty {
                        Text("No bundle found. Copy a bundle folder into this app's Documents (Finder, iPhone, Files), then Rescan.")
                    }
                    ForEach(model.bundles, id: \.self) { folder in
                        Button(folder.lastPathComponent) { model.open(folder) }.disabled(model.busy)
                    }
                    Button("Rescan") { model.refresh() }.disabled(model.busy)
                }
                if let bundle = model.bundle {
                    Section(bundle.modelName) {
                        Text("\(String(format: "%.1f", Double(bundle.parameters) / 1e6)) M parameters, context \(bundle.maxSeqLen)")
                        ForEach(bundle.runnable, id: \.self) { artifact in
                            Button {
                                model.load(artifact)
                            } label: {
                                HStack {
                                    Text("\(artifact.target) \(artifact.weightFormat)")
                                    Spacer()
                                    Text("\(String(format: "%.1f", Double(artifact.bytes) / 1e6)) MB")
                                    if artifact == model.artifact { Image(systemName: "checkmark") }
                                }
                            }.disabled(model.busy)
                        }
                    }
                }
                Section("Generate") {
                    if model.bundle?.chatTemplate != nil {
                        Toggle("Chat (the bundle's chat template)", isOn: $chat).disabled(model.busy)
                        if chat {
                            TextField("System prompt", text: $systemPrompt, axis: .vertical)
                            ForEach(Array(model.history.enumerated()), id: \.offset) { _, turn in
                                VStack(alignment: .leading) {
                                    Text(turn.user).bold()
                                    Text(turn.reply)
                                }
                            }
                            Button("New chat") { model.newChat() }.disabled(model.busy)
                        }
                    }
                    TextField(chat ? "Message" : "Prompt", text: $prompt, axis: .vertical)
                    Stepper("New tokens: \(maxNewTokens)", value: $maxNewTokens, in: 1...1024, step: 16)
                    VStack(alignment: .leading) {
                        Text("Temperature: \(String(format: "%.2f", temperature))\(temperature == 0 ? " (greedy)" : "")")
                        Slider(value: $temperature, in: 0...1.5, step: 0.05)
                    }
                    HStack {
                        Button(chat ? "Send" : "Generate") {
                            model.generate(prompt: prompt, maxNewTokens: maxNewTokens, temperature: temperature, chat: chat, systemPrompt: systemPrompt)
                        }
                        Spacer()
                        Button("Benchmark") { model.runBenchmark() }
                        Spacer()
                        Button("Stop", role: .destructive) { model.stop() }.disabled(!model.busy)
                    }
                    .buttonStyle(.borderless)
                    .disabled(model.artifact == nil)
                    Text(model.status).foregroundStyle(.secondary)
                }
                if let f = model.last {
                    Section("Last run") {
                        Text("prompt \(f.promptTokens) tokens: \(format(f.prefillTokensPerSecond)) tokens/s prefill")
                        Text("\(f.newTokens) new tokens: \(format(f.decodeTokensPerSecond)) tokens/s decode")
                    }
                }
                if let r = model.benchmark, let first = r.runs.first {
                    Section("Benchmark, median of \(r.runs.count) runs") {
                        Text("\(first.promptTokens)-token prompt, \(DemoModel.benchmarkNewTokens) new tokens")
                        Text("prefill \(format(r.medianPrefillTokensPerSecond)) tokens/s").font(.headline)
                        Text("decode \(format(r.medianDecodeTokensPerSecond)) tokens/s").font(.headline)
                    }
                }
                if !model.output.isEmpty {
                    Section("Output") { Text(model.output).font(.system(.body, design: .monospaced)) }
                }
            }
            .navigationTitle("bitexport")
            // A newly opened bundle brings its defaults (manifest `generation`) and chat support.
            .onChange(of: model.bundle) { _, bundle in
                guard let bundle else { return }
                maxNewTokens = bundle.defaultMaxNewTokens
                temperature = bundle.defaultTemperature
                chat = bundle.chatTemplate != nil
            }
        }
    }

    private func format(_ x: Double) -> String { String(format: "%.1f", x) }
}
