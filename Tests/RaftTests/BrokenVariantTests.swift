import XCTest
@testable import Raft

/// The checkers bite: each deliberately broken variant must be caught by the simulation
/// within the CI seed budget (issue 3, "Prove the checkers bite").
final class BrokenVariantTests: XCTestCase {
    /// Runs seeds until one fails; returns (seed, violation) or nil.
    private func firstFailure(_ faults: RaftFaults, seeds: Range<UInt64>) -> (UInt64, String)? {
        for seed in seeds {
            var options = SimulationOptions.standard(seed: seed)
            options.faults = faults
            if let violation = Simulation(seed: seed, options: options).run().violation {
                return (seed, violation)
            }
        }
        return nil
    }

    /// §5.2 / Figure 2 RequestVote: "votedFor is null or candidateId". Voting twice in one
    /// term allows two leaders in that term.
    func testVotingTwicePerTermIsCaught() {
        let found = firstFailure(RaftFaults(voteTwicePerTerm: true), seeds: 0..<1000)
        XCTAssertNotNil(found, "voting twice per term went unnoticed in 1000 seeds")
        XCTAssertTrue(found?.1.contains("Election Safety") ?? false, "caught by another checker: \(found?.1 ?? "")")
        if let found { print("vote-twice caught at seed \(found.0): \(found.1)") }
    }

    /// Figure 2 AppendEntries step 2: without the prevLogIndex/prevLogTerm check logs diverge.
    func testSkippingTheConsistencyCheckIsCaught() {
        let found = firstFailure(RaftFaults(skipConsistencyCheck: true), seeds: 0..<1000)
        XCTAssertNotNil(found, "skipping the AppendEntries consistency check went unnoticed in 1000 seeds")
        // Diverged logs show up as two logs disagreeing, or as two nodes applying different
        // entries at one index, whichever the seed reaches first.
        XCTAssertTrue(["Log Matching", "State Machine Safety"].contains { found?.1.contains($0) ?? false },
                      "caught by another checker: \(found?.1 ?? "")")
        if let found { print("skip-consistency-check caught at seed \(found.0): \(found.1)") }
    }

    /// The runtime's pipelined writes: a Ready's messages may go out only once it, and every
    /// Ready handed out before it, is stored. A driver that sends them when the Ready is handed
    /// out (an acknowledgement for entries still in flight, a vote before it is stored) must be
    /// caught.
    func testSendingBeforeTheWriteIsCaught() {
        var found: (UInt64, String)?
        for seed: UInt64 in 0..<1000 {
            var options = SimulationOptions.standard(seed: seed)
            options.brokenSendBeforeWrite = true
            if let violation = Simulation(seed: seed, options: options).run().violation {
                found = (seed, violation)
                break
            }
        }
        // Caught as a safety violation, or as a follower stuck for good: the leader believes an
        // acknowledgement for entries that a crash then took away, and never sends them again.
        XCTAssertNotNil(found, "sending a Ready's messages before its write went unnoticed in 1000 seeds")
        if let found { print("send-before-write caught at seed \(found.0): \(found.1)") }
    }
}
