import Foundation
import Observation

// Engines are not thread-safe: every call into one runs on this queue.
private let engineQueue = DispatchQueue(label: "llm", qos: .userInitiated)

/// The app's state and actions; engines run on one background queue, the UI reads this.
@MainActor
@Observable
final class DemoModel {
    static let benchmarkPrompt =
        "The quick brown fox jumps over the lazy dog. To be, or not to be, that is the question: "
        + "whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune."
    static let benchmarkNewTokens = 128  // as `bitexport bench`
    static let benchmarkRuns = 5

    var bundles: [URL] = []
    var bundle: BundleInfo?
    var artifact: ArtifactInfo?
    var busy = false
    var status = ""
    var output = ""
    var last: RunFigures?
    var benchmark: BenchmarkResult?
    /// Chat turns so far (when the bundle has a chat template and chat is on).
    var history: [(user: String, reply: String)] = []

    private var engine: TextEngine?
    /// The stop flag of the job running now: a new one per job, made here on the main thread
    /// before the job is queued, so a Stop can never be lost.
    private var jobStop = StopFlag()

    init() { refresh() }

    func refresh() { bundles = BundleInfo.discover() }

    func open(_ folder: URL) {
        run("reading \(folder.lastPathComponent)") { _ in
            let info = try BundleInfo.read(folder)
            await MainActor.run {
                self.bundle = info
                self.artifact = nil
                self.engine = nil
                self.output = ""
                self.last = nil
                self.benchmark = nil
                self.history = []
            }
            return "\(info.modelName): choose an artifact"
        }
    }

    func load(_ artifact: ArtifactInfo) {
        guard let bundle else { return }
        run("loading \(artifact.url.lastPathComponent)") { _ in
            let engine: TextEngine
            if artifact.target == "coreml" {
                engine = try await CoreMLEngine(bundle: bundle, artifact: artifact)
            } else {
                engine = try await self.onQueue { try ExecuTorchEngine(bundle: bundle, artifact: artifact) }
            }
            await MainActor.run {
                self.engine = engine
                self.artifact = artifact
            }
            return "loaded \(engine.label)"
        }
    }

    /// A plain completion, or with `chat` one chat turn (system prompt, the turns so far, `prompt`).
    func generate(prompt: String, maxNewTokens: Int, temperature: Double, chat: Bool, systemPrompt: String) {
        guard let engine else { return }
        output = ""
        let useChat = chat && bundle?.chatTemplate != nil
        let input: PromptInput = useChat ? .chat(system: systemPrompt, history: history, message: prompt) : .plain(prompt)
        let request = GenerationRequest(prompt: input, maxNewTokens: maxNewTokens, temperature: Float(temperature))
        run("generating") { stop in
            let reply = ReplyText()
            let figures = try await self.onQueue {
                try engine.generate(request, stop: stop) { text in
                    reply.text = text
                    // streaming display; a late update of this job (or of an earlier one) never
                    // replaces a longer text
                    Task { @MainActor in
                        if self.jobStop === stop, text.count >= self.output.count { self.output = text }
                    }
                }
            }
            await MainActor.run {
                self.last = figures
                self.output = reply.text
                if useChat { self.history.append((user: prompt, reply: reply.text)) }
            }
            return stop.isRaised ? "stopped" : "done"
        }
    }

    func newChat() {
        history = []
        output = ""
    }

    /// A warm-up run, then `benchmarkRuns` runs of the fixed prompt (greedy); shows the medians.
    func runBenchmark() {
        guard let engine else { return }
        output = ""
        benchmark = nil
        let request = GenerationRequest(prompt: .plain(Self.benchmarkPrompt), maxNewTokens: Self.benchmarkNewTokens, temperature: 0)
        run("benchmark") { stop in
            _ = try await self.onQueue { try engine.generate(request, stop: stop) { _ in } }
            var runs: [RunFigures] = []
            for i in 1...Self.benchmarkRuns {
                await MainActor.run { self.status = "benchmark run \(i) of \(Self.benchmarkRuns)" }
                runs.append(try await self.onQueue { try engine.generate(request, stop: stop) { _ in } })
                if stop.isRaised { return "stopped" }
            }
            let result = BenchmarkResult(runs: runs)
            await MainActor.run {
                self.benchmark = result
                self.last = runs.last
            }
            return "benchmark done"
        }
    }

    /// Raises the running job's flag; the token loop ends after the token in progress.
    func stop() { jobStop.raise() }

    private func run(_ what: String, _ work: @escaping (StopFlag) async throws -> String) {
        guard !busy else { return }
        busy = true
        status = "\(what)…"
        let stop = StopFlag()
        jobStop = stop
        Task {
            let message: String
            do { message = try await work(stop) } catch { message = error.localizedDescription }
            self.busy = false
            self.status = message
        }
    }

    /// Runs blocking engine work on the engine queue (engines are not thread-safe).
    private nonisolated func onQueue<T>(_ work: @escaping () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            engineQueue.async { continuation.resume(with: Result { try work() }) }
        }
    }
}

/// The reply as the engine queue last saw it (written there only, read after the job).
private final class ReplyText: @unchecked Sendable {
    var text = ""
}
