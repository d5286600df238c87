import Runtime

// MARK: - Queue request bodies (CONTRACT §2.2), parsed and validated in full before any state
// is touched: a 400 names the field and nothing is stored.

/// Limits of the queue API. Script-side limits (lua/README.md) are the same or wider.
public enum QueueLimits {
    public static let partitionsDefault: Int64 = 8
    public static let partitionsRange: ClosedRange<Int64> = 1...256
    public static let batchMax = 1000
    public static let delayMsRange: ClosedRange<Int64> = 0...2_592_000_000          // 30 days
    public static let maxAttemptsRange: ClosedRange<Int64> = 1...10_000
    public static let maxAttemptsDefault: Int64 = 5
    public static let consumeMaxRange: ClosedRange<Int64> = 1...1000
    public static let visibilityMsRange: ClosedRange<Int64> = 1...43_200_000        // 12 h
    public static let visibilityMsDefault: Int64 = 30_000
    public static let waitMsRange: ClosedRange<Int64> = 0...60_000
    public static let nackDelayMsRange: ClosedRange<Int64> = 0...43_200_000
    public static let dlqLimitRange: ClosedRange<Int64> = 1...1000
    public static let dlqLimitDefault: Int64 = 100
    public static let dedupWindowMs: Int64 = 86_400_000                              // 24 h
    public static let defaultGroup = "default"
}

public struct ProduceMessage: Sendable {
    public var id: String?
    public var key: String?
    public var body: [UInt8]         // serialized JSON
    public var delayMs: Int64
    public var maxAttempts: Int64
}

public struct ProduceRequest: Sendable {
    public var topic: String
    public var messages: [ProduceMessage]
    /// `messages` form (answer with a list) rather than the single form.
    public var batch: Bool

    public init(_ object: JSONValue) throws {
        let f = Fields(object)
        topic = try f.name("topic")
        if f.has("messages") {
            if f.has("body") { throw HTTPError.badRequest("give either 'body' or 'messages', not both") }
            let items = try f.array("messages", maxCount: QueueLimits.batchMax)
            messages = []
            messages.reserveCapacity(items.count)
            for (i, item) in items.enumerated() {
                guard case .object = item else { throw HTTPError.badRequest("field 'messages[\(i)]' must be an object") }
                messages.append(try ProduceRequest.message(item, prefix: "messages[\(i)].", required: true))
            }
            batch = true
        } else {
            messages = [try ProduceRequest.message(object, prefix: "", required: true)]
            batch = false
        }
    }

    static func message(_ object: JSONValue, prefix: String, required: Bool) throws -> ProduceMessage {
        let f = Fields(object)
        guard let body = object["body"] else { throw HTTPError.badRequest("missing field '\(prefix)body'") }
        do {
            let id = try f.optionalName("id")
            let key = try f.optionalName("key")
            let delay = try f.int("delay_ms", default: 0, in: QueueLimits.delayMsRange)
            let attempts = try f.int("max_attempts", default: QueueLimits.maxAttemptsDefault, in: QueueLimits.maxAttemptsRange)
            let text: [UInt8]
            if case .raw(let raw) = body { text = raw } else { text = body.bytes }
            return ProduceMessage(id: id, key: key, body: text, delayMs: delay, maxAttempts: attempts)
        } catch let e as HTTPError where !prefix.isEmpty {
            // Name the field with its position in the batch: 'messages[3].delay_ms'.
            throw HTTPError.badRequest(e.message.replacingOccurrences(of: "'", with: "'\(prefix)", options: [], range: e.message.range(of: "'")))
        }
    }
}

public struct ConsumeRequest: Sendable {
    public var topic: String
    public var group: String
    public var consumer: String
    public var max: Int
    public var visibilityMs: Int64
    public var waitMs: Int64

    public init(_ object: JSONValue) throws {
        let f = Fields(object)
        topic = try f.name("topic")
        group = try f.optionalName("group") ?? QueueLimits.defaultGroup
        consumer = try f.name("consumer")
        max = Int(try f.int("max", default: 1, in: QueueLimits.consumeMaxRange))
        visibilityMs = try f.int("visibility_ms", default: QueueLimits.visibilityMsDefault, in: QueueLimits.visibilityMsRange)
        waitMs = try f.int("wait_ms", default: 0, in: QueueLimits.waitMsRange)
    }
}

public struct AckRequest: Sendable {
    public var topic: String
    public var group: String
    public var receipts: [String]

    public init(_ object: JSONValue) throws {
        let f = Fields(object)
        topic = try f.name("topic")
        group = try f.optionalName("group") ?? QueueLimits.defaultGroup
        let items = try f.array("receipts", maxCount: QueueLimits.batchMax)
        receipts = try items.enumerated().map { i, v in
            guard let s = v.stringValue else { throw HTTPError.badRequest("field 'receipts[\(i)]' must be a string") }
            return try Validate.name(s, field: "receipts[\(i)]")
        }
    }
}

public struct NackRequest: Sendable {
    public var topic: String
    public var group: String
    public var receipt: String
    public var delayMs: Int64?

    public init(_ object: JSONValue) throws {
        let f = Fields(object)
        topic = try f.name("topic")
        group = try f.optionalName("group") ?? QueueLimits.defaultGroup
        receipt = try f.name("receipt")
        delayMs = try f.optionalInt("delay_ms", in: QueueLimits.nackDelayMsRange)
    }
}

public struct TopicRequest: Sendable {
    public var topic: String
    public var partitions: Int

    public init(_ object: JSONValue) throws {
        let f = Fields(object)
        topic = try f.name("topic")
        partitions = Int(try f.int("partitions", default: QueueLimits.partitionsDefault, in: QueueLimits.partitionsRange))
    }
}

public struct RedriveRequest: Sendable {
    public var topic: String
    public var group: String
    public var ids: [String]?

    public init(_ object: JSONValue) throws {
        let f = Fields(object)
        topic = try f.name("topic")
        group = try f.optionalName("group") ?? QueueLimits.defaultGroup
        if f.has("ids") {
            guard let items = object["ids"]?.arrayValue else { throw HTTPError.badRequest("field 'ids' must be an array") }
            guard items.count <= QueueLimits.batchMax else { throw HTTPError.badRequest("field 'ids' has more than \(QueueLimits.batchMax) items") }
            ids = try items.enumerated().map { i, v in
                guard let s = v.stringValue else { throw HTTPError.badRequest("field 'ids[\(i)]' must be a string") }
                return try Validate.name(s, field: "ids[\(i)]")
            }
        }
    }
}

/// `<partition>:<seq>:<delivery or L<lease>>` -> the partition, if well formed and below `partitions`.
func receiptPartition(_ receipt: String, partitions: Int) -> Int? {
    guard let colon = receipt.utf8.firstIndex(of: 0x3A) else { return nil }
    let head = receipt.utf8[receipt.utf8.startIndex..<colon]
    guard !head.isEmpty, head.count <= 5, let p = Int(Substring(head)), p >= 0, p < partitions else { return nil }
    return p
}

/// `<digits>:<digits>:<digits>` or `<digits>:<digits>:L<digits>`: the shape of a receipt
/// consume hands out (not, for one, queue_ack's short form `p:first-last:L<n>`).
public func isDeliveredReceipt(_ receipt: String) -> Bool {
    var fields = 0, digits = 0, lease = false
    for b in receipt.utf8 {
        switch b {
        case 0x30...0x39: digits += 1
        case 0x3A:
            guard digits > 0, fields < 2 else { return false }
            fields += 1; digits = 0
        case 0x4C:
            guard fields == 2, digits == 0, !lease else { return false }
            lease = true
        default: return false
        }
    }
    return fields == 2 && digits > 0
}

/// One partition's receipts as queue_ack takes them: each run of consecutive first-delivery
/// receipts of one lease (`p:s:Ln`, `p:s+1:Ln`, ...) joined into the script's short form
/// `p:s-e:Ln`, so the usual ack of a whole consumed batch is one comparison in the script
/// rather than a pattern match per receipt. Only receipts written in canonical decimal are
/// joined: the script spells a short form's unacked receipts one by one in `not_found`, and
/// those must read as the client wrote them.
public func compactLeaseReceipts(_ receipts: [String]) -> [String] {
    /// `p:seq:L<n>` with every number canonical (digits, no leading zero; seq under 16 digits):
    /// seq, and the byte offsets of its first digit and of the second colon.
    func parse(_ r: String) -> (seq: Int, seqStart: Int, seqEnd: Int)? {
        var r = r
        return r.withUTF8 { u -> (Int, Int, Int)? in
            var i = 0
            func number(max: Int) -> Int? {
                let start = i
                var v = 0
                while i < u.count, u[i] >= 0x30, u[i] <= 0x39 { v = v &* 10 &+ Int(u[i] - 0x30); i += 1 }
                let n = i - start
                guard n > 0, n <= max, u[start] != 0x30 || n == 1 else { return nil }
                return v
            }
            guard number(max: 5) != nil, i < u.count, u[i] == 0x3A else { return nil }
            i += 1
            let seqStart = i
            guard let seq = number(max: 15), i < u.count, u[i] == 0x3A else { return nil }
            let seqEnd = i
            i += 1
            guard i < u.count, u[i] == 0x4C else { return nil }
            i += 1
            guard number(max: 15) != nil, i == u.count else { return nil }
            return (seq, seqStart, seqEnd)
        }
    }
    /// Same partition text and lease: the receipts differ only in their seq.
    func sameLease(_ a: String, _ pa: (seq: Int, seqStart: Int, seqEnd: Int), _ b: String, _ pb: (seq: Int, seqStart: Int, seqEnd: Int)) -> Bool {
        let ua = a.utf8, ub = b.utf8
        return pa.seqStart == pb.seqStart
            && ua.prefix(pa.seqStart).elementsEqual(ub.prefix(pb.seqStart))
            && ua.dropFirst(pa.seqEnd).elementsEqual(ub.dropFirst(pb.seqEnd))
    }
    var out: [String] = []
    out.reserveCapacity(receipts.count)
    var i = 0
    while i < receipts.count {
        guard let first = parse(receipts[i]) else { out.append(receipts[i]); i += 1; continue }
        var j = i + 1
        while j < receipts.count, let next = parse(receipts[j]), next.seq == first.seq + (j - i),
              sameLease(receipts[i], first, receipts[j], next) { j += 1 }
        if j - i == 1 {
            out.append(receipts[i])
        } else {
            // "p:" + "first-last" + ":L<n>"
            let u = receipts[i].utf8
            out.append(String(decoding: u.prefix(first.seqStart), as: UTF8.self) + "\(first.seq)-\(first.seq + (j - i - 1))"
                       + String(decoding: u.dropFirst(first.seqEnd), as: UTF8.self))
        }
        i = j
    }
    return out
}
