import XCTest
// Key layout, script loading (SCRIPT LOAD + EVALSHA, reload on NOSCRIPT) and typed
// wrappers over the queue scripts in lua/, as the node will call them.
import Foundation
import Runtime

/// Keys of one partition: `concord:<cluster>:q:{<topic>:<p>}:...` (lua/README.md).
struct PartitionKeys {
    let prefix: String
    init(cluster: String = "test", topic: String, partition: Int) {
        prefix = "concord:\(cluster):q:{\(topic):\(partition)}:"
    }
    var log: String { prefix + "log" }
    var meta: String { prefix + "meta" }
    var dedup: String { prefix + "dedup" }
    var dedupExp: String { prefix + "dedup:exp" }
    var delayed: String { prefix + "delayed" }
    var delayedData: String { prefix + "delayed:data" }
    var groups: String { prefix + "groups" }
    var refs: String { prefix + "refs" }
    func group(_ name: String) -> GroupKeys { GroupKeys(prefix: prefix + "g:\(name):") }
}

struct GroupKeys {
    let prefix: String
    var inflight: String { prefix + "inflight" }
    var retry: String { prefix + "retry" }
    var attempts: String { prefix + "attempts" }
    var dlq: String { prefix + "dlq" }
    var dlqIds: String { prefix + "dlq:ids" }
    var data: String { prefix + "data" }
}

/// The script files, loaded from the repository's lua/ directory next to Tests/.
final class Scripts {
    let directory: URL
    private var shas: [String: String] = [:]
    private(set) var loads = 0

    init(filePath: String = #filePath) {
        // Tests/QueueScriptTests/<file>.swift -> ../../lua
        directory = URL(fileURLWithPath: filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("lua")
    }

    init(directory: URL) { self.directory = directory }

    /// The script as the node loads it (shared `--@include` helpers spliced in).
    func source(_ name: String) throws -> String {
        try LuaScripts.source(file: name, directory: directory)
    }

    /// EVALSHA, loading the script first if needed, and again once after NOSCRIPT.
    func eval(_ client: RESPClient, _ name: String, keys: [String], args: [String]) throws -> RESP {
        for _ in 0..<2 {
            let sha = try shas[name] ?? load(client, name)
            let reply = try client.command(["EVALSHA", sha, String(keys.count)] + keys + args)
            if let message = reply.errorMessage, message.hasPrefix("NOSCRIPT") {
                shas[name] = nil
                continue
            }
            return reply
        }
        throw RESPError(description: "\(name): NOSCRIPT after reload")
    }

    func sha(_ name: String) -> String? { shas[name] }

    private func load(_ client: RESPClient, _ name: String) throws -> String {
        let reply = try client.command(["SCRIPT", "LOAD", try source(name)])
        guard let sha = reply.string, sha.count == 40 else {
            throw RESPError(description: "SCRIPT LOAD \(name): \(reply)")
        }
        loads += 1
        shas[name] = sha
        return sha
    }
}

struct Message {
    var id: String
    var dedup = false
    var key = ""
    var body: String
    var delayMs = 0
    var maxAttempts = 5
}

struct Delivery: Equatable {
    let receipt: String
    let id: String
    let body: String
    let key: String
    let attempt: Int
    let seq: Int
}

struct DeadEntry: Equatable {
    let seq: Int
    let id: String
    let body: String
    let key: String
    let attempts: Int
    let lastDeliveryMs: Int
    let deadMs: Int
}

struct QueueStatus: Equatable {
    var lastSeq = 0, logLength = 0, delayed = 0, delayedDue = 0
    var groupKnown = 0, cursor = 0, backlog = 0, retryDue = 0, retryWaiting = 0, inflight = 0, dead = 0
}

/// Typed calls of one partition's scripts on one connection.
struct Queue {
    let client: RESPClient
    let scripts: Scripts
    let keys: PartitionKeys
    let partition: Int

    static let dayMs = 86_400_000

    func raw(_ name: String, keys: [String], args: [String]) throws -> RESP {
        try scripts.eval(client, name, keys: keys, args: args)
    }

    func check(_ reply: RESP, _ name: String) throws -> RESP {
        if let message = reply.errorMessage { throw RESPError(description: "\(name): \(message)") }
        return reply
    }

    func produceArgs(_ messages: [Message], now: Int, windowMs: Int = dayMs) -> [String] {
        var args = [String(now), String(windowMs), String(messages.count)]
        for m in messages {
            args += [m.id, m.dedup ? "1" : "0", m.key, m.body, String(m.delayMs), String(m.maxAttempts)]
        }
        return args
    }

    var produceKeys: [String] { [keys.log, keys.meta, keys.dedup, keys.dedupExp, keys.delayed, keys.delayedData] }

    /// Returns (status, ref) per message.
    @discardableResult
    func produce(_ messages: [Message], now: Int, windowMs: Int = dayMs) throws -> [(String, String)] {
        let reply = try check(raw("queue_produce-6.lua", keys: produceKeys,
                                  args: produceArgs(messages, now: now, windowMs: windowMs)), "produce")
        return (reply.array ?? []).map { ($0.array![0].string!, $0.array![1].string!) }
    }

    func consumeKeys(_ group: String) -> [String] {
        let g = keys.group(group)
        return [keys.log, keys.meta, keys.groups, keys.refs, g.inflight, g.retry, g.attempts, g.data]
    }

    func consume(_ group: String, now: Int, max: Int = 1, visibilityMs: Int = 30_000) throws -> [Delivery] {
        let reply = try check(raw("queue_consume-8.lua", keys: consumeKeys(group),
                                  args: [String(now), group, String(partition), String(max), String(visibilityMs)]),
                              "consume")
        return try deliveries(reply)
    }

    /// A consume reply as deliveries: redeliveries as they are; a lease's range of first
    /// deliveries read with XRANGE, as the node does.
    func deliveries(_ reply: RESP) throws -> [Delivery] {
        var out: [Delivery] = []
        for item in reply.array ?? [] {
            let a = item.array!
            if a.count == 6 { out.append(Queue.delivery(item)); continue }
            XCTAssertEqual(a.count, 3, "lease range {lease, first, last}")
            let lease = a[0].string!, first = a[1].int!, last = a[2].int!
            let entries = try client.command(["XRANGE", keys.log, "0-\(first)", "0-\(last)"]).array ?? []
            XCTAssertEqual(entries.count, last - first + 1, "the reserved range is contiguous")
            for e in entries {
                let pair = e.array!
                let seq = Int(pair[0].string!.dropFirst(2))!
                let f = pair[1].array!.map { $0.string! }
                var fields: [String: String] = [:]
                for i in stride(from: 0, to: f.count - 1, by: 2) { fields[f[i]] = f[i + 1] }
                out.append(Delivery(receipt: "\(partition):\(seq):\(lease)", id: fields["id"]!, body: fields["body"]!,
                                    key: fields["key"] ?? "", attempt: 1, seq: seq))
            }
        }
        return out
    }

    static func delivery(_ r: RESP) -> Delivery {
        let a = r.array!
        return Delivery(receipt: a[0].string!, id: a[1].string!, body: a[2].string!, key: a[3].string!,
                        attempt: a[4].int!, seq: a[5].int!)
    }

    func ensureGroup(_ group: String) throws -> (created: Bool, cursor: Int) {
        let a = try check(raw("queue_group-2.lua", keys: [keys.log, keys.groups], args: [group]), "group").array!
        return (a[0].int! == 1, a[1].int!)
    }

    func ackKeys(_ group: String) -> [String] {
        let g = keys.group(group)
        return [keys.refs, g.inflight, g.retry, g.attempts, g.data]
    }

    func ack(_ group: String, _ receipts: [String]) throws -> (acked: Int, notFound: [String]) {
        let a = try check(raw("queue_ack-5.lua", keys: ackKeys(group),
                              args: [group, String(partition)] + receipts), "ack").array!
        return (a[0].int!, a[1].array!.map { $0.string! })
    }

    func timerKeys(_ group: String) -> [String] {
        let g = keys.group(group)
        return [keys.log, keys.refs, g.inflight, g.retry, g.attempts, g.dlq, g.dlqIds, g.data]
    }

    func nack(_ group: String, _ receipt: String, now: Int, delayMs: Int? = nil) throws -> (String, Int) {
        let a = try check(raw("queue_nack-8.lua", keys: timerKeys(group),
                              args: [String(now), group, String(partition), receipt,
                                     delayMs.map(String.init) ?? ""]), "nack").array!
        return (a[0].string!, a[1].int!)
    }

    func redeliver(_ group: String, now: Int, limit: Int = 1000)
        throws -> (requeued: Int, dead: Int, lost: Int, nextDeadlineMs: Int) {
        let a = try check(raw("queue_redeliver-8.lua", keys: timerKeys(group),
                              args: [String(now), group, String(limit)]), "redeliver").array!
        return (a[0].int!, a[1].int!, a[2].int!, a[3].int!)
    }

    func promote(now: Int, limit: Int = 1000) throws -> (promoted: Int, nextDueMs: Int) {
        let a = try check(raw("queue_promote-3.lua", keys: [keys.log, keys.delayed, keys.delayedData],
                              args: [String(now), String(limit)]), "promote").array!
        return (a[0].int!, a[1].int!)
    }

    func dlq(_ group: String, limit: Int = 100, offset: Int = 0) throws -> (total: Int, entries: [DeadEntry]) {
        let g = keys.group(group)
        let a = try check(raw("queue_dlq-2.lua", keys: [g.dlq, g.data],
                              args: [String(limit), String(offset)]), "dlq").array!
        let entries = a[1].array!.map { r -> DeadEntry in
            let e = r.array!
            return DeadEntry(seq: e[0].int!, id: e[1].string!, body: e[2].string!, key: e[3].string!,
                             attempts: e[4].int!, lastDeliveryMs: e[5].int!, deadMs: e[6].int!)
        }
        return (a[0].int!, entries)
    }

    func redriveKeys(_ group: String) -> [String] {
        let g = keys.group(group)
        return [g.retry, g.attempts, g.dlq, g.dlqIds, g.data]
    }

    func redrive(_ group: String, now: Int, limit: Int = 1000, ids: [String] = [])
        throws -> (redriven: Int, notFound: [String], remaining: Int) {
        let a = try check(raw("queue_redrive-5.lua", keys: redriveKeys(group),
                              args: [String(now), String(limit)] + ids), "redrive").array!
        return (a[0].int!, a[1].array!.map { $0.string! }, a[2].int!)
    }

    func statusKeys(_ group: String) -> [String] {
        let g = keys.group(group)
        return [keys.log, keys.meta, keys.delayed, keys.groups, g.inflight, g.retry, g.dlq, g.attempts]
    }

    func status(_ group: String, now: Int) throws -> QueueStatus {
        let a = try check(raw("queue_status-8.lua", keys: statusKeys(group), args: [String(now), group]),
                          "status").array!.map { $0.int! }
        return QueueStatus(lastSeq: a[0], logLength: a[1], delayed: a[2], delayedDue: a[3],
                           groupKnown: a[4], cursor: a[5], backlog: a[6], retryDue: a[7],
                           retryWaiting: a[8], inflight: a[9], dead: a[10])
    }

    func trim(maxDelete: Int = 100_000, retain: Int = 0) throws -> (deleted: Int, keepFromSeq: Int) {
        let a = try check(raw("queue_trim-3.lua", keys: [keys.log, keys.groups, keys.refs],
                              args: [String(maxDelete), String(retain)]), "trim").array!
        return (a[0].int!, a[1].int!)
    }

    /// Sequence numbers present in the log, in order.
    func logSeqs() throws -> [Int] {
        let entries = try client.command(["XRANGE", keys.log, "-", "+"]).array ?? []
        return entries.map { Int($0.array![0].string!.split(separator: "-")[1])! }
    }
}
