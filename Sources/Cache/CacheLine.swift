// CacheLine: what one node's cache holds for one key.

public struct CacheLine: Sendable, Equatable {
    /// The value's bytes (the JSON text the client wrote).
    public var value: [UInt8]
    /// The key's version in the directory; bus messages not newer than it are late and ignored.
    public var version: UInt64
    public var state: MESIState
    /// The line may be served from this cache only before this time (the directory's lease,
    /// caller's clock, ms). Leases bound how long a writer waits for a holder that went silent.
    public var leaseUntilMs: Int64
    /// The value is newer than Redis's (write-back policy only; write-through M lines are clean).
    public var dirty: Bool

    public init(value: [UInt8], version: UInt64, state: MESIState, leaseUntilMs: Int64, dirty: Bool = false) {
        self.value = value
        self.version = version
        self.state = state
        self.leaseUntilMs = leaseUntilMs
        self.dirty = dirty
    }

    /// Bytes to charge the LRU's byte bound for this line's value.
    public var byteCount: Int { value.count }

    /// A read may be answered from this line at `nowMs`: valid state and lease not run out.
    public func isServable(nowMs: Int64) -> Bool {
        state.isValid && nowMs < leaseUntilMs
    }

    /// Applies `event` to `state` (per `mesiTransition`) and returns the actions to carry out.
    /// `.flush` is dropped when the line is clean: there is nothing newer than Redis to write.
    /// `dirty` is left as it is: the caller clears it once its write-back has succeeded (and
    /// sets it when a write-back-policy write makes the line newer than Redis).
    public mutating func apply(_ event: MESIEvent) -> [MESIAction] {
        let (nextState, actions) = mesiTransition(state, event)
        state = nextState
        return dirty ? actions : actions.filter { $0 != .flush }
    }
}
