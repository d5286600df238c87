// Internal indexes of the lock table: the deadline heap (what expires next) and the
// `requestId` record table (retries of granted requests). Both are deterministic: their
// observable behaviour depends only on the sequence of operations, never on hashing order.

// MARK: - Deadline heap

/// A lease expiry or a wait deadline. The key is a total order, so pops come out in the same
/// order on every replica however the heap was built.
struct Deadline: Comparable, Sendable {
    enum Kind: UInt8, Sendable {
        case lease = 0  // a lease ending hands the lock on before a waiter at the same ms times out
        case wait = 1
    }

    var timeMs: Int64
    var kind: Kind
    var resource: String
    var owner: String

    static func < (lhs: Deadline, rhs: Deadline) -> Bool {
        if lhs.timeMs != rhs.timeMs { return lhs.timeMs < rhs.timeMs }
        if lhs.kind != rhs.kind { return lhs.kind.rawValue < rhs.kind.rawValue }
        if lhs.resource != rhs.resource { return lhs.resource < rhs.resource }
        return lhs.owner < rhs.owner
    }
}

/// A binary min-heap with lazy deletion: entries are pushed whenever a lease or deadline is set
/// and checked against the table when popped (a renewed lease leaves a stale entry behind).
/// The table rebuilds it when stale entries outnumber live ones, so its size stays bounded.
struct DeadlineHeap: Sendable {
    private(set) var items: [Deadline] = []

    var count: Int { items.count }
    var first: Deadline? { items.first }

    mutating func push(_ item: Deadline) {
        items.append(item)
        siftUp(items.count - 1)
    }

    @discardableResult
    mutating func popFirst() -> Deadline? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            siftDown(0)
        }
        return top
    }

    /// Replaces the content with `newItems` (heapify, O(n)).
    mutating func rebuild(_ newItems: [Deadline]) {
        items = newItems
        guard items.count > 1 else { return }
        var index = items.count / 2 - 1
        while index >= 0 {
            siftDown(index)
            index -= 1
        }
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { return }
            items.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        let count = items.count
        while true {
            let left = 2 * parent + 1
            guard left < count else { return }
            var smallest = left
            let right = left + 1
            if right < count && items[right] < items[left] { smallest = right }
            guard items[smallest] < items[parent] else { return }
            items.swapAt(smallest, parent)
            parent = smallest
        }
    }
}

// MARK: - requestId records

/// A retry is the same `requestId` from the same owner for the same resource.
struct DedupKey: Hashable, Sendable {
    var resource: String
    var owner: String
    var requestId: String
}

/// The grant a request received, kept so a retry gets it back.
struct DedupRecord: Equatable, Sendable {
    var grant: Grant
    var recordedAtMs: Int64
}

/// Records in insertion order (oldest first) with O(1) lookup. Records leave only from the
/// front — by age (`expire`) or by count (`insert` beyond the limit) — so `order[head...]` holds
/// exactly the live keys, in order.
struct DedupTable: Sendable {
    private(set) var records: [DedupKey: DedupRecord] = [:]
    private var order: [DedupKey] = []
    private var head = 0

    var count: Int { records.count }

    subscript(key: DedupKey) -> DedupRecord? { records[key] }

    /// Live records, oldest first.
    var ordered: [(key: DedupKey, record: DedupRecord)] {
        order[head...].map { ($0, records[$0]!) }
    }

    /// Adds (or, for a known key, overwrites in place) a record; drops the oldest beyond `limit`.
    mutating func insert(_ key: DedupKey, _ record: DedupRecord, limit: Int) {
        if records.updateValue(record, forKey: key) == nil {
            order.append(key)
        }
        while records.count > limit {
            dropOldest()
        }
    }

    /// Drops records older than `retentionMs` at `nowMs` (from the front; log time may step
    /// back across leaders, so a younger front record can shield older ones for a while —
    /// the count limit still bounds the table).
    mutating func expire(nowMs: Int64, retentionMs: Int64) {
        while head < order.count, let record = records[order[head]],
              record.recordedAtMs.addingSaturated(retentionMs) <= nowMs {
            dropOldest()
        }
    }

    private mutating func dropOldest() {
        guard head < order.count else { return }
        records[order[head]] = nil
        head += 1
        if head >= 1024 && head * 2 >= order.count {
            order.removeFirst(head)
            head = 0
        }
    }
}

extension Int64 {
    /// `self + other`, clamped to the range of Int64 instead of trapping.
    @inlinable
    func addingSaturated(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        if !overflow { return sum }
        return other > 0 ? .max : .min
    }
}
