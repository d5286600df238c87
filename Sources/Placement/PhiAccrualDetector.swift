// Phi accrual failure detector (Hayashibara, Défago, Yared, Katayama, "The φ Accrual Failure
// Detector", SRDS 2004), in the form Akka uses (akka.remote.PhiAccrualFailureDetector).
//
// Instead of a yes/no verdict it outputs phi = -log10(P(a heartbeat arrives later than now)),
// where the inter-arrival times are modelled as a normal distribution estimated over a bounded
// window of recent intervals. phi 1 means a 10% chance that a live peer would be this late,
// phi 8 means 1e-8. As in Akka:
//   - the standard deviation is clamped below by `minStdDeviationMs` (a perfectly regular
//     sender would otherwise be suspected after a millisecond of jitter);
//   - `acceptableHeartbeatPauseMs` is added to the mean (tolerates stalls: GC, a busy event loop,
//     a slow Redis round);
//   - the window starts with two synthetic samples around `firstHeartbeatEstimateMs`, so a peer
//     heard once is judged sensibly;
//   - an interval is recorded only if the peer was still available when its heartbeat came: the
//     long gap of a peer coming back must not teach the detector that gaps are normal.
//
// Pure: time comes in as `nowMs`, milliseconds on a monotonic clock chosen by the caller.

// exp / log1p come from the platform C math library (libm) that the Swift runtime links anyway;
// the standard library has no transcendental functions and Foundation is not needed for two.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Tuning of a phi accrual detector. Defaults are for 100 ms heartbeats.
///
/// With 100 ms heartbeats a silent peer crosses phi 8 after about
/// mean + pause + 5.22 * stdDev = 100 + 500 + 5.22 * 50 ≈ 860 ms of silence (or ~1.1 s if its
/// heartbeats jittered with a 100 ms standard deviation), while a heartbeat late by 50% gives
/// phi ≈ 0. (5.22 is where the logistic approximation below reaches phi 8.)
public struct PhiAccrualConfiguration: Sendable, Equatable {
    /// phi at or above which a peer is considered unavailable (Akka cluster default: 8).
    public var threshold: Double
    /// How many recent inter-arrival intervals the estimate uses.
    public var maxSampleSize: Int
    /// Lower bound on the standard deviation used, in ms. Must be > 0.
    public var minStdDeviationMs: Double
    /// Extra silence tolerated on top of the mean interval, in ms.
    public var acceptableHeartbeatPauseMs: Double
    /// Assumed mean interval before a second heartbeat has been seen, in ms.
    public var firstHeartbeatEstimateMs: Double

    public init(
        threshold: Double = 8,
        maxSampleSize: Int = 100,
        minStdDeviationMs: Double = 50,
        acceptableHeartbeatPauseMs: Double = 500,
        firstHeartbeatEstimateMs: Double = 100
    ) {
        precondition(threshold > 0, "threshold must be > 0")
        precondition(maxSampleSize >= 2 && maxSampleSize <= 100_000, "maxSampleSize must be in 2...100000")
        precondition(minStdDeviationMs > 0, "minStdDeviationMs must be > 0")
        precondition(acceptableHeartbeatPauseMs >= 0, "acceptableHeartbeatPauseMs must be >= 0")
        precondition(firstHeartbeatEstimateMs > 0, "firstHeartbeatEstimateMs must be > 0")
        self.threshold = threshold
        self.maxSampleSize = maxSampleSize
        self.minStdDeviationMs = minStdDeviationMs
        self.acceptableHeartbeatPauseMs = acceptableHeartbeatPauseMs
        self.firstHeartbeatEstimateMs = firstHeartbeatEstimateMs
    }

    /// Defaults scaled to another heartbeat interval: first estimate = interval,
    /// min std-dev = interval / 2, acceptable pause = 5 x interval, threshold 8, 100 samples.
    /// `heartbeatIntervalMs: 100` gives exactly the plain defaults.
    public init(heartbeatIntervalMs: Int64) {
        precondition(heartbeatIntervalMs > 0, "heartbeatIntervalMs must be > 0")
        let interval = Double(heartbeatIntervalMs)
        self.init(
            threshold: 8,
            maxSampleSize: 100,
            minStdDeviationMs: interval / 2,
            acceptableHeartbeatPauseMs: interval * 5,
            firstHeartbeatEstimateMs: interval
        )
    }

    /// Tuned for 100 ms heartbeats.
    public static let `default` = PhiAccrualConfiguration()
}

/// One peer's detector.
public struct PhiAccrualDetector: Sendable {
    public let configuration: PhiAccrualConfiguration

    /// Ring buffer of the most recent intervals (ms); `intervalCount` of them are valid, the
    /// oldest at `oldestIndex`.
    private var intervals: [Double]
    private var oldestIndex = 0
    private var intervalCount = 0
    /// Running sums over the valid intervals; recomputed exactly every time the buffer wraps so
    /// floating-point drift cannot accumulate.
    private var intervalSum = 0.0
    private var intervalSquaresSum = 0.0

    /// Time of the last accepted heartbeat, nil before the first.
    public private(set) var lastHeartbeatMs: Int64?

    public init(configuration: PhiAccrualConfiguration = .default) {
        self.configuration = configuration
        self.intervals = []
        self.intervals.reserveCapacity(configuration.maxSampleSize)
    }

    /// Records a heartbeat arriving at `nowMs`.
    /// A heartbeat dated before (or at) the last one is ignored: the caller's clock is meant to
    /// be monotonic, and a duplicate must not record a zero interval.
    public mutating func heartbeat(nowMs: Int64) {
        guard let last = lastHeartbeatMs else {
            // First heartbeat: seed the window with mean ± mean/4 (Akka), i.e. the estimate
            // with a standard deviation of a quarter of it.
            let estimate = configuration.firstHeartbeatEstimateMs
            record(estimate - estimate / 4)
            record(estimate + estimate / 4)
            lastHeartbeatMs = nowMs
            return
        }
        guard nowMs > last else { return }
        // Only learn from intervals after which the peer was still considered available.
        if isAvailable(nowMs: nowMs) {
            record(Double(nowMs - last))
        }
        lastHeartbeatMs = nowMs
    }

    /// Suspicion level at `nowMs`: 0 before the first heartbeat; otherwise non-decreasing in
    /// `nowMs` and always finite (safe to put in JSON).
    public func phi(nowMs: Int64) -> Double {
        guard let last = lastHeartbeatMs else { return 0 }
        let elapsedMs = Double(nowMs) - Double(last)
        let mean = meanIntervalMs + configuration.acceptableHeartbeatPauseMs
        let stdDeviation = max(stdDeviationMs, configuration.minStdDeviationMs)
        return PhiAccrualDetector.phi(elapsedMs: elapsedMs, meanMs: mean, stdDeviationMs: stdDeviation)
    }

    /// phi below the configured threshold.
    public func isAvailable(nowMs: Int64) -> Bool {
        isAvailable(nowMs: nowMs, threshold: configuration.threshold)
    }

    /// phi below `threshold`.
    public func isAvailable(nowMs: Int64, threshold: Double) -> Bool {
        phi(nowMs: nowMs) < threshold
    }

    /// Number of intervals in the window (at most `maxSampleSize`).
    public var sampleCount: Int { intervalCount }

    /// Mean of the intervals in the window (ms); 0 when empty.
    public var meanIntervalMs: Double {
        intervalCount == 0 ? 0 : intervalSum / Double(intervalCount)
    }

    /// Population standard deviation of the intervals in the window (ms), before clamping.
    public var stdDeviationMs: Double {
        guard intervalCount > 0 else { return 0 }
        let mean = meanIntervalMs
        let variance = intervalSquaresSum / Double(intervalCount) - mean * mean
        return variance > 0 ? variance.squareRoot() : 0
    }

    /// phi for a normal distribution (mean, stdDeviation) after `elapsedMs` of silence, using the
    /// logistic approximation of the normal CDF Akka uses:
    ///   P(later than t) ≈ 1 / (1 + e^z),  z = y (1.5976 + 0.070566 y²),  y = (t - mean) / sd
    /// so phi = -log10(P) = log10(1 + e^z), computed as a stable softplus so it never becomes
    /// infinite or NaN (Akka's form returns +inf once e^-z underflows).
    public static func phi(elapsedMs: Double, meanMs: Double, stdDeviationMs: Double) -> Double {
        precondition(stdDeviationMs > 0)
        let y = (elapsedMs - meanMs) / stdDeviationMs
        let z = y * (1.5976 + 0.070566 * y * y)
        let softplus = z > 0 ? z + log1p(exp(-z)) : log1p(exp(z))
        return softplus / 2.302585092994046  // ln(10)
    }

    private mutating func record(_ intervalMs: Double) {
        let capacity = configuration.maxSampleSize
        if intervalCount < capacity {
            intervals.append(intervalMs)
            intervalCount += 1
            intervalSum += intervalMs
            intervalSquaresSum += intervalMs * intervalMs
        } else {
            let evicted = intervals[oldestIndex]
            intervals[oldestIndex] = intervalMs
            oldestIndex += 1
            if oldestIndex == capacity {
                oldestIndex = 0
                recomputeSums()
            } else {
                intervalSum += intervalMs - evicted
                intervalSquaresSum += intervalMs * intervalMs - evicted * evicted
            }
        }
        assert(intervalCount <= capacity && intervals.count == intervalCount)
    }

    private mutating func recomputeSums() {
        var sum = 0.0
        var squares = 0.0
        for interval in intervals {
            sum += interval
            squares += interval * interval
        }
        intervalSum = sum
        intervalSquaresSum = squares
    }
}
