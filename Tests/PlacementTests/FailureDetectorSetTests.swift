import XCTest
@testable import Placement

final class FailureDetectorSetTests: XCTestCase {
    func testAddedButNeverHeardPeerIsNotAliveButNotSuspectedEither() {
        var set = FailureDetectorSet()
        set.add(peer: "n2")
        XCTAssertTrue(set.contains(peer: "n2"))
        XCTAssertEqual(set.phi(peer: "n2", nowMs: 10_000), 0)
        XCTAssertFalse(set.isAlive(peer: "n2", nowMs: 10_000))
        XCTAssertNil(set.lastHeartbeatMs(peer: "n2"))
        XCTAssertEqual(set.alivePeers(nowMs: 10_000), [])
    }

    func testUnknownPeer() {
        let set = FailureDetectorSet()
        XCTAssertFalse(set.contains(peer: "x"))
        XCTAssertNil(set.phi(peer: "x", nowMs: 0))
        XCTAssertFalse(set.isAlive(peer: "x", nowMs: 0))
        XCTAssertNil(set.lastHeartbeatMs(peer: "x"))
        XCTAssertNil(set.detector(peer: "x"))
    }

    func testHeartbeatLifecycleAndBecameAliveSignal() {
        var set = FailureDetectorSet()
        // A heartbeat from an unknown peer adds it and makes it alive.
        XCTAssertTrue(set.heartbeat(peer: "n2", nowMs: 1_000))
        XCTAssertTrue(set.isAlive(peer: "n2", nowMs: 1_000))
        XCTAssertEqual(set.lastHeartbeatMs(peer: "n2"), 1_000)

        var now: Int64 = 1_000
        for _ in 0..<50 {
            now += 100
            XCTAssertFalse(set.heartbeat(peer: "n2", nowMs: now), "already alive")
        }
        XCTAssertEqual(set.lastHeartbeatMs(peer: "n2"), now)
        XCTAssertEqual(set.alivePeers(nowMs: now + 100), ["n2"])

        // Silent for 2 s: suspected.
        XCTAssertFalse(set.isAlive(peer: "n2", nowMs: now + 2_000))
        XCTAssertEqual(set.alivePeers(nowMs: now + 2_000), [])
        XCTAssertGreaterThanOrEqual(set.phi(peer: "n2", nowMs: now + 2_000)!, 8)

        // Back: alive at its first new heartbeat, and reported as a change.
        XCTAssertTrue(set.heartbeat(peer: "n2", nowMs: now + 5_000))
        XCTAssertTrue(set.isAlive(peer: "n2", nowMs: now + 5_000))
    }

    func testAddKeepsHistoryAndRemoveForgetsIt() {
        var set = FailureDetectorSet()
        var now: Int64 = 0
        for _ in 0..<20 { now += 100; set.heartbeat(peer: "n3", nowMs: now) }
        let samples = set.detector(peer: "n3")!.sampleCount
        set.add(peer: "n3")
        XCTAssertEqual(set.detector(peer: "n3")!.sampleCount, samples)
        XCTAssertTrue(set.remove(peer: "n3"))
        XCTAssertFalse(set.remove(peer: "n3"))
        XCTAssertFalse(set.contains(peer: "n3"))
        set.add(peer: "n3")
        XCTAssertNil(set.lastHeartbeatMs(peer: "n3"))
        XCTAssertEqual(set.detector(peer: "n3")!.sampleCount, 0)
    }

    func testStatusesForTheStatusEndpoint() {
        var set = FailureDetectorSet()
        set.add(peer: "c")
        var now: Int64 = 0
        for _ in 0..<10 {
            now += 100
            set.heartbeat(peer: "b", nowMs: now)
            set.heartbeat(peer: "a", nowMs: now)
        }
        // "a" goes silent; "b" keeps beating.
        for _ in 0..<30 { now += 100; set.heartbeat(peer: "b", nowMs: now) }
        let statuses = set.statuses(nowMs: now)
        XCTAssertEqual(statuses.map(\.id), ["a", "b", "c"])
        XCTAssertEqual(statuses.map(\.alive), [false, true, false])
        XCTAssertEqual(statuses.map(\.lastHeartbeatMs), [1_000, now, nil])
        XCTAssertGreaterThanOrEqual(statuses[0].phi, 8)
        XCTAssertLessThan(statuses[1].phi, 1)
        XCTAssertEqual(statuses[2].phi, 0)
        XCTAssertTrue(statuses.allSatisfy { $0.phi.isFinite })
        XCTAssertEqual(set.peers, ["a", "b", "c"])
        XCTAssertEqual(set.count, 3)
    }

    func testDrivesTheRingOverLivePeers() {
        // Membership view -> ring: when a peer is suspected its partitions move to the others.
        var set = FailureDetectorSet()
        var now: Int64 = 0
        for _ in 0..<20 {
            now += 100
            for peer in ["n1", "n2", "n3"] { set.heartbeat(peer: peer, nowMs: now) }
        }
        XCTAssertEqual(HashRing(nodes: set.alivePeers(nowMs: now)).nodes, ["n1", "n2", "n3"])
        for _ in 0..<20 {
            now += 100
            for peer in ["n1", "n2"] { set.heartbeat(peer: peer, nowMs: now) }
        }
        let ring = HashRing(nodes: set.alivePeers(nowMs: now))
        XCTAssertEqual(ring.nodes, ["n1", "n2"])
        XCTAssertFalse(ring.owners(topic: "t", partitions: 64).contains("n3"))
    }
}
