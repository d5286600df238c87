import Runtime

/// Everything `concord node` is configured with (CONTRACT §1). Validated before the node starts.
public struct NodeConfig: Sendable {
    public var id: String
    public var listenHost: String = "127.0.0.1"
    public var listenPort: Int = 8001
    public var advertise: String
    public var redis: RedisURL = RedisURL()
    public var cluster: String = "concord"
    public var members: [String]
    public var heartbeatMs: Int = 50
    public var electionTimeoutMs: Int = 300
    public var cacheCapacity: Int = 10_000
    public var cacheWriteBack: Bool = false
    public var logFormat: LogFormat = .text
    /// Membership heartbeat period (the failure detector's input).
    public var membershipHeartbeatMs: Int = 100
    /// How long start-up waits for Redis before giving up (exit 1).
    public var redisStartupTimeoutMs: Int = 10_000
    /// Client connections served at once (the listener pauses at the bound).
    public var maxConnections: Int = 1024
    /// Per-request deadline on the HTTP side.
    public var requestDeadlineMs: Int = 10_000
    /// Raft log entries kept before the lock table is snapshotted and the log compacted.
    public var snapshotThresholdEntries: Int = 10_000

    public init(id: String, listenHost: String = "127.0.0.1", listenPort: Int = 8001, advertise: String? = nil, members: [String]? = nil) {
        self.id = id
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.advertise = advertise ?? "http://\(listenHost):\(listenPort)"
        self.members = members ?? [id]
    }

    /// Parses `host:port` (also `[v6]:port`, or `:port` for all interfaces).
    public static func parseListen(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), port > 0, port < 65536 else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        return (host, port)
    }

    /// Checks every field; returns the name of the offending flag and why.
    public func validate() -> (flag: String, reason: String)? {
        if !Validate.isNodeID(id) { return ("--id", "must be 1-64 characters of [A-Za-z0-9_-]") }
        for m in members where !Validate.isNodeID(m) { return ("--members", "member id '\(m)' must be 1-64 characters of [A-Za-z0-9_-]") }
        if !members.contains(id) { return ("--members", "must contain this node's --id '\(id)'") }
        if Set(members).count != members.count { return ("--members", "lists a member twice") }
        if members.count > 15 { return ("--members", "at most 15 voting members") }
        if cluster.isEmpty || cluster.utf8.count > 64 || cluster.contains(":") || cluster.contains(where: { $0.isWhitespace }) {
            return ("--cluster", "must be 1-64 characters without ':' or spaces")
        }
        if heartbeatMs < 5 || heartbeatMs > 10_000 { return ("--heartbeat-ms", "must be in [5, 10000]") }
        if electionTimeoutMs < 2 * heartbeatMs || electionTimeoutMs > 60_000 { return ("--election-timeout-ms", "must be at least twice --heartbeat-ms and at most 60000") }
        if cacheCapacity < 1 || cacheCapacity > 10_000_000 { return ("--cache-capacity", "must be in [1, 10000000]") }
        if !(advertise.hasPrefix("http://") || advertise.hasPrefix("https://")) { return ("--advertise", "must be an http:// or https:// URL") }
        return nil
    }
}
