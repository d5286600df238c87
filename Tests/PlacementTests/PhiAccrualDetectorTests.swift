import Foundation
import XCTest
@testable import Placement

/// Phi accrual on synthetic arrival times. Heartbeats every 100 ms unless stated; the default
/// configuration (threshold 8) is the one under test.
final class PhiAccrualDetectorTests: XCTestCase {
    private let threshold = PhiAccrualConfiguration.default.threshold

    /// Feeds heartbeats at `startMs` then after each interval; returns the time of the last one
    /// and the highest phi seen just before any heartbeat arrived (the moment a live peer looks
    /// most suspicious).
    @discardableResult
    private func feed(_ detector: inout PhiAccrualDetector, startMs: Int64, intervals: [Int64]) -> (lastMs: Int64, maxPhiAtArrival: Double) {
        var now = startMs
        detector.heartbeat(nowMs: now)
        var maxPhi = 0.0
        for interval in intervals {
            now += interval
            maxPhi = max(maxPhi, detector.phi(nowMs: now))
            XCTAssertTrue(detector.isAvailable(nowMs: now), "live peer suspected at \(now) (phi \(detector.phi(nowMs: now)))")
            detector.heartbeat(nowMs: now)
        }
        return (now, maxPhi)
    }

    /// Milliseconds of silence after `lastMs` until phi reaches `threshold` (1 ms resolution).
    private func detectionDelayMs(_ detector: PhiAccrualDetector, lastMs: Int64, threshold: Double = 8) -> Int64 {
        var elapsed: Int64 = 0
        while detector.phi(nowMs: lastMs + elapsed) < threshold {
            elapsed += 1
            precondition(elapsed < 600_000, "never detected")
        }
        return elapsed
    }

    private func uniformJitter(count: Int, seed: UInt64) -> [Int64] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { _ in Int64.random(in: 50...150, using: &generator) }  // 100 ms ± 50%
    }

    // MARK: - Requirements

    func testNormalJitterNeverCrossesThreshold() {
        let patterns: [(String, [Int64])] = [
            ("uniform 50...150 ms", uniformJitter(count: 20_000, seed: 7)),
            ("alternating 50/150 ms", (0..<5_000).map { $0 % 2 == 0 ? 50 : 150 }),
            ("steady 100 ms with a 150 ms heartbeat every 10", (0..<5_000).map { $0 % 10 == 9 ? 150 : 100 }),
            ("runs of 150 ms after runs of 50 ms", (0..<5_000).map { ($0 / 50) % 2 == 0 ? 50 : 150 }),
            ("perfectly steady 100 ms then one 150 ms", Array(repeating: 100, count: 200) + [150]),
        ]
        for (name, intervals) in patterns {
            var detector = PhiAccrualDetector()
            let (_, maxPhi) = feed(&detector, startMs: 1_000, intervals: intervals)
            print(String(format: "jitter %@: max phi at arrival %.4f", name, maxPhi))
            XCTAssertLessThan(maxPhi, 1.0, name)  // far below 8
        }
    }

    func testSilentPeerCrossesThresholdWellWithinTwoSeconds() {
        let patterns: [(String, [Int64])] = [
            ("steady 100 ms", Array(repeating: 100, count: 300)),
            ("uniform 50...150 ms", uniformJitter(count: 300, seed: 11)),
            ("alternating 50/150 ms", (0..<300).map { $0 % 2 == 0 ? 50 : 150 }),
        ]
        for (name, intervals) in patterns {
            var detector = PhiAccrualDetector()
            let (lastMs, _) = feed(&detector, startMs: 0, intervals: intervals)
            let delay = detectionDelayMs(detector, lastMs: lastMs)
            print("silent peer after \(name): phi >= 8 after \(delay) ms of silence (phi at 2 s: \(detector.phi(nowMs: lastMs + 2_000)))")
            XCTAssertLessThan(delay, 1_200, name)  // "well within 2 s"
            XCTAssertGreaterThan(delay, 600, name)  // but tolerant of a pause of a few heartbeats
            XCTAssertFalse(detector.isAvailable(nowMs: lastMs + 2_000))
        }
    }

    func testReturningPeerIsAliveAtItsFirstNewHeartbeat() {
        var detector = PhiAccrualDetector()
        let (lastMs, _) = feed(&detector, startMs: 0, intervals: uniformJitter(count: 200, seed: 3))
        let meanBefore = detector.meanIntervalMs
        let samplesBefore = detector.sampleCount

        let returnMs = lastMs + 30_000
        XCTAssertFalse(detector.isAvailable(nowMs: returnMs - 1))
        detector.heartbeat(nowMs: returnMs)
        XCTAssertEqual(detector.phi(nowMs: returnMs), 0, accuracy: 1e-12)
        XCTAssertTrue(detector.isAvailable(nowMs: returnMs))
        XCTAssertTrue(detector.isAvailable(nowMs: returnMs + 150))

        // The 30 s gap was not learnt: the estimate is unchanged, so the next silence is
        // detected as fast as before.
        XCTAssertEqual(detector.meanIntervalMs, meanBefore)
        XCTAssertEqual(detector.sampleCount, samplesBefore)
        let (nextLastMs, _) = feed(&detector, startMs: returnMs + 100, intervals: Array(repeating: 100, count: 50))
        XCTAssertLessThan(detectionDelayMs(detector, lastMs: nextLastMs), 1_200)
    }

    func testBeforeFirstHeartbeatPhiIsZeroAndAfterOneSilenceIsDetected() {
        var detector = PhiAccrualDetector()
        XCTAssertNil(detector.lastHeartbeatMs)
        XCTAssertEqual(detector.phi(nowMs: 123_456), 0)
        XCTAssertTrue(detector.isAvailable(nowMs: 123_456))

        detector.heartbeat(nowMs: 5_000)
        XCTAssertEqual(detector.lastHeartbeatMs, 5_000)
        XCTAssertEqual(detector.sampleCount, 2, "seeded with two samples around the first estimate")
        XCTAssertEqual(detector.meanIntervalMs, 100)
        XCTAssertEqual(detector.stdDeviationMs, 25)
        let delay = detectionDelayMs(detector, lastMs: 5_000)
        print("silent after a single heartbeat: phi >= 8 after \(delay) ms")
        XCTAssertLessThan(delay, 1_200)
        // A normal second heartbeat is fine.
        XCTAssertTrue(detector.isAvailable(nowMs: 5_150))
    }

    // MARK: - Mechanics

    func testWindowIsBoundedAndForgetsOldIntervals() {
        // 200 ms heartbeats after 100 ms ones are within the default pause; widen it anyway so
        // this test checks only the window arithmetic, not detection.
        var detector = PhiAccrualDetector(configuration: PhiAccrualConfiguration(maxSampleSize: 100, acceptableHeartbeatPauseMs: 5_000))
        feed(&detector, startMs: 0, intervals: Array(repeating: 100, count: 500) + Array(repeating: 200, count: 500))
        XCTAssertEqual(detector.sampleCount, 100)
        XCTAssertEqual(detector.meanIntervalMs, 200, accuracy: 1e-9)
        XCTAssertEqual(detector.stdDeviationMs, 0, accuracy: 1e-6)

        // Half-way through a wrap: 50 of 300 ms and 50 of 200 ms.
        var now = detector.lastHeartbeatMs!
        for _ in 0..<50 { now += 300; detector.heartbeat(nowMs: now) }
        XCTAssertEqual(detector.sampleCount, 100)
        XCTAssertEqual(detector.meanIntervalMs, 250, accuracy: 1e-9)
        XCTAssertEqual(detector.stdDeviationMs, 50, accuracy: 1e-6)
    }

    func testAdaptsToASlowerHeartbeatRate() {
        // A peer that slows from 100 ms to 300 ms heartbeats (within the pause) is not lost;
        // after a window of 300 ms samples, silence is judged against 300 ms.
        var detector = PhiAccrualDetector()
        feed(&detector, startMs: 0, intervals: Array(repeating: 100, count: 100) + Array(repeating: 300, count: 100))
        XCTAssertEqual(detector.meanIntervalMs, 300, accuracy: 1e-9)
        XCTAssertLessThan(detectionDelayMs(detector, lastMs: detector.lastHeartbeatMs!), 2_000)
    }

    func testStaleAndDuplicateHeartbeatsAreIgnored() {
        var detector = PhiAccrualDetector()
        feed(&detector, startMs: 1_000, intervals: [100, 100, 100])
        let samples = detector.sampleCount
        let mean = detector.meanIntervalMs
        detector.heartbeat(nowMs: 1_300)  // duplicate
        detector.heartbeat(nowMs: 1_250)  // from the past
        XCTAssertEqual(detector.lastHeartbeatMs, 1_300)
        XCTAssertEqual(detector.sampleCount, samples)
        XCTAssertEqual(detector.meanIntervalMs, mean)
        // A query from before the last heartbeat is not suspicious.
        XCTAssertEqual(detector.phi(nowMs: 1_000), 0, accuracy: 1e-9)
    }

    func testPhiIsMonotoneNonNegativeAndAlwaysFinite() {
        var detector = PhiAccrualDetector()
        let (lastMs, _) = feed(&detector, startMs: 0, intervals: uniformJitter(count: 100, seed: 5))
        var previous = -1.0
        var elapsed: Int64 = 0
        while elapsed < 5_000 {
            let phi = detector.phi(nowMs: lastMs + elapsed)
            XCTAssertGreaterThanOrEqual(phi, previous)
            XCTAssertGreaterThanOrEqual(phi, 0)
            previous = phi
            elapsed += 7
        }
        for far in [Int64(60_000), 86_400_000, 1_000_000_000_000_000, Int64.max / 2] {
            let phi = detector.phi(nowMs: lastMs + far)
            XCTAssertTrue(phi.isFinite, "phi at +\(far) ms is \(phi)")
            XCTAssertGreaterThan(phi, 1_000)
        }
        XCTAssertTrue(detector.phi(nowMs: Int64.min).isFinite)
    }

    func testPhiMatchesAkkasFormulaWhereItIsFinite() {
        func akka(_ elapsed: Double, _ mean: Double, _ stdDeviation: Double) -> Double {
            let y = (elapsed - mean) / stdDeviation
            let e = exp(-y * (1.5976 + 0.070566 * y * y))
            return elapsed > mean ? -log10(e / (1 + e)) : -log10(1 - 1 / (1 + e))
        }
        for elapsed in stride(from: 0.0, through: 1_500.0, by: 10.0) {
            let expected = akka(elapsed, 600, 50)
            let actual = PhiAccrualDetector.phi(elapsedMs: elapsed, meanMs: 600, stdDeviationMs: 50)
            XCTAssertEqual(actual, expected, accuracy: 1e-9 + expected * 1e-9, "at \(elapsed) ms")
        }
        // Reference points: phi is log10(2) at the mean, about 8 at 5.22 standard deviations.
        XCTAssertEqual(PhiAccrualDetector.phi(elapsedMs: 600, meanMs: 600, stdDeviationMs: 50), log10(2), accuracy: 1e-12)
        XCTAssertEqual(PhiAccrualDetector.phi(elapsedMs: 600 + 5.22 * 50, meanMs: 600, stdDeviationMs: 50), 8, accuracy: 0.1)
    }

    func testCustomThreshold() {
        var detector = PhiAccrualDetector()
        let (lastMs, _) = feed(&detector, startMs: 0, intervals: Array(repeating: 100, count: 100))
        XCTAssertLessThan(detectionDelayMs(detector, lastMs: lastMs, threshold: 3), detectionDelayMs(detector, lastMs: lastMs, threshold: 12))
        let at = lastMs + 700
        XCTAssertEqual(detector.isAvailable(nowMs: at, threshold: 1), detector.phi(nowMs: at) < 1)
        XCTAssertEqual(detector.isAvailable(nowMs: at), detector.phi(nowMs: at) < 8)
    }

    func testConfigurationScaledToHeartbeatInterval() {
        XCTAssertEqual(PhiAccrualConfiguration(heartbeatIntervalMs: 100), .default)
        let configuration = PhiAccrualConfiguration(heartbeatIntervalMs: 1_000)
        XCTAssertEqual(configuration.firstHeartbeatEstimateMs, 1_000)
        XCTAssertEqual(configuration.minStdDeviationMs, 500)
        XCTAssertEqual(configuration.acceptableHeartbeatPauseMs, 5_000)
        var detector = PhiAccrualDetector(configuration: configuration)
        let (lastMs, _) = feed(&detector, startMs: 0, intervals: Array(repeating: 1_000, count: 50))
        let delay = detectionDelayMs(detector, lastMs: lastMs)
        XCTAssertGreaterThan(delay, 6_000)
        XCTAssertLessThan(delay, 12_000)
    }
}
