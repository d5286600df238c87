import Foundation
import XCTest
@testable import Runtime

// MARK: - Test support: a real redis-server, real node processes, real HTTP on loopback.

enum TestError: Error, CustomStringConvertible {
    case timeout(String)
    case failed(String)
    var description: String {
        switch self { case .timeout(let s): return "timed out: \(s)"; case .failed(let s): return s }
    }
}

/// Waits until `condition` holds, polling every 20 ms, or fails after `seconds`.
@discardableResult
func waitUntil(_ what: String, seconds: Double, _ condition: () throws -> Bool) throws -> Double {
    let start = Date()
    let deadline = start.addingTimeInterval(seconds)
    var lastError: Error?
    while Date() < deadline {
        do { if try condition() { return Date().timeIntervalSince(start) } } catch { lastError = error }
        usleep(20_000)
    }
    throw TestError.timeout("\(what) within \(seconds) s" + (lastError.map { " (last error: \($0))" } ?? ""))
}

/// A free TCP port below Linux's ephemeral range (32768-60999): a port from that range can be
/// taken as the source port of some outgoing connection between our check and the server's
/// bind, which once made a node fail with "Address already in use".
func freeTCPPort() -> Int { freeTCPPorts(1)[0] }

/// Consecutive free ports (checked one by one), below the ephemeral range.
func freeTCPPorts(_ n: Int) -> [Int] {
    for _ in 0..<500 {
        let base = Int.random(in: 20_000..<(32_000 - n))
        let ports = (0..<n).map { base + $0 }
        if ports.allSatisfy(isPortFree) { return ports }
    }
    fatalError("no \(n) consecutive free ports in 20000-32000")
}

func isPortFree(_ port: Int) -> Bool {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(s) }
    var one: Int32 = 1
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
}

/// The built `concord` executable, beside the test bundle.
var concordExecutable: String {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("concord").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return exe.deletingLastPathComponent().appendingPathComponent("concord").path
}

var repositoryRoot: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// A real redis-server on a free loopback port in its own temporary directory.
final class RedisServer {
    let port: Int
    let dir: URL
    let aof: Bool
    private var process: Process?

    init(aof: Bool = false) throws {
        port = freeTCPPort()
        aof_ = aof
        self.aof = aof
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("concord-test-redis-\(port)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try start()
    }
    private let aof_: Bool

    var url: String { "redis://127.0.0.1:\(port)/0" }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.serverPath)
        p.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir.path, "--save", "", "--appendonly", aof ? "yes" : "no",
                       "--appendfsync", "always", "--logfile", dir.appendingPathComponent("redis.log").path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        try waitUntil("redis-server on \(port) answers PING", seconds: 10) { (try? cli("PING")) == "PONG" }
    }

    static var serverPath: String {
        for p in ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"] where FileManager.default.isExecutableFile(atPath: p) { return p }
        return "redis-server"
    }

    /// SHUTDOWN NOSAVE (a server started from a test may ignore SIGTERM), SIGKILL as fallback.
    func stop() {
        guard let p = process else { return }
        _ = try? cli("SHUTDOWN", "NOSAVE")
        let deadline = Date().addingTimeInterval(3)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        process = nil
    }

    func restart() throws {
        stop()
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }

    /// One command through a raw RESP connection; returns a flattened text form.
    @discardableResult
    func cli(_ args: String...) throws -> String { try command(args) }

    func command(_ args: [String]) throws -> String {
        let client = RESPTestClient(port: port)
        defer { client.close() }
        return try client.command(args)
    }
}

/// A minimal blocking RESP client for assertions against Redis.
final class RESPTestClient {
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []

    init(port: Int) {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let ok = withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
        if ok { fd = s } else { Glibc.close(s) }
    }

    func close() { if fd >= 0 { Glibc.close(fd) }; fd = -1 }

    func command(_ args: [String]) throws -> String {
        guard fd >= 0 else { throw TestError.failed("redis not reachable") }
        var out = "*\(args.count)\r\n"
        for a in args { out += "$\(a.utf8.count)\r\n\(a)\r\n" }
        let bytes = Array(out.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        return try readValue()
    }

    /// The next value Redis pushes (a pub/sub message after SUBSCRIBE), flattened as above;
    /// throws when none arrives within the 5 s receive timeout.
    func nextPush() throws -> String { try readValue() }

    private func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 10), i > 0, buffer[i - 1] == 13 {
                let s = String(decoding: buffer[0..<(i - 1)], as: UTF8.self)
                buffer.removeFirst(i + 1)
                return s
            }
            try fill()
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw TestError.failed("redis connection closed") }
        buffer += chunk[0..<n]
    }

    private func readValue() throws -> String {
        let l = try line()
        guard let kind = l.first else { throw TestError.failed("empty reply") }
        let rest = String(l.dropFirst())
        switch kind {
        case "+", ":": return rest
        case "-": throw TestError.failed("redis error: \(rest)")
        case "$":
            let n = Int(rest) ?? -1
            if n < 0 { return "(nil)" }
            while buffer.count < n + 2 { try fill() }
            let s = String(decoding: buffer[0..<n], as: UTF8.self)
            buffer.removeFirst(n + 2)
            return s
        case "*":
            let n = Int(rest) ?? -1
            if n < 0 { return "(nil)" }
            var items: [String] = []
            for _ in 0..<n { items.append(try readValue()) }
            return items.joined(separator: "\n")
        default: throw TestError.failed("unknown reply \(l)")
        }
    }
}

/// A real `concord node` process.
final class NodeProcess {
    let id: String
    let port: Int
    var arguments: [String]
    var environment: [String: String] = [:]
    let logURL: URL
    private(set) var process: Process?

    init(id: String, port: Int, arguments: [String], logDir: URL) {
        self.id = id
        self.port = port
        self.arguments = arguments
        self.logURL = logDir.appendingPathComponent("\(id).log")
    }

    var url: String { "http://127.0.0.1:\(port)" }
    func client(timeoutMs: Int = 15_000) -> HTTPClient { HTTPClient(host: "127.0.0.1", port: port, timeoutMs: timeoutMs) }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: concordExecutable)
        p.arguments = ["node", "--id", id, "--listen", "127.0.0.1:\(port)"] + arguments
        var env = ProcessInfo.processInfo.environment
        env["CONCORD_LUA_DIR"] = repositoryRoot.appendingPathComponent("lua").path
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if !FileManager.default.fileExists(atPath: logURL.path) { _ = FileManager.default.createFile(atPath: logURL.path, contents: nil) }
        let log = try FileHandle(forWritingTo: logURL)
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
    }

    func waitHealthy(seconds: Double = 15) throws {
        try waitUntil("\(id) /health 200", seconds: seconds) { (try? client(timeoutMs: 1000).get("/health").status) == 200 }
    }

    func signal(_ sig: Int32) { if let p = process, p.isRunning { kill(p.processIdentifier, sig) } }

    /// SIGKILL and reap.
    func kill9() {
        guard let p = process else { return }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        process = nil
    }

    /// SIGTERM and wait for the exit status.
    @discardableResult
    func stop(seconds: Double = 8) -> Int32? {
        guard let p = process else { return nil }
        if p.isRunning { kill(p.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit(); process = nil; return nil }
        process = nil
        return p.terminationStatus
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    deinit { kill9() }
}

/// N nodes sharing one Redis, ids n1..nN, every one a voter.
final class TestCluster {
    let redis: RedisServer
    var nodes: [NodeProcess] = []
    let logDir: URL
    let cluster: String

    init(nodes count: Int, redis: RedisServer? = nil, extraArguments: [String] = [], aof: Bool = false, environment: [String: String] = [:]) throws {
        self.redis = try redis ?? RedisServer(aof: aof)
        cluster = "t\(UInt32.random(in: 0..<UInt32.max))"
        logDir = FileManager.default.temporaryDirectory.appendingPathComponent("concord-test-logs-\(cluster)")
        try FileManager.default.createDirectory(at: logDir, withIntermediateDirectories: true)
        let ports = freeTCPPorts(count)
        let ids = (1...count).map { "n\($0)" }
        for (i, id) in ids.enumerated() {
            let node = NodeProcess(id: id, port: ports[i], arguments: ["--redis", self.redis.url, "--cluster", cluster, "--members", ids.joined(separator: ",")] + extraArguments, logDir: logDir)
            node.environment = environment
            nodes.append(node)
        }
        for n in nodes { try n.start() }
        for n in nodes { try n.waitHealthy() }
    }

    func node(_ id: String) -> NodeProcess { nodes.first { $0.id == id }! }

    func stopAll() { for n in nodes { n.kill9() } }

    /// Dumps node logs into the test output when a test fails.
    func dumpLogs() -> String { nodes.map { "---- \($0.id) ----\n" + String($0.log.suffix(4000)) }.joined(separator: "\n") }

    deinit { stopAll() }
}

/// Sends raw bytes to a port and returns whatever comes back before the peer closes or the timeout.
func rawHTTP(port: Int, _ bytes: [UInt8], readTimeoutMs: Int = 2000, closeWrite: Bool = false) -> String {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(s) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var tv = timeval(tv_sec: readTimeoutMs / 1000, tv_usec: (readTimeoutMs % 1000) * 1000)
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    guard withUnsafePointer(to: &addr, { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }) else { return "" }
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { send(s, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }
        sent += n
    }
    if closeWrite { shutdown(s, Int32(SHUT_WR)) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { recv(s, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        out += chunk[0..<n]
        if out.count > 1 << 20 { break }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Runs the `concord` executable with `args` (no CONCORD_* variables from this process but
/// the Lua directory and `env`); returns its exit status and stdout + stderr together. Killed
/// after `timeout` seconds.
func runConcord(_ args: [String], env: [String: String] = [:], timeout: Double = 20) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: concordExecutable)
    p.arguments = args
    var e = ProcessInfo.processInfo.environment
    for k in e.keys where k.hasPrefix("CONCORD_") { e[k] = nil }
    e["CONCORD_LUA_DIR"] = repositoryRoot.appendingPathComponent("lua").path
    for (k, v) in env { e[k] = v }
    p.environment = e
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("concord-cli-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: out) }
    let h = try FileHandle(forWritingTo: out)
    defer { try? h.close() }
    p.standardOutput = h
    p.standardError = h
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
    return (p.terminationStatus, (try? String(contentsOf: out, encoding: .utf8)) ?? "")
}
