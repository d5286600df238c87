// The in-memory Raft log: a snapshot prefix (index and term only) followed by entries.
// It also tracks which suffix has not yet been handed to the caller for persistence and
// which prefix is known durable.

struct RaftLog {
    private(set) var snapshotIndex: UInt64 = 0
    private(set) var snapshotTerm: UInt64 = 0
    /// Entries snapshotIndex+1 ... lastIndex.
    private(set) var entries: [Entry] = []
    /// Highest index known committed (Figure 2 commitIndex).
    var committed: UInt64 = 0
    /// Highest index handed out in Ready.committedEntries.
    var applyingThrough: UInt64 = 0
    /// Highest index the application has applied (acknowledged by advance).
    var applied: UInt64 = 0
    /// First index not yet handed out in Ready.entries.
    var unstableFrom: UInt64 = 1
    /// Highest index known durable in the caller's storage (acknowledged by advance).
    var persistedLast: UInt64 = 0

    var firstIndex: UInt64 { snapshotIndex + 1 }
    var lastIndex: UInt64 { snapshotIndex + UInt64(entries.count) }
    var lastTerm: UInt64 { entries.last?.term ?? snapshotTerm }

    init() {}

    /// Rebuilds from storage: everything given is durable already.
    init(snapshot: Snapshot?, entries stored: [Entry], commit: UInt64) {
        if let snapshot {
            snapshotIndex = snapshot.index
            snapshotTerm = snapshot.term
        }
        for entry in stored where entry.index > snapshotIndex {
            precondition(entry.index == lastIndex + 1, "stored log is not contiguous at \(entry.index)")
            entries.append(entry)
        }
        // A stored commit beyond the stored log would mean the caller persisted hardState
        // before entries; clamp rather than claim entries that do not exist.
        committed = max(snapshotIndex, min(commit, lastIndex))
        applied = snapshotIndex
        applyingThrough = snapshotIndex
        unstableFrom = lastIndex + 1
        persistedLast = lastIndex
    }

    /// Term of the entry at `index`; nil if compacted away (below the snapshot) or beyond the end.
    func term(at index: UInt64) -> UInt64? {
        if index == snapshotIndex { return snapshotTerm }
        if index < snapshotIndex || index > lastIndex { return nil }
        return entries[Int(index - snapshotIndex - 1)].term
    }

    func entry(at index: UInt64) -> Entry? {
        if index <= snapshotIndex || index > lastIndex { return nil }
        return entries[Int(index - snapshotIndex - 1)]
    }

    func matchTerm(_ index: UInt64, _ term: UInt64) -> Bool {
        self.term(at: index) == term
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours if its last term is higher,
    /// or the same with an index at least as large.
    func isUpToDate(lastIndex candidateIndex: UInt64, lastTerm candidateTerm: UInt64) -> Bool {
        candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
    }

    /// Leader-local append (Figure 2, Leaders: "append entry to local log").
    mutating func append(_ entry: Entry) {
        precondition(entry.index == lastIndex + 1)
        entries.append(entry)
    }

    /// The first index among `incoming` whose term differs from ours (or that we lack); 0 if
    /// every incoming entry is already present (Figure 2, AppendEntries step 3).
    func findConflict(_ incoming: [Entry]) -> UInt64 {
        for entry in incoming where !matchTerm(entry.index, entry.term) {
            return entry.index
        }
        return 0
    }

    /// Fast backtracking hint: the largest index <= `index` whose term is <= `term`
    /// (etcd raft's findConflictByTerm). Returns the index and its term.
    func findConflictByTerm(index: UInt64, term: UInt64) -> (index: UInt64, term: UInt64) {
        var probe = min(index, lastIndex)
        while probe > snapshotIndex {
            let probeTerm = entries[Int(probe - snapshotIndex - 1)].term
            if probeTerm <= term { return (probe, probeTerm) }
            probe -= 1
        }
        return (probe, self.term(at: probe) ?? 0)
    }

    /// Figure 2, AppendEntries step 3-4: delete a conflicting suffix and append what is new.
    /// `from` must be in firstIndex...lastIndex+1.
    mutating func truncateAndAppend(_ incoming: ArraySlice<Entry>) {
        guard let first = incoming.first else { return }
        precondition(first.index > snapshotIndex && first.index <= lastIndex + 1,
                     "append at \(first.index) outside \(firstIndex)...\(lastIndex + 1)")
        precondition(first.index > committed, "truncating committed entry \(first.index)")
        let keep = Int(first.index - snapshotIndex - 1)
        if keep < entries.count {
            entries.removeSubrange(keep...)
        }
        entries.append(contentsOf: incoming)
        unstableFrom = min(unstableFrom, first.index)
        persistedLast = min(persistedLast, first.index - 1)
    }

    /// Entries from `from`, at most `maxCount` and about `maxBytes` (at least one if any).
    /// Nil if `from` is compacted away.
    func slice(from: UInt64, maxCount: Int, maxBytes: Int) -> [Entry]? {
        if from <= snapshotIndex { return nil }
        if from > lastIndex { return [] }
        let start = Int(from - snapshotIndex - 1)
        var end = start
        var bytes = 0
        while end < entries.count && end - start < maxCount {
            bytes += entries[end].data.count + 24
            if bytes > maxBytes && end > start { break }
            end += 1
        }
        return Array(entries[start..<end])
    }

    func entries(from: UInt64, through: UInt64) -> [Entry] {
        guard from <= through else { return [] }
        precondition(from > snapshotIndex && through <= lastIndex)
        return Array(entries[Int(from - snapshotIndex - 1)...Int(through - snapshotIndex - 1)])
    }

    func unstableEntries() -> [Entry] {
        guard unstableFrom <= lastIndex else { return [] }
        return entries(from: max(unstableFrom, firstIndex), through: lastIndex)
    }

    /// Local compaction: drop entries through `index` (which must be applied).
    mutating func compact(through index: UInt64) {
        precondition(index > snapshotIndex && index <= applied)
        let newTerm = term(at: index)!
        entries.removeFirst(Int(index - snapshotIndex))
        snapshotIndex = index
        snapshotTerm = newTerm
        unstableFrom = max(unstableFrom, index + 1)
    }

    /// Installs a received snapshot: the whole log is replaced.
    mutating func restore(index: UInt64, term: UInt64) {
        entries.removeAll()
        snapshotIndex = index
        snapshotTerm = term
        committed = index
        applied = index
        applyingThrough = index
        unstableFrom = index + 1
        persistedLast = index
    }
}
