// MESI coherence as a pure function: (state, event) -> (next state, actions).
//
// One line of one node's cache. The "bus" is Concord's bus (pub/sub plus the per-key directory
// in Redis); "memory" is Redis. The table follows the seed's diagram and CONTRACT §2.3:
//
//   I --PrRd, no other copy--> E  [BusRd]        E --PrWr--> M  [] (silent)
//   I --PrRd, other copies---> S  [BusRd]        S --PrWr--> M  [BusUpgr]
//   I --PrWr-----------------> M  [BusRdX]       M --BusRd--> S [Flush]
//   E --BusRd----------------> S  []             M/E/S --BusRdX / Invalidate--> I (M: [Flush])
//   evicting M --------------> I  [Flush]        (write back before the line goes)
//
// Cases the diagram leaves out, decided conservatively (invalidating never breaks coherence, it
// only costs a miss; writing back the newest copy never loses an acknowledged write):
//   - snooped BusUpgr while E or M: impossible in a correct run (only S holders upgrade, and S
//     excludes E/M); handled like BusRdX: go to I, M writes back first since it holds the
//     newest value and the upgrader's copy is older.
//   - snooped Flush (another node wrote its M copy back) while E, S or M: another node owned the
//     line more recently than our copy, so ours is superseded: go to I with no write-back (a
//     write-back would clobber the newer value). The runtime drops bus messages whose version
//     is not newer than its line's before calling this, so only a genuinely newer Flush gets
//     here.
//   - processor read hits (E, S, M) ignore the "other copies" flag: no bus traffic on a hit.
//   - every snooped event and eviction on I is a no-op.

/// A line's MESI state. Raw values are the letters `/cache/read` and `/cache/status` show.
public enum MESIState: String, Sendable, Hashable, CaseIterable, Codable {
    /// Modified: the only valid copy, newer than memory (if dirty).
    case M
    /// Exclusive: the only cached copy, equal to memory.
    case E
    /// Shared: one of possibly several copies, equal to memory.
    case S
    /// Invalid: no usable copy.
    case I

    /// Holds a value that may be read locally (M, E, S).
    public var isValid: Bool { self != .I }
    /// May be written without telling anyone (M, E).
    public var isExclusive: Bool { self == .M || self == .E }
}

/// What happens to a line: the processor side (this node's own reads and writes), the snooped
/// side (another node's bus transactions), and local eviction.
public enum MESIEvent: Sendable, Hashable, CustomStringConvertible {
    /// PrRd: this node reads. `otherCopies`: whether any other node holds the line (the
    /// directory's answer to BusRd); it decides E or S on a miss and is ignored on a hit.
    case processorRead(otherCopies: Bool)
    /// PrWr: this node writes.
    case processorWrite
    /// Snooped BusRd: another node reads the line.
    case busRead
    /// Snooped BusRdX: another node reads the line intending to modify it (write miss).
    case busReadExclusive
    /// Snooped BusUpgr: another node upgrades its S copy to M (write hit on S).
    case busUpgrade
    /// Snooped Flush: another node wrote its M copy back to memory.
    case flush
    /// Invalidate: drop the copy (DELETE /cache/invalidate, delete, or lost bus subscription).
    case invalidate
    /// Evict: the local LRU drops the line.
    case evict

    /// Every distinct event, for exhaustive tests and tools.
    public static let allEvents: [MESIEvent] = [
        .processorRead(otherCopies: false), .processorRead(otherCopies: true), .processorWrite,
        .busRead, .busReadExclusive, .busUpgrade, .flush, .invalidate, .evict,
    ]

    /// True for another node's bus transactions (BusRd, BusRdX, BusUpgr, Flush).
    public var isSnooped: Bool {
        switch self {
        case .busRead, .busReadExclusive, .busUpgrade, .flush: return true
        case .processorRead, .processorWrite, .invalidate, .evict: return false
        }
    }

    public var description: String {
        switch self {
        case .processorRead(let otherCopies): return otherCopies ? "PrRd(shared)" : "PrRd(alone)"
        case .processorWrite: return "PrWr"
        case .busRead: return "BusRd"
        case .busReadExclusive: return "BusRdX"
        case .busUpgrade: return "BusUpgr"
        case .flush: return "Flush"
        case .invalidate: return "Invalidate"
        case .evict: return "Evict"
        }
    }
}

/// What the node must do for a transition, in order.
public enum MESIAction: String, Sendable, Hashable, CaseIterable, Codable {
    /// Issue BusRd: fetch the line for reading (registers this node as a sharer).
    case busRead = "BusRd"
    /// Issue BusRdX: fetch the line for writing; every other copy is invalidated.
    case busReadExclusive = "BusRdX"
    /// Issue BusUpgr: invalidate every other copy of a line already held in S.
    case busUpgrade = "BusUpgr"
    /// Flush: write the line's value back to memory (Redis) before the state change takes effect.
    /// Needed only if the line is dirty: a write-through M line is already in Redis.
    case flush = "Flush"
}

/// The MESI transition of one line. An empty action list means "nothing to do" (no bus traffic).
public func mesiTransition(_ state: MESIState, _ event: MESIEvent) -> (MESIState, [MESIAction]) {
    switch state {
    case .I:
        switch event {
        case .processorRead(otherCopies: false): return (.E, [.busRead])
        case .processorRead(otherCopies: true): return (.S, [.busRead])
        case .processorWrite: return (.M, [.busReadExclusive])
        case .busRead, .busReadExclusive, .busUpgrade, .flush, .invalidate, .evict: return (.I, [])
        }
    case .E:
        switch event {
        case .processorRead: return (.E, [])
        case .processorWrite: return (.M, [])  // silent: no other copy exists
        case .busRead: return (.S, [])  // clean: memory already has the value
        case .busReadExclusive, .busUpgrade, .flush, .invalidate, .evict: return (.I, [])
        }
    case .S:
        switch event {
        case .processorRead: return (.S, [])
        case .processorWrite: return (.M, [.busUpgrade])
        case .busRead: return (.S, [])
        case .busReadExclusive, .busUpgrade, .flush, .invalidate, .evict: return (.I, [])
        }
    case .M:
        switch event {
        case .processorRead, .processorWrite: return (.M, [])
        case .busRead: return (.S, [.flush])
        case .busReadExclusive, .busUpgrade, .invalidate, .evict: return (.I, [.flush])
        case .flush: return (.I, [])  // superseded by a newer owner's write-back
        }
    }
}
