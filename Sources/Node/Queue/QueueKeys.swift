// MARK: - Queue key layout (lua/README.md, "Queue")
//
// Every key of one partition shares the hash tag `{<topic>:<p>}`, so one Lua script may touch
// them all and the layout moves to Redis Cluster unchanged:
//
//   P = concord:<cluster>:q:{<topic>:<p>}:        log, meta, dedup, dedup:exp, delayed,
//                                                 delayed:data, groups, refs
//   G = P + g:<group>:                            inflight, retry, attempts, dlq, dlq:ids, data
//
// Registries (outside any partition):
//
//   concord:<cluster>:q:topics                    hash  topic -> partition count (never changes)
//   concord:<cluster>:q:groups:<topic>            set   group names ever used on the topic
//
// Topic and group names are percent-escaped (`%` `:` `{` `}`) before they go into a key, so
// topic "a:1}:g:x" and a group of topic "a" can never build the same key.

/// Percent-escapes the four characters that structure queue keys.
public func queueKeyEscape(_ name: String) -> String { keyEscape(name, escaping: queueKeySpecials) }
private let queueKeySpecials: Set<UInt8> = [UInt8(ascii: "%"), UInt8(ascii: ":"), UInt8(ascii: "{"), UInt8(ascii: "}")]

/// Percent-escapes `escaping` (ASCII characters; `%` among them) in a name that goes into a
/// Redis key, so no name can forge another's key or leave its hash tag. Shared by the queue
/// and cache key layouts.
private let keyEscapeHex = Array("0123456789ABCDEF".utf8)

func keyEscape(_ name: String, escaping: Set<UInt8>) -> String {
    guard name.utf8.contains(where: escaping.contains) else { return name }
    var out: [UInt8] = []
    out.reserveCapacity(name.utf8.count + 8)
    for u in name.utf8 {
        if escaping.contains(u) {
            out += [0x25, keyEscapeHex[Int(u >> 4)], keyEscapeHex[Int(u & 0x0F)]]
        } else {
            out.append(u)
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Key names of one cluster's queues.
public struct QueueKeys: Sendable {
    public let cluster: String
    public init(cluster: String) { self.cluster = cluster }

    /// `concord:<cluster>:q:topics`: topic -> partitions.
    public var topics: String { "concord:\(cluster):q:topics" }
    /// `concord:<cluster>:q:groups:<topic>`: the topic's group names.
    public func groups(topic: String) -> String { "concord:\(cluster):q:groups:\(queueKeyEscape(topic))" }

    public func partition(topic: String, partition: Int) -> PartitionKeySet {
        PartitionKeySet(prefix: "concord:\(cluster):q:{\(queueKeyEscape(topic)):\(partition)}:")
    }
}

/// Keys of one partition (prefix `P`).
public struct PartitionKeySet: Sendable {
    public let prefix: String
    public var log: String { prefix + "log" }
    public var meta: String { prefix + "meta" }
    public var dedup: String { prefix + "dedup" }
    public var dedupExp: String { prefix + "dedup:exp" }
    public var delayed: String { prefix + "delayed" }
    public var delayedData: String { prefix + "delayed:data" }
    public var groups: String { prefix + "groups" }
    public var refs: String { prefix + "refs" }
    public func group(_ name: String) -> GroupKeySet { GroupKeySet(prefix: prefix + "g:\(queueKeyEscape(name)):") }

    // The KEYS of each script, in the order its header names them.

    /// queue_produce-6: log, meta, dedup, dedup:exp, delayed, delayed:data
    public var produceKeys: [String] { [log, meta, dedup, dedupExp, delayed, delayedData] }
    /// queue_group-2: log, groups
    public var groupKeys: [String] { [log, groups] }
    /// queue_promote-3: log, delayed, delayed:data
    public var promoteKeys: [String] { [log, delayed, delayedData] }
    /// queue_trim-3: log, groups, refs
    public var trimKeys: [String] { [log, groups, refs] }
    /// queue_consume-8: log, meta, groups, refs, G inflight, G retry, G attempts, G data
    public func consumeKeys(_ g: GroupKeySet) -> [String] { [log, meta, groups, refs, g.inflight, g.retry, g.attempts, g.data] }
    /// queue_ack-5: refs, G inflight, G retry, G attempts, G data
    public func ackKeys(_ g: GroupKeySet) -> [String] { [refs, g.inflight, g.retry, g.attempts, g.data] }
    /// queue_nack-8 and queue_redeliver-8: log, refs, G inflight, retry, attempts, dlq, dlq:ids, data
    public func nackKeys(_ g: GroupKeySet) -> [String] { [log, refs, g.inflight, g.retry, g.attempts, g.dlq, g.dlqIds, g.data] }
    /// queue_status-8: log, meta, delayed, groups, G inflight, G retry, G dlq, G attempts
    public func statusKeys(_ g: GroupKeySet) -> [String] { [log, meta, delayed, groups, g.inflight, g.retry, g.dlq, g.attempts] }
}

/// Keys of one group in one partition (prefix `G`).
public struct GroupKeySet: Sendable {
    public let prefix: String
    public var inflight: String { prefix + "inflight" }
    public var retry: String { prefix + "retry" }
    public var attempts: String { prefix + "attempts" }
    public var dlq: String { prefix + "dlq" }
    public var dlqIds: String { prefix + "dlq:ids" }
    public var data: String { prefix + "data" }
    /// queue_dlq-2: dlq, data
    public var dlqKeys: [String] { [dlq, data] }
    /// queue_redrive-5: retry, attempts, dlq, dlq:ids, data
    public var redriveKeys: [String] { [retry, attempts, dlq, dlqIds, data] }
}
