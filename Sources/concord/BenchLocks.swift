import ArgumentParser
import Foundation
import Histogram
import Runtime

// MARK: - `concord bench locks`: acquire+release pairs against Concord and, in the same run, etcd

/// etcd's v3 JSON gateway: lease grant, /v3/lock/lock, /v3/lock/unlock (names are base64).
struct EtcdLockClient {
    let http: HTTPClient
    var lease: String = ""

    init(url: String) throws {
        guard let c = HTTPClient(url: url, timeoutMs: 30_000) else { throw ValidationError("--etcd must be an http:// URL") }
        http = c
        let r = try http.post("/v3/lease/grant", .object([("TTL", .int(300))]))
        guard r.status == 200, let id = r.json?["ID"]?.stringValue ?? r.json?["ID"]?.serialized() else { throw RuntimeError("etcd lease grant failed: \(r.status) \(r.text)") }
        lease = id
    }

    func lock(_ name: String) throws -> String? {
        let r = try http.post("/v3/lock/lock", .object([("name", .string(Data(name.utf8).base64EncodedString())), ("lease", .string(lease))]))
        guard r.status == 200 else { return nil }
        return r.json?["key"]?.stringValue
    }

    func unlock(_ key: String) throws -> Bool {
        try http.post("/v3/lock/unlock", .object([("key", .string(key))])).status == 200
    }
}

struct BenchLocks: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "locks", abstract: "Acquire+release pairs: uncontended and contended, beside etcd (--etcd).")
    @OptionGroup var options: BenchOptions
    @Option(help: "etcd v3 JSON gateway URL(s) for the baseline, e.g. http://127.0.0.1:2379.") var etcd: [String] = []
    @Option(help: "uncontended, contended or both.") var mode: String = "both"
    @Option(help: "With --etcd: alternate Concord and etcd in this many slices of the duration each.") var rounds: Int = 4

    func validate() throws {
        guard ["uncontended", "contended", "both"].contains(mode) else { throw ValidationError("--mode must be uncontended, contended or both") }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be in [1, 100]") }
    }

    func run() throws {
        let opts = options
        let runID = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        var results: [BenchResult] = []
        var ratios: [(String, Double)] = []
        let etcdURLs = etcd
        for m in (mode == "both" ? ["uncontended", "contended"] : [mode]) {
            let contended = m == "contended"
            // Each slice uses its own resource names, so a lock left held when a slice ends
            // (Concord: until its TTL; etcd: until its lease's) never blocks the next one.
            var slice = 0
            let concordRun = { (seconds: Double) -> BenchResult in
                slice += 1
                return concordLoad(m, contended: contended, runID: "\(runID)s\(slice)", seconds: seconds)
            }
            if etcdURLs.isEmpty {
                results.append(concordRun(opts.duration))
                continue
            }
            var etcdSlice = 0
            let etcdRun = { (seconds: Double) -> BenchResult in
                etcdSlice += 1
                return etcdLoad(m, contended: contended, runID: "\(runID)e\(etcdSlice)", urls: etcdURLs, seconds: seconds)
            }
            // Alternating slices: both see the same noise of this shared machine.
            let (concord, e) = interleaved(rounds: rounds, seconds: opts.duration, concordRun, etcdRun)
            results.append(concord)
            results.append(e)
            if e.opsPerSecond > 0 { ratios.append(("ratio_concord_to_etcd_\(m)", concord.opsPerSecond / e.opsPerSecond)) }
        }
        printResults(results, ratios: ratios, json: opts.json)
    }
}

extension BenchLocks {
    /// Concord on the event-driven driver (prebuilt requests, so the load generator leaves the
    /// cores to the servers); each connection alternates acquire and release, ops are pairs.
    /// One client times whole acquire+release pairs (the latency goal).
    func concordLoad(_ m: String, contended: Bool, runID: String, seconds: Double) -> BenchResult {
        let opts = options
        let targets = opts.targets.map(hostPort)
        let requests: [[[UInt8]]] = (0..<opts.concurrency).map { conn in
            let t = targets[conn % targets.count]
            let resource = contended ? "bench-\(runID)-hot" : "bench-\(runID)-\(conn)"
            let acquire: JSONValue = .object([("resource", .string(resource)), ("owner", .string("o-\(conn)")), ("ttl_ms", .int(10_000)), ("wait_ms", .int(contended ? 10_000 : 0))])
            let release: JSONValue = .object([("resource", .string(resource)), ("owner", .string("o-\(conn)"))])
            return [LoadDriver.http("POST", "/lock/acquire", host: "\(t.host):\(t.port)", body: acquire.bytes),
                    LoadDriver.http("POST", "/lock/release", host: "\(t.host):\(t.port)", body: release.bytes)]
        }
        if opts.concurrency == 1 {
            return runEvented(name: "concord \(m) (pair latency)", targets: targets, connections: 1, seconds: seconds, quiet: opts.json,
                              framing: .http, request: { conn, seq in requests[conn][Int(seq % 2)] }, validate: httpOK, pairLatency: true)
        }
        return pairs(runEvented(name: "concord \(m)", targets: targets, connections: opts.concurrency, seconds: seconds, quiet: opts.json,
                                framing: .http, request: { conn, seq in requests[conn][Int(seq % 2)] }, validate: httpOK))
    }

    /// etcd's lock workload, the same shape.
    func etcdLoad(_ m: String, contended: Bool, runID: String, urls: [String], seconds: Double) -> BenchResult {
        var opts = options
        opts.duration = seconds
        do {
            if opts.concurrency == 1 {
                return try etcdEvented(m, contended: contended, runID: runID, urls: urls, opts: opts, pairLatency: true)
            }
            return pairs(try etcdEvented(m, contended: contended, runID: runID, urls: urls, opts: opts))
        } catch {
            FileHandle.standardError.write(Data("etcd \(m): \(error)\n".utf8))
            return BenchResult(name: "etcd \(m)", ops: 0, errors: 1, seconds: seconds,
                               histogram: Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
        }
    }
}

/// Requests -> acquire+release pairs (latency stays per request).
func pairs(_ r: BenchResult) -> BenchResult {
    var p = r
    p.ops = r.ops / 2
    p.name = r.name + " (pairs; latency per request)"
    return p
}

/// etcd's lock workload on the event-driven driver: a lease per connection (granted up front),
/// then lock / unlock alternating, the key from each lock answer fed to the next unlock.
func etcdEvented(_ mode: String, contended: Bool, runID: String, urls: [String], opts: BenchOptions, pairLatency: Bool = false) throws -> BenchResult {
    let targets = urls.map(hostPort)
    let clients = try (0..<opts.concurrency).map { try EtcdLockClient(url: urls[$0 % urls.count]) }
    let leases = clients.map(\.lease)
    final class Keys { var key: [String]; init(_ n: Int) { key = Array(repeating: "", count: n) } }
    let keys = Keys(opts.concurrency)
    return runEvented(name: pairLatency ? "etcd \(mode) (pair latency)" : "etcd \(mode)", targets: targets, connections: opts.concurrency, seconds: opts.duration, quiet: opts.json, framing: .http,
                      request: { conn, seq in
        let t = targets[conn % targets.count]
        let host = "\(t.host):\(t.port)"
        if seq % 2 == 0 {
            let name = contended ? "bench-\(runID)-hot" : "bench-\(runID)-\(conn)"
            let body: JSONValue = .object([("name", .string(Data(name.utf8).base64EncodedString())), ("lease", .string(leases[conn]))])
            return LoadDriver.http("POST", "/v3/lock/lock", host: host, body: body.bytes)
        }
        return LoadDriver.http("POST", "/v3/lock/unlock", host: host, body: JSONValue.object([("key", .string(keys.key[conn]))]).bytes)
    }, validate: httpOK, onResponse: { conn, response in
        if let key = (try? JSONParser.parse(LoadDriver.httpBody(response)))?["key"]?.stringValue { keys.key[conn] = key }
    }, pairLatency: pairLatency)
}

// MARK: - `concord bench failover`: SIGKILL the leader under load; time to the next grant

struct BenchFailover: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "failover", abstract: "Starts its own Redis + 3 nodes, SIGKILLs the leader under load N times, reports kill-to-next-grant times.")
    @Option(help: "Kill rounds.") var rounds: Int = 10
    @Option(name: .customLong("base-port"), help: "First node port.") var basePort: Int = 18_101
    @Option(help: "Client threads during the test.") var concurrency: Int = 8
    @Flag(help: "Machine-readable output.") var json = false

    func run() throws {
        let harness = try LocalHarness(nodes: 3, basePort: basePort)
        defer { harness.stop() }
        try harness.waitHealthy()
        guard harness.waitLeader(seconds: 10) != nil else { die("no leader within 10 s") }
        let lastGrant = GrantClock()
        let stopFlag = StopFlag()
        let group = DispatchGroup()
        for w in 0..<concurrency {
            group.enter()
            let port = basePort + (w % 3)
            Thread {
                defer { group.leave() }
                let client = HTTPClient(host: "127.0.0.1", port: port, timeoutMs: 2000)
                var i = 0
                while !stopFlag.isSet {
                    i += 1
                    let resource = "fo-\(w)-\(i % 4)"
                    let started = EventLoop.monoMicros()
                    if let r = try? client.post("/lock/acquire", .object([("resource", .string(resource)), ("owner", .string("w\(w)")), ("ttl_ms", .int(2000))])), r.status == 200 {
                        lastGrant.mark(startedAt: started)
                        _ = try? client.post("/lock/release", .object([("resource", .string(resource)), ("owner", .string("w\(w)"))]))
                    } else {
                        usleep(2000)
                    }
                }
            }.start()
        }
        var samples: [Double] = []
        for round in 1...rounds {
            usleep(500_000)
            guard let leader = harness.waitLeader(seconds: 10) else { die("no leader before round \(round)") }
            let killedAt = EventLoop.monoMicros()
            lastGrant.arm(after: killedAt)
            harness.kill(leader)
            var recovered: Int64?
            let deadline = killedAt + 10_000_000
            while EventLoop.monoMicros() < deadline {
                if let t = lastGrant.firstCompletion { recovered = t; break }
                usleep(1000)
            }
            guard let recovered else { die("no grant within 10 s of killing \(leader)") }
            let seconds = Double(recovered - killedAt) / 1_000_000
            samples.append(seconds)
            if !json { print(String(format: "round %2d: killed leader n%d, next grant after %.3f s", round, leader + 1, seconds)) }
            try harness.restart(leader)
            try harness.waitHealthy()
        }
        stopFlag.set()
        group.wait()
        let sorted = samples.sorted()
        let worst = sorted.last ?? 0, median = sorted[sorted.count / 2]
        if json {
            print(JSONValue.object([("rounds", .int(rounds)), ("kill_to_grant_s", .array(samples.map { .double(($0 * 1000).rounded() / 1000) })),
                                    ("median_s", .double((median * 1000).rounded() / 1000)), ("worst_s", .double((worst * 1000).rounded() / 1000))]).serialized())
        } else {
            print(String(format: "kill -> next grant over %d rounds: median %.3f s, worst %.3f s", rounds, median, worst))
        }
    }
}

/// The completion time of the first grant whose request was sent after the kill (a grant
/// answered from before the kill proves nothing about the new leader).
final class GrantClock: @unchecked Sendable {
    private let lock = NSLock()
    private var threshold = Int64.max
    private var first: Int64?
    func arm(after micros: Int64) { lock.lock(); threshold = micros; first = nil; lock.unlock() }
    func mark(startedAt: Int64) {
        let now = EventLoop.monoMicros()
        lock.lock(); if startedAt > threshold && first == nil { first = now }; lock.unlock()
    }
    var firstCompletion: Int64? { lock.lock(); defer { lock.unlock() }; return first }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    func set() { lock.lock(); flag = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return flag }
}

/// Its own redis-server plus N node processes, for benchmarks that kill nodes.
final class LocalHarness {
    let basePort: Int
    let count: Int
    let redisPort: Int
    let dir: URL
    private var redis: Process?
    private var nodes: [Process?]
    private let cluster = "bench\(UInt32.random(in: 0..<UInt32.max))"

    init(nodes count: Int, basePort: Int) throws {
        self.count = count
        self.basePort = basePort
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("concord-bench-\(getpid())")
        nodes = Array(repeating: nil, count: count)
        let (p, port) = try startLocalRedis(dir: dir, aof: false)
        redis = p
        redisPort = port
        for i in 0..<count { try start(i) }
    }

    private func start(_ i: Int) throws {
        let ids = (1...count).map { "n\($0)" }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path)
        p.arguments = ["node", "--id", ids[i], "--listen", "127.0.0.1:\(basePort + i)", "--redis", "redis://127.0.0.1:\(redisPort)/0", "--cluster", cluster, "--members", ids.joined(separator: ",")]
        var env = ProcessInfo.processInfo.environment
        env["CONCORD_EXIT_WITH_PARENT"] = String(getpid())
        p.environment = env
        let log = dir.appendingPathComponent("\(ids[i]).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let h = try FileHandle(forWritingTo: log)
        h.seekToEndOfFile()
        p.standardOutput = h
        p.standardError = h
        try p.run()
        nodes[i] = p
    }

    func waitHealthy() throws {
        for i in 0..<count {
            let deadline = Date().addingTimeInterval(15)
            while (try? HTTPClient(host: "127.0.0.1", port: basePort + i, timeoutMs: 500).get("/health").status) != 200 {
                if Date() > deadline { die("node n\(i + 1) not healthy") }
                usleep(20_000)
            }
        }
    }

    /// Index of the node every live node agrees leads.
    func waitLeader(seconds: Double) -> Int? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            for i in 0..<count where nodes[i] != nil {
                if let s = try? HTTPClient(host: "127.0.0.1", port: basePort + i, timeoutMs: 500).get("/raft/state").json, s["role"]?.stringValue == "leader" { return i }
            }
            usleep(10_000)
        }
        return nil
    }

    func kill(_ i: Int) {
        guard let p = nodes[i] else { return }
        Foundation.kill(p.processIdentifier, SIGKILL)
        waitExit(p)
        nodes[i] = nil
    }

    func restart(_ i: Int) throws { try start(i) }

    func stop() {
        for i in 0..<count { if let p = nodes[i] { Foundation.kill(p.processIdentifier, SIGTERM); waitExit(p) } }
        if let r = redis { Foundation.kill(r.processIdentifier, SIGKILL); waitExit(r) }
        try? FileManager.default.removeItem(at: dir)
    }
}
