// The Raft state machine of one node (Ongaro & Ousterhout, "In Search of an Understandable
// Consensus Algorithm (Extended Version)", and Ongaro's thesis). Single-threaded, no I/O:
// inputs are tick(), step(), propose(), readIndex(), transferLeadership(), compact();
// outputs come out of ready() (see `Ready` for the persistence contract).

/// Deliberate bugs, enabled only by tests, to prove the simulation's checkers bite.
public struct RaftFaults: Sendable, Equatable {
    /// Grant every vote request with an up-to-date log, ignoring (and not overwriting) an
    /// earlier vote in the term (breaks Election Safety).
    public var voteTwicePerTerm = false
    /// Commit by counting replicas whatever the entry's term (Figure 8; breaks State Machine Safety).
    public var commitPreviousTermByCounting = false
    /// Accept AppendEntries without the prevLogIndex/prevLogTerm check (breaks Log Matching).
    public var skipConsistencyCheck = false
    /// Do not append a no-op on election (not a safety bug alone; it exposes Figure 8).
    public var skipNoopOnElection = false

    public init(voteTwicePerTerm: Bool = false, commitPreviousTermByCounting: Bool = false,
                skipConsistencyCheck: Bool = false, skipNoopOnElection: Bool = false) {
        self.voteTwicePerTerm = voteTwicePerTerm
        self.commitPreviousTermByCounting = commitPreviousTermByCounting
        self.skipConsistencyCheck = skipConsistencyCheck
        self.skipNoopOnElection = skipNoopOnElection
    }
}

public final class RaftNode {
    public let id: NodeID
    let config: RaftConfig
    /// The voter set in force. Kept apart from `config` so a config-change entry can replace it.
    private(set) var voters: [NodeID]
    public var faults = RaftFaults()

    // Figure 2 persistent state.
    private(set) var term: UInt64 = 0
    private(set) var votedFor: NodeID?
    private(set) var log: RaftLog

    // Volatile state.
    private(set) var role: Role = .follower
    private(set) var leader: NodeID?
    private var random: SplitMix64
    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    private var randomizedElectionTimeout = 0
    private var votes: [NodeID: Bool] = [:]
    private var progress: [NodeID: Progress] = [:]
    private var leadTransferee: NodeID?
    private var broadcastPending = false
    /// The commit index advanced and followers have not been told (see `noteCommitAdvanced`).
    private var commitNoticePending = false

    /// The latest snapshot (local compaction, received, or restored): what a lagging follower gets.
    private var latestSnapshot: Snapshot?
    /// A snapshot being received in chunks.
    private var incomingSnapshot: (chunk: SnapshotChunk, data: [UInt8])?

    // ReadIndex (thesis §6.4).
    private struct PendingRead {
        var context: UInt64
        var index: UInt64
        var acks: Set<NodeID>
    }
    private var pendingReads: [PendingRead] = []
    /// Reads asked before this leader committed an entry of its term (§6.4 step 1).
    private var readsAwaitingCommit: [UInt64] = []

    // Output queues (drained by ready()).
    private var messages: [Message] = []
    private var readStates: [ReadState] = []
    private var pendingReceivedSnapshot: Snapshot?
    private var pendingCompaction: Snapshot?
    private var lastHardState: HardState
    private var lastReportedRole: Role = .follower
    private var lastReportedLeader: NodeID?
    /// Readies handed out and not yet advanced, oldest first. A runtime may write several at
    /// once (pipelined, on one ordered connection) and advance them in the order it got them.
    private var outstandingReadies: [(applyThrough: UInt64, lastEntry: Entry?)] = []

    // MARK: - Init

    /// Starts a node, fresh (`restoring == nil`) or from what earlier Readies said to persist.
    /// When restoring with a snapshot, the application restores its own state from
    /// `restoring.snapshot.data`; committed entries after it are handed out again by ready().
    public init(config: RaftConfig, restoring: PersistentState?, seed: UInt64) {
        config.validate()
        self.id = config.id
        self.config = config
        self.voters = config.voters
        self.random = SplitMix64(seed: mixSeed(seed, config.id))
        if let restoring {
            log = RaftLog(snapshot: restoring.snapshot, entries: restoring.entries,
                          commit: restoring.hardState.commit)
            term = restoring.hardState.term
            votedFor = restoring.hardState.vote
            if let snapshot = restoring.snapshot {
                latestSnapshot = snapshot
                if !snapshot.voters.isEmpty { voters = snapshot.voters }
            }
        } else {
            log = RaftLog()
        }
        lastHardState = HardState(term: term, vote: votedFor, commit: log.committed)
        resetTimers()
    }

    // MARK: - Public state

    public var status: RaftStatus {
        RaftStatus(id: id, role: role, term: term, leader: leader, votedFor: votedFor,
                   commitIndex: log.committed, appliedIndex: log.applied,
                   lastLogIndex: log.lastIndex, lastLogTerm: log.lastTerm,
                   snapshotIndex: log.snapshotIndex,
                   matchIndex: role == .leader ? progress.mapValues { $0.match } : [:],
                   transferringTo: leadTransferee)
    }

    /// Term of the log entry at `index` in memory (nil if compacted or absent). For checkers.
    public func termOfEntry(at index: UInt64) -> UInt64? { log.term(at: index) }
    public func entry(at index: UInt64) -> Entry? { log.entry(at: index) }

    private var quorum: Int { voters.count / 2 + 1 }
    private var isPromotable: Bool { voters.contains(id) }

    // MARK: - Time

    /// Advances logical time by one tick.
    public func tick() {
        switch role {
        case .leader: tickLeader()
        case .follower, .candidate, .preCandidate: tickElection()
        }
    }

    private func tickElection() {
        electionElapsed += 1
        if isPromotable && electionElapsed >= randomizedElectionTimeout {
            // Figure 2, Followers: "If election timeout elapses without receiving AppendEntries
            // from current leader or granting vote to candidate: convert to candidate."
            electionElapsed = 0
            campaign(transfer: false)
        }
    }

    private func tickLeader() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if electionElapsed >= config.electionTicks {
            electionElapsed = 0
            if config.checkQuorum {
                // Thesis §6.2: step down without contact with a majority for an election timeout.
                let active = voters.filter { $0 == id || progress[$0]?.recentActive == true }.count
                for key in progress.keys { progress[key]?.recentActive = false }
                if active < quorum {
                    becomeFollower(term: term, leader: nil)
                    return
                }
            }
            // A transfer that did not finish within an election timeout is abandoned (§3.10).
            leadTransferee = nil
        }
        if commitNoticePending {
            commitNoticePending = false
            broadcastPending = true
        }
        if heartbeatElapsed >= config.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
        }
    }

    private func resetTimers() {
        electionElapsed = 0
        heartbeatElapsed = 0
        // §5.2: election timeouts are chosen randomly from a fixed interval, here [T, 2T).
        randomizedElectionTimeout = config.electionTicks + random.below(config.electionTicks)
    }

    // MARK: - Role changes

    private func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
        if newTerm != term {
            precondition(newTerm > term, "term going back")
            term = newTerm
            votedFor = nil
        }
        role = .follower
        leader = newLeader
        resetVolatile()
    }

    private func resetVolatile() {
        resetTimers()
        votes = [:]
        progress = [:]
        leadTransferee = nil
        pendingReads = []
        readsAwaitingCommit = []
        broadcastPending = false
        commitNoticePending = false
    }

    /// Starts an election: PreVote first if enabled (thesis §9.6), unless forced by TimeoutNow.
    private func campaign(transfer: Bool) {
        guard isPromotable else { return }
        if config.preVote && !transfer {
            role = .preCandidate
            leader = nil
            votes = [id: true]
            resetTimers()
            if tallyVotes() { return }
            requestVotes(type: .preVote, term: term + 1, transfer: false)
        } else {
            becomeCandidate(transfer: transfer)
        }
    }

    /// Figure 2, Candidates: increment currentTerm, vote for self, reset election timer,
    /// send RequestVote RPCs to all other servers.
    private func becomeCandidate(transfer: Bool) {
        term += 1
        votedFor = id
        role = .candidate
        leader = nil
        resetVolatile()
        votes = [id: true]
        if tallyVotes() { return }
        requestVotes(type: .vote, term: term, transfer: transfer)
    }

    private func requestVotes(type: MessageType, term voteTerm: UInt64, transfer: Bool) {
        for peer in voters where peer != id {
            send(Message(from: id, to: peer, term: voteTerm, type: type,
                         logTerm: log.lastTerm, index: log.lastIndex, transfer: transfer))
        }
    }

    /// Counts votes; wins or loses the (pre-)election if decided. True if the role changed.
    private func tallyVotes() -> Bool {
        let granted = votes.filter { $0.value && voters.contains($0.key) }.count
        let rejected = votes.filter { !$0.value && voters.contains($0.key) }.count
        if granted >= quorum {
            if role == .preCandidate {
                becomeCandidate(transfer: false)
            } else {
                becomeLeader()
            }
            return true
        }
        if rejected >= quorum {
            becomeFollower(term: term, leader: nil)
            return true
        }
        return false
    }

    private func becomeLeader() {
        precondition(role == .candidate)
        role = .leader
        leader = id
        resetVolatile()
        for peer in voters where peer != id {
            progress[peer] = Progress(next: log.lastIndex + 1, maxInflight: config.maxInflightMessages)
        }
        // §8 / §5.4.2: a leader commits an entry of its own term at once, which commits
        // everything before it; until then it cannot serve ReadIndex.
        if !faults.skipNoopOnElection {
            log.append(Entry(term: term, index: log.lastIndex + 1, kind: .noop))
        }
        broadcastPending = true
    }

    // MARK: - Input: messages

    /// Handles one message from a peer. Messages not addressed to this node are ignored.
    public func step(_ message: Message) {
        guard message.to == id, message.from != id else { return }
        if message.term > term {
            if message.type == .vote || message.type == .preVote {
                // Thesis §4.2.3 / §6.2: while a leader is known and recently heard from, ignore
                // disruptive vote requests (unless this is a leadership transfer).
                let inLease = config.checkQuorum && leader != nil && electionElapsed < config.electionTicks
                if inLease && !message.transfer { return }
            }
            switch message.type {
            case .preVote:
                break // A pre-vote never changes our term.
            case .preVoteResponse where !message.reject:
                break // Granted pre-votes carry the proposed term, not a real one.
            case .append, .heartbeat, .snapshot:
                // Figure 2, All servers: "If RPC request or response contains term T >
                // currentTerm: set currentTerm = T, convert to follower."
                becomeFollower(term: message.term, leader: message.from)
            default:
                becomeFollower(term: message.term, leader: nil)
            }
        } else if message.term < term {
            if (config.checkQuorum || config.preVote) && (message.type == .heartbeat || message.type == .append) {
                // A stale leader (e.g. back from a partition) learns the current term from this
                // reply and steps down; without it, PreVote could leave it stuck (etcd raft).
                send(Message(from: id, to: message.from, term: term, type: .appendResponse))
            } else if message.type == .preVote {
                send(Message(from: id, to: message.from, term: term, type: .preVoteResponse, reject: true))
            }
            // Figure 2, AppendEntries/RequestVote step 1: reply false if term < currentTerm.
            return
        }

        switch message.type {
        case .vote, .preVote:
            handleVoteRequest(message)
            return
        default:
            break
        }

        switch role {
        case .leader: stepLeader(message)
        case .candidate, .preCandidate: stepCandidate(message)
        case .follower: stepFollower(message)
        }
    }

    /// Figure 2, RequestVote receiver: grant if votedFor is null or candidateId and the
    /// candidate's log is at least as up-to-date (§5.4.1).
    private func handleVoteRequest(_ message: Message) {
        let responseType: MessageType = message.type == .vote ? .voteResponse : .preVoteResponse
        let canVote = votedFor == message.from
            || (votedFor == nil && leader == nil)
            || (message.type == .preVote && message.term > term)
            || (faults.voteTwicePerTerm && message.type == .vote && role != .leader)
        if canVote && voters.contains(message.from)
            && log.isUpToDate(lastIndex: message.index, lastTerm: message.logTerm) {
            send(Message(from: id, to: message.from, term: message.term, type: responseType))
            if message.type == .vote {
                electionElapsed = 0
                if !(faults.voteTwicePerTerm && votedFor != nil) { votedFor = message.from }
            }
        } else {
            send(Message(from: id, to: message.from, term: term, type: responseType, reject: true))
        }
    }

    private func stepCandidate(_ message: Message) {
        switch message.type {
        case .append, .heartbeat, .snapshot:
            // Figure 2, Candidates: "If AppendEntries RPC received from new leader: convert to follower."
            becomeFollower(term: message.term, leader: message.from)
            stepFollower(message)
        case .voteResponse where role == .candidate,
             .preVoteResponse where role == .preCandidate:
            if votes[message.from] == nil { votes[message.from] = !message.reject }
            _ = tallyVotes()
        default:
            break
        }
    }

    private func stepFollower(_ message: Message) {
        switch message.type {
        case .append:
            electionElapsed = 0
            leader = message.from
            handleAppend(message)
        case .heartbeat:
            electionElapsed = 0
            leader = message.from
            handleHeartbeat(message)
        case .snapshot:
            electionElapsed = 0
            leader = message.from
            handleSnapshotChunk(message)
        case .timeoutNow:
            // Thesis §3.10: the transferee starts an election at once.
            campaign(transfer: true)
        default:
            break
        }
    }

    // MARK: - Follower: replication

    /// Figure 2, AppendEntries receiver.
    private func handleAppend(_ message: Message) {
        if message.index < log.committed {
            // Everything up to commit already matches the leader (Log Matching); say so.
            send(Message(from: id, to: message.from, term: term, type: .appendResponse, index: log.committed))
            return
        }
        // Step 2: reply false if log doesn't contain an entry at prevLogIndex whose term matches.
        let consistent = log.matchTerm(message.index, message.logTerm)
            || (faults.skipConsistencyCheck && message.index <= log.lastIndex && message.index >= log.snapshotIndex)
        if !consistent {
            let hint = log.findConflictByTerm(index: min(message.index, log.lastIndex), term: message.logTerm)
            send(Message(from: id, to: message.from, term: term, type: .appendResponse,
                         index: message.index, reject: true, hintIndex: hint.index, hintTerm: hint.term))
            return
        }
        // Steps 3-4: delete conflicting entries and all that follow; append new ones.
        let lastNewIndex = message.index + UInt64(message.entries.count)
        let conflict = log.findConflict(message.entries)
        if conflict != 0 && conflict > log.committed {
            let offset = Int(conflict - message.entries[0].index)
            log.truncateAndAppend(message.entries[offset...])
        }
        // Step 5: commitIndex = min(leaderCommit, index of last new entry).
        commit(to: min(message.commit, lastNewIndex))
        send(Message(from: id, to: message.from, term: term, type: .appendResponse, index: lastNewIndex))
    }

    private func handleHeartbeat(_ message: Message) {
        // The leader sends min(match, commit), so this never exceeds what we hold in its term.
        commit(to: min(message.commit, log.lastIndex))
        send(Message(from: id, to: message.from, term: term, type: .heartbeatResponse, context: message.context))
    }

    private func commit(to index: UInt64) {
        if index > log.committed {
            precondition(index <= log.lastIndex || faults != RaftFaults(), "commit beyond log")
            log.committed = min(index, log.lastIndex)
        }
    }

    /// Figure 13, InstallSnapshot receiver, with chunks acknowledged one at a time.
    private func handleSnapshotChunk(_ message: Message) {
        guard let chunk = message.snapshot else { return }
        func ack(_ offset: UInt64) {
            send(Message(from: id, to: message.from, term: term, type: .snapshotResponse,
                         logTerm: chunk.term, index: chunk.index, hintIndex: offset))
        }
        if chunk.index <= log.committed {
            incomingSnapshot = nil
            send(Message(from: id, to: message.from, term: term, type: .appendResponse, index: log.committed))
            return
        }
        if chunk.totalBytes > UInt64(config.maxSnapshotBytes) { return }
        if let current = incomingSnapshot, current.chunk.index == chunk.index, current.chunk.term == chunk.term,
           current.chunk.totalBytes == chunk.totalBytes {
            if chunk.offset != UInt64(current.data.count) {
                ack(UInt64(current.data.count))
                return
            }
        } else {
            if chunk.offset != 0 {
                incomingSnapshot = nil
                ack(0)
                return
            }
            incomingSnapshot = (chunk, [])
            incomingSnapshot!.data.reserveCapacity(Int(chunk.totalBytes))
        }
        incomingSnapshot!.data.append(contentsOf: chunk.data)
        let received = UInt64(incomingSnapshot!.data.count)
        if received < chunk.totalBytes {
            ack(received)
            return
        }
        let data = incomingSnapshot!.data
        incomingSnapshot = nil
        guard received == chunk.totalBytes else { return }
        let snapshot = Snapshot(index: chunk.index, term: chunk.term, voters: chunk.voters, data: data)
        // Figure 13 step 6: if an entry has the snapshot's index and term, keep the log after it.
        if log.matchTerm(snapshot.index, snapshot.term) {
            commit(to: snapshot.index)
        } else {
            // Step 7: discard the entire log; step 8: reset the state machine from the snapshot.
            log.restore(index: snapshot.index, term: snapshot.term)
            latestSnapshot = snapshot
            pendingReceivedSnapshot = snapshot
            pendingCompaction = nil
            if !snapshot.voters.isEmpty { voters = snapshot.voters }
        }
        send(Message(from: id, to: message.from, term: term, type: .appendResponse, index: snapshot.index))
    }

    // MARK: - Leader

    private func stepLeader(_ message: Message) {
        guard var pr = progress[message.from] else { return }
        pr.recentActive = true
        progress[message.from] = pr
        switch message.type {
        case .appendResponse:
            handleAppendResponse(message)
        case .heartbeatResponse:
            handleHeartbeatResponse(message)
        case .snapshotResponse:
            guard pr.state == .snapshot, message.index == pr.pendingSnapshotIndex else { return }
            pr.snapshotOffset = message.hintIndex
            progress[message.from] = pr
            sendSnapshotChunk(to: message.from)
        default:
            break
        }
    }

    private func handleAppendResponse(_ message: Message) {
        let peer = message.from
        guard var pr = progress[peer] else { return }
        if message.reject {
            // Fast backtracking: skip every entry of a conflicting term at once.
            var nextProbe = message.hintIndex
            if message.hintTerm > 0 {
                nextProbe = log.findConflictByTerm(index: message.hintIndex, term: message.hintTerm).index
            }
            if pr.maybeDecrease(rejected: message.index, matchHint: nextProbe) {
                if pr.state == .replicate { pr.becomeProbe() }
                progress[peer] = pr
                sendAppend(to: peer, sendIfEmpty: true)
            }
            return
        }
        let wasPaused = pr.isPaused
        guard pr.maybeUpdate(message.index) else {
            progress[peer] = pr
            return
        }
        switch pr.state {
        case .probe:
            pr.becomeReplicate()
        case .snapshot:
            if pr.match >= pr.pendingSnapshotIndex {
                pr.becomeProbe()
                pr.becomeReplicate()
            }
        case .replicate:
            pr.freeInflight(through: message.index)
        }
        progress[peer] = pr
        if maybeCommit() {
            noteCommitAdvanced()
        } else if wasPaused {
            // It may have missed the commit index while paused.
            sendAppend(to: peer, sendIfEmpty: true)
        }
        var rounds = 0
        while rounds < config.maxInflightMessages && sendAppend(to: peer, sendIfEmpty: false) { rounds += 1 }
        // Thesis §3.10: once the transferee is caught up, tell it to campaign now.
        if peer == leadTransferee && progress[peer]!.match == log.lastIndex {
            send(Message(from: id, to: peer, term: term, type: .timeoutNow))
        }
    }

    private func handleHeartbeatResponse(_ message: Message) {
        let peer = message.from
        guard var pr = progress[peer] else { return }
        if pr.state == .probe { pr.probeSent = false }
        if pr.state == .replicate && pr.isPaused { pr.inflight.removeFirst() }
        progress[peer] = pr
        // Entries may have been lost: an (even empty) append makes the follower reveal its position.
        if pr.match < log.lastIndex { sendAppend(to: peer, sendIfEmpty: true) }
        if message.context != 0 { acknowledgeRead(context: message.context, from: peer) }
    }

    /// Figure 2, Leaders: "If there exists an N such that N > commitIndex, a majority of
    /// matchIndex[i] >= N, and log[N].term == currentTerm: set commitIndex = N" (§5.4.2).
    @discardableResult
    private func maybeCommit() -> Bool {
        var matches: [UInt64] = []
        matches.reserveCapacity(voters.count)
        for voter in voters {
            // The leader counts itself only for entries that are durable (DESIGN §3).
            matches.append(voter == id ? log.persistedLast : (progress[voter]?.match ?? 0))
        }
        matches.sort(by: >)
        let candidate = matches[quorum - 1]
        guard candidate > log.committed else { return false }
        guard faults.commitPreviousTermByCounting || log.term(at: candidate) == term else { return false }
        log.committed = candidate
        committedInTerm()
        return true
    }

    /// The leader's commit index advanced. Followers learn it from the next AppendEntries, which
    /// carries it; when none is due, an empty one goes out on the next tick rather than at once.
    /// Followers need the commit index only to apply (clients of this system are answered by
    /// the leader, and follower reads go through the leader's ReadIndex), so telling them at
    /// once bought nothing and cost two messages and two responses per commit — half the Raft
    /// messages of a lone client's acquire, each a wake-up on a machine shared by every node.
    private func noteCommitAdvanced() {
        commitNoticePending = true
    }

    private func committedInTerm() {
        guard role == .leader, log.term(at: log.committed) == term, !readsAwaitingCommit.isEmpty else { return }
        let waiting = readsAwaitingCommit
        readsAwaitingCommit = []
        for context in waiting { startRead(context: context) }
    }

    /// Sends entries from the follower's next index, or a snapshot if they are compacted away.
    /// Returns true if a message was sent.
    @discardableResult
    private func sendAppend(to peer: NodeID, sendIfEmpty: Bool) -> Bool {
        guard var pr = progress[peer], !pr.isPaused else { return false }
        if pr.next > log.lastIndex + 1 { pr.next = log.lastIndex + 1 }
        let prevIndex = pr.next - 1
        guard let prevTerm = log.term(at: prevIndex),
              let entries = log.slice(from: pr.next, maxCount: config.maxEntriesPerMessage,
                                      maxBytes: config.maxBytesPerMessage) else {
            guard let snapshot = latestSnapshot else { return false }
            pr.becomeSnapshot(index: snapshot.index)
            progress[peer] = pr
            sendSnapshotChunk(to: peer)
            return true
        }
        if entries.isEmpty && !sendIfEmpty { return false }
        send(Message(from: id, to: peer, term: term, type: .append, logTerm: prevTerm, index: prevIndex,
                     entries: entries, commit: log.committed))
        if let last = entries.last {
            pr.sentEntries(lastIndex: last.index)
        } else if pr.state == .probe {
            pr.probeSent = true
        }
        progress[peer] = pr
        return true
    }

    private func sendSnapshotChunk(to peer: NodeID) {
        guard let pr = progress[peer], pr.state == .snapshot, let snapshot = latestSnapshot,
              snapshot.index == pr.pendingSnapshotIndex else {
            if progress[peer]?.state == .snapshot {
                // The snapshot changed under the transfer: start over by probing.
                progress[peer]!.pendingSnapshotIndex = 0
                progress[peer]!.becomeProbe()
            }
            return
        }
        let total = UInt64(snapshot.data.count)
        let start = min(pr.snapshotOffset, total)
        let end = min(start + UInt64(config.snapshotChunkBytes), total)
        let chunk = SnapshotChunk(index: snapshot.index, term: snapshot.term, voters: snapshot.voters,
                                  totalBytes: total, offset: start,
                                  data: Array(snapshot.data[Int(start)..<Int(end)]))
        progress[peer]!.snapshotHeartbeatsWithoutAck = 0
        send(Message(from: id, to: peer, term: term, type: .snapshot, snapshot: chunk))
    }

    private func broadcastHeartbeat() {
        let context = pendingReads.last?.context ?? 0
        for peer in voters where peer != id {
            guard let pr = progress[peer] else { continue }
            send(Message(from: id, to: peer, term: term, type: .heartbeat,
                         commit: min(pr.match, log.committed), context: context))
            // A snapshot chunk or probe that was lost is re-sent on the heartbeat clock.
            if pr.state == .snapshot {
                progress[peer]!.snapshotHeartbeatsWithoutAck += 1
                if progress[peer]!.snapshotHeartbeatsWithoutAck >= 2 { sendSnapshotChunk(to: peer) }
            }
        }
    }

    private func flushBroadcast() {
        guard broadcastPending, role == .leader else {
            broadcastPending = false
            return
        }
        broadcastPending = false
        commitNoticePending = false
        for peer in voters where peer != id {
            var rounds = 0
            var sendEmpty = true
            while rounds < config.maxInflightMessages && sendAppend(to: peer, sendIfEmpty: sendEmpty) {
                rounds += 1
                sendEmpty = false
            }
        }
    }

    // MARK: - Client operations

    /// Figure 2, Leaders: "If command received from client: append entry to local log,
    /// respond after entry applied to state machine." Messages go out with the next Ready,
    /// so proposals made between two ready() calls share AppendEntries messages.
    public func propose(_ data: [UInt8]) -> ProposeResult {
        guard role == .leader else { return .notLeader(leader: leader) }
        if leadTransferee != nil { return .dropped }
        if log.lastIndex - log.committed >= UInt64(config.maxUncommittedEntries) { return .dropped }
        let entry = Entry(term: term, index: log.lastIndex + 1, kind: .normal, data: data)
        log.append(entry)
        broadcastPending = true
        if voters.count == 1 { maybeCommit() }
        return .accepted(index: entry.index)
    }

    /// Thesis §6.4 ReadIndex. Returns false if this node cannot serve it (not leader, transfer
    /// in progress, too many pending). Otherwise a `ReadState(context, index)` appears in a
    /// later Ready once a quorum confirmed leadership; if leadership is lost first, it never
    /// appears (the caller times out). `context` must be non-zero and unique among pending reads.
    @discardableResult
    public func readIndex(context: UInt64) -> Bool {
        guard context != 0, role == .leader, leadTransferee == nil,
              pendingReads.count + readsAwaitingCommit.count < config.maxPendingReads else { return false }
        if log.term(at: log.committed) != term {
            readsAwaitingCommit.append(context)
        } else {
            startRead(context: context)
        }
        return true
    }

    private func startRead(context: UInt64) {
        if voters.count == 1 {
            readStates.append(ReadState(context: context, index: log.committed))
            return
        }
        pendingReads.append(PendingRead(context: context, index: log.committed, acks: [id]))
        let pr = progress
        for peer in voters where peer != id {
            send(Message(from: id, to: peer, term: term, type: .heartbeat,
                         commit: min(pr[peer]?.match ?? 0, log.committed), context: context))
        }
    }

    private func acknowledgeRead(context: UInt64, from peer: NodeID) {
        guard let position = pendingReads.firstIndex(where: { $0.context == context }) else { return }
        pendingReads[position].acks.insert(peer)
        guard pendingReads[position].acks.count >= quorum else { return }
        // A heartbeat round confirms every read registered before it too.
        for read in pendingReads[...position] {
            readStates.append(ReadState(context: read.context, index: read.index))
        }
        pendingReads.removeFirst(position + 1)
    }

    /// Thesis §3.10 leadership transfer: stop accepting proposals, bring `target` up to date,
    /// then send TimeoutNow. `nil` picks the follower with the highest match index.
    public func transferLeadership(to target: NodeID?) {
        guard role == .leader else { return }
        let chosen = target ?? voters.filter { $0 != id }.max { lhs, rhs in
            let left = progress[lhs]?.match ?? 0
            let right = progress[rhs]?.match ?? 0
            return left != right ? left < right : lhs > rhs
        }
        guard let transferee = chosen, transferee != id, progress[transferee] != nil else { return }
        if leadTransferee == transferee { return }
        leadTransferee = transferee
        electionElapsed = 0 // the transfer times out after one election timeout
        if progress[transferee]!.match == log.lastIndex {
            send(Message(from: id, to: transferee, term: term, type: .timeoutNow))
        } else {
            sendAppend(to: transferee, sendIfEmpty: true)
        }
    }

    /// The application took a snapshot of its state at `index` (<= applied index). The log
    /// through `index` is discarded; the snapshot is handed back in `Ready.compactedSnapshot`.
    public func compact(upTo index: UInt64, snapshotData: [UInt8]) {
        guard index > log.snapshotIndex, index <= log.applied, let snapshotTerm = log.term(at: index) else { return }
        log.compact(through: index)
        let snapshot = Snapshot(index: index, term: snapshotTerm, voters: voters, data: snapshotData)
        latestSnapshot = snapshot
        pendingCompaction = snapshot
    }

    // MARK: - Output

    private func send(_ message: Message) {
        messages.append(message)
    }

    private var hardState: HardState { HardState(term: term, vote: votedFor, commit: log.committed) }

    public var hasReady: Bool {
        if broadcastPending && role == .leader { return true }
        return !messages.isEmpty || !readStates.isEmpty || hardState != lastHardState
            || log.unstableFrom <= log.lastIndex || log.applyingThrough < log.committed
            || pendingReceivedSnapshot != nil || pendingCompaction != nil
            || role != lastReportedRole || leader != lastReportedLeader
    }

    /// Collects everything to persist, send and apply. Call `advance` when done.
    ///
    /// `ready()` may be called again before the earlier Readies are advanced (pipelined writes),
    /// on these terms: Readies are persisted in the order they were handed out, each one's
    /// messages are sent only after it and every earlier Ready were persisted, and `advance` is
    /// called in the same order. A later Ready's messages may speak for state an earlier one
    /// carries (an acknowledgement covers entries handed out before), which is why the order
    /// is the whole contract.
    public func ready() -> Ready {
        flushBroadcast()
        var rd = Ready()
        let current = hardState
        if current != lastHardState {
            rd.hardState = current
            lastHardState = current
        }
        rd.snapshot = pendingReceivedSnapshot
        rd.compactedSnapshot = pendingCompaction
        pendingReceivedSnapshot = nil
        pendingCompaction = nil
        rd.entries = log.unstableEntries()
        log.unstableFrom = log.lastIndex + 1
        rd.messages = messages
        messages = []
        if log.applyingThrough < log.committed {
            let from = max(log.applyingThrough + 1, log.firstIndex)
            rd.committedEntries = log.entries(from: from, through: log.committed)
            log.applyingThrough = log.committed
        }
        rd.readStates = readStates
        readStates = []
        rd.role = role
        rd.leader = leader
        rd.roleChanged = role != lastReportedRole || leader != lastReportedLeader
        lastReportedRole = role
        lastReportedLeader = leader
        outstandingReadies.append((log.applyingThrough, rd.entries.last))
        return rd
    }

    /// Committed entries not yet handed out, to apply now — also while a Ready is outstanding
    /// (its write in flight). A committed entry is durable on a majority, so applying it never
    /// waits for this node's own write; this takes a persist round trip off the path from a
    /// quorum's acknowledgement to the client's answer. Call it only after the outstanding
    /// Ready's snapshot (if any) was restored; empty while a received snapshot awaits its Ready.
    /// The entries are not handed out again by `ready()`. The caller applies them before it
    /// calls into the core again, so they count as applied at once (`compact` may then cover
    /// them; waiting for the outstanding Ready's `advance` would starve compaction under load).
    public func takeCommittedEntries() -> [Entry] {
        guard pendingReceivedSnapshot == nil, log.applyingThrough < log.committed else { return [] }
        let from = max(log.applyingThrough + 1, log.firstIndex)
        let entries = log.entries(from: from, through: log.committed)
        log.applyingThrough = log.committed
        log.applied = max(log.applied, log.committed)
        return entries
    }

    /// Acknowledges that `ready`, the oldest Ready not yet advanced, was persisted, sent and
    /// applied.
    public func advance(_ ready: Ready) {
        guard !outstandingReadies.isEmpty else {
            preconditionFailure("advance() without ready()")
        }
        let outstanding = outstandingReadies.removeFirst()
        if let snapshot = ready.snapshot {
            log.persistedLast = max(log.persistedLast, min(snapshot.index, log.lastIndex))
        }
        if let last = outstanding.lastEntry, log.matchTerm(last.index, last.term) {
            log.persistedLast = max(log.persistedLast, last.index)
        }
        log.applied = max(log.applied, min(outstanding.applyThrough, log.applyingThrough))
        if role == .leader && maybeCommit() {
            noteCommitAdvanced()
        }
    }
}
