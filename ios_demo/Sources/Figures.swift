import Foundation

/// The figures `bitexport run` prints, computed the same way (export/model/generate.py):
/// prefill tokens/s = prompt tokens / prefill seconds; decode tokens/s = (new tokens - 1) / decode
/// seconds, because the first new token comes out of the prefill call.
struct RunFigures {
    let promptTokens: Int
    let newTokens: Int
    let prefillSeconds: Double
    let decodeSeconds: Double

    var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(max(newTokens - 1, 0)) / decodeSeconds : 0 }
}

/// Prefill ends when the first new token is out, decode when the last one is.
struct GenerationClock {
    private let start = ContinuousClock.now
    private var firstToken: ContinuousClock.Instant?

    mutating func tokenOut() {
        if firstToken == nil { firstToken = ContinuousClock.now }
    }

    func figures(promptTokens: Int, newTokens: Int) -> RunFigures {
        let end = ContinuousClock.now
        let first = firstToken ?? end
        return RunFigures(
            promptTokens: promptTokens,
            newTokens: newTokens,
            prefillSeconds: seconds(first - start),
            decodeSeconds: newTokens > 0 ? seconds(end - first) : 0
        )
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}

/// Median of the per-run figures, each column on its own (what the benchmark mode shows).
struct BenchmarkResult {
    let runs: [RunFigures]
    var medianPrefillTokensPerSecond: Double { Self.median(runs.map(\.prefillTokensPerSecond)) }
    var medianDecodeTokensPerSecond: Double { Self.median(runs.map(\.decodeTokensPerSecond)) }

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}

/// A generation flag another thread sets (the Stop button) and the loop reads.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false
    func raise() { lock.lock(); raised = true; lock.unlock() }
    func reset() { lock.lock(); raised = false; lock.unlock() }
    var isRaised: Bool { lock.lock(); defer { lock.unlock() }; return raised }
}

/// One loaded artifact that generates text greedily. Calls come from one background queue.
protocol TextEngine: AnyObject {
    var label: String { get }
    /// Up to `maxNewTokens` new tokens after `prompt` (fewer at EOS or the end of the cache),
    /// each decoded piece passed to `onPiece` as it comes.
    func generate(prompt: String, maxNewTokens: Int, onPiece: @escaping (String) -> Void) throws -> RunFigures
    /// Ends a running `generate` after its current token (called from the main thread).
    func stop()
}
