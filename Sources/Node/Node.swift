import CLibevent
import CoreMetrics
import Foundation
import Logging
import Runtime

public let concordVersion = "0.1.0"

/// What a subsystem (locks, queue, cache) plugs into the node.
public protocol NodeService: AnyObject {
    /// Adds its routes.
    func register(_ router: Router)
    /// Starts timers and subscriptions (Redis is connected, scripts are loaded).
    func start()
    /// Graceful stop: finish or fail in-flight work, hand over what must be handed over, then call `done`.
    func shutdown(_ done: @escaping () -> Void)
}

/// Raft facts for /status and /raft/state; the lock service provides the real ones.
public struct RaftSummary: Sendable {
    public var role = "follower"
    public var term: UInt64 = 0
    public var leader: String?
    public var votedFor: String?
    public var commitIndex: UInt64 = 0
    public var lastApplied: UInt64 = 0
    public var lastLogIndex: UInt64 = 0
    public var lastLogTerm: UInt64 = 0
    public var snapshotIndex: UInt64 = 0
    public init() {}
}

private let signalTrampoline: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { signal, _, arg in
    guard let arg else { return }
    Unmanaged<ConcordNode>.fromOpaque(arg).takeUnretainedValue().receivedSignal(signal)
}

/// One Concord node: one libevent loop owning the HTTP server, two hiredis connections
/// (commands; subscriptions), the bus, membership and every service.
public final class ConcordNode {
    public let config: NodeConfig
    public let loop = EventLoop()
    public let logger: Logger
    public let metrics = NodeMetrics()
    /// Bus messages sent per type as last exported to `concord_bus_messages_sent_total`.
    private var busSentExported: [BusMessageType: UInt64] = [:]
    public let redis: RedisConnection
    public let subscriber: RedisConnection
    public let bus: Bus
    public let scripts: LuaScripts
    public let membership: Membership
    public let http: HTTPServer
    public let router = Router()
    public var services: [NodeService] = []
    public var raftSummary: () -> RaftSummary = { RaftSummary() }
    private let startedMono = EventLoop.monoMs()
    private var exitCode: Int32 = 0
    private var signalEvents: [OpaquePointer] = []
    private var stopping = false
    private var timers: [LoopTimer] = []

    /// Builds every part of the node; throws (with a reason) when the Lua scripts are missing.
    public init(config: NodeConfig, logger: Logger) throws {
        self.config = config
        var logger = logger
        logger[metadataKey: "node"] = "\(config.id)"
        self.logger = logger
        redis = RedisConnection(loop: loop, url: config.redis, name: "commands", subscriber: false, logger: logger)
        subscriber = RedisConnection(loop: loop, url: config.redis, name: "subscriber", subscriber: true, logger: logger)
        guard let luaDirectory = LuaScripts.locateDirectory() else {
            throw RuntimeError("cannot find the lua/ scripts directory (set CONCORD_LUA_DIR)")
        }
        scripts = try LuaScripts(redis: redis, directory: luaDirectory, logger: logger)
        bus = Bus(loop: loop, nodeID: config.id, cluster: config.cluster, commands: redis, subscriber: subscriber, logger: logger)
        membership = Membership(config: config, loop: loop, bus: bus, scripts: scripts, metrics: metrics, logger: logger)
        http = HTTPServer(loop: loop, logger: logger)
        http.requestDeadlineMs = config.requestDeadlineMs
        http.maxConnections = config.maxConnections
    }

    /// Runs until SIGTERM/SIGINT; returns the process exit status (0 clean stop, 1 failure).
    public func run() -> Int32 {
        wireMetrics()
        installSignals()
        // After a reconnect, load every script again before anything needs it (a restarted
        // Redis has an empty script cache; NOSCRIPT retries are the fallback).
        redis.addStateListener { [weak self] ready in
            guard ready, let self, self.redis.everConnected, self.redis.reconnects > 0 else { return }
            self.scripts.loadAll { _ in }
        }
        redis.start()
        subscriber.start()
        waitForRedis(deadline: EventLoop.monoMs() + Int64(config.redisStartupTimeoutMs))
        loop.run()
        teardown()
        return exitCode
    }

    /// Bounded wait for Redis at start; exit 1 with the reason when it never answers.
    private func waitForRedis(deadline: Int64) {
        if redis.isReady && subscriber.isReady {
            startServing()
            return
        }
        if EventLoop.monoMs() > deadline {
            let reason = "redis unreachable at \(config.redis) after \(config.redisStartupTimeoutMs) ms: \(redis.lastError)"
            logger.critical("\(reason)")
            FileHandle.standardError.write(Data("concord: \(reason)\n".utf8))
            exitCode = 1
            loop.stop()
            return
        }
        loop.after(ms: 50) { [weak self] in self?.waitForRedis(deadline: deadline) }
    }

    private func startServing() {
        scripts.loadAll { [weak self] error in
            guard let self else { return }
            if let error {
                self.fail("cannot load Lua scripts into redis: \(error)")
                return
            }
            self.registerSystemRoutes()
            for service in self.services { service.register(self.router) }
            self.http.handler = { [router = self.router] request in router.handle(request) }
            do {
                try self.http.bind(host: self.config.listenHost, port: self.config.listenPort)
            } catch {
                self.fail("\(error)")
                return
            }
            self.membership.start()
            for service in self.services { service.start() }
            self.timers.append(self.loop.every(ms: 1000) { [weak self] in self?.membership.recordMetrics() })
            self.watchParent()
            self.checkRedisDurability()
            self.logger.info("node serving", metadata: ["listen": "\(self.config.listenHost):\(self.config.listenPort)", "redis": "\(self.config.redis)", "cluster": "\(self.config.cluster)"])
        }
    }

    /// Raft's log, term and vote, the queue and the cache's memory all live in Redis, so Redis's
    /// persistence decides what survives a Redis crash. Every node of a cluster shares it, so no
    /// Raft majority can make up for a lost write. Said once at start, as a warning when it is weaker
    /// than `appendfsync always`, and as the gauge `concord_redis_persistence{mode}` (1 for the mode
    /// seen). CONFIG may be disabled (managed Redis): then the mode is "unknown" and nothing is said.
    private func checkRedisDurability() {
        redis.send(["CONFIG", "GET", "append*"]) { [weak self] reply in
            guard let self else { return }
            var config: [String: String] = [:]
            for (k, v) in reply.pairs { if let k = k.string, let v = v.string { config[k] = v } }
            let mode: String
            switch (config["appendonly"], config["appendfsync"]) {
            case ("yes", "always"?): mode = "always"
            case ("yes", let fsync?): mode = fsync
            case ("no", _): mode = "none"
            default: mode = "unknown"
            }
            self.metrics.set("concord_redis_persistence", [("mode", mode)], 1)
            switch mode {
            case "none":
                self.logger.warning("redis runs without AOF (appendonly no): a Redis restart loses every lock grant, queued message and cached write since its last snapshot; run it with --appendonly yes --appendfsync always")
            case "always", "unknown":
                break
            default:
                self.logger.warning("redis AOF fsync is '\(mode)', not 'always': a Redis crash (not a clean restart) can lose the last second of writes, acknowledged lock grants and Raft votes included")
            }
        }
    }

    /// `concord dev` sets CONCORD_EXIT_WITH_PARENT: if that process goes away (even SIGKILLed),
    /// the node stops gracefully instead of living on as an orphan.
    private func watchParent() {
        guard let text = ProcessInfo.processInfo.environment["CONCORD_EXIT_WITH_PARENT"], let parent = Int32(text) else { return }
        timers.append(loop.every(ms: 500) { [weak self] in
            guard let self, getppid() != parent, !self.stopping else { return }
            self.logger.warning("parent process \(parent) is gone; stopping")
            self.receivedSignal(SIGTERM)
        })
    }

    private func fail(_ reason: String) {
        logger.critical("\(reason)")
        FileHandle.standardError.write(Data("concord: \(reason)\n".utf8))
        exitCode = 1
        loop.stop()
    }

    // MARK: signals and graceful stop

    private func installSignals() {
        signal(SIGPIPE, SIG_IGN)
        // A parent may have left SIGINT/SIGTERM blocked or ignored (a background job of a
        // script, `concord dev`, a test runner): take them back, libevent handles them below.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
        for sig in [SIGTERM, SIGINT] {
            if let ev = event_new(loop.base, sig, Int16(EV_SIGNAL | EV_PERSIST), signalTrampoline, Unmanaged.passUnretained(self).toOpaque()) {
                event_add(ev, nil)
                signalEvents.append(ev)
            }
        }
    }

    fileprivate func receivedSignal(_ sig: Int32) {
        if stopping {
            logger.warning("second signal: stopping now")
            loop.stop()
            return
        }
        stopping = true
        logger.info("stopping", metadata: ["signal": "\(sig)"])
        http.stopAccepting()
        // Hard bound: exit within 5 s whatever a service does.
        loop.after(ms: 4500) { [weak self] in
            self?.logger.warning("graceful stop took too long; exiting")
            self?.loop.stop()
        }
        shutdownServices(services[...]) { [weak self] in
            guard let self else { return }
            self.membership.stop()
            self.bus.failAllPending()
            // Let the last replies and publishes drain.
            self.loop.after(ms: 50) { [weak self] in self?.loop.stop() }
        }
    }

    private func shutdownServices(_ remaining: ArraySlice<NodeService>, _ done: @escaping () -> Void) {
        guard let first = remaining.first else { done(); return }
        first.shutdown { [weak self] in self?.shutdownServices(remaining.dropFirst(), done) }
    }

    private func teardown() {
        for t in timers { t.cancel() }
        for ev in signalEvents { event_free(ev) }
        signalEvents.removeAll()
        // Redis first: freeing a hiredis context runs its pending callbacks, which may still
        // answer HTTP requests — evhttp must be alive for that.
        redis.close()
        subscriber.close()
        http.close()
    }

    // MARK: metrics

    private func wireMetrics() {
        // Handlers cached per (route, method, status): the hot path builds no label strings.
        struct RequestKey: Hashable { let route: String; let method: HTTPMethod; let status: Int }
        var handlers: [RequestKey: (CoreMetrics.Counter, CoreMetrics.Timer)] = [:]
        http.onFinish = { [metrics] request in
            let key = RequestKey(route: request.route, method: request.method, status: request.status)
            let pair: (CoreMetrics.Counter, CoreMetrics.Timer)
            if let cached = handlers[key] {
                pair = cached
            } else {
                let status = String(request.status)
                pair = (metrics.counter("concord_http_requests_total", [("route", request.route), ("method", request.methodText), ("status", status)]),
                        metrics.timer("concord_http_request_duration_seconds", [("route", request.route), ("status", status)]))
                if handlers.count < 1000 { handlers[key] = pair }
            }
            pair.0.increment()
            pair.1.recordNanoseconds((EventLoop.monoMicros() - request.startMicros) * 1000)
        }
        for conn in [redis, subscriber] {
            conn.onStateChange = { [metrics, logger, weak conn] ready in
                guard let conn else { return }
                metrics.set("concord_redis_connected", [("connection", conn.name)], ready ? 1 : 0)
                if ready && conn.reconnects > 0 {
                    metrics.increment("concord_redis_reconnects_total", [("connection", conn.name)])
                    logger.info("redis reconnected", metadata: ["conn": "\(conn.name)"])
                }
            }
        }
        subscriber.silenceLimitMs = { [weak self] in
            guard let self, self.redis.isReady else { return nil }
            return 3000
        }
        bus.onReceive = { [metrics] type in metrics.increment("concord_bus_messages_received_total", [("type", type.label)]) }
        bus.onDrop = { [metrics] reason in metrics.increment("concord_bus_frames_dropped_total", [("reason", reason)]) }
    }

    // MARK: system routes (CONTRACT §2.4)

    public var redisConnected: Bool { redis.isReady && subscriber.isReady }

    private func registerSystemRoutes() {
        router.add(.GET, "/health") { [weak self] request, _ in
            guard let self else { return }
            if self.redisConnected {
                request.respond(200, .object([("status", .string("ok")), ("node", .string(self.config.id))]))
            } else {
                let reason = "redis unreachable: " + (self.redis.isReady ? self.subscriber.lastError : self.redis.lastError)
                request.respond(503, .object([("status", .string("degraded")), ("node", .string(self.config.id)), ("reason", .string(reason))]), headers: [("Retry-After", "1")])
            }
        }
        router.add(.GET, "/status") { [weak self] request, _ in
            guard let self else { return }
            request.respond(200, self.statusJSON())
        }
        router.add(.GET, "/raft/state") { [weak self] request, _ in
            guard let self else { return }
            let r = self.raftSummary()
            request.respond(200, .object([
                ("node", .string(self.config.id)), ("role", .string(r.role)), ("term", .int(r.term)),
                ("voted_for", r.votedFor.map { .string($0) } ?? .null), ("leader", r.leader.map { .string($0) } ?? .null),
                ("commit_index", .int(r.commitIndex)), ("last_applied", .int(r.lastApplied)),
                ("last_log_index", .int(r.lastLogIndex)), ("last_log_term", .int(r.lastLogTerm)), ("snapshot_index", .int(r.snapshotIndex)),
            ]))
        }
        // Request/response over the bus to one peer: proves the pub/sub path end to end.
        bus.onRequest(.ping) { envelope, reply in reply(envelope.payload) }
        router.add(.GET, "/bus/ping/{node}") { [weak self] request, params in
            guard let self else { return }
            let peer = try Validate.name(params["node"] ?? "", field: "node")
            guard Validate.isNodeID(peer) else { throw HTTPError.badRequest("'node' must be a node id") }
            guard self.membership.isMember(peer) else { throw HTTPError.notFound("no member '\(peer)' (see /status)") }
            let started = EventLoop.monoMicros()
            self.bus.request(to: peer, type: .ping, payload: Array("ping".utf8), timeoutMs: 2000) { result in
                switch result {
                case .success:
                    let rtt = Double(EventLoop.monoMicros() - started) / 1000
                    request.respond(200, .object([("node", .string(self.config.id)), ("peer", .string(peer)), ("rtt_ms", .double((rtt * 1000).rounded() / 1000))]))
                case .failure(let error):
                    request.fail(HTTPError.unavailable("peer \(peer) did not answer over the bus: \(error)"))
                }
            }
        }
        router.add(.GET, "/metrics") { [weak self] request, _ in
            guard let self else { return }
            let r = self.raftSummary()
            self.metrics.set("concord_uptime_seconds", [], Double(EventLoop.monoMs() - self.startedMono) / 1000)
            self.metrics.set("concord_raft_term", [], Double(r.term))
            self.metrics.set("concord_raft_commit_index", [], Double(r.commitIndex))
            for role in ["leader", "follower", "candidate"] { self.metrics.set("concord_raft_role", [("role", role)], r.role == role ? 1 : 0) }
            // A counter, like the received side: advanced by what was sent since the last scrape.
            for (type, count) in self.bus.sentByType where count > self.busSentExported[type, default: 0] {
                self.metrics.increment("concord_bus_messages_sent_total", [("type", type.label)], by: Int(count - self.busSentExported[type, default: 0]))
                self.busSentExported[type] = count
            }
            request.respond(200, bytes: self.metrics.exposition(), contentType: "text/plain; version=0.0.4; charset=utf-8", headers: [])
        }
    }

    public func statusJSON() -> JSONValue {
        let r = raftSummary()
        let members: [JSONValue] = membership.members().map { m in
            .object([
                ("id", .string(m.id)), ("alive", .bool(m.alive)), ("phi", .double(m.phi.isFinite ? (m.phi * 1000).rounded() / 1000 : 1e9)),
                ("last_heartbeat_ms", m.lastHeartbeatUnixMs.map { .int($0) } ?? .null), ("advertise", m.advertise.map { .string($0) } ?? .null),
            ])
        }
        return .object([
            ("node", .string(config.id)), ("cluster", .string(config.cluster)), ("version", .string(concordVersion)),
            ("role", .string(r.role)), ("term", .int(r.term)), ("leader", r.leader.map { .string($0) } ?? .null),
            ("members", .array(members)),
            ("redis", .object([("connected", .bool(redisConnected))])),
            ("uptime_s", .int((EventLoop.monoMs() - startedMono) / 1000)),
        ])
    }
}
