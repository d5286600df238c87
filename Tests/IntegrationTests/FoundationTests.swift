import Foundation
import XCTest
@testable import Runtime

/// The node runtime end to end: real redis-server, real node processes, real HTTP.
final class FoundationTests: XCTestCase {
    func testBusRequestReachesAnotherNodeProcess() throws {
        let c = try TestCluster(nodes: 2)
        let r = try c.node("n1").client().get("/bus/ping/n2")
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(r.json?["peer"]?.stringValue, "n2")
        // An id that is no member: 404, no bus request.
        let ghost = try c.node("n1").client().get("/bus/ping/ghost")
        XCTAssertEqual(ghost.status, 404, ghost.text)
        XCTAssertEqual(ghost.json?["error"]?.stringValue, "not_found")
        XCTAssertNil(ghost.headers["retry-after"])
        // A member that is not running: 503 at once (nobody subscribed), not a hang.
        c.node("n2").kill9()
        let dead = try c.node("n1").client().get("/bus/ping/n2")
        XCTAssertEqual(dead.status, 503, dead.text)
        XCTAssertEqual(dead.json?["error"]?.stringValue, "unavailable")
        XCTAssertNotNil(dead.headers["retry-after"])
    }

    /// The member registry's two keys share a hash tag (node_register-2.lua writes both in one
    /// script: CROSSSLOT on Redis Cluster otherwise), under `concord:<cluster>:`.
    func testMemberRegistryKeysShareOneHashTag() throws {
        let c = try TestCluster(nodes: 2)
        let set = "concord:\(c.cluster):{members}"
        try waitUntil("both nodes registered", seconds: 5) {
            Set(try c.redis.cli("SMEMBERS", set).split(separator: "\n").map(String.init)) == ["n1", "n2"]
        }
        let keys = try c.redis.cli("KEYS", "concord:\(c.cluster):*members*").split(separator: "\n").map(String.init).sorted()
        XCTAssertEqual(keys, [set, "\(set):n1", "\(set):n2"])
        func hashTag(_ key: String) -> Substring? {
            guard let open = key.firstIndex(of: "{"), let close = key[open...].firstIndex(of: "}"), key.index(after: open) < close else { return nil }
            return key[key.index(after: open)..<close]
        }
        for key in keys {
            XCTAssertTrue(key.hasPrefix("concord:\(c.cluster):"), key)
            XCTAssertEqual(hashTag(key), "members", key)
        }
        XCTAssertEqual(try c.redis.cli("HGET", "\(set):n2", "advertise"), c.node("n2").url)
        let ttl = Int(try c.redis.cli("PTTL", "\(set):n1")) ?? -1
        XCTAssertTrue((1...10_000).contains(ttl), "registration TTL \(ttl)")
        XCTAssertEqual(try c.redis.cli("KEYS", "concord:\(c.cluster):member:*"), "")
    }

    /// Router-level answers: an empty name at the end of a path is 400 (the lock status route
    /// here; the queue and cache routes in their own tests), and every 405 carries `Allow`.
    func testEmptyPathNameIs400AndMethodNotAllowedCarriesAllow() throws {
        let c = try TestCluster(nodes: 1)
        let node = c.node("n1")
        let client = node.client()
        let empty = try client.get("/lock/status/")
        XCTAssertEqual(empty.status, 400, empty.text)
        XCTAssertEqual(empty.json?["error"]?.stringValue, "bad_request")
        XCTAssertTrue(empty.json?["message"]?.stringValue?.contains("must not be empty") == true, empty.text)
        let list = try client.get("/lock/status")
        XCTAssertEqual(list.status, 200, list.text)
        XCTAssertNotNil(list.json?["locks"]?.arrayValue, list.text)

        for (method, path, allow) in [("PUT", "/health", "GET, HEAD"), ("POST", "/status", "GET, HEAD"), ("GET", "/lock/acquire", "POST"),
                                      ("DELETE", "/cache/read/k", "GET, HEAD"), ("PUT", "/lock/status/", "GET, HEAD")] {
            let r = try client.request(method, path)
            XCTAssertEqual(r.status, 405, "\(method) \(path): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "method_not_allowed")
            XCTAssertEqual(r.headers["allow"], allow, "\(method) \(path)")
            XCTAssertEqual(r.json?["message"]?.stringValue, "\(method) is not allowed on \(path)")
        }
        let weird = rawHTTP(port: node.port, Array("FROB /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        XCTAssertTrue(weird.hasPrefix("HTTP/1.1 405"), weird)
        XCTAssertTrue(weird.contains("\r\nAllow: GET, HEAD\r\n"), weird)
        XCTAssertTrue(weird.contains("this method is not allowed on /health"), weird)
        XCTAssertFalse(weird.contains("UNKNOWN"), weird)
    }

    func testStatusListsMembersAndDetectsAKilledNodeWithinTwoSeconds() throws {
        let c = try TestCluster(nodes: 3)
        let n1 = c.node("n1").client()
        try waitUntil("n1 sees all three alive", seconds: 5) {
            let members = try n1.get("/status").json?["members"]?.arrayValue ?? []
            return members.count == 3 && members.allSatisfy { $0["alive"]?.boolValue == true }
        }
        let status = try n1.get("/status").json!
        for field in ["node", "cluster", "version", "role", "term", "leader", "members", "redis", "uptime_s"] {
            XCTAssertNotNil(status[field], "missing \(field)")
        }
        let member = status["members"]!.arrayValue![0]
        for field in ["id", "alive", "phi", "last_heartbeat_ms", "advertise"] { XCTAssertNotNil(member[field], "member missing \(field)") }

        func alive(_ id: String) throws -> Bool? {
            try n1.get("/status").json?["members"]?.arrayValue?.first { $0["id"]?.stringValue == id }?["alive"]?.boolValue
        }
        c.node("n3").kill9()
        let deadAfter = try waitUntil("n3 marked dead", seconds: 2.0) { try alive("n3") == false }
        print("n3 seen dead after \(deadAfter) s")
        try c.node("n3").start()
        try c.node("n3").waitHealthy()
        let aliveAfter = try waitUntil("n3 alive again", seconds: 1.0) { try alive("n3") == true }
        print("n3 seen alive \(aliveAfter) s after its /health answered")
    }

    func testRedisRestartTurnsHealthDegradedThenOkAndTheBusWorksAgain() throws {
        let c = try TestCluster(nodes: 2)
        let n1 = c.node("n1").client(timeoutMs: 3000)
        c.redis.stop()
        try waitUntil("n1 /health 503", seconds: 5) {
            let r = try n1.get("/health")
            return r.status == 503 && r.json?["status"]?.stringValue == "degraded" && r.json?["reason"] != nil
        }
        try c.redis.start()
        try waitUntil("n1 /health 200 again", seconds: 10) { try n1.get("/health").status == 200 }
        try waitUntil("bus ping n1 -> n2 after the restart", seconds: 10) { try n1.get("/bus/ping/n2").status == 200 }
    }

    func testNoscriptAfterScriptFlushIsReloadedTransparently() throws {
        let c = try TestCluster(nodes: 1)
        let key = "concord:\(c.cluster):{members}:n1"
        try waitUntil("registration present", seconds: 5) { try c.redis.cli("HGET", key, "seen_ms") != "(nil)" }
        try c.redis.cli("SCRIPT", "FLUSH")
        let before = Int64(try c.redis.cli("HGET", key, "seen_ms")) ?? 0
        // The registration refresh runs by EVALSHA every second: it must hit NOSCRIPT, reload and succeed.
        try waitUntil("registration refreshed after SCRIPT FLUSH", seconds: 5) {
            (Int64(try c.redis.cli("HGET", key, "seen_ms")) ?? 0) > before
        }
        XCTAssertTrue(c.node("n1").log.contains("reloading"), "the node should have reloaded the script")
    }

    func testHostileHTTPGets4xxAndTheNodeStaysHealthy() throws {
        let c = try TestCluster(nodes: 1)
        let node = c.node("n1")
        let client = node.client()
        // Malformed JSON on a POST route that exists for every build: /bus has none, so use an unknown path and a known one.
        XCTAssertEqual(try client.request("POST", "/health", body: Array("{not json".utf8)).status, 405)
        let big = try client.request("POST", "/queue/produce", body: [UInt8](repeating: 0x20, count: 2 << 20))
        XCTAssertEqual(big.status, 413, big.text)
        XCTAssertEqual(big.json?["error"]?.stringValue, "too_large")
        for method in ["PUT", "PATCH", "OPTIONS", "DELETE", "TRACE"] {
            let r = try client.request(method, "/health")
            XCTAssertEqual(r.status, 405, method)
            XCTAssertEqual(r.json?["error"]?.stringValue, "method_not_allowed")
        }
        let weird = rawHTTP(port: node.port, Array("FROB /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        XCTAssertTrue(weird.hasPrefix("HTTP/1.1 405"), weird)
        XCTAssertTrue(weird.contains("method_not_allowed"), weird)
        XCTAssertTrue(rawHTTP(port: node.port, Array("FROB /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 404"))
        // A lying Content-Length: the connection is held, then times out; it must not block others.
        let port = node.port
        let liar = Thread {
            _ = rawHTTP(port: port, Array("POST /lock/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"a\":".utf8), readTimeoutMs: 3000)
        }
        liar.start()
        _ = rawHTTP(port: node.port, Array("GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nab".utf8), readTimeoutMs: 300, closeWrite: true)
        _ = rawHTTP(port: node.port, Array("\u{0}\u{1}garbage\r\n\r\n".utf8), readTimeoutMs: 500)
        _ = rawHTTP(port: node.port, Array("GET /\(String(repeating: "a", count: 100_000)) HTTP/1.1\r\n\r\n".utf8), readTimeoutMs: 500)
        XCTAssertEqual(try client.get("/health").status, 200)
        XCTAssertEqual(try client.get("/no/such/path").status, 404)
        XCTAssertEqual(try client.get("/no/such/path").json?["error"]?.stringValue, "not_found")
    }

    func testMetricsAreExposedInPrometheusText() throws {
        let c = try TestCluster(nodes: 1)
        let client = c.node("n1").client()
        _ = try client.get("/health")
        let text = try client.get("/metrics").text
        XCTAssertTrue(text.contains("concord_http_requests_total"), text)
        XCTAssertTrue(text.contains("route=\"/health\""), text)
        XCTAssertTrue(text.contains("concord_http_request_duration_seconds"), text)
        XCTAssertTrue(text.contains("concord_bus_messages_received_total"), text)
        // Bus messages sent are a counter too (heartbeats go out from the start).
        var later = ""
        try waitUntil("a sent heartbeat counted", seconds: 5) {
            later = try client.get("/metrics").text
            return later.contains("concord_bus_messages_sent_total{type=\"heartbeat\"}")
        }
        XCTAssertTrue(later.contains("# TYPE concord_bus_messages_sent_total counter"), later)
    }

    /// The node reads Redis's AOF settings at start: a gauge names the mode, and a Redis without
    /// AOF gets a warning in the log (the Raft log lives there); AOF with fsync always does not.
    func testRedisPersistenceIsReportedAndAWeakSettingWarned() throws {
        for (aof, mode) in [(false, "none"), (true, "always")] {
            let c = try TestCluster(nodes: 1, aof: aof)
            let client = c.node("n1").client()
            var text = ""
            try waitUntil("persistence gauge for \(mode)", seconds: 5) {
                text = try client.get("/metrics").text
                return text.contains("concord_redis_persistence{mode=\"\(mode)\"} 1")
            }
            XCTAssertEqual(c.node("n1").log.contains("redis runs without AOF"), !aof, c.node("n1").log)
        }
    }

    func testJSONLogsAreOneObjectPerLine() throws {
        let c = try TestCluster(nodes: 1, extraArguments: ["--log-format", "json"])
        _ = c
        let lines = c.node("n1").log.split(separator: "\n").filter { !$0.isEmpty }
        XCTAssertFalse(lines.isEmpty)
        for line in lines {
            let v = try JSONParser.parse(String(line))
            XCTAssertNotNil(v["msg"], String(line))
            XCTAssertNotNil(v["level"], String(line))
        }
    }

    func testGracefulStopExitsZeroWithinFiveSeconds() throws {
        let c = try TestCluster(nodes: 1)
        let start = Date()
        let status = c.node("n1").stop(seconds: 6)
        XCTAssertEqual(status, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5.5)
    }
}

/// `concord node` configuration errors and start-up failures (CONTRACT §1 exit statuses).
final class CommandLineTests: XCTestCase {
    private func run(_ args: [String], env: [String: String] = [:], timeout: Double = 20) throws -> (Int32, String) {
        try runConcord(args, env: env, timeout: timeout)
    }

    func testUsageErrorsExit64NamingTheFlag() throws {
        let cases: [([String], String)] = [
            (["node"], "--id"),
            (["node", "--id", "bad id!"], "--id"),
            (["node", "--id", "n1", "--members", "n2,n3"], "--members"),
            (["node", "--id", "n1", "--heartbeat-ms", "abc"], "--heartbeat-ms"),
            (["node", "--id", "n1", "--listen", "nowhere"], "--listen"),
            (["node", "--id", "n1", "--redis", "http://x"], "--redis"),
            (["node", "--id", "n1", "--cache-write-policy", "sometimes"], "--cache-write-policy"),
            (["node", "--id", "n1", "--log-format", "xml"], "--log-format"),
            (["node", "--id", "n1", "--no-such-flag"], "--no-such-flag"),
        ]
        for (args, flag) in cases {
            let (status, text) = try run(args)
            XCTAssertEqual(status, 64, "\(args): \(text)")
            XCTAssertTrue(text.contains(flag), "\(args) should name \(flag): \(text)")
            XCTAssertTrue(text.contains("Usage: concord node "), "\(args) should print the node command's usage: \(text)")
        }
    }

    func testEnvironmentIsReadAndTheFlagWins() throws {
        let (status, text) = try run(["node"], env: ["CONCORD_NODE_ID": "n1", "CONCORD_MEMBERS": "n2"])
        XCTAssertEqual(status, 64)
        XCTAssertTrue(text.contains("--members"), text)
        let (status2, text2) = try run(["node", "--members", "n1", "--heartbeat-ms", "x"], env: ["CONCORD_NODE_ID": "n1", "CONCORD_MEMBERS": "n2"])
        XCTAssertEqual(status2, 64)
        XCTAssertTrue(text2.contains("--heartbeat-ms"), text2)
    }

    func testUnreachableRedisExits1WithAReasonAfterABoundedRetry() throws {
        let port = freeTCPPort()
        let (status, text) = try run(["node", "--id", "n1", "--listen", "127.0.0.1:\(freeTCPPort())", "--redis", "redis://127.0.0.1:\(port)"],
                                     env: ["CONCORD_REDIS_STARTUP_TIMEOUT_MS": "1500"])
        XCTAssertEqual(status, 1, text)
        XCTAssertTrue(text.contains("redis unreachable"), text)
    }

    func testDevStartsThreeHealthyNodesAndStopsThemAllOnSIGTERM() throws {
        let ports = freeTCPPorts(3)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: concordExecutable)
        p.arguments = ["dev", "--nodes", "3", "--base-port", String(ports[0]), "--cluster", "devtest\(ports[0])"]
        var env = ProcessInfo.processInfo.environment
        env["CONCORD_LUA_DIR"] = repositoryRoot.appendingPathComponent("lua").path
        p.environment = env
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        for port in ports {
            try waitUntil("dev node on \(port) healthy", seconds: 20) {
                (try? HTTPClient(host: "127.0.0.1", port: port, timeoutMs: 1000).get("/health").status) == 200
            }
        }
        kill(p.processIdentifier, SIGTERM)
        try waitUntil("concord dev exits", seconds: 10) { !p.isRunning }
        for port in ports {
            XCTAssertThrowsError(try HTTPClient(host: "127.0.0.1", port: port, timeoutMs: 500).get("/health"), "node on \(port) still answers")
        }
        let leftovers = try runShell("pgrep -f 'cluster [d]evtest\(ports[0])' || true")
        XCTAssertEqual(leftovers.trimmingCharacters(in: .whitespacesAndNewlines), "", "orphan processes")
    }
}

func runShell(_ command: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

final class ConnectionBoundTests: XCTestCase {
    /// At the connection bound the node stops accepting; a waiting client is served as soon as
    /// another connection closes. Nothing crashes or hangs.
    func testConnectionsAreBounded() throws {
        let redis = try RedisServer()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("concord-conn-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let node = NodeProcess(id: "n1", port: freeTCPPort(), arguments: ["--redis", redis.url, "--cluster", "cb\(redis.port)"], logDir: dir)
        node.environment["CONCORD_MAX_CONNECTIONS"] = "3"
        try node.start()
        try node.waitHealthy()
        // waitHealthy's clients are gone; hold three keep-alive connections open.
        try waitUntil("probe connections closed", seconds: 5) {
            let c = node.client(timeoutMs: 300)
            defer { c.close() }
            return (try? c.get("/health").status) == 200
        }
        let held = (0..<3).map { _ in node.client(timeoutMs: 2000) }
        for c in held { XCTAssertEqual(try c.get("/health").status, 200) }
        let extra = node.client(timeoutMs: 600)
        XCTAssertThrowsError(try extra.get("/health"), "a fourth connection must wait while three are open")
        held[0].close()
        let late = node.client(timeoutMs: 3000)
        XCTAssertEqual(try late.get("/health").status, 200)
        for c in held.dropFirst() { XCTAssertEqual(try c.get("/health").status, 200) }
    }
}
