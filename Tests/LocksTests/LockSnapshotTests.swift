import XCTest
import Locks

final class LockSnapshotTests: XCTestCase {
    /// A table with holders, shared holders, waiters (one an upgrade), retry records, counters.
    func busyHarness() -> Harness {
        let h = Harness(limits: LockLimits(resourcesMax: 50, entriesPerResourceMax: 20, entriesMax: 200,
                                           dedupEntriesMax: 30, dedupRetentionMs: 3_600_000))
        h.acquire("alpha", "a", ttl: 5_000, requestId: "ra")
        h.acquire("alpha", "b", wait: 8_000, requestId: "rb")
        h.acquire("beta", "c", .shared, ttl: 2_000)
        h.acquire("beta", "d", .shared, ttl: 9_000)
        h.acquire("beta", "c", .exclusive, wait: 7_000)        // waiting upgrade
        h.acquire("beta", "e", .shared, wait: 6_000, origin: "n2")
        h.acquire("gamma", "a", .exclusive, ttl: 1_000)
        h.acquire("gamma", "f", wait: 0)                        // conflict
        h.tick(advance: 1_500)                                  // gamma expires
        return h
    }

    func testRoundTripIsEqualAndCanonical() throws {
        let h = busyHarness()
        let bytes = h.table.snapshot()
        let restored = try LockTable(snapshot: bytes)
        XCTAssertEqual(restored, h.table)
        XCTAssertEqual(restored.snapshot(), bytes)
        XCTAssertEqual(restored.allStatus(), h.table.allStatus())
        XCTAssertEqual(restored.nextDeadlineMs(), h.table.nextDeadlineMs())
        XCTAssertEqual(restored.counters, h.table.counters)
        XCTAssertEqual(restored.lastToken, h.table.lastToken)
        XCTAssertEqual(restored.dedupCount, h.table.dedupCount)
        XCTAssertEqual(restored.heldCount, h.table.heldCount)
        XCTAssertEqual(restored.waiterCount, h.table.waiterCount)
        XCTAssertEqual(restored.invariantViolations(checkCycles: true), [])

        let empty = LockTable()
        XCTAssertEqual(try LockTable(snapshot: empty.snapshot()), empty)
    }

    func testRestoredTableAnswersTheSameCommandsIdentically() throws {
        let h = busyHarness()
        var restored = try LockTable(snapshot: h.table.snapshot())
        var original = h.table
        var index = h.index
        let t = h.now
        let commands: [LockCommand] = [
            .acquire(AcquireCommand(resource: "alpha", owner: "b", waitMs: 8_000, requestId: "rb", origin: "n3", tag: 500, nowMs: t)),
            .release(ReleaseCommand(resource: "beta", owner: "d", origin: "n1", tag: 501, nowMs: t + 10)),
            .tick(nowMs: t + 4_000),
            .acquire(AcquireCommand(resource: "alpha", owner: "a", requestId: "ra", origin: "n1", tag: 502, nowMs: t + 4_001)),
            .renew(RenewCommand(resource: "beta", owner: "c", ttlMs: 1_000, origin: "n1", tag: 503, nowMs: t + 4_002)),
            .leaderGrace(nowMs: t + 9_000, graceMs: 2_000),
            .tick(nowMs: t + 20_000),
            .acquire(AcquireCommand(resource: "delta", owner: "z", origin: "n1", tag: 504, nowMs: t + 20_001)),
        ]
        for command in commands {
            index += 1
            XCTAssertEqual(restored.apply(command, index: index), original.apply(command, index: index), "\(command)")
            XCTAssertEqual(restored, original)
            XCTAssertEqual(restored.snapshot(), original.snapshot())
            XCTAssertEqual(restored.nextDeadlineMs(), original.nextDeadlineMs())
        }
    }

    func testTruncatedSnapshotsAreRejected() {
        let bytes = busyHarness().table.snapshot()
        for length in 0..<bytes.count {
            XCTAssertThrowsError(try LockTable(snapshot: Array(bytes[0..<length])), "cut at \(length)")
        }
        XCTAssertThrowsError(try LockTable(snapshot: bytes + [1])) { XCTAssertEqual($0 as? LockCodecError, .trailingBytes) }
    }

    func testCorruptedSnapshotsNeverCrashAndNeverYieldBrokenTables() {
        let bytes = busyHarness().table.snapshot()
        var generator = SeededGenerator(seed: 0x5A5A)
        var accepted = 0
        for _ in 0..<5_000 {
            var corrupt = bytes
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                corrupt[Int.random(in: 0..<corrupt.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            if let table = try? LockTable(snapshot: corrupt) {
                accepted += 1
                // Whatever is accepted is a sound table and keeps working.
                XCTAssertEqual(table.invariantViolations(checkCycles: true), [])
                var copy = table
                _ = copy.apply(.tick(nowMs: .max), index: 1_000_000)
                XCTAssertEqual(copy.invariantViolations(checkCycles: true), [])
            }
        }
        // Some flips land in values (times, tags) and are legitimately accepted.
        XCTAssertGreaterThan(accepted, 0)
        for length in [0, 3, 5, 64] {
            let garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            XCTAssertThrowsError(try LockTable(snapshot: garbage))
        }
    }

    func testInconsistentSnapshotIsRejected() throws {
        // Two exclusive holders on one resource: build the bytes by hand from a valid table
        // by renaming one resource to collide with another's sort position.
        let h = Harness()
        h.acquire("ra", "a")
        h.acquire("rb", "b")
        var bytes = h.table.snapshot()
        // Rename "rb" -> "ra": duplicate resource (names must be strictly sorted).
        let ra = Array("ra".utf8), rb = Array("rb".utf8)
        let position = try XCTUnwrap(findSubsequence(rb, in: bytes))
        bytes.replaceSubrange(position..<(position + 2), with: ra)
        XCTAssertThrowsError(try LockTable(snapshot: bytes)) {
            XCTAssertEqual($0 as? LockCodecError, .inconsistent("resources not sorted or duplicated"))
        }
    }

    private func findSubsequence(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where Array(haystack[start..<(start + needle.count)]) == needle {
            return start
        }
        return nil
    }
}
