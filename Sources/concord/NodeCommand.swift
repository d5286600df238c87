import ArgumentParser
import Foundation
import Logging
import Node
import Runtime

/// `concord node`: every flag also read from its environment variable (the flag wins).
struct NodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Run one Concord node until SIGINT/SIGTERM.")

    @Option(help: "This node's id, 1-64 of [A-Za-z0-9_-] (env CONCORD_NODE_ID).") var id: String?
    @Option(help: "HTTP address host:port (env CONCORD_LISTEN; default 127.0.0.1:8001).") var listen: String?
    @Option(help: "URL other parties use for this node (env CONCORD_ADVERTISE; default http://<listen>).") var advertise: String?
    @Option(help: "redis://[user:password@]host:port[/db] (env CONCORD_REDIS_URL; default redis://127.0.0.1:6379/0).") var redis: String?
    @Option(help: "Namespace of every key and channel (env CONCORD_CLUSTER; default concord).") var cluster: String?
    @Option(help: "Comma-separated ids of the initial Raft voters; must contain --id (env CONCORD_MEMBERS).") var members: String?
    @Option(name: .customLong("heartbeat-ms"), help: "Raft heartbeat interval (env CONCORD_HEARTBEAT_MS; default 50).") var heartbeatMs: String?
    @Option(name: .customLong("election-timeout-ms"), help: "Raft election timeout T, randomized in [T, 2T] (env CONCORD_ELECTION_TIMEOUT_MS; default 300).") var electionTimeoutMs: String?
    @Option(name: .customLong("cache-capacity"), help: "Cache lines per node (env CONCORD_CACHE_CAPACITY; default 10000).") var cacheCapacity: String?
    @Option(name: .customLong("cache-write-policy"), help: "write-through or write-back (env CONCORD_CACHE_WRITE_POLICY).") var cacheWritePolicy: String?
    @Option(name: .customLong("log-format"), help: "text or json (env CONCORD_LOG_FORMAT).") var logFormat: String?

    private func value(_ flag: String?, _ env: String) -> String? {
        if let flag { return flag }
        if let v = ProcessInfo.processInfo.environment[env], !v.isEmpty { return v }
        return nil
    }

    private func integer(_ flag: String?, _ env: String, _ name: String) throws -> Int? {
        guard let text = value(flag, env) else { return nil }
        guard let v = Int(text) else { throw ValidationError("--\(name) must be an integer, got '\(text)'") }
        return v
    }

    func makeConfig() throws -> NodeConfig {
        guard let id = value(id, "CONCORD_NODE_ID") else { throw ValidationError("--id is required (or set CONCORD_NODE_ID)") }
        var host = "127.0.0.1", port = 8001
        if let listen = value(listen, "CONCORD_LISTEN") {
            guard let parsed = NodeConfig.parseListen(listen) else { throw ValidationError("--listen must be host:port, got '\(listen)'") }
            (host, port) = parsed
        }
        let memberList = value(members, "CONCORD_MEMBERS").map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        var config = NodeConfig(id: id, listenHost: host, listenPort: port, advertise: value(advertise, "CONCORD_ADVERTISE"), members: memberList)
        if let text = value(redis, "CONCORD_REDIS_URL") {
            guard let url = RedisURL(text) else { throw ValidationError("--redis must be redis://[user:password@]host:port[/db], got '\(text)'") }
            config.redis = url
        }
        if let c = value(cluster, "CONCORD_CLUSTER") { config.cluster = c }
        if let v = try integer(heartbeatMs, "CONCORD_HEARTBEAT_MS", "heartbeat-ms") { config.heartbeatMs = v }
        if let v = try integer(electionTimeoutMs, "CONCORD_ELECTION_TIMEOUT_MS", "election-timeout-ms") {
            config.electionTimeoutMs = v
        } else {
            config.electionTimeoutMs = max(config.electionTimeoutMs, config.heartbeatMs * 6)
        }
        if let v = try integer(cacheCapacity, "CONCORD_CACHE_CAPACITY", "cache-capacity") { config.cacheCapacity = v }
        if let p = value(cacheWritePolicy, "CONCORD_CACHE_WRITE_POLICY") {
            switch p {
            case "write-through": config.cacheWriteBack = false
            case "write-back": config.cacheWriteBack = true
            default: throw ValidationError("--cache-write-policy must be write-through or write-back, got '\(p)'")
            }
        }
        if let f = value(logFormat, "CONCORD_LOG_FORMAT") {
            guard let format = LogFormat(rawValue: f) else { throw ValidationError("--log-format must be text or json, got '\(f)'") }
            config.logFormat = format
        }
        if let t = ProcessInfo.processInfo.environment["CONCORD_SNAPSHOT_ENTRIES"], let v = Int(t), v >= 10 { config.snapshotThresholdEntries = v }
        if let t = ProcessInfo.processInfo.environment["CONCORD_MAX_CONNECTIONS"], let v = Int(t), v > 0 { config.maxConnections = v }
        if let t = ProcessInfo.processInfo.environment["CONCORD_REDIS_STARTUP_TIMEOUT_MS"], let v = Int(t), v > 0 { config.redisStartupTimeoutMs = v }
        if let problem = config.validate() { throw ValidationError("\(problem.flag) \(problem.reason)") }
        return config
    }

    /// Checked while parsing, so a usage error prints `concord node`'s usage line (an error
    /// thrown from run() is reported with the root command's `concord <subcommand>`).
    func validate() throws { _ = try makeConfig() }

    func run() throws {
        let config = try makeConfig()
        Logs.bootstrap(format: config.logFormat)
        let logger = Logger(label: "concord")
        let node: ConcordNode
        do { node = try ConcordNode(config: config, logger: logger) } catch { die("\(error)") }
        installServices(node)
        let code = node.run()
        if code != 0 { throw ExitCode(code) }
    }
}

/// Adds every service to a node; one place, so `node` and tests agree.
func installServices(_ node: ConcordNode) {
    node.services.append(QueueService(node: node))
    node.services.append(LockService(node: node))
    node.services.append(CacheService(node: node))
}
