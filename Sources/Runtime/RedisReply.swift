import CHiredis

/// A Redis reply, copied out of hiredis's `redisReply` (hiredis frees its own after the callback).
public enum RedisReply: Equatable, Sendable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case error(String)

    /// Copies a hiredis reply tree, bounded in depth.
    static func copy(_ pointer: UnsafeMutablePointer<redisReply>, depth: Int = 0) -> RedisReply {
        let reply = pointer.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            return .string(bytes(reply.str, Int(reply.len)))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: bytes(reply.str, Int(reply.len)), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: bytes(reply.str, Int(reply.len)), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_ARRAY:
            guard depth < 16, let elements = reply.element else { return .array([]) }
            var out: [RedisReply] = []
            out.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                if let child = elements[i] { out.append(copy(child, depth: depth + 1)) } else { out.append(.null) }
            }
            return .array(out)
        default:
            return .null
        }
    }

    private static func bytes(_ str: UnsafeMutablePointer<CChar>?, _ len: Int) -> [UInt8] {
        guard let str, len > 0 else { return [] }
        return str.withMemoryRebound(to: UInt8.self, capacity: len) { Array(UnsafeBufferPointer(start: $0, count: len)) }
    }

    // MARK: accessors

    public var isError: Bool { if case .error = self { return true } else { return false } }
    public var errorMessage: String? { if case .error(let m) = self { return m } else { return nil } }

    public var string: String? {
        switch self {
        case .string(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    public var bytes: [UInt8]? {
        switch self {
        case .string(let b): return b
        case .status(let s): return Array(s.utf8)
        default: return nil
        }
    }

    public var integer: Int64? {
        switch self {
        case .integer(let i): return i
        case .string(let b): return Int64(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }

    public var array: [RedisReply]? { if case .array(let a) = self { return a } else { return nil } }

    /// A flat field/value array (HGETALL, CONFIG GET) as pairs; an odd last item is dropped.
    public var pairs: [(field: RedisReply, value: RedisReply)] {
        guard let items = array else { return [] }
        return stride(from: 0, to: items.count - 1, by: 2).map { (items[$0], items[$0 + 1]) }
    }
}

/// A hiredis reply read where it lies, valid only inside the callback that handed it out
/// (`RedisConnection.sendVisiting`): nothing is copied until the reader asks.
public struct RedisReplyView {
    let pointer: UnsafePointer<redisReply>

    init(_ pointer: UnsafePointer<redisReply>) { self.pointer = pointer }

    public var isArray: Bool { pointer.pointee.type == REDIS_REPLY_ARRAY }
    public var isError: Bool { pointer.pointee.type == REDIS_REPLY_ERROR }
    /// Elements of an array reply (0 otherwise).
    public var count: Int { isArray ? Int(pointer.pointee.elements) : 0 }

    public subscript(i: Int) -> RedisReplyView? {
        guard isArray, i >= 0, i < Int(pointer.pointee.elements), let child = pointer.pointee.element?[i] else { return nil }
        return RedisReplyView(UnsafePointer(child))
    }

    /// The bytes of a string, status or error reply (empty for others).
    public var bytes: UnsafeBufferPointer<UInt8> {
        let r = pointer.pointee
        guard r.type == REDIS_REPLY_STRING || r.type == REDIS_REPLY_STATUS || r.type == REDIS_REPLY_ERROR,
              let str = r.str, r.len > 0 else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: UnsafeRawPointer(str).assumingMemoryBound(to: UInt8.self), count: Int(r.len))
    }

    public var errorMessage: String? { isError ? String(decoding: bytes, as: UTF8.self) : nil }

    public var integer: Int64? { pointer.pointee.type == REDIS_REPLY_INTEGER ? pointer.pointee.integer : nil }

    /// A full copy, for the rare path that keeps it.
    public var copied: RedisReply { RedisReply.copy(UnsafeMutablePointer(mutating: pointer)) }
}
