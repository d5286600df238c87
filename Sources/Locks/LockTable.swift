// The lock table: a pure, deterministic state machine applied to Raft-committed commands.
//
// Rules (CONTRACT §2.1):
// - exclusive is compatible with nothing, shared with shared.
// - Fencing tokens strictly increase over every grant ever made: a grant by the entry at log
//   index i gets max(i, lastToken + 1) (one entry may grant several shared waiters).
// - Waiters are served FIFO per resource; a shared request never overtakes a queued exclusive
//   one. Exception, as in classic lock managers (Gray & Reuter): a waiting upgrade (a shared
//   holder asking for exclusive) is served before new requests, because those new requests
//   wait for the upgrader's shared hold anyway — serving them first would deadlock.
// - The same owner asking again for what it holds gets the same grant (same token) with the
//   lease extended to max(current, now + ttl). A sole shared holder upgrades to exclusive at
//   once (new token); otherwise the upgrade waits.
// - Leases end at expiresAtMs unless renewed; the lock then passes to the next waiters.
//   Time comes only from commands: every command but `leaderGrace` first expires what is due
//   at its nowMs. `leaderGrace` never shortens a lease or a wait.
// - A retry with the same requestId (same resource and owner) never makes a second grant or
//   waiter: a granted request gets its grant back (lease extended if still held with that
//   token), a waiting request's waiter is re-attached to the retry's (origin, tag).
// - Deadlock: owners form a wait-for graph (waiting owner -> every other holder of the
//   resource). When a new wait, or a grant to an owner that waits elsewhere, closes a cycle,
//   the youngest owner of the cycle (newest first acquisition among its current holds and
//   waits) is the victim: its wait in the cycle fails with `deadlock`; its holds stay.
// - Every collection is bounded by `LockLimits`; beyond a bound the command is rejected.
//
// Determinism: no output depends on hash order. Anything iterated to produce events, cycles or
// snapshots is sorted or kept in an explicit order.

// MARK: - State

/// A current grant.
struct Holder: Equatable, Sendable {
    var owner: String
    var mode: LockMode
    var fencingToken: UInt64
    var expiresAtMs: Int64
    /// Log index at which the owner first asked for this hold (for the deadlock victim's age).
    var acquiredIndex: UInt64
}

/// A queued request.
struct Waiter: Equatable, Sendable {
    var owner: String
    var mode: LockMode
    var origin: String
    var tag: UInt64
    var requestId: String?
    var ttlMs: Int64
    var sinceMs: Int64
    var deadlineMs: Int64
    var acquiredIndex: UInt64
}

struct ResourceState: Equatable, Sendable {
    var holders: [Holder] = []
    var waiters: [Waiter] = []

    var isEmpty: Bool { holders.isEmpty && waiters.isEmpty }
    var entryCount: Int { holders.count + waiters.count }

    func holderIndex(_ owner: String) -> Int? { holders.firstIndex { $0.owner == owner } }
    func waiterIndex(_ owner: String) -> Int? { waiters.firstIndex { $0.owner == owner } }
    func holds(_ owner: String) -> Bool { holders.contains { $0.owner == owner } }

    /// Whether `mode` requested by `owner` is compatible with every other holder.
    func isCompatible(_ mode: LockMode, for owner: String) -> Bool {
        holders.allSatisfy { $0.owner == owner || $0.mode.isCompatible(with: mode) }
    }

    /// Whether the front waiter can be served now. (A waiting upgrade is always at the front:
    /// it is queued ahead of every request that is not an upgrade, and two waiting upgrades on
    /// one resource always form a cycle, so one of them is failed at once.)
    var frontIsGrantable: Bool {
        guard let front = waiters.first else { return false }
        return isCompatible(front.mode, for: front.owner)
    }
}

/// Which resources an owner holds and waits for (the wait-for graph's adjacency).
struct OwnerRefs: Equatable, Sendable {
    var held: Set<String> = []
    var waiting: Set<String> = []
    var isEmpty: Bool { held.isEmpty && waiting.isEmpty }
}

/// Per-entry scratch: the entry's index and time, and the events it produced.
struct ApplyStep {
    let index: UInt64
    let nowMs: Int64
    var events: [LockEvent] = []
    /// Owners granted in this entry that also wait elsewhere: a grant adds wait-for edges
    /// toward them, so a cycle through them must be looked for.
    var ownersToCheck: [String] = []
}

/// The lock state machine. A value type: copy it freely; `apply` mutates.
public struct LockTable: Sendable {
    public internal(set) var limits: LockLimits
    var resources: [String: ResourceState] = [:]
    var owners: [String: OwnerRefs] = [:]
    var dedup = DedupTable()
    var deadlines = DeadlineHeap()
    /// The largest fencing token ever granted.
    public internal(set) var lastToken: UInt64 = 0
    /// The largest log index applied (informational; the table does not skip entries).
    public internal(set) var lastAppliedIndex: UInt64 = 0
    public internal(set) var counters = LockCounters()
    /// Current grants (one per holder per resource).
    public internal(set) var heldCount = 0
    /// Current waiters.
    public internal(set) var waiterCount = 0

    public init(limits: LockLimits = .default) {
        precondition(limits.isValid, "invalid LockLimits")
        self.limits = limits
    }

    /// Resources held or awaited.
    public var resourceCount: Int { resources.count }
    /// `requestId` records kept.
    public var dedupCount: Int { dedup.count }

    // MARK: Apply

    /// Applies the committed command at Raft log `index` and returns what to answer, in order.
    public mutating func apply(_ command: LockCommand, index: UInt64) -> [LockEvent] {
        var step = ApplyStep(index: index, nowMs: command.nowMs)
        switch command {
        case .acquire(let acquire):
            advance(&step)
            self.acquire(acquire, &step)
        case .release(let release):
            advance(&step)
            self.release(release, &step)
        case .renew(let renew):
            advance(&step)
            self.renew(renew, &step)
        case .cancelWait(let cancel):
            advance(&step)
            cancelWait(cancel, &step)
        case .tick:
            advance(&step)
        case .leaderGrace(let nowMs, let graceMs):
            extendAll(to: nowMs.addingSaturated(min(max(graceMs, 0), LockLimits.graceMsMax)))
        }
        settle(&step)
        dedup.expire(nowMs: step.nowMs, retentionMs: limits.dedupRetentionMs)
        trimDeadlines()
        lastAppliedIndex = max(lastAppliedIndex, index)
        return step.events
    }

    // MARK: Queries

    /// The resource as `GET /lock/status/{resource}` shows it (`free` when unknown).
    public func status(_ resource: String) -> ResourceStatus {
        guard let state = resources[resource] else {
            return ResourceStatus(resource: resource, mode: .free, holders: [], waiters: [])
        }
        let mode: ResourceMode
        switch state.holders.first?.mode {
        case .exclusive?: mode = .exclusive
        case .shared?: mode = .shared
        case nil: mode = .free
        }
        return ResourceStatus(
            resource: resource, mode: mode,
            holders: state.holders.map {
                HolderStatus(owner: $0.owner, mode: $0.mode, fencingToken: $0.fencingToken, expiresAtMs: $0.expiresAtMs)
            },
            waiters: state.waiters.map {
                WaiterStatus(owner: $0.owner, mode: $0.mode, sinceMs: $0.sinceMs, deadlineMs: $0.deadlineMs)
            })
    }

    /// Waits queued by `origin` under a tag below `tagBelow` (requests of an earlier run of that
    /// node, whose clients went with it), at most `limit`: (resource, owner, tag).
    public func waits(of origin: String, tagBelow: UInt64, limit: Int) -> [(resource: String, owner: String, tag: UInt64)] {
        var out: [(resource: String, owner: String, tag: UInt64)] = []
        guard waiterCount > 0 else { return out }
        for (resource, state) in resources {
            for w in state.waiters where w.origin == origin && w.tag < tagBelow {
                out.append((resource, w.owner, w.tag))
                if out.count >= limit { return out }
            }
        }
        return out
    }

    /// Every held or awaited resource, sorted by name.
    public func allStatus() -> [ResourceStatus] {
        resources.keys.sorted().map { status($0) }
    }

    /// The earliest lease expiry or wait deadline, if any: when the leader should propose
    /// `tick` (at or after this time).
    public func nextDeadlineMs() -> Int64? {
        deadlines.first?.timeMs
    }

    /// The grant `owner` currently holds on `resource`, if any.
    public func grant(_ resource: String, owner: String) -> Grant? {
        guard let state = resources[resource], let index = state.holderIndex(owner) else { return nil }
        return makeGrant(resource, state.holders[index])
    }

    // MARK: Commands

    private mutating func acquire(_ command: AcquireCommand, _ step: inout ApplyStep) {
        let resource = command.resource, owner = command.owner
        guard LockLimits.isValidName(resource), LockLimits.isValidName(owner),
              command.requestId.map(LockLimits.isValidName) ?? true, LockLimits.isValidOrigin(command.origin),
              LockLimits.ttlMsRange.contains(command.ttlMs), LockLimits.waitMsRange.contains(command.waitMs)
        else {
            return reject(command.origin, command.tag, .invalidArgument, &step)
        }
        let state = resources[resource] ?? ResourceState()

        // 1. A retry of an earlier request.
        if let requestId = command.requestId {
            if let record = dedup[DedupKey(resource: resource, owner: owner, requestId: requestId)] {
                counters.retried += 1
                if let index = state.holderIndex(owner), state.holders[index].fencingToken == record.grant.fencingToken {
                    let grant = extendLease(resource, index, ttlMs: command.ttlMs, step.nowMs)
                    step.events.append(.granted(origin: command.origin, tag: command.tag, requestId: requestId, grant: grant))
                } else {
                    // The grant has ended since (released, expired, handed on): make nothing
                    // new, and do not answer "granted" either; another owner may hold it now.
                    reject(command.origin, command.tag, .grantEnded, &step)
                }
                return
            }
            if let index = state.waiterIndex(owner), state.waiters[index].requestId == requestId {
                counters.retried += 1
                return reattach(resource, index, command.origin, command.tag, &step)
            }
        }

        // 2. The owner already holds the resource: same grant back, or an upgrade.
        if let holderIndex = state.holderIndex(owner) {
            let holder = state.holders[holderIndex]
            if holder.mode == .exclusive || command.mode == .shared {
                counters.reacquired += 1
                let grant = extendLease(resource, holderIndex, ttlMs: command.ttlMs, step.nowMs)
                recordRetry(command.requestId, grant, step.nowMs)
                step.events.append(.granted(origin: command.origin, tag: command.tag, requestId: command.requestId, grant: grant))
                return
            }
            if let waiterIndex = state.waiterIndex(owner) {
                return answerSecondWait(state.waiters[waiterIndex], command, &step)
            }
            if state.holders.count == 1 {
                counters.grantedImmediately += 1
                let grant = upgrade(resource, holderIndex, ttlMs: command.ttlMs, &step)
                recordRetry(command.requestId, grant, step.nowMs)
                step.events.append(.granted(origin: command.origin, tag: command.tag, requestId: command.requestId, grant: grant))
                return
            }
            return wait(command, isUpgrade: true, &step)
        }

        // 3. The owner already waits for it under another request.
        if let waiterIndex = state.waiterIndex(owner) {
            return answerSecondWait(state.waiters[waiterIndex], command, &step)
        }

        // 4. A new request: grant if free for this mode and nobody is queued ahead.
        if state.waiters.isEmpty && state.isCompatible(command.mode, for: owner) {
            guard hasRoom(for: resource, state, command.origin, command.tag, &step) else { return }
            counters.grantedImmediately += 1
            let grant = addHolder(resource, owner: owner, mode: command.mode, ttlMs: command.ttlMs,
                                  acquiredIndex: step.index, &step)
            recordRetry(command.requestId, grant, step.nowMs)
            step.events.append(.granted(origin: command.origin, tag: command.tag, requestId: command.requestId, grant: grant))
            return
        }
        wait(command, isUpgrade: false, &step)
    }

    /// Queues `command` (not grantable now), unless `waitMs` is 0, a bound is hit, or the wait
    /// would close a cycle with the requester as the youngest owner.
    private mutating func wait(_ command: AcquireCommand, isUpgrade: Bool, _ step: inout ApplyStep) {
        guard command.waitMs > 0 else {
            counters.conflicts += 1
            step.events.append(.conflict(origin: command.origin, tag: command.tag))
            return
        }
        let state = resources[command.resource] ?? ResourceState()
        guard hasRoom(for: command.resource, state, command.origin, command.tag, &step) else { return }
        let waiter = Waiter(owner: command.owner, mode: command.mode, origin: command.origin, tag: command.tag,
                            requestId: command.requestId, ttlMs: command.ttlMs, sinceMs: step.nowMs,
                            deadlineMs: step.nowMs.addingSaturated(command.waitMs), acquiredIndex: step.index)
        addWaiter(command.resource, waiter, asUpgrade: isUpgrade)
        resolveCycles(through: command.owner, &step)
        // Still waiting with this request (not a victim, not granted by a victim's removal)?
        if let now = resources[command.resource], let index = now.waiterIndex(command.owner),
           now.waiters[index].origin == command.origin, now.waiters[index].tag == command.tag {
            counters.queued += 1
            step.events.append(.queued(origin: command.origin, tag: command.tag))
        }
    }

    /// A second acquire by an owner already waiting for the resource: the same proposal seen
    /// again is answered `queued` again. A newer request through the same node (a higher tag
    /// of the same origin: tags only grow) for the same mode with a wait takes the wait over,
    /// keeping its place in the queue: a client that asked again waits where it waited, with
    /// the new request's lease and wait time, and the older request is told `superseded`. Only
    /// newer: a late duplicate of the older proposal (a forward sent again) must not take the
    /// wait back. Any other request is refused; the wait stays as it was.
    private mutating func answerSecondWait(_ existing: Waiter, _ command: AcquireCommand, _ step: inout ApplyStep) {
        if existing.origin == command.origin && existing.tag == command.tag {
            step.events.append(.queued(origin: command.origin, tag: command.tag))
        } else if command.origin == existing.origin, command.tag > existing.tag, command.mode == existing.mode, command.waitMs > 0,
                  let index = resources[command.resource]?.waiterIndex(command.owner) {
            counters.retried += 1
            takeOver(command, index, &step)
        } else {
            reject(command.origin, command.tag, .alreadyWaiting, &step)
        }
    }

    /// Gives the waiter at `index` to `command`: its origin, tag, request id, lease and wait
    /// deadline; its place, mode and age (`sinceMs`, `acquiredIndex`) stay.
    private mutating func takeOver(_ command: AcquireCommand, _ index: Int, _ step: inout ApplyStep) {
        let old = resources[command.resource]!.waiters[index]
        var waiter = old
        waiter.origin = command.origin
        waiter.tag = command.tag
        waiter.requestId = command.requestId
        waiter.ttlMs = command.ttlMs
        waiter.deadlineMs = step.nowMs.addingSaturated(command.waitMs)
        resources[command.resource]!.waiters[index] = waiter
        if waiter.deadlineMs != old.deadlineMs {
            deadlines.push(Deadline(timeMs: waiter.deadlineMs, kind: .wait, resource: command.resource, owner: command.owner))
        }
        step.events.append(.superseded(origin: old.origin, tag: old.tag))
        step.events.append(.queued(origin: command.origin, tag: command.tag))
    }

    /// Moves a waiter to a retry's `(origin, tag)`; the older request is told `superseded`.
    private mutating func reattach(_ resource: String, _ index: Int, _ origin: String, _ tag: UInt64, _ step: inout ApplyStep) {
        let old = resources[resource]!.waiters[index]
        if old.origin != origin || old.tag != tag {
            resources[resource]!.waiters[index].origin = origin
            resources[resource]!.waiters[index].tag = tag
            step.events.append(.superseded(origin: old.origin, tag: old.tag))
        }
        step.events.append(.queued(origin: origin, tag: tag))
    }

    private mutating func release(_ command: ReleaseCommand, _ step: inout ApplyStep) {
        guard LockLimits.isValidName(command.resource), LockLimits.isValidName(command.owner) else {
            return reject(command.origin, command.tag, .invalidArgument, &step)
        }
        guard let state = resources[command.resource], let index = state.holderIndex(command.owner) else {
            step.events.append(.notHeld(origin: command.origin, tag: command.tag))
            return
        }
        if let token = command.fencingToken, token != state.holders[index].fencingToken {
            step.events.append(.staleToken(origin: command.origin, tag: command.tag))
            return
        }
        counters.releases += 1
        removeHolder(command.resource, index)
        step.events.append(.released(origin: command.origin, tag: command.tag))
        grantWaiters(command.resource, &step)
    }

    private mutating func renew(_ command: RenewCommand, _ step: inout ApplyStep) {
        guard LockLimits.isValidName(command.resource), LockLimits.isValidName(command.owner),
              LockLimits.ttlMsRange.contains(command.ttlMs) else {
            return reject(command.origin, command.tag, .invalidArgument, &step)
        }
        guard let state = resources[command.resource], let index = state.holderIndex(command.owner) else {
            step.events.append(.notHeld(origin: command.origin, tag: command.tag))
            return
        }
        counters.renewals += 1
        let expiresAtMs = step.nowMs.addingSaturated(command.ttlMs)
        setExpiry(command.resource, index, expiresAtMs)
        step.events.append(.renewed(origin: command.origin, tag: command.tag, expiresAtMs: expiresAtMs))
    }

    private mutating func cancelWait(_ command: CancelWaitCommand, _ step: inout ApplyStep) {
        guard let state = resources[command.resource], let index = state.waiterIndex(command.owner),
              state.waiters[index].origin == command.origin, state.waiters[index].tag == command.tag else {
            return  // already answered (granted, timed out, re-attached...): nothing to withdraw
        }
        counters.cancelled += 1
        removeWaiter(command.resource, index)
        step.events.append(.cancelled(origin: command.origin, tag: command.tag))
        grantWaiters(command.resource, &step)
    }

    private mutating func reject(_ origin: String, _ tag: UInt64, _ reason: LockRejection, _ step: inout ApplyStep) {
        counters.rejected += 1
        step.events.append(.rejected(origin: origin, tag: tag, reason: reason))
    }

    /// Whether one more holder or waiter fits on `resource`; answers `rejected` if not.
    private mutating func hasRoom(for resource: String, _ state: ResourceState, _ origin: String, _ tag: UInt64,
                                  _ step: inout ApplyStep) -> Bool {
        let reason: LockRejection
        if state.isEmpty && resources.count >= limits.resourcesMax {
            reason = .tooManyResources
        } else if state.entryCount >= limits.entriesPerResourceMax {
            reason = .resourceFull
        } else if heldCount + waiterCount >= limits.entriesMax {
            reason = .tableFull
        } else {
            return true
        }
        reject(origin, tag, reason, &step)
        return false
    }

    private mutating func recordRetry(_ requestId: String?, _ grant: Grant, _ nowMs: Int64) {
        guard let requestId else { return }
        dedup.insert(DedupKey(resource: grant.resource, owner: grant.owner, requestId: requestId),
                     DedupRecord(grant: grant, recordedAtMs: nowMs), limit: limits.dedupEntriesMax)
    }

    // MARK: Time

    /// Ends every lease and wait due at `step.nowMs`, earliest first, passing locks on.
    private mutating func advance(_ step: inout ApplyStep) {
        // Bounded: each turn pops one heap entry; grants made here push deadlines > nowMs
        // (ttl >= 100 ms), so they are not popped in this loop.
        while let due = deadlines.first, due.timeMs <= step.nowMs {
            deadlines.popFirst()
            guard let state = resources[due.resource] else { continue }
            switch due.kind {
            case .lease:
                guard let index = state.holderIndex(due.owner), state.holders[index].expiresAtMs == due.timeMs else { continue }
                counters.leaseExpiries += 1
                let holder = removeHolder(due.resource, index)
                step.events.append(.expired(resource: due.resource, owner: holder.owner, fencingToken: holder.fencingToken))
            case .wait:
                guard let index = state.waiterIndex(due.owner), state.waiters[index].deadlineMs == due.timeMs else { continue }
                counters.timeouts += 1
                let waiter = removeWaiter(due.resource, index)
                step.events.append(.timedOut(origin: waiter.origin, tag: waiter.tag))
            }
            grantWaiters(due.resource, &step)
        }
        settle(&step)
    }

    /// `leaderGrace`: no lease or wait ends before `floorMs`.
    private mutating func extendAll(to floorMs: Int64) {
        var position = resources.startIndex
        while position != resources.endIndex {
            for index in resources.values[position].holders.indices
            where resources.values[position].holders[index].expiresAtMs < floorMs {
                resources.values[position].holders[index].expiresAtMs = floorMs
            }
            for index in resources.values[position].waiters.indices
            where resources.values[position].waiters[index].deadlineMs < floorMs {
                resources.values[position].waiters[index].deadlineMs = floorMs
            }
            resources.formIndex(after: &position)
        }
        rebuildDeadlines()
    }

    // MARK: Grants

    /// Serves waiters of `resource` while the next one can be served.
    mutating func grantWaiters(_ resource: String, _ step: inout ApplyStep) {
        // Bounded: each turn removes one waiter.
        while let state = resources[resource], state.frontIsGrantable {
            let waiter = removeWaiter(resource, 0)
            let grant: Grant
            if let holderIndex = resources[resource]!.holderIndex(waiter.owner) {
                let holder = resources[resource]!.holders[holderIndex]
                if waiter.mode == .exclusive && holder.mode == .shared {
                    grant = upgrade(resource, holderIndex, ttlMs: waiter.ttlMs, &step)
                } else {
                    grant = extendLease(resource, holderIndex, ttlMs: waiter.ttlMs, step.nowMs)
                }
            } else {
                grant = addHolder(resource, owner: waiter.owner, mode: waiter.mode, ttlMs: waiter.ttlMs,
                                  acquiredIndex: waiter.acquiredIndex, &step)
            }
            counters.grantedAfterWait += 1
            recordRetry(waiter.requestId, grant, step.nowMs)
            step.events.append(.granted(origin: waiter.origin, tag: waiter.tag, requestId: waiter.requestId, grant: grant))
            if owners[waiter.owner]?.waiting.isEmpty == false {
                step.ownersToCheck.append(waiter.owner)
            }
        }
        dropIfEmpty(resource)
    }

    private mutating func nextToken(_ index: UInt64) -> UInt64 {
        lastToken = max(index, lastToken &+ 1)
        return lastToken
    }

    func makeGrant(_ resource: String, _ holder: Holder) -> Grant {
        Grant(resource: resource, owner: holder.owner, mode: holder.mode,
              fencingToken: holder.fencingToken, expiresAtMs: holder.expiresAtMs)
    }

    /// Same grant, lease extended to max(current, now + ttl).
    private mutating func extendLease(_ resource: String, _ index: Int, ttlMs: Int64, _ nowMs: Int64) -> Grant {
        let wanted = nowMs.addingSaturated(ttlMs)
        if wanted > resources[resource]!.holders[index].expiresAtMs {
            setExpiry(resource, index, wanted)
        }
        return makeGrant(resource, resources[resource]!.holders[index])
    }

    /// A shared hold becomes exclusive: a new grant, so a new token.
    private mutating func upgrade(_ resource: String, _ index: Int, ttlMs: Int64, _ step: inout ApplyStep) -> Grant {
        resources[resource]!.holders[index].mode = .exclusive
        resources[resource]!.holders[index].fencingToken = nextToken(step.index)
        return extendLease(resource, index, ttlMs: ttlMs, step.nowMs)
    }

    private mutating func setExpiry(_ resource: String, _ index: Int, _ expiresAtMs: Int64) {
        resources[resource]!.holders[index].expiresAtMs = expiresAtMs
        deadlines.push(Deadline(timeMs: expiresAtMs, kind: .lease, resource: resource,
                                owner: resources[resource]!.holders[index].owner))
    }

    // MARK: Structure (keeps the owner index, counts and deadline heap in step)

    private mutating func addHolder(_ resource: String, owner: String, mode: LockMode, ttlMs: Int64,
                                    acquiredIndex: UInt64, _ step: inout ApplyStep) -> Grant {
        let holder = Holder(owner: owner, mode: mode, fencingToken: nextToken(step.index),
                            expiresAtMs: step.nowMs.addingSaturated(ttlMs), acquiredIndex: acquiredIndex)
        resources[resource, default: ResourceState()].holders.append(holder)
        owners[owner, default: OwnerRefs()].held.insert(resource)
        heldCount += 1
        deadlines.push(Deadline(timeMs: holder.expiresAtMs, kind: .lease, resource: resource, owner: owner))
        return makeGrant(resource, holder)
    }

    @discardableResult
    private mutating func removeHolder(_ resource: String, _ index: Int) -> Holder {
        let holder = resources[resource]!.holders.remove(at: index)
        owners[holder.owner]?.held.remove(resource)
        if owners[holder.owner]?.isEmpty == true { owners[holder.owner] = nil }
        heldCount -= 1
        return holder
    }

    /// Appends a waiter; an upgrade goes before the first waiter that is not an upgrade.
    private mutating func addWaiter(_ resource: String, _ waiter: Waiter, asUpgrade: Bool) {
        var state = resources.removeValue(forKey: resource) ?? ResourceState()
        if asUpgrade {
            let position = state.waiters.firstIndex { !state.holds($0.owner) } ?? state.waiters.count
            state.waiters.insert(waiter, at: position)
        } else {
            state.waiters.append(waiter)
        }
        resources[resource] = state
        owners[waiter.owner, default: OwnerRefs()].waiting.insert(resource)
        waiterCount += 1
        deadlines.push(Deadline(timeMs: waiter.deadlineMs, kind: .wait, resource: resource, owner: waiter.owner))
    }

    @discardableResult
    mutating func removeWaiter(_ resource: String, _ index: Int) -> Waiter {
        let waiter = resources[resource]!.waiters.remove(at: index)
        owners[waiter.owner]?.waiting.remove(resource)
        if owners[waiter.owner]?.isEmpty == true { owners[waiter.owner] = nil }
        waiterCount -= 1
        return waiter
    }

    private mutating func dropIfEmpty(_ resource: String) {
        if resources[resource]?.isEmpty == true { resources[resource] = nil }
    }

    // MARK: Deadline heap upkeep

    /// Pops stale entries off the top (so `nextDeadlineMs` is exact) and rebuilds the heap
    /// when stale entries outnumber live ones.
    private mutating func trimDeadlines() {
        while let top = deadlines.first, !isLive(top) {
            deadlines.popFirst()
        }
        if deadlines.count > 2 * (heldCount + waiterCount) + 64 {
            rebuildDeadlines()
        }
    }

    private func isLive(_ deadline: Deadline) -> Bool {
        guard let state = resources[deadline.resource] else { return false }
        switch deadline.kind {
        case .lease:
            return state.holders.contains { $0.owner == deadline.owner && $0.expiresAtMs == deadline.timeMs }
        case .wait:
            return state.waiters.contains { $0.owner == deadline.owner && $0.deadlineMs == deadline.timeMs }
        }
    }

    mutating func rebuildDeadlines() {
        var items: [Deadline] = []
        items.reserveCapacity(heldCount + waiterCount)
        for (resource, state) in resources {
            for holder in state.holders {
                items.append(Deadline(timeMs: holder.expiresAtMs, kind: .lease, resource: resource, owner: holder.owner))
            }
            for waiter in state.waiters {
                items.append(Deadline(timeMs: waiter.deadlineMs, kind: .wait, resource: resource, owner: waiter.owner))
            }
        }
        deadlines.rebuild(items)
    }
}
