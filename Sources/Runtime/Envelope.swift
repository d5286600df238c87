// MARK: - Bus envelope
//
// Every node-to-node message travels over Redis pub/sub in this frame (big-endian):
//
//   "CB"  magic            2 bytes
//   version = 1            1 byte
//   type                   1 byte   (BusMessageType)
//   flags                  1 byte   bit 0: an HMAC-SHA256 trailer follows (reserved for a cluster secret)
//   sender length, sender  1 + n    (node id, 1-64 bytes)
//   correlation id         8 bytes  (0 = none; requests and their responses share one)
//   payload length         4 bytes  (at most `Envelope.maxPayloadBytes`)
//   payload                n bytes
//   [hmac                  32 bytes when flag bit 0]
//
// Decoding never trusts a length: truncated, oversized, trailing-garbage and unknown-version
// frames are rejected with a reason, which the bus counts and drops.

public enum BusMessageType: UInt8, Sendable, CaseIterable {
    case heartbeat = 1
    case raft = 2
    case forwardRequest = 3
    case forwardResponse = 4
    case cache = 5
    case queueNotify = 6
    case lockNotify = 7
    case ping = 8
    case pong = 9

    public var label: String {
        switch self {
        case .heartbeat: return "heartbeat"
        case .raft: return "raft"
        case .forwardRequest: return "forward_request"
        case .forwardResponse: return "forward_response"
        case .cache: return "cache"
        case .queueNotify: return "queue_notify"
        case .lockNotify: return "lock_notify"
        case .ping: return "ping"
        case .pong: return "pong"
        }
    }
}

public struct Envelope: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let maxPayloadBytes = 8 << 20
    public static let hmacBytes = 32

    public var type: BusMessageType
    public var sender: String
    public var correlationID: UInt64
    public var payload: [UInt8]
    public var hmac: [UInt8]?

    public init(type: BusMessageType, sender: String, correlationID: UInt64 = 0, payload: [UInt8], hmac: [UInt8]? = nil) {
        self.type = type; self.sender = sender; self.correlationID = correlationID; self.payload = payload; self.hmac = hmac
    }

    public enum DecodeError: Error, Equatable, Sendable {
        case truncated, badMagic, unsupportedVersion(UInt8), unknownType(UInt8), badSender, oversized, trailingBytes
        public var label: String {
            switch self {
            case .truncated: return "truncated"
            case .badMagic: return "bad_magic"
            case .unsupportedVersion: return "version"
            case .unknownType: return "unknown_type"
            case .badSender: return "bad_sender"
            case .oversized: return "oversized"
            case .trailingBytes: return "trailing_bytes"
            }
        }
    }

    public func encode() -> [UInt8] {
        let senderBytes = Array(sender.utf8.prefix(64))
        var out: [UInt8] = []
        out.reserveCapacity(18 + senderBytes.count + payload.count + (hmac?.count ?? 0))
        out.append(0x43); out.append(0x42)
        out.append(Envelope.version)
        out.append(type.rawValue)
        out.append(hmac == nil ? 0 : 1)
        out.append(UInt8(senderBytes.count))
        out.append(contentsOf: senderBytes)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: correlationID >> UInt64(shift))) }
        let length = UInt32(payload.count)
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: length >> UInt32(shift))) }
        out.append(contentsOf: payload)
        if let hmac { out.append(contentsOf: hmac) }
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> Envelope {
        var i = 0
        func need(_ n: Int) throws(DecodeError) { if bytes.count - i < n { throw .truncated } }
        try need(6)
        guard bytes[0] == 0x43, bytes[1] == 0x42 else { throw .badMagic }
        guard bytes[2] == version else { throw .unsupportedVersion(bytes[2]) }
        guard let type = BusMessageType(rawValue: bytes[3]) else { throw .unknownType(bytes[3]) }
        let flags = bytes[4]
        let senderLength = Int(bytes[5])
        i = 6
        guard senderLength >= 1, senderLength <= 64 else { throw .badSender }
        try need(senderLength)
        guard let sender = String(validating: bytes[i..<(i + senderLength)], as: UTF8.self) else { throw .badSender }
        i += senderLength
        try need(12)
        var correlation: UInt64 = 0
        for _ in 0..<8 { correlation = correlation << 8 | UInt64(bytes[i]); i += 1 }
        var length: UInt32 = 0
        for _ in 0..<4 { length = length << 8 | UInt32(bytes[i]); i += 1 }
        guard Int(length) <= maxPayloadBytes else { throw .oversized }
        try need(Int(length))
        let payload = Array(bytes[i..<(i + Int(length))])
        i += Int(length)
        var hmac: [UInt8]?
        if flags & 1 != 0 {
            try need(hmacBytes)
            hmac = Array(bytes[i..<(i + hmacBytes)])
            i += hmacBytes
        }
        guard i == bytes.count else { throw .trailingBytes }
        return Envelope(type: type, sender: sender, correlationID: correlation, payload: payload, hmac: hmac)
    }
}
