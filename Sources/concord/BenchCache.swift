import ArgumentParser
import Foundation
import Histogram
import Runtime

// MARK: - `concord bench cache`
//
// 1. Read hits: GET /cache/read/<key> at N connections against the first target, after every key
//    was read once there (so each request is a hit served without Redis).
// 2. The baseline in the same run, with the same thread model (one blocking connection per
//    thread, one request at a time): GET of a same-sized value on the same Redis.
// 3. Write latency with 0 sharers (each writer's key lives only on the target: E/M -> M) and with
//    2 sharers (before every measured write two other nodes read the key, so the write must
//    invalidate both and wait for their acknowledgements). Only the write is timed.

struct BenchCache: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cache", abstract: "Cache read hits vs Redis GET (same run, same thread model); write latency with 0 and 2 sharers.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Redis for the GET baseline, redis://host:port[/db] (default: $CONCORD_REDIS_URL, else redis://127.0.0.1:6379/0).") var redis: String?
    @Option(help: "Distinct keys read in the hit test.") var keys: Int = 16
    @Option(name: .customLong("value-bytes"), help: "Size of each value (a JSON string).") var valueBytes: Int = 100
    @Option(help: "Concurrent writers in the write-latency tests.") var writers: Int = 4
    @Option(help: "Alternate Concord and the Redis baseline in this many slices of the duration each.") var rounds: Int = 5

    func validate() throws {
        guard (1...10_000).contains(keys) else { throw ValidationError("--keys must be in [1, 10000]") }
        guard (1...400_000).contains(valueBytes) else { throw ValidationError("--value-bytes must be in [1, 400000]") }
        guard (1...256).contains(writers) else { throw ValidationError("--writers must be in [1, 256]") }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be in [1, 100]") }
    }

    func run() throws {
        let opts = options
        let keyCount = keys
        let value = JSONValue.string(String(repeating: "x", count: valueBytes))
        let target = opts.targets[0]
        guard let setupClient = HTTPClient(url: target) else { throw ValidationError("bad --target") }
        let runID = String(UInt32.random(in: 0..<UInt32.max), radix: 36)

        // Warm: write every key, then read it once on the target so it is cached there.
        for i in 0..<keyCount {
            let key = "bench:\(runID):r\(i)"
            let w = try setupClient.post("/cache/write", .object([("key", .string(key)), ("value", value)]))
            guard w.status == 200 else { throw RuntimeError("write \(key): \(w.status) \(w.text)") }
            let r = try setupClient.get("/cache/read/\(key)")
            guard r.status == 200 else { throw RuntimeError("read \(key): \(r.status) \(r.text)") }
        }
        var results: [BenchResult] = []
        var ratios: [(String, Double)] = []

        // Both sides are driven by the same event-driven load driver (one loop, N keep-alive
        // connections), so the ratio compares the servers, not two client implementations.
        let targets = opts.targets.map(hostPort)
        let hitRequests = (0..<keyCount).map { i in targets.map { LoadDriver.http("GET", "/cache/read/bench:\(runID):r\(i)", host: "\($0.host):\($0.port)") } }
        let redisURL = RedisURL(redis ?? ProcessInfo.processInfo.environment["CONCORD_REDIS_URL"] ?? "redis://127.0.0.1:6379/0") ?? RedisURL()
        let hitRun = { (seconds: Double) in
            runEvented(name: "concord cache read (hit)", targets: targets, connections: opts.concurrency, seconds: seconds, quiet: opts.json,
                       framing: .http, request: { conn, seq in hitRequests[Int(seq &+ UInt64(conn)) % keyCount][conn % targets.count] }, validate: httpOK)
        }
        do {
            let setup = try HiredisSync(url: redisURL)
            let raw = value.serialized()
            for i in 0..<keyCount { _ = try setup.call(["SET", "concord:bench:\(runID):get:\(i)", raw]) }
            let getRequests = (0..<keyCount).map { LoadDriver.resp(["GET", "concord:bench:\(runID):get:\($0)"]) }
            let getRun = { (seconds: Double) in
                runEvented(name: "redis GET", targets: [(redisURL.host, redisURL.port)], connections: opts.concurrency, seconds: seconds, quiet: opts.json,
                           framing: .resp, request: { conn, seq in getRequests[Int(seq &+ UInt64(conn)) % keyCount] },
                           validate: { $0.first == UInt8(ascii: "$") && $0.count > 5 })
            }
            // Alternating slices: both sides see the same noise of this shared machine.
            let (hits, get) = interleaved(rounds: rounds, seconds: opts.duration, hitRun, getRun)
            results.append(hits)
            results.append(get)
            if get.opsPerSecond > 0 { ratios.append(("ratio_cache_hit_to_redis_get", hits.opsPerSecond / get.opsPerSecond)) }
            for i in 0..<keyCount { _ = try? setup.call(["DEL", "concord:bench:\(runID):get:\(i)"]) }
        } catch {
            FileHandle.standardError.write(Data("redis baseline skipped: \(error)\n".utf8))
            results.append(hitRun(opts.duration))
        }

        // Write latency, 0 sharers.
        let writeSeconds = max(1, opts.duration / 2)
        let workers = writers
        let solo = runMeasured(name: "concord cache write, 0 sharers", concurrency: workers, seconds: writeSeconds, quiet: opts.json,
                               setup: { w in HTTPClient(url: target)! },
                               prepare: { _, _ in },
                               operation: { client, w, i in
                                   try client.post("/cache/write", .object([("key", .string("bench:\(runID):w0:\(w)")), ("value", value)])).status == 200
                               })
        results.append(solo)

        // Write latency, 2 sharers on two other nodes.
        let sharers = try sharerTargets(setupClient, target: target)
        if sharers.count >= 2 {
            let shared = runMeasured(name: "concord cache write, 2 sharers", concurrency: workers, seconds: writeSeconds, quiet: opts.json,
                                     setup: { _ in [HTTPClient(url: target)!, HTTPClient(url: sharers[0])!, HTTPClient(url: sharers[1])!] },
                                     prepare: { clients, w in
                                         let key = "bench:\(runID):w2:\(w)"
                                         for c in clients[1...2] {
                                             let r = try c.get("/cache/read/\(key)")
                                             guard r.status == 200 || r.status == 404 else { throw RuntimeError("sharer read \(r.status)") }
                                         }
                                     },
                                     operation: { clients, w, _ in
                                         try clients[0].post("/cache/write", .object([("key", .string("bench:\(runID):w2:\(w)")), ("value", value)])).status == 200
                                     })
            results.append(shared)
        } else {
            FileHandle.standardError.write(Data("2-sharer test skipped: need two more live nodes (give --target three times or run a 3-node cluster)\n".utf8))
        }
        printResults(results, ratios: ratios, json: opts.json)
    }

    /// The other targets given, else the advertised URLs of the other live members.
    private func sharerTargets(_ client: HTTPClient, target: String) throws -> [String] {
        let given = options.targets.filter { $0 != target }
        if given.count >= 2 { return given }
        let members = try client.get("/status").json?["members"]?.arrayValue ?? []
        let others = members.compactMap { m -> String? in
            guard m["alive"]?.boolValue == true, let url = m["advertise"]?.stringValue, url != target, HTTPClient(url: url) != nil else { return nil }
            return url
        }
        return Array(Set(given + others)).sorted()
    }
}
