import Foundation
import Logging
import XCTest
@testable import Runtime

/// The server writes each reply as soon as it is answered (`HTTPRequest.writeNow`) rather than
/// waiting for evhttp's write event. These requests go over real loopback sockets: pipelined
/// requests answered synchronously and later, a POST, a reply far larger than the socket buffer
/// (the partial-write path), HTTP/1.0 and `Connection: close` (evhttp closes the connection
/// from inside the callback that writes).
final class HTTPServerWriteTests: XCTestCase {
    private static let bigBytes = 8 << 20

    private func withServer(_ body: (Int) throws -> Void) throws {
        let port = try freePort()
        let ready = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var handle: LoopHandle?
        nonisolated(unsafe) var bindError: Error?
        let thread = Thread {
            let loop = EventLoop()
            let server = HTTPServer(loop: loop, logger: Logger(label: "test"))
            let router = Router()
            router.add(.GET, "/sync") { request, _ in request.respond(200, text: "sync") }
            router.add(.GET, "/later") { request, _ in loop.after(ms: 2) { request.respond(200, text: "later") } }
            router.add(.GET, "/big") { request, _ in
                request.respond(200, bytes: [UInt8](repeating: 0x62, count: HTTPServerWriteTests.bigBytes), contentType: "text/plain", headers: [])
            }
            router.add(.POST, "/echo") { request, _ in request.respond(200, bytes: request.body, contentType: "text/plain", headers: []) }
            server.handler = { router.handle($0) }
            do { try server.bind(host: "127.0.0.1", port: port) } catch { bindError = error }
            handle = loop.handle
            ready.signal()
            if bindError == nil { loop.run() }
            server.close()
        }
        thread.start()
        ready.wait()
        defer { handle?.stop() }
        if let bindError { throw bindError }
        try body(port)
    }

    func testPipelinedRepliesInOrderIncludingALargeOneAndAClose() throws {
        try withServer { port in
            let requests = "GET /sync HTTP/1.1\r\nHost: t\r\n\r\n"
                + "GET /later HTTP/1.1\r\nHost: t\r\n\r\n"
                + "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                + "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
                + "GET /sync HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            let data = try exchange(port: port, Array(requests.utf8))
            let replies = try parseReplies(data)
            XCTAssertEqual(replies.map(\.status), [200, 200, 200, 200, 200])
            XCTAssertEqual(replies.map { $0.body.count == HTTPServerWriteTests.bigBytes ? "big" : String(decoding: $0.body, as: UTF8.self) },
                           ["sync", "later", "hello", "big", "sync"])
            XCTAssertTrue(replies[3].body.allSatisfy { $0 == 0x62 })
        }
    }

    func testHTTP10WithoutKeepAliveGetsItsReplyThenClose() throws {
        try withServer { port in
            let replies = try parseReplies(try exchange(port: port, Array("GET /sync HTTP/1.0\r\n\r\n".utf8)))
            XCTAssertEqual(replies.map(\.status), [200])
            XCTAssertEqual(replies.first.map { String(decoding: $0.body, as: UTF8.self) }, "sync")
        }
    }

    // MARK: raw sockets

    private func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = loopback(port: 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw RuntimeError("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    private func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }

    /// Sends `request`, then reads until the server closes (bounded by a 10 s receive timeout).
    private func exchange(port: Int, _ request: [UInt8]) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = loopback(port: port)
        let connected = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw RuntimeError("connect failed") }
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, request.count, 0) }
        guard sent == request.count else { throw RuntimeError("short send") }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while out.count < 64 << 20 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw RuntimeError("recv failed or timed out after \(out.count) bytes") }
            out += chunk[0..<n]
        }
        return out
    }

    private func parseReplies(_ data: [UInt8]) throws -> [(status: Int, body: [UInt8])] {
        var replies: [(status: Int, body: [UInt8])] = []
        var at = 0
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        while at < data.count {
            guard let headEnd = (at..<(data.count - 3)).first(where: { Array(data[$0..<($0 + 4)]) == separator }) else {
                throw RuntimeError("truncated head")
            }
            let head = String(decoding: data[at..<headEnd], as: UTF8.self)
            let lines = head.components(separatedBy: "\r\n")
            guard let status = lines.first.flatMap({ Int($0.split(separator: " ")[1]) }),
                  let lengthLine = lines.first(where: { $0.lowercased().hasPrefix("content-length:") }),
                  let length = Int(lengthLine.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) else {
                throw RuntimeError("bad head: \(head)")
            }
            let bodyStart = headEnd + 4
            guard bodyStart + length <= data.count else { throw RuntimeError("truncated body") }
            replies.append((status, Array(data[bodyStart..<(bodyStart + length)])))
            at = bodyStart + length
        }
        return replies
    }
}
