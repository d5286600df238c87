import ArgumentParser
import Foundation
import Histogram
import Node
import Runtime

// MARK: - concord bench queue
//
// End to end per iteration: produce a batch of B messages, consume up to B, ack what came.
// The same threads (one blocking connection each, `runLoad`) then do the same against raw
// Redis Streams on the same Redis, through hiredis's blocking API (`HiredisSync`):
//
//     XADD <stream> * body <payload>                     (B of them, pipelined)
//     XREADGROUP GROUP <g> <consumer> COUNT B STREAMS <stream> >
//     XACK <stream> <g> <id>...
//
// Throughput is reported in messages acked per second; ratio = Concord / Streams per batch.

struct BenchQueue: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "queue",
        abstract: "Produce + consume + ack end to end at batch 1 and 100, beside raw Redis Streams (XADD/XREADGROUP/XACK) on the same Redis.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Redis for the raw Streams baseline (redis://host:port[/db]); without it the baseline is skipped.") var redis: String?
    @Option(name: .customLong("batch"), help: "Batch sizes to measure (repeatable).") var batches: [Int] = [1, 100]
    @Option(name: .customLong("body-bytes"), help: "Approximate size of each message body.") var bodyBytes: Int = 64
    @Option(help: "With --redis: alternate Concord and Streams in this many slices of the duration each.") var rounds: Int = 4

    func validate() throws {
        for b in batches where !(1...1000).contains(b) { throw ValidationError("--batch must be in [1, 1000]") }
        guard (2...65536).contains(bodyBytes) else { throw ValidationError("--body-bytes must be in [2, 65536]") }
        if let redis, RedisURL(redis) == nil { throw ValidationError("--redis must be redis://host:port[/db], got '\(redis)'") }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be in [1, 100]") }
    }

    func run() throws {
        let opts = options
        let padding = String(repeating: "x", count: max(0, bodyBytes - 16))
        let body = JSONValue.object([("pad", .string(padding))]).serialized()
        let runID = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        var results: [BenchResult] = []
        var ratios: [(String, Double)] = []
        let redisURL = redis.flatMap(RedisURL.init)
        for batch in batches {
            let topic = "bench-\(runID)-b\(batch)"
            guard let redisURL else {
                results.append(concordRun(opts, batch: batch, body: body, topic: topic, seconds: opts.duration))
                continue
            }
            // Alternating slices: both see the same noise of this shared machine.
            let (concord, raw) = interleaved(rounds: rounds, seconds: opts.duration,
                { concordRun(opts, batch: batch, body: body, topic: topic, seconds: $0) },
                { streamsRun(opts, batch: batch, body: body, url: redisURL, stream: "concord-bench:\(runID):b\(batch)", seconds: $0) })
            results.append(concord)
            results.append(raw)
            if raw.opsPerSecond > 0 { ratios.append(("ratio_concord_to_streams_batch_\(batch)", concord.opsPerSecond / raw.opsPerSecond)) }
        }
        printResults(results, ratios: ratios, json: opts.json, extra: [("unit", .string("messages produced+consumed+acked per second; latency per iteration (produce B, consume B, ack)"))])
        if let redisURL {
            // Leave nothing behind: the baseline's streams.
            if let c = try? HiredisSync(url: redisURL) {
                for batch in batches { _ = try? c.call(["DEL", "concord-bench:\(runID):b\(batch)"]) }
                // And Concord's bench topics: the API has no topic delete, and a topic left
                // behind keeps its partitions' timers busy for as long as the cluster runs.
                if let cluster = (try? HTTPClient(url: opts.targets[0])?.get("/status"))??.json?["cluster"]?.stringValue {
                    for batch in batches { removeTopic(c, cluster: cluster, topic: "bench-\(runID)-b\(batch)") }
                }
            }
        }
    }

    /// Deletes a bench topic's keys, named by the node's own layout (`QueueKeys`); nodes forget
    /// the topic at their next registry refresh. Bounded: at most 1,000 SCAN rounds.
    private func removeTopic(_ c: HiredisSync, cluster: String, topic: String) {
        let keys = QueueKeys(cluster: cluster)
        _ = try? c.call(["HDEL", keys.topics, topic])
        _ = try? c.call(["DEL", keys.groups(topic: topic)])
        // Every partition's keys: "concord:<c>:q:{<topic>:<p>}:..." (bench topic names hold no
        // glob characters).
        let pattern = "concord:\(cluster):q:{\(queueKeyEscape(topic)):*"
        var cursor = "0"
        for _ in 0..<1000 {
            guard let parts = (try? c.call(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"]))?.array, parts.count == 2,
                  let next = parts[0].string, let found = parts[1].array else { return }
            let names = found.compactMap(\.string)
            if !names.isEmpty { _ = try? c.call(["DEL"] + names) }
            cursor = next
            if cursor == "0" { return }
        }
    }

    /// Concord over HTTP: POST /queue/produce (batch), /queue/consume (max B), /queue/ack.
    private func concordRun(_ opts: BenchOptions, batch: Int, body: String, topic: String, seconds: Double) -> BenchResult {
        let messages = MessageCounter()
        let produceBody: [UInt8] = {
            let m = "{\"body\":\(body)}"
            if batch == 1 { return Array("{\"topic\":\(JSONValue.string(topic).serialized()),\"body\":\(body)}".utf8) }
            return Array("{\"topic\":\(JSONValue.string(topic).serialized()),\"messages\":[\(Array(repeating: m, count: batch).joined(separator: ","))]}".utf8)
        }()
        let topicJSON = JSONValue.string(topic).serialized()
        let consumeBody = Array("{\"topic\":\(topicJSON),\"group\":\"bench\",\"consumer\":\"b\",\"max\":\(batch)}".utf8)
        let ackPrefix = Array("{\"topic\":\(topicJSON),\"group\":\"bench\",\"receipts\":[".utf8)
        // Register the group before the load (a group receives what is produced after its first use).
        if let c = HTTPClient(url: opts.targets[0]) {
            _ = try? c.post("/queue/consume", json: "{\"topic\":\(topicJSON),\"group\":\"bench\",\"consumer\":\"setup\"}")
        }
        var result = runLoad(name: "concord queue batch \(batch)", concurrency: opts.concurrency, seconds: seconds, quiet: opts.json,
                             setup: { opts.client($0) },
                             operation: { client, _ in
            let p = try client.request("POST", "/queue/produce", body: produceBody)
            guard p.status == 200 else { return false }
            let c = try client.request("POST", "/queue/consume", body: consumeBody)
            guard c.status == 200 else { return false }
            // Scanned, not parsed: the client's CPU is shared with the nodes and Redis here.
            let receipts = scanStrings(c.body, after: receiptMarker)
            if receipts.isEmpty { return true }
            var ack: [UInt8] = ackPrefix
            for (i, r) in receipts.enumerated() {
                if i > 0 { ack.append(0x2C) }
                ack.append(0x22); ack += r; ack.append(0x22)
            }
            ack += [0x5D, 0x7D]
            let a = try client.request("POST", "/queue/ack", body: ack)
            guard a.status == 200, let acked = scanInteger(a.body, after: ackedMarker) else { return false }
            messages.add(acked)
            return true
        })
        result.ops = UInt64(messages.value)
        return result
    }

    /// Raw Redis Streams with the same thread model: one blocking hiredis connection per thread.
    private func streamsRun(_ opts: BenchOptions, batch: Int, body: String, url: RedisURL, stream: String, seconds: Double) -> BenchResult {
        let messages = MessageCounter()
        if let c = try? HiredisSync(url: url) {
            _ = try? c.call(["XGROUP", "CREATE", stream, "bench", "$", "MKSTREAM"])
        }
        let add: [[UInt8]] = [Array("XADD".utf8), Array(stream.utf8), [0x2A], Array("body".utf8), Array(body.utf8)]
        let ackHead: [[UInt8]] = [Array("XACK".utf8), Array(stream.utf8), Array("bench".utf8)]
        var result = runLoad(name: "redis streams batch \(batch)", concurrency: opts.concurrency, seconds: seconds, quiet: opts.json,
                             setup: { worker in (try HiredisSync(url: url), ["XREADGROUP", "GROUP", "bench", "c\(worker)", "COUNT", String(batch), "STREAMS", stream, ">"].map { Array($0.utf8) }) },
                             operation: { state, _ in
            let (conn, read) = state
            for _ in 0..<batch { conn.append(add) }
            var ok = true
            for _ in 0..<batch { try conn.reply { if $0.isError { ok = false } } }
            guard ok else { return false }
            // [[stream, [[id, [field, value]], ...]]]
            var ack = ackHead
            conn.append(read)
            try conn.reply { r in
                guard let entries = r[0]?[1] else { return }
                for e in 0..<entries.count {
                    if let id = entries[e]?[0] { ack.append(Array(id.bytes)) }
                }
            }
            if ack.count == ackHead.count { return true }
            conn.append(ack)
            var acked: Int64 = -1
            try conn.reply { acked = $0.integer ?? -1 }
            guard acked >= 0 else { return false }
            messages.add(Int(acked))
            return true
        })
        result.ops = UInt64(messages.value)
        return result
    }
}

private let receiptMarker = Array("\"receipt\":\"".utf8)
private let ackedMarker = Array("\"acked\":".utf8)

/// The bytes of every string value that follows `marker` (values without escapes).
func scanStrings(_ body: [UInt8], after marker: [UInt8]) -> [ArraySlice<UInt8>] {
    var out: [ArraySlice<UInt8>] = []
    body.withUnsafeBufferPointer { b in
        marker.withUnsafeBufferPointer { m in
            var i = 0
            while let at = find(m, in: b, from: i) {
                var end = at + m.count
                while end < b.count && b[end] != 0x22 { end += 1 }
                out.append(body[(at + m.count)..<end])
                i = end
            }
        }
    }
    return out
}

/// The integer that follows `marker`.
func scanInteger(_ body: [UInt8], after marker: [UInt8]) -> Int? {
    body.withUnsafeBufferPointer { b in
        marker.withUnsafeBufferPointer { m -> Int? in
            guard let at = find(m, in: b, from: 0) else { return nil }
            var j = at + m.count, v = 0, digits = 0
            while j < b.count, b[j] >= 0x30, b[j] <= 0x39 { v = v * 10 + Int(b[j] - 0x30); j += 1; digits += 1 }
            return digits > 0 ? v : nil
        }
    }
}

/// The offset of the first `needle` in `haystack` at or after `from` (memchr, then memcmp).
private func find(_ needle: UnsafeBufferPointer<UInt8>, in haystack: UnsafeBufferPointer<UInt8>, from: Int) -> Int? {
    guard let n = needle.baseAddress, let h = haystack.baseAddress, !needle.isEmpty else { return nil }
    var i = from
    while i + needle.count <= haystack.count {
        guard let hit = memchr(h + i, Int32(n[0]), haystack.count - needle.count + 1 - i) else { return nil }
        let at = h.distance(to: hit.assumingMemoryBound(to: UInt8.self))
        if memcmp(h + at, n, needle.count) == 0 { return at }
        i = at + 1
    }
    return nil
}

final class MessageCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add(_ n: Int) { lock.lock(); count += n; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
