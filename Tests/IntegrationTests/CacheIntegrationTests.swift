import Foundation
import XCTest
@testable import Runtime

/// The MESI near cache end to end: real redis-server, three real node processes (CONTRACT §2.3).
final class CacheIntegrationTests: XCTestCase {
    // MARK: helpers

    private func status(_ node: NodeProcess, _ key: String) throws -> (state: String, version: Int64?) {
        let r = try node.client().get("/cache/status/\(key)")
        XCTAssertEqual(r.status, 200, r.text)
        return (r.json?["state"]?.stringValue ?? "?", r.json?["version"]?.int64Value)
    }

    @discardableResult
    private func write(_ node: NodeProcess, _ key: String, _ value: JSONValue, file: StaticString = #filePath, line: UInt = #line) throws -> (version: Int64, state: String) {
        let r = try node.client().post("/cache/write", .object([("key", .string(key)), ("value", value)]))
        XCTAssertEqual(r.status, 200, r.text, file: file, line: line)
        return (r.json?["version"]?.int64Value ?? -1, r.json?["state"]?.stringValue ?? "?")
    }

    private func read(_ node: NodeProcess, _ key: String) throws -> HTTPResponse { try node.client().get("/cache/read/\(key)") }

    private func counters(_ node: NodeProcess) throws -> JSONValue { try node.client().get("/cache/status").json ?? .null }

    // MARK: the MESI walk of issue 6, invalidate, delete, bad input

    func testMESIWalkInvalidateDeleteAndBadInput() throws {
        let c = try TestCluster(nodes: 3)
        let (n1, n2, n3) = (c.node("n1"), c.node("n2"), c.node("n3"))
        defer { if testRun?.hasSucceeded == false { print(c.dumpLogs()) } }

        // Never written: 404 everywhere, cached nowhere.
        XCTAssertEqual(try read(n1, "ghost").status, 404)
        XCTAssertEqual(try read(n1, "ghost").json?["error"]?.stringValue, "not_found")
        XCTAssertEqual(try status(n1, "ghost").state, "I")
        XCTAssertEqual(try c.redis.cli("EXISTS", "concord:\(c.cluster):cache:{ghost}:value"), "0")

        // write on n1 -> M
        let w1 = try write(n1, "k", .object([("a", .int(1))]))
        XCTAssertEqual(w1.state, "M")
        XCTAssertEqual(try status(n1, "k").state, "M")
        // write-through: Redis holds it already
        XCTAssertEqual(try c.redis.cli("HGET", "concord:\(c.cluster):cache:{k}:value", "value"), "{\"a\":1}")

        // read on n2 -> S, and n1 drops to S
        let r2 = try read(n2, "k")
        XCTAssertEqual(r2.status, 200, r2.text)
        XCTAssertEqual(r2.json?["value"], .object([("a", .int(1))]))
        XCTAssertEqual(r2.json?["version"]?.int64Value, w1.version)
        XCTAssertEqual(r2.json?["state"]?.stringValue, "S")
        XCTAssertEqual(try status(n1, "k").state, "S")
        XCTAssertEqual(try status(n2, "k").state, "S")

        // read on n3 -> S
        XCTAssertEqual(try read(n3, "k").json?["state"]?.stringValue, "S")

        // a second read on n3 is a hit (no Redis round trip): hits go up
        let hitsBefore = try counters(n3)["hits"]?.int64Value ?? -1
        XCTAssertEqual(try read(n3, "k").json?["state"]?.stringValue, "S")
        XCTAssertEqual(try counters(n3)["hits"]?.int64Value, hitsBefore + 1)

        // write on n3 -> M, every other copy I
        let w3 = try write(n3, "k", .string("second"))
        XCTAssertEqual(w3.state, "M")
        XCTAssertGreaterThan(w3.version, w1.version)
        XCTAssertEqual(try status(n1, "k").state, "I")
        XCTAssertEqual(try status(n2, "k").state, "I")
        XCTAssertEqual(try status(n3, "k").state, "M")

        // read on n1 sees the new value; n1 and n3 are S
        let r1 = try read(n1, "k")
        XCTAssertEqual(r1.json?["value"]?.stringValue, "second")
        XCTAssertEqual(r1.json?["version"]?.int64Value, w3.version)
        XCTAssertEqual(r1.json?["state"]?.stringValue, "S")
        XCTAssertEqual(try status(n3, "k").state, "S")

        // invalidate: every line I, the value stays in Redis
        let inv = try n2.client().request("DELETE", "/cache/invalidate/k")
        XCTAssertEqual(inv.status, 200, inv.text)
        XCTAssertEqual(inv.json?["invalidated"]?.boolValue, true)
        for n in [n1, n2, n3] { XCTAssertEqual(try status(n, "k").state, "I", n.id) }
        XCTAssertEqual(try c.redis.cli("HGET", "concord:\(c.cluster):cache:{k}:value", "value"), "\"second\"")

        // a lone reader of a key nobody caches -> E; then E -> M silently (no bus message)
        let rE = try read(n2, "k")
        XCTAssertEqual(rE.json?["state"]?.stringValue, "E", rE.text)
        XCTAssertEqual(rE.json?["value"]?.stringValue, "second")
        let sentBefore = try n2.client().get("/metrics").text.components(separatedBy: "\n").filter { $0.hasPrefix("concord_cache_bus_messages_total") && $0.contains("sent") }
        XCTAssertEqual(try write(n2, "k", .int(3)).state, "M")
        let sentAfter = try n2.client().get("/metrics").text.components(separatedBy: "\n").filter { $0.hasPrefix("concord_cache_bus_messages_total") && $0.contains("sent") }
        XCTAssertEqual(sentBefore, sentAfter, "E -> M must send no bus message")

        // delete: gone from Redis and from every node
        XCTAssertEqual(try read(n1, "k").json?["value"], .int(3))
        XCTAssertEqual(try read(n3, "k").json?["value"], .int(3))
        let del = try n1.client().post("/cache/delete", .object([("key", .string("k"))]))
        XCTAssertEqual(del.status, 200, del.text)
        XCTAssertEqual(del.json?["deleted"]?.boolValue, true)
        XCTAssertEqual(try c.redis.cli("EXISTS", "concord:\(c.cluster):cache:{k}:value"), "0")
        for n in [n1, n2, n3] {
            XCTAssertEqual(try status(n, "k").state, "I", n.id)
            XCTAssertEqual(try read(n, "k").status, 404, n.id)
        }
        XCTAssertEqual(try n1.client().post("/cache/delete", .object([("key", .string("k"))])).status, 404)
        // written again after a delete: versions keep growing
        XCTAssertGreaterThan(try write(n1, "k", .null).version, w3.version + 1)
        XCTAssertEqual(try read(n2, "k").json?["value"], .null)

        // keys with braces, colons and percent signs stay separate and share one hash tag
        try write(n1, "a}b", .int(1))
        try write(n1, "a%7Db", .int(2))
        XCTAssertEqual(try read(n2, "a%7Db").json?["value"], .int(1)) // path-decoded: "a}b"
        XCTAssertEqual(try read(n2, "a%257Db").json?["value"], .int(2))

        // ttl_ms: the value expires in Redis and in every cache
        let t = try n1.client().post("/cache/write", json: #"{"key":"t","value":1,"ttl_ms":300}"#)
        XCTAssertEqual(t.status, 200, t.text)
        XCTAssertEqual(try read(n2, "t").status, 200)
        usleep(450_000)
        XCTAssertEqual(try read(n2, "t").status, 404)
        XCTAssertEqual(try read(n1, "t").status, 404)

        // bad input: 400 naming the field; nothing changes
        let client = n1.client()
        for (body, field) in [(#"{"value":1}"#, "key"), (#"{"key":"x"}"#, "value"), (#"{"key":5,"value":1}"#, "key"),
                              (#"{"key":"","value":1}"#, "key"), (#"{"key":"x","value":1,"ttl_ms":0}"#, "ttl_ms"),
                              (#"{"key":"x","value":1,"ttl_ms":"5"}"#, "ttl_ms"), (#"{"key":"x","value":"\#(String(repeating: "a", count: 600_000))"}"#, "value")] {
            let r = try client.post("/cache/write", json: body)
            XCTAssertEqual(r.status, 400, "\(body.prefix(60)): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "bad_request")
            XCTAssertTrue(r.json?["message"]?.stringValue?.contains("'\(field)'") ?? false, r.text)
        }
        XCTAssertEqual(try client.post("/cache/write", json: "{nope").status, 400)
        XCTAssertEqual(try client.post("/cache/delete", json: "{}").status, 400)
        XCTAssertEqual(try client.get("/cache/read/" + String(repeating: "k", count: 300)).status, 400)
        XCTAssertEqual(try client.get("/cache/read/a%01b").status, 400)
        XCTAssertEqual(try client.request("PUT", "/cache/write", body: Array("{}".utf8)).status, 405)
        XCTAssertEqual(try read(n1, "x").status, 404)

        let s = try counters(n1)
        for field in ["capacity", "entries", "bytes", "hits", "misses", "evictions", "states"] { XCTAssertNotNil(s[field], "status misses \(field)") }
        for state in ["M", "E", "S"] { XCTAssertNotNil(s["states"]?[state]) }
        let metrics = try client.get("/metrics").text
        for name in ["concord_cache_hits_total", "concord_cache_misses_total", "concord_cache_lines", "concord_cache_bus_messages_total", "concord_cache_invalidation_rtt_seconds"] {
            XCTAssertTrue(metrics.contains(name), "metrics miss \(name)")
        }
        XCTAssertEqual(try client.get("/health").status, 200)
    }

    // MARK: the coherence checker

    /// One recorded operation: start and end on this process's monotonic clock (µs).
    private struct Op {
        var write: Bool
        var key: String
        var version: Int64   // 0: read found nothing (404)
        var value: JSONValue?
        var start: Int64
        var end: Int64
        var node: String
    }

    private final class Recorder: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var ops: [Op] = []
        private(set) var errors: [String] = []
        func add(_ op: Op) { lock.lock(); ops.append(op); lock.unlock() }
        func error(_ e: String) { lock.lock(); if errors.count < 20 { errors.append(e) }; lock.unlock() }
        var snapshot: ([Op], [String]) { lock.lock(); defer { lock.unlock() }; return (ops, errors) }
    }

    /// Runs 3 writers and 6 readers over 20 keys on random live nodes for `seconds`; `during` runs
    /// on the test thread meanwhile (faults). Returns the recorded operations.
    private func runWorkload(_ c: TestCluster, seconds: Double, live: @escaping @Sendable () -> [Int], during: () throws -> Void) throws -> [Op] {
        let recorder = Recorder()
        let ports = c.nodes.map(\.port)
        let ids = c.nodes.map(\.id)
        let start = EventLoop.monoMicros()
        let deadline = start + Int64(seconds * 1_000_000)
        let group = DispatchGroup()
        for worker in 0..<9 {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                let isWriter = worker < 3
                var clients = ports.map { HTTPClient(host: "127.0.0.1", port: $0, timeoutMs: 8000) }
                var seq = 0
                var rng = SystemRandomNumberGenerator()
                while EventLoop.monoMicros() < deadline {
                    let candidates = live()
                    guard let n = candidates.randomElement(using: &rng) else { break }
                    let key = "key\(Int.random(in: 0..<20, using: &rng))"
                    let t0 = EventLoop.monoMicros()
                    do {
                        if isWriter {
                            seq += 1
                            let value = JSONValue.object([("w", .int(worker)), ("n", .int(seq))])
                            let r = try clients[n].post("/cache/write", .object([("key", .string(key)), ("value", value)]))
                            let t1 = EventLoop.monoMicros()
                            guard r.status == 200, let v = r.json?["version"]?.int64Value else { recorder.error("write \(ids[n]) \(r.status) \(r.text)"); continue }
                            recorder.add(Op(write: true, key: key, version: v, value: value, start: t0, end: t1, node: ids[n]))
                        } else {
                            let r = try clients[n].get("/cache/read/\(key)")
                            let t1 = EventLoop.monoMicros()
                            if r.status == 404 {
                                recorder.add(Op(write: false, key: key, version: 0, value: nil, start: t0, end: t1, node: ids[n]))
                            } else if r.status == 200, let v = r.json?["version"]?.int64Value {
                                recorder.add(Op(write: false, key: key, version: v, value: r.json?["value"], start: t0, end: t1, node: ids[n]))
                            } else {
                                recorder.error("read \(ids[n]) \(r.status) \(r.text)")
                            }
                        }
                    } catch {
                        // A node killed under us: its operation has no known outcome.
                        clients[n] = HTTPClient(host: "127.0.0.1", port: ports[n], timeoutMs: 8000)
                        if candidates.count == ids.count && live().count == ids.count { recorder.error("\(ids[n]): \(error)") }
                        usleep(20_000)
                    }
                }
            }
            thread.start()
        }
        try during()
        group.wait()
        let (ops, errors) = recorder.snapshot
        XCTAssertTrue(errors.isEmpty, "operations failed: \(errors)")
        return ops
    }

    /// Zero reads that return a version older than a write that had returned before the read
    /// started; a read's value must be the value written at its version.
    private func checkCoherence(_ ops: [Op]) -> [String] {
        var violations: [String] = []
        var writesByKey: [String: [Op]] = [:]
        var valueAt: [String: JSONValue] = [:]
        for op in ops where op.write {
            writesByKey[op.key, default: []].append(op)
            valueAt["\(op.key)@\(op.version)"] = op.value
        }
        for key in writesByKey.keys { writesByKey[key]!.sort { $0.end < $1.end } }
        // Highest version returned by each moment, per key (prefix maximum over end times).
        var prefixMax: [String: [(end: Int64, version: Int64)]] = [:]
        for (key, writes) in writesByKey {
            var best: Int64 = 0
            prefixMax[key] = writes.map { best = max(best, $0.version); return ($0.end, best) }
        }
        for read in ops where !read.write {
            if let known = valueAt["\(read.key)@\(read.version)"], read.version > 0, known != read.value {
                violations.append("\(read.node) read \(read.key) v\(read.version) = \(read.value?.serialized() ?? "nil"), written \(known.serialized())")
            }
            guard let list = prefixMax[read.key] else { continue }
            // last write that ended before the read started
            var lo = 0, hi = list.count
            while lo < hi { let mid = (lo + hi) / 2; if list[mid].end < read.start { lo = mid + 1 } else { hi = mid } }
            if lo > 0, list[lo - 1].version > read.version {
                violations.append("\(read.node) read \(read.key) v\(read.version) after v\(list[lo - 1].version) had returned")
            }
        }
        return violations
    }

    func testCoherenceThreeWritersSixReadersTwentyKeys() throws {
        let c = try TestCluster(nodes: 3)
        defer { if testRun?.hasSucceeded == false { print(c.dumpLogs()) } }
        let ops = try runWorkload(c, seconds: 10, live: { [0, 1, 2] }, during: {})
        let reads = ops.filter { !$0.write }, writes = ops.filter(\.write)
        let violations = checkCoherence(ops)
        let hits = try c.nodes.map { try counters($0)["hits"]?.int64Value ?? 0 }.reduce(0, +)
        print("coherence: \(writes.count) writes, \(reads.count) reads, \(hits) hits, \(violations.count) violations")
        XCTAssertGreaterThan(writes.count, 100)
        XCTAssertGreaterThan(reads.count, 300)
        XCTAssertGreaterThan(hits, 0, "the cache should serve some reads")
        XCTAssertEqual(violations.count, 0, violations.prefix(10).joined(separator: "\n"))
    }

    func testCoherenceWithANodeKilledMidRunWritesStallAtMostOneLease() throws {
        let c = try TestCluster(nodes: 3)
        defer { if testRun?.hasSucceeded == false { print(c.dumpLogs()) } }
        final class Live: @unchecked Sendable { let lock = NSLock(); var nodes = [0, 1, 2]; var killedAt: Int64 = .max }
        let live = Live()
        let ops = try runWorkload(c, seconds: 9, live: { live.lock.lock(); defer { live.lock.unlock() }; return live.nodes }, during: {
            Thread.sleep(forTimeInterval: 3)
            live.lock.lock(); live.nodes = [0, 1]; live.killedAt = EventLoop.monoMicros(); live.lock.unlock()
            c.node("n3").kill9()
        })
        let violations = checkCoherence(ops)
        let after = ops.filter { $0.write && $0.start >= live.killedAt - 1_000_000 && $0.node != "n3" }
        let slowest = after.map { $0.end - $0.start }.max() ?? 0
        let laterWrites = ops.filter { $0.write && $0.start > live.killedAt + 3_000_000 }
        print("coherence with n3 killed: \(ops.count) ops, slowest write around the kill \(Double(slowest) / 1000) ms, \(laterWrites.count) writes after, \(violations.count) violations")
        XCTAssertEqual(violations.count, 0, violations.prefix(10).joined(separator: "\n"))
        // Lease 2 s: a write waits at most one lease for the dead holder (+ scheduling slack).
        XCTAssertLessThan(slowest, 3_500_000, "a write stalled longer than about one lease")
        XCTAssertGreaterThan(laterWrites.count, 20, "writes must keep flowing after the kill")
    }

    // MARK: a node's subscription cut

    /// The local ports of `pid`'s TCP connections to `remotePort` (from /proc).
    private func localPorts(pid: Int32, remotePort: Int) -> Set<Int> {
        var inodes: Set<String> = []
        let fdDir = "/proc/\(pid)/fd"
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? [] {
            var buffer = [CChar](repeating: 0, count: 256)
            let n = readlink("\(fdDir)/\(fd)", &buffer, 255)
            guard n > 0 else { continue }
            let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("socket:[") { inodes.insert(String(target.dropFirst(8).dropLast())) }
        }
        var ports: Set<Int> = []
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            // /proc files report size 0: read until EOF rather than by size.
            guard let handle = FileHandle(forReadingAtPath: file) else { continue }
            let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
            handle.closeFile()
            for line in text.split(separator: "\n").dropFirst() {
                let cols = line.split(separator: " ")
                guard cols.count > 9, inodes.contains(String(cols[9])) else { continue }
                let local = cols[1].split(separator: ":"), remote = cols[2].split(separator: ":")
                if let lp = Int(local.last ?? "", radix: 16), let rp = Int(remote.last ?? "", radix: 16), rp == remotePort { ports.insert(lp) }
            }
        }
        return ports
    }

    /// Kills one node's subscriber connection in Redis (CLIENT KILL ID of its pub/sub client).
    private func cutSubscription(_ c: TestCluster, _ node: NodeProcess) throws -> Bool {
        guard let pid = node.process?.processIdentifier else { return false }
        let ports = localPorts(pid: pid, remotePort: c.redis.port)
        let list = try c.redis.cli("CLIENT", "LIST")
        var killed = false
        for line in list.split(separator: "\n") {
            let fields = Dictionary(line.split(separator: " ").compactMap { f -> (String, String)? in
                let kv = f.split(separator: "=", maxSplits: 1)
                return kv.count == 2 ? (String(kv[0]), String(kv[1])) : nil
            }, uniquingKeysWith: { a, _ in a })
            guard let addr = fields["addr"], let port = Int(addr.split(separator: ":").last ?? ""), ports.contains(port),
                  let sub = Int(fields["sub"] ?? "0"), sub > 0, let id = fields["id"] else { continue }
            _ = try c.redis.cli("CLIENT", "KILL", "ID", id)
            killed = true
        }
        return killed
    }

    func testCutSubscriptionMakesThatNodesReadsMissNotGoStale() throws {
        let c = try TestCluster(nodes: 3)
        let (n1, n2) = (c.node("n1"), c.node("n2"))
        defer { if testRun?.hasSucceeded == false { print(c.dumpLogs()) } }
        var last = try write(n1, "cut", .int(0)).version
        for round in 1...6 {
            try waitUntil("n2 subscribed", seconds: 5) { try self.counters(n2)["subscribed"]?.boolValue == true }
            // n2 caches the key (a hit proves it is cached)
            XCTAssertEqual(try read(n2, "cut").json?["version"]?.int64Value, last)
            let hits = try counters(n2)["hits"]?.int64Value ?? 0
            XCTAssertEqual(try read(n2, "cut").json?["version"]?.int64Value, last)
            XCTAssertEqual(try counters(n2)["hits"]?.int64Value, hits + 1, "round \(round): second read should hit")
            XCTAssertTrue(try cutSubscription(c, n2), "could not find n2's subscriber connection")
            // n2's line fell to I: nothing is served from it, whatever the bus missed
            try waitUntil("n2 drops its line", seconds: 2) { try self.status(n2, "cut").state == "I" }
            last = try write(n1, "cut", .int(Int64(round))).version
            let misses = try counters(n2)["misses"]?.int64Value ?? 0
            let r = try read(n2, "cut")
            XCTAssertEqual(r.status, 200, r.text)
            XCTAssertEqual(r.json?["version"]?.int64Value, last, "round \(round): n2 returned a stale value")
            XCTAssertEqual(r.json?["value"], .int(Int64(round)))
            XCTAssertEqual(try counters(n2)["misses"]?.int64Value, misses + 1, "round \(round): the read after the cut must miss")
        }
        XCTAssertTrue(n2.log.contains("cache subscription lost"), "n2 should log the lost subscription")

        // The coherence checker while n2's subscription is cut every 400 ms: no stale read.
        let ops = try runWorkload(c, seconds: 5, live: { [0, 1, 2] }, during: {
            let end = Date().addingTimeInterval(4.5)
            while Date() < end {
                _ = try? cutSubscription(c, n2)
                Thread.sleep(forTimeInterval: 0.4)
            }
        })
        let violations = checkCoherence(ops)
        print("coherence with n2's subscription cut repeatedly: \(ops.count) ops, \(violations.count) violations")
        XCTAssertEqual(violations.count, 0, violations.prefix(10).joined(separator: "\n"))
        // Back to normal: n2 caches again once resubscribed.
        try waitUntil("n2 resubscribed", seconds: 5) { try self.counters(n2)["subscribed"]?.boolValue == true }
        _ = try read(n2, "cut")
        XCTAssertNotEqual(try status(n2, "cut").state, "I")
    }

    // MARK: write-back

    func testWriteBackFlushesOnSnoopWithinOneSecondAndOnSIGTERM() throws {
        let c = try TestCluster(nodes: 3, extraArguments: ["--cache-write-policy", "write-back"])
        let (n1, n2) = (c.node("n1"), c.node("n2"))
        defer { if testRun?.hasSucceeded == false { print(c.dumpLogs()) } }
        func stored(_ key: String) throws -> String { try c.redis.cli("HGET", "concord:\(c.cluster):cache:{\(key)}:value", "value") }

        // Snoop: a read elsewhere gets the dirty value at once (the M holder flushes, drops to S).
        let w = try write(n1, "wb", .string("dirty"))
        XCTAssertEqual(w.state, "M")
        let r = try read(n2, "wb")
        XCTAssertEqual(r.json?["value"]?.stringValue, "dirty", r.text)
        XCTAssertEqual(r.json?["version"]?.int64Value, w.version)
        XCTAssertEqual(try status(n1, "wb").state, "S")
        XCTAssertEqual(try stored("wb"), "\"dirty\"")

        // Within 1 s without any snoop.
        try write(n1, "timer", .int(42))
        try waitUntil("write-back within 1 s", seconds: 1.0) { try stored("timer") == "42" }

        // A write on another node supersedes a dirty copy: the newest value wins.
        try write(n1, "race", .int(1))
        try write(n2, "race", .int(2))
        XCTAssertEqual(try read(c.node("n3"), "race").json?["value"], .int(2))

        // SIGTERM: every acknowledged write reaches Redis before the node exits 0.
        var versions: [String: Int64] = [:]
        for i in 0..<40 { versions["term\(i)"] = try write(n1, "term\(i)", .int(Int64(i))).version }
        XCTAssertEqual(n1.stop(), 0)
        for i in 0..<40 {
            XCTAssertEqual(try stored("term\(i)"), String(i), "term\(i) lost on a clean stop")
            XCTAssertEqual(try c.redis.cli("HGET", "concord:\(c.cluster):cache:{term\(i)}:value", "version"), String(versions["term\(i)"]!))
        }
        XCTAssertEqual(try read(n2, "term7").json?["value"], .int(7))
    }
}

extension CacheIntegrationTests {
    /// Write-back: a read that reaches a node while that node's own write of the key is still on
    /// its way to Redis must not make the read script take the writer's fresh dirty entry for a
    /// copy lost in a restart (which dropped the acknowledged value from the directory: the
    /// write-back was then refused and the write was gone).
    func testWriteBackReadRacingTheSameNodesWriteLosesNothing() throws {
        let c = try TestCluster(nodes: 1, extraArguments: ["--cache-write-policy", "write-back"])
        let n1 = c.node("n1")
        defer { if testRun?.hasSucceeded == false { print(c.dumpLogs()) } }
        let port = n1.port
        let rounds = 60
        final class Statuses: @unchecked Sendable {
            let lock = NSLock()
            var values: [Int] = []
            func add(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
        }
        let statuses = Statuses()
        for i in 0..<rounds {
            let key = "race\(i)"
            let group = DispatchGroup()
            let body = JSONValue.object([("key", .string(key)), ("value", .int(Int64(i)))])
            DispatchQueue.global().async(group: group) {
                let writer = HTTPClient(host: "127.0.0.1", port: port, timeoutMs: 8000)
                statuses.add((try? writer.post("/cache/write", body).status) ?? -1)
            }
            // The read goes out while the write is in flight (no sleep: same instant).
            DispatchQueue.global().async(group: group) {
                let reader = HTTPClient(host: "127.0.0.1", port: port, timeoutMs: 8000)
                _ = try? reader.get("/cache/read/\(key)")
            }
            group.wait()
        }
        let writeStatus = statuses.values
        XCTAssertEqual(Set(writeStatus), [200])
        // Past the write-back period: every acknowledged write is in Redis and reads back.
        usleep(1_200_000)
        var lost: [String] = []
        for i in 0..<rounds {
            let r = try read(n1, "race\(i)")
            if r.status != 200 || r.json?["value"] != .int(Int64(i)) { lost.append("race\(i): \(r.status) \(r.text)") }
        }
        XCTAssertEqual(lost, [], "acknowledged write-back writes lost")
    }

    /// A failed request changes nothing: deleting a key never written answers 404 and leaves no
    /// key in Redis (it used to create a directory tombstone), and deleting a deleted key again
    /// leaves its directory as it was. An empty key in a path is 400, not "no such path".
    func testDeleteOfAMissingKeyWritesNothingAndEmptyPathKeysAre400() throws {
        let c = try TestCluster(nodes: 1)
        let n1 = c.node("n1")
        let client = n1.client()
        defer { if testRun?.hasSucceeded == false { print(c.dumpLogs()) } }

        let never = try client.post("/cache/delete", .object([("key", .string("never-written"))]))
        XCTAssertEqual(never.status, 404, never.text)
        XCTAssertEqual(never.json?["error"]?.stringValue, "not_found")
        XCTAssertEqual(try c.redis.cli("KEYS", "*never*"), "")
        XCTAssertEqual(try status(n1, "never-written").state, "I")

        try write(n1, "gone", .int(1))
        XCTAssertEqual(try client.post("/cache/delete", .object([("key", .string("gone"))])).status, 200)
        let dir = "concord:\(c.cluster):cache:{gone}:dir"
        // n1 acknowledged its own invalidation: its "being invalidated" entry is forgotten.
        try waitUntil("n1's X entry forgotten", seconds: 5) { !(try c.redis.cli("HGETALL", dir)).contains("h:n1") }
        let before = try c.redis.cli("HGETALL", dir)
        let pttl = Int(try c.redis.cli("PTTL", dir)) ?? -1
        XCTAssertTrue(before.contains("v"), before)
        let again = try client.post("/cache/delete", .object([("key", .string("gone"))]))
        XCTAssertEqual(again.status, 404, again.text)
        XCTAssertEqual(try c.redis.cli("HGETALL", dir), before, "a 404 delete must not touch the directory")
        XCTAssertLessThanOrEqual(Int(try c.redis.cli("PTTL", dir)) ?? -1, pttl, "a 404 delete must not extend the tombstone")
        XCTAssertEqual(try c.redis.cli("EXISTS", "concord:\(c.cluster):cache:{gone}:value"), "0")

        for (method, path) in [("GET", "/cache/read/"), ("DELETE", "/cache/invalidate/"), ("GET", "/cache/status/"), ("GET", "//cache//read//")] {
            let r = try client.request(method, path)
            XCTAssertEqual(r.status, 400, "\(method) \(path): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "bad_request", path)
            XCTAssertTrue(r.json?["message"]?.stringValue?.contains("'key' must not be empty") == true, "\(path): \(r.text)")
        }
        XCTAssertEqual(try client.get("/cache/status").status, 200)
        XCTAssertEqual(try client.request("POST", "/cache/read/").headers["allow"], "GET, HEAD")
        XCTAssertEqual(try c.redis.cli("KEYS", "concord:\(c.cluster):cache:{}*"), "", "no key for the empty name")
    }
}

extension CacheIntegrationTests {
    /// Write-back: n2 holds a key dirty (M); on n1 a read (a miss that must wait for n2's flush)
    /// and a write of the key run at once. The read's retry used to run the read script while
    /// n1 held its own fresh dirty line, and the script took that line for a copy lost in a
    /// restart: the acknowledged write was dropped (reads then found 404 or n2's older value).
    /// After both answered, every node must read n1's write. Write answers say "M".
    func testWriteBackReadAndWriteRacingOnOneNodeLoseNoWrite() throws {
        let c = try TestCluster(nodes: 3, extraArguments: ["--cache-write-policy", "write-back"])
        let (n1, n2, n3) = (c.node("n1"), c.node("n2"), c.node("n3"))
        var lost: [String] = []
        for i in 0..<25 {
            let key = "race\(i)"
            XCTAssertEqual(try write(n2, key, .string("B-\(i)")).state, "M")
            let group = DispatchGroup()
            nonisolated(unsafe) var wrote: HTTPResponse?
            nonisolated(unsafe) var readStatus = 0
            nonisolated(unsafe) let readClient = n1.client()
            nonisolated(unsafe) let writeClient = n1.client()
            DispatchQueue.global().async(group: group) { readStatus = (try? readClient.get("/cache/read/\(key)"))?.status ?? -1 }
            DispatchQueue.global().async(group: group) {
                wrote = try? writeClient.post("/cache/write", .object([("key", .string(key)), ("value", .string("A-\(i)"))]))
            }
            XCTAssertEqual(group.wait(timeout: .now() + 20), .success)
            XCTAssertEqual(readStatus, 200, key)
            XCTAssertEqual(wrote?.status, 200, wrote?.text ?? "no answer")
            XCTAssertEqual(wrote?.json?["state"]?.stringValue, "M", wrote?.text ?? "")
            for n in [n1, n2, n3] {
                let r = try read(n, key)
                if r.status != 200 || r.json?["value"]?.stringValue != "A-\(i)" { lost.append("\(key) on \(n.id): \(r.status) \(r.text)") }
            }
        }
        XCTAssertEqual(lost, [], c.dumpLogs())
    }
}
