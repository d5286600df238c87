import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - A small blocking HTTP/1.1 client (keep-alive)
//
// Used by the CLI, the load generator (one client per thread) and the tests. Not for the
// node's own loop: the node never blocks.

public struct HTTPResponse: Sendable {
    public let status: Int
    public let headers: [String: String]
    public let body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
    public var json: JSONValue? { try? JSONParser.parse(body) }
}

public final class HTTPClient {
    public let host: String
    public let port: Int
    public var timeoutMs: Int
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []
    /// One receive buffer per client, reused by every read.
    private var scratch = [UInt8](repeating: 0, count: 64 * 1024)

    public init(host: String, port: Int, timeoutMs: Int = 15_000) {
        self.host = host; self.port = port; self.timeoutMs = timeoutMs
    }

    /// `http://host:port` (a trailing path is ignored).
    public convenience init?(url: String, timeoutMs: Int = 15_000) {
        guard url.hasPrefix("http://") else { return nil }
        var rest = url.dropFirst("http://".count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) else {
            self.init(host: String(rest), port: 80, timeoutMs: timeoutMs); return
        }
        self.init(host: String(rest[..<colon]), port: port, timeoutMs: timeoutMs)
    }

    deinit { close() }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        buffer.removeAll()
    }

    private func connect() throws {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { throw RuntimeError("cannot resolve \(host)") }
        defer { freeaddrinfo(result) }
        let s = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard s >= 0 else { throw RuntimeError("socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        guard Glibc.connect(s, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(s)
            throw RuntimeError("cannot connect to \(host):\(port): \(reason)")
        }
        fd = s
    }

    public func get(_ path: String) throws -> HTTPResponse { try request("GET", path) }
    public func post(_ path: String, _ body: JSONValue) throws -> HTTPResponse { try request("POST", path, body: body.bytes) }
    public func post(_ path: String, json: String) throws -> HTTPResponse { try request("POST", path, body: Array(json.utf8)) }

    /// Sends one request and reads the whole response. Reconnects once if a kept-alive
    /// connection turned out to be closed.
    public func request(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = []) throws -> HTTPResponse {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        var bytes = Array(head.utf8)
        if let body { bytes += body }
        for attempt in 0..<2 {
            do {
                if fd < 0 { try connect() }
                try sendAll(bytes)
                return try readResponse(method: method)
            } catch let error as StaleConnection {
                close()
                if attempt == 1 { throw RuntimeError("connection closed: \(error.reason)") }
            } catch {
                close()
                throw error
            }
        }
        throw RuntimeError("unreachable")
    }

    private struct StaleConnection: Error { let reason: String }

    private func sendAll(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw StaleConnection(reason: String(cString: strerror(errno))) }
            sent += n
        }
    }

    private func fill(allowStale: Bool) throws {
        let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 {
            if allowStale { throw StaleConnection(reason: "closed by peer") }
            throw RuntimeError("connection closed by peer")
        }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw RuntimeError("timed out after \(timeoutMs) ms") }
            if allowStale { throw StaleConnection(reason: String(cString: strerror(errno))) }
            throw RuntimeError("recv: \(String(cString: strerror(errno)))")
        }
        buffer.append(contentsOf: scratch[0..<n])
    }

    private func readResponse(method: String) throws -> HTTPResponse {
        var headerEnd: Int?
        var first = true
        while headerEnd == nil {
            if let idx = findCRLFCRLF() { headerEnd = idx; break }
            if buffer.count > 1 << 20 { throw RuntimeError("response headers too large") }
            try fill(allowStale: first && buffer.isEmpty)
            first = false
        }
        guard let (status, headers) = HTTPClient.parseHead(buffer[0..<headerEnd!]) else { throw RuntimeError("bad status line") }
        buffer.removeFirst(headerEnd! + 4)
        var body: [UInt8] = []
        if method == "HEAD" {
        } else if let lengthText = headers["content-length"], let length = Int(lengthText) {
            while buffer.count < length { try fill(allowStale: false) }
            body = Array(buffer[0..<length])
            buffer.removeFirst(length)
        } else if headers["transfer-encoding"]?.lowercased() == "chunked" {
            body = try readChunked()
        } else {
            while true {
                do { try fill(allowStale: false) } catch { break }
            }
            body = buffer
            buffer.removeAll()
            close()
        }
        if headers["connection"]?.lowercased() == "close" { close() }
        return HTTPResponse(status: status, headers: headers, body: body)
    }

    private func readChunked() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            var lineEnd: Int?
            while lineEnd == nil {
                lineEnd = findCRLF()
                if lineEnd == nil { try fill(allowStale: false) }
            }
            let sizeText = String(decoding: buffer[0..<lineEnd!], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { throw RuntimeError("bad chunk") }
            buffer.removeFirst(lineEnd! + 2)
            while buffer.count < size + 2 { try fill(allowStale: false) }
            body += buffer[0..<size]
            buffer.removeFirst(size + 2)
            if size == 0 { return body }
        }
    }

    /// Status and headers (names lowercased, values trimmed) of a response head, parsed on
    /// bytes: the load generator reads every response through this.
    static func parseHead(_ head: ArraySlice<UInt8>) -> (Int, [String: String])? {
        let bytes = Array(head)
        var lines: [Range<Int>] = []
        var start = 0
        var i = 0
        while i < bytes.count {
            if bytes[i] == 13 && i + 1 < bytes.count && bytes[i + 1] == 10 {
                lines.append(start..<i)
                i += 2
                start = i
            } else {
                i += 1
            }
        }
        if start < bytes.count { lines.append(start..<bytes.count) }
        // "HTTP/1.1 200 OK"
        guard let statusLine = lines.first, let space = bytes[statusLine].firstIndex(of: 0x20),
              space + 4 <= statusLine.upperBound else { return nil }
        var status = 0
        for j in (space + 1)..<(space + 4) {
            let c = bytes[j]
            guard c >= 0x30 && c <= 0x39 else { return nil }
            status = status * 10 + Int(c - 0x30)
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = bytes[line].firstIndex(of: 0x3A) else { continue }
            let name = bytes[line.lowerBound..<colon].map { ($0 >= 0x41 && $0 <= 0x5A) ? $0 + 32 : $0 }
            var from = colon + 1, to = line.upperBound
            while from < to && (bytes[from] == 0x20 || bytes[from] == 0x09) { from += 1 }
            while to > from && (bytes[to - 1] == 0x20 || bytes[to - 1] == 0x09) { to -= 1 }
            headers[String(decoding: name, as: UTF8.self)] = String(decoding: bytes[from..<to], as: UTF8.self)
        }
        return (status, headers)
    }

    private func findCRLFCRLF() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i }
        return nil
    }

    private func findCRLF() -> Int? {
        guard buffer.count >= 2 else { return nil }
        for i in 0...(buffer.count - 2) where buffer[i] == 13 && buffer[i + 1] == 10 { return i }
        return nil
    }
}
