import Locks
import Logging
import Raft
import Runtime

// MARK: - Lock service (CONTRACT §2.1): HTTP <-> Raft <-> the pure lock table
//
// Any node serves any request. The node the client called (the "origin") gives the request a
// tag and either proposes it (leader) or forwards it to the leader over the bus. The leader
// stamps its clock into the command; every node applies committed commands to its own copy of
// the table, and the events carry (origin, tag), so the origin answers its client when it
// applies the entry. To save the follower a heartbeat of latency, the leader also sends the
// origin the answer as soon as it applies the entry itself; whichever comes first answers.
//
// Waiting acquires stay at the origin. Leases and wait deadlines are expired by the leader
// proposing `tick(now)`; a new leader first proposes `leaderGrace`, so no lease ends early
// because the old leader died. Status reads go through ReadIndex on the leader.

public final class LockService: NodeService {
    private let node: ConcordNode
    private let driver: RaftDriver
    private var table = LockTable()
    private var logger: Logger { node.logger }

    private struct Pending {
        let request: HTTPRequest
        let command: LockCommand
        var queued = false
    }
    private var pending: [UInt64: Pending] = [:]
    /// Acquires whose client went away (deadline, closed connection, node stopping) before an
    /// answer, by tag: a wait they left queued is withdrawn, a late grant released at once.
    private var abandoned: [UInt64: (resource: String, owner: String)] = [:]
    static let maxAbandoned = 10_000
    private var nextTag: UInt64
    /// Tags of this run of the node start here; a smaller tag of this node's id in the table is
    /// a request of an earlier run (see `withdrawOrphanedWaits`).
    private let firstTag: UInt64
    /// Withdrawals proposed for orphaned waits, by (origin, tag): when (monotonic ms).
    private var orphanWithdrawals: [OriginTag: Int64] = [:]
    /// Leader: since when (monotonic ms) each other node has been seen not alive.
    private var silentSince: [String: Int64] = [:]
    private struct OriginTag: Hashable { let origin: String; let tag: UInt64 }
    /// A node the failure detector has found dead this long has its queued waits withdrawn.
    static let deadOriginMs: Int64 = 5000
    /// A withdrawal of an orphaned wait still queued this long later is proposed again.
    static let orphanRetryMs: Int64 = 5000
    private var nextReadContext: UInt64 = 1
    private var pendingReads: [UInt64: (index: UInt64, answer: () -> Void)] = [:]
    /// Leader: answers for other origins gathered during one applied round.
    private var outbox: [String: [UInt8]] = [:]
    private var readsAwaitingApply: [(index: UInt64, answer: () -> Void)] = []
    private var tickProposedAtMs: Int64 = 0
    private var timers: [LoopTimer] = []
    private var stopping = false
    static let maxPending = 100_000
    static let maxForwardBatch = 512
    private var forwardQueue: [(command: LockCommand, tag: UInt64, deadline: Int64?)] = []
    /// Clients' commands a leader accepted, by log index: (tag, term of the proposal). When the
    /// entry at that index is applied with another term, the proposal was lost (its leader lost
    /// leadership, or its write failed and the core was rebuilt) and the command is proposed
    /// again, rather than left for its request's deadline to answer 503. Raft's Log Matching:
    /// the same index and term is the same entry, so a re-proposal never doubles a command.
    private var awaitingIndex: [UInt64: [(tag: UInt64, term: UInt64)]] = [:]
    private var awaitingCount = 0

    public init(node: ConcordNode) {
        self.node = node
        self.driver = RaftDriver(node: node)
        // Tags start from the wall clock so a restarted node never reuses a tag from its past.
        nextTag = UInt64(max(1, EventLoop.wallMs())) << 16
        firstTag = nextTag + 1
        driver.hooks = RaftDriver.Hooks(
            apply: { [weak self] entry in self?.apply(entry) },
            restore: { [weak self] snapshot in self?.restore(snapshot) },
            readState: { [weak self] read in self?.readReady(read) },
            roleChange: { [weak self] role, leader in self?.roleChanged(role, leader) },
            applied: { [weak self] in
                self?.maybeSnapshot()
                self?.serveReads()
            },
            appliedRound: { [weak self] in self?.flushNotifications() },
            appliedEntry: { [weak self] index, term in self?.entryApplied(index: index, term: term) },
            snapshotData: { [weak self] in self?.table.snapshot() ?? [] })
        node.bus.onRequest(.forwardRequest) { [weak self] envelope, reply in self?.forwarded(envelope, reply) }
        node.bus.on(.lockNotify) { [weak self] envelope in self?.notified(envelope) }
        node.raftSummary = { [weak self] in self?.summary() ?? RaftSummary() }
    }

    // MARK: NodeService

    public func register(_ router: Router) {
        router.add(.POST, "/lock/acquire") { [weak self] request, _ in try self?.acquire(request) }
        router.add(.POST, "/lock/release") { [weak self] request, _ in try self?.release(request) }
        router.add(.POST, "/lock/renew") { [weak self] request, _ in try self?.renew(request) }
        router.add(.GET, "/lock/status") { [weak self] request, _ in self?.statusAll(request) }
        router.add(.GET, "/lock/status/{resource}") { [weak self] request, params in
            let resource = try Validate.name(params["resource"] ?? "", field: "resource")
            self?.status(request, resource: resource)
        }
    }

    public func start() {
        driver.start()
        timers.append(node.loop.every(ms: 10) { [weak self] in self?.leaderDuties() })
        timers.append(node.loop.every(ms: 1000) { [weak self] in self?.recordMetrics() })
        timers.append(node.loop.every(ms: LockService.clientCheckMs) { [weak self] in self?.dropWaitsOfGoneClients() })
        timers.append(node.loop.every(ms: 1000) { [weak self] in self?.withdrawOrphanedWaits() })
    }

    /// Waits whose clients are gone with their node, withdrawn once a second (each proposal made
    /// again if its wait is still queued `orphanRetryMs` later, i.e. it was lost):
    /// - a node killed (SIGKILL, a crash) and restarted withdraws the waits its earlier run left
    ///   queued (tags below this run's first);
    /// - the leader withdraws the waits of a node the failure detector has found dead for
    ///   `deadOriginMs`, for a node that stays down. Proposed by the leader itself, never
    ///   forwarded (a forward carries the sender's own origin); a next leader does it again.
    /// Waits only: a grant may have been answered before the crash, so it keeps its lease. A
    /// node that was only cut off answers a client it still holds 503 (`.cancelled`).
    private func withdrawOrphanedWaits() {
        guard !stopping, driver.status != nil else { return }
        let now = EventLoop.monoMs()
        var orphans = table.waits(of: node.config.id, tagBelow: firstTag, limit: 256).map { (origin: node.config.id, wait: $0) }
        if driver.isLeader {
            for origin in deadOrigins(now: now) {
                orphans += table.waits(of: origin, tagBelow: .max, limit: 256).map { (origin: origin, wait: $0) }
            }
        } else {
            silentSince.removeAll()
        }
        var proposed: [OriginTag: Int64] = [:]
        for (origin, w) in orphans {
            let key = OriginTag(origin: origin, tag: w.tag)
            if let at = orphanWithdrawals[key], now - at < LockService.orphanRetryMs { proposed[key] = at; continue }
            proposed[key] = now
            node.metrics.increment("concord_lock_waits_abandoned_total")
            if origin == node.config.id {
                withdrawWait(tag: w.tag, resource: w.resource, owner: w.owner)
            } else {
                let cancel = LockCommand.cancelWait(CancelWaitCommand(resource: w.resource, owner: w.owner, origin: origin, tag: w.tag, nowMs: 0))
                _ = driver.propose(LockService.stamped(cancel, nowMs: EventLoop.wallMs()).encode())
            }
        }
        orphanWithdrawals = proposed
    }

    /// Leader: the other nodes the failure detector has found dead for `deadOriginMs` as seen
    /// from here (`silentSince` counts from this node's first sight of each as not alive).
    private func deadOrigins(now: Int64) -> [String] {
        var origins = Set(node.config.members)
        for m in node.membership.members() { origins.insert(m.id) }
        origins.remove(node.config.id)
        for origin in silentSince.keys where !origins.contains(origin) { silentSince[origin] = nil }
        var dead: [String] = []
        for origin in origins.sorted() {
            if node.membership.isAlive(origin) { silentSince[origin] = nil; continue }
            let since = silentSince[origin] ?? now
            silentSince[origin] = since
            if now - since >= LockService.deadOriginMs { dead.append(origin) }
        }
        return dead
    }

    /// How long after its wait_ms a waiting acquire may go undecided before it is answered 503.
    static let waitDecisionGraceMs = 2000

    /// How often waiting acquires check that their client is still connected.
    static let clientCheckMs = 200

    /// A client that closed its connection while its acquire waits is gone (curl's --max-time,
    /// an HTTP client's timeout, a killed process): its wait is withdrawn, as etcd deletes a
    /// lock waiter's key when the caller's context ends, instead of staying queued to take the
    /// lock later for nobody. Checked every `clientCheckMs` with a non-consuming peek at the
    /// socket; bounded by the pending requests.
    private func dropWaitsOfGoneClients() {
        var gone: [(UInt64, LockCommand)] = []
        for (tag, p) in pending {
            guard case .acquire(let a) = p.command, a.waitMs > 0, p.request.peerClosed else { continue }
            gone.append((tag, p.command))
        }
        for (tag, command) in gone {
            let request = pending[tag]?.request
            abandon(tag: tag, command: command)
            node.metrics.increment("concord_lock_waits_abandoned_total")
            request?.fail(HTTPError(499, "client_closed", "the client closed the connection"))
        }
    }

    public func shutdown(_ done: @escaping () -> Void) {
        stopping = true
        // Waits this node holds are withdrawn, so the table never grants to a node that is gone.
        var cancelled = 0
        for (tag, p) in pending {
            if case .acquire(let a) = p.command {
                rememberAbandoned(tag, a)
                if p.queued {
                    withdrawWait(tag: tag, resource: a.resource, owner: a.owner)
                    cancelled += 1
                }
            }
            p.request.fail(.unavailable("node is shutting down"))
        }
        pending.removeAll()
        guard driver.isLeader, node.config.members.count > 1 else {
            // Give forwarded cancels a moment to leave before the loop stops.
            node.loop.after(ms: cancelled > 0 ? 200 : 0) { [weak self] in self?.driver.stop(); done() }
            return
        }
        // Hand leadership over before exiting, so the cluster does not wait an election timeout.
        driver.transferLeadership()
        let deadline = EventLoop.monoMs() + 2000
        func check() {
            if !driver.isLeader || EventLoop.monoMs() > deadline {
                logger.info("leadership handed over", metadata: ["leader": "\(driver.leader ?? "none")"])
                driver.stop()
                done()
                return
            }
            node.loop.after(ms: 10) { check() }
        }
        check()
    }

    // MARK: HTTP handlers

    private func acquire(_ request: HTTPRequest) throws {
        let f = Fields(try request.jsonObject())
        let resource = try f.name("resource")
        let owner = try f.name("owner")
        let mode = try f.oneOf("mode", ["exclusive", "shared"], default: "exclusive")
        let ttl = try f.int("ttl_ms", default: 30_000, in: 100...3_600_000)
        let wait = try f.int("wait_ms", default: 0, in: 0...300_000)
        let requestId = try f.optionalName("request_id")
        let tag = takeTag()
        let command = LockCommand.acquire(AcquireCommand(resource: resource, owner: owner, mode: mode == "shared" ? .shared : .exclusive,
                                                         ttlMs: ttl, waitMs: wait, requestId: requestId, origin: node.config.id, tag: tag, nowMs: 0))
        if wait > 0 {
            // The wait is decided by the table (a timeout event the leader proposes when it is
            // due). The HTTP deadline only backs it up: with no leader able to decide within
            // `waitDecisionGraceMs` after wait_ms (no majority, Redis down), the client gets
            // 503 then, not a grant seconds after the wait it asked for; the wait is withdrawn
            // and a grant that comes late anyway is released (`abandon`).
            request.extendDeadline(ms: Int(wait) + min(node.config.requestDeadlineMs, LockService.waitDecisionGraceMs))
        }
        request.onAbandon = { [weak self] in self?.abandon(tag: tag, command: command) }
        try submit(command, tag: tag, request: request)
    }

    private func release(_ request: HTTPRequest) throws {
        let f = Fields(try request.jsonObject())
        let resource = try f.name("resource")
        let owner = try f.name("owner")
        let token = try f.optionalInt("fencing_token", in: 0...Int64.max)
        let tag = takeTag()
        try submit(.release(ReleaseCommand(resource: resource, owner: owner, fencingToken: token.map { UInt64($0) }, origin: node.config.id, tag: tag, nowMs: 0)), tag: tag, request: request)
    }

    private func renew(_ request: HTTPRequest) throws {
        let f = Fields(try request.jsonObject())
        let resource = try f.name("resource")
        let owner = try f.name("owner")
        let ttl = try f.int("ttl_ms", in: 100...3_600_000)
        let tag = takeTag()
        try submit(.renew(RenewCommand(resource: resource, owner: owner, ttlMs: ttl, origin: node.config.id, tag: tag, nowMs: 0)), tag: tag, request: request)
    }

    private func takeTag() -> UInt64 {
        nextTag &+= 1
        return nextTag
    }

    // MARK: proposing and forwarding

    private func submit(_ command: LockCommand, tag: UInt64, request: HTTPRequest) throws {
        guard !stopping else { throw HTTPError.unavailable("node is shutting down") }
        guard pending.count < LockService.maxPending else { throw HTTPError.unavailable("too many requests in flight") }
        pending[tag] = Pending(request: request, command: command)
        if request.onAbandon == nil {
            // Answered by the deadline (e.g. the entry was lost in a leader change): forget it.
            request.onAbandon = { [weak self] in self?.pending[tag] = nil }
        }
        route(command, tag: tag)
    }

    /// Proposes at the leader or forwards to it; retries while there is no leader, until the
    /// request's deadline answers 503.
    /// `deadline` (monotonic ms) bounds the retries of an internal command no client waits on
    /// (a release of an abandoned grant, a cancelled wait); a client's command lives as long as
    /// its request.
    private func route(_ command: LockCommand, tag: UInt64, until deadline: Int64? = nil) {
        if let p = pending[tag] {
            guard !p.request.isDone else { pending[tag] = nil; return }
        } else {
            guard let deadline, EventLoop.monoMs() < deadline else { return }
        }
        if driver.isLeader {
            switch driver.propose(LockService.stamped(command, nowMs: EventLoop.wallMs()).encode()) {
            case .accepted(let index):
                track(tag: tag, index: index, term: driver.term)
                return
            case .dropped, .notLeader:
                retry(command, tag: tag, until: deadline)
            }
            return
        }
        guard let leader = driver.leader, leader != node.config.id else { retry(command, tag: tag, until: deadline); return }
        // Forwards gathered in one loop iteration travel to the leader in one message.
        forwardQueue.append((command, tag, deadline))
        if forwardQueue.count == 1 {
            node.loop.soon { [weak self] in self?.flushForwards(to: leader) }
        }
    }

    /// Sends the gathered forwards: "L", count (2 bytes), then per command its length (4 bytes)
    /// and bytes. The leader answers "B" and 17 bytes per command: 1 and the log index and term
    /// it was proposed at (8 bytes each), or 0 and zeros if it was not proposed.
    private func flushForwards(to leader: String) {
        let batch = forwardQueue.prefix(LockService.maxForwardBatch)
        forwardQueue.removeFirst(batch.count)
        if !forwardQueue.isEmpty { node.loop.soon { [weak self] in self?.flushForwards(to: leader) } }
        guard !batch.isEmpty else { return }
        var payload: [UInt8] = [0x4C, UInt8(batch.count >> 8), UInt8(batch.count & 0xFF)]
        for item in batch {
            let bytes = item.command.encode()
            payload += [UInt8(truncatingIfNeeded: bytes.count >> 24), UInt8(truncatingIfNeeded: bytes.count >> 16), UInt8(truncatingIfNeeded: bytes.count >> 8), UInt8(truncatingIfNeeded: bytes.count)]
            payload += bytes
        }
        let items = Array(batch)
        node.bus.request(to: leader, type: .forwardRequest, payload: payload, timeoutMs: 500) { [weak self] result in
            guard let self else { return }
            var accepted = [Bool](repeating: false, count: items.count)
            if case .success(let answer) = result, answer.first == 0x42, answer.count == 1 + 17 * items.count {
                for i in 0..<items.count where answer[1 + 17 * i] == 1 {
                    accepted[i] = true
                    let index = RaftDriver.readUInt64(answer, 2 + 17 * i), term = RaftDriver.readUInt64(answer, 10 + 17 * i)
                    self.track(tag: items[i].tag, index: index, term: term)
                }
            }
            // Accepted: the applied event answers. Otherwise try again (leader changed, dropped).
            for (i, item) in items.enumerated() where !accepted[i] { self.retry(item.command, tag: item.tag, until: item.deadline) }
        }
    }

    /// Remembers where a client's command was proposed (see `awaitingIndex`); bounded by the
    /// pending requests.
    private func track(tag: UInt64, index: UInt64, term: UInt64) {
        guard pending[tag] != nil, awaitingCount < LockService.maxPending else { return }
        if index <= driver.appliedIndex {
            // Applied already (the forward's answer came late): lost only if the log says so.
            if let t = driver.termOfEntry(at: index), t != term { proposalLost(tag: tag) }
            return
        }
        awaitingIndex[index, default: []].append((tag, term))
        awaitingCount += 1
    }

    private func entryApplied(index: UInt64, term: UInt64) {
        guard let proposals = awaitingIndex.removeValue(forKey: index) else { return }
        awaitingCount -= proposals.count
        for p in proposals where p.term != term { proposalLost(tag: p.tag) }
    }

    private func proposalLost(tag: UInt64) {
        guard let p = pending[tag], !p.request.isDone, !stopping else { return }
        node.metrics.increment("concord_lock_proposals_lost_total")
        logger.info("lock proposal lost in a leader change; proposing it again", metadata: ["tag": "\(tag)"])
        route(p.command, tag: tag)
    }

    private func retry(_ command: LockCommand, tag: UInt64, until deadline: Int64?) {
        node.loop.after(ms: 25) { [weak self] in self?.route(command, tag: tag, until: deadline) }
    }

    /// A command no client waits for, retried for at most 10 s.
    private func routeInternal(_ command: LockCommand, tag: UInt64) {
        route(command, tag: tag, until: EventLoop.monoMs() + 10_000)
    }

    /// Leader side of forwarding (see `flushForwards`): propose each command, answer "B" and where
    /// each was proposed. Malformed batches are refused whole ("E").
    private func forwarded(_ envelope: Envelope, _ reply: @escaping Bus.Reply) {
        let b = envelope.payload
        guard b.first == 0x4C else {
            if b.first == 0x53 { forwardedRead(envelope, reply) } else { reply([0x45]) }
            return
        }
        guard b.count >= 3 else { reply([0x45]); return }
        let count = Int(b[1]) << 8 | Int(b[2])
        guard count >= 1, count <= LockService.maxForwardBatch else { reply([0x45]); return }
        var commands: [LockCommand] = []
        var i = 3
        for _ in 0..<count {
            guard b.count - i >= 4 else { reply([0x45]); return }
            var length = 0
            for k in 0..<4 { length = length << 8 | Int(b[i + k]) }
            i += 4
            guard length <= b.count - i, let command = try? LockCommand.decode(Array(b[i..<(i + length)])),
                  LockService.origin(of: command) == envelope.sender else { reply([0x45]); return }
            commands.append(command)
            i += length
        }
        guard i == b.count else { reply([0x45]); return }
        var answer: [UInt8] = [0x42]
        answer.reserveCapacity(1 + 17 * commands.count)
        let now = EventLoop.wallMs()
        for command in commands {
            if driver.isLeader, case .accepted(let index) = driver.propose(LockService.stamped(command, nowMs: now).encode()) {
                answer.append(1)
                RaftDriver.appendUInt64(index, &answer)
                RaftDriver.appendUInt64(driver.term, &answer)
            } else {
                answer += [UInt8](repeating: 0, count: 17)
            }
        }
        reply(answer)
    }

    // MARK: applying

    private func apply(_ entry: Entry) {
        guard let command = try? LockCommand.decode(entry.data) else {
            logger.error("undecodable lock command in the log", metadata: ["index": "\(entry.index)"])
            return
        }
        if case .tick = command { tickProposedAtMs = 0 }
        let events = table.apply(command, index: entry.index)
        for event in events {
            if case .expired(let resource, let owner, _) = event {
                node.metrics.increment("concord_lock_lease_expiries_total")
                logger.debug("lease expired", metadata: ["resource": "\(resource)", "owner": "\(owner)"])
                continue
            }
            if case .deadlock = event { node.metrics.increment("concord_lock_deadlocks_total") }
            guard let origin = event.origin, let tag = event.tag else { continue }
            if origin == node.config.id {
                deliver(event, tag: tag, index: entry.index)
            } else if driver.isLeader, event.isFinal, let answer = LockService.answer(event) {
                // Batched per origin: one PUBLISH per node per applied round.
                let body = answer.body.bytes
                var record = LockService.tagBytes(tag)
                record += [UInt8(answer.status >> 8), UInt8(answer.status & 0xFF)]
                record += [UInt8(truncatingIfNeeded: body.count >> 24), UInt8(truncatingIfNeeded: body.count >> 16), UInt8(truncatingIfNeeded: body.count >> 8), UInt8(truncatingIfNeeded: body.count)]
                record += body
                outbox[origin, default: []] += record
            }
        }
    }

    private func restore(_ snapshot: Snapshot?) {
        // Proposals covered by a snapshot cannot be told apart any more: their deadlines answer.
        let covered = snapshot?.index ?? 0
        for index in awaitingIndex.keys where index <= covered { awaitingCount -= awaitingIndex.removeValue(forKey: index)?.count ?? 0 }
        guard let snapshot, !snapshot.data.isEmpty else { table = LockTable(); return }
        do {
            table = try LockTable(snapshot: snapshot.data)
        } catch {
            // Running on an empty table would lose grants and repeat fencing tokens: refuse.
            logger.critical("lock snapshot at index \(snapshot.index) is unreadable: \(error)")
            fatalError("lock snapshot at index \(snapshot.index) is unreadable: \(error)")
        }
    }

    /// Answers the origin's pending request for an event of its own, applied at log `index`.
    private func deliver(_ event: LockEvent, tag: UInt64, index: UInt64) {
        if case .queued = event {
            if pending[tag] != nil {
                pending[tag]?.queued = true
            } else if let gone = abandoned[tag] {
                // Its client left before the wait was queued: withdraw it now.
                withdrawWait(tag: tag, resource: gone.resource, owner: gone.owner)
            }
            return
        }
        guard event.isFinal else { return }
        guard let p = pending.removeValue(forKey: tag) else {
            // The client is gone: never leave a lock granted to nobody. Only a grant this entry
            // made (its token is this index or above): a re-acquire answered with the owner's
            // existing grant (an older token) is a hold the client already had and keeps.
            if abandoned.removeValue(forKey: tag) != nil, case .granted(_, _, _, let grant) = event, grant.fencingToken >= index {
                let releaseTag = takeTag()
                let release = LockCommand.release(ReleaseCommand(resource: grant.resource, owner: grant.owner, fencingToken: grant.fencingToken, origin: node.config.id, tag: releaseTag, nowMs: 0))
                routeInternal(release, tag: releaseTag)
            }
            return
        }
        recordOutcome(event)
        if let answer = LockService.answer(event) { p.request.respond(answer.status, answer.body, headers: LockService.headers(answer.status)) }
    }

    private func flushNotifications() {
        for (origin, payload) in outbox { node.bus.send(to: origin, type: .lockNotify, payload: payload) }
        outbox.removeAll(keepingCapacity: true)
    }

    /// The leader's fast-path answers for requests this node holds: records of
    /// tag (8 bytes), HTTP status (2), body length (4), body (JSON).
    private func notified(_ envelope: Envelope) {
        let b = envelope.payload
        var i = 0
        while b.count - i >= 14 {
            var tag: UInt64 = 0
            for k in 0..<8 { tag = tag << 8 | UInt64(b[i + k]) }
            let status = Int(b[i + 8]) << 8 | Int(b[i + 9])
            var length = 0
            for k in 10..<14 { length = length << 8 | Int(b[i + k]) }
            i += 14
            guard length <= b.count - i else { return }
            let body = Array(b[i..<(i + length)])
            i += length
            guard let p = pending.removeValue(forKey: tag) else { continue }
            if status == 200 {
                // The leader serialized it (LockService.answer): relayed as it came, not parsed
                // and serialized again. A 200 to an acquire is a grant.
                if case .acquire = p.command { node.metrics.increment("concord_lock_acquisitions_total", [("outcome", "granted")]) }
                p.request.respond(200, bytes: body, contentType: "application/json", headers: [])
            } else if let json = try? JSONParser.parse(body) {
                recordNotified(status: status, body: json)
                p.request.respond(status, json, headers: LockService.headers(status))
            }
        }
    }

    /// Outcome metric of a refusal the leader sent (grants are counted in `notified`).
    private func recordNotified(status: Int, body: JSONValue) {
        guard let code = body["error"]?.stringValue, ["conflict", "timeout", "deadlock"].contains(code) else { return }
        node.metrics.increment("concord_lock_acquisitions_total", [("outcome", code)])
    }

    private func abandon(tag: UInt64, command: LockCommand) {
        guard let p = pending.removeValue(forKey: tag), case .acquire(let a) = command else { return }
        rememberAbandoned(tag, a)
        // Not queued yet (still on its way to the leader): its `queued` event withdraws it.
        if p.queued { withdrawWait(tag: tag, resource: a.resource, owner: a.owner) }
    }

    private func rememberAbandoned(_ tag: UInt64, _ a: AcquireCommand) {
        // Full (rare): forget the oldest (tags only grow), whose late grant is least likely.
        if abandoned.count >= LockService.maxAbandoned, let oldest = abandoned.keys.min() { abandoned[oldest] = nil }
        abandoned[tag] = (a.resource, a.owner)
    }

    /// Proposes withdrawing the wait that the acquire `tag` (of this node) queued. The table
    /// matches the waiter by origin and tag, so a wait another request took over stays.
    private func withdrawWait(tag: UInt64, resource: String, owner: String) {
        let cancelTag = takeTag()
        routeInternal(.cancelWait(CancelWaitCommand(resource: resource, owner: owner, origin: node.config.id, tag: tag, nowMs: 0)), tag: cancelTag)
    }

    // MARK: leader duties

    private func roleChanged(_ role: Role, _ leader: NodeID?) {
        guard role == .leader else { return }
        // A new leader never expires a lease early because the old one died.
        let grace = Int64(node.config.electionTimeoutMs * 2)
        _ = driver.propose(LockCommand.leaderGrace(nowMs: EventLoop.wallMs(), graceMs: grace).encode())
    }

    private func leaderDuties() {
        guard driver.isLeader, let due = table.nextDeadlineMs() else { return }
        let now = EventLoop.wallMs()
        guard due <= now, now - tickProposedAtMs > 200 else { return }
        tickProposedAtMs = now
        _ = driver.propose(LockCommand.tick(nowMs: now).encode())
    }

    private func maybeSnapshot() {
        guard let status = driver.status else { return }
        let applied = driver.appliedIndex
        guard applied > status.snapshotIndex, applied - status.snapshotIndex >= UInt64(node.config.snapshotThresholdEntries) else { return }
        driver.compact(upTo: applied, data: table.snapshot())
    }

    // MARK: linearizable reads

    private func status(_ request: HTTPRequest, resource: String) {
        linearizable(request, query: Array(resource.utf8)) { [weak self] in self?.statusJSON(resource) ?? .null }
    }

    private func statusAll(_ request: HTTPRequest) {
        linearizable(request, query: []) { [weak self] in
            .object([("locks", .array(self?.table.allStatus().map(LockService.json) ?? []))])
        }
    }

    private func statusJSON(_ resource: String) -> JSONValue { LockService.json(table.status(resource)) }

    /// Leader: ReadIndex, then answer once applied. Follower: ask the leader ("S" + query).
    private func linearizable(_ request: HTTPRequest, query: [UInt8], answer: @escaping () -> JSONValue) {
        if driver.isLeader {
            readIndex { request.respond(200, answer()) } failed: { [weak self] in self?.retryRead(request, query: query, answer: answer) }
            return
        }
        guard let leader = driver.leader else { retryRead(request, query: query, answer: answer); return }
        node.bus.request(to: leader, type: .forwardRequest, payload: [0x53] + query, timeoutMs: 1000) { [weak self] result in
            switch result {
            case .success(let bytes) where bytes.first == 0x4F:
                if let body = try? JSONParser.parse(Array(bytes.dropFirst())) { request.respond(200, body) }
            default:
                self?.retryRead(request, query: query, answer: answer)
            }
        }
    }

    private func retryRead(_ request: HTTPRequest, query: [UInt8], answer: @escaping () -> JSONValue) {
        guard !request.isDone else { return }
        node.loop.after(ms: 25) { [weak self] in self?.linearizable(request, query: query, answer: answer) }
    }

    private func forwardedRead(_ envelope: Envelope, _ reply: @escaping Bus.Reply) {
        guard driver.isLeader else { reply([0x4E]); return }
        let query = Array(envelope.payload.dropFirst())
        readIndex { [weak self] in
            guard let self else { return }
            let body: JSONValue
            if query.isEmpty {
                body = .object([("locks", .array(self.table.allStatus().map(LockService.json)))])
            } else {
                body = self.statusJSON(String(decoding: query, as: UTF8.self))
            }
            reply([0x4F] + body.bytes)
        } failed: { reply([0x4E]) }
    }

    private func readIndex(_ answer: @escaping () -> Void, failed: @escaping () -> Void) {
        let context = nextReadContext
        nextReadContext &+= 1
        if nextReadContext == 0 { nextReadContext = 1 }
        guard pendingReads.count < 4096, driver.readIndex(context: context) else { failed(); return }
        pendingReads[context] = (0, answer)
        // If leadership is lost the read never completes: give up after a while and retry.
        node.loop.after(ms: 500) { [weak self] in
            if self?.pendingReads.removeValue(forKey: context) != nil { failed() }
        }
    }

    private func readReady(_ read: ReadState) {
        guard let p = pendingReads.removeValue(forKey: read.context) else { return }
        readsAwaitingApply.append((read.index, p.answer))
        serveReads()
    }

    private func serveReads() {
        guard !readsAwaitingApply.isEmpty else { return }
        let applied = driver.appliedIndex
        var rest: [(index: UInt64, answer: () -> Void)] = []
        for r in readsAwaitingApply { if r.index <= applied { r.answer() } else { rest.append(r) } }
        readsAwaitingApply = rest
    }

    // MARK: answers

    /// A 503 carries `Retry-After` (CONTRACT §2).
    static func headers(_ status: Int) -> [(String, String)] { status == 503 ? [("Retry-After", "1")] : [] }

    static func answer(_ event: LockEvent) -> (status: Int, body: JSONValue)? {
        func error(_ status: Int, _ code: String, _ message: String, _ extra: [(String, JSONValue)] = []) -> (Int, JSONValue) {
            (status, .object([("error", .string(code)), ("message", .string(message))] + extra))
        }
        switch event {
        case .granted(_, _, _, let g):
            return (200, .object([("resource", .string(g.resource)), ("owner", .string(g.owner)), ("mode", .string(g.mode.rawValue)),
                                  ("fencing_token", .int(g.fencingToken)), ("expires_at_ms", .int(g.expiresAtMs))]))
        case .conflict: return error(409, "conflict", "the lock is held and wait_ms is 0")
        case .timedOut: return error(409, "timeout", "wait_ms passed before the lock was granted")
        case .deadlock(_, _, let cycle):
            return error(409, "deadlock", "waiting would close a cycle; this request was chosen as the victim", [("cycle", .array(cycle.map { .string($0) }))])
        // Only a withdrawal by the system reaches a client still waiting (the leader found its
        // node dead while it was cut off): not the client's outcome, so retry, not "timeout".
        case .cancelled: return error(503, "unavailable", "the wait was withdrawn: this node was unreachable; retry")
        case .superseded: return error(409, "conflict", "superseded: a newer acquire by this owner took over the wait")
        case .rejected(_, _, let reason):
            switch reason {
            case .invalidArgument: return error(400, "bad_request", "invalid argument")
            case .alreadyWaiting: return error(409, "conflict", "this owner already waits for the resource in another mode (or this request has no wait_ms)")
            case .grantEnded: return error(409, "conflict", "the grant made for this request_id has ended (released or expired); acquire again with a new request_id")
            default: return error(503, "unavailable", "lock table limit reached: \(reason.rawValue)")
            }
        case .released: return (200, .object([("released", .bool(true))]))
        case .notHeld: return error(404, "not_held", "the owner does not hold this lock")
        case .staleToken: return error(409, "stale_token", "the fencing token is not the owner's current one")
        case .renewed(_, _, let expires): return (200, .object([("expires_at_ms", .int(expires))]))
        case .queued, .expired: return nil
        }
    }

    static func json(_ s: ResourceStatus) -> JSONValue {
        .object([
            ("resource", .string(s.resource)), ("mode", .string(s.mode.rawValue)),
            ("holders", .array(s.holders.map { .object([("owner", .string($0.owner)), ("mode", .string($0.mode.rawValue)), ("fencing_token", .int($0.fencingToken)), ("expires_at_ms", .int($0.expiresAtMs))]) })),
            ("waiters", .array(s.waiters.map { .object([("owner", .string($0.owner)), ("mode", .string($0.mode.rawValue)), ("since_ms", .int($0.sinceMs))]) })),
        ])
    }

    static func stamped(_ command: LockCommand, nowMs: Int64) -> LockCommand {
        switch command {
        case .acquire(var c): c.nowMs = nowMs; return .acquire(c)
        case .release(var c): c.nowMs = nowMs; return .release(c)
        case .renew(var c): c.nowMs = nowMs; return .renew(c)
        case .cancelWait(var c): c.nowMs = nowMs; return .cancelWait(c)
        case .tick: return .tick(nowMs: nowMs)
        case .leaderGrace(_, let grace): return .leaderGrace(nowMs: nowMs, graceMs: grace)
        }
    }

    static func origin(of command: LockCommand) -> String? {
        switch command {
        case .acquire(let c): return c.origin
        case .release(let c): return c.origin
        case .renew(let c): return c.origin
        case .cancelWait(let c): return c.origin
        default: return nil
        }
    }

    static func tagBytes(_ tag: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: tag >> UInt64(56 - 8 * $0)) } }

    // MARK: metrics and status

    private func recordOutcome(_ event: LockEvent) {
        let outcome: String
        switch event {
        case .granted: outcome = "granted"
        case .conflict: outcome = "conflict"
        case .timedOut, .cancelled: outcome = "timeout"
        case .deadlock: outcome = "deadlock"
        default: return
        }
        node.metrics.increment("concord_lock_acquisitions_total", [("outcome", outcome)])
    }

    private func recordMetrics() {
        node.metrics.set("concord_locks_held", [], Double(table.heldCount))
        node.metrics.set("concord_lock_waiters", [], Double(table.waiterCount))
        node.metrics.set("concord_raft_elections", [], Double(driver.elections))
        node.metrics.set("concord_raft_applied_index", [], Double(driver.appliedIndex))
    }

    private func summary() -> RaftSummary {
        var s = RaftSummary()
        guard let st = driver.status else { return s }
        s.role = st.role.externalName
        s.term = st.term
        s.leader = st.leader
        s.votedFor = st.votedFor
        s.commitIndex = st.commitIndex
        s.lastApplied = driver.appliedIndex
        s.lastLogIndex = st.lastLogIndex
        s.lastLogTerm = st.lastLogTerm
        s.snapshotIndex = st.snapshotIndex
        return s
    }
}
