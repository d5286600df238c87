import CLibevent
import Foundation
import Logging

// MARK: - HTTP server (evhttp)
//
// evhttp parses requests on the loop; `HTTPServer` turns each into an `HTTPRequest` that is
// answered exactly once, before its deadline: a handler that has not answered by then gets
// a 503 `unavailable` sent for it.

public enum HTTPMethod: String, Sendable {
    case GET, POST, HEAD, PUT, DELETE, OPTIONS, TRACE, CONNECT, PATCH, UNKNOWN
}

public struct HTTPError: Error, Sendable {
    public let status: Int
    public let code: String
    public let message: String
    public var extra: [(String, JSONValue)] = []
    public var retryAfterSeconds: Int?
    /// Response headers the error carries besides `Retry-After` (a 405's `Allow`).
    public var headers: [(String, String)] = []

    public init(_ status: Int, _ code: String, _ message: String, extra: [(String, JSONValue)] = [], retryAfterSeconds: Int? = nil) {
        self.status = status; self.code = code; self.message = message; self.extra = extra
        self.retryAfterSeconds = retryAfterSeconds ?? (status == 503 ? 1 : nil)
    }

    public static func badRequest(_ message: String) -> HTTPError { HTTPError(400, "bad_request", message) }
    public static func notFound(_ message: String = "not found") -> HTTPError { HTTPError(404, "not_found", message) }
    public static func unavailable(_ message: String) -> HTTPError { HTTPError(503, "unavailable", message) }

    public var body: JSONValue {
        .object([("error", .string(code)), ("message", .string(message))] + extra)
    }
}

private let connectionClosedTrampoline: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { connection, arg in
    guard let connection, let arg else { return }
    Unmanaged<HTTPServer>.fromOpaque(arg).takeUnretainedValue().connectionClosed(connection)
}

private let requestTrampoline: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { req, arg in
    guard let req, let arg else { return }
    let server = Unmanaged<HTTPServer>.fromOpaque(arg).takeUnretainedValue()
    server.accept(req)
}

public final class HTTPServer {
    public static let maxBodyBytes = 1 << 20
    /// evhttp itself refuses bodies above this (with its own 413 page); between maxBodyBytes
    /// and this, the handler answers the contract's JSON 413.
    static let hardBodyLimitBytes = 4 << 20

    private let loop: EventLoop
    private var http: OpaquePointer?
    public var requestDeadlineMs: Int = 10_000
    public var handler: ((HTTPRequest) -> Void)?
    public private(set) var inFlight = 0
    public private(set) var accepting = true
    /// At most this many client connections with a request seen; at the bound the listener
    /// stops accepting (new clients wait in the kernel's backlog) until one closes.
    public var maxConnections = 1024
    private var connections: Set<OpaquePointer> = []
    private var listener: OpaquePointer?
    private var listening = true
    public var connectionCount: Int { connections.count }
    let logger: Logger

    public init(loop: EventLoop, logger: Logger) {
        self.loop = loop
        self.logger = logger
        http = evhttp_new(loop.base)
        guard let http else { fatalError("evhttp_new failed") }
        evhttp_set_max_body_size(http, HTTPServer.hardBodyLimitBytes)
        evhttp_set_max_headers_size(http, 64 * 1024)
        evhttp_set_timeout(http, 60) // idle / slow clients (also a truncated body)
        // Every bit, including libevent's internal EVHTTP_REQ_UNKNOWN_ (1 << 15): a method token
        // evhttp does not know then reaches the router (405 on a known path) instead of
        // evhttp's own 501 page.
        evhttp_set_allowed_methods(http, 0xFFFF)
        evhttp_set_gencb(http, requestTrampoline, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Binds the listening socket. Throws with a reason on failure.
    public func bind(host: String, port: Int) throws {
        guard let http else { throw RuntimeError("server closed") }
        guard let bound = evhttp_bind_socket_with_handle(http, host, UInt16(port)) else {
            throw RuntimeError("cannot listen on \(host):\(port): \(String(cString: strerror(errno)))")
        }
        listener = evhttp_bound_socket_get_listener(bound)
    }

    /// Stops accepting new requests: every later request is answered 503 at once.
    public func stopAccepting() { accepting = false }

    /// Frees evhttp (closes listeners and connections). Call on the loop before the base is freed.
    public func close() {
        let h = http
        http = nil
        listener = nil
        if let h { evhttp_free(h) }
        connections.removeAll()
    }

    fileprivate func accept(_ raw: OpaquePointer) {
        track(raw)
        let request = HTTPRequest(raw: raw, server: self)
        inFlight += 1
        if !accepting {
            request.fail(HTTPError.unavailable("node is shutting down"))
            return
        }
        if request.bodyTooLarge {
            request.fail(HTTPError(413, "too_large", "body over \(HTTPServer.maxBodyBytes) bytes"))
            return
        }
        handler?(request)
        // Most answers are synchronous; only a request still open gets a deadline timer.
        if !request.isDone && request.deadlineTimer == nil { rearm(request, ms: requestDeadlineMs) }
    }

    private func track(_ raw: OpaquePointer) {
        guard let connection = evhttp_request_get_connection(raw), !connections.contains(connection) else { return }
        connections.insert(connection)
        evhttp_connection_set_closecb(connection, connectionClosedTrampoline, Unmanaged.passUnretained(self).toOpaque())
        if connections.count >= maxConnections, listening, let listener {
            evconnlistener_disable(listener)
            listening = false
            logger.warning("connection bound reached; not accepting", metadata: ["connections": "\(connections.count)"])
        }
    }

    fileprivate func connectionClosed(_ connection: OpaquePointer) {
        guard connections.remove(connection) != nil else { return }
        if !listening, connections.count < maxConnections, let listener, http != nil {
            evconnlistener_enable(listener)
            listening = true
        }
    }

    fileprivate func rearm(_ request: HTTPRequest, ms: Int) {
        request.deadlineTimer?.cancel()
        request.deadlineTimer = loop.after(ms: ms) { [weak request] in request?.deadlinePassed() }
    }

    fileprivate func finished(_ request: HTTPRequest) {
        inFlight -= 1
        onFinish?(request)
    }

    /// Observes every answered request (metrics, logs).
    public var onFinish: ((HTTPRequest) -> Void)?
}

public struct RuntimeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One HTTP request. Answer it exactly once with `respond` or `fail`; later answers are ignored.
public final class HTTPRequest {
    private var raw: OpaquePointer?
    private weak var server: HTTPServer?
    public let method: HTTPMethod
    public let methodText: String
    /// Percent-decoded path segments are produced by the router; this is the raw path.
    public let path: String
    public let query: [String: String]
    /// The name of the first query parameter whose name or value is not valid
    /// percent-encoding; the router answers such a request 400.
    public let malformedQueryParameter: String?
    public let body: [UInt8]
    public let bodyTooLarge: Bool
    public let startMicros: Int64
    public var route: String = "unmatched"
    public private(set) var status = 0
    fileprivate var deadlineTimer: LoopTimer?
    public private(set) var isDone = false
    /// Runs if the request is answered by its deadline rather than its handler.
    public var onAbandon: (() -> Void)?

    fileprivate init(raw: OpaquePointer, server: HTTPServer) {
        self.raw = raw
        self.server = server
        self.startMicros = EventLoop.monoMicros()
        let cmd = evhttp_request_get_command(raw)
        switch cmd {
        case EVHTTP_REQ_GET: method = .GET
        case EVHTTP_REQ_POST: method = .POST
        case EVHTTP_REQ_HEAD: method = .HEAD
        case EVHTTP_REQ_PUT: method = .PUT
        case EVHTTP_REQ_DELETE: method = .DELETE
        case EVHTTP_REQ_OPTIONS: method = .OPTIONS
        case EVHTTP_REQ_TRACE: method = .TRACE
        case EVHTTP_REQ_CONNECT: method = .CONNECT
        case EVHTTP_REQ_PATCH: method = .PATCH
        default: method = .UNKNOWN
        }
        methodText = method.rawValue
        var path = "/"
        var query: [String: String] = [:]
        var malformedQuery: String?
        if let uriPointer = evhttp_request_get_uri(raw) {
            let length = strlen(uriPointer)
            let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(uriPointer).assumingMemoryBound(to: UInt8.self), count: length)
            if let q = bytes.firstIndex(of: 0x3F) {
                path = String(decoding: UnsafeBufferPointer(rebasing: bytes[..<q]), as: UTF8.self)
                (query, malformedQuery) = HTTPRequest.parseQuery(String(decoding: UnsafeBufferPointer(rebasing: bytes[(q + 1)...]), as: UTF8.self))
            } else {
                path = String(decoding: bytes, as: UTF8.self)
            }
        }
        self.path = path
        self.query = query
        self.malformedQueryParameter = malformedQuery
        var body: [UInt8] = []
        var tooLarge = false
        if let buffer = evhttp_request_get_input_buffer(raw) {
            let length = evbuffer_get_length(buffer)
            if length > HTTPServer.maxBodyBytes {
                tooLarge = true
            } else if length > 0 {
                body = [UInt8](repeating: 0, count: length)
                _ = body.withUnsafeMutableBytes { evbuffer_copyout(buffer, $0.baseAddress, length) }
            }
        }
        self.body = body
        self.bodyTooLarge = tooLarge
    }

    /// Decodes `a=1&b=x+y` (form style: `+` is a space). `malformed` names the first parameter
    /// whose name or value is not valid percent-encoding (a bad escape such as `%ZZ`,
    /// or bytes that are not UTF-8); that parameter is left out of `values`.
    static func parseQuery(_ text: String) -> (values: [String: String], malformed: String?) {
        var out: [String: String] = [:]
        var malformed: String?
        for pair in text.split(separator: "&", maxSplits: 64, omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            let value = parts.count > 1 ? String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding : ""
            guard let key, let value else {
                if malformed == nil { malformed = String((key ?? String(parts[0])).prefix(64)) }
                continue
            }
            out[key] = value
        }
        return (out, malformed)
    }

    /// Whether the client has closed its side of the connection (FIN or reset) while this
    /// request waits for its answer, seen with a non-consuming peek at the socket. A pipelined
    /// next request waiting unread counts as open. A client that half-closes and still reads
    /// counts as gone, as nginx and Go's net/http treat it.
    public var peerClosed: Bool {
        guard !isDone, let raw, let connection = evhttp_request_get_connection(raw),
              let bev = evhttp_connection_get_bufferevent(connection) else { return false }
        let fd = bufferevent_getfd(bev)
        guard fd >= 0 else { return true }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
        if n == 0 { return true }
        if n < 0 { return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR }
        return false
    }

    /// Replaces the request's deadline (e.g. a lock acquire that may wait `wait_ms`).
    public func extendDeadline(ms: Int) {
        guard !isDone else { return }
        server?.rearm(self, ms: ms)
    }

    public func header(_ name: String) -> String? {
        guard let raw, let headers = evhttp_request_get_input_headers(raw), let v = evhttp_find_header(headers, name) else { return nil }
        return String(cString: v)
    }

    /// Parses the body as a JSON object, or throws a 400 naming the problem.
    /// The body as a JSON object; members named `rawMembers` come as `.raw` text
    /// (`JSONParser.parse(_:rawMembers:)`).
    public func jsonObject(rawMembers: String? = nil) throws -> JSONValue {
        guard !body.isEmpty else { throw HTTPError.badRequest("request body must be a JSON object") }
        let value: JSONValue
        do { value = try JSONParser.parse(body, rawMembers: rawMembers) } catch let error as JSONParseError {
            throw HTTPError.badRequest("malformed JSON: \(error.description)")
        }
        guard case .object = value else { throw HTTPError.badRequest("request body must be a JSON object") }
        return value
    }

    public func respond(_ status: Int, _ json: JSONValue, headers: [(String, String)] = []) {
        respond(status, bytes: json.bytes, contentType: "application/json", headers: headers)
    }

    public func respond(_ status: Int, text: String, contentType: String = "text/plain; charset=utf-8") {
        respond(status, bytes: Array(text.utf8), contentType: contentType, headers: [])
    }

    public func fail(_ error: HTTPError) {
        var headers: [(String, String)] = []
        if let retry = error.retryAfterSeconds { headers.append(("Retry-After", String(retry))) }
        headers += error.headers
        respond(error.status, error.body, headers: headers)
    }

    /// The deadline answers 503 for a handler that did not, and tells it (`onAbandon`).
    fileprivate func deadlinePassed() {
        guard !isDone else { return }
        fail(HTTPError(503, "unavailable", "request deadline passed", retryAfterSeconds: 1))
        onAbandon?()
    }

    public func respond(_ status: Int, bytes: [UInt8], contentType: String, headers: [(String, String)]) {
        guard !isDone, let raw else { return }
        isDone = true
        self.status = status
        deadlineTimer?.cancel()
        deadlineTimer = nil
        if let out = evhttp_request_get_output_headers(raw) {
            evhttp_add_header(out, "Content-Type", contentType)
            // Given here, evhttp does not format them itself (snprintf, gmtime + strftime) on
            // every reply: Content-Length from the count, Date from a per-second cache.
            evhttp_add_header(out, "Content-Length", String(bytes.count))
            evhttp_add_header(out, "Date", HTTPRequest.dateHeader())
            for (k, v) in headers { evhttp_add_header(out, k, v) }
        }
        if let buffer = evhttp_request_get_output_buffer(raw), !bytes.isEmpty, method != .HEAD {
            bytes.withUnsafeBytes { _ = evbuffer_add(buffer, $0.baseAddress, bytes.count) }
        }
        let connection = evhttp_request_get_connection(raw)
        evhttp_send_reply(raw, Int32(status), HTTPRequest.reason(status), nil)
        self.raw = nil
        if let connection { HTTPRequest.writeNow(connection) }
        server?.finished(self)
    }

    /// Writes the reply evhttp just queued, now, the way Redis writes its replies before it
    /// sleeps. Left alone, evhttp's bufferevent waits for the socket to report writable: one
    /// more loop iteration and two `epoll_ctl` calls per request (enable EPOLLOUT, then back to
    /// EPOLLIN), which were as many syscalls as the request's read and write together.
    ///
    /// The bufferevent keeps the front of its output buffer frozen (only its own write callback
    /// drains it), so it is thawed around the write. If everything went out, the bufferevent's
    /// write callback is run as its own write would have run it: evhttp then finishes the
    /// request (`evhttp_send_done`: frees it, and for a keep-alive connection starts reading the
    /// next one, which disables the write event again). Those enable/disable pairs happen in
    /// this loop iteration, so libevent's changelist cancels them before they reach the kernel.
    /// A partial write (a full socket buffer) is left to the bufferevent to finish as before.
    /// Safe inside the request callback: evhttp touches neither the request nor an incoming
    /// connection after the user's callback returns, and the bufferevent is reference-counted
    /// across its own read callback.
    static func writeNow(_ connection: OpaquePointer) {
        guard let bev = evhttp_connection_get_bufferevent(connection), let output = bufferevent_get_output(bev) else { return }
        let fd = bufferevent_getfd(bev)
        guard fd >= 0, evbuffer_get_length(output) > 0 else { return }
        evbuffer_unfreeze(output, 1)
        let written = evbuffer_write(output, fd)
        evbuffer_freeze(output, 1)
        if written > 0 && evbuffer_get_length(output) == 0 {
            bufferevent_trigger(bev, Int16(EV_WRITE), 0)
        }
    }

    nonisolated(unsafe) private static var dateSecond = 0
    nonisolated(unsafe) private static var dateText = ""

    /// RFC 1123 date of the current second (`Wed, 25 Nov 2026 19:41:00 GMT`); loop thread only.
    static func dateHeader() -> String {
        var now = time(nil)
        if now != dateSecond || dateText.isEmpty {
            var parts = tm()
            gmtime_r(&now, &parts)
            var buffer = [CChar](repeating: 0, count: 64)
            let n = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
            dateText = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            dateSecond = now
        }
        return dateText
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 409: return "Conflict"
        case 413: return "Payload Too Large"
        case 499: return "Client Closed Request"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }
}

// MARK: - Router

/// Routes by method and path pattern (`/lock/status/{resource}`). Path parameters are
/// percent-decoded. Unknown path -> 404; known path with another method -> 405 with `Allow`.
///
/// Empty segments (`//`) are skipped, except a trailing slash where a route has a parameter
/// as its last segment: `/cache/read/` is `/cache/read/{key}` with an empty key (which the
/// handler's name check answers 400), and `/lock/status/` is not `/lock/status`. A trailing
/// slash after a non-empty last segment (`/lock/status/x/`) is ignored as before.
public final class Router {
    public typealias Handler = (HTTPRequest, [String: String]) throws -> Void

    private enum Segment {
        case literal([UInt8])
        case parameter(String)
    }

    private struct Route {
        let method: HTTPMethod
        let pattern: String
        let segments: [Segment]
        let handler: Handler
    }

    private var routes: [Route] = []
    /// At most this many path segments are looked at; a longer path matches no route.
    static let maxSegments = 16

    public init() {}

    public func add(_ method: HTTPMethod, _ pattern: String, _ handler: @escaping Handler) {
        let segments: [Segment] = pattern.split(separator: "/", omittingEmptySubsequences: true).map { p in
            if p.hasPrefix("{") && p.hasSuffix("}") { return .parameter(String(p.dropFirst().dropLast())) }
            return .literal(Array(p.utf8))
        }
        precondition(segments.count <= Router.maxSegments, "route \(pattern) has too many segments")
        routes.append(Route(method: method, pattern: pattern, segments: segments, handler: handler))
    }

    /// What a (method, path) pair resolves to; pure, so routing is unit-tested without sockets.
    public enum Resolution {
        case matched(pattern: String, params: [String: String], handler: Handler)
        /// The path is known; `allowed` lists the methods it accepts (HEAD wherever GET is).
        case methodNotAllowed(allowed: [HTTPMethod])
        case notFound
    }

    /// Matching works on the path's bytes: literal segments are compared without building a
    /// String, and only the matched route's parameters are percent-decoded.
    public func resolve(_ method: HTTPMethod, _ path: String) -> Resolution {
        var path = path
        return path.withUTF8 { bytes -> Resolution in
            // Non-empty segments as byte ranges (like split(omittingEmptySubsequences: true)).
            var ranges: [Range<Int>] = []
            ranges.reserveCapacity(8)
            var i = 0
            let n = bytes.count
            while i < n {
                while i < n && bytes[i] == 0x2F { i += 1 }
                guard i < n else { break }
                let start = i
                while i < n && bytes[i] != 0x2F { i += 1 }
                ranges.append(start..<i)
                if ranges.count > Router.maxSegments { return .notFound }
            }
            // A trailing slash first counts as an empty last segment, for routes whose last
            // segment is a parameter; only when no such route has this path is it skipped.
            if n > 0, bytes[n - 1] == 0x2F, ranges.count < Router.maxSegments,
               let resolution = resolve(method, bytes, ranges, emptyLastParameter: true) {
                return resolution
            }
            return resolve(method, bytes, ranges, emptyLastParameter: false) ?? .notFound
        }
    }

    /// The routes of exactly `ranges` (plus an empty last parameter when `emptyLastParameter`);
    /// nil when no route has this path.
    private func resolve(_ method: HTTPMethod, _ bytes: UnsafeBufferPointer<UInt8>, _ ranges: [Range<Int>], emptyLastParameter: Bool) -> Resolution? {
        let count = ranges.count + (emptyLastParameter ? 1 : 0)
        var allowed: [HTTPMethod] = []
        for route in routes where route.segments.count == count {
            if emptyLastParameter, case .literal = route.segments[count - 1] { continue }
            var same = true
            for (segment, range) in zip(route.segments, ranges) {
                if case .literal(let text) = segment {
                    if text.count != range.count || !text.withUnsafeBufferPointer({ t in
                        memcmp(t.baseAddress!, bytes.baseAddress! + range.lowerBound, range.count) == 0
                    }) { same = false; break }
                }
            }
            guard same else { continue }
            guard route.method == method || (route.method == .GET && method == .HEAD) else {
                allowed.append(route.method)
                continue
            }
            var params: [String: String] = [:]
            for (segment, range) in zip(route.segments, ranges) {
                if case .parameter(let name) = segment {
                    params[name] = Router.percentDecoded(UnsafeBufferPointer(rebasing: bytes[range])) ?? Router.invalidMarker
                }
            }
            if emptyLastParameter, case .parameter(let name) = route.segments[count - 1] { params[name] = "" }
            return .matched(pattern: route.pattern, params: params, handler: route.handler)
        }
        guard !allowed.isEmpty else { return nil }
        var methods: [HTTPMethod] = []
        for m in allowed where !methods.contains(m) {
            methods.append(m)
            if m == .GET && !allowed.contains(.HEAD) { methods.append(.HEAD) }
        }
        return .methodNotAllowed(allowed: methods)
    }

    /// Percent-decodes one path segment; nil for a malformed escape or bytes that are not UTF-8
    /// (what Foundation's removingPercentEncoding refuses).
    static func percentDecoded(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        guard bytes.contains(0x25) else { return String(validating: bytes, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == 0x25 {
                guard i + 2 < bytes.count, let hi = hex(bytes[i + 1]), let lo = hex(bytes[i + 2]) else { return nil }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(c)
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    public func handle(_ request: HTTPRequest) {
        switch resolve(request.method, request.path) {
        case .matched(let pattern, let params, let handler):
            request.route = pattern
            do {
                if let bad = params.first(where: { $0.value == Router.invalidMarker }) {
                    throw HTTPError.badRequest("path parameter '\(bad.key)' is not valid percent-encoding")
                }
                if let bad = request.malformedQueryParameter {
                    throw HTTPError.badRequest("query parameter '\(bad)' is not valid percent-encoding")
                }
                try handler(request, params)
            } catch let error as HTTPError {
                request.fail(error)
            } catch {
                request.fail(HTTPError(500, "internal", "\(error)"))
            }
        case .methodNotAllowed(let allowed):
            request.route = "method_not_allowed"
            // libevent 2.1 keeps no text of a method it does not know (EVHTTP_REQ_UNKNOWN_).
            let what = request.method == .UNKNOWN ? "this method" : request.methodText
            var error = HTTPError(405, "method_not_allowed", "\(what) is not allowed on \(request.path)")
            error.headers = [("Allow", allowed.map(\.rawValue).joined(separator: ", "))]
            request.fail(error)
        case .notFound:
            request.route = "not_found"
            request.fail(HTTPError.notFound("no such path: \(request.path)"))
        }
    }

    static let invalidMarker = "\u{0}invalid"
}
