// LRUCache: a least-recently-used map from String keys to values, bounded both in entries
// (lines) and in bytes (the caller states each value's size).
//
// O(1) get / put / remove: a dictionary from key to slot, and an intrusive doubly linked list
// threaded through one array of slots by index (no per-entry object, no reference counting
// on the list). Freed slots are reused through a free list, so the slot array never grows
// beyond the largest number of entries held at once (at most `capacity`).
//
// Eviction does not write anything back itself: `put` returns the entries it evicted, least
// recent first, so the caller can write back dirty (M) lines before forgetting them.

/// An entry as `put`, `remove` and `popLeastRecent` hand it back.
public struct LRUEntry<Value> {
    public var key: String
    public var value: Value
    public var bytes: Int

    public init(key: String, value: Value, bytes: Int) {
        self.key = key
        self.value = value
        self.bytes = bytes
    }
}

extension LRUEntry: Equatable where Value: Equatable {}
extension LRUEntry: Sendable where Value: Sendable {}

public struct LRUCache<Value> {
    /// Maximum number of entries.
    public let capacity: Int
    /// Maximum total of the entries' byte sizes.
    public let maxBytes: Int

    /// Number of entries held.
    public private(set) var count = 0
    /// Sum of the byte sizes of the entries held.
    public private(set) var totalBytes = 0

    fileprivate struct Slot {
        var key: String
        var value: Value?  // nil while the slot is free, so a freed value is released at once
        var bytes: Int
        var previous: Int  // towards the most recent; `none` at the head
        var next: Int  // towards the least recent; `none` at the tail; free-list link when free
    }

    private static var none: Int { -1 }

    private var slots: [Slot] = []
    private var slotByKey: [String: Int] = [:]
    private var head = LRUCache.none  // most recently used
    private var tail = LRUCache.none  // least recently used
    private var freeHead = LRUCache.none

    /// Precondition: `capacity >= 1`, `maxBytes >= 0`.
    public init(capacity: Int, maxBytes: Int = Int.max) {
        precondition(capacity >= 1, "capacity must be >= 1")
        precondition(maxBytes >= 0, "maxBytes must be >= 0")
        self.capacity = capacity
        self.maxBytes = maxBytes
        let initialSlots = Swift.min(capacity, 1024)
        slots.reserveCapacity(initialSlots)
        slotByKey.reserveCapacity(initialSlots)
    }

    public var isEmpty: Bool { count == 0 }

    public func contains(_ key: String) -> Bool { slotByKey[key] != nil }

    /// The value for `key`, marking it most recently used.
    public mutating func get(_ key: String) -> Value? {
        guard let slot = slotByKey[key] else { return nil }
        moveToFront(slot)
        return slots[slot].value
    }

    /// The value for `key` without changing recency (for status pages and snooping).
    public func peek(_ key: String) -> Value? {
        guard let slot = slotByKey[key] else { return nil }
        return slots[slot].value
    }

    /// The byte size recorded for `key`.
    public func bytes(of key: String) -> Int? {
        guard let slot = slotByKey[key] else { return nil }
        return slots[slot].bytes
    }

    /// Inserts or replaces `key`, making it most recently used, then evicts least recently used
    /// entries until both bounds hold. Returns the evicted entries, least recent first.
    ///
    /// A replaced value is superseded, not evicted, and is not returned. A value larger than
    /// `maxBytes` on its own cannot be held: it is not stored (any previous value for `key` is
    /// dropped as superseded) and comes back as the only evicted entry, so a dirty line is
    /// still written back by the caller.
    /// Not discardable on purpose: an evicted dirty line must be written back by the caller.
    /// Precondition: `bytes >= 0`.
    public mutating func put(_ key: String, _ value: Value, bytes: Int) -> [LRUEntry<Value>] {
        precondition(bytes >= 0, "bytes must be >= 0")
        if bytes > maxBytes {
            if let slot = slotByKey[key] { _ = unlinkAndFree(slot) }
            checkInvariants()
            return [LRUEntry(key: key, value: value, bytes: bytes)]
        }
        if let slot = slotByKey[key] {
            totalBytes += bytes - slots[slot].bytes
            slots[slot].value = value
            slots[slot].bytes = bytes
            moveToFront(slot)
        } else {
            let slot = allocateSlot(key: key, value: value, bytes: bytes)
            slotByKey[key] = slot
            linkAtFront(slot)
            count += 1
            totalBytes += bytes
        }
        var evicted: [LRUEntry<Value>] = []
        // Bounded: each pass removes one entry, and the entry just put (at the head, within
        // maxBytes on its own) is never the tail while another entry remains.
        while count > capacity || totalBytes > maxBytes {
            assert(tail != head, "the entry just put fits on its own")
            evicted.append(unlinkAndFree(tail))
        }
        checkInvariants()
        return evicted
    }

    /// Removes `key`; returns its entry if it was present.
    @discardableResult
    public mutating func remove(_ key: String) -> LRUEntry<Value>? {
        guard let slot = slotByKey[key] else { return nil }
        let entry = unlinkAndFree(slot)
        checkInvariants()
        return entry
    }

    /// Changes the value of `key` in place without changing its recency or byte size (e.g. a
    /// snooped MESI transition). Returns `body`'s result, or nil if `key` is absent.
    public mutating func modify<Result>(_ key: String, _ body: (inout Value) throws -> Result) rethrows -> Result? {
        guard let slot = slotByKey[key] else { return nil }
        return try body(&slots[slot].value!)
    }

    /// The least recently used entry, without removing it.
    public var leastRecent: LRUEntry<Value>? {
        tail == LRUCache.none ? nil : entry(at: tail)
    }

    /// The most recently used entry.
    public var mostRecent: LRUEntry<Value>? {
        head == LRUCache.none ? nil : entry(at: head)
    }

    /// Removes and returns the least recently used entry.
    public mutating func popLeastRecent() -> LRUEntry<Value>? {
        guard tail != LRUCache.none else { return nil }
        let entry = unlinkAndFree(tail)
        checkInvariants()
        return entry
    }

    /// Every entry, most recently used first. O(count).
    public var entries: [LRUEntry<Value>] {
        var result: [LRUEntry<Value>] = []
        result.reserveCapacity(count)
        var slot = head
        while slot != LRUCache.none {
            result.append(entry(at: slot))
            slot = slots[slot].next
        }
        return result
    }

    /// Keys, most recently used first. O(count).
    public var keys: [String] {
        var result: [String] = []
        result.reserveCapacity(count)
        var slot = head
        while slot != LRUCache.none {
            result.append(slots[slot].key)
            slot = slots[slot].next
        }
        return result
    }

    /// Removes every entry and returns them, most recently used first.
    public mutating func removeAll() -> [LRUEntry<Value>] {
        let all = entries
        slots.removeAll(keepingCapacity: true)
        slotByKey.removeAll(keepingCapacity: true)
        head = LRUCache.none
        tail = LRUCache.none
        freeHead = LRUCache.none
        count = 0
        totalBytes = 0
        return all
    }

    // MARK: - The intrusive list

    private func entry(at slot: Int) -> LRUEntry<Value> {
        LRUEntry(key: slots[slot].key, value: slots[slot].value!, bytes: slots[slot].bytes)
    }

    private mutating func allocateSlot(key: String, value: Value, bytes: Int) -> Int {
        let slot = Slot(key: key, value: value, bytes: bytes, previous: LRUCache.none, next: LRUCache.none)
        if freeHead != LRUCache.none {
            let reused = freeHead
            freeHead = slots[reused].next
            slots[reused] = slot
            return reused
        }
        slots.append(slot)
        return slots.count - 1
    }

    private mutating func linkAtFront(_ slot: Int) {
        slots[slot].previous = LRUCache.none
        slots[slot].next = head
        if head != LRUCache.none { slots[head].previous = slot }
        head = slot
        if tail == LRUCache.none { tail = slot }
    }

    private mutating func unlink(_ slot: Int) {
        let previous = slots[slot].previous
        let next = slots[slot].next
        if previous != LRUCache.none { slots[previous].next = next } else { head = next }
        if next != LRUCache.none { slots[next].previous = previous } else { tail = previous }
        slots[slot].previous = LRUCache.none
        slots[slot].next = LRUCache.none
    }

    private mutating func moveToFront(_ slot: Int) {
        guard slot != head else { return }
        unlink(slot)
        linkAtFront(slot)
    }

    /// Unlinks `slot`, drops it from the index, puts it on the free list; returns its entry.
    private mutating func unlinkAndFree(_ slot: Int) -> LRUEntry<Value> {
        let removed = entry(at: slot)
        unlink(slot)
        slotByKey.removeValue(forKey: removed.key)
        slots[slot].value = nil
        slots[slot].key = ""
        slots[slot].next = freeHead
        freeHead = slot
        count -= 1
        totalBytes -= removed.bytes
        return removed
    }

    private func checkInvariants() {
        assert(count == slotByKey.count)
        assert(count <= capacity && totalBytes <= maxBytes && totalBytes >= 0)
        assert((head == LRUCache.none) == (count == 0) && (tail == LRUCache.none) == (count == 0))
    }
}

extension LRUCache: Sendable where Value: Sendable {}
extension LRUCache.Slot: Sendable where Value: Sendable {}
