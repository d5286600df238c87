import Logging
import Placement
import Runtime

/// Who is in the cluster and who is alive: heartbeats over the bus feed a phi accrual failure
/// detector per peer (the pure `FailureDetectorSet`); each node also registers itself in Redis
/// (`concord:<cluster>:{members}:<id>`, refreshed with a TTL, and the set
/// `concord:<cluster>:{members}`) so redis-cli users can see it.
public final class Membership {
    public struct Member: Equatable {
        public var id: String
        public var alive: Bool
        public var phi: Double
        public var lastHeartbeatUnixMs: Int64?
        public var advertise: String?
    }

    private let config: NodeConfig
    private let loop: EventLoop
    private let bus: Bus
    private let scripts: LuaScripts
    private let logger: Logger
    private let metrics: NodeMetrics
    private var detectors: FailureDetectorSet
    private var advertiseByPeer: [String: String] = [:]
    private var lastHeartbeatUnixMs: [String: Int64] = [:]
    private var timers: [LoopTimer] = []
    private let startedUnixMs: Int64
    private var lastAlive: Set<String> = []
    /// Called on the loop whenever the set of live nodes (self included) changes.
    public var onAliveChange: ((Set<String>) -> Void)?
    public static let registrationTTLMs = 10_000

    /// The registry's keys share the hash tag `{members}` (node_register-2.lua touches both in
    /// one script, which Redis Cluster allows only within one slot).
    public static func membersKey(cluster: String) -> String { "concord:\(cluster):{members}" }
    public static func memberKey(cluster: String, node: String) -> String { "concord:\(cluster):{members}:\(node)" }
    /// A peer outside the configured voters, silent this long, is forgotten.
    public static let forgetAfterMs: Int64 = 60_000

    public init(config: NodeConfig, loop: EventLoop, bus: Bus, scripts: LuaScripts, metrics: NodeMetrics, logger: Logger) {
        self.config = config
        self.loop = loop
        self.bus = bus
        self.scripts = scripts
        self.metrics = metrics
        self.logger = logger
        self.startedUnixMs = EventLoop.wallMs()
        detectors = FailureDetectorSet(configuration: PhiAccrualConfiguration(heartbeatIntervalMs: Int64(config.membershipHeartbeatMs)))
        for m in config.members where m != config.id { detectors.add(peer: m) }
        lastAlive = [config.id]
        bus.on(.heartbeat) { [weak self] envelope in self?.heard(envelope) }
    }

    public func start() {
        timers.append(loop.every(ms: config.membershipHeartbeatMs) { [weak self] in self?.beat() })
        timers.append(loop.every(ms: 1000) { [weak self] in self?.register() })
        timers.append(loop.every(ms: 50) { [weak self] in self?.evaluate() })
        register()
        beat()
    }

    public func stop() {
        for t in timers { t.cancel() }
        timers.removeAll()
    }

    private func beat() {
        let payload = JSONValue.object([("advertise", .string(config.advertise)), ("started_ms", .int(startedUnixMs))]).bytes
        bus.broadcast(type: .heartbeat, payload: payload)
    }

    private func register() {
        let keys = [Membership.memberKey(cluster: config.cluster, node: config.id), Membership.membersKey(cluster: config.cluster)]
        let now = EventLoop.wallMs()
        scripts.run("node_register", keys: keys, args: [config.id, config.advertise, String(startedUnixMs), String(now), String(Membership.registrationTTLMs)]) { [logger] reply in
            if let error = reply.errorMessage { logger.debug("registration failed", metadata: ["error": "\(error)"]) }
        }
    }

    private func heard(_ envelope: Envelope) {
        guard envelope.sender != config.id, Validate.isNodeID(envelope.sender) else { return }
        if !detectors.contains(peer: envelope.sender) {
            guard detectors.count < 256 else { return }
            detectors.add(peer: envelope.sender)
            logger.info("peer discovered", metadata: ["peer": "\(envelope.sender)"])
        }
        _ = detectors.heartbeat(peer: envelope.sender, nowMs: EventLoop.monoMs())
        lastHeartbeatUnixMs[envelope.sender] = EventLoop.wallMs()
        if let value = try? JSONParser.parse(envelope.payload), let advertise = value["advertise"]?.stringValue, advertise.utf8.count <= 512 {
            advertiseByPeer[envelope.sender] = advertise
        }
        evaluate()
    }

    /// Recomputes the live set; notifies on change; forgets long-silent non-voters.
    private func evaluate() {
        let now = EventLoop.monoMs()
        var alive: Set<String> = [config.id]
        for peer in detectors.peers {
            if detectors.isAlive(peer: peer, nowMs: now) { alive.insert(peer) }
            if !config.members.contains(peer), let last = detectors.lastHeartbeatMs(peer: peer), now - last > Membership.forgetAfterMs {
                _ = detectors.remove(peer: peer)
                advertiseByPeer[peer] = nil
                lastHeartbeatUnixMs[peer] = nil
            }
        }
        if alive != lastAlive {
            let joined = alive.subtracting(lastAlive), left = lastAlive.subtracting(alive)
            logger.info("membership changed", metadata: ["alive": "\(alive.sorted())", "joined": "\(joined.sorted())", "left": "\(left.sorted())"])
            lastAlive = alive
            onAliveChange?(alive)
        }
    }

    public var aliveNodes: Set<String> { lastAlive }

    public func isAlive(_ node: String) -> Bool { lastAlive.contains(node) }

    /// A node /status lists: this node, a configured voter or a peer heard from (alive or not).
    public func isMember(_ node: String) -> Bool { node == config.id || detectors.contains(peer: node) }

    public func members() -> [Member] {
        let now = EventLoop.monoMs()
        var out = [Member(id: config.id, alive: true, phi: 0, lastHeartbeatUnixMs: EventLoop.wallMs(), advertise: config.advertise)]
        for status in detectors.statuses(nowMs: now) {
            out.append(Member(id: status.id, alive: status.alive, phi: status.phi, lastHeartbeatUnixMs: lastHeartbeatUnixMs[status.id], advertise: advertiseByPeer[status.id]))
        }
        return out.sorted { $0.id < $1.id }
    }

    /// Publishes phi per peer as gauges.
    public func recordMetrics() {
        for m in members() where m.id != config.id {
            metrics.set("concord_failure_detector_phi", [("peer", m.id)], m.phi.isFinite ? m.phi : 1e9)
            metrics.set("concord_member_alive", [("peer", m.id)], m.alive ? 1 : 0)
        }
    }
}
