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

    private var engine: TextEngine?

    init() { refresh() }

    func refresh() { bundles = BundleInfo.discover() }

    func open(_ folder: URL) {
        run("reading \(folder.lastPathComponent)") {
            let info = try BundleInfo.read(folder)
            await MainActor.run {
                self.bundle = info
                self.artifact = nil
                self.engine = nil
                self.output = ""
                self.last = nil
                self.benchmark = nil
            }
            return "\(info.modelName): choose an artifact"
        }
    }

    func load(_ artifact: ArtifactInfo) {
        guard let bundle else { return }
        run("loading \(artifact.url.lastPathComponent)") {
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

    func generate(prompt: String, maxNewTokens: Int) {
        guard let engine else { return }
        output = ""
        run("generating") {
            let figures = try await self.onQueue {
                try engine.generate(prompt: prompt, maxNewTokens: maxNewTokens) { piece in
                    Task { @MainActor in self.output += piece }
                }
            }
            await MainActor.run { self.last = figures }
            return "done"
        }
    }

    /// A warm-up run, then `benchmarkRuns` runs of the fixed prompt; shows the medians.
    func runBenchmark() {
        guard let engine else { return }
        output = ""
        benchmark = nil
        run("benchmark") {
            _ = try await self.onQueue {
                try engine.generate(prompt: Self.benchmarkPrompt, maxNewTokens: Self.benchmarkNewTokens) { _ in }
            }
            var runs: [RunFigures] = []
            for i in 1...Self.benchmarkRuns {
                await MainActor.run { self.status = "benchmark run \(i) of \(Self.benchmarkRuns)" }
                runs.append(try await self.onQueue {
                    try engine.generate(prompt: Self.benchmarkPrompt, maxNewTokens: Self.benchmarkNewTokens) { _ in }
                })
            }
            let result = BenchmarkResult(runs: runs)
            await MainActor.run {
                self.benchmark = result
                self.last = runs.last
            }
            return "benchmark done"
        }
    }

    func stop() { engine?.stop() }

    private func run(_ what: String, _ work: @escaping () async throws -> String) {
        guard !busy else { return }
        busy = true
        status = "\(what)…"
        Task {
            let message: String
            do { message = try await work() } catch { message = error.localizedDescription }
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
