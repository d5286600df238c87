// Snapshots, equality and invariants of the lock table.
//
// Snapshot layout (little-endian, strings and modes as in LockCodec.swift):
//
//   "CLKT" | u8 version (= 1)
//   limits:   u32 resourcesMax, u32 entriesPerResourceMax, u32 entriesMax, u32 dedupEntriesMax,
//             i64 dedupRetentionMs
//   u64 lastToken | u64 lastAppliedIndex
//   counters: u32 n, then n × u64 in `LockCounters.all` order (readers ignore extra ones,
//             missing ones read as 0 — room for later versions)
//   u32 resource count, resources sorted by name:
//     string name
//     u32 holder count, each: string owner, mode, u64 token, i64 expiresAtMs, u64 acquiredIndex
//     u32 waiter count, each: string owner, mode, string origin, u64 tag, optional requestId,
//                             i64 ttlMs, i64 sinceMs, i64 deadlineMs, u64 acquiredIndex
//   u32 record count, oldest first, each: string resource, string owner, string requestId,
//     mode, u64 token, i64 expiresAtMs, i64 recordedAtMs
//
// The encoding is canonical: equal tables give equal bytes. Decoding checks every bound and
// invariant and throws instead of building an impossible table; the owner index and deadline
// heap are derived, not stored.

extension LockTable: Equatable {
    public static func == (lhs: LockTable, rhs: LockTable) -> Bool {
        lhs.limits == rhs.limits && lhs.lastToken == rhs.lastToken
            && lhs.lastAppliedIndex == rhs.lastAppliedIndex && lhs.counters == rhs.counters
            && lhs.resources == rhs.resources
            && lhs.dedup.ordered.elementsEqual(rhs.dedup.ordered) { $0.key == $1.key && $0.record == $1.record }
    }
}

extension LockTable {
    static let snapshotMagic: [UInt8] = Array("CLKT".utf8)
    public static let snapshotVersion: UInt8 = 1

    /// The complete state (grants, waiters, leases, `requestId` records, token counter,
    /// counters, limits) as canonical bytes.
    public func snapshot() -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + 96 * (heldCount + waiterCount) + 80 * dedup.count)
        writer.bytes.append(contentsOf: LockTable.snapshotMagic)
        writer.u8(LockTable.snapshotVersion)
        writer.u32(UInt32(limits.resourcesMax))
        writer.u32(UInt32(limits.entriesPerResourceMax))
        writer.u32(UInt32(limits.entriesMax))
        writer.u32(UInt32(limits.dedupEntriesMax))
        writer.i64(limits.dedupRetentionMs)
        writer.u64(lastToken)
        writer.u64(lastAppliedIndex)
        let counterValues = counters.all
        writer.u32(UInt32(counterValues.count))
        for counter in counterValues { writer.u64(counter.value) }

        writer.u32(UInt32(resources.count))
        for name in resources.keys.sorted() {
            let state = resources[name]!
            writer.string(name)
            writer.u32(UInt32(state.holders.count))
            for holder in state.holders {
                writer.string(holder.owner)
                writer.mode(holder.mode)
                writer.u64(holder.fencingToken)
                writer.i64(holder.expiresAtMs)
                writer.u64(holder.acquiredIndex)
            }
            writer.u32(UInt32(state.waiters.count))
            for waiter in state.waiters {
                writer.string(waiter.owner)
                writer.mode(waiter.mode)
                writer.string(waiter.origin)
                writer.u64(waiter.tag)
                writer.optionalString(waiter.requestId)
                writer.i64(waiter.ttlMs)
                writer.i64(waiter.sinceMs)
                writer.i64(waiter.deadlineMs)
                writer.u64(waiter.acquiredIndex)
            }
        }

        let records = dedup.ordered
        writer.u32(UInt32(records.count))
        for (key, record) in records {
            writer.string(key.resource)
            writer.string(key.owner)
            writer.string(key.requestId)
            writer.mode(record.grant.mode)
            writer.u64(record.grant.fencingToken)
            writer.i64(record.grant.expiresAtMs)
            writer.i64(record.recordedAtMs)
        }
        return writer.bytes
    }

    /// Restores a table from `snapshot()` bytes. Throws `LockCodecError` on malformed or
    /// inconsistent input; never traps; work is bounded by the input length and the limits
    /// it declares (themselves capped by `LockLimits.countLimitCeiling`).
    public init(snapshot bytes: [UInt8]) throws(LockCodecError) {
        var reader = ByteReader(bytes)
        for expected in LockTable.snapshotMagic {
            guard try reader.u8() == expected else { throw .invalidValue("not a lock table snapshot") }
        }
        let version = try reader.u8()
        guard version == LockTable.snapshotVersion else { throw .unsupportedVersion(version) }

        let limits = LockLimits(resourcesMax: Int(try reader.u32()), entriesPerResourceMax: Int(try reader.u32()),
                                entriesMax: Int(try reader.u32()), dedupEntriesMax: Int(try reader.u32()),
                                dedupRetentionMs: try reader.i64())
        guard limits.isValid else { throw .invalidValue("limits") }
        self.init(limits: limits)
        lastToken = try reader.u64()
        lastAppliedIndex = try reader.u64()

        let counterCount = try reader.count(max: 64, minimumBytesEach: 8, what: "counter")
        var values: [UInt64] = []
        for _ in 0..<counterCount { values.append(try reader.u64()) }
        while values.count < 13 { values.append(0) }
        counters.grantedImmediately = values[0]
        counters.grantedAfterWait = values[1]
        counters.reacquired = values[2]
        counters.retried = values[3]
        counters.queued = values[4]
        counters.conflicts = values[5]
        counters.timeouts = values[6]
        counters.deadlocks = values[7]
        counters.cancelled = values[8]
        counters.rejected = values[9]
        counters.leaseExpiries = values[10]
        counters.releases = values[11]
        counters.renewals = values[12]

        // The per-element minimums (smallest possible encodings) only make lying counts fail
        // early; exact checks follow.
        let resourceCount = try reader.count(max: limits.resourcesMax, minimumBytesEach: 13, what: "resource")
        var previousName: String?
        for _ in 0..<resourceCount {
            let name = try reader.string()
            if let previousName, !(previousName < name) { throw .inconsistent("resources not sorted or duplicated") }
            previousName = name
            var state = ResourceState()
            let holderTotal = try reader.count(max: limits.entriesPerResourceMax, minimumBytesEach: 30, what: "holder")
            for _ in 0..<holderTotal {
                state.holders.append(Holder(owner: try reader.string(), mode: try reader.mode(),
                                            fencingToken: try reader.u64(), expiresAtMs: try reader.i64(),
                                            acquiredIndex: try reader.u64()))
            }
            let waiterTotal = try reader.count(max: limits.entriesPerResourceMax, minimumBytesEach: 52, what: "waiter")
            for _ in 0..<waiterTotal {
                state.waiters.append(Waiter(owner: try reader.string(), mode: try reader.mode(),
                                            origin: try reader.string(), tag: try reader.u64(),
                                            requestId: try reader.optionalString(), ttlMs: try reader.i64(),
                                            sinceMs: try reader.i64(), deadlineMs: try reader.i64(),
                                            acquiredIndex: try reader.u64()))
            }
            guard state.entryCount <= limits.entriesPerResourceMax else { throw .inconsistent("resource over its bound") }
            resources[name] = state
            for holder in state.holders {
                guard owners[holder.owner, default: OwnerRefs()].held.insert(name).inserted else {
                    throw .inconsistent("owner holds a resource twice")
                }
            }
            for waiter in state.waiters {
                guard owners[waiter.owner, default: OwnerRefs()].waiting.insert(name).inserted else {
                    throw .inconsistent("owner waits for a resource twice")
                }
            }
            heldCount += state.holders.count
            waiterCount += state.waiters.count
            guard heldCount + waiterCount <= limits.entriesMax else { throw .inconsistent("table over its bound") }
        }

        let recordCount = try reader.count(max: limits.dedupEntriesMax, minimumBytesEach: 40, what: "record")
        for _ in 0..<recordCount {
            let key = DedupKey(resource: try reader.string(), owner: try reader.string(), requestId: try reader.string())
            let grant = Grant(resource: key.resource, owner: key.owner, mode: try reader.mode(),
                              fencingToken: try reader.u64(), expiresAtMs: try reader.i64())
            let record = DedupRecord(grant: grant, recordedAtMs: try reader.i64())
            guard dedup[key] == nil else { throw .inconsistent("duplicate requestId record") }
            guard grant.fencingToken <= lastToken else { throw .inconsistent("record token above lastToken") }
            dedup.insert(key, record, limit: limits.dedupEntriesMax)
        }
        try reader.finish()

        if let problem = invariantViolations(checkCycles: true).first {
            throw .inconsistent(problem)
        }
        rebuildDeadlines()
    }

    /// Every broken invariant, as text (empty when the table is sound). For tests, snapshot
    /// validation and diagnostics; `checkCycles` adds a wait-for cycle search (O(owners × edges)).
    public func invariantViolations(checkCycles: Bool = false) -> [String] {
        var problems: [String] = []
        var tokens: Set<UInt64> = []
        var holds = 0, waits = 0
        var expectedOwners: [String: OwnerRefs] = [:]
        for (name, state) in resources {
            if state.isEmpty { problems.append("\(name): empty resource kept") }
            if state.entryCount > limits.entriesPerResourceMax { problems.append("\(name): over entriesPerResourceMax") }
            if !LockLimits.isValidName(name) { problems.append("\(name): invalid name") }
            holds += state.holders.count
            waits += state.waiters.count
            if state.holders.contains(where: { $0.mode == .exclusive }) && state.holders.count != 1 {
                problems.append("\(name): exclusive holder not alone")
            }
            for holder in state.holders {
                if !LockLimits.isValidName(holder.owner) { problems.append("\(name): invalid holder name") }
                if holder.fencingToken == 0 || holder.fencingToken > lastToken {
                    problems.append("\(name): token \(holder.fencingToken) outside 1...\(lastToken)")
                }
                if !tokens.insert(holder.fencingToken).inserted { problems.append("\(name): token \(holder.fencingToken) held twice") }
                if !expectedOwners[holder.owner, default: OwnerRefs()].held.insert(name).inserted {
                    problems.append("\(name): \(holder.owner) holds twice")
                }
            }
            for waiter in state.waiters {
                if !LockLimits.isValidName(waiter.owner) || !LockLimits.isValidOrigin(waiter.origin)
                    || !(waiter.requestId.map(LockLimits.isValidName) ?? true) {
                    problems.append("\(name): invalid waiter name")
                }
                if !LockLimits.ttlMsRange.contains(waiter.ttlMs) { problems.append("\(name): waiter ttl out of range") }
                if !expectedOwners[waiter.owner, default: OwnerRefs()].waiting.insert(name).inserted {
                    problems.append("\(name): \(waiter.owner) waits twice")
                }
                if let holderIndex = state.holderIndex(waiter.owner),
                   !(state.holders[holderIndex].mode == .shared && waiter.mode == .exclusive) {
                    problems.append("\(name): \(waiter.owner) holds and waits, not an upgrade")
                }
            }
            for (position, waiter) in state.waiters.enumerated() where position > 0 && state.holds(waiter.owner) {
                problems.append("\(name): waiting upgrade of \(waiter.owner) not at the front")
            }
            if state.frontIsGrantable { problems.append("\(name): the front waiter could be served but waits") }
        }
        if holds != heldCount || waits != waiterCount { problems.append("counts out of step") }
        if holds + waits > limits.entriesMax { problems.append("over entriesMax") }
        if resources.count > limits.resourcesMax { problems.append("over resourcesMax") }
        if dedup.count > limits.dedupEntriesMax { problems.append("over dedupEntriesMax") }
        if expectedOwners != owners { problems.append("owner index out of step") }
        if checkCycles {
            for owner in owners.keys.sorted() where findCycle(through: owner) != nil {
                problems.append("wait-for cycle through \(owner)")
                break
            }
        }
        return problems
    }
}
