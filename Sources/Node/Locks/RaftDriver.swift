import Logging
import Raft
import Runtime

// MARK: - Raft driver: the pure core on the node's loop, persisted in Redis, talking over pub/sub
//
// Keys (one hash tag per node, so they could move to Redis Cluster together):
//   concord:<cluster>:raft:{<node>}:hard       hash: term, vote, commit, wseq (last write's token)
//   concord:<cluster>:raft:{<node>}:log        list: encoded entries from <snapshot index> + 1 on
//   concord:<cluster>:raft:{<node>}:snapshot   hash: index, term, data
//
// Persist before you speak: every Ready is written by one Lua script (`raft_persist`) on the
// command connection, and its messages are PUBLISHed after it on the same connection, so Redis
// executes the write before any peer can hear what depends on it — without waiting a round trip.
// Writes are pipelined: up to `maxWritesInFlight` Readies are written at once, in order, on that
// one connection. Each write carries a random token (`wseq`) and names the token of the write it
// follows; the script refuses a write whose predecessor is not what Redis holds, so a failed
// write stops every write queued behind it before anything of theirs is stored or published.
// Tokens are random, not counted, so a write of a dropped core that Redis runs late (a NOSCRIPT
// retry is sent again after other commands) can never pass for a write of the rebuilt core.
// If a write fails (Redis away), the in-memory core may be ahead of what is stored: the driver
// then throws the core away and rebuilds it from Redis once Redis is back, exactly like a
// process restart, which Raft makes safe.

final class RaftDriver {
    struct Hooks {
        /// Apply one committed normal entry.
        var apply: (Entry) -> Void = { _ in }
        /// Replace the state machine with a snapshot's data (nil: empty state).
        var restore: (Snapshot?) -> Void = { _ in }
        var readState: (ReadState) -> Void = { _ in }
        var roleChange: (Role, NodeID?) -> Void = { _, _ in }
        /// After a Ready's committed entries were applied and the core advanced.
        var applied: () -> Void = {}
        /// After a Ready's committed entries were applied (before its write completes).
        var appliedRound: () -> Void = {}
        /// Every applied entry's (index, term), normal or not: how a proposal is known lost.
        var appliedEntry: (UInt64, UInt64) -> Void = { _, _ in }
        /// The state machine as of the last applied entry (snapshot data), for a write-back.
        var snapshotData: () -> [UInt8] = { [] }
    }

    static let tickMs = 10
    let node: ConcordNode
    var hooks = Hooks()
    private(set) var raft: RaftNode?
    private var logger: Logger { node.logger }
    private var tickTimer: LoopTimer?
    private var processScheduled = false
    /// Readies handed out and not yet advanced, oldest first: ones being written wait for
    /// their script's reply; ones with nothing to write (`writing == false`) wait only so their
    /// messages go out after the writes before them.
    private var outstanding: [(ready: Ready, writing: Bool)] = []
    static let maxWritesInFlight = 4
    /// The hard state of the last write sent (term and vote decide whether a Ready must be
    /// written; writes execute in order, so it is what Redis holds once they have run).
    private var storedHardState: HardState?
    /// The token of the last write sent (`wseq` in the hard-state hash); nil when Redis held
    /// none at load: the next write then requires that none is stored.
    private var lastWriteToken: String?
    /// Bumped when the core is thrown away, so replies meant for the old core are ignored.
    private var generation = 0
    private var recovering = false
    private(set) var elections = 0
    private(set) var appliedIndex: UInt64 = 0
    private var lastRole: Role = .follower
    /// Append round trips: propose time per index (leader), for the latency metric; bounded.
    private var proposedAtMicros: [UInt64: Int64] = [:]
    /// This node's Raft state as the dropped core held it (see `writeBackIfLost`).
    private var image: PersistentState?

    init(node: ConcordNode) {
        self.node = node
        node.bus.on(.raft) { [weak self] envelope in self?.receive(envelope) }
        // After any reconnect, what Redis holds is the truth (it may have restarted, with or
        // without its data): rebuild the core from it, as a process restart would.
        node.redis.addStateListener { [weak self] ready in
            guard let self, ready, self.raft != nil else { return }
            self.recover("redis reconnected")
        }
    }

    private var prefix: String { "concord:\(node.config.cluster):raft:{\(node.config.id)}" }
    private var keys: [String] { ["\(prefix):hard", "\(prefix):log", "\(prefix):snapshot"] }

    var isLeader: Bool { raft?.status.role == .leader }
    var leader: NodeID? { raft?.status.leader }
    var status: RaftStatus? { raft?.status }

    func start() {
        load()
        tickTimer = node.loop.every(ms: RaftDriver.tickMs) { [weak self] in
            guard let self, let raft = self.raft else { return }
            raft.tick()
            self.scheduleProcess()
        }
    }

    func stop() {
        tickTimer?.cancel()
        tickTimer = nil
    }

    // MARK: loading and recovery

    /// Reads hard state, snapshot and log from Redis and builds the core from them.
    private func load() {
        recovering = true
        let redis = node.redis
        // One transaction, so no write (a late one of a dropped core, on this connection or a
        // dropped one) runs between the reads: the three replies are one consistent view.
        let reads: [[[UInt8]]] = [["HGETALL", keys[0]], ["HGETALL", keys[2]], ["LRANGE", keys[1], "0", "-1"]].map { $0.map { Array($0.utf8) } }
        redis.transaction(reads) { [weak self] reply, _ in
            guard let self else { return }
            guard let replies = reply.array, replies.count == 3 else {
                self.finishLoad(hard: reply, snapshot: reply, log: reply)
                return
            }
            if replies[2].errorMessage?.hasPrefix("WRONGTYPE") == true { self.convertZsetLog(); return }
            self.finishLoad(hard: replies[0], snapshot: replies[1], log: replies[2])
        }
    }

    /// Builds before this one kept the log as a zset (score = index, member = entry). Rewrites
    /// it as the list in one atomic script (order by score is index order), then loads.
    private func convertZsetLog() {
        let script = """
            if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then return -1 end
            local e = redis.call('ZRANGE', KEYS[1], 0, -1)
            redis.call('DEL', KEYS[1])
            for i = 1, #e, 1000 do redis.call('RPUSH', KEYS[1], unpack(e, i, math.min(#e, i + 999))) end
            return #e
            """
        node.redis.send(["EVAL", script, "1", keys[1]]) { [weak self] reply in
            guard let self else { return }
            if let count = reply.integer, count >= 0 {
                self.logger.notice("raft log converted from an earlier build's zset to a list", metadata: ["entries": "\(count)"])
                self.load()
            } else {
                self.logger.warning("raft log key holds neither a list nor a zset; retrying", metadata: ["reply": "\(reply)"])
                self.node.loop.after(ms: 200) { [weak self] in self?.load() }
            }
        }
    }

    private func finishLoad(hard: RedisReply, snapshot: RedisReply, log: RedisReply) {
        guard !hard.isError, !snapshot.isError, !log.isError else {
            logger.warning("raft state not readable from redis yet; retrying")
            node.loop.after(ms: 200) { [weak self] in self?.load() }
            return
        }
        do {
            let state = try RaftDriver.decodeState(hard: hard, snapshot: snapshot, log: log)
            if let image {
                self.image = nil
                if writeBackIfLost(stored: state, image: image) { return }
            }
            let config = RaftConfig(
                id: node.config.id, voters: node.config.members,
                electionTicks: max(2, node.config.electionTimeoutMs / RaftDriver.tickMs),
                heartbeatTicks: max(1, node.config.heartbeatMs / RaftDriver.tickMs),
                maxEntriesPerMessage: 512, maxBytesPerMessage: 1 << 20, maxInflightMessages: 64,
                snapshotChunkBytes: 256 << 10, maxUncommittedEntries: 50_000)
            let seed = UInt64(bitPattern: EventLoop.wallMs()) ^ UInt64(truncatingIfNeeded: node.config.id.hashValue)
            let core = RaftNode(config: config, restoring: state, seed: seed)
            storedHardState = state?.hardState
            lastWriteToken = RaftDriver.storedWriteToken(hard: hard)
            hooks.restore(state?.snapshot)
            appliedIndex = state?.snapshot?.index ?? 0
            raft = core
            recovering = false
            lastRole = .follower
            logger.info("raft state loaded", metadata: ["term": "\(core.status.term)", "commit": "\(core.status.commitIndex)", "last_index": "\(core.status.lastLogIndex)", "snapshot": "\(core.status.snapshotIndex)"])
            scheduleProcess()
        } catch {
            if let image {
                // What Redis holds is not even a readable log (e.g. a FLUSHALL, then writes that
                // started a log with a gap): this node's memory is its state.
                self.image = nil
                logger.error("stored raft state is unreadable (\(error)); writing it back from memory")
                writeBack(image)
                return
            }
            // Corrupt stored state is not something to paper over: refuse to run Raft on it.
            logger.critical("stored raft state is corrupt: \(error)")
            node.loop.after(ms: 1000) { [weak self] in self?.load() }
        }
    }

    /// A write failed: drop the core; rebuild from Redis when it answers again.
    private func recover(_ reason: String) {
        guard !recovering else { return }
        recovering = true
        logger.warning("raft persistence failed; rebuilding from redis", metadata: ["reason": "\(reason)"])
        if let raft { image = captureImage(raft) }
        raft = nil
        generation += 1
        outstanding.removeAll()
        appliedSinceAdvance = false
        proposedAtMicros.removeAll()
        hooks.roleChange(.follower, nil)
        lastRole = .follower
        waitForRedisThenLoad()
    }

    /// The core's durable state, as a restart from Redis would need it: hard state, a snapshot
    /// of the state machine at the applied index, and the log after it.
    private func captureImage(_ core: RaftNode) -> PersistentState? {
        let st = core.status
        let applied = appliedIndex
        var snapshot: Snapshot?
        if applied > 0 {
            guard let term = core.termOfEntry(at: applied) else { return nil }
            snapshot = Snapshot(index: applied, term: term, voters: node.config.members, data: hooks.snapshotData())
        }
        var entries: [Entry] = []
        if st.lastLogIndex > applied {
            entries.reserveCapacity(Int(st.lastLogIndex - applied))
            for i in (applied + 1)...st.lastLogIndex {
                guard let e = core.entry(at: i) else { return nil }
                entries.append(e)
            }
        }
        return PersistentState(hardState: HardState(term: st.term, vote: st.votedFor, commit: st.commitIndex), snapshot: snapshot, entries: entries)
    }

    /// Every node of a cluster keeps its Raft state in the one Redis, so a Redis that comes back
    /// without its data (no AOF, a lost AOF, a FLUSHALL) takes every copy at once, and Raft's
    /// majority cannot help: the nodes would start again from term 0, hand out fencing tokens
    /// already used, and forget held locks. A running node still has its state in memory. If
    /// what Redis holds differs from it (term, vote, or the end of the log), the node writes its
    /// state back, then loads it as usual. That is safe: memory
    /// holds everything this node ever stored (and perhaps a Ready whose write failed, which
    /// Raft allows to be stored late: nothing was sent on its account). Returns whether a
    /// write-back was started (the load follows it).
    private func writeBackIfLost(stored: PersistentState?, image: PersistentState) -> Bool {
        // Anything this node stored, Redis must still hold: its term and vote, and its log as
        // far as it reaches (acknowledged entries count toward a commit elsewhere, even above
        // this node's own commit index). Memory holds all of it, so any difference is written.
        let storedTerm = stored?.hardState.term ?? 0
        let storedLast = max(stored?.snapshot?.index ?? 0, stored?.entries.last?.index ?? 0)
        let storedLastTerm = stored?.entries.last?.term ?? stored?.snapshot?.term ?? 0
        let imageLast = max(image.snapshot?.index ?? 0, image.entries.last?.index ?? 0)
        let imageLastTerm = image.entries.last?.term ?? image.snapshot?.term ?? 0
        guard storedTerm != image.hardState.term || stored?.hardState.vote != image.hardState.vote
                || storedLast < imageLast || storedLastTerm != imageLastTerm else { return false }
        logger.error("redis holds less raft state than this node had (redis lost data, or a write failed): writing it back from memory", metadata: [
            "stored_term": "\(storedTerm)", "stored_last_index": "\(storedLast)",
            "term": "\(image.hardState.term)", "last_index": "\(imageLast)", "commit": "\(image.hardState.commit)", "snapshot": "\(image.snapshot?.index ?? 0)"])
        writeBack(image)
        return true
    }

    /// Stores `image` as this node's whole Raft state (snapshot, log, hard state), then loads.
    private func writeBack(_ image: PersistentState) {
        node.metrics.increment("concord_raft_state_written_back_total")
        // No predecessor check: this write replaces whatever Redis holds.
        let args = RaftDriver.persistArgs(mode: image.snapshot == nil ? "none" : "replace", snapshot: image.snapshot,
                                          hardState: image.hardState, entries: image.entries, frames: [],
                                          token: RaftDriver.newWriteToken())
        node.scripts.run("raft_persist", keys: keys, args: args) { [weak self] reply in
            guard let self else { return }
            if let error = reply.errorMessage {
                self.logger.warning("raft write-back failed; retrying", metadata: ["reason": "\(error)"])
                self.image = image
                self.node.loop.after(ms: 200) { [weak self] in self?.waitForRedisThenLoad() }
                return
            }
            self.load()
        }
    }

    private func waitForRedisThenLoad() {
        if node.redis.isReady { load(); return }
        node.loop.after(ms: 100) { [weak self] in self?.waitForRedisThenLoad() }
    }

    // MARK: input

    private func receive(_ envelope: Envelope) {
        guard let raft else { return }
        guard let message = try? Message.decode(envelope.payload), message.to == node.config.id, message.from == envelope.sender else {
            node.metrics.increment("concord_bus_frames_dropped_total", [("reason", "bad_raft_message")])
            return
        }
        raft.step(message)
        scheduleProcess()
    }

    /// The current term (0 without a core).
    var term: UInt64 { raft?.status.term ?? 0 }

    /// The term of the entry at `index` if the log still has it.
    func termOfEntry(at index: UInt64) -> UInt64? { raft?.termOfEntry(at: index) }

    func propose(_ data: [UInt8]) -> ProposeResult {
        guard let raft else { return .notLeader(leader: nil) }
        let result = raft.propose(data)
        if case .accepted(let index) = result, proposedAtMicros.count < 100_000 {
            proposedAtMicros[index] = EventLoop.monoMicros()
        }
        scheduleProcess()
        return result
    }

    func readIndex(context: UInt64) -> Bool {
        guard let raft else { return false }
        let ok = raft.readIndex(context: context)
        scheduleProcess()
        return ok
    }

    func transferLeadership() {
        raft?.transferLeadership(to: nil)
        scheduleProcess()
    }

    func compact(upTo index: UInt64, data: [UInt8]) {
        raft?.compact(upTo: index, snapshotData: data)
        scheduleProcess()
    }

    /// Runs the Ready loop once the callbacks of this loop iteration are done, so everything
    /// that arrived in it (proposals, messages) goes out in one batch: group commit.
    func scheduleProcess() {
        guard !processScheduled else { return }
        processScheduled = true
        node.loop.soon { [weak self] in
            guard let self else { return }
            self.processScheduled = false
            self.process()
        }
    }

    // MARK: the Ready loop

    /// Entries were applied by `applyCommitted` since the last `advance`.
    private var appliedSinceAdvance = false

    /// A Ready that must be persisted is written (and its messages published) by one script,
    /// up to `maxWritesInFlight` at once, and only when Redis answers OK is it `advance`d — the core
    /// treats `advance` as "durable" and counts its own entries only then. Proposals arriving
    /// meanwhile batch into the next Ready (group commit); entries a quorum commits meanwhile
    /// are applied at once (`applyCommitted`).
    private func process() {
        if let raft, !outstanding.isEmpty { applyCommitted(raft) }
        var rounds = 0
        while let raft, raft.hasReady, outstanding.count < RaftDriver.maxWritesInFlight, rounds < 16 {
            rounds += 1
            let rd = raft.ready()
            // Committed entries are already durable on a majority (and, for this node's own
            // count, in an earlier Ready it waited for), so they are applied — and clients
            // answered — without waiting for this Ready's own write (often just the commit index).
            apply(rd, raft)
            if RaftDriver.needsPersist(rd, stored: storedHardState) {
                outstanding.append((rd, true))
                let generation = self.generation
                persist(rd) { [weak self] error in
                    guard let self, generation == self.generation else { return }
                    if let error { self.recover(error); return }
                    self.completeOldestWrite()
                }
                // A write refused at once (Redis away) has already dropped the core.
                guard generation == self.generation else { return }
                if let hs = rd.hardState { storedHardState = hs }
            } else if outstanding.isEmpty {
                for message in rd.messages { node.bus.send(to: message.to, type: .raft, payload: message.encode()) }
                advance(rd, raft)
            } else {
                // Its messages (an acknowledgement, say) may speak for entries still being written.
                outstanding.append((rd, false))
            }
        }
        if let raft, raft.hasReady, outstanding.count < RaftDriver.maxWritesInFlight { scheduleProcess() }
    }

    /// The oldest write succeeded (replies come in the order the writes were sent): advance
    /// it, then release the Readies with nothing to write that waited behind it.
    private func completeOldestWrite() {
        guard let raft, let first = outstanding.first, first.writing else { return }
        outstanding.removeFirst()
        advance(first.ready, raft)
        while let next = outstanding.first, !next.writing {
            outstanding.removeFirst()
            for message in next.ready.messages { node.bus.send(to: message.to, type: .raft, payload: message.encode()) }
            advance(next.ready, raft)
        }
        scheduleProcess()
    }

    /// Whether a Ready must be written before its messages go out. The commit index alone does
    /// not: it is volatile state in Raft (Figure 2), re-learned from the leader after a restart,
    /// and it is written along with the next term, vote or entries. Skipping those writes keeps
    /// a Redis round trip off the path of the next proposal.
    static func needsPersist(_ rd: Ready, stored: HardState?) -> Bool {
        if rd.snapshot != nil || rd.compactedSnapshot != nil || !rd.entries.isEmpty { return true }
        guard let hs = rd.hardState else { return false }
        return hs.term != stored?.term || hs.vote != stored?.vote
    }

    /// Installs a received snapshot, applies committed entries, answers reads, reports the role.
    private func apply(_ rd: Ready, _ raft: RaftNode) {
        if let snapshot = rd.snapshot {
            hooks.restore(snapshot)
            appliedIndex = snapshot.index
        }
        applyEntries(rd.committedEntries)
        for read in rd.readStates { hooks.readState(read) }
        if rd.roleChanged || rd.role != lastRole {
            if rd.role == .leader && lastRole != .leader { elections += 1; node.metrics.increment("concord_raft_elections_won_total") }
            if rd.role == .candidate || rd.role == .preCandidate { node.metrics.increment("concord_raft_campaigns_total") }
            lastRole = rd.role
            logger.info("raft role", metadata: ["role": "\(rd.role.externalName)", "leader": "\(rd.leader ?? "none")", "term": "\(raft.status.term)"])
            hooks.roleChange(rd.role, rd.leader)
        }
    }

    /// While a Ready's write is in flight: entries that a quorum's acknowledgement committed
    /// meanwhile are applied, and their clients answered, now rather than after that write.
    private func applyCommitted(_ raft: RaftNode) {
        let entries = raft.takeCommittedEntries()
        guard !entries.isEmpty else { return }
        applyEntries(entries)
        appliedSinceAdvance = true
    }

    private func applyEntries(_ entries: [Entry]) {
        guard !entries.isEmpty else { return }
        for entry in entries {
            if let started = proposedAtMicros.removeValue(forKey: entry.index) {
                node.metrics.recordMicros("concord_raft_commit_latency_seconds", [], EventLoop.monoMicros() - started)
            }
            if entry.kind == .normal { hooks.apply(entry) }
            appliedIndex = entry.index
            hooks.appliedEntry(entry.index, entry.term)
        }
        hooks.appliedRound()
    }

    /// After the Ready is durable: tell the core (it counts its own entries only now), then let
    /// the state machine snapshot itself.
    private func advance(_ rd: Ready, _ raft: RaftNode) {
        raft.advance(rd)
        if !rd.committedEntries.isEmpty || rd.snapshot != nil || appliedSinceAdvance { hooks.applied() }
        appliedSinceAdvance = false
    }

    /// `raft_persist`'s arguments (see its header): snapshot, hard state, entries, then bus
    /// frames to publish after the writes.
    static func persistArgs(mode: String, snapshot: Snapshot?, hardState: HardState?, entries: [Entry], frames: [(channel: String, bytes: [UInt8])],
                            expectStored: Bool = false, follows: String?? = nil, token: String) -> [[UInt8]] {
        var args: [[UInt8]] = [Array(mode.utf8)]
        args.reserveCapacity(13 + entries.count + 2 * frames.count)
        args.append(Array(String(snapshot?.index ?? 0).utf8))
        args.append(Array(String(snapshot?.term ?? 0).utf8))
        args.append(snapshot.map(RaftDriver.encodeSnapshotData) ?? [])
        if let hs = hardState {
            args.append(Array("1".utf8)); args.append(Array(String(hs.term).utf8)); args.append(Array((hs.vote ?? "").utf8)); args.append(Array(String(hs.commit).utf8))
        } else {
            args.append(Array("0".utf8)); args.append([]); args.append([]); args.append([])
        }
        args.append(Array(String(entries.first?.index ?? 0).utf8))
        args.append(Array(String(entries.count).utf8))
        args.append(Array((expectStored ? "1" : "0").utf8))
        // follows: nil = no check (a write-back); .some(nil) = none may be stored; else the token.
        switch follows {
        case .none: args.append([])
        case .some(.none): args.append(Array("none".utf8))
        case .some(.some(let t)): args.append(Array(t.utf8))
        }
        args.append(Array(token.utf8))
        for entry in entries { args.append(RaftDriver.encodeEntry(entry)) }
        for frame in frames {
            args.append(Array(frame.channel.utf8))
            args.append(frame.bytes)
        }
        return args
    }

    private func persist(_ rd: Ready, _ done: @escaping (String?) -> Void) {
        var mode = "none"
        var snapshot: Snapshot?
        if let s = rd.snapshot { mode = "replace"; snapshot = s } else if let s = rd.compactedSnapshot { mode = "compact"; snapshot = s }
        let frames = rd.messages.map { message -> (channel: String, bytes: [UInt8]) in
            let frame = node.bus.frame(to: message.to, type: .raft, payload: message.encode())
            return (frame.channel, frame.bytes)
        }
        let token = RaftDriver.newWriteToken()
        let args = RaftDriver.persistArgs(mode: mode, snapshot: snapshot, hardState: rd.hardState, entries: rd.entries, frames: frames,
                                          expectStored: storedHardState != nil || lastWriteToken != nil,
                                          follows: .some(lastWriteToken), token: token)
        lastWriteToken = token
        let started = EventLoop.monoMicros()
        node.scripts.run("raft_persist", keys: keys, args: args) { [weak self] reply in
            // How long Redis took to store a Ready, as seen by this node (etcd's WAL fsync
            // duration, for this design).
            self?.node.metrics.recordMicros("concord_raft_persist_latency_seconds", [], EventLoop.monoMicros() - started)
            done(reply.errorMessage)
        }
    }

    // MARK: storage encoding

    static func encodeEntry(_ e: Entry) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(17 + e.data.count)
        appendUInt64(e.term, &out); appendUInt64(e.index, &out); out.append(e.kind.rawValue)
        out.append(contentsOf: e.data)
        return out
    }

    static func decodeEntry(_ b: [UInt8]) throws -> Entry {
        guard b.count >= 17, let kind = EntryKind(rawValue: b[16]) else { throw RuntimeError("bad stored raft entry") }
        return Entry(term: readUInt64(b, 0), index: readUInt64(b, 8), kind: kind, data: Array(b[17...]))
    }

    static func encodeSnapshotData(_ s: Snapshot) -> [UInt8] {
        var out: [UInt8] = [UInt8(min(s.voters.count, 255))]
        for v in s.voters.prefix(255) { let u = Array(v.utf8.prefix(255)); out.append(UInt8(u.count)); out += u }
        out += s.data
        return out
    }

    /// The token of the last write stored (`wseq`), if any.
    static func storedWriteToken(hard: RedisReply) -> String? {
        fields(hard)["wseq"].map { String(decoding: $0, as: UTF8.self) }
    }

    /// A hash's HGETALL reply as field -> bytes.
    private static func fields(_ r: RedisReply) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for (k, v) in r.pairs { out[k.string ?? ""] = v.bytes ?? [] }
        return out
    }

    static func newWriteToken() -> String { String(UInt64.random(in: 1...UInt64.max), radix: 36) }

    static func decodeState(hard: RedisReply, snapshot: RedisReply, log: RedisReply) throws -> PersistentState? {
        let h = fields(hard), s = fields(snapshot)
        let entries = try (log.array ?? []).map { try decodeEntry($0.bytes ?? []) }
        if h.isEmpty && s.isEmpty && entries.isEmpty { return nil }
        func int(_ b: [UInt8]?) -> UInt64 { UInt64(String(decoding: b ?? [], as: UTF8.self)) ?? 0 }
        let vote = String(decoding: h["vote"] ?? [], as: UTF8.self)
        let hardState = HardState(term: int(h["term"]), vote: vote.isEmpty ? nil : vote, commit: int(h["commit"]))
        var snap: Snapshot?
        if let data = s["data"], !s.isEmpty {
            guard let count = data.first else { throw RuntimeError("bad stored snapshot") }
            var i = 1
            var voters: [String] = []
            for _ in 0..<Int(count) {
                guard i < data.count else { throw RuntimeError("bad stored snapshot") }
                let n = Int(data[i]); i += 1
                guard i + n <= data.count else { throw RuntimeError("bad stored snapshot") }
                voters.append(String(decoding: data[i..<(i + n)], as: UTF8.self)); i += n
            }
            snap = Snapshot(index: int(s["index"]), term: int(s["term"]), voters: voters, data: Array(data[i...]))
        }
        // Entries must be consecutive and follow the snapshot.
        var expected = (snap?.index ?? 0) + 1
        for e in entries {
            guard e.index == expected else { throw RuntimeError("stored raft log has a gap at \(expected) (found \(e.index))") }
            expected += 1
        }
        return PersistentState(hardState: hardState, snapshot: snap, entries: entries)
    }

    static func appendUInt64(_ v: UInt64, _ out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }

    static func readUInt64(_ b: [UInt8], _ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(b[at + i]) }
        return v
    }
}
