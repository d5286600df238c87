import CLibevent
import Foundation

// MARK: - An event-driven load generator (for `concord bench`)
//
// One thread, one libevent loop, N keep-alive connections, one request in flight per
// connection — the shape of redis-benchmark and wrk, so Concord and its baseline are driven by
// equally cheap clients. Responses are framed by protocol (HTTP/1.1 with Content-Length, or
// RESP), checked by `validate`, and their latency handed to `record`.

public final class LoadDriver {
    public enum Framing: Sendable { case http, resp }

    public struct Outcome: Sendable {
        public var ops: UInt64 = 0
        public var errors: UInt64 = 0
        public var seconds: Double = 0
        public var firstError: String?
    }

    final class Connection {
        var bev: OpaquePointer?
        let index: Int
        var seq: UInt64 = 0
        var sentAt: Int64 = 0
        var busy = false
        init(index: Int) { self.index = index }
    }

    private let loop = EventLoop()
    private let targets: [(host: String, port: Int)]
    private var contexts: [ConnectionContext] = []
    /// Sees every complete response (connection index, bytes) before the next request is built,
    /// for stateful workloads (e.g. a lock key to unlock).
    public var onResponse: ((Int, [UInt8]) -> Void)?
    private let framing: Framing
    private let request: (Int, UInt64) -> [UInt8]
    private let validate: ([UInt8]) -> Bool
    private let record: (Int64) -> Void
    private var connections: [Connection] = []
    private var running = true
    private var outcome = Outcome()

    /// Connection i goes to `targets[i % targets.count]` (IPv4 literals or "localhost").
    public init(targets: [(host: String, port: Int)], framing: Framing, request: @escaping (Int, UInt64) -> [UInt8],
                validate: @escaping ([UInt8]) -> Bool, record: @escaping (Int64) -> Void, onResponse: ((Int, [UInt8]) -> Void)? = nil) {
        self.onResponse = onResponse
        precondition(!targets.isEmpty, "LoadDriver needs a target")
        self.targets = targets; self.framing = framing
        self.request = request; self.validate = validate; self.record = record
    }

    /// Runs on the calling thread for `seconds`; `progress` is called once a second with (ops, errors).
    public func run(connections count: Int, seconds: Double, progress: ((UInt64, UInt64) -> Void)? = nil) -> Outcome {
        let started = EventLoop.monoMicros()
        for i in 0..<count {
            let c = Connection(index: i)
            connections.append(c)
            connect(c)
        }
        var ticker: LoopTimer?
        if let progress {
            ticker = loop.every(ms: 1000) { [unowned self] in progress(self.outcome.ops, self.outcome.errors) }
        }
        loop.after(ms: Int(seconds * 1000)) { [unowned self] in
            self.running = false
            self.outcome.seconds = Double(EventLoop.monoMicros() - started) / 1_000_000
            // Let in-flight requests finish (bounded), then stop.
            self.loop.after(ms: 2000) { [unowned self] in self.loop.stop() }
            self.stopIfIdle()
        }
        loop.run()
        ticker?.cancel()
        for c in connections { if let b = c.bev { bufferevent_free(b) }; c.bev = nil }
        return outcome
    }

    private func stopIfIdle() {
        if !running && connections.allSatisfy({ !$0.busy }) { loop.stop() }
    }

    private func connect(_ c: Connection) {
        guard running else { return }
        guard let bev = bufferevent_socket_new(loop.base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else { return }
        c.bev = bev
        let context = ConnectionContext(driver: self, connection: c)
        contexts.append(context)
        let ctx = Unmanaged.passUnretained(context).toOpaque()
        bufferevent_setcb(bev, loadReadCallback, nil, loadEventCallback, ctx)
        bufferevent_enable(bev, Int16(EV_READ | EV_WRITE))
        let target = targets[c.index % targets.count]
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(target.port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(target.host == "localhost" ? "127.0.0.1" : target.host)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bufferevent_socket_connect(bev, $0, Int32(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { fail(c, "connect failed") }
    }

    fileprivate func connected(_ c: Connection) {
        if let fd = c.bev.map({ bufferevent_getfd($0) }), fd >= 0 {
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        send(c)
    }

    private func send(_ c: Connection) {
        guard running, let bev = c.bev else { c.busy = false; stopIfIdle(); return }
        let bytes = request(c.index, c.seq)
        c.seq += 1
        c.busy = true
        c.sentAt = EventLoop.monoMicros()
        bytes.withUnsafeBytes { _ = bufferevent_write(bev, $0.baseAddress, $0.count) }
    }

    fileprivate func readable(_ c: Connection) {
        guard let bev = c.bev, let input = bufferevent_get_input(bev) else { return }
        while true {
            let available = evbuffer_get_length(input)
            guard available > 0, let raw = evbuffer_pullup(input, -1) else { return }
            let buffer = UnsafeBufferPointer(start: raw, count: available)
            guard let length = LoadDriver.frame(buffer, framing) else {
                if available > 8 << 20 { fail(c, "response too large") }
                return
            }
            let response = Array(buffer[0..<length])
            evbuffer_drain(input, length)
            guard c.busy else { continue }
            record(EventLoop.monoMicros() - c.sentAt)
            onResponse?(c.index, response)
            if validate(response) {
                outcome.ops += 1
            } else {
                outcome.errors += 1
                if outcome.firstError == nil { outcome.firstError = String(decoding: response.prefix(300), as: UTF8.self) }
            }
            send(c)
        }
    }

    fileprivate func fail(_ c: Connection, _ reason: String) {
        outcome.errors += 1
        if outcome.firstError == nil { outcome.firstError = reason }
        if let b = c.bev { bufferevent_free(b) }
        c.bev = nil
        c.busy = false
        if running {
            loop.after(ms: 10) { [weak self] in self?.connect(c) }
        } else {
            stopIfIdle()
        }
    }

    // MARK: framing

    /// The length of one complete response at the start of `b`, or nil if more bytes are needed.
    static func frame(_ b: UnsafeBufferPointer<UInt8>, _ framing: Framing) -> Int? {
        switch framing {
        case .http: return frameHTTP(b)
        case .resp: return frameRESP(b, from: 0, depth: 0)
        }
    }

    static func frameHTTP(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
        guard b.count >= 4 else { return nil }
        var end = -1
        var i = 0
        while i + 3 < b.count {
            if b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { end = i; break }
            i += 1
        }
        guard end >= 0 else { return nil }
        // Content-Length, case-insensitively.
        let name = Array("content-length:".utf8)
        var length = 0
        var lineStart = 0
        while lineStart < end {
            var lineEnd = lineStart
            while lineEnd < end && b[lineEnd] != 13 { lineEnd += 1 }
            if lineEnd - lineStart > name.count {
                var match = true
                for k in 0..<name.count where (b[lineStart + k] | 0x20) != name[k] { match = false; break }
                if match {
                    var p = lineStart + name.count
                    while p < lineEnd && b[p] == 32 { p += 1 }
                    while p < lineEnd && b[p] >= 48 && b[p] <= 57 { length = length * 10 + Int(b[p] - 48); p += 1 }
                }
            }
            lineStart = lineEnd + 2
        }
        let total = end + 4 + length
        return b.count >= total ? total : nil
    }

    static func frameRESP(_ b: UnsafeBufferPointer<UInt8>, from start: Int, depth: Int) -> Int? {
        guard start < b.count, depth < 8 else { return nil }
        var i = start + 1
        while i + 1 < b.count && !(b[i] == 13 && b[i + 1] == 10) { i += 1 }
        guard i + 1 < b.count else { return nil }
        let lineEnd = i + 2
        func number() -> Int {
            var n = 0, neg = false, k = start + 1
            if k < i && b[k] == 45 { neg = true; k += 1 }
            while k < i { n = n * 10 + Int(b[k] &- 48); k += 1 }
            return neg ? -n : n
        }
        switch b[start] {
        case 43, 45, 58: return lineEnd                       // + - :
        case 36:                                              // $
            let n = number()
            if n < 0 { return lineEnd }
            return b.count >= lineEnd + n + 2 ? lineEnd + n + 2 : nil
        case 42:                                              // *
            let n = number()
            var p = lineEnd
            if n <= 0 { return lineEnd }
            for _ in 0..<n {
                guard let next = frameRESP(b, from: p, depth: depth + 1) else { return nil }
                p = next
            }
            return p
        default: return lineEnd
        }
    }

    /// The body of a framed HTTP response.
    public static func httpBody(_ response: [UInt8]) -> [UInt8] {
        guard response.count >= 4 else { return [] }
        for i in 0...(response.count - 4) where response[i] == 13 && response[i + 1] == 10 && response[i + 2] == 13 && response[i + 3] == 10 {
            return Array(response[(i + 4)...])
        }
        return []
    }

    /// A RESP command, as bytes.
    public static func resp(_ args: [String]) -> [UInt8] {
        var out = "*\(args.count)\r\n"
        for a in args { out += "$\(a.utf8.count)\r\n\(a)\r\n" }
        return Array(out.utf8)
    }

    /// An HTTP/1.1 keep-alive request, as bytes.
    public static func http(_ method: String, _ path: String, host: String, body: [UInt8]? = nil) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        var bytes = Array(head.utf8)
        if let body { bytes += body }
        return bytes
    }
}

/// Kept alive by the driver (`contexts`) for as long as its bufferevent may call back.
final class ConnectionContext {
    unowned let driver: LoadDriver
    let connection: LoadDriver.Connection
    init(driver: LoadDriver, connection: LoadDriver.Connection) { self.driver = driver; self.connection = connection }
}

private let loadReadCallback: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, ctx in
    guard let ctx else { return }
    let c = Unmanaged<ConnectionContext>.fromOpaque(ctx).takeUnretainedValue()
    c.driver.readable(c.connection)
}

private let loadEventCallback: @convention(c) (OpaquePointer?, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
    guard let ctx else { return }
    let c = Unmanaged<ConnectionContext>.fromOpaque(ctx).takeUnretainedValue()
    if Int32(what) & Int32(BEV_EVENT_CONNECTED) != 0 {
        c.driver.connected(c.connection)
    } else if Int32(what) & (Int32(BEV_EVENT_EOF) | Int32(BEV_EVENT_ERROR) | Int32(BEV_EVENT_TIMEOUT)) != 0 {
        c.driver.fail(c.connection, "connection closed")
    }
}
