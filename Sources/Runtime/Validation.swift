// MARK: - Request field validation (CONTRACT §2)
//
// Every accessor throws a 400 `bad_request` whose message names the field, so a handler reads
// its input in a few lines and never touches state before all of it is valid.

public enum Validate {
    public static let maxNameBytes = 256

    /// A name: 1-256 bytes of UTF-8, no control characters.
    public static func name(_ value: String, field: String) throws -> String {
        if value.isEmpty { throw HTTPError.badRequest("'\(field)' must not be empty") }
        if value.utf8.count > maxNameBytes { throw HTTPError.badRequest("'\(field)' is over \(maxNameBytes) bytes") }
        // Printable ASCII (the common case) needs no scalar decoding.
        if value.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return value }
        for scalar in value.unicodeScalars where scalar.value < 0x20 || scalar.value == 0x7F || (scalar.value >= 0x80 && scalar.value < 0xA0) {
            throw HTTPError.badRequest("'\(field)' contains control characters")
        }
        return value
    }

    /// A node id: 1-64 of [A-Za-z0-9_-].
    public static func isNodeID(_ id: String) -> Bool {
        guard !id.isEmpty, id.utf8.count <= 64 else { return false }
        return id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D || $0 == 0x5F }
    }
}

/// Typed access to a JSON object body with contract errors.
public struct Fields {
    public let object: JSONValue
    private let allowed: Set<String>?

    public init(_ object: JSONValue, allowed: Set<String>? = nil) { self.object = object; self.allowed = allowed }

    public func has(_ key: String) -> Bool {
        if let v = object[key], v != .null { return true }
        return false
    }

    public func name(_ key: String) throws -> String {
        guard let v = object[key], v != .null else { throw HTTPError.badRequest("missing field '\(key)'") }
        guard let s = v.stringValue else { throw HTTPError.badRequest("field '\(key)' must be a string") }
        return try Validate.name(s, field: key)
    }

    public func optionalName(_ key: String) throws -> String? {
        guard has(key) else { return nil }
        return try name(key)
    }

    public func int(_ key: String, default value: Int64? = nil, in range: ClosedRange<Int64>) throws -> Int64 {
        guard let v = object[key], v != .null else {
            if let value { return value }
            throw HTTPError.badRequest("missing field '\(key)'")
        }
        guard case .number = v else { throw HTTPError.badRequest("field '\(key)' must be a number") }
        guard let i = v.int64Value else { throw HTTPError.badRequest("field '\(key)' must be an integer") }
        guard range.contains(i) else { throw HTTPError.badRequest("field '\(key)' must be in [\(range.lowerBound), \(range.upperBound)]") }
        return i
    }

    public func optionalInt(_ key: String, in range: ClosedRange<Int64>) throws -> Int64? {
        guard has(key) else { return nil }
        return try int(key, in: range)
    }

    public func oneOf(_ key: String, _ options: [String], default value: String) throws -> String {
        guard let v = object[key], v != .null else { return value }
        guard let s = v.stringValue else { throw HTTPError.badRequest("field '\(key)' must be a string") }
        guard options.contains(s) else { throw HTTPError.badRequest("field '\(key)' must be one of \(options.joined(separator: ", "))") }
        return s
    }

    public func array(_ key: String, maxCount: Int) throws -> [JSONValue] {
        guard let v = object[key], v != .null else { throw HTTPError.badRequest("missing field '\(key)'") }
        guard let a = v.arrayValue else { throw HTTPError.badRequest("field '\(key)' must be an array") }
        guard !a.isEmpty else { throw HTTPError.badRequest("field '\(key)' must not be empty") }
        guard a.count <= maxCount else { throw HTTPError.badRequest("field '\(key)' has more than \(maxCount) items") }
        return a
    }

    public func value(_ key: String) throws -> JSONValue {
        guard let v = object[key] else { throw HTTPError.badRequest("missing field '\(key)'") }
        return v
    }
}
