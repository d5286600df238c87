import CHiredis
import Foundation
import Logging

// MARK: - Redis URL

/// `redis://[user:password@]host:port[/db]`
public struct RedisURL: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String?
    public var password: String?
    public var db: Int

    public init(host: String = "127.0.0.1", port: Int = 6379, user: String? = nil, password: String? = nil, db: Int = 0) {
        self.host = host; self.port = port; self.user = user; self.password = password; self.db = db
    }

    public init?(_ text: String) {
        guard text.hasPrefix("redis://") else { return nil }
        var rest = Substring(text.dropFirst("redis://".count))
        var user: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let cred = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = cred.firstIndex(of: ":") {
                let u = String(cred[..<colon])
                user = u.isEmpty ? nil : u.removingPercentEncoding ?? u
                let p = String(cred[cred.index(after: colon)...])
                password = p.removingPercentEncoding ?? p
            } else {
                password = String(cred)
            }
        }
        var db = 0
        if let slash = rest.firstIndex(of: "/") {
            let dbText = rest[rest.index(after: slash)...]
            if !dbText.isEmpty {
                guard let d = Int(dbText), d >= 0, d < 1_000_000 else { return nil }
                db = d
            }
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]), p > 0, p < 65536 else { return nil }
            port = p
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port, user: user, password: password, db: db)
    }

    public var description: String {
        "redis://\(host):\(port)/\(db)"
    }
}

// MARK: - Trampolines

typealias RedisCallbackPointer = @convention(c) (UnsafeMutablePointer<redisAsyncContext>?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void
typealias RedisConnectPointer = @convention(c) (UnsafePointer<redisAsyncContext>?, Int32) -> Void

/// A reply read in place, inside hiredis's callback: `.reply` points at hiredis's own tree,
/// valid only until the visitor returns (hiredis frees it then); `.failed` when no reply came.
public enum RawReply {
    case reply(RedisReplyView)
    case failed(String)
}

final class RawReplyBox {
    let visit: (RawReply) -> Void
    init(_ visit: @escaping (RawReply) -> Void) { self.visit = visit }
}

/// One-shot command callback: privdata is a retained `RawReplyBox`, released here, also on a
/// NULL reply (the context went away).
private let rawCommandTrampoline: RedisCallbackPointer = { _, reply, privdata in
    guard let privdata else { return }
    let box = Unmanaged<RawReplyBox>.fromOpaque(privdata).takeRetainedValue()
    if let reply {
        box.visit(.reply(RedisReplyView(UnsafePointer(reply.assumingMemoryBound(to: redisReply.self)))))
    } else {
        box.visit(.failed("ERR connection lost"))
    }
}

/// A MULTI ... EXEC in flight: the first refusal of a queued command (EXEC then answers only
/// EXECABORT, so this is the cause to report) and the caller's callback for EXEC's reply.
final class TransactionVisitBox {
    var firstError: String?
    let done: (RawReply, String?) -> Void
    init(_ done: @escaping (RawReply, String?) -> Void) { self.done = done }
}

/// MULTI and each queued command: privdata is the unretained box (EXEC's callback holds it);
/// only an error reply is looked at, so "+QUEUED" costs no Swift value.
private let queuedVisitTrampoline: RedisCallbackPointer = { _, reply, privdata in
    guard let reply, let privdata else { return }
    let r = reply.assumingMemoryBound(to: redisReply.self)
    guard r.pointee.type == REDIS_REPLY_ERROR else { return }
    let box = Unmanaged<TransactionVisitBox>.fromOpaque(privdata).takeUnretainedValue()
    if box.firstError == nil, let text = r.pointee.str { box.firstError = String(cString: text) }
}

/// EXEC: privdata is the retained box, released here, also on a NULL reply.
private let execVisitTrampoline: RedisCallbackPointer = { _, reply, privdata in
    guard let privdata else { return }
    let box = Unmanaged<TransactionVisitBox>.fromOpaque(privdata).takeRetainedValue()
    if let reply {
        box.done(.reply(RedisReplyView(UnsafePointer(reply.assumingMemoryBound(to: redisReply.self)))), box.firstError)
    } else {
        box.done(.failed("ERR connection lost"), box.firstError)
    }
}

final class PipelineBox {
    var remaining: Int
    var succeeded = 0
    var firstError: String?
    let done: (String?, Int) -> Void
    init(count: Int, _ done: @escaping (String?, Int) -> Void) { remaining = count; self.done = done }

    /// One command's outcome; the last one runs `done`.
    func settle(_ error: String?) {
        if let error { if firstError == nil { firstError = error } } else { succeeded += 1 }
        remaining -= 1
        if remaining == 0 { done(firstError, succeeded) }
    }
}

/// A command of a pipeline: privdata is the box, retained once per command and released here
/// (also on a NULL reply); only an error reply is looked at.
private let pipelineTrampoline: RedisCallbackPointer = { _, reply, privdata in
    guard let privdata else { return }
    let box = Unmanaged<PipelineBox>.fromOpaque(privdata).takeRetainedValue()
    guard let reply else { box.settle("ERR connection lost"); return }
    let r = reply.assumingMemoryBound(to: redisReply.self)
    if r.pointee.type == REDIS_REPLY_ERROR {
        box.settle(r.pointee.str.map { String(cString: $0) } ?? "ERR")
    } else {
        box.settle(nil)
    }
}

/// Subscription callback: hiredis calls it for every message of the channel; privdata is the
/// unretained connection (kept alive by its owner for as long as the context lives).
private let subscriptionTrampoline: RedisCallbackPointer = { _, reply, privdata in
    guard let privdata, let reply else { return }
    let connection = Unmanaged<RedisConnection>.fromOpaque(privdata).takeUnretainedValue()
    connection.deliverSubscription(RedisReply.copy(reply.assumingMemoryBound(to: redisReply.self)))
}

private let connectTrampoline: RedisConnectPointer = { context, status in
    guard let context, let data = context.pointee.data else { return }
    let connection = Unmanaged<RedisConnection>.fromOpaque(data).takeUnretainedValue()
    connection.didConnect(status: status)
}

private let disconnectTrampoline: RedisConnectPointer = { context, status in
    guard let context, let data = context.pointee.data else { return }
    let connection = Unmanaged<RedisConnection>.fromOpaque(data).takeUnretainedValue()
    connection.didDisconnect(status: status)
}

// MARK: - Connection

/// An async hiredis connection on the loop, reconnecting with capped exponential backoff.
///
/// Two flavours: a command connection (`subscriber == false`) and a subscriber connection that
/// only runs SUBSCRIBE and re-subscribes every channel after a reconnect. Commands issued while
/// disconnected fail at once with `ERR redis unavailable`; commands pending when the
/// connection drops fail with `ERR connection lost`.
public final class RedisConnection {
    public enum State: Equatable { case disconnected, connecting, handshaking, ready }

    public let url: RedisURL
    public let name: String
    public let subscriber: Bool
    private let loop: EventLoop
    private let logger: Logger
    private var context: UnsafeMutablePointer<redisAsyncContext>?
    /// A write of the commands queued in this loop iteration is scheduled (`flushWrites`).
    private var flushScheduled = false
    public private(set) var state: State = .disconnected
    private var backoffMs = 50
    private static let backoffCapMs = 2000
    private var reconnectTimer: LoopTimer?
    private var watchdog: LoopTimer?
    private var pingOutstandingSinceMs: Int64?
    private var closing = false
    private var channels: Set<String> = []
    /// Called for each pub/sub message: (channel, payload).
    public var onMessage: ((String, [UInt8]) -> Void)?
    /// Called whenever the connection becomes ready (after handshake / resubscribe) or is lost.
    public var onStateChange: ((Bool) -> Void)?
    /// More observers of the same changes (after `onStateChange`), for services that must not
    /// replace each other's callback (e.g. the cache drops its lines when the subscriber goes).
    private var stateListeners: [(Bool) -> Void] = []
    public func addStateListener(_ listener: @escaping (Bool) -> Void) { stateListeners.append(listener) }
    public private(set) var reconnects = 0
    public private(set) var everConnected = false
    public private(set) var lastError: String = "not connected"
    /// Subscriber only: when it returns a limit, a connection that heard nothing for that long is dropped.
    public var silenceLimitMs: (() -> Int64?)?
    private var lastMessageMs: Int64 = 0
    private var readySinceMs: Int64 = 0
    private var stateSinceMs: Int64 = 0
    private var awaitingSubscriptions: Set<String> = []
    /// A connect or handshake that has not finished by then is abandoned and retried.
    static let setupTimeoutMs: Int64 = 5000

    public init(loop: EventLoop, url: RedisURL, name: String, subscriber: Bool, logger: Logger) {
        self.loop = loop
        self.url = url
        self.name = name
        self.subscriber = subscriber
        self.logger = logger
    }

    public var isReady: Bool { state == .ready }

    public func start() {
        closing = false
        connect()
        watchdog = loop.every(ms: 1000) { [weak self] in self?.checkLiveness() }
    }

    /// Frees the context on the loop thread; every pending callback runs with an error first.
    public func close() {
        closing = true
        watchdog?.cancel(); watchdog = nil
        reconnectTimer?.cancel(); reconnectTimer = nil
        if let ctx = context {
            context = nil
            ctx.pointee.data = nil
            redisAsyncFree(ctx)
        }
        setState(.disconnected)
    }

    deinit {
        precondition(context == nil, "RedisConnection \(name) must be closed on the loop before release")
    }

    private func connect() {
        guard !closing, context == nil else { return }
        setState(.connecting)
        guard let ctx = redisAsyncConnect(url.host, Int32(url.port)) else {
            lastError = "cannot allocate redis context"
            scheduleReconnect(); return
        }
        if ctx.pointee.err != 0 {
            lastError = (ctx.pointee.errstr.map { String(cString: $0) } ?? "unknown error")
            redisAsyncFree(ctx)
            scheduleReconnect(); return
        }
        guard concord_redis_attach(ctx, loop.base) == REDIS_OK else {
            lastError = "cannot attach redis connection to the event loop"
            redisAsyncFree(ctx)
            scheduleReconnect(); return
        }
        concord_redis_use_arenas(ctx)
        ctx.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        context = ctx
        redisAsyncSetConnectCallback(ctx, connectTrampoline)
        redisAsyncSetDisconnectCallback(ctx, disconnectTrampoline)
    }

    fileprivate func didConnect(status: Int32) {
        if status != REDIS_OK {
            // hiredis frees the context itself after a failed connect.
            if let ctx = context { lastError = (ctx.pointee.errstr.map { String(cString: $0) } ?? "unknown error") }
            context = nil
            setState(.disconnected)
            scheduleReconnect()
            return
        }
        setState(.handshaking)
        handshake()
    }

    fileprivate func didDisconnect(status: Int32) {
        // hiredis frees the context after this callback.
        if let ctx = context, status != REDIS_OK { lastError = (ctx.pointee.errstr.map { String(cString: $0) } ?? "unknown error") }
        context = nil
        pingOutstandingSinceMs = nil
        setState(.disconnected)
        if !closing {
            logger.warning("redis connection lost", metadata: ["conn": "\(name)", "error": "\(lastError)"])
            scheduleReconnect()
        }
    }

    private func scheduleReconnect() {
        guard !closing else { return }
        reconnectTimer?.cancel()
        let delay = backoffMs
        backoffMs = min(backoffMs * 2, Self.backoffCapMs)
        reconnectTimer = loop.after(ms: delay) { [weak self] in
            guard let self else { return }
            self.reconnects += 1
            self.connect()
        }
    }

    /// AUTH and SELECT (commands only), then SUBSCRIBE every channel (subscriber only).
    private func handshake() {
        var steps: [[String]] = []
        if let password = url.password {
            if let user = url.user { steps.append(["AUTH", user, password]) } else { steps.append(["AUTH", password]) }
        }
        if !subscriber && url.db != 0 { steps.append(["SELECT", String(url.db)]) }
        runHandshake(steps[...])
    }

    private func runHandshake(_ steps: ArraySlice<[String]>) {
        guard let step = steps.first else {
            backoffMs = 50
            everConnected = true
            if subscriber && !channels.isEmpty {
                // Ready only once Redis confirmed every SUBSCRIBE: before that, messages are lost.
                awaitingSubscriptions = channels
                for channel in channels { sendSubscribe(channel) }
            } else {
                setState(.ready)
            }
            logger.debug("redis connected", metadata: ["conn": "\(name)"])
            return
        }
        rawCommand(step.map { Array($0.utf8) }) { [weak self] reply in
            guard let self else { return }
            if case .error(let message) = reply {
                self.lastError = message
                self.logger.error("redis handshake failed", metadata: ["conn": "\(self.name)", "error": "\(message)"])
                self.dropConnection()
                return
            }
            self.runHandshake(steps.dropFirst())
        }
    }

    private func setState(_ new: State) {
        let wasReady = state == .ready
        if new != state { stateSinceMs = EventLoop.monoMs() }
        state = new
        let isReady = new == .ready
        if isReady && !wasReady { readySinceMs = EventLoop.monoMs() }
        if wasReady != isReady {
            onStateChange?(isReady)
            for listener in stateListeners { listener(isReady) }
        }
    }

    /// Forces a reconnect: frees the context (pending callbacks fail) and schedules a new one.
    private func dropConnection() {
        guard let ctx = context else { return }
        context = nil
        ctx.pointee.data = nil
        redisAsyncFree(ctx)
        pingOutstandingSinceMs = nil
        setState(.disconnected)
        scheduleReconnect()
    }

    /// A connection whose PING has gone unanswered for 3 s is dropped and reconnected.
    private func checkLiveness() {
        let now = EventLoop.monoMs()
        if (state == .connecting || state == .handshaking), context != nil, now - stateSinceMs > RedisConnection.setupTimeoutMs {
            lastError = "redis did not complete the connection within \(RedisConnection.setupTimeoutMs) ms"
            logger.warning("redis connection setup timed out; retrying", metadata: ["conn": "\(name)"])
            dropConnection()
            return
        }
        guard state == .ready, context != nil else { return }
        if let since = pingOutstandingSinceMs {
            if now - since > 3000 {
                lastError = "redis did not answer PING within 3 s"
                logger.warning("redis unresponsive; reconnecting", metadata: ["conn": "\(name)"])
                dropConnection()
            }
            return
        }
        if subscriber {
            // hiredis 0.14 mishandles PING replies in subscribed mode, so a subscriber is judged
            // by silence instead: the node hears its own heartbeat on the broadcast channel.
            if let limit = silenceLimitMs?(), now - max(lastMessageMs, readySinceMs) > limit {
                lastError = "no pub/sub traffic for \(limit) ms"
                logger.warning("redis subscription silent; reconnecting", metadata: ["conn": "\(name)"])
                dropConnection()
            }
            return
        }
        pingOutstandingSinceMs = now
        rawCommand([Array("PING".utf8)]) { [weak self] _ in self?.pingOutstandingSinceMs = nil }
    }

    // MARK: commands

    /// Sends one command (binary safe, written in RESP here). The callback always runs
    /// exactly once on the loop: with the reply, or with an error reply.
    public func send(_ args: [[UInt8]], _ callback: @escaping (RedisReply) -> Void) {
        guard !subscriber else { callback(.error("ERR subscriber connection")); return }
        guard state == .ready else { callback(.error("ERR redis unavailable: \(lastError)")); return }
        rawCommand(args, callback)
    }

    /// Sends one command already written in RESP.
    public func send(_ command: RESPCommand, _ callback: @escaping (RedisReply) -> Void) {
        sendVisiting(command) { callback(RedisReply($0)) }
    }

    public func send(_ args: [String], _ callback: @escaping (RedisReply) -> Void) {
        send(args.map { Array($0.utf8) }, callback)
    }

    /// Sends one command and lets `visit` read the reply in place, for a large reply that is
    /// only scanned once (an XRANGE of a hundred entries would otherwise become a thousand
    /// Swift arrays). `visit` runs exactly once on the loop.
    public func sendVisiting(_ args: [[UInt8]], _ visit: @escaping (RawReply) -> Void) {
        sendVisiting(RESPCommand(args), visit)
    }

    public func sendVisiting(_ command: RESPCommand, _ visit: @escaping (RawReply) -> Void) {
        guard !subscriber else { visit(.failed("ERR subscriber connection")); return }
        guard state == .ready, context != nil else { visit(.failed("ERR redis unavailable: \(lastError)")); return }
        precondition(command.isComplete, "RESPCommand has fewer arguments than it declared")
        submit(command, visit)
    }

    /// Commands sent back to back, without MULTI: Redis runs them in order, each atomic by
    /// itself, but a failure part way (a lost connection) may leave the first ones done.
    /// `done` runs exactly once, after every reply, with the first error met (nil: all
    /// succeeded) and how many commands succeeded. Replies other than errors are not looked at.
    public func pipeline(_ commands: RESPBatch, _ done: @escaping (_ firstError: String?, _ succeeded: Int) -> Void) {
        guard !subscriber else { done("ERR subscriber connection", 0); return }
        guard state == .ready, let ctx = context else { done("ERR redis unavailable: \(lastError)", 0); return }
        guard commands.count > 0 else { done(nil, 0); return }
        precondition(commands.isComplete, "RESPBatch: the last command has fewer arguments than it declared")
        let box = PipelineBox(count: commands.count, done)
        commands.terminated.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                var start = 0
                for (k, end) in commands.ends.enumerated() {
                    let privdata = Unmanaged.passRetained(box).toOpaque()
                    if redisAsyncFormattedCommand(ctx, pipelineTrampoline, privdata, chars.baseAddress! + start, end - start) != REDIS_OK {
                        Unmanaged<PipelineBox>.fromOpaque(privdata).release()
                        // This one and the rest were not sent: each fails now.
                        for _ in k..<commands.count { box.settle("ERR redis unavailable: command rejected") }
                        return
                    }
                    start = end
                }
            }
        }
        scheduleFlush()
    }

    /// One transaction on this connection:
    ///
    ///     MULTI; <command>...; EXEC
    ///
    /// `done` runs exactly once with EXEC's reply (an array of the commands' replies, or an
    /// error) and the first error a queued command was refused with, if any (OOM, READONLY...:
    /// EXEC then answers EXECABORT). The queued commands' "+QUEUED" replies are not copied.
    public func transaction(_ commands: [[[UInt8]]], _ done: @escaping (RedisReply, String?) -> Void) {
        transaction(commands.map { RESPCommand($0) }, visiting: { reply, refused in done(RedisReply(reply), refused) })
    }

    /// `transaction(_:_:)` on commands written in RESP, with EXEC's reply read in place.
    private func transaction(_ commands: [RESPCommand], visiting done: @escaping (RawReply, String?) -> Void) {
        guard !subscriber else { done(.failed("ERR subscriber connection"), nil); return }
        guard state == .ready, context != nil else { done(.failed("ERR redis unavailable: \(lastError)"), nil); return }
        let box = TransactionVisitBox(done)
        let unretained = Unmanaged.passUnretained(box).toOpaque()
        let retained = Unmanaged.passRetained(box).toOpaque()
        var sent = sendWithCallback([RedisConnection.multi], callback: queuedVisitTrampoline, privdata: unretained)
        for command in commands where sent {
            precondition(command.isComplete, "RESPCommand has fewer arguments than it declared")
            sent = sendFormatted(command, callback: queuedVisitTrampoline, privdata: unretained)
        }
        if !sent || !sendWithCallback([RedisConnection.exec], callback: execVisitTrampoline, privdata: retained) {
            Unmanaged<TransactionVisitBox>.fromOpaque(retained).release()
            done(.failed("ERR redis unavailable: command rejected"), nil)
            return
        }
        scheduleFlush()
    }

    private static let multi = Array("MULTI".utf8), exec = Array("EXEC".utf8)

    private func rawCommand(_ args: [[UInt8]], _ callback: @escaping (RedisReply) -> Void) {
        guard context != nil else { callback(.error("ERR redis unavailable: \(lastError)")); return }
        submit(RESPCommand(args)) { callback(RedisReply($0)) }
    }

    /// The one way a command with a reply goes out: `visit` runs exactly once, with the reply
    /// or with why none came.
    private func submit(_ command: RESPCommand, _ visit: @escaping (RawReply) -> Void) {
        let box = Unmanaged.passRetained(RawReplyBox(visit)).toOpaque()
        if !sendFormatted(command, callback: rawCommandTrampoline, privdata: box) {
            Unmanaged<RawReplyBox>.fromOpaque(box).release()
            visit(.failed("ERR redis unavailable: command rejected"))
            return
        }
        scheduleFlush()
    }

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.soon { [weak self] in self?.flushWrites() }
    }

    /// Writes what this iteration's callbacks queued now, in one write, instead of after the
    /// next poll reports the socket writable: a command on the critical path (a Raft write,
    /// an acknowledgement) reaches Redis one loop turn earlier, and the EV_WRITE add/delete
    /// pair cancels out in libevent's changelist (no epoll_ctl). What does not fit in the
    /// socket buffer is left to hiredis's write event as before.
    private func flushWrites() {
        flushScheduled = false
        guard state == .ready, let ctx = context, ctx.pointee.c.flags & Int32(REDIS_CONNECTED) != 0 else { return }
        redisAsyncHandleWrite(ctx)
    }

    /// A command already in RESP. hiredis scans it with strchr to spot (P)SUBSCRIBE and its
    /// channels, as it does its own NUL-terminated sds: the terminator is there, outside the
    /// length (`RESPCommand` keeps it).
    private func sendFormatted(_ command: RESPCommand, callback: RedisCallbackPointer, privdata: UnsafeMutableRawPointer) -> Bool {
        guard let ctx = context else { return false }
        let rc = command.terminated.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { redisAsyncFormattedCommand(ctx, callback, privdata, $0.baseAddress, $0.count - 1) }
        }
        return rc == REDIS_OK
    }

    @discardableResult
    private func sendWithCallback(_ args: [[UInt8]], callback: RedisCallbackPointer, privdata: UnsafeMutableRawPointer) -> Bool {
        sendFormatted(RESPCommand(args), callback: callback, privdata: privdata)
    }

    /// One command in RESP, as `redisAsyncFormattedCommand` takes it (hiredis copies it):
    ///
    ///     *<argc>\r\n  then per argument  $<length>\r\n<bytes>\r\n
    ///
    /// Built here in one buffer: `redisAsyncCommandArgv` wanted a C copy of every argument and
    /// then formatted each with `sdscatfmt`, a malloc and a format parse per argument, which
    /// was a tenth of a busy node's CPU.
    static func format(_ args: [[UInt8]]) -> [UInt8] { RESPCommand(args).bytes }

    /// Appends `n` in decimal and CRLF.
    static func appendDecimal(_ n: Int, _ out: inout [UInt8]) {
        JSONBytes.appendInt(Int64(n), into: &out)
        out.append(13); out.append(10)
    }

    // MARK: subscriptions

    /// Subscribes now (if connected) and after every reconnect.
    public func subscribe(_ channel: String) {
        precondition(subscriber, "subscribe on a command connection")
        channels.insert(channel)
        if state == .ready { sendSubscribe(channel) }
    }

    private func sendSubscribe(_ channel: String) {
        sendWithCallback([Array("SUBSCRIBE".utf8), Array(channel.utf8)], callback: subscriptionTrampoline, privdata: Unmanaged.passUnretained(self).toOpaque())
    }

    fileprivate func deliverSubscription(_ reply: RedisReply) {
        guard let items = reply.array, let kind = items.first?.string else { return }
        switch kind {
        case "message":
            lastMessageMs = EventLoop.monoMs()
            guard items.count == 3, let channel = items[1].string, let payload = items[2].bytes else { return }
            onMessage?(channel, payload)
        case "subscribe":
            guard items.count >= 2, let channel = items[1].string else { return }
            awaitingSubscriptions.remove(channel)
            if awaitingSubscriptions.isEmpty && state == .handshaking { setState(.ready) }
        default:
            break
        }
    }
}

/// One command written straight into RESP, argument by argument, for a hot path that would
/// otherwise build an array per argument and then copy them all (`RedisConnection.format`).
public struct RESPCommand: RESPWriter {
    /// The command and, after it, the NUL hiredis wants (see `sendFormatted`): kept there as
    /// arguments are added, so sending needs no copy to append it.
    private(set) var terminated: [UInt8] = [0]
    private let declared: Int
    private var added = 0

    public init(arguments: Int, capacity: Int = 128) {
        declared = arguments
        terminated.reserveCapacity(capacity + 1)
        RESPCommand.append(header: arguments, toTerminated: &terminated)
    }

    public init(_ args: [[UInt8]]) {
        self.init(arguments: args.count, capacity: args.reduce(16) { $0 + $1.count + 16 })
        for a in args { add(a) }
    }

    /// The command in RESP (without the NUL).
    public var bytes: [UInt8] { Array(terminated.dropLast()) }

    public var isComplete: Bool { added == declared }

    public mutating func add(_ b: UnsafeBufferPointer<UInt8>) {
        precondition(added < declared, "RESPCommand: more arguments than declared")
        added += 1
        RESPCommand.append(argument: b, toTerminated: &terminated)
    }

    /// Writes a command's header (`*<n>\r\n`) over the NUL that ends `terminated`, and the
    /// NUL again after it.
    static func append(header arguments: Int, toTerminated terminated: inout [UInt8]) {
        terminated.removeLast()
        terminated.append(0x2A)
        RedisConnection.appendDecimal(arguments, &terminated)
        terminated.append(0)
    }

    /// Writes one argument (`$<n>\r\n<bytes>\r\n`) the same way.
    static func append(argument b: UnsafeBufferPointer<UInt8>, toTerminated terminated: inout [UInt8]) {
        terminated.removeLast()
        terminated.append(0x24)
        RedisConnection.appendDecimal(b.count, &terminated)
        terminated.append(contentsOf: b)
        terminated.append(13); terminated.append(10)
        terminated.append(0)
    }
}

/// What writes RESP arguments: given bytes in place, it takes arrays and strings too.
public protocol RESPWriter {
    mutating func add(_ b: UnsafeBufferPointer<UInt8>)
}

extension RESPWriter {
    public mutating func add(_ a: [UInt8]) { a.withUnsafeBufferPointer { add($0) } }

    public mutating func add(_ s: String) {
        var t = s
        t.withUTF8 { add($0) }
    }
}

/// Commands written back to back in one buffer (one allocation for a batch of a hundred
/// XADDs, not one each), sent each as its own command by `RedisConnection.pipeline`. Like
/// `RESPCommand`, it keeps a NUL after the last byte for hiredis's scan. Not for (P)SUBSCRIBE
/// or (P)UNSUBSCRIBE: for those hiredis reads every argument up to the NUL, which here would run
/// into the commands after it.
public struct RESPBatch: RESPWriter {
    private(set) var terminated: [UInt8] = [0]
    /// Where each command ends (the next begins there).
    private(set) var ends: [Int] = []
    private var declared = 0, added = 0

    public init(commands: Int, capacity: Int) {
        terminated.reserveCapacity(capacity + 1)
        ends.reserveCapacity(commands)
    }

    public var count: Int { ends.count }
    public var isComplete: Bool { added == declared }

    /// Starts the next command, of `arguments` arguments.
    public mutating func begin(arguments: Int) {
        precondition(isComplete, "RESPBatch: the previous command has fewer arguments than it declared")
        declared = arguments
        added = 0
        RESPCommand.append(header: arguments, toTerminated: &terminated)
        ends.append(terminated.count - 1)
    }

    public mutating func add(_ b: UnsafeBufferPointer<UInt8>) {
        precondition(added < declared, "RESPBatch: more arguments than declared")
        added += 1
        RESPCommand.append(argument: b, toTerminated: &terminated)
        ends[ends.count - 1] = terminated.count - 1
    }
}

extension RedisReply {
    /// A copy of a reply read in place, or the error of one that never came.
    init(_ raw: RawReply) {
        switch raw {
        case .reply(let view): self = view.copied
        case .failed(let message): self = .error(message)
        }
    }
}
