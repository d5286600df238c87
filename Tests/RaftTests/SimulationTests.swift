import Foundation
import XCTest
@testable import Raft

/// Seeded fault-injection simulation (issue 3, "How it is checked").
///
///   swift test --filter RaftTests.SimulationTests                        # CI budget (RAFT_SIM_SEEDS, default below)
///   RAFT_SIM_SEEDS=100000 swift test -c release --filter RaftTests.SimulationTests/testSeededSimulation
///   RAFT_SIM_SEED=1234 swift test --filter RaftTests.SimulationTests/testSeededSimulation   # replay one seed
///   RAFT_SIM_FIRST_SEED=5000 RAFT_SIM_SEEDS=1000 ...                     # another window of seeds
final class SimulationTests: XCTestCase {
    static let defaultSeedCount = 1000

    private func environment(_ name: String) -> UInt64? {
        ProcessInfo.processInfo.environment[name].flatMap { UInt64($0) }
    }

    private func replayCommand(_ seed: UInt64, test: String = "testSeededSimulation") -> String {
        "RAFT_SIM_SEED=\(seed) swift test --filter RaftTests.SimulationTests/\(test)"
    }

    func testSeededSimulation() {
        let seeds: [UInt64]
        if let single = environment("RAFT_SIM_SEED") {
            seeds = [single]
        } else {
            let first = environment("RAFT_SIM_FIRST_SEED") ?? 0
            let count = environment("RAFT_SIM_SEEDS") ?? UInt64(Self.defaultSeedCount)
            seeds = Array(first..<(first + count))
        }
        let started = ContinuousClock.now
        var steps = 0
        var nodeTicks = 0
        var electSteps: [Int] = []
        var commitSteps: [Int] = []
        var committed = 0
        var snapshots = 0
        var reads = 0
        var midReady = 0
        var pipelined = 0
        var failedWrites = 0
        var failures = 0
        for seed in seeds {
            let report = Simulation(seed: seed, options: .standard(seed: seed)).run()
            steps += report.steps
            nodeTicks += report.nodeTicks
            committed += report.committedEntries
            snapshots += report.snapshotsInstalled
            reads += report.readsServed
            midReady += report.midReadyApplies
            pipelined += report.pipelinedReadies
            failedWrites += report.failedWrites
            if let elect = report.stepsToElectAfterFaults { electSteps.append(elect) }
            if let commit = report.stepsToCommitAfterFaults { commitSteps.append(commit) }
            if let violation = report.violation {
                failures += 1
                XCTFail("seed \(seed) (\(report.nodeCount) nodes) failed: \(violation)\n  replay: \(replayCommand(seed))")
                if failures >= 5 { break }
            }
        }
        electSteps.sort()
        commitSteps.sort()
        let elapsed = ContinuousClock.now - started
        func percentile(_ values: [Int], _ p: Double) -> Int {
            values.isEmpty ? -1 : values[min(values.count - 1, Int(Double(values.count) * p))]
        }
        // The mid-Ready path (messages stepped and entries applied before advance) must be exercised.
        if seeds.count >= 100 { XCTAssertGreaterThan(midReady, 0, "no Ready ever applied entries committed mid-Ready") }
        // So must pipelined writes (a Ready handed out while an earlier one is unwritten).
        if seeds.count >= 100 { XCTAssertGreaterThan(pipelined, 0, "no Ready was ever handed out while another was outstanding") }
        if seeds.count >= 100 { XCTAssertGreaterThan(failedWrites, 0, "no write ever failed mid-pipeline") }
        print("""
            raft-sim: \(seeds.count) seeds in \(elapsed); \(steps) steps, \(nodeTicks) node ticks; \
            committed \(committed) entries, \(snapshots) snapshots installed, \(reads) reads, \(midReady) mid-Ready applies, \(pipelined) pipelined Readies, \(failedWrites) failed writes; \
            steps to elect after faults: median \(percentile(electSteps, 0.5)) p99 \(percentile(electSteps, 0.99)) \
            worst \(electSteps.last ?? -1); to commit everywhere: median \(percentile(commitSteps, 0.5)) \
            worst \(commitSteps.last ?? -1)
            """)
    }

    /// A seed reproduces its run exactly (the replay command depends on it).
    func testSameSeedGivesSameRun() {
        for seed: UInt64 in [3, 4] {
            let first = Simulation(seed: seed, options: .standard(seed: seed)).run()
            let second = Simulation(seed: seed, options: .standard(seed: seed)).run()
            XCTAssertEqual(first.steps, second.steps)
            XCTAssertEqual(first.nodeTicks, second.nodeTicks)
            XCTAssertEqual(first.committedEntries, second.committedEntries)
            XCTAssertEqual(first.stepsToElectAfterFaults, second.stepsToElectAfterFaults)
            XCTAssertEqual(first.snapshotsInstalled, second.snapshotsInstalled)
        }
    }
}
