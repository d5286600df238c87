// Raft core: public value types.
//
// Everything in this module is pure: no clock, no I/O, no global random source. Time moves
// only through `RaftNode.tick()`, randomness comes from the seed given to `RaftNode.init`.

/// A node's name; it is also its address on the bus.
public typealias NodeID = String

// MARK: - Configuration

/// Static configuration of one node. The voter set comes from here (or from the latest
/// snapshot on restart); membership changes would arrive later as `EntryKind.config` entries.
public struct RaftConfig: Sendable, Equatable {
    /// This node.
    public var id: NodeID
    /// Every voting member, including `id` (a node not in the list never campaigns).
    public var voters: [NodeID]
    /// T: a follower campaigns after a randomized timeout in [T, 2T) ticks without a leader.
    public var electionTicks: Int
    /// A leader sends heartbeats every `heartbeatTicks` ticks (must be < electionTicks).
    public var heartbeatTicks: Int
    /// Bound on entries in one AppendEntries message.
    public var maxEntriesPerMessage: Int
    /// Bound on entry payload bytes in one AppendEntries message (at least one entry is
    /// always sent, whatever its size).
    public var maxBytesPerMessage: Int
    /// Bound on AppendEntries messages in flight (unacknowledged) per follower.
    public var maxInflightMessages: Int
    /// PreVote (thesis §9.6): a node asks whether it could win before raising its term.
    public var preVote: Bool
    /// CheckQuorum (thesis §6.2): a leader that has not heard from a majority within an
    /// election timeout steps down; a follower that heard from a leader within one ignores
    /// vote requests (leader lease, thesis §4.2.3).
    public var checkQuorum: Bool
    /// Bound on snapshot bytes per InstallSnapshot chunk.
    public var snapshotChunkBytes: Int
    /// Backpressure: a leader refuses proposals (`.dropped`) while this many entries are
    /// appended but not yet committed.
    public var maxUncommittedEntries: Int
    /// Bound on linearizable reads waiting for a quorum heartbeat round.
    public var maxPendingReads: Int
    /// Bound on the size of a snapshot a follower will accept.
    public var maxSnapshotBytes: Int

    public init(
        id: NodeID,
        voters: [NodeID],
        electionTicks: Int = 10,
        heartbeatTicks: Int = 1,
        maxEntriesPerMessage: Int = 256,
        maxBytesPerMessage: Int = 1 << 20,
        maxInflightMessages: Int = 16,
        preVote: Bool = true,
        checkQuorum: Bool = true,
        snapshotChunkBytes: Int = 64 << 10,
        maxUncommittedEntries: Int = 1 << 16,
        maxPendingReads: Int = 4096,
        maxSnapshotBytes: Int = 1 << 30
    ) {
        self.id = id
        self.voters = voters
        self.electionTicks = electionTicks
        self.heartbeatTicks = heartbeatTicks
        self.maxEntriesPerMessage = maxEntriesPerMessage
        self.maxBytesPerMessage = maxBytesPerMessage
        self.maxInflightMessages = maxInflightMessages
        self.preVote = preVote
        self.checkQuorum = checkQuorum
        self.snapshotChunkBytes = snapshotChunkBytes
        self.maxUncommittedEntries = maxUncommittedEntries
        self.maxPendingReads = maxPendingReads
        self.maxSnapshotBytes = maxSnapshotBytes
    }

    func validate() {
        precondition(!id.isEmpty, "RaftConfig.id must not be empty")
        precondition(electionTicks >= 2, "electionTicks must be >= 2")
        precondition(heartbeatTicks >= 1 && heartbeatTicks < electionTicks,
                     "heartbeatTicks must be in [1, electionTicks)")
        precondition(maxEntriesPerMessage >= 1 && maxBytesPerMessage >= 1)
        precondition(maxInflightMessages >= 1)
        precondition(snapshotChunkBytes >= 1)
        precondition(maxUncommittedEntries >= 1 && maxPendingReads >= 1)
        precondition(Set(voters).count == voters.count, "duplicate voter")
    }
}

// MARK: - Log

public enum EntryKind: UInt8, Sendable {
    /// An application command.
    case normal = 0
    /// The empty entry a new leader appends (Raft §5.4.2 / §8: commit an entry of its term).
    case noop = 1
    /// Reserved for single-server membership changes (thesis §4.1); not yet produced.
    case config = 2
}

public struct Entry: Equatable, Sendable {
    public var term: UInt64
    public var index: UInt64
    public var kind: EntryKind
    public var data: [UInt8]

    public init(term: UInt64, index: UInt64, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }
}

/// The state that must survive a crash (Figure 2, "Persistent state on all servers"),
/// plus the commit index so a restart does not re-derive it from a leader.
public struct HardState: Equatable, Sendable {
    public var term: UInt64
    public var vote: NodeID?
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: NodeID? = nil, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// An application snapshot covering the log up to and including `index`.
public struct Snapshot: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    /// The voter set as of `index`.
    public var voters: [NodeID]
    public var data: [UInt8]

    public init(index: UInt64, term: UInt64, voters: [NodeID], data: [UInt8]) {
        self.index = index
        self.term = term
        self.voters = voters
        self.data = data
    }
}

/// What a restart is built from: exactly what earlier `Ready`s told the caller to persist.
public struct PersistentState: Equatable, Sendable {
    public var hardState: HardState
    public var snapshot: Snapshot?
    /// Log entries after the snapshot, contiguous, in index order. Entries at or below the
    /// snapshot index are tolerated and ignored.
    public var entries: [Entry]

    public init(hardState: HardState, snapshot: Snapshot? = nil, entries: [Entry] = []) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
    }
}

// MARK: - Messages

public enum MessageType: UInt8, Sendable, CaseIterable {
    /// RequestVote RPC (Figure 2). index/logTerm = candidate's last log index/term.
    case vote = 1
    case voteResponse = 2
    /// PreVote (thesis §9.6): same fields as `vote`; term is the term the candidate would use.
    case preVote = 3
    case preVoteResponse = 4
    /// AppendEntries RPC (Figure 2). index/logTerm = prevLogIndex/prevLogTerm.
    case append = 5
    /// index = last index now matching the leader (accepted) or the rejected prevLogIndex;
    /// hintIndex/hintTerm = conflict hint (fast backtracking) when rejected.
    case appendResponse = 6
    /// Empty AppendEntries that only asserts leadership; carries commit and a ReadIndex context.
    case heartbeat = 7
    case heartbeatResponse = 8
    /// One chunk of InstallSnapshot (Figure 13), `snapshot` set.
    case snapshot = 9
    /// Chunk acknowledgement: index/logTerm = snapshot, hintIndex = next byte offset wanted.
    case snapshotResponse = 10
    /// Leadership transfer (thesis §3.10): campaign at once, skipping PreVote and the lease.
    case timeoutNow = 11
}

/// A bounded slice of a snapshot in flight.
public struct SnapshotChunk: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var voters: [NodeID]
    public var totalBytes: UInt64
    public var offset: UInt64
    public var data: [UInt8]

    public init(index: UInt64, term: UInt64, voters: [NodeID], totalBytes: UInt64, offset: UInt64, data: [UInt8]) {
        self.index = index
        self.term = term
        self.voters = voters
        self.totalBytes = totalBytes
        self.offset = offset
        self.data = data
    }

    public var isLast: Bool { offset + UInt64(data.count) == totalBytes }
}

public struct Message: Equatable, Sendable {
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    public var type: MessageType
    /// append: prevLogTerm; vote/preVote: last log term; snapshotResponse: snapshot term.
    public var logTerm: UInt64
    /// append: prevLogIndex; vote/preVote: last log index; appendResponse: see MessageType.
    public var index: UInt64
    public var entries: [Entry]
    /// Leader's commit index (append, heartbeat).
    public var commit: UInt64
    public var reject: Bool
    public var hintIndex: UInt64
    public var hintTerm: UInt64
    /// ReadIndex round identifier echoed by heartbeat responses (0 = none).
    public var context: UInt64
    /// vote: this election was started by TimeoutNow and may break a leader lease.
    public var transfer: Bool
    public var snapshot: SnapshotChunk?

    public init(from: NodeID, to: NodeID, term: UInt64, type: MessageType,
                logTerm: UInt64 = 0, index: UInt64 = 0, entries: [Entry] = [], commit: UInt64 = 0,
                reject: Bool = false, hintIndex: UInt64 = 0, hintTerm: UInt64 = 0,
                context: UInt64 = 0, transfer: Bool = false, snapshot: SnapshotChunk? = nil) {
        self.from = from
        self.to = to
        self.term = term
        self.type = type
        self.logTerm = logTerm
        self.index = index
        self.entries = entries
        self.commit = commit
        self.reject = reject
        self.hintIndex = hintIndex
        self.hintTerm = hintTerm
        self.context = context
        self.transfer = transfer
        self.snapshot = snapshot
    }
}

// MARK: - Outputs

public enum Role: String, Sendable {
    case follower
    case candidate
    case leader
    case preCandidate

    /// The name used in HTTP output: a pre-candidate is reported as "candidate".
    public var externalName: String {
        switch self {
        case .follower: return "follower"
        case .candidate, .preCandidate: return "candidate"
        case .leader: return "leader"
        }
    }
}

/// A linearizable read is safe at `index`: once the application has applied `index`,
/// it may answer the read identified by `context`.
public struct ReadState: Equatable, Sendable {
    public var context: UInt64
    public var index: UInt64

    public init(context: UInt64, index: UInt64) {
        self.context = context
        self.index = index
    }
}

public enum ProposeResult: Equatable, Sendable {
    /// Appended to the leader's log at `index` in the leader's current term (`status.term`
    /// right after the call); it is committed once it appears in `Ready.committedEntries`
    /// with that term, or lost if an entry of another term takes the index.
    case accepted(index: UInt64)
    /// This node is not the leader; `leader` is the last known one.
    case notLeader(leader: NodeID?)
    /// Leader, but refusing now: leadership transfer in progress or too many uncommitted entries.
    case dropped
}

/// One batch of work for the caller, in the etcd raft style. Handle the fields in this order:
///
/// 1. Persist, durably and in this order (or atomically):
///    - `snapshot` if non-nil: store it as the latest snapshot, discard EVERY stored log entry
///      (the log now starts after `snapshot.index`), restore the application state from
///      `snapshot.data`;
///    - `compactedSnapshot` if non-nil: store it as the latest snapshot, then stored entries
///      with index <= its index may be deleted (the application state is unchanged);
///    - `entries`: delete every stored entry with index >= `entries[0].index`, then append;
///    - `hardState` if non-nil (after the entries: a stored commit must never exceed the
///      stored log).
/// 2. Only after step 1 is durable, send `messages`. (Over Redis: the writes and the PUBLISHes
///    queued on the same connection, writes first, execute in that order — enough.)
///    Messages may be lost, duplicated or reordered; Raft tolerates that.
/// 3. Apply `committedEntries` to the state machine in order (skipping `.noop` entries).
///    They are already durable in the log (step 1 or an earlier Ready).
/// 4. Answer `readStates` once the applied index reaches each `index`.
/// 5. Call `advance(ready)`. Exactly one `ready()` may be outstanding; `step`, `tick`,
///    `propose` between `ready()` and `advance()` are allowed, their output comes in the next
///    Ready.
public struct Ready: Sendable {
    public var hardState: HardState?
    public var entries: [Entry]
    public var snapshot: Snapshot?
    public var compactedSnapshot: Snapshot?
    public var messages: [Message]
    public var committedEntries: [Entry]
    public var readStates: [ReadState]
    /// Role and leader after this batch; `roleChanged` if either changed since the last Ready.
    public var role: Role
    public var leader: NodeID?
    public var roleChanged: Bool

    public init(hardState: HardState? = nil, entries: [Entry] = [], snapshot: Snapshot? = nil,
                compactedSnapshot: Snapshot? = nil, messages: [Message] = [],
                committedEntries: [Entry] = [], readStates: [ReadState] = [],
                role: Role = .follower, leader: NodeID? = nil, roleChanged: Bool = false) {
        self.hardState = hardState
        self.entries = entries
        self.snapshot = snapshot
        self.compactedSnapshot = compactedSnapshot
        self.messages = messages
        self.committedEntries = committedEntries
        self.readStates = readStates
        self.role = role
        self.leader = leader
        self.roleChanged = roleChanged
    }
}

public struct RaftStatus: Equatable, Sendable {
    public var id: NodeID
    public var role: Role
    public var term: UInt64
    public var leader: NodeID?
    public var votedFor: NodeID?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastLogIndex: UInt64
    public var lastLogTerm: UInt64
    public var snapshotIndex: UInt64
    /// Leader only: match index per follower.
    public var matchIndex: [NodeID: UInt64]
    public var transferringTo: NodeID?
}
