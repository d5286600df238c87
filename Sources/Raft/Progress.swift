// What a leader knows about one follower (Figure 2 nextIndex/matchIndex) plus flow control.

enum ProgressState: String {
    /// Unknown position: one AppendEntries at a time until a reply locates the follower.
    case probe
    /// Position known: stream entries optimistically, bounded by `inflight`.
    case replicate
    /// Follower needs a snapshot; chunks are sent one at a time.
    case snapshot
}

struct Progress {
    var match: UInt64 = 0
    var next: UInt64
    var state: ProgressState = .probe
    /// Probe: a message is out and unanswered; wait for a reply or the next heartbeat.
    var probeSent = false
    /// Last index of each AppendEntries in flight (replicate state), oldest first.
    var inflight: [UInt64] = []
    let maxInflight: Int
    /// Heard from within the current election timeout (CheckQuorum).
    var recentActive = false
    /// Snapshot state: the snapshot being sent and the next byte offset the follower wants.
    var pendingSnapshotIndex: UInt64 = 0
    var snapshotOffset: UInt64 = 0
    /// Heartbeats since the last chunk went out; a chunk is re-sent after two (lost chunk).
    var snapshotHeartbeatsWithoutAck = 0

    init(next: UInt64, maxInflight: Int) {
        self.next = next
        self.maxInflight = maxInflight
    }

    var isPaused: Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflight.count >= maxInflight
        case .snapshot: return true
        }
    }

    mutating func becomeProbe() {
        if state == .snapshot {
            next = max(match + 1, pendingSnapshotIndex + 1)
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        inflight.removeAll()
        pendingSnapshotIndex = 0
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        probeSent = false
        inflight.removeAll()
        pendingSnapshotIndex = 0
    }

    mutating func becomeSnapshot(index: UInt64) {
        state = .snapshot
        probeSent = false
        inflight.removeAll()
        pendingSnapshotIndex = index
        snapshotOffset = 0
    }

    /// A successful AppendEntries reply up to `index`. False if stale.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }

    /// A rejection of prevLogIndex `rejected` with hint `matchHint`. False if stale.
    mutating func maybeDecrease(rejected: UInt64, matchHint: UInt64) -> Bool {
        if state == .replicate {
            // Entries up to match are known to match; a rejection at or below is stale.
            if rejected <= match { return false }
            next = match + 1
            return true
        }
        // Probe: only the reply to the outstanding probe counts.
        if next == 0 || next - 1 != rejected { return false }
        next = max(min(rejected, matchHint + 1), match + 1)
        probeSent = false
        return true
    }

    mutating func sentEntries(lastIndex: UInt64) {
        switch state {
        case .replicate:
            next = lastIndex + 1
            inflight.append(lastIndex)
        case .probe:
            probeSent = true
        case .snapshot:
            preconditionFailure("appending while sending a snapshot")
        }
    }

    mutating func freeInflight(through index: UInt64) {
        var drop = 0
        while drop < inflight.count && inflight[drop] <= index { drop += 1 }
        if drop > 0 { inflight.removeFirst(drop) }
    }
}
