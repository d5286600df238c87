// MARK: - The node's cache lines: an LRU of MESI lines with leases
//
// Pure bookkeeping on the loop thread, no I/O: the service decides, this keeps the LRU, the
// counts by state, the set of dirty keys and the lease-expiry queue consistent with each other.
// An invalid line is not kept: I means "absent".

import Cache

struct LocalLine {
    var line: CacheLine
    /// Absolute expiry of the value (wall clock, unix ms), 0 = none: a line is not served after it.
    var expireAtWallMs: Int64
    /// A lease renewal is on its way to Redis.
    var renewInFlight = false

    var bytes: Int { line.byteCount }
}

final class CacheStore {
    private(set) var lru: LRUCache<LocalLine>
    /// Lines by state (M, E, S).
    private(set) var counts: [MESIState: Int] = [.M: 0, .E: 0, .S: 0]
    private(set) var dirtyKeys: Set<String> = []
    /// (lease end, monotonic ms; key) in the order leases were granted. Every lease has the same
    /// length and is granted from a send time in command-connection order, so the queue is
    /// (nearly) sorted and the front is always the next to run out; stale entries are skipped.
    private var leaseQueue: [(Int64, String)] = []
    private var leaseQueueHead = 0

    init(capacity: Int, maxBytes: Int) {
        lru = LRUCache(capacity: capacity, maxBytes: maxBytes)
    }

    var count: Int { lru.count }
    var totalBytes: Int { lru.totalBytes }

    /// The line for a hit: marks it most recently used.
    func get(_ key: String) -> LocalLine? { lru.get(key) }
    func peek(_ key: String) -> LocalLine? { lru.peek(key) }

    /// Inserts or replaces a line; returns the lines evicted to make room (the caller writes
    /// dirty ones back and releases clean ones).
    func put(_ key: String, _ entry: LocalLine) -> [LRUEntry<LocalLine>] {
        precondition(entry.line.state.isValid, "an I line is not stored")
        if let old = lru.peek(key) { forget(key, old) }
        let evicted = lru.put(key, entry, bytes: entry.bytes + key.utf8.count)
        if lru.contains(key) { remember(key, entry) }
        for e in evicted where e.key != key { forget(e.key, e.value) }
        leaseQueue.append((entry.line.leaseUntilMs, key))
        return evicted
    }

    /// Changes a line in place (state, lease, dirty); a result state of I removes it.
    @discardableResult
    func modify(_ key: String, _ body: (inout LocalLine) -> Void) -> LocalLine? {
        guard let old = lru.peek(key) else { return nil }
        var new = old
        body(&new)
        if !new.line.state.isValid {
            remove(key)
            return new
        }
        forget(key, old)
        _ = lru.modify(key) { $0 = new }
        remember(key, new)
        if new.line.leaseUntilMs != old.line.leaseUntilMs { leaseQueue.append((new.line.leaseUntilMs, key)) }
        return new
    }

    @discardableResult
    func remove(_ key: String) -> LocalLine? {
        guard let entry = lru.remove(key) else { return nil }
        forget(key, entry.value)
        return entry.value
    }

    func removeAll() -> [LRUEntry<LocalLine>] {
        let all = lru.removeAll()
        counts = [.M: 0, .E: 0, .S: 0]
        dirtyKeys.removeAll()
        leaseQueue.removeAll()
        leaseQueueHead = 0
        return all
    }

    /// Removes clean lines whose lease ran out by `nowMs` (they are I now); returns how many.
    /// Dirty lines stay: their value exists nowhere else until written back.
    func expireLeases(nowMs: Int64, limit: Int = 100_000) -> Int {
        var removed = 0
        var steps = 0
        while leaseQueueHead < leaseQueue.count, leaseQueue[leaseQueueHead].0 <= nowMs, steps < limit {
            let key = leaseQueue[leaseQueueHead].1
            leaseQueueHead += 1
            steps += 1
            if let e = lru.peek(key), e.line.leaseUntilMs <= nowMs, !e.line.dirty {
                remove(key)
                removed += 1
            }
        }
        if leaseQueueHead > 4096 && leaseQueueHead * 2 > leaseQueue.count {
            leaseQueue.removeFirst(leaseQueueHead)
            leaseQueueHead = 0
        }
        return removed
    }

    private func remember(_ key: String, _ e: LocalLine) {
        counts[e.line.state, default: 0] += 1
        if e.line.dirty { dirtyKeys.insert(key) }
    }

    private func forget(_ key: String, _ e: LocalLine) {
        counts[e.line.state, default: 0] -= 1
        if e.line.dirty { dirtyKeys.remove(key) }
    }
}
