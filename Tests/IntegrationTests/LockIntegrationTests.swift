import Foundation
import XCTest
@testable import Runtime

/// Locks decided by Raft among three real node processes over one real redis-server.
final class LockIntegrationTests: XCTestCase {
    // MARK: helpers

    private func leader(_ c: TestCluster, among nodes: [NodeProcess]? = nil) throws -> NodeProcess? {
        for n in nodes ?? c.nodes {
            if let s = try? n.client(timeoutMs: 1000).get("/raft/state").json, s["role"]?.stringValue == "leader" { return n }
        }
        return nil
    }

    @discardableResult
    private func waitLeader(_ c: TestCluster, among nodes: [NodeProcess]? = nil, seconds: Double = 5) throws -> NodeProcess {
        var found: NodeProcess?
        try waitUntil("a leader", seconds: seconds) {
            found = try leader(c, among: nodes)
            guard let l = found else { return false }
            // Every listed node agrees on it.
            return try (nodes ?? c.nodes).allSatisfy { try $0.client(timeoutMs: 1000).get("/raft/state").json?["leader"]?.stringValue == l.id }
        }
        return found!
    }

    private func acquire(_ n: NodeProcess, _ resource: String, _ owner: String, mode: String = "exclusive", ttl: Int = 30000, wait: Int = 0, requestId: String? = nil) throws -> HTTPResponse {
        var body: [(String, JSONValue)] = [("resource", .string(resource)), ("owner", .string(owner)), ("mode", .string(mode)), ("ttl_ms", .int(ttl)), ("wait_ms", .int(wait))]
        if let requestId { body.append(("request_id", .string(requestId))) }
        return try n.client(timeoutMs: 30_000).post("/lock/acquire", .object(body))
    }

    private func release(_ n: NodeProcess, _ resource: String, _ owner: String, token: UInt64? = nil) throws -> HTTPResponse {
        var body: [(String, JSONValue)] = [("resource", .string(resource)), ("owner", .string(owner))]
        if let token { body.append(("fencing_token", .int(token))) }
        return try n.client().post("/lock/release", .object(body))
    }

    private func status(_ n: NodeProcess, _ resource: String) throws -> JSONValue {
        try n.client().get("/lock/status/\(resource)").json ?? .null
    }

    /// Runs a blocking call on another thread; `result()` waits for it.
    final class Async<T>: @unchecked Sendable {
        private var value: Result<T, Error>?
        private let done = DispatchSemaphore(value: 0)
        init(_ body: @escaping () throws -> T) {
            nonisolated(unsafe) let work = body
            let t = Thread { [self] in
                value = Result { try work() }
                done.signal()
            }
            t.start()
        }
        func result(seconds: Double = 30) throws -> T {
            guard done.wait(timeout: .now() + seconds) == .success else { throw TestError.timeout("async call") }
            return try value!.get()
        }
    }

    // MARK: tests

    func testLeaderWithinTwoSecondsThenAcquireThroughAFollower() throws {
        let c = try TestCluster(nodes: 3)
        let l = try waitLeader(c, seconds: 2)
        let follower = c.nodes.first { $0.id != l.id }!
        let r = try acquire(follower, "r1", "alice", ttl: 10_000)
        XCTAssertEqual(r.status, 200, r.text)
        let grant = r.json!
        XCTAssertEqual(grant["resource"]?.stringValue, "r1")
        XCTAssertEqual(grant["owner"]?.stringValue, "alice")
        XCTAssertEqual(grant["mode"]?.stringValue, "exclusive")
        XCTAssertGreaterThan(grant["fencing_token"]?.int64Value ?? 0, 0)
        XCTAssertGreaterThan(grant["expires_at_ms"]?.int64Value ?? 0, Int64(Date().timeIntervalSince1970 * 1000))
        // The follower relayed the leader's answer and counted the grant.
        let metrics = try follower.client().get("/metrics").text
        let granted = metrics.split(separator: "\n").first { $0.hasPrefix("concord_lock_acquisitions_total{outcome=\"granted\"}") }
        XCTAssertEqual(granted.flatMap { Double($0.split(separator: " ").last ?? "") }, 1, metrics)
        // Held: another owner conflicts, through any node.
        let other = try acquire(c.nodes.last!, "r1", "bob")
        XCTAssertEqual(other.status, 409)
        XCTAssertEqual(other.json?["error"]?.stringValue, "conflict")
        // Same owner again: same grant, lease extended.
        let again = try acquire(l, "r1", "alice", ttl: 20_000)
        XCTAssertEqual(again.json?["fencing_token"], grant["fencing_token"])
        XCTAssertGreaterThan(again.json?["expires_at_ms"]?.int64Value ?? 0, grant["expires_at_ms"]?.int64Value ?? 0)
        // Status is linearizable on every node.
        for n in c.nodes {
            let s = try status(n, "r1")
            XCTAssertEqual(s["mode"]?.stringValue, "exclusive")
            XCTAssertEqual(s["holders"]?.arrayValue?.first?["owner"]?.stringValue, "alice")
        }
        XCTAssertEqual(try release(follower, "r1", "alice", token: 999_999).json?["error"]?.stringValue, "stale_token")
        XCTAssertEqual(try release(follower, "r1", "alice").status, 200)
        XCTAssertEqual(try release(follower, "r1", "alice").json?["error"]?.stringValue, "not_held")
        XCTAssertEqual(try status(follower, "r1")["mode"]?.stringValue, "free")
        let renew = try follower.client().post("/lock/renew", .object([("resource", .string("r1")), ("owner", .string("alice")), ("ttl_ms", .int(1000))]))
        XCTAssertEqual(renew.status, 404)
    }

    /// The stored Raft log entry at `index` (its bytes, "" when absent): the log is a list
    /// whose first element follows the snapshot.
    private func storedEntry(_ redis: RedisServer, _ log: String, _ index: String) throws -> String {
        try redis.cli("EVAL", """
            local base = tonumber(redis.call('HGET', KEYS[2], 'index') or '0') + 1
            return redis.call('LINDEX', KEYS[1], tonumber(ARGV[1]) - base) or ''
            """, "2", log, log.replacingOccurrences(of: ":log", with: ":snapshot"), index)
    }

    /// A proposal the leader accepted but could not store (here its log key briefly holds a
    /// string, so the write fails with WRONGTYPE): once the log is back, the node writes back
    /// what it held in memory, or, if the proposal was lost with the rebuilt core, a new term's
    /// entry takes its index and the origin proposes it again. Either way the client gets its
    /// grant, not a 503 at its request's 10 s deadline.
    func testALostProposalIsProposedAgainNotLeftToItsDeadline() throws {
        let redis = try RedisServer()
        let c = try TestCluster(nodes: 1, redis: redis)
        try waitLeader(c)
        let n1 = c.nodes[0]
        XCTAssertEqual(try acquire(n1, "warm", "o").status, 200)
        let log = "concord:\(c.cluster):raft:{n1}:log"
        let failuresBefore = n1.log.components(separatedBy: "raft persistence failed").count
        _ = try redis.cli("EVAL", "redis.call('RENAME', KEYS[1], KEYS[2]); redis.call('SET', KEYS[1], 'x')", "2", log, log + "-saved")
        let started = Date()
        let pendingAcquire = Async { try self.acquire(n1, "lost", "o") }
        try waitUntil("the leader's write is refused", seconds: 5) {
            n1.log.components(separatedBy: "raft persistence failed").count > failuresBefore
        }
        _ = try redis.cli("EVAL", "redis.call('DEL', KEYS[1]); redis.call('RENAME', KEYS[2], KEYS[1])", "2", log, log + "-saved")
        let r = try pendingAcquire.result(seconds: 20)
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertLessThan(elapsed, 6, "answered only at the request's deadline")
        // Either the node wrote back the entry it held in memory (a failed write is stored late:
        // nothing lost), or the proposal was lost with the rebuilt core and proposed again.
        let metrics = try n1.client().get("/metrics").text
        XCTAssertTrue(metrics.contains("concord_lock_proposals_lost_total") || metrics.contains("concord_raft_state_written_back_total"),
                      "neither written back nor detected as lost")
        XCTAssertEqual(try status(n1, "lost")["holders"]?.arrayValue?.count, 1)
        XCTAssertEqual(try status(n1, "warm")["holders"]?.arrayValue?.count, 1, "the stored log came back whole")
    }

    func testKillingTheLeaderKeepsEveryGrantAndTokensKeepGrowing() throws {
        let c = try TestCluster(nodes: 3)
        let l = try waitLeader(c)
        var grants: [String: JSONValue] = [:]
        for i in 0..<5 {
            let r = try acquire(c.nodes[i % 3], "k\(i)", "owner\(i)", ttl: 60_000)
            XCTAssertEqual(r.status, 200, r.text)
            grants["k\(i)"] = r.json!
        }
        let maxToken = grants.values.compactMap { $0["fencing_token"]?.int64Value }.max()!
        let killedAt = Date()
        l.kill9()
        let survivors = c.nodes.filter { $0.id != l.id }
        let newLeader = try waitLeader(c, among: survivors, seconds: 5)
        print("new leader \(newLeader.id) after \(Date().timeIntervalSince(killedAt)) s")
        for (resource, grant) in grants {
            let s = try status(survivors[0], resource)
            let holder = s["holders"]?.arrayValue?.first
            XCTAssertEqual(holder?["owner"], grant["owner"], resource)
            XCTAssertEqual(holder?["fencing_token"], grant["fencing_token"], resource)
            XCTAssertGreaterThanOrEqual(holder?["expires_at_ms"]?.int64Value ?? 0, grant["expires_at_ms"]?.int64Value ?? .max, "a lease must never be shortened")
        }
        let next = try acquire(survivors[1], "fresh", "zed")
        XCTAssertEqual(next.status, 200, next.text)
        XCTAssertGreaterThan(next.json?["fencing_token"]?.int64Value ?? 0, maxToken)
        // The killed node comes back from its Redis state and catches up.
        try l.start()
        try l.waitHealthy()
        try waitUntil("restarted node catches up", seconds: 10) {
            let leaderCommit = try newLeader.client().get("/raft/state").json?["commit_index"]?.int64Value ?? -1
            let mine = try l.client().get("/raft/state").json?["commit_index"]?.int64Value ?? -2
            return mine >= leaderCommit && leaderCommit > 0
        }
        XCTAssertEqual(try status(l, "fresh")["holders"]?.arrayValue?.first?["owner"]?.stringValue, "zed")
    }

    func testRedisRestartWithAOFLosesNoGrant() throws {
        let c = try TestCluster(nodes: 3, aof: true)
        try waitLeader(c)
        let r = try acquire(c.nodes[1], "durable", "dora", ttl: 120_000)
        XCTAssertEqual(r.status, 200, r.text)
        try c.redis.restart()
        try waitLeader(c, seconds: 15)
        try waitUntil("status readable after the restart", seconds: 10) {
            try c.nodes[2].client().get("/lock/status/durable").status == 200
        }
        let s = try status(c.nodes[2], "durable")
        XCTAssertEqual(s["holders"]?.arrayValue?.first?["owner"]?.stringValue, "dora", c.dumpLogs())
        XCTAssertEqual(s["holders"]?.arrayValue?.first?["fencing_token"], r.json?["fencing_token"])
        var next: HTTPResponse?
        try waitUntil("a new grant after the restart", seconds: 10) {
            next = try acquire(c.nodes[0], "after", "eve")
            return next?.status == 200
        }
        XCTAssertGreaterThan(next?.json?["fencing_token"]?.int64Value ?? 0, r.json?["fencing_token"]?.int64Value ?? .max)
    }

    /// Redis restarted without persistence loses every node's Raft state at once. The running
    /// nodes notice (their connections dropped), find Redis behind what they hold in memory,
    /// write their state back and go on: every grant is kept with its token, and the next token
    /// is larger (Jepsen's "tokens must never go backwards").
    func testRedisRestartWithoutPersistenceKeepsGrantsByWritingStateBack() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        try grantsSurvive(c, prefix: "v") {
            try c.redis.restart()
            try self.waitLeader(c, seconds: 15)
        }
        XCTAssertTrue(c.nodes.contains { $0.log.contains("writing it back from memory") }, c.dumpLogs())
        XCTAssertFalse(c.nodes.contains { $0.log.contains("corrupt") }, c.dumpLogs())
    }

    /// Grants 3 locks, runs `loseData`, then requires a new grant with a larger token and every
    /// earlier grant held with its token. Returns the new token.
    @discardableResult
    private func grantsSurvive(_ c: TestCluster, prefix: String, _ loseData: () throws -> Void) throws -> Int64 {
        var tokens: [String: JSONValue] = [:]
        for i in 0..<3 {
            let r = try acquire(c.nodes[i], "\(prefix)\(i)", "o", ttl: 120_000)
            XCTAssertEqual(r.status, 200)
            tokens["\(prefix)\(i)"] = r.json?["fencing_token"]
        }
        try loseData()
        var next: HTTPResponse?
        try waitUntil("grants again after losing Redis's data", seconds: 15) {
            next = try self.acquire(c.nodes[1], "\(prefix)-after", "o2")
            return next?.status == 200
        }
        let token = next?.json?["fencing_token"]?.int64Value ?? 0
        XCTAssertGreaterThan(token, tokens.values.compactMap { $0.int64Value }.max() ?? .max, c.dumpLogs())
        for (resource, held) in tokens {
            let s = try status(c.nodes[2], resource)
            XCTAssertEqual(s["holders"]?.arrayValue?.first?["fencing_token"], held, "\(resource) lost: \(s)")
        }
        return token
    }

    /// FLUSHALL empties Redis without dropping any connection: the next Raft write finds its
    /// node's hard state gone and refuses ("LOST"), and the node writes its state back from
    /// memory instead of starting a log with a gap (which would leave it unable to load).
    func testFlushallIsNoticedAndTheStateWrittenBack() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        let next = try grantsSurvive(c, prefix: "f") { _ = try c.redis.cli("FLUSHALL") }
        // Every node can still load its state (a restart reads what was written back).
        let n = c.nodes[0]
        n.kill9()
        try n.start()
        try waitUntil("the restarted node catches up", seconds: 10) {
            (try? n.client(timeoutMs: 1000).get("/raft/state").json?["commit_index"]?.int64Value ?? 0) ?? 0 >= next
        }
        XCTAssertFalse(n.log.contains("corrupt"), n.log)
    }

    /// The lock table is snapshotted into Redis and the log compacted past the threshold; a node
    /// that was down meanwhile catches up from the leader's snapshot (sent over pub/sub), and a
    /// restarted node rebuilds from its own snapshot.
    func testSnapshotsCompactTheLogAndALaggingNodeCatchesUpFromOne() throws {
        let c = try TestCluster(nodes: 3, environment: ["CONCORD_SNAPSHOT_ENTRIES": "50"])
        let l = try waitLeader(c)
        let lagging = c.nodes.first { $0.id != l.id }!
        lagging.kill9()
        let live = c.nodes.filter { $0.id != lagging.id }
        try waitLeader(c, among: live)
        XCTAssertEqual(try acquire(live[0], "kept", "holder", ttl: 120_000).status, 200)
        for i in 0..<80 {
            XCTAssertEqual(try acquire(live[i % 2], "churn", "o\(i)").status, 200)
            XCTAssertEqual(try release(live[(i + 1) % 2], "churn", "o\(i)").status, 200)
        }
        let leaderState = try live[0].client().get("/raft/state").json!
        XCTAssertGreaterThan(leaderState["snapshot_index"]?.int64Value ?? 0, 0, "the log should have been compacted")
        let logSize = Int(try c.redis.cli("LLEN", "concord:\(c.cluster):raft:{\(live[0].id)}:log")) ?? -1
        XCTAssertLessThan(logSize, 120, "compaction must bound the stored log")
        try lagging.start()
        try lagging.waitHealthy()
        try waitUntil("the lagging node installs a snapshot and catches up", seconds: 15) {
            let mine = try lagging.client().get("/raft/state").json
            let commit = try live[0].client().get("/raft/state").json?["commit_index"]?.int64Value ?? -1
            return (mine?["commit_index"]?.int64Value ?? -2) >= commit && (mine?["snapshot_index"]?.int64Value ?? 0) > 0
        }
        XCTAssertEqual(try status(lagging, "kept")["holders"]?.arrayValue?.first?["owner"]?.stringValue, "holder")
        // A restart rebuilds from the stored snapshot plus the log after it.
        lagging.kill9()
        try lagging.start()
        try lagging.waitHealthy()
        try waitLeader(c)
        XCTAssertEqual(try status(lagging, "kept")["holders"]?.arrayValue?.first?["owner"]?.stringValue, "holder")
        let next = try acquire(lagging, "after-snapshot", "z")
        XCTAssertEqual(next.status, 200)
    }

    /// A grant is answered only once its entry is stored: with Redis refusing writes for a while,
    /// a single-node cluster must hold the answer back, and every 200 must name an entry that is
    /// in the stored log. Also survives a SCRIPT FLUSH storm without a gap in the stored log.
    func testGrantsAreAnsweredOnlyAfterTheirEntryIsStored() throws {
        let redis = try RedisServer()
        let c = try TestCluster(nodes: 1, redis: redis)
        try waitLeader(c)
        let n1 = c.nodes[0]
        let log = "concord:\(c.cluster):raft:{n1}:log"
        XCTAssertEqual(try acquire(n1, "warm", "o").status, 200)
        try redis.cli("CLIENT", "PAUSE", "1000", "WRITE")
        let paused = Date()
        let r = try acquire(n1, "paused", "o")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertGreaterThan(Date().timeIntervalSince(paused), 0.8, "answered while Redis could not store the entry")
        let token = String(r.json?["fencing_token"]?.int64Value ?? -1)
        XCTAssertNotEqual(try storedEntry(redis, log, token), "", "the granting entry must be stored")
        // SCRIPT FLUSH while grants flow: NOSCRIPT reloads must never reorder or drop writes.
        let redisPort = redis.port
        let flusherDone = DispatchSemaphore(value: 0)
        let flusher = Thread {
            let client = RESPTestClient(port: redisPort)
            for _ in 0..<40 { _ = try? client.command(["SCRIPT", "FLUSH"]); usleep(20_000) }
            client.close()
            flusherDone.signal()
        }
        flusher.start()
        for i in 0..<60 {
            let g = try acquire(n1, "f\(i % 5)", "o\(i)", ttl: 1000)
            XCTAssertTrue([200, 409].contains(g.status), g.text)
            if g.status == 200 {
                let t = String(g.json?["fencing_token"]?.int64Value ?? -1)
                XCTAssertNotEqual(try storedEntry(redis, log, t), "", "entry \(t) not stored")
            }
        }
        // The storm ends before the restart (a proposal a NOSCRIPT recovery drops is proposed
        // again once a new term's entry takes its index; testALostProposalIsProposedAgain...).
        XCTAssertEqual(flusherDone.wait(timeout: .now() + 30), .success, "SCRIPT FLUSH storm did not end")
        n1.kill9()
        try n1.start()
        try n1.waitHealthy()
        try waitLeader(c)
        XCTAssertFalse(n1.log.contains("corrupt"), n1.log)
        XCTAssertEqual(try acquire(n1, "after-restart", "o").status, 200)
    }

    /// Builds before the list kept a node's Raft log as a zset (score = index): a node started
    /// over such a log converts it and keeps every grant, with its token.
    func testALogStoredByAnEarlierBuildAsAZsetIsConverted() throws {
        let redis = try RedisServer()
        let c = try TestCluster(nodes: 1, redis: redis)
        try waitLeader(c)
        let n1 = c.nodes[0]
        let granted = try acquire(n1, "kept", "o")
        XCTAssertEqual(granted.status, 200, granted.text)
        let token = granted.json?["fencing_token"]?.int64Value
        n1.kill9()
        let log = "concord:\(c.cluster):raft:{n1}:log"
        let converted = try redis.cli("EVAL", """
            local base = tonumber(redis.call('HGET', KEYS[2], 'index') or '0') + 1
            local e = redis.call('LRANGE', KEYS[1], 0, -1)
            redis.call('DEL', KEYS[1])
            for i, v in ipairs(e) do redis.call('ZADD', KEYS[1], base + i - 1, v) end
            return #e
            """, "2", log, log.replacingOccurrences(of: ":log", with: ":snapshot"))
        XCTAssertGreaterThan(Int(converted) ?? 0, 0)
        XCTAssertEqual(try redis.cli("TYPE", log), "zset")
        try n1.start()
        try n1.waitHealthy()
        try waitLeader(c)
        XCTAssertEqual(try redis.cli("TYPE", log), "list")
        let held = try status(n1, "kept")
        XCTAssertEqual(held["holders"]?.arrayValue?.first?["owner"]?.stringValue, "o", "\(held)")
        XCTAssertEqual(held["holders"]?.arrayValue?.first?["fencing_token"]?.int64Value, token, "\(held)")
        XCTAssertTrue(n1.log.contains("converted from an earlier build"), n1.log)
    }

    func testDeadlockBetweenOwnersOnDifferentNodesPicksTheYoungest() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        let n1 = c.node("n1"), n2 = c.node("n2")
        XCTAssertEqual(try acquire(n1, "A", "old").status, 200)
        XCTAssertEqual(try acquire(n2, "B", "young").status, 200)
        let oldWaits = Async { try self.acquire(n1, "B", "old", wait: 20_000) }
        try waitUntil("old waits for B", seconds: 5) { try self.status(n2, "B")["waiters"]?.arrayValue?.count == 1 }
        let youngWaits = try acquire(n2, "A", "young", wait: 20_000)
        XCTAssertEqual(youngWaits.status, 409, youngWaits.text)
        XCTAssertEqual(youngWaits.json?["error"]?.stringValue, "deadlock")
        let cycle = youngWaits.json?["cycle"]?.arrayValue?.compactMap(\.stringValue) ?? []
        XCTAssertEqual(Set(cycle), ["old", "young"])
        XCTAssertEqual(cycle.first, "young")
        // The victim keeps what it holds; once it releases, the older owner gets B.
        XCTAssertEqual(try status(n1, "B")["holders"]?.arrayValue?.first?["owner"]?.stringValue, "young")
        XCTAssertEqual(try release(n2, "B", "young").status, 200)
        let granted = try oldWaits.result()
        XCTAssertEqual(granted.status, 200, granted.text)
        XCTAssertEqual(granted.json?["owner"]?.stringValue, "old")
    }

    func testWaitersAreServedInFIFOOrderAndSharedDoesNotOvertakeExclusive() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        let n = c.nodes
        XCTAssertEqual(try acquire(n[0], "q", "holder").status, 200)
        let w1 = Async { try self.acquire(n[1], "q", "w1", mode: "exclusive", wait: 20_000) }
        try waitUntil("w1 queued", seconds: 5) { try self.status(n[0], "q")["waiters"]?.arrayValue?.count == 1 }
        let w2 = Async { try self.acquire(n[2], "q", "w2", mode: "shared", wait: 20_000) }
        try waitUntil("w2 queued", seconds: 5) { try self.status(n[0], "q")["waiters"]?.arrayValue?.count == 2 }
        let w3 = Async { try self.acquire(n[0], "q", "w3", mode: "shared", wait: 20_000) }
        try waitUntil("w3 queued", seconds: 5) { try self.status(n[0], "q")["waiters"]?.arrayValue?.count == 3 }
        let order = try status(n[1], "q")["waiters"]?.arrayValue?.compactMap { $0["owner"]?.stringValue }
        XCTAssertEqual(order, ["w1", "w2", "w3"])
        XCTAssertEqual(try release(n[0], "q", "holder").status, 200)
        let g1 = try w1.result()
        XCTAssertEqual(g1.status, 200)
        // w2 and w3 (shared) must not have overtaken w1 (exclusive): they still wait.
        XCTAssertEqual(try status(n[2], "q")["waiters"]?.arrayValue?.count, 2)
        XCTAssertEqual(try release(n[1], "q", "w1").status, 200)
        let g2 = try w2.result(), g3 = try w3.result()
        XCTAssertEqual(g2.status, 200); XCTAssertEqual(g3.status, 200)
        XCTAssertEqual(try status(n[0], "q")["mode"]?.stringValue, "shared")
        XCTAssertGreaterThan(g2.json?["fencing_token"]?.int64Value ?? 0, g1.json?["fencing_token"]?.int64Value ?? .max)
    }

    func testAnExpiringLeasePassesTheLockToTheNextWaiter() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        let first = try acquire(c.nodes[0], "lease", "short", ttl: 400)
        XCTAssertEqual(first.status, 200)
        let started = Date()
        let next = try acquire(c.nodes[1], "lease", "patient", wait: 10_000)
        XCTAssertEqual(next.status, 200, next.text)
        XCTAssertGreaterThan(next.json?["fencing_token"]?.int64Value ?? 0, first.json?["fencing_token"]?.int64Value ?? .max)
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        // A wait that times out answers 409 timeout.
        let timeout = try acquire(c.nodes[2], "lease", "late", wait: 300)
        XCTAssertEqual(timeout.status, 409)
        XCTAssertEqual(timeout.json?["error"]?.stringValue, "timeout")
    }

    /// A client that closes its connection while its acquire waits is gone: the wait is
    /// withdrawn (not left to take the lock later for nobody); with the holder's release the
    /// lock is free. Also when the serving node stops (SIGTERM): its waits are withdrawn.
    func testAWaitWhoseClientLeftIsWithdrawn() throws {
        let c = try TestCluster(nodes: 3)
        let l = try waitLeader(c)
        let follower = c.nodes.first { $0.id != l.id }!
        XCTAssertEqual(try acquire(c.nodes[0], "ghost", "A").status, 200)
        // B waits through a follower on a raw connection, closed after 3 s with no answer read.
        let body = #"{"resource":"ghost","owner":"B","wait_ms":60000}"#
        let request = Array("POST /lock/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        let port = follower.port
        let gone = Async { rawHTTP(port: port, request, readTimeoutMs: 3000) }
        try waitUntil("B queued", seconds: 5) { try self.status(l, "ghost")["waiters"]?.arrayValue?.count == 1 }
        XCTAssertEqual(try gone.result(), "", "the wait must not have been answered")
        let waited = try waitUntil("B's wait withdrawn", seconds: 3) { try self.status(l, "ghost")["waiters"]?.arrayValue?.count == 0 }
        print("wait withdrawn \(waited) s after its client closed")
        XCTAssertEqual(try release(c.nodes[0], "ghost", "A").status, 200)
        XCTAssertEqual(try status(c.nodes[2], "ghost")["mode"]?.stringValue, "free")
        // B asks again and is served normally.
        XCTAssertEqual(try acquire(follower, "ghost", "B").status, 200)

        // A node that stops withdraws the waits it holds.
        let stopping = Async { try self.acquire(follower, "ghost", "C", wait: 60_000) }
        try waitUntil("C queued", seconds: 5) { try self.status(l, "ghost")["waiters"]?.arrayValue?.count == 1 }
        XCTAssertEqual(follower.stop(), 0)
        XCTAssertEqual(try stopping.result().status, 503)
        // By the stopping node's own cancel; failing that (it got no time to forward it), by the
        // leader once the node is found dead.
        try waitUntil("C's wait withdrawn", seconds: 15) { try self.status(l, "ghost")["waiters"]?.arrayValue?.count == 0 }
    }

    /// With no majority, a waiting acquire is answered 503 (with Retry-After) soon after its
    /// wait_ms, not when the 10 s request deadline passes, nor granted seconds late.
    func testAWaitNoLeaderCanDecideIsAnswered503SoonAfterItsWait() throws {
        let c = try TestCluster(nodes: 3)
        let l = try waitLeader(c)
        XCTAssertEqual(try acquire(l, "undecided", "A").status, 200)
        for n in c.nodes where n.id != l.id { n.kill9() }
        let started = Date()
        let r = try acquire(l, "undecided", "B", wait: 500)
        let took = Date().timeIntervalSince(started)
        XCTAssertEqual(r.status, 503, r.text)
        XCTAssertNotNil(r.headers["retry-after"], "\(r.headers)")
        XCTAssertLessThan(took, 5, "answered \(took) s after a 0.5 s wait")
    }

    /// A holds `resource` through the leader; B waits for it through a follower, which is then
    /// SIGKILLed (B's client connection goes with it). Returns (leader, killed follower).
    private func holdThenWaitThroughAFollowerAndKillIt(_ c: TestCluster, _ resource: String) throws -> (NodeProcess, NodeProcess) {
        let l = try waitLeader(c)
        let follower = c.nodes.first { $0.id != l.id }!
        XCTAssertEqual(try acquire(l, resource, "A").status, 200)
        let waiting = Async { try? self.acquire(follower, resource, "B", wait: 120_000) }
        try waitUntil("B queued", seconds: 5) { try self.status(l, resource)["waiters"]?.arrayValue?.count == 1 }
        follower.kill9()
        _ = try waiting.result()
        return (l, follower)
    }

    /// A holder's re-acquire that was abandoned (503 with no majority) and committed later is
    /// answered with the holder's existing grant; the node must not release that grant (it is
    /// the hold the client already had), only grants the abandoned request itself made.
    func testAnAbandonedReacquireDoesNotReleaseTheHoldersGrant() throws {
        let c = try TestCluster(nodes: 3)
        let l = try waitLeader(c)
        let held = try acquire(l, "kept", "A", ttl: 120_000)
        XCTAssertEqual(held.status, 200)
        let followers = c.nodes.filter { $0.id != l.id }
        for n in followers { n.kill9() }
        XCTAssertEqual(try acquire(l, "kept", "A", ttl: 120_000, wait: 300).status, 503)
        for n in followers { try n.start() }
        try waitLeader(c, seconds: 15)
        // Entries are applied in log order: once later writes are answered, the re-acquire (and
        // any release it would have caused, proposed when it applied) is applied too.
        try waitUntil("writes again", seconds: 15) { try self.acquire(c.nodes[0], "later1", "X").status == 200 }
        XCTAssertEqual(try acquire(c.nodes[1], "later2", "Y").status, 200)
        let s = try status(c.nodes[2], "kept")
        XCTAssertEqual(s["holders"]?.arrayValue?.first?["owner"]?.stringValue, "A", "\(s)")
        XCTAssertEqual(s["holders"]?.arrayValue?.first?["fencing_token"], held.json?["fencing_token"], "\(s)")
    }

    /// A node SIGKILLed with a client's acquire waiting took that client's connection with it;
    /// restarted, it withdraws the wait its earlier run left queued (it would otherwise take
    /// the lock for nobody when the holder lets go).
    func testARestartedNodeWithdrawsTheWaitsOfItsEarlierRun() throws {
        let c = try TestCluster(nodes: 3)
        let (l, follower) = try holdThenWaitThroughAFollowerAndKillIt(c, "orphan")
        XCTAssertEqual(try status(l, "orphan")["waiters"]?.arrayValue?.count, 1, "the wait outlives its node")
        try follower.start()
        let took = try waitUntil("the earlier run's wait withdrawn", seconds: 10) { try self.status(l, "orphan")["waiters"]?.arrayValue?.count == 0 }
        print("wait of the killed run withdrawn \(took) s after the restart began")
        XCTAssertEqual(try release(l, "orphan", "A").status, 200)
        XCTAssertEqual(try status(l, "orphan")["mode"]?.stringValue, "free")
    }

    /// A node that dies and stays down: once the failure detector has found it dead for 5 s,
    /// the leader withdraws the waits it queued (its clients went with it).
    func testTheLeaderWithdrawsTheWaitsOfANodeThatStaysDown() throws {
        let c = try TestCluster(nodes: 3)
        let (l, _) = try holdThenWaitThroughAFollowerAndKillIt(c, "stranded")
        let took = try waitUntil("the dead node's wait withdrawn", seconds: 20) { try self.status(l, "stranded")["waiters"]?.arrayValue?.count == 0 }
        print("wait of a node that stayed down withdrawn \(took) s after its kill")
        XCTAssertGreaterThan(took, 3, "withdrawn before the node could be found dead")
        XCTAssertEqual(try release(l, "stranded", "A").status, 200)
        XCTAssertEqual(try status(l, "stranded")["mode"]?.stringValue, "free")
    }

    /// An owner that asks again through the same node while it waits (its first request gave
    /// up or is still open) takes its wait over, in its place, instead of being refused: the
    /// first request is told 409 `conflict` (superseded) and the second gets the grant. Through
    /// another node the second request is refused.
    func testAnOwnerAskingAgainWhileWaitingTakesItsWaitOver() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        XCTAssertEqual(try acquire(c.nodes[0], "again", "A").status, 200)
        let first = Async { try self.acquire(c.nodes[1], "again", "B", wait: 60_000) }
        try waitUntil("B queued", seconds: 5) { try self.status(c.nodes[0], "again")["waiters"]?.arrayValue?.count == 1 }
        let third = Async { try self.acquire(c.nodes[0], "again", "D", wait: 60_000) }
        try waitUntil("D queued", seconds: 5) { try self.status(c.nodes[0], "again")["waiters"]?.arrayValue?.count == 2 }
        XCTAssertEqual(try acquire(c.nodes[2], "again", "B", wait: 60_000).status, 409)
        let second = Async { try self.acquire(c.nodes[1], "again", "B", ttl: 12_345, wait: 60_000) }
        let superseded = try first.result()
        XCTAssertEqual(superseded.status, 409, superseded.text)
        XCTAssertEqual(superseded.json?["error"]?.stringValue, "conflict")
        let order = try status(c.nodes[1], "again")["waiters"]?.arrayValue?.compactMap { $0["owner"]?.stringValue }
        XCTAssertEqual(order, ["B", "D"], "the wait keeps its place")
        XCTAssertEqual(try release(c.nodes[0], "again", "A").status, 200)
        let granted = try second.result()
        XCTAssertEqual(granted.status, 200, granted.text)
        XCTAssertEqual(granted.json?["owner"]?.stringValue, "B")
        // Without a wait the retry is refused and the wait is untouched.
        XCTAssertEqual(try acquire(c.nodes[1], "again", "D").status, 409)
        XCTAssertEqual(try release(c.nodes[0], "again", "B").status, 200)
        XCTAssertEqual(try third.result().status, 200)
    }

    func testRequestIDRetryMakesNoSecondGrant() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        let a = try acquire(c.nodes[0], "idem", "o", requestId: "req-1")
        let b = try acquire(c.nodes[1], "idem", "o", requestId: "req-1")
        XCTAssertEqual(a.status, 200); XCTAssertEqual(b.status, 200)
        XCTAssertEqual(a.json?["fencing_token"], b.json?["fencing_token"])
        // Once that grant has ended, a retry is not told "granted" (another owner holds it now).
        XCTAssertEqual(try release(c.nodes[0], "idem", "o").status, 200)
        XCTAssertEqual(try acquire(c.nodes[1], "idem", "p").status, 200)
        let late = try acquire(c.nodes[2], "idem", "o", requestId: "req-1")
        XCTAssertEqual(late.status, 409, late.text)
        XCTAssertEqual(late.json?["error"]?.stringValue, "conflict")
        XCTAssertEqual(try status(c.nodes[0], "idem")["holders"]?.arrayValue?.compactMap { $0["owner"]?.stringValue }, ["p"])
    }

    func testBadInputAnswers400AndChangesNothing() throws {
        let c = try TestCluster(nodes: 3)
        try waitLeader(c)
        let n = c.nodes[1].client()
        let bodies = [
            "", "{", "[]", "\"x\"", "{}",
            #"{"owner":"a"}"#, #"{"resource":"r"}"#, #"{"resource":1,"owner":"a"}"#, #"{"resource":"r","owner":null}"#,
            #"{"resource":"","owner":"a"}"#, #"{"resource":"r","owner":""}"#,
            #"{"resource":"\#(String(repeating: "x", count: 257))","owner":"a"}"#, #"{"resource":"a\u0001b","owner":"a"}"#,
            #"{"resource":"r","owner":"a","mode":"weird"}"#, #"{"resource":"r","owner":"a","mode":1}"#,
            #"{"resource":"r","owner":"a","ttl_ms":99}"#, #"{"resource":"r","owner":"a","ttl_ms":3600001}"#, #"{"resource":"r","owner":"a","ttl_ms":"100"}"#,
            #"{"resource":"r","owner":"a","ttl_ms":1000.5}"#, #"{"resource":"r","owner":"a","wait_ms":-1}"#, #"{"resource":"r","owner":"a","wait_ms":300001}"#,
            #"{"resource":"r","owner":"a","request_id":""}"#, #"{"resource":"r","owner":"a","request_id":5}"#,
        ]
        for body in bodies {
            let r = try n.request("POST", "/lock/acquire", body: Array(body.utf8))
            XCTAssertEqual(r.status, 400, "acquire \(body): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "bad_request", body)
        }
        for body in [#"{"owner":"a"}"#, #"{"resource":"r","owner":"a","fencing_token":"x"}"#, #"{"resource":"r","owner":"a","fencing_token":-1}"#] {
            XCTAssertEqual(try n.request("POST", "/lock/release", body: Array(body.utf8)).status, 400, body)
        }
        for body in [#"{"resource":"r","owner":"a"}"#, #"{"resource":"r","owner":"a","ttl_ms":50}"#] {
            XCTAssertEqual(try n.request("POST", "/lock/renew", body: Array(body.utf8)).status, 400, body)
        }
        XCTAssertEqual(try n.get("/lock/status/\(String(repeating: "y", count: 300))").status, 400)
        XCTAssertEqual(try n.get("/lock/status").json?["locks"]?.arrayValue?.count, 0, "bad input must change nothing")
        XCTAssertEqual(try n.request("PUT", "/lock/acquire").status, 405)
    }

    func testSIGTERMOnTheLeaderHandsLeadershipOverAtOnce() throws {
        let c = try TestCluster(nodes: 3)
        let l = try waitLeader(c)
        XCTAssertEqual(try acquire(c.nodes[0], "keep", "k").status, 200)
        let stoppedAt = Date()
        XCTAssertEqual(l.stop(), 0)
        let survivors = c.nodes.filter { $0.id != l.id }
        try waitLeader(c, among: survivors, seconds: 3)
        print("leadership handed over; new leader known \(Date().timeIntervalSince(stoppedAt)) s after SIGTERM")
        XCTAssertEqual(try status(survivors[0], "keep")["holders"]?.arrayValue?.first?["owner"]?.stringValue, "k")
    }
}
