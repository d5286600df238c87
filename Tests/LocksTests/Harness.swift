import XCTest
import Locks

/// Drives a `LockTable` the way the Raft driver does: consecutive log indexes, a leader clock
/// stamped into every command, one tag per request.
final class Harness {
    var table: LockTable
    var index: UInt64 = 0
    var now: Int64 = 1_000_000
    var nextTag: UInt64 = 0
    let origin = "n1"

    init(limits: LockLimits = .default) {
        table = LockTable(limits: limits)
    }

    func apply(_ command: LockCommand) -> [LockEvent] {
        index += 1
        let events = table.apply(command, index: index)
        let problems = table.invariantViolations(checkCycles: true)
        XCTAssertEqual(problems, [], "invariants after \(command)")
        return events
    }

    func newTag() -> UInt64 {
        nextTag += 1
        return nextTag
    }

    @discardableResult
    func acquire(_ resource: String, _ owner: String, _ mode: LockMode = .exclusive, ttl: Int64 = 30_000,
                 wait: Int64 = 0, requestId: String? = nil, origin: String? = nil,
                 tag: UInt64? = nil) -> (tag: UInt64, events: [LockEvent]) {
        let tag = tag ?? newTag()
        let events = apply(.acquire(AcquireCommand(resource: resource, owner: owner, mode: mode, ttlMs: ttl,
                                                   waitMs: wait, requestId: requestId, origin: origin ?? self.origin,
                                                   tag: tag, nowMs: now)))
        return (tag, events)
    }

    @discardableResult
    func release(_ resource: String, _ owner: String, token: UInt64? = nil) -> (tag: UInt64, events: [LockEvent]) {
        let tag = newTag()
        let events = apply(.release(ReleaseCommand(resource: resource, owner: owner, fencingToken: token,
                                                   origin: origin, tag: tag, nowMs: now)))
        return (tag, events)
    }

    @discardableResult
    func renew(_ resource: String, _ owner: String, ttl: Int64) -> (tag: UInt64, events: [LockEvent]) {
        let tag = newTag()
        let events = apply(.renew(RenewCommand(resource: resource, owner: owner, ttlMs: ttl, origin: origin,
                                               tag: tag, nowMs: now)))
        return (tag, events)
    }

    @discardableResult
    func cancel(_ resource: String, _ owner: String, tag: UInt64, origin: String? = nil) -> [LockEvent] {
        apply(.cancelWait(CancelWaitCommand(resource: resource, owner: owner, origin: origin ?? self.origin,
                                            tag: tag, nowMs: now)))
    }

    @discardableResult
    func tick(advance: Int64) -> [LockEvent] {
        now += advance
        return apply(.tick(nowMs: now))
    }

    /// The grant in `events` answering `tag`.
    func grant(_ events: [LockEvent], tag: UInt64) -> Grant? {
        for event in events {
            if case .granted(_, let eventTag, _, let grant) = event, eventTag == tag { return grant }
        }
        return nil
    }

    func holders(_ resource: String) -> [String] {
        table.status(resource).holders.map(\.owner)
    }

    func waiters(_ resource: String) -> [String] {
        table.status(resource).waiters.map(\.owner)
    }
}

/// SplitMix64: a tiny seeded generator so property tests reproduce from their seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
