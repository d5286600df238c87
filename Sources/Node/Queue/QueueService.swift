import Foundation
import Logging
import Placement
import Runtime

// MARK: - The queue service (CONTRACT §2.2, DESIGN §4)
//
// Messages live in Redis; every move is one Lua script in lua/queue_*.lua (atomic).
//
// Who runs what:
// - Any node executes produce, consume, ack, nack, status, DLQ and redrive itself, directly
//   against Redis. No forwarding to a partition's owner is needed for correctness: each of
//   those operations is a single atomic script on one partition's keys (they share a hash
//   tag), so two nodes serving two consumers of one partition at once are serialized by Redis
//   exactly as two clients of one node would be.
// - The partition's owner (HashRing over the live members, 150 virtual nodes each) runs the
//   partition's timers: redelivery per group (visibility deadlines, dead-lettering), delayed
//   promotion and trim. Ownership follows membership on every tick. While two nodes disagree
//   about membership, both may run one partition's timers for a moment: harmless, because the
//   timer scripts are atomic and idempotent (a deadline is passed once; a due message is
//   promoted once).
//
// Long-polls wait for a bus notification (QueueWaiters.swift), never busy-poll.

public final class QueueService: NodeService {
    private unowned let node: ConcordNode
    let keys: QueueKeys
    private var logger: Logger { node.logger }
    private var redis: RedisConnection { node.redis }
    private var scripts: LuaScripts { node.scripts }
    private var metrics: NodeMetrics { node.metrics }
    private var loop: EventLoop { node.loop }

    /// Topic -> partition count (a topic's count never changes once created).
    private var topics: [String: Int] = [:]
    /// Topic -> groups whose registration (queue_group on every partition) this node has done
    /// or seen completed in the registry.
    private var registeredGroups: [String: Set<String>] = [:]
    private var pendingRegistrations: [String: [(HTTPError?) -> Void]] = [:]
    /// Round-robin cursor per topic for messages with neither key nor id.
    private var roundRobin: [String: Int] = [:]
    /// Rotating first partition of a consume pass, per topic.
    private var consumeCursor: [String: Int] = [:]
    /// Incremented on every notification for the topic (local or from the bus).
    private var notifyGeneration: [String: UInt64] = [:]
    /// Partition hints for a consume pass: `notifySeq` at a partition's last notification,
    /// and, per (topic, group), at the start of the last call that found it drained. A
    /// partition notified since it was drained is tried first, so a consume of one message
    /// on an 8-partition topic usually costs one script call, not up to eight. Hints only
    /// order the pass; when they do not fill `max`, every other partition is still tried.
    private var notifySeq: UInt64 = 0
    private var partitionNotified: [String: [Int: UInt64]] = [:]
    private var partitionDrained: [String: [Int: UInt64]] = [:]

    private var waitQueues: [String: WaitQueue] = [:]
    private var pendingPublish: [String: Set<Int>] = [:]
    private var publishScheduled = false

    // Owner timers.
    private var timers: [LoopTimer] = []
    private var ring = HashRing(nodes: [])
    private var ringMembers: Set<String> = []
    private var tickOutstanding = 0
    private var tickCount: UInt64 = 0
    private var timerJobCursor = 0
    private var refreshOutstanding = false
    private var sampleOutstanding = 0
    private var stopping = false

    static let tickMs = 200
    /// Notifications of one node are coalesced over this window: one PUBLISH (fanned out to
    /// every node) per window instead of one per produce; a remote long-poll wakes at most
    /// this much later.
    static let publishCoalesceMs = 2
    static let fallbackMs = 1000
    static let timerJobsPerTickMax = 512
    static let timerScriptLimit = "1000"
    static let trimMaxDelete = "10000"
    static let trimRetain = "100"
    /// At most this many topics exist (every node tracks them all: placement, owner timers);
    /// creating one more is refused with 409. CONCORD_MAX_TOPICS overrides (tests).
    static let topicsMax = Int(ProcessInfo.processInfo.environment["CONCORD_MAX_TOPICS"] ?? "").flatMap { (1...1_000_000).contains($0) ? $0 : nil } ?? 10_000

    private let idPrefix: String
    private var idCounter: UInt64 = 0

    public init(node: ConcordNode) {
        self.node = node
        keys = QueueKeys(cluster: node.config.cluster)
        idPrefix = String(UInt64.random(in: 0...UInt64.max), radix: 36) + "-"
    }

    // MARK: NodeService

    public func register(_ router: Router) {
        router.add(.POST, "/queue/produce") { [unowned self] request, _ in try self.produce(request) }
        router.add(.POST, "/queue/consume") { [unowned self] request, _ in try self.consume(request) }
        router.add(.POST, "/queue/ack") { [unowned self] request, _ in try self.ack(request) }
        router.add(.POST, "/queue/nack") { [unowned self] request, _ in try self.nack(request) }
        router.add(.POST, "/queue/topic") { [unowned self] request, _ in try self.createTopic(request) }
        router.add(.GET, "/queue/status/{topic}") { [unowned self] request, params in try self.status(request, params) }
        router.add(.GET, "/queue/dlq/{topic}") { [unowned self] request, params in try self.dlq(request, params) }
        router.add(.POST, "/queue/dlq/redrive") { [unowned self] request, _ in try self.redrive(request) }
    }

    public func start() {
        node.bus.on(.queueNotify) { [weak self] envelope in self?.receivedNotification(envelope) }
        timers.append(loop.every(ms: QueueService.tickMs) { [weak self] in self?.tick() })
        timers.append(loop.every(ms: 1000) { [weak self] in self?.refreshRegistry() })
        refreshRegistry()
    }

    public func shutdown(_ done: @escaping () -> Void) {
        stopping = true
        for t in timers { t.cancel() }
        timers.removeAll()
        // Long-polls answer now with what they have (nothing): clients consume elsewhere.
        for queue in waitQueues.values {
            queue.fallback?.cancel()
            for w in queue.waiters {
                w.expired = true   // a busy one answers when its attempt returns
                if !w.busy { finishWaiter(w, in: queue, messages: Deliveries()) }
            }
        }
        done()
    }

    // MARK: errors

    /// A Redis error reply as the HTTP answer: unreachable / restarting Redis is 503 with
    /// Retry-After (the client retries; a produce retried with its id is deduplicated).
    func httpError(_ message: String) -> HTTPError {
        let transient = ["ERR redis unavailable", "ERR connection lost", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY", "NOSCRIPT", "ERR script"]
        if transient.contains(where: { message.hasPrefix($0) }) {
            return HTTPError.unavailable("redis unavailable: \(message)")
        }
        // Redis at maxmemory refusing writes: what was refused is not stored (a plain produce's
        // pipelined XADDs before the limit was hit are); it passes once consumers drain (or the
        // operator raises the limit), so it is retryable like unavailability.
        if message.hasPrefix("OOM") { return HTTPError.unavailable("redis out of memory: \(message)") }
        if message.hasPrefix("BADARG ") { return HTTPError.badRequest(String(message.dropFirst(7))) }
        logger.error("queue script failed", metadata: ["error": "\(message)"])
        return HTTPError(500, "internal", "redis error: \(message)")
    }

    // MARK: topics and groups

    /// The topic's partition count; with `create`, a missing topic is created with 8.
    ///
    ///     EVALSHA queue_topic 1 concord:<c>:q:topics <topic> 8 <max topics>     (create)
    ///     HGET concord:<c>:q:topics <topic>                                      (otherwise)
    func withTopic(_ topic: String, create: Bool, _ body: @escaping (Result<Int, HTTPError>) -> Void) {
        if let n = topics[topic] { body(.success(n)); return }
        if create {
            ensureTopic(topic, partitions: Int(QueueLimits.partitionsDefault)) { [weak self] result in
                if case .success(let n) = result { self?.topics[topic] = n }
                body(result)
            }
            return
        }
        redis.send(["HGET", keys.topics, topic]) { [weak self] reply in
            guard let self else { return }
            if let error = reply.errorMessage { body(.failure(self.httpError(error))); return }
            guard case .string = reply, let n = reply.integer.map(Int.init), QueueLimits.partitionsRange.contains(Int64(n)) else {
                if reply == .null { body(.failure(HTTPError.notFound("unknown topic '\(topic)'"))); return }
                body(.failure(HTTPError(500, "internal", "topic registry holds a bad partition count for '\(topic)'")))
                return
            }
            self.topics[topic] = n
            body(.success(n))
        }
    }

    /// Registers the group on every partition of the topic at its first use on this node
    /// (queue_group-2 is idempotent), then in the topic's group registry (read by the owners'
    /// redelivery timers). Registry membership therefore implies every partition knows it.
    ///
    ///     EVALSHA queue_group 2 P:log P:groups <group>     (each partition)
    ///     SADD concord:<c>:q:groups:<topic> <group>
    func withGroup(_ topic: String, partitions: Int, group: String, _ body: @escaping (HTTPError?) -> Void) {
        if registeredGroups[topic]?.contains(group) == true { body(nil); return }
        let id = topic + "\u{0}" + group
        if pendingRegistrations[id] != nil { pendingRegistrations[id]!.append(body); return }
        pendingRegistrations[id] = [body]
        var remaining = partitions
        var failure: HTTPError?
        let finish: () -> Void = { [weak self] in
            guard let self else { return }
            let callbacks = self.pendingRegistrations.removeValue(forKey: id) ?? []
            if failure == nil { self.registeredGroups[topic, default: []].insert(group) }
            for cb in callbacks { cb(failure) }
        }
        for p in 0..<partitions {
            scripts.run("queue_group", keys: keys.partition(topic: topic, partition: p).groupKeys, args: [group]) { [weak self] reply in
                guard let self else { return }
                if let error = reply.errorMessage, failure == nil { failure = self.httpError(error) }
                remaining -= 1
                guard remaining == 0 else { return }
                if failure != nil { finish(); return }
                self.redis.send(["SADD", self.keys.groups(topic: topic), group]) { [weak self] reply in
                    if let error = reply.errorMessage, failure == nil { failure = self?.httpError(error) }
                    finish()
                }
            }
        }
    }

    /// Re-reads the registries: which topics exist, which groups each has (the owners' timers
    /// need them). Redis is the truth: a topic or group Redis no longer has (a flushed or lost
    /// Redis) is forgotten here too, and registered again at its next use.
    ///
    ///     HGETALL concord:<c>:q:topics
    ///     SMEMBERS concord:<c>:q:groups:<topic>    (each topic)
    private func refreshRegistry() {
        guard !refreshOutstanding, redis.isReady else { return }
        refreshOutstanding = true
        redis.send(["HGETALL", keys.topics]) { [weak self] reply in
            guard let self else { return }
            guard let items = reply.array else { self.refreshOutstanding = false; return }
            var fresh: [String: Int] = [:]
            var i = 0
            while i + 1 < items.count, fresh.count < QueueService.topicsMax {
                if let t = items[i].string, let n = items[i + 1].integer, QueueLimits.partitionsRange.contains(n) { fresh[t] = Int(n) }
                i += 2
            }
            self.topics = fresh
            // Per-topic counters exist only for topics that exist: names seen in other nodes'
            // notifications or of deleted topics must not accumulate.
            self.roundRobin = self.roundRobin.filter { fresh[$0.key] != nil }
            self.consumeCursor = self.consumeCursor.filter { fresh[$0.key] != nil }
            self.notifyGeneration = self.notifyGeneration.filter { fresh[$0.key] != nil }
            self.partitionNotified = self.partitionNotified.filter { fresh[$0.key] != nil }
            var remaining = fresh.count
            if remaining == 0 { self.registeredGroups = [:]; self.refreshOutstanding = false; return }
            var groups: [String: Set<String>] = [:]
            for topic in fresh.keys {
                self.redis.send(["SMEMBERS", self.keys.groups(topic: topic)]) { [weak self] reply in
                    guard let self else { return }
                    if let members = reply.array {
                        groups[topic] = Set(members.compactMap(\.string))
                    } else if let known = self.registeredGroups[topic] {
                        groups[topic] = known   // keep what we had on an error
                    }
                    remaining -= 1
                    if remaining == 0 {
                        self.registeredGroups = groups
                        self.refreshOutstanding = false
                    }
                }
            }
        }
    }

    /// Creates the topic with `partitions` unless it exists (then its own count), or fails
    /// with 409 when the registry already holds `topicsMax` topics.
    private func ensureTopic(_ topic: String, partitions: Int, _ done: @escaping (Result<Int, HTTPError>) -> Void) {
        scripts.run("queue_topic", keys: [keys.topics], args: [topic, String(partitions), String(QueueService.topicsMax)]) { [weak self] reply in
            guard let self else { return }
            if let error = reply.errorMessage { done(.failure(self.httpError(error))); return }
            guard let items = reply.array?.map({ $0.integer ?? 0 }), items.count == 3 else {
                done(.failure(HTTPError.unavailable("topic registry did not answer"))); return
            }
            if items[0] < 0 {
                done(.failure(HTTPError(409, "conflict", "topic '\(topic)' not created: the cluster already has \(items[2]) topics, the most it keeps",
                                        extra: [("max_topics", .int(Int64(QueueService.topicsMax)))])))
                return
            }
            guard QueueLimits.partitionsRange.contains(items[1]) else {
                done(.failure(HTTPError(500, "internal", "topic registry holds a bad partition count for '\(topic)'"))); return
            }
            done(.success(Int(items[1])))
        }
    }

    // MARK: POST /queue/topic

    private func createTopic(_ request: HTTPRequest) throws {
        let input = try TopicRequest(try request.jsonObject())
        ensureTopic(input.topic, partitions: input.partitions) { [weak self] result in
            guard let self else { return }
            let n: Int
            switch result {
            case .failure(let e): request.fail(e); return
            case .success(let count): n = count
            }
            self.topics[input.topic] = n
            if n != input.partitions {
                request.fail(HTTPError(409, "conflict", "topic '\(input.topic)' exists with \(n) partitions", extra: [("partitions", .int(n))]))
                return
            }
            request.respond(200, .object([("topic", .string(input.topic)), ("partitions", .int(n))]))
        }
    }

    // MARK: POST /queue/produce

    private func nextID() -> String {
        idCounter &+= 1
        return idPrefix + String(idCounter, radix: 36)
    }

    private func produce(_ request: HTTPRequest) throws {
        // Bodies are only stored and handed back: kept as their text, no tree built.
        let input = try ProduceRequest(try request.jsonObject(rawMembers: "body"))
        withTopic(input.topic, create: true) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let e): request.fail(e)
            case .success(let partitions): self.store(input, partitions: partitions, request: request)
            }
        }
    }

    /// Places each message (key -> hash of key; else id -> hash of id, so a retried produce
    /// meets its dedup entry; else one round-robin partition for the request), then stores
    /// each partition's share, all pipelined. Answers once every partition answered.
    ///
    ///     EVALSHA queue_produce 6 P:log P:meta P:dedup P:dedup:exp P:delayed P:delayed:data
    ///             now_ms 86400000 n [id dedup key body delay_ms max_attempts]...
    ///
    /// or, when no message of the share has an `id` or a delay:
    ///
    ///     XADD P:log 0-* id <id> body <body> [key <key>] [max <n>]   (each, pipelined)
    private func store(_ input: ProduceRequest, partitions: Int, request: HTTPRequest) {
        let topic = input.topic
        // Reduced by the current count: a topic re-created with fewer partitions (a lost registry)
        // must not get a message on a partition no consumer reads.
        let rr = roundRobin[topic, default: Int.random(in: 0..<partitions)] % partitions
        roundRobin[topic] = (rr + 1) % partitions
        var ids: [String] = []
        ids.reserveCapacity(input.messages.count)
        var placement: [Int] = []
        placement.reserveCapacity(input.messages.count)
        var byPartition: [Int: [Int]] = [:]
        for (i, m) in input.messages.enumerated() {
            let p: Int
            if let key = m.key { p = Placement.partition(forKey: key, partitions: partitions) }
            else if let id = m.id { p = Placement.partition(forKey: id, partitions: partitions) }
            else { p = rr }
            ids.append(m.id ?? nextID())
            placement.append(p)
            byPartition[p, default: []].append(i)
        }
        let now = String(EventLoop.wallMs())
        var remaining = byPartition.count
        var failure: HTTPError?
        var stored = 0
        var notify: [Int] = []
        let finish: () -> Void = { [weak self] in
            guard let self else { return }
            remaining -= 1
            guard remaining == 0 else { return }
            if stored > 0 { self.metrics.increment("concord_queue_produced_total", [("topic", topic)], by: stored) }
            if !notify.isEmpty { self.announce(topic: topic, partitions: notify) }
            if let failure { request.fail(failure); return }
            self.respondProduced(request, batch: input.batch, ids: ids, placement: placement)
        }
        for (p, indices) in byPartition {
            if indices.allSatisfy({ input.messages[$0].id == nil && input.messages[$0].delayMs == 0 }) {
                // Nothing to deduplicate or delay: only the log is written, by pipelined bare
                // XADDs (no script, no MULTI; the stream assigns the sequence numbers).
                // The fields of lua/includes/log_entry.lua: key and max only when set.
                let log = Array(keys.partition(topic: topic, partition: p).log.utf8)
                var commands = RESPBatch(commands: indices.count,
                                         capacity: indices.reduce(0) { $0 + 96 + log.count + input.messages[$1].body.count })
                for i in indices {
                    let m = input.messages[i]
                    let key = m.key.flatMap { $0.isEmpty ? nil : $0 }
                    let max = m.maxAttempts == QueueLimits.maxAttemptsDefault ? nil : String(m.maxAttempts)
                    commands.begin(arguments: 7 + (key == nil ? 0 : 2) + (max == nil ? 0 : 2))
                    commands.add(QueueService.xadd); commands.add(log); commands.add(QueueService.autoSeq)
                    commands.add(QueueService.fieldID); commands.add(ids[i])
                    commands.add(QueueService.fieldBody); commands.add(m.body)
                    if let key { commands.add(QueueService.fieldKey); commands.add(key) }
                    if let max { commands.add(QueueService.fieldMax); commands.add(max) }
                }
                // The log's share is stored when every XADD answered an ID; the first error
                // met is the one to report. Each XADD is atomic by itself: a failure part way
                // (a lost connection) may have stored the first ones, which a retry of the
                // produce then adds again (at least once), as when a reply is lost.
                redis.pipeline(commands) { [weak self] error, succeeded in
                    guard let self else { return }
                    if let error, failure == nil { failure = self.httpError(error) }
                    stored += succeeded
                    if succeeded > 0 { notify.append(p) }
                    finish()
                }
                continue
            }
            var args: [[UInt8]] = [Array(now.utf8), Array(String(QueueLimits.dedupWindowMs).utf8), Array(String(indices.count).utf8)]
            args.reserveCapacity(3 + 6 * indices.count)
            for i in indices {
                let m = input.messages[i]
                args.append(Array(ids[i].utf8))
                args.append(m.id == nil ? [0x30] : [0x31])
                args.append(Array((m.key ?? "").utf8))
                args.append(m.body)
                args.append(Array(String(m.delayMs).utf8))
                args.append(Array(String(m.maxAttempts).utf8))
            }
            scripts.run("queue_produce", keys: keys.partition(topic: topic, partition: p).produceKeys, args: args) { [weak self] reply in
                guard let self else { return }
                if let error = reply.errorMessage {
                    if failure == nil { failure = self.httpError(error) }
                } else if let items = reply.array {
                    var fresh = false
                    for item in items {
                        guard let status = item.array?.first?.string else { continue }
                        if status == "new" { fresh = true; stored += 1 } else if status == "delayed" { stored += 1 }
                    }
                    if fresh { notify.append(p) }
                }
                finish()
            }
        }
    }

    private static let xadd = Array("XADD".utf8), autoSeq = Array("0-*".utf8)
    private static let fieldID = Array("id".utf8), fieldKey = Array("key".utf8), fieldBody = Array("body".utf8)
    private static let fieldMax = Array("max".utf8)

    private func respondProduced(_ request: HTTPRequest, batch: Bool, ids: [String], placement: [Int]) {
        if !batch {
            request.respond(200, .object([("id", .string(ids[0])), ("partition", .int(placement[0]))]))
            return
        }
        var out: [UInt8] = []
        out.reserveCapacity(32 + ids.count * 48)
        JSONBytes.appendLiteral("{\"messages\":[", into: &out)
        for i in ids.indices {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSONBytes.appendLiteral("{\"id\":", into: &out)
            JSONBytes.appendString(ids[i], into: &out)
            JSONBytes.appendLiteral(",\"partition\":", into: &out)
            JSONBytes.appendInt(Int64(placement[i]), into: &out)
            out.append(UInt8(ascii: "}"))
        }
        JSONBytes.appendLiteral("]}", into: &out)
        request.respond(200, bytes: out, contentType: "application/json", headers: [])
    }

    // MARK: notifications

    /// New deliverable messages in these partitions: wake this node's waiters now, and tell
    /// the other nodes (one coalesced PUBLISH per `publishCoalesceMs`, sent on the command
    /// connection after the script call that stored them, so it reaches Redis after the write).
    func announce(topic: String, partitions: [Int]) {
        wake(topic: topic, partitions: partitions, sinceMicros: EventLoop.monoMicros())
        pendingPublish[topic, default: []].formUnion(partitions)
        guard !publishScheduled else { return }
        publishScheduled = true
        loop.after(ms: QueueService.publishCoalesceMs) { [weak self] in self?.flushPublish() }
    }

    /// Payload: {"topics": [[topic, [partition, ...]], ...]}
    private func flushPublish() {
        publishScheduled = false
        guard !pendingPublish.isEmpty else { return }
        let entries: [JSONValue] = pendingPublish.map { topic, parts in
            .array([.string(topic), .array(parts.sorted().map { .int($0) })])
        }
        pendingPublish.removeAll(keepingCapacity: true)
        node.bus.broadcast(type: .queueNotify, payload: JSONValue.object([("topics", .array(entries))]).bytes)
    }

    private func receivedNotification(_ envelope: Envelope) {
        guard envelope.sender != node.config.id else { return } // woken locally already
        guard let value = try? JSONParser.parse(envelope.payload), let entries = value["topics"]?.arrayValue else { return }
        let now = EventLoop.monoMicros()
        for entry in entries.prefix(10_000) {
            guard let pair = entry.arrayValue, pair.count == 2, let topic = pair[0].stringValue, let parts = pair[1].arrayValue else { continue }
            let partitions = parts.prefix(256).compactMap { $0.int64Value.map(Int.init) }.filter { (0..<256).contains($0) }
            wake(topic: topic, partitions: partitions, sinceMicros: now)
        }
    }

    private func wake(topic: String, partitions: [Int], sinceMicros: Int64) {
        notifyGeneration[topic, default: 0] &+= 1
        notifySeq &+= 1
        var notified = partitionNotified[topic] ?? [:]
        for p in partitions { notified[p] = notifySeq }
        partitionNotified[topic] = notified
        for queue in waitQueues.values where queue.topic == topic {
            queue.dirty.formUnion(partitions)
            if queue.dirtySinceMicros == nil { queue.dirtySinceMicros = sinceMicros }
            pump(queue)
        }
    }

    // MARK: POST /queue/consume

    /// Deliveries of a consume answer, already written as the JSON objects its `messages`
    /// list holds, comma-separated, in delivery order: `{"id","receipt","body","key",
    /// "partition","attempt"}` each (body: the stored JSON text, as is). One buffer for a batch,
    /// not an array per message.
    struct Deliveries {
        private(set) var count = 0
        private(set) var redelivered = 0
        private(set) var json: [UInt8] = []

        var isEmpty: Bool { count == 0 }

        init(reserving bytes: Int = 0) { json.reserveCapacity(bytes) }

        mutating func append(partition: Int, receipt: UnsafeBufferPointer<UInt8>, id: UnsafeBufferPointer<UInt8>,
                             body: UnsafeBufferPointer<UInt8>, key: UnsafeBufferPointer<UInt8>, attempt: Int64) {
            if count > 0 { json.append(UInt8(ascii: ",")) }
            count += 1
            if attempt > 1 { redelivered += 1 }
            JSONBytes.appendLiteral("{\"id\":", into: &json)
            JSONBytes.appendString(id, into: &json)
            JSONBytes.appendLiteral(",\"receipt\":", into: &json)
            JSONBytes.appendString(receipt, into: &json)
            JSONBytes.appendLiteral(",\"body\":", into: &json)
            JSONBytes.appendRaw(body, into: &json)
            JSONBytes.appendLiteral(",\"key\":", into: &json)
            if key.isEmpty { JSONBytes.appendLiteral("null", into: &json) } else { JSONBytes.appendString(key, into: &json) }
            JSONBytes.appendLiteral(",\"partition\":", into: &json)
            JSONBytes.appendInt(Int64(partition), into: &json)
            JSONBytes.appendLiteral(",\"attempt\":", into: &json)
            JSONBytes.appendInt(attempt, into: &json)
            json.append(UInt8(ascii: "}"))
        }

        /// The same from a copied reply (a redelivery in the consume script's answer).
        mutating func append(partition: Int, receipt: [UInt8], id: [UInt8], body: [UInt8], key: [UInt8], attempt: Int64) {
            receipt.withUnsafeBufferPointer { r in id.withUnsafeBufferPointer { i in body.withUnsafeBufferPointer { b in
                key.withUnsafeBufferPointer { k in append(partition: partition, receipt: r, id: i, body: b, key: k, attempt: attempt) } } } }
        }

        mutating func append(contentsOf other: Deliveries) {
            guard !other.isEmpty else { return }
            if count > 0 { json.append(UInt8(ascii: ",")) }
            json.append(contentsOf: other.json)
            count += other.count
            redelivered += other.redelivered
        }
    }

    private func consume(_ request: HTTPRequest) throws {
        let input = try ConsumeRequest(try request.jsonObject())
        // A long-poll may wait up to 60 s: its deadline is the wait plus the usual one.
        if input.waitMs > 0 { request.extendDeadline(ms: Int(input.waitMs) + node.http.requestDeadlineMs) }
        withTopic(input.topic, create: true) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let e): request.fail(e)
            case .success(let partitions):
                self.withGroup(input.topic, partitions: partitions, group: input.group) { [weak self] error in
                    guard let self else { return }
                    if let error { request.fail(error); return }
                    self.firstAttempt(input, partitions: partitions, request: request)
                }
            }
        }
    }

    private func firstAttempt(_ input: ConsumeRequest, partitions: Int, request: HTTPRequest) {
        let generation = notifyGeneration[input.topic, default: 0]
        pass(topic: input.topic, group: input.group, order: passOrder(input.topic, input.group, Array(0..<partitions)), max: input.max, visibilityMs: input.visibilityMs) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let e): request.fail(e)
            case .success(let messages):
                if !messages.isEmpty || input.waitMs == 0 || self.stopping {
                    self.respondDelivered(request, messages)
                    return
                }
                let queue = self.waitQueue(topic: input.topic, group: input.group)
                let waiter = Waiter(request: request, consume: input)
                waiter.timer = self.loop.after(ms: Int(input.waitMs)) { [weak self, weak queue, weak waiter] in
                    guard let self, let queue, let waiter else { return }
                    waiter.expired = true
                    if !waiter.busy { self.finishWaiter(waiter, in: queue, messages: Deliveries()) }
                }
                request.onAbandon = { [weak self, weak queue, weak waiter] in
                    guard let self, let queue, let waiter else { return }
                    waiter.done = true
                    waiter.timer?.cancel()
                    queue.remove(waiter)
                    self.dropIfIdle(queue)
                    self.waitersChanged()
                }
                queue.waiters.append(waiter)
                self.waitersChanged()
                if queue.fallback == nil {
                    queue.fallback = self.loop.every(ms: QueueService.fallbackMs) { [weak self, weak queue] in
                        guard let self, let queue else { return }
                        self.dropGoneWaiters(queue, all: true)
                        queue.dirty.formUnion(0..<(self.topics[queue.topic] ?? partitions))
                        self.pump(queue)
                    }
                }
                // A notification that arrived during the pass may name a message the pass
                // missed: try again at once.
                if self.notifyGeneration[input.topic, default: 0] != generation {
                    queue.dirty.formUnion(0..<partitions)
                    if queue.dirtySinceMicros == nil { queue.dirtySinceMicros = EventLoop.monoMicros() }
                }
                self.pump(queue)
            }
        }
    }

    private func waitQueue(topic: String, group: String) -> WaitQueue {
        let id = topic + "\u{0}" + group
        if let q = waitQueues[id] { return q }
        let q = WaitQueue(topic: topic, group: group)
        waitQueues[id] = q
        return q
    }

    private func dropIfIdle(_ queue: WaitQueue) {
        guard queue.isEmpty, !queue.attemptRunning else { return }
        queue.fallback?.cancel()
        queue.fallback = nil
        // A deferred call may come after this queue was dropped and a new one took its place.
        let id = queue.topic + "\u{0}" + queue.group
        if waitQueues[id] === queue { waitQueues[id] = nil }
    }

    /// Long-poll waiters on this node (the `concord_queue_longpoll_waiters` gauge).
    private func waitersChanged() {
        metrics.set("concord_queue_longpoll_waiters", [], Double(waitQueues.values.reduce(0) { $0 + $1.waiters.count }))
    }

    /// A waiter whose client closed its connection (curl's --max-time, an HTTP client's own
    /// timeout shorter than wait_ms, a killed process) is withdrawn, as lock waits are: handed
    /// a message, it would hold it in flight for nobody until visibility_ms and spend one of
    /// its attempts. Checked with a non-consuming peek at the socket: for the first idle
    /// waiter right before each attempt (so the check is as late as it can be), and for all of
    /// them on the fallback tick (so a queue of gone clients does not linger).
    private func dropGoneWaiters(_ queue: WaitQueue, all: Bool) {
        var dropped = 0
        for waiter in queue.waiters where !waiter.busy && !waiter.done {
            guard waiter.request.peerClosed else {
                if all { continue } else { break }
            }
            waiter.done = true
            waiter.timer?.cancel()
            waiter.request.fail(HTTPError(499, "client_closed", "the client closed the connection"))
            dropped += 1
        }
        guard dropped > 0 else { return }
        queue.waiters.removeAll { $0.done }
        metrics.increment("concord_queue_waits_abandoned_total", by: dropped)
        waitersChanged()
        // Not from inside the fallback timer's own callback, which dropIfIdle cancels.
        if queue.isEmpty { loop.soon { [weak self, weak queue] in if let self, let queue { self.dropIfIdle(queue) } } }
    }

    /// Runs at most one attempt per wait queue: the first idle waiter on the dirty partitions.
    private func pump(_ queue: WaitQueue) {
        guard !queue.attemptRunning, !queue.dirty.isEmpty, !stopping else { return }
        dropGoneWaiters(queue, all: false)
        guard let waiter = queue.firstIdle else { return }
        let partitions = passOrder(queue.topic, queue.group, queue.dirty.sorted())
        let since = queue.dirtySinceMicros
        queue.dirty.removeAll()
        queue.dirtySinceMicros = nil
        queue.attemptRunning = true
        waiter.busy = true
        let input = waiter.consume
        pass(topic: input.topic, group: input.group, order: partitions, max: input.max, visibilityMs: input.visibilityMs) { [weak self] result in
            guard let self else { return }
            queue.attemptRunning = false
            waiter.busy = false
            switch result {
            case .failure(let e):
                // Redis trouble: answer this waiter with the error; others retry on the fallback.
                if !waiter.done { waiter.done = true; waiter.timer?.cancel(); queue.remove(waiter); waiter.request.fail(e); self.waitersChanged() }
            case .success(let messages):
                if waiter.done {
                    // Abandoned meanwhile (deadline): its messages return after visibility_ms.
                } else if !messages.isEmpty {
                    if let since { self.metrics.recordMicros("concord_queue_longpoll_wake_seconds", [], EventLoop.monoMicros() - since) }
                    self.finishWaiter(waiter, in: queue, messages: messages)
                    // Chain: more may be waiting in those partitions for the next waiter.
                    queue.dirty.formUnion(partitions)
                    if queue.dirtySinceMicros == nil { queue.dirtySinceMicros = since }
                } else if waiter.expired {
                    self.finishWaiter(waiter, in: queue, messages: Deliveries())
                }
            }
            if queue.firstIdle == nil { queue.dirty.removeAll(); queue.dirtySinceMicros = nil }
            self.pump(queue)
            self.dropIfIdle(queue)
        }
    }

    private func finishWaiter(_ waiter: Waiter, in queue: WaitQueue, messages: Deliveries) {
        guard !waiter.done else { return }
        waiter.done = true
        waiter.timer?.cancel()
        queue.remove(waiter)
        respondDelivered(waiter.request, messages)
        dropIfIdle(queue)
        waitersChanged()
    }

    /// `partitions` rotated by a per-topic cursor (so consumers start at different
    /// partitions), those notified since this group last found them drained first.
    private func passOrder(_ topic: String, _ group: String, _ partitions: [Int]) -> [Int] {
        guard partitions.count > 1 else { return partitions }
        let c = consumeCursor[topic, default: 0]
        consumeCursor[topic] = c &+ 1
        let start = c % partitions.count
        let rotated = partitions[start...] + partitions[..<start]
        let notified = partitionNotified[topic] ?? [:]
        let drained = partitionDrained[topic + "\u{0}" + group] ?? [:]
        var likely: [Int] = [], rest: [Int] = []
        for p in rotated {
            if let n = notified[p], n > drained[p] ?? 0 { likely.append(p) } else { rest.append(p) }
        }
        return likely + rest
    }

    private func noteDrained(_ topic: String, _ group: String, partition: Int, asOf seq: UInt64) {
        let id = topic + "\u{0}" + group
        if partitionDrained[id] == nil, partitionDrained.count >= QueueService.topicsMax * 4 { partitionDrained.removeAll() }
        partitionDrained[id, default: [:]][partition] = seq
    }

    /// Consumes from the partitions in order, one script call at a time, until `max` messages
    /// are in hand or every partition was tried. The script hands out redeliveries whole and
    /// reserves first deliveries as lease ranges, which are then read straight from the log.
    ///
    ///     EVALSHA queue_consume 8 P:log P:meta P:groups P:refs G:inflight G:retry G:attempts G:data
    ///             now_ms group partition max visibility_ms
    ///     XRANGE P:log 0-<first> 0-<last>       (each lease range in the reply)
    func pass(topic: String, group: String, order: [Int], max: Int, visibilityMs: Int64, _ done: @escaping (Result<Deliveries, HTTPError>) -> Void) {
        var collected = Deliveries()
        var index = 0
        let visibility = String(visibilityMs)
        func step() {
            guard index < order.count, collected.count < max else {
                if !collected.isEmpty {
                    metrics.increment("concord_queue_delivered_total", [("topic", topic)], by: collected.count)
                    let again = collected.redelivered
                    if again > 0 { metrics.increment("concord_queue_redelivered_total", [("topic", topic)], by: again) }
                }
                done(.success(collected))
                return
            }
            let p = order[index]
            index += 1
            let pk = keys.partition(topic: topic, partition: p)
            let wanted = max - collected.count
            let seqAtStart = notifySeq
            let args = [String(EventLoop.wallMs()), group, String(p), String(wanted), visibility]
            scripts.run("queue_consume", keys: pk.consumeKeys(pk.group(group)), args: args) { [weak self] reply in
                guard let self else { return }
                if let error = reply.errorMessage {
                    // What this pass already holds is in flight: hand it out rather than lose
                    // it until its visibility deadline.
                    if collected.isEmpty { done(.failure(self.httpError(error))); return }
                    index = order.count
                    step()
                    return
                }
                // Redeliveries come whole; first deliveries as lease ranges, read with XRANGE.
                var got = 0
                var parts: [Deliveries] = []
                var ranges: [(slot: Int, lease: String, first: Int64, last: Int64)] = []
                for item in reply.array ?? [] {
                    guard let f = item.array else { continue }
                    if f.count == 3, let lease = f[0].string, let first = f[1].integer, let last = f[2].integer, first <= last {
                        ranges.append((parts.count, lease, first, last))
                        parts.append(Deliveries())
                        got += Int(last - first + 1)
                    } else if f.count >= 5, case .string(let receipt) = f[0], case .string(let id) = f[1], let body = f[2].bytes,
                              let attempt = f[4].integer {
                        var one = Deliveries()
                        one.append(partition: p, receipt: receipt, id: id, body: body, key: f[3].bytes ?? [], attempt: attempt)
                        parts.append(one)
                        got += 1
                    }
                }
                if got < wanted { self.noteDrained(topic, group, partition: p, asOf: seqAtStart) }
                var pending = ranges.count
                var readError: String?
                let finish = {
                    for part in parts { collected.append(contentsOf: part) }
                    if let readError, collected.isEmpty { done(.failure(self.httpError(readError))); return }
                    if readError != nil { index = order.count }
                    step()
                }
                if pending == 0 { finish(); return }
                for r in ranges {
                    // XRANGE P:log 0-<first> 0-<last>
                    self.redis.sendVisiting([QueueService.xrange, Array(pk.log.utf8), Array("0-\(r.first)".utf8), Array("0-\(r.last)".utf8)]) { reply in
                        switch reply {
                        case .failed(let error):
                            // The lease stays in flight and comes back after its visibility timeout.
                            if readError == nil { readError = error }
                        case .reply(let view):
                            if let error = view.errorMessage {
                                if readError == nil { readError = error }
                            } else {
                                parts[r.slot] = QueueService.leaseDeliveries(view, partition: p, lease: r.lease)
                            }
                        }
                        pending -= 1
                        if pending == 0 { finish() }
                    }
                }
            }
        }
        step()
    }

    private static let xrange = Array("XRANGE".utf8)

    /// XRANGE entries `[["0-<seq>", [field, value, ...]], ...]` as first deliveries of a lease,
    /// read where hiredis parsed them.
    static func leaseDeliveries(_ reply: RedisReplyView, partition p: Int, lease: String) -> Deliveries {
        var out = Deliveries(reserving: reply.count * 160)
        var receipt: [UInt8] = []
        var prefix: [UInt8] = []
        JSONBytes.appendInt(Int64(p), into: &prefix)
        prefix.append(UInt8(ascii: ":"))
        let suffix = [UInt8(ascii: ":")] + Array(lease.utf8)
        let empty = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
        for e in 0..<reply.count {
            guard let entry = reply[e], entry.count == 2, let idView = entry[0], let fields = entry[1], fields.isArray else { continue }
            let entryID = idView.bytes
            guard entryID.count > 2, entryID[0] == UInt8(ascii: "0"), entryID[1] == UInt8(ascii: "-") else { continue }
            var id = empty, key = empty, body = empty
            var i = 0
            while i + 1 < fields.count {
                if let name = fields[i]?.bytes, let value = fields[i + 1]?.bytes {
                    if name.elementsEqual("id".utf8) { id = value }
                    else if name.elementsEqual("key".utf8) { key = value }
                    else if name.elementsEqual("body".utf8) { body = value }
                }
                i += 2
            }
            receipt.removeAll(keepingCapacity: true)
            receipt.append(contentsOf: prefix)
            receipt.append(contentsOf: UnsafeBufferPointer(rebasing: entryID[2...]))
            receipt.append(contentsOf: suffix)
            receipt.withUnsafeBufferPointer { out.append(partition: p, receipt: $0, id: id, body: body, key: key, attempt: 1) }
        }
        return out
    }

    /// `{"messages": [{"id", "receipt", "body", "key", "partition", "attempt"}]}`; bodies are
    /// the stored JSON text, written as is (numbers keep their literal form).
    private func respondDelivered(_ request: HTTPRequest, _ messages: Deliveries) {
        var out: [UInt8] = []
        out.reserveCapacity(16 + messages.json.count)
        JSONBytes.appendLiteral("{\"messages\":[", into: &out)
        out.append(contentsOf: messages.json)
        JSONBytes.appendLiteral("]}", into: &out)
        request.respond(200, bytes: out, contentType: "application/json", headers: [])
    }

    // MARK: POST /queue/ack

    /// Receipts are grouped by partition (their first field); one queue_ack per partition, a
    /// run of one lease's receipts in the script's short form (`compactLeaseReceipts`).
    ///
    ///     EVALSHA queue_ack 5 P:refs G:inflight G:retry G:attempts G:data group partition receipt...
    private func ack(_ request: HTTPRequest) throws {
        let input = try AckRequest(try request.jsonObject())
        withTopic(input.topic, create: false) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let e) where e.status == 404:
                // Receipts of a topic that does not exist are simply not found.
                request.respond(200, .object([("acked", .int(0)), ("not_found", .array(input.receipts.map { .string($0) }))]))
            case .failure(let e): request.fail(e)
            case .success(let partitions): self.ackStored(input, partitions: partitions, request: request)
            }
        }
    }

    private func ackStored(_ input: AckRequest, partitions: Int, request: HTTPRequest) {
        // A receipt goes to its partition's script only in the form consume hands out; anything
        // else (the script's own short form among it) is simply not found.
        let routes = input.receipts.map { isDeliveredReceipt($0) ? receiptPartition($0, partitions: partitions) : nil }
        var byPartition: [Int: [String]] = [:]
        for (r, route) in zip(input.receipts, routes) {
            if let p = route { byPartition[p, default: []].append(r) }
        }
        var acked = 0
        var notFoundByPartition: [Int: [String]] = [:]
        var failure: HTTPError?
        var remaining = byPartition.count
        let finish: () -> Void = { [weak self] in
            guard let self else { return }
            if acked > 0 { self.metrics.increment("concord_queue_acked_total", [("topic", input.topic)], by: acked) }
            if let failure { request.fail(failure); return }
            // not_found in argument order: each partition's list is a subsequence of its receipts
            // (the usual answer, every receipt acked, needs no walk).
            var notFound: [JSONValue] = []
            if routes.contains(nil) || notFoundByPartition.values.contains(where: { !$0.isEmpty }) {
                var cursor: [Int: Int] = [:]
                for (r, route) in zip(input.receipts, routes) {
                    guard let p = route else { notFound.append(.string(r)); continue }
                    let list = notFoundByPartition[p] ?? []
                    let c = cursor[p, default: 0]
                    if c < list.count && list[c] == r { notFound.append(.string(r)); cursor[p] = c + 1 }
                }
            }
            request.respond(200, .object([("acked", .int(acked)), ("not_found", .array(notFound))]))
        }
        if remaining == 0 { finish(); return }
        for (p, receipts) in byPartition {
            let pk = keys.partition(topic: input.topic, partition: p)
            scripts.run("queue_ack", keys: pk.ackKeys(pk.group(input.group)), args: [input.group, String(p)] + compactLeaseReceipts(receipts)) { [weak self] reply in
                guard let self else { return }
                if let error = reply.errorMessage {
                    if failure == nil { failure = self.httpError(error) }
                } else if let parts = reply.array, parts.count == 2 {
                    acked += Int(parts[0].integer ?? 0)
                    notFoundByPartition[p] = (parts[1].array ?? []).compactMap(\.string)
                }
                remaining -= 1
                if remaining == 0 { finish() }
            }
        }
    }

    // MARK: POST /queue/nack

    /// A nacked message whose backoff is running comes due at `visibleAtMs`: the node that
    /// took the nack announces it then, so long-polls on any node wake as they do for a new
    /// message, not at their once-a-second re-check. Bounded: at most `dueTimersMax` pending
    /// and backoffs up to `dueTimerHorizonMs` (the 5 min cap of the default backoff); past
    /// either bound, or if this node stops first, the re-check still finds it.
    private func announceWhenDue(topic: String, partition: Int, visibleAtMs: Int64) {
        let delay = visibleAtMs - EventLoop.wallMs()
        guard delay <= QueueService.dueTimerHorizonMs, dueTimers < QueueService.dueTimersMax else { return }
        guard delay > 0 else { announce(topic: topic, partitions: [partition]); return }
        dueTimers += 1
        loop.after(ms: Int(delay) + 1) { [weak self] in
            guard let self else { return }
            self.dueTimers -= 1
            if !self.stopping { self.announce(topic: topic, partitions: [partition]) }
        }
    }

    static let dueTimersMax = 10_000
    static let dueTimerHorizonMs: Int64 = 300_000
    private var dueTimers = 0

    ///     EVALSHA queue_nack 8 P:log P:refs G:inflight G:retry G:attempts G:dlq G:dlq:ids G:data
    ///             now_ms group partition receipt delay_ms|""
    private func nack(_ request: HTTPRequest) throws {
        let input = try NackRequest(try request.jsonObject())
        withTopic(input.topic, create: false) { [weak self] result in
            guard let self else { return }
            let partitions: Int
            switch result {
            case .failure(let e) where e.status == 404:
                request.fail(HTTPError.notFound("receipt '\(input.receipt)' not found")); return
            case .failure(let e): request.fail(e); return
            case .success(let n): partitions = n
            }
            guard let p = receiptPartition(input.receipt, partitions: partitions) else {
                request.fail(HTTPError.notFound("receipt '\(input.receipt)' not found")); return
            }
            let pk = self.keys.partition(topic: input.topic, partition: p)
            let args = [String(EventLoop.wallMs()), input.group, String(p), input.receipt, input.delayMs.map(String.init) ?? ""]
            self.scripts.run("queue_nack", keys: pk.nackKeys(pk.group(input.group)), args: args) { [weak self] reply in
                guard let self else { return }
                if let error = reply.errorMessage { request.fail(self.httpError(error)); return }
                guard let parts = reply.array, parts.count == 2, let status = parts[0].string else {
                    request.fail(HTTPError(500, "internal", "unexpected nack reply")); return
                }
                switch status {
                case "requeued":
                    let visibleAt = parts[1].integer ?? 0
                    if input.delayMs == 0 { self.announce(topic: input.topic, partitions: [p]) }
                    else { self.announceWhenDue(topic: input.topic, partition: p, visibleAtMs: visibleAt) }
                    request.respond(200, .object([("requeued", .bool(true)), ("visible_at_ms", .int(visibleAt))]))
                case "dead":
                    self.metrics.increment("concord_queue_dead_lettered_total", [("topic", input.topic)])
                    request.respond(200, .object([("requeued", .bool(false)), ("dead_lettered", .bool(true)), ("last_delivery_ms", .int(parts[1].integer ?? 0))]))
                default:
                    request.fail(HTTPError.notFound("receipt '\(input.receipt)' not found"))
                }
            }
        }
    }

    // MARK: GET /queue/status/{topic}

    /// One queue_status per (partition, group), plus one per partition alone, pipelined.
    ///
    ///     EVALSHA queue_status 8 P:log P:meta P:delayed P:groups G:inflight G:retry G:dlq G:attempts now_ms group|""
    private func status(_ request: HTTPRequest, _ params: [String: String]) throws {
        let topic = try Validate.name(params["topic"] ?? "", field: "topic")
        withTopic(topic, create: false) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let e): request.fail(e)
            case .success(let partitions):
                self.redis.send(["SMEMBERS", self.keys.groups(topic: topic)]) { [weak self] reply in
                    guard let self else { return }
                    if let error = reply.errorMessage { request.fail(self.httpError(error)); return }
                    let groups = (reply.array ?? []).compactMap(\.string).sorted()
                    self.statusCounts(topic: topic, partitions: partitions, groups: groups, request: request)
                }
            }
        }
    }

    private func statusCounts(topic: String, partitions: Int, groups: [String], request: HTTPRequest) {
        // counts[p][0] = partition alone; counts[p][g + 1] = group g.
        var counts = Array(repeating: Array(repeating: [Int64](), count: groups.count + 1), count: partitions)
        var remaining = partitions * (groups.count + 1)
        var failure: HTTPError?
        let now = String(EventLoop.wallMs())
        let owners = currentRing().boundedOwners(topic: topic, partitions: partitions)
        let finish: () -> Void = {
            if let failure { request.fail(failure); return }
            var groupReady = Array(repeating: Int64(0), count: groups.count)
            var groupInflight = groupReady, groupDead = groupReady, groupWaiting = groupReady
            var partitionJSON: [JSONValue] = []
            for p in 0..<partitions {
                let base = counts[p][0]
                var ready: Int64 = 0, inflight: Int64 = 0
                for g in groups.indices {
                    let c = counts[p][g + 1]
                    guard c.count >= 11 else { continue }
                    let r = c[6] + c[7]
                    ready = Swift.max(ready, r)
                    inflight += c[9]
                    groupReady[g] += r
                    groupInflight[g] += c[9]
                    groupDead[g] += c[10]
                    groupWaiting[g] += c[8]
                }
                partitionJSON.append(.object([
                    ("partition", .int(p)),
                    ("owner", p < owners.count ? .string(owners[p]) : .null),
                    ("ready", .int(ready)), ("inflight", .int(inflight)),
                    ("delayed", .int(base.count >= 3 ? base[2] : 0)),
                    ("log_length", .int(base.count >= 2 ? base[1] : 0)),
                    ("last_seq", .int(base.first ?? 0)),
                ]))
            }
            let groupJSON: [JSONValue] = groups.indices.map { g in
                .object([("group", .string(groups[g])), ("ready", .int(groupReady[g])), ("inflight", .int(groupInflight[g])),
                         ("dead", .int(groupDead[g])), ("waiting", .int(groupWaiting[g]))])
            }
            request.respond(200, .object([("topic", .string(topic)), ("partitions", .array(partitionJSON)), ("groups", .array(groupJSON))]))
        }
        for p in 0..<partitions {
            let pk = keys.partition(topic: topic, partition: p)
            for g in -1..<groups.count {
                let name = g < 0 ? "" : groups[g]
                let gk = pk.group(g < 0 ? "-" : name)
                scripts.run("queue_status", keys: pk.statusKeys(gk), args: [now, name]) { [weak self] reply in
                    guard let self else { return }
                    if let error = reply.errorMessage {
                        if failure == nil { failure = self.httpError(error) }
                    } else {
                        counts[p][g + 1] = (reply.array ?? []).map { $0.integer ?? 0 }
                    }
                    remaining -= 1
                    if remaining == 0 { finish() }
                }
            }
        }
    }

    // MARK: GET /queue/dlq/{topic}?group=&limit=

    ///     EVALSHA queue_dlq 2 G:dlq G:data limit 0     (each partition; merged oldest dead first)
    private func dlq(_ request: HTTPRequest, _ params: [String: String]) throws {
        let topic = try Validate.name(params["topic"] ?? "", field: "topic")
        let group = try request.query["group"].map { try Validate.name($0, field: "group") } ?? QueueLimits.defaultGroup
        var limit = QueueLimits.dlqLimitDefault
        if let text = request.query["limit"] {
            guard let n = Int64(text) else { throw HTTPError.badRequest("'limit' must be an integer") }
            guard QueueLimits.dlqLimitRange.contains(n) else { throw HTTPError.badRequest("'limit' must be in [\(QueueLimits.dlqLimitRange.lowerBound), \(QueueLimits.dlqLimitRange.upperBound)]") }
            limit = n
        }
        withTopic(topic, create: false) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let e): request.fail(e)
            case .success(let partitions): self.dlqList(topic: topic, group: group, limit: Int(limit), partitions: partitions, request: request)
            }
        }
    }

    private struct DeadEntry { var partition: Int; var seq: Int64; var id: String; var body: String; var key: String; var attempts: Int64; var lastDeliveryMs: Int64; var deadMs: Int64 }

    private func dlqList(topic: String, group: String, limit: Int, partitions: Int, request: HTTPRequest) {
        var entries: [DeadEntry] = []
        var total: Int64 = 0
        var remaining = partitions
        var failure: HTTPError?
        for p in 0..<partitions {
            let gk = keys.partition(topic: topic, partition: p).group(group)
            scripts.run("queue_dlq", keys: gk.dlqKeys, args: [String(limit), "0"]) { [weak self] reply in
                guard let self else { return }
                if let error = reply.errorMessage {
                    if failure == nil { failure = self.httpError(error) }
                } else if let parts = reply.array, parts.count == 2 {
                    total += parts[0].integer ?? 0
                    for item in parts[1].array ?? [] {
                        guard let f = item.array, f.count >= 7 else { continue }
                        entries.append(DeadEntry(partition: p, seq: f[0].integer ?? 0, id: f[1].string ?? "", body: f[2].string ?? "null",
                                                 key: f[3].string ?? "", attempts: f[4].integer ?? 0, lastDeliveryMs: f[5].integer ?? 0, deadMs: f[6].integer ?? 0))
                    }
                }
                remaining -= 1
                guard remaining == 0 else { return }
                if let failure { request.fail(failure); return }
                entries.sort { ($0.deadMs, $0.partition, $0.seq) < ($1.deadMs, $1.partition, $1.seq) }
                var out = "{\"messages\":["
                for (i, e) in entries.prefix(limit).enumerated() {
                    if i > 0 { out += "," }
                    out += "{\"id\":"
                    JSONValue.string(e.id).write(into: &out)
                    out += ",\"body\":" + (e.body.isEmpty ? "null" : e.body) + ",\"key\":"
                    if e.key.isEmpty { out += "null" } else { JSONValue.string(e.key).write(into: &out) }
                    out += ",\"partition\":\(e.partition),\"attempts\":\(e.attempts),\"last_delivery_ms\":\(e.lastDeliveryMs),\"dead_ms\":\(e.deadMs)}"
                }
                out += "],\"total\":\(total)}"
                request.respond(200, bytes: Array(out.utf8), contentType: "application/json", headers: [])
            }
        }
    }

    // MARK: POST /queue/dlq/redrive

    /// With ids: each partition is asked for them (an id with a key lives in the key's
    /// partition). Without: every partition's DLQ is emptied, `10000` entries per call, at most
    /// `redriveRoundsMax` calls per partition per request.
    ///
    ///     EVALSHA queue_redrive 5 G:retry G:attempts G:dlq G:dlq:ids G:data now_ms limit id...
    static let redriveRoundsMax = 100

    private func redrive(_ request: HTTPRequest) throws {
        let input = try RedriveRequest(try request.jsonObject())
        withTopic(input.topic, create: false) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let e): request.fail(e)
            case .success(let partitions): self.redriveAll(input, partitions: partitions, request: request)
            }
        }
    }

    private func redriveAll(_ input: RedriveRequest, partitions: Int, request: HTTPRequest) {
        if let ids = input.ids, ids.isEmpty {
            // An empty list names no message (the script would read "no ids" as "all of them").
            request.respond(200, .object([("redriven", .int(0)), ("not_found", .array([]))]))
            return
        }
        var redriven: Int64 = 0
        var notFoundCount: [String: Int] = [:]
        var remaining = partitions
        var failure: HTTPError?
        var moved: [Int] = []
        let finish: () -> Void = { [weak self] in
            guard let self else { return }
            if !moved.isEmpty { self.announce(topic: input.topic, partitions: moved) }
            if let failure { request.fail(failure); return }
            var members: [(String, JSONValue)] = [("redriven", .int(redriven))]
            if let ids = input.ids {
                // Not found anywhere = not found by every partition.
                var seen = Set<String>()
                let missing = ids.filter { notFoundCount[$0, default: 0] >= partitions && seen.insert($0).inserted }
                members.append(("not_found", .array(missing.map { .string($0) })))
            }
            request.respond(200, .object(members))
        }
        for p in 0..<partitions {
            let gk = keys.partition(topic: input.topic, partition: p).group(input.group)
            var rounds = 0
            func round() {
                rounds += 1
                let args = [String(EventLoop.wallMs()), "10000"] + (input.ids ?? [])
                scripts.run("queue_redrive", keys: gk.redriveKeys, args: args) { [weak self] reply in
                    guard let self else { return }
                    if let error = reply.errorMessage {
                        if failure == nil { failure = self.httpError(error) }
                    } else if let parts = reply.array, parts.count == 3 {
                        let n = parts[0].integer ?? 0
                        redriven += n
                        if n > 0 && !moved.contains(p) { moved.append(p) }
                        if input.ids != nil {
                            for id in Set((parts[1].array ?? []).compactMap(\.string)) { notFoundCount[id, default: 0] += 1 }
                        } else if (parts[2].integer ?? 0) > 0 && n > 0 && rounds < QueueService.redriveRoundsMax {
                            round()
                            return
                        }
                    }
                    remaining -= 1
                    if remaining == 0 { finish() }
                }
            }
            round()
        }
    }

    // MARK: owner timers

    /// The ring over the live members (rebuilt when membership changes).
    func currentRing() -> HashRing {
        let alive = node.membership.aliveNodes
        if alive != ringMembers {
            ringMembers = alive
            ring = HashRing(nodes: Array(alive))
            logger.info("queue ownership recomputed", metadata: ["alive": "\(alive.sorted())"])
        }
        return ring
    }

    private struct OwnedPartition { let topic: String; let partition: Int }

    private func ownedPartitions() -> [OwnedPartition] {
        let ring = currentRing()
        let me = node.config.id
        var out: [OwnedPartition] = []
        for (topic, n) in topics.sorted(by: { $0.key < $1.key }) {
            for (p, owner) in ring.boundedOwners(topic: topic, partitions: n).enumerated() where owner == me {
                out.append(OwnedPartition(topic: topic, partition: p))
            }
        }
        return out
    }

    /// Every `tickMs`: for each partition this node owns, delayed promotion and redelivery per
    /// group (and every 5th tick trim, every 10th the depth gauges). Work per tick is bounded
    /// (`timerJobsPerTickMax` script calls, rotating), and a tick is skipped while the last
    /// one's calls are still outstanding, so a slow Redis is never flooded.
    private func tick() {
        guard !stopping, redis.isReady, tickOutstanding == 0 else { return }
        tickCount &+= 1
        let owned = ownedPartitions()
        guard !owned.isEmpty else { if tickCount % 10 == 0 { sampleGauges([]) }; return }
        var jobs: [() -> Void] = []
        let now = String(EventLoop.wallMs())
        for op in owned {
            let pk = keys.partition(topic: op.topic, partition: op.partition)
            jobs.append { [weak self] in
                // EVALSHA queue_promote 3 P:log P:delayed P:delayed:data now_ms limit
                self?.timerScript("queue_promote", pk.promoteKeys, [now, QueueService.timerScriptLimit]) { [weak self] r in
                    if (r.first ?? 0) > 0 { self?.announce(topic: op.topic, partitions: [op.partition]) }
                }
            }
            for group in (registeredGroups[op.topic] ?? []).sorted() {
                jobs.append { [weak self] in
                    // EVALSHA queue_redeliver 8 P:log P:refs G:... now_ms group limit
                    self?.timerScript("queue_redeliver", pk.nackKeys(pk.group(group)), [now, group, QueueService.timerScriptLimit]) { [weak self] r in
                        guard let self, r.count >= 2 else { return }
                        if r[0] > 0 { self.announce(topic: op.topic, partitions: [op.partition]) }
                        if r[1] > 0 { self.metrics.increment("concord_queue_dead_lettered_total", [("topic", op.topic)], by: Int(r[1])) }
                    }
                }
            }
            if tickCount % 5 == 0 {
                jobs.append { [weak self] in
                    // EVALSHA queue_trim 3 P:log P:groups P:refs max_delete retain
                    self?.timerScript("queue_trim", pk.trimKeys, [QueueService.trimMaxDelete, QueueService.trimRetain]) { _ in }
                }
            }
        }
        let budget = QueueService.timerJobsPerTickMax
        if jobs.count <= budget {
            for job in jobs { job() }
        } else {
            let start = timerJobCursor % jobs.count
            for i in 0..<budget { jobs[(start + i) % jobs.count]() }
            timerJobCursor = (start + budget) % jobs.count
        }
        if tickCount % 10 == 0 { sampleGauges(owned) }
    }

    private func timerScript(_ name: String, _ keys: [String], _ args: [String], _ done: @escaping ([Int64]) -> Void) {
        tickOutstanding += 1
        scripts.run(name, keys: keys, args: args) { [weak self] reply in
            guard let self else { return }
            self.tickOutstanding -= 1
            if let error = reply.errorMessage {
                self.logger.debug("queue timer script failed", metadata: ["script": "\(name)", "error": "\(error)"])
                return
            }
            done((reply.array ?? []).map { $0.integer ?? 0 })
        }
    }

    /// Depth, in-flight and oldest in-flight age of the partitions this node owns, per topic
    /// (the cluster's figure is the sum over nodes). Age: of the entry with the earliest
    /// visibility deadline, from its last delivery time.
    ///
    ///     EVALSHA queue_status ... now_ms group      ZRANGE G:inflight 0 0     HGET G:attempts <seq>
    private func sampleGauges(_ owned: [OwnedPartition]) {
        guard sampleOutstanding == 0 else { return }
        var depth: [String: Int64] = [:], inflight: [String: Int64] = [:], oldest: [String: Int64] = [:]
        for topic in topics.keys { depth[topic] = 0; inflight[topic] = 0; oldest[topic] = 0 }
        let now = EventLoop.wallMs()
        let publish: () -> Void = { [weak self] in
            guard let self else { return }
            for (topic, d) in depth {
                self.metrics.set("concord_queue_depth", [("topic", topic)], Double(d))
                self.metrics.set("concord_queue_inflight", [("topic", topic)], Double(inflight[topic] ?? 0))
                self.metrics.set("concord_queue_oldest_inflight_age_seconds", [("topic", topic)], Double(oldest[topic] ?? 0) / 1000)
            }
        }
        var partitionReady: [String: Int64] = [:]
        for op in owned.prefix(QueueService.timerJobsPerTickMax) {
            let pk = keys.partition(topic: op.topic, partition: op.partition)
            let pid = "\(op.partition)\u{0}\(op.topic)"
            sampleOutstanding += 1
            scripts.run("queue_status", keys: pk.statusKeys(pk.group("-")), args: [String(now), ""]) { [weak self] reply in
                self?.sampleOutstanding -= 1
                if let c = reply.array, c.count >= 3 { depth[op.topic, default: 0] += c[2].integer ?? 0 }
                if self?.sampleOutstanding == 0 { publish() }
            }
            for group in (registeredGroups[op.topic] ?? []).sorted() {
                let gk = pk.group(group)
                sampleOutstanding += 2
                scripts.run("queue_status", keys: pk.statusKeys(gk), args: [String(now), group]) { [weak self] reply in
                    self?.sampleOutstanding -= 1
                    if let c = reply.array?.map({ $0.integer ?? 0 }), c.count >= 11 {
                        // A partition's depth counts what its most-behind group has yet to receive.
                        let ready = c[6] + c[7]
                        let before = partitionReady[pid, default: 0]
                        if ready > before { depth[op.topic, default: 0] += ready - before; partitionReady[pid] = ready }
                        inflight[op.topic, default: 0] += c[9]
                    }
                    if self?.sampleOutstanding == 0 { publish() }
                }
                redis.send(["ZRANGE", gk.inflight, "0", "0"]) { [weak self] reply in
                    guard let self else { return }
                    guard let seq = reply.array?.first?.string else {
                        self.sampleOutstanding -= 1
                        if self.sampleOutstanding == 0 { publish() }
                        return
                    }
                    self.redis.send(["HGET", gk.attempts, seq]) { [weak self] reply in
                        guard let self else { return }
                        self.sampleOutstanding -= 1
                        // "<attempt>:<last_delivery_ms>:<delivery>", or a lease's "<delivery_ms>:<seq>,..."
                        if let state = reply.string {
                            let parts = state.split(separator: ":")
                            let last = seq.hasPrefix("L") ? (parts.count == 2 ? Int64(parts[0]) : nil) : (parts.count == 3 ? Int64(parts[1]) : nil)
                            if let last { oldest[op.topic] = Swift.max(oldest[op.topic] ?? 0, now - last) }
                        }
                        if self.sampleOutstanding == 0 { publish() }
                    }
                }
            }
        }
        if sampleOutstanding == 0 { publish() }
    }
}
