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

/// The stop request of one job: DemoModel makes a new one on the main thread before it queues the
/// job, the Stop button raises it, the token loop reads it after every token. It is never lowered,
/// so no stop can be lost (ExecuTorch's own loop clears its flag when decoding starts and loses a
/// stop that came during prefill).
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false
    func raise() { lock.lock(); raised = true; lock.unlock() }
    var isRaised: Bool { lock.lock(); defer { lock.unlock() }; return raised }
}

/// One loaded artifact that generates text. Calls come from one background queue.
protocol TextEngine: AnyObject {
    var label: String { get }
    /// Up to `request.maxNewTokens` new tokens (fewer at EOS, a stop token, `stop`, or the end of
    /// the cache); `onText` gets the whole reply so far each time it grows.
    func generate(_ request: GenerationRequest, stop: StopFlag, onText: @escaping (String) -> Void) throws -> RunFigures
}
