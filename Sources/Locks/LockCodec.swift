// Binary encoding of lock commands (Raft log entries).
//
// Layout, all integers little-endian, fixed width:
//
//   u8 version (= 1) | u8 kind | fields of the kind, in declaration order
//
//   string   = u32 byte count (1...LockLimits.nameBytesMax) + UTF-8 bytes
//   optional = u8 0 (absent) | u8 1 + value
//   mode     = u8 0 exclusive | 1 shared
//
//   kind 1 acquire:     resource, owner, mode, i64 ttlMs, i64 waitMs, optional requestId,
//                       origin, u64 tag, i64 nowMs
//   kind 2 release:     resource, owner, optional u64 fencingToken, origin, u64 tag, i64 nowMs
//   kind 3 renew:       resource, owner, i64 ttlMs, origin, u64 tag, i64 nowMs
//   kind 4 cancelWait:  resource, owner, origin, u64 tag, i64 nowMs
//   kind 5 tick:        i64 nowMs
//   kind 6 leaderGrace: i64 nowMs, i64 graceMs
//
// Decoding never traps: every read is bounds-checked, strings are length-limited and
// UTF-8-validated, and trailing bytes are an error. Ranges of numbers (ttl, wait) are the
// table's concern (`rejected(.invalidArgument)`), so a decodable command always round-trips.

// MARK: - Byte writer / reader

struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) {
        bytes.reserveCapacity(capacity)
    }

    mutating func u8(_ value: UInt8) {
        bytes.append(value)
    }

    mutating func u32(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func u64(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func i64(_ value: Int64) {
        u64(UInt64(bitPattern: value))
    }

    mutating func bool(_ value: Bool) {
        u8(value ? 1 : 0)
    }

    mutating func string(_ value: String) {
        let utf8 = value.utf8
        u32(UInt32(truncatingIfNeeded: utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func optionalString(_ value: String?) {
        if let value {
            u8(1)
            string(value)
        } else {
            u8(0)
        }
    }

    mutating func mode(_ value: LockMode) {
        u8(value == .exclusive ? 0 : 1)
    }
}

struct ByteReader {
    private let bytes: [UInt8]
    private(set) var position: Int = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    var remaining: Int { bytes.count - position }

    mutating func u8() throws(LockCodecError) -> UInt8 {
        guard position < bytes.count else { throw .truncated }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u32() throws(LockCodecError) -> UInt32 {
        guard remaining >= 4 else { throw .truncated }
        var value: UInt32 = 0
        for shift in 0..<4 {
            value |= UInt32(bytes[position + shift]) << (8 * UInt32(shift))
        }
        position += 4
        return value
    }

    mutating func u64() throws(LockCodecError) -> UInt64 {
        guard remaining >= 8 else { throw .truncated }
        var value: UInt64 = 0
        for shift in 0..<8 {
            value |= UInt64(bytes[position + shift]) << (8 * UInt64(shift))
        }
        position += 8
        return value
    }

    mutating func i64() throws(LockCodecError) -> Int64 {
        Int64(bitPattern: try u64())
    }

    mutating func bool() throws(LockCodecError) -> Bool {
        switch try u8() {
        case 0: return false
        case 1: return true
        default: throw .invalidValue("bool")
        }
    }

    /// A count that the caller will loop over: at most `max`, and not more than the bytes left
    /// could hold at `minimumBytesEach` per element (so a lying count fails fast).
    mutating func count(max: Int, minimumBytesEach: Int, what: String) throws(LockCodecError) -> Int {
        let value = Int(try u32())
        guard value <= max else { throw .invalidValue("\(what) count \(value) over \(max)") }
        guard value * minimumBytesEach <= remaining else { throw .truncated }
        return value
    }

    mutating func string(maxBytes: Int = LockLimits.nameBytesMax, allowEmpty: Bool = false) throws(LockCodecError) -> String {
        let length = Int(try u32())
        guard length <= maxBytes else { throw .invalidValue("string of \(length) bytes") }
        guard allowEmpty || length > 0 else { throw .invalidValue("empty string") }
        guard remaining >= length else { throw .truncated }
        let slice = bytes[position..<(position + length)]
        guard let text = String(validating: slice, as: UTF8.self) else { throw .invalidValue("invalid UTF-8") }
        position += length
        return text
    }

    mutating func optionalString() throws(LockCodecError) -> String? {
        try bool() ? try string() : nil
    }

    mutating func mode() throws(LockCodecError) -> LockMode {
        switch try u8() {
        case 0: return .exclusive
        case 1: return .shared
        default: throw .invalidValue("mode")
        }
    }

    func finish() throws(LockCodecError) {
        guard remaining == 0 else { throw .trailingBytes }
    }
}

// MARK: - Commands

extension LockCommand {
    /// Current encoding version.
    public static let codecVersion: UInt8 = 1

    private enum Kind: UInt8 {
        case acquire = 1, release = 2, renew = 3, cancelWait = 4, tick = 5, leaderGrace = 6
    }

    /// The command's log-entry bytes (see the layout at the top of this file).
    public func encode() -> [UInt8] {
        var writer = ByteWriter(capacity: 96)
        writer.u8(LockCommand.codecVersion)
        switch self {
        case .acquire(let command):
            writer.u8(Kind.acquire.rawValue)
            writer.string(command.resource)
            writer.string(command.owner)
            writer.mode(command.mode)
            writer.i64(command.ttlMs)
            writer.i64(command.waitMs)
            writer.optionalString(command.requestId)
            writer.string(command.origin)
            writer.u64(command.tag)
            writer.i64(command.nowMs)
        case .release(let command):
            writer.u8(Kind.release.rawValue)
            writer.string(command.resource)
            writer.string(command.owner)
            if let token = command.fencingToken {
                writer.u8(1)
                writer.u64(token)
            } else {
                writer.u8(0)
            }
            writer.string(command.origin)
            writer.u64(command.tag)
            writer.i64(command.nowMs)
        case .renew(let command):
            writer.u8(Kind.renew.rawValue)
            writer.string(command.resource)
            writer.string(command.owner)
            writer.i64(command.ttlMs)
            writer.string(command.origin)
            writer.u64(command.tag)
            writer.i64(command.nowMs)
        case .cancelWait(let command):
            writer.u8(Kind.cancelWait.rawValue)
            writer.string(command.resource)
            writer.string(command.owner)
            writer.string(command.origin)
            writer.u64(command.tag)
            writer.i64(command.nowMs)
        case .tick(let nowMs):
            writer.u8(Kind.tick.rawValue)
            writer.i64(nowMs)
        case .leaderGrace(let nowMs, let graceMs):
            writer.u8(Kind.leaderGrace.rawValue)
            writer.i64(nowMs)
            writer.i64(graceMs)
        }
        return writer.bytes
    }

    /// Decodes log-entry bytes. Throws `LockCodecError` for anything malformed (truncated,
    /// unknown version or kind, over-long or empty or non-UTF-8 strings, trailing bytes);
    /// never traps; work is bounded by the input length.
    public static func decode(_ bytes: [UInt8]) throws(LockCodecError) -> LockCommand {
        var reader = ByteReader(bytes)
        let version = try reader.u8()
        guard version == codecVersion else { throw .unsupportedVersion(version) }
        let kindByte = try reader.u8()
        guard let kind = Kind(rawValue: kindByte) else { throw .unknownKind(kindByte) }
        let command: LockCommand
        switch kind {
        case .acquire:
            let resource = try reader.string()
            let owner = try reader.string()
            let mode = try reader.mode()
            let ttlMs = try reader.i64()
            let waitMs = try reader.i64()
            let requestId = try reader.optionalString()
            let origin = try reader.string()
            let tag = try reader.u64()
            let nowMs = try reader.i64()
            command = .acquire(AcquireCommand(resource: resource, owner: owner, mode: mode, ttlMs: ttlMs,
                                              waitMs: waitMs, requestId: requestId, origin: origin,
                                              tag: tag, nowMs: nowMs))
        case .release:
            let resource = try reader.string()
            let owner = try reader.string()
            let token: UInt64? = try reader.bool() ? try reader.u64() : nil
            let origin = try reader.string()
            let tag = try reader.u64()
            let nowMs = try reader.i64()
            command = .release(ReleaseCommand(resource: resource, owner: owner, fencingToken: token,
                                              origin: origin, tag: tag, nowMs: nowMs))
        case .renew:
            let resource = try reader.string()
            let owner = try reader.string()
            let ttlMs = try reader.i64()
            let origin = try reader.string()
            let tag = try reader.u64()
            let nowMs = try reader.i64()
            command = .renew(RenewCommand(resource: resource, owner: owner, ttlMs: ttlMs,
                                          origin: origin, tag: tag, nowMs: nowMs))
        case .cancelWait:
            let resource = try reader.string()
            let owner = try reader.string()
            let origin = try reader.string()
            let tag = try reader.u64()
            let nowMs = try reader.i64()
            command = .cancelWait(CancelWaitCommand(resource: resource, owner: owner, origin: origin,
                                                    tag: tag, nowMs: nowMs))
        case .tick:
            command = .tick(nowMs: try reader.i64())
        case .leaderGrace:
            let nowMs = try reader.i64()
            let graceMs = try reader.i64()
            command = .leaderGrace(nowMs: nowMs, graceMs: graceMs)
        }
        try reader.finish()
        return command
    }
}
