// Starts a private redis-server on a free loopback port in a temporary directory.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

final class RedisServer {
    let port: UInt16
    private let process: Process
    private let directory: URL

    init() throws {
        let path = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let path else { throw RESPError(description: "redis-server not found") }
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("qlua-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try RedisServer.freePort()
        process = Process()
        let arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", directory.path]
        // setpriv --pdeathsig: if the test process dies without tearDown (a crash), the
        // kernel kills the server too instead of leaving an orphan.
        let setpriv = "/usr/bin/setpriv"
        if FileManager.default.isExecutableFile(atPath: setpriv) {
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--pdeathsig", "KILL", path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
        }
        process.currentDirectoryURL = directory
        // Never a pipe: an orphan holding it would hang `swift test`.
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait (bounded) until it accepts connections.
        for _ in 0..<200 {
            if let client = try? RESPClient(port: port), (try? client.command(["PING"])) == .simple("PONG") {
                return
            }
            usleep(20_000)
        }
        stop()
        throw RESPError(description: "redis-server did not start on port \(port)")
    }

    func client() throws -> RESPClient { try RESPClient(port: port) }

    /// SHUTDOWN NOSAVE (a redis started from async code ignores SIGTERM), SIGKILL fallback.
    func stop() {
        if process.isRunning, let client = try? RESPClient(port: port) {
            _ = try? client.command(["SHUTDOWN", "NOSAVE"])
        }
        for _ in 0..<100 where process.isRunning { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }

    /// A free loopback port below Linux's ephemeral range (32768-60999), so no outgoing
    /// connection can take it between this check and redis-server's bind.
    private static func freePort() throws -> UInt16 {
        for _ in 0..<500 {
            let port = UInt16.random(in: 20_000..<32_000)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if ok { return port }
        }
        throw RESPError(description: "no free port in 20000-32000")
    }
}
