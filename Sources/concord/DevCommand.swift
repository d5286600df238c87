import ArgumentParser
import Dispatch
import Foundation
import Runtime

/// `concord dev`: a local cluster in one command — its own redis-server (unless --redis),
/// then N nodes on consecutive ports. Ctrl-C / SIGTERM stops everything it started.
struct DevCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dev", abstract: "Start a local N-node cluster (and its own redis-server).")

    @Option(help: "Number of nodes (1-9).") var nodes: Int = 3
    @Option(name: .customLong("base-port"), help: "HTTP port of the first node; the others follow.") var basePort: Int = 8001
    @Option(help: "Use this Redis instead of starting one (redis://host:port[/db]).") var redis: String?
    @Option(help: "Cluster namespace.") var cluster: String = "concord"
    @Option(name: .customLong("log-format"), help: "text or json.") var logFormat: String = "text"
    @Flag(name: .customLong("redis-aof"), help: "Start the dev redis-server with appendonly yes.") var redisAOF = false

    func validate() throws {
        guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be in [1, 9]") }
        guard basePort > 0 && basePort + nodes < 65536 else { throw ValidationError("--base-port out of range") }
        if let redis, RedisURL(redis) == nil { throw ValidationError("--redis must be redis://host:port[/db]") }
        guard logFormat == "text" || logFormat == "json" else { throw ValidationError("--log-format must be text or json") }
    }

    func run() throws {
        // SIGINT/SIGTERM are blocked here and taken with sigwait below: a Dispatch signal source
        // misses signals that a non-interactive shell set to ignored for background jobs. The
        // children unblock them again (the node does so at start).
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        let mainThread = pthread_self()
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        var children: [Process] = []
        var redisProcess: Process?
        var tempDir: URL?
        let redisURL: String

        if let redis {
            redisURL = redis
        } else {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("concord-dev-\(getpid())")
            let (p, port) = try startLocalRedis(dir: dir, aof: redisAOF)
            tempDir = dir
            redisProcess = p
            redisURL = "redis://127.0.0.1:\(port)/0"
        }

        let ids = (1...nodes).map { "n\($0)" }
        for (i, id) in ids.enumerated() {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            p.arguments = ["node", "--id", id, "--listen", "127.0.0.1:\(basePort + i)", "--redis", redisURL, "--cluster", cluster, "--members", ids.joined(separator: ","), "--log-format", logFormat]
            var env = ProcessInfo.processInfo.environment
            env["CONCORD_EXIT_WITH_PARENT"] = String(getpid())
            p.environment = env
            try p.run()
            children.append(p)
        }

        print("Concord dev cluster (\(nodes) nodes, cluster '\(cluster)')")
        for (i, id) in ids.enumerated() { print("  \(id): http://127.0.0.1:\(basePort + i)") }
        print("  redis: \(redisURL)")
        if let u = RedisURL(redisURL) { print("  inspect: redis-cli -h \(u.host) -p \(u.port) -n \(u.db) --scan --pattern 'concord:\(cluster):*'") }
        print("  try: curl -s http://127.0.0.1:\(basePort)/status")
        print("Ctrl-C stops everything.")
        fflush(nil)

        // Also stop if every node exits on its own. (Not `waitUntilExit` on a background
        // thread: on Linux it spins a run loop that has no sources.)
        let exited = ExitCounter(total: children.count) { pthread_kill(mainThread, SIGTERM) }
        for c in children {
            c.terminationHandler = { _ in exited.one() }
            if !c.isRunning { exited.one() }
        }
        var received: Int32 = 0
        sigwait(&stopSignals, &received)

        print("stopping...")
        for c in children where c.isRunning { kill(c.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(6)
        while children.contains(where: { $0.isRunning }) && Date() < deadline { usleep(50_000) }
        for c in children where c.isRunning { kill(c.processIdentifier, SIGKILL) }
        if let p = redisProcess, let u = RedisURL(redisURL) {
            shutdownRedis(port: u.port)
            let d = Date().addingTimeInterval(3)
            while p.isRunning && Date() < d { usleep(50_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            while p.isRunning { usleep(10_000) }
        }
        if let tempDir { try? FileManager.default.removeItem(at: tempDir) }
        print("stopped")
    }
}

func findOnPath(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") { return "\(dir)/\(name)" }
    return nil
}

/// A free TCP port on 127.0.0.1 (bind to port 0, read it back, close).
func freePort() throws -> Int {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard s >= 0 else { throw RuntimeError("socket failed") }
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) == 0 && getsockname(s, $0, &len) == 0 }
    }
    guard ok else { throw RuntimeError("bind failed") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Starts `redis-server` from PATH on a free loopback port with its files in `dir`; exits the
/// process with a reason if it cannot (used by `concord dev` and the benchmarks that own a cluster).
func startLocalRedis(dir: URL, aof: Bool) throws -> (Process, Int) {
    guard let server = findOnPath("redis-server") else { die("redis-server not found on PATH (apt-get install -y redis-server) or pass --redis URL") }
    let port = try freePort()
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: server)
    p.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir.path, "--save", "", "--appendonly", aof ? "yes" : "no", "--logfile", dir.appendingPathComponent("redis.log").path]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    guard waitForRedis(port: port, timeoutMs: 5000) else {
        p.terminate()
        die("redis-server did not start on port \(port) (see \(dir.path)/redis.log)")
    }
    return (p, port)
}

/// Asks a local Redis to stop (SHUTDOWN NOSAVE flushes the AOF when it is on; no RDB).
func shutdownRedis(port: Int) {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
    guard connected else { return }
    let command = Array("SHUTDOWN NOSAVE\r\n".utf8)
    _ = command.withUnsafeBytes { send(s, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
}

/// Polls PING on a fresh TCP connection until Redis answers or the timeout passes.
func waitForRedis(port: Int, timeoutMs: Int) -> Bool {
    let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
    while Date() < deadline {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
        if connected {
            let ping = Array("PING\r\n".utf8)
            _ = ping.withUnsafeBytes { send(s, $0.baseAddress, $0.count, 0) }
            var buf = [UInt8](repeating: 0, count: 64)
            let n = buf.withUnsafeMutableBytes { recv(s, $0.baseAddress, $0.count, 0) }
            close(s)
            if n > 0 && String(decoding: buf[0..<n], as: UTF8.self).hasPrefix("+PONG") { return true }
        } else {
            close(s)
        }
        usleep(50_000)
    }
    return false
}

/// Counts child exits; calls `done` once when all have exited.
final class ExitCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining: Int
    private let done: @Sendable () -> Void
    init(total: Int, done: @escaping @Sendable () -> Void) { remaining = total; self.done = done }
    func one() {
        lock.lock(); remaining -= 1; let fire = remaining == 0; lock.unlock()
        if fire { done() }
    }
}

/// Waits for a child without spinning (Foundation's `waitUntilExit` busy-polls a run loop on Linux).
func waitExit(_ p: Process) {
    while p.isRunning { usleep(5_000) }
}
