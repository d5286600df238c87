import XCTest
import Locks

/// Not a benchmark gate (the machine is shared): prints how fast the table applies entries,
/// and checks the heap and retry records stay bounded under a long run.
final class LockThroughputTests: XCTestCase {
    func testApplyThroughputAndBoundedIndexes() {
        var table = LockTable()
        var index: UInt64 = 0
        var now: Int64 = 1_700_000_000_000
        let pairs = 30_000
        let resources = (0..<1_000).map { "resource-\($0)" }
        let owners = (0..<64).map { "client-\($0)" }
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for pair in 0..<pairs {
                now += 1
                index += 1
                let resource = resources[pair % resources.count], owner = owners[pair % owners.count]
                _ = table.apply(.acquire(AcquireCommand(resource: resource, owner: owner, ttlMs: 30_000, waitMs: 1_000,
                                                        requestId: "req-\(pair)", origin: "n1", tag: UInt64(pair),
                                                        nowMs: now)), index: index)
                index += 1
                _ = table.apply(.release(ReleaseCommand(resource: resource, owner: owner, origin: "n1",
                                                        tag: UInt64(pair), nowMs: now)), index: index)
            }
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("lock table: \(Int(Double(2 * pairs) / seconds)) entries/s (\(pairs) acquire+release pairs in \(seconds) s)")
        XCTAssertEqual(table.heldCount, 0)
        XCTAssertEqual(table.resourceCount, 0)
        XCTAssertEqual(table.dedupCount, pairs)
        XCTAssertNil(table.nextDeadlineMs())
    }
}
