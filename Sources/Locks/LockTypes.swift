// The vocabulary of the lock table: modes, commands (what Raft commits), events (what the
// table answers), status views, limits and counters.
//
// Everything here is a plain value: no clocks, no I/O. Time enters only inside commands
// (`nowMs`, stamped by the Raft leader when it proposes the command).

// MARK: - Modes

/// How a lock is held. `exclusive` is compatible with nothing; `shared` with `shared`.
public enum LockMode: String, Sendable, Hashable, CaseIterable {
    case exclusive
    case shared

    /// Whether a holder in `self` and a holder in `other` may coexist.
    @inlinable
    public func isCompatible(with other: LockMode) -> Bool {
        self == .shared && other == .shared
    }
}

/// What `GET /lock/status/{resource}` reports as the resource's mode.
public enum ResourceMode: String, Sendable, Hashable, CaseIterable {
    case exclusive
    case shared
    case free
}

// MARK: - Commands (Raft log entries)

/// `POST /lock/acquire`, stamped by the leader.
public struct AcquireCommand: Equatable, Hashable, Sendable {
    public var resource: String
    public var owner: String
    public var mode: LockMode
    /// Lease length; must lie in `LockLimits.ttlMsRange`.
    public var ttlMs: Int64
    /// How long the request may wait in the queue; 0 = answer `conflict` at once when not free.
    public var waitMs: Int64
    /// Client-chosen idempotency key: a retry never makes a second grant or waiter.
    public var requestId: String?
    /// Node id holding the client's HTTP request; echoed in the events that answer it.
    public var origin: String
    /// That node's tag for the request; echoed in the events that answer it.
    public var tag: UInt64
    /// The leader's clock when it proposed the command (unix ms).
    public var nowMs: Int64

    public init(resource: String, owner: String, mode: LockMode = .exclusive, ttlMs: Int64 = 30_000,
                waitMs: Int64 = 0, requestId: String? = nil, origin: String, tag: UInt64, nowMs: Int64) {
        self.resource = resource
        self.owner = owner
        self.mode = mode
        self.ttlMs = ttlMs
        self.waitMs = waitMs
        self.requestId = requestId
        self.origin = origin
        self.tag = tag
        self.nowMs = nowMs
    }
}

/// `POST /lock/release`.
public struct ReleaseCommand: Equatable, Hashable, Sendable {
    public var resource: String
    public var owner: String
    /// When given, it must equal the owner's current token, else `staleToken`.
    public var fencingToken: UInt64?
    public var origin: String
    public var tag: UInt64
    public var nowMs: Int64

    public init(resource: String, owner: String, fencingToken: UInt64? = nil, origin: String, tag: UInt64, nowMs: Int64) {
        self.resource = resource
        self.owner = owner
        self.fencingToken = fencingToken
        self.origin = origin
        self.tag = tag
        self.nowMs = nowMs
    }
}

/// `POST /lock/renew`: the lease becomes `nowMs + ttlMs`.
public struct RenewCommand: Equatable, Hashable, Sendable {
    public var resource: String
    public var owner: String
    public var ttlMs: Int64
    public var origin: String
    public var tag: UInt64
    public var nowMs: Int64

    public init(resource: String, owner: String, ttlMs: Int64, origin: String, tag: UInt64, nowMs: Int64) {
        self.resource = resource
        self.owner = owner
        self.ttlMs = ttlMs
        self.origin = origin
        self.tag = tag
        self.nowMs = nowMs
    }
}

/// The waiting request `(origin, tag)` of `owner` on `resource` is withdrawn (its client went
/// away, or its node's request deadline passed). Only a waiter still attached to exactly this
/// `(origin, tag)` is removed; anything else (already granted, re-attached by a retry) is left
/// alone and no event is produced.
public struct CancelWaitCommand: Equatable, Hashable, Sendable {
    public var resource: String
    public var owner: String
    public var origin: String
    public var tag: UInt64
    public var nowMs: Int64

    public init(resource: String, owner: String, origin: String, tag: UInt64, nowMs: Int64) {
        self.resource = resource
        self.owner = owner
        self.origin = origin
        self.tag = tag
        self.nowMs = nowMs
    }
}

/// One committed command of the lock state machine.
///
/// Every command except `leaderGrace` first brings the table up to its `nowMs`: leases with
/// `expiresAtMs <= nowMs` end (the lock passes on) and waiters with `deadlineMs <= nowMs` time
/// out, in deadline order. `tick` does only that; the leader proposes it when
/// `LockTable.nextDeadlineMs()` is due, so expiry happens even when no other command arrives.
public enum LockCommand: Equatable, Hashable, Sendable {
    case acquire(AcquireCommand)
    case release(ReleaseCommand)
    case renew(RenewCommand)
    case cancelWait(CancelWaitCommand)
    /// Expire due leases and wait deadlines.
    case tick(nowMs: Int64)
    /// Proposed by a newly elected leader before anything else: every lease and wait deadline
    /// becomes `max(current, nowMs + graceMs)` (never shortened), and nothing expires in this
    /// entry. `graceMs` is clamped to `0...LockLimits.graceMsMax`.
    case leaderGrace(nowMs: Int64, graceMs: Int64)

    /// The leader's clock carried by the command.
    public var nowMs: Int64 {
        switch self {
        case .acquire(let command): return command.nowMs
        case .release(let command): return command.nowMs
        case .renew(let command): return command.nowMs
        case .cancelWait(let command): return command.nowMs
        case .tick(let nowMs): return nowMs
        case .leaderGrace(let nowMs, _): return nowMs
        }
    }
}

// MARK: - Events (what the table answers)

/// A lock held by an owner: the body of a 200 answer to `/lock/acquire`.
public struct Grant: Equatable, Hashable, Sendable {
    public var resource: String
    public var owner: String
    public var mode: LockMode
    public var fencingToken: UInt64
    public var expiresAtMs: Int64

    public init(resource: String, owner: String, mode: LockMode, fencingToken: UInt64, expiresAtMs: Int64) {
        self.resource = resource
        self.owner = owner
        self.mode = mode
        self.fencingToken = fencingToken
        self.expiresAtMs = expiresAtMs
    }
}

/// Why a command was refused without changing anything.
public enum LockRejection: String, Sendable, Hashable, CaseIterable {
    /// A name empty, over `LockLimits.nameBytesMax` bytes or holding control characters, or a
    /// number out of range. (The HTTP layer answers 400 before proposing; this is the backstop.)
    case invalidArgument = "invalid_argument"
    /// `LockLimits.resourcesMax` resources are already held or awaited.
    case tooManyResources = "too_many_resources"
    /// The resource already has `LockLimits.entriesPerResourceMax` holders + waiters.
    case resourceFull = "resource_full"
    /// The table already has `LockLimits.entriesMax` holders + waiters in total.
    case tableFull = "table_full"
    /// The owner already waits for this resource under another request (and no matching
    /// `requestId` made this a retry).
    case alreadyWaiting = "already_waiting"
    /// A retry with a `requestId` whose grant has ended since (released, expired): answering
    /// it "granted" again would tell a client it holds what another may hold now.
    case grantEnded = "grant_ended"
}

/// What a committed command produced. Events carrying `(origin, tag)` answer the request that
/// node holds; an origin should ignore events for tags it no longer waits on (for example a
/// command proposed twice). If a `granted` arrives for a request the origin has already
/// answered (its client gave up), the origin should propose a release with that token.
///
/// Every acquire request gets exactly one final answer: `granted`, `conflict`, `timedOut`,
/// `deadlock`, `cancelled`, `superseded` or `rejected`, possibly preceded by `queued`.
public enum LockEvent: Equatable, Hashable, Sendable {
    /// The request holds the lock (immediately, or later as a waiter reaching the front).
    case granted(origin: String, tag: UInt64, requestId: String?, grant: Grant)
    /// The request waits; a later entry answers it.
    case queued(origin: String, tag: UInt64)
    /// Not free and `waitMs` was 0 (409 `conflict`).
    case conflict(origin: String, tag: UInt64)
    /// The wait deadline passed (409 `timeout`).
    case timedOut(origin: String, tag: UInt64)
    /// This wait was chosen as a deadlock victim (409 `deadlock`). `cycle[0]` is the victim;
    /// each owner waits for the next; the last waits for the first.
    case deadlock(origin: String, tag: UInt64, cycle: [String])
    /// The wait was withdrawn by `cancelWait`.
    case cancelled(origin: String, tag: UInt64)
    /// A retry with the same `requestId` re-attached the wait to another `(origin, tag)`;
    /// this older request will get no other answer.
    case superseded(origin: String, tag: UInt64)
    /// Refused; nothing changed.
    case rejected(origin: String, tag: UInt64, reason: LockRejection)
    /// `/lock/release` succeeded.
    case released(origin: String, tag: UInt64)
    /// Release or renew of a lock the owner does not hold (404 `not_held`).
    case notHeld(origin: String, tag: UInt64)
    /// Release with a token that is not the owner's current one (409 `stale_token`).
    case staleToken(origin: String, tag: UInt64)
    /// `/lock/renew` succeeded.
    case renewed(origin: String, tag: UInt64, expiresAtMs: Int64)
    /// A lease ended without release (for logs and metrics; answers nobody).
    case expired(resource: String, owner: String, fencingToken: UInt64)

    /// The node holding the request this event answers (nil for `expired`).
    public var origin: String? {
        switch self {
        case .granted(let origin, _, _, _), .queued(let origin, _), .conflict(let origin, _),
             .timedOut(let origin, _), .deadlock(let origin, _, _), .cancelled(let origin, _),
             .superseded(let origin, _), .rejected(let origin, _, _), .released(let origin, _),
             .notHeld(let origin, _), .staleToken(let origin, _), .renewed(let origin, _, _):
            return origin
        case .expired:
            return nil
        }
    }

    /// The origin's tag of the request this event answers (nil for `expired`).
    public var tag: UInt64? {
        switch self {
        case .granted(_, let tag, _, _), .queued(_, let tag), .conflict(_, let tag),
             .timedOut(_, let tag), .deadlock(_, let tag, _), .cancelled(_, let tag),
             .superseded(_, let tag), .rejected(_, let tag, _), .released(_, let tag),
             .notHeld(_, let tag), .staleToken(_, let tag), .renewed(_, let tag, _):
            return tag
        case .expired:
            return nil
        }
    }

    /// Whether this is a final answer for its request (everything but `queued` and `expired`).
    public var isFinal: Bool {
        switch self {
        case .queued, .expired: return false
        default: return true
        }
    }
}

// MARK: - Status views

/// One holder as `GET /lock/status/{resource}` shows it.
public struct HolderStatus: Equatable, Hashable, Sendable {
    public var owner: String
    public var mode: LockMode
    public var fencingToken: UInt64
    public var expiresAtMs: Int64

    public init(owner: String, mode: LockMode, fencingToken: UInt64, expiresAtMs: Int64) {
        self.owner = owner
        self.mode = mode
        self.fencingToken = fencingToken
        self.expiresAtMs = expiresAtMs
    }
}

/// One waiter, in service order.
public struct WaiterStatus: Equatable, Hashable, Sendable {
    public var owner: String
    public var mode: LockMode
    public var sinceMs: Int64
    /// When the wait times out (not part of the HTTP contract; for diagnostics).
    public var deadlineMs: Int64

    public init(owner: String, mode: LockMode, sinceMs: Int64, deadlineMs: Int64) {
        self.owner = owner
        self.mode = mode
        self.sinceMs = sinceMs
        self.deadlineMs = deadlineMs
    }
}

/// The body of `GET /lock/status/{resource}`.
public struct ResourceStatus: Equatable, Hashable, Sendable {
    public var resource: String
    public var mode: ResourceMode
    /// In grant order.
    public var holders: [HolderStatus]
    /// In service order: waiting upgrades (holders asking for exclusive) first, then FIFO.
    public var waiters: [WaiterStatus]

    public init(resource: String, mode: ResourceMode, holders: [HolderStatus], waiters: [WaiterStatus]) {
        self.resource = resource
        self.mode = mode
        self.holders = holders
        self.waiters = waiters
    }
}

// MARK: - Limits

/// Every bound of the table. Part of the replicated state (stored in snapshots), so every
/// replica applies the same limits; change them only through a fresh table.
public struct LockLimits: Equatable, Hashable, Sendable {
    /// Resources held or awaited at once.
    public var resourcesMax: Int
    /// Holders + waiters on one resource.
    public var entriesPerResourceMax: Int
    /// Holders + waiters in the whole table.
    public var entriesMax: Int
    /// `requestId` records kept for retries (oldest dropped first beyond it).
    public var dedupEntriesMax: Int
    /// How long (log time) a `requestId` record is kept.
    public var dedupRetentionMs: Int64

    public init(resourcesMax: Int = 100_000, entriesPerResourceMax: Int = 1_000, entriesMax: Int = 200_000,
                dedupEntriesMax: Int = 100_000, dedupRetentionMs: Int64 = 86_400_000) {
        self.resourcesMax = resourcesMax
        self.entriesPerResourceMax = entriesPerResourceMax
        self.entriesMax = entriesMax
        self.dedupEntriesMax = dedupEntriesMax
        self.dedupRetentionMs = dedupRetentionMs
    }

    public static let `default` = LockLimits()

    /// Hard ceiling for any count limit (what a snapshot may claim).
    public static let countLimitCeiling = 10_000_000
    /// Names (resource, owner, request id, origin) are 1...256 UTF-8 bytes.
    public static let nameBytesMax = 256
    /// CONTRACT §2.1: ttl_ms in [100, 3600000].
    public static let ttlMsRange: ClosedRange<Int64> = 100...3_600_000
    /// CONTRACT §2.1: wait_ms in [0, 300000].
    public static let waitMsRange: ClosedRange<Int64> = 0...300_000
    /// Upper bound of `leaderGrace`'s grace.
    public static let graceMsMax: Int64 = 3_600_000

    /// A valid origin (node id echoed in events): 1...`nameBytesMax` UTF-8 bytes, any content
    /// (the node validates its own id; this only keeps the table's snapshot restorable).
    public static func isValidOrigin(_ origin: String) -> Bool {
        !origin.isEmpty && origin.utf8.count <= nameBytesMax
    }

    /// Whether `limits` are usable (all positive, below the ceiling).
    public var isValid: Bool {
        let counts = [resourcesMax, entriesPerResourceMax, entriesMax, dedupEntriesMax]
        return counts.allSatisfy { $0 >= 1 && $0 <= LockLimits.countLimitCeiling }
            && dedupRetentionMs >= 0 && dedupRetentionMs <= 365 * 86_400_000
    }

    /// A valid name: 1...`nameBytesMax` UTF-8 bytes, no control characters.
    public static func isValidName(_ name: String) -> Bool {
        var count = 0
        for byte in name.utf8 {
            count += 1
            if count > nameBytesMax || byte < 0x20 || byte == 0x7F { return false }
        }
        guard count > 0 else { return false }
        // C1 control characters (U+0080...U+009F) are two UTF-8 bytes; check scalars only if
        // any non-ASCII byte is present.
        if name.utf8.contains(where: { $0 >= 0x80 }) {
            return !name.unicodeScalars.contains { $0.value >= 0x80 && $0.value <= 0x9F }
        }
        return true
    }
}

// MARK: - Counters

/// Monotonic counters for metrics. Part of the replicated state, so they survive snapshots.
public struct LockCounters: Equatable, Hashable, Sendable {
    /// Acquires granted in their own entry (new grants and immediate upgrades).
    public var grantedImmediately: UInt64 = 0
    /// Waiters granted by a later entry.
    public var grantedAfterWait: UInt64 = 0
    /// Same owner asking again for what it holds (same token, lease extended).
    public var reacquired: UInt64 = 0
    /// Retries answered from a `requestId` record or re-attached to their waiter.
    public var retried: UInt64 = 0
    /// Acquires that started waiting.
    public var queued: UInt64 = 0
    public var conflicts: UInt64 = 0
    public var timeouts: UInt64 = 0
    /// Deadlocks detected (each fails exactly one victim's wait).
    public var deadlocks: UInt64 = 0
    public var cancelled: UInt64 = 0
    public var rejected: UInt64 = 0
    public var leaseExpiries: UInt64 = 0
    public var releases: UInt64 = 0
    public var renewals: UInt64 = 0

    public init() {}

    /// Every counter by a stable name (for the metrics exporter).
    public var all: [(name: String, value: UInt64)] {
        [("granted_immediately", grantedImmediately), ("granted_after_wait", grantedAfterWait),
         ("reacquired", reacquired), ("retried", retried), ("queued", queued), ("conflicts", conflicts),
         ("timeouts", timeouts), ("deadlocks", deadlocks), ("cancelled", cancelled), ("rejected", rejected),
         ("lease_expiries", leaseExpiries), ("releases", releases), ("renewals", renewals)]
    }
}

// MARK: - Errors

/// Why bytes could not be decoded into a command or a table.
public enum LockCodecError: Error, Equatable, Sendable {
    case truncated
    case unsupportedVersion(UInt8)
    case unknownKind(UInt8)
    case invalidValue(String)
    case trailingBytes
    /// The snapshot decoded but describes an impossible table.
    case inconsistent(String)
}
