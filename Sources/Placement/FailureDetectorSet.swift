// FailureDetectorSet: one phi accrual detector per peer, keyed by peer id. Feeds the membership
// view (which nodes the hash ring is built over) and `/status` members (alive, phi,
// last_heartbeat_ms).
//
// "Alive" means: heard from at least once, and phi below the threshold. A peer that was added
// but never heard from has phi 0 (nothing to suspect yet) but is not alive: nothing shows it
// exists, so it must not be given partitions.

/// What `/status` shows about one peer.
public struct PeerStatus: Sendable, Equatable {
    public var id: String
    public var alive: Bool
    public var phi: Double
    /// Time of the last accepted heartbeat (the caller's clock, ms); nil if never heard from.
    public var lastHeartbeatMs: Int64?

    public init(id: String, alive: Bool, phi: Double, lastHeartbeatMs: Int64?) {
        self.id = id
        self.alive = alive
        self.phi = phi
        self.lastHeartbeatMs = lastHeartbeatMs
    }
}

public struct FailureDetectorSet: Sendable {
    public let configuration: PhiAccrualConfiguration
    private var detectors: [String: PhiAccrualDetector] = [:]

    public init(configuration: PhiAccrualConfiguration = .default) {
        self.configuration = configuration
    }

    /// Monitored peer ids, sorted.
    public var peers: [String] { detectors.keys.sorted() }

    /// Number of monitored peers.
    public var count: Int { detectors.count }

    public func contains(peer: String) -> Bool { detectors[peer] != nil }

    /// Starts monitoring `peer` (no-op if already monitored: its history is kept).
    public mutating func add(peer: String) {
        if detectors[peer] == nil {
            detectors[peer] = PhiAccrualDetector(configuration: configuration)
        }
    }

    /// Stops monitoring `peer` and forgets its history. Returns whether it was monitored.
    @discardableResult
    public mutating func remove(peer: String) -> Bool {
        detectors.removeValue(forKey: peer) != nil
    }

    /// Records a heartbeat from `peer` at `nowMs`, adding the peer if unknown.
    /// Returns true when this heartbeat makes the peer alive (it was unknown, never heard from,
    /// or suspected): the moment to rebuild the ring. A returning peer is alive at once,
    /// since phi right after a heartbeat is 0.
    @discardableResult
    public mutating func heartbeat(peer: String, nowMs: Int64) -> Bool {
        let wasAlive = isAlive(peer: peer, nowMs: nowMs)
        if detectors[peer] == nil {
            detectors[peer] = PhiAccrualDetector(configuration: configuration)
        }
        detectors[peer]!.heartbeat(nowMs: nowMs)
        let isAliveNow = isAlive(peer: peer, nowMs: nowMs)
        return !wasAlive && isAliveNow
    }

    /// phi of `peer` at `nowMs`; nil if the peer is not monitored; 0 if never heard from.
    public func phi(peer: String, nowMs: Int64) -> Double? {
        detectors[peer]?.phi(nowMs: nowMs)
    }

    /// Heard from at least once and phi below the configured threshold.
    public func isAlive(peer: String, nowMs: Int64) -> Bool {
        guard let detector = detectors[peer], detector.lastHeartbeatMs != nil else { return false }
        return detector.isAvailable(nowMs: nowMs)
    }

    /// Time of `peer`'s last accepted heartbeat; nil if unknown or never heard from.
    public func lastHeartbeatMs(peer: String) -> Int64? {
        detectors[peer]?.lastHeartbeatMs
    }

    /// The detector of `peer`, for inspection (mean interval, sample count).
    public func detector(peer: String) -> PhiAccrualDetector? {
        detectors[peer]
    }

    /// Alive peers at `nowMs`, sorted: the node set to build the hash ring over (plus self).
    public func alivePeers(nowMs: Int64) -> [String] {
        peers.filter { isAlive(peer: $0, nowMs: nowMs) }
    }

    /// Every monitored peer's status at `nowMs`, sorted by id.
    public func statuses(nowMs: Int64) -> [PeerStatus] {
        peers.map { peer in
            PeerStatus(
                id: peer,
                alive: isAlive(peer: peer, nowMs: nowMs),
                phi: phi(peer: peer, nowMs: nowMs) ?? 0,
                lastHeartbeatMs: lastHeartbeatMs(peer: peer)
            )
        }
    }
}
