// A small blocking RESP2 client over a POSIX socket, enough to drive the queue scripts
// against a real redis-server in tests. One command (or one pipelined batch) at a time.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One RESP2 reply. Bulk strings keep their bytes so DUMP payloads compare exactly.
enum RESP: Equatable, CustomStringConvertible {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk([UInt8]?)
    case array([RESP]?)

    var string: String? {
        switch self {
        case .simple(let s): return s
        case .bulk(let b?): return String(decoding: b, as: UTF8.self)
        case .integer(let i): return String(i)
        default: return nil
        }
    }
    var int: Int? {
        switch self {
        case .integer(let i): return i
        case .bulk, .simple: return string.flatMap { Int($0) }
        default: return nil
        }
    }
    var array: [RESP]? {
        if case .array(let a?) = self { return a }
        return nil
    }
    var errorMessage: String? {
        if case .error(let m) = self { return m }
        return nil
    }
    var description: String {
        switch self {
        case .simple(let s): return "+\(s)"
        case .error(let s): return "-\(s)"
        case .integer(let i): return ":\(i)"
        case .bulk(nil): return "(nil)"
        case .bulk(let b?): return "\"\(String(decoding: b, as: UTF8.self))\""
        case .array(nil): return "(nil array)"
        case .array(let a?): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

struct RESPError: Error, CustomStringConvertible {
    let description: String
}

final class RESPClient {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var position = 0

    /// Connects to 127.0.0.1:port; receive timeout 10 s so a broken test never hangs.
    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RESPError(description: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let code = errno
            close(fd)
            throw RESPError(description: "connect to port \(port): errno \(code)")
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Sends one command and reads its reply: `*N\r\n$len\r\narg\r\n...`.
    func command(_ args: [String]) throws -> RESP {
        try send([args])
        return try readReply()
    }

    /// Writes several commands without reading (pipelining); read their replies with readReply().
    func send(_ commands: [[String]]) throws {
        var out: [UInt8] = []
        for args in commands {
            out += Array("*\(args.count)\r\n".utf8)
            for arg in args {
                let bytes = Array(arg.utf8)
                out += Array("$\(bytes.count)\r\n".utf8)
                out += bytes
                out += [13, 10]
            }
        }
        var sent = 0
        while sent < out.count {
            let n = out.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + sent, out.count - sent, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw RESPError(description: "send: errno \(errno)") }
            sent += n
        }
    }

    func readReply() throws -> RESP {
        let line = try readLine()
        guard let kind = line.first else { throw RESPError(description: "empty reply line") }
        let rest = String(decoding: line.dropFirst(), as: UTF8.self)
        switch kind {
        case UInt8(ascii: "+"): return .simple(rest)
        case UInt8(ascii: "-"): return .error(rest)
        case UInt8(ascii: ":"):
            guard let i = Int(rest) else { throw RESPError(description: "bad integer \(rest)") }
            return .integer(i)
        case UInt8(ascii: "$"):
            guard let n = Int(rest) else { throw RESPError(description: "bad bulk length \(rest)") }
            if n < 0 { return .bulk(nil) }
            let bytes = try readBytes(n + 2)
            return .bulk(Array(bytes.prefix(n)))
        case UInt8(ascii: "*"):
            guard let n = Int(rest) else { throw RESPError(description: "bad array length \(rest)") }
            if n < 0 { return .array(nil) }
            var items: [RESP] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try readReply()) }
            return .array(items)
        default:
            throw RESPError(description: "unknown reply type \(kind)")
        }
    }

    private func fill() throws {
        if position > 0 && position == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            position = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
        guard n > 0 else { throw RESPError(description: n == 0 ? "connection closed" : "recv: errno \(errno)") }
        buffer += chunk.prefix(n)
    }

    private func readLine() throws -> ArraySlice<UInt8> {
        while true {
            if let end = buffer[position...].firstIndex(of: 10), end > position, buffer[end - 1] == 13 {
                let line = buffer[position..<(end - 1)]
                position = end + 1
                return line
            }
            try fill()
        }
    }

    private func readBytes(_ count: Int) throws -> ArraySlice<UInt8> {
        while buffer.count - position < count { try fill() }
        let bytes = buffer[position..<(position + count)]
        position += count
        return bytes
    }
}
