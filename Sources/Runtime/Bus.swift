import Logging

// MARK: - The bus: node-to-node messages over Redis pub/sub (CONTRACT §3)
//
// Channels: `concord:<cluster>:bus:node:<id>` (one per node) and `concord:<cluster>:bus:all`
// (broadcast). Publishing goes through the command connection, so a PUBLISH queued after a
// write on that connection is executed after the write (stored-before-sent).
//
// Pub/sub is at-most-once: anything published while a subscriber is away is lost. Users of the
// bus must tolerate loss (Raft resends, requests time out, the cache directory orders writes).

public final class Bus {
    public typealias Handler = (Envelope) -> Void
    public typealias Reply = ([UInt8]) -> Void
    public typealias RequestHandler = (Envelope, @escaping Reply) -> Void

    public enum RequestError: Error, Equatable { case timeout, unavailable(String), tooManyPending }

    public let nodeID: String
    public let cluster: String
    private let loop: EventLoop
    private let commands: RedisConnection
    private let subscriber: RedisConnection
    private let logger: Logger
    private var handlers: [BusMessageType: Handler] = [:]
    private var requestHandlers: [BusMessageType: RequestHandler] = [:]
    private var pending: [UInt64: Pending] = [:]
    private var nextCorrelation: UInt64 = 1
    public static let maxPendingRequests = 100_000

    public private(set) var sentByType: [BusMessageType: UInt64] = [:]
    public private(set) var receivedByType: [BusMessageType: UInt64] = [:]
    public private(set) var droppedByReason: [String: UInt64] = [:]
    /// Called for every dropped frame (metrics).
    public var onDrop: ((String) -> Void)?
    public var onReceive: ((BusMessageType) -> Void)?

    private struct Pending {
        let callback: (Result<[UInt8], RequestError>) -> Void
        let timer: LoopTimer
    }

    public init(loop: EventLoop, nodeID: String, cluster: String, commands: RedisConnection, subscriber: RedisConnection, logger: Logger) {
        self.loop = loop
        self.nodeID = nodeID
        self.cluster = cluster
        self.commands = commands
        self.subscriber = subscriber
        self.logger = logger
        subscriber.subscribe(Bus.nodeChannel(cluster: cluster, node: nodeID))
        subscriber.subscribe(Bus.broadcastChannel(cluster: cluster))
        let previous = subscriber.onMessage
        subscriber.onMessage = { [weak self] channel, payload in
            if channel.hasPrefix("concord:\(cluster):bus:") { self?.receive(payload) } else { previous?(channel, payload) }
        }
    }

    public static func nodeChannel(cluster: String, node: String) -> String { "concord:\(cluster):bus:node:\(node)" }
    public static func broadcastChannel(cluster: String) -> String { "concord:\(cluster):bus:all" }

    public func on(_ type: BusMessageType, _ handler: @escaping Handler) { handlers[type] = handler }
    public func onRequest(_ type: BusMessageType, _ handler: @escaping RequestHandler) { requestHandlers[type] = handler }

    /// Publishes to one node. `done` (optional) gets the PUBLISH reply (receiver count or error).
    public func send(to node: String, type: BusMessageType, payload: [UInt8], correlationID: UInt64 = 0, done: ((RedisReply) -> Void)? = nil) {
        publish(channel: Bus.nodeChannel(cluster: cluster, node: node), Envelope(type: type, sender: nodeID, correlationID: correlationID, payload: payload), done: done)
    }

    public func broadcast(type: BusMessageType, payload: [UInt8], done: ((RedisReply) -> Void)? = nil) {
        publish(channel: Bus.broadcastChannel(cluster: cluster), Envelope(type: type, sender: nodeID, payload: payload), done: done)
    }

    /// A frame for `node` and its channel, counted as sent, for a caller that publishes it
    /// itself (the Raft driver publishes from inside its persistence script).
    public func frame(to node: String, type: BusMessageType, payload: [UInt8]) -> (channel: String, bytes: [UInt8]) {
        sentByType[type, default: 0] += 1
        return (Bus.nodeChannel(cluster: cluster, node: node), Envelope(type: type, sender: nodeID, payload: payload).encode())
    }

    private func publish(channel: String, _ envelope: Envelope, done: ((RedisReply) -> Void)?) {
        sentByType[envelope.type, default: 0] += 1
        commands.send([Array("PUBLISH".utf8), Array(channel.utf8), envelope.encode()]) { reply in done?(reply) }
    }

    /// Request/response with a correlation id; the callback runs exactly once (reply, timeout
    /// or failure to publish).
    public func request(to node: String, type: BusMessageType, payload: [UInt8], timeoutMs: Int, _ callback: @escaping (Result<[UInt8], RequestError>) -> Void) {
        guard pending.count < Bus.maxPendingRequests else { callback(.failure(.tooManyPending)); return }
        let id = nextCorrelation
        nextCorrelation &+= 1
        let timer = loop.after(ms: timeoutMs) { [weak self] in
            guard let self, let p = self.pending.removeValue(forKey: id) else { return }
            p.callback(.failure(.timeout))
        }
        pending[id] = Pending(callback: callback, timer: timer)
        send(to: node, type: type, payload: payload, correlationID: id) { [weak self] reply in
            guard let self else { return }
            if let error = reply.errorMessage, let p = self.pending.removeValue(forKey: id) {
                p.timer.cancel()
                p.callback(.failure(.unavailable(error)))
            } else if reply.integer == 0, let p = self.pending.removeValue(forKey: id) {
                // Nobody subscribed to that node's channel: it is down.
                p.timer.cancel()
                p.callback(.failure(.unavailable("node \(node) is not listening")))
            }
        }
    }

    /// Decodes one frame and dispatches it; malformed frames are counted and dropped.
    func receive(_ bytes: [UInt8]) {
        let envelope: Envelope
        do { envelope = try Envelope.decode(bytes) } catch {
            drop(error.label)
            return
        }
        receivedByType[envelope.type, default: 0] += 1
        onReceive?(envelope.type)
        if envelope.type == .forwardResponse {
            guard let p = pending.removeValue(forKey: envelope.correlationID) else { return } // late: already timed out
            p.timer.cancel()
            p.callback(.success(envelope.payload))
            return
        }
        if let handler = requestHandlers[envelope.type], envelope.correlationID != 0 {
            let sender = envelope.sender
            let correlation = envelope.correlationID
            handler(envelope) { [weak self] response in
                self?.send(to: sender, type: .forwardResponse, payload: response, correlationID: correlation)
            }
            return
        }
        if let handler = handlers[envelope.type] {
            handler(envelope)
        } else {
            drop("unhandled_type")
        }
    }

    private func drop(_ reason: String) {
        droppedByReason[reason, default: 0] += 1
        onDrop?(reason)
    }

    /// Fails every pending request (shutdown).
    public func failAllPending() {
        let all = pending
        pending.removeAll()
        for (_, p) in all { p.timer.cancel(); p.callback(.failure(.unavailable("shutting down"))) }
    }
}
