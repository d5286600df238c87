// MARK: - JSON values
//
// A small, bounded JSON parser and writer. Numbers keep their literal text, so a message body
// given as "any JSON" goes back out exactly as it came in (no 1.0 -> 1 rewriting).

public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])
    /// JSON text already validated and compact, written as is: only the parser makes it, for
    /// the members it was asked to keep raw (`JSONParser.parse(_:rawMembers:)`).
    case raw([UInt8])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case let (.raw(a), .raw(b)): return a == b
        default: return false
        }
    }

    public static func int(_ v: Int64) -> JSONValue { .number(String(v)) }
    public static func int(_ v: Int) -> JSONValue { .number(String(v)) }
    public static func int(_ v: UInt64) -> JSONValue { .number(String(v)) }
    public static func double(_ v: Double) -> JSONValue {
        if v.isNaN || v.isInfinite { return .null }
        if v == v.rounded() && abs(v) < 1e15 { return .number(String(Int64(v))) }
        return .number(String(v))
    }

    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.last(where: { $0.0 == key })?.1
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: [(String, JSONValue)]? { if case .object(let o) = self { return o } else { return nil } }
    /// An integral number (no fraction, no exponent beyond an integral value) within Int64.
    public var int64Value: Int64? {
        guard case .number(let text) = self else { return nil }
        if let v = Int64(text) { return v }
        if let d = Double(text), d == d.rounded(), abs(d) < 9.2e18 { return Int64(d) }
        return nil
    }
    public var doubleValue: Double? { if case .number(let t) = self { return Double(t) } else { return nil } }

    // MARK: writing

    public func serialized() -> String { String(decoding: bytes, as: UTF8.self) }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        write(into: &out)
        return out
    }

    public func write(into out: inout String) { out += serialized() }

    /// Compact JSON; strings escaped by `JSONBytes.appendString`, numbers as their literal text.
    public func write(into out: inout [UInt8]) {
        switch self {
        case .null: JSONBytes.appendLiteral("null", into: &out)
        case .bool(let b): if b { JSONBytes.appendLiteral("true", into: &out) } else { JSONBytes.appendLiteral("false", into: &out) }
        case .number(let n): out.append(contentsOf: n.utf8)
        case .raw(let text): out.append(contentsOf: text)
        case .string(let s): JSONBytes.appendString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONBytes.appendString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }
}

// MARK: - Writing JSON straight into bytes (hot paths: no String, no JSONValue)

public enum JSONBytes {
    /// Appends `text` (UTF-8) as a JSON string literal (see `appendEscaped`). Text that is not
    /// valid UTF-8 is repaired first (U+FFFD), so the output stays JSON.
    public static func appendString(_ text: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) {
        var plain = true
        var ascii = true
        for b in text where b < 0x20 || b == 0x22 || b == 0x5C || b >= 0x80 {
            plain = false
            if b >= 0x80 { ascii = false; break }
        }
        if plain {
            out.append(0x22)
            out.append(contentsOf: text)
            out.append(0x22)
            return
        }
        if !ascii && String(validating: text, as: UTF8.self) == nil {
            appendString(String(decoding: text, as: UTF8.self), into: &out)
            return
        }
        appendEscaped(text, into: &out)
    }

    public static func appendString(_ text: String, into out: inout [UInt8]) {
        var t = text
        t.withUTF8 { appendEscaped($0, into: &out) }
    }

    /// Valid UTF-8 as a JSON string literal: `"` `\` and controls escaped (`\n` `\r` `\t`,
    /// others `\u00xx`), everything else (multi-byte sequences too) copied as is.
    private static func appendEscaped(_ text: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) {
        out.append(0x22)
        var run = 0
        for (i, b) in text.enumerated() where b < 0x20 || b == 0x22 || b == 0x5C {
            if i > run { out.append(contentsOf: UnsafeBufferPointer(rebasing: text[run..<i])) }
            run = i + 1
            switch b {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            default:
                // \u00xx, lowercase hex; b < 0x20, so the high digit is 0 or 1.
                let low = b & 0x0F
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, 0x30 + (b >> 4), low < 10 ? 0x30 + low : 0x57 + low])
            }
        }
        if text.count > run { out.append(contentsOf: UnsafeBufferPointer(rebasing: text[run...])) }
        out.append(0x22)
    }

    /// Appends JSON text stored by this service (a message body) as is; invalid UTF-8 is
    /// repaired as above. Empty text is `null`.
    public static func appendRaw(_ json: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) {
        if json.isEmpty { appendLiteral("null", into: &out); return }
        var ascii = true
        for b in json where b >= 0x80 { ascii = false; break }
        if ascii || String(validating: json, as: UTF8.self) != nil { out.append(contentsOf: json); return }
        out.append(contentsOf: String(decoding: json, as: UTF8.self).utf8)
    }

    /// Appends a decimal integer without a String.
    public static func appendInt(_ value: Int64, into out: inout [UInt8]) {
        if value < 0 { out.append(0x2D) }
        let v = value.magnitude
        if v < 10 { out.append(UInt8(truncatingIfNeeded: v) &+ 0x30); return }
        // Digits counted first, then written in place from the end: no buffer, no String.
        var digits = 1
        var probe = v
        while probe >= 10 { probe /= 10; digits += 1 }
        let start = out.count
        out.append(contentsOf: repeatElement(0x30, count: digits))
        var rest = v
        out.withUnsafeMutableBufferPointer { b in
            var k = start + digits - 1
            while rest > 0 { b[k] = UInt8(truncatingIfNeeded: rest % 10) &+ 0x30; rest /= 10; k -= 1 }
        }
    }

    public static func appendLiteral(_ literal: StaticString, into out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }
}

public struct JSONParseError: Error, CustomStringConvertible {
    public let message: String
    public let offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

/// Recursive-descent parser with a depth bound; rejects trailing garbage and invalid UTF-8.
public struct JSONParser {
    public static let maxDepth = 64
    /// The input, valid for the parse (`parse` runs inside `withUnsafeBufferPointer`): reads
    /// without a bounds check per byte in release builds.
    private let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var rawKey: String?

    public static func parse(_ bytes: [UInt8]) throws -> JSONValue { try parse(bytes, rawMembers: nil) }

    /// As `parse`, but the value of every object member named `rawMembers` comes as `.raw`: its
    /// text, validated like any value and copied without insignificant whitespace, and no tree
    /// built for it (a produced message's body, which is only stored and handed back). Its
    /// strings keep their escapes as written.
    public static func parse(_ bytes: [UInt8], rawMembers: String?) throws -> JSONValue {
        try bytes.withUnsafeBufferPointer { buffer in
            var p = JSONParser(bytes: buffer)
            p.rawKey = rawMembers
            p.skipWhitespace()
            let value = try p.parseValue(depth: 0)
            p.skipWhitespace()
            guard p.i == buffer.count else { throw p.error("unexpected trailing data") }
            return value
        }
    }

    public static func parse(_ text: String) throws -> JSONValue { try parse(Array(text.utf8)) }

    private init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    private func error(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: i) }

    private mutating func skipWhitespace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    private mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth < JSONParser.maxDepth else { throw error("nesting too deep") }
        guard i < bytes.count else { throw error("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error("unexpected character")
        }
    }

    private mutating func literal(_ word: String) throws {
        for u in word.utf8 {
            guard i < bytes.count, bytes[i] == u else { throw error("invalid literal") }
            i += 1
        }
    }

    private mutating func parseObject(depth: Int) throws -> JSONValue {
        i += 1
        var members: [(String, JSONValue)] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw error("expected a key") }
            let key = try parseString()
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
            i += 1
            skipWhitespace()
            let value: JSONValue
            if let rawKey, key == rawKey {
                var text: [UInt8] = []
                try copyValue(depth: depth + 1, into: &text)
                value = .raw(text)
            } else {
                value = try parseValue(depth: depth + 1)
            }
            if let existing = members.firstIndex(where: { $0.0 == key }) { members[existing].1 = value } else { members.append((key, value)) }
            skipWhitespace()
            guard i < bytes.count else { throw error("unexpected end of input") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            throw error("expected ',' or '}'")
        }
    }

    private mutating func parseArray(depth: Int) throws -> JSONValue {
        i += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard i < bytes.count else { throw error("unexpected end of input") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            throw error("expected ',' or ']'")
        }
    }

    private mutating func parseNumber() throws -> String {
        let start = i
        try scanNumber()
        return String(decoding: bytes[start..<i], as: UTF8.self)
    }

    private mutating func scanNumber() throws {
        let start = i
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count else { throw error("invalid number") }
        if bytes[i] == UInt8(ascii: "0") { i += 1 } else {
            guard isDigit(bytes[i]) else { throw error("invalid number") }
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard i < bytes.count, isDigit(bytes[i]) else { throw error("invalid number") }
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count, isDigit(bytes[i]) else { throw error("invalid number") }
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        }
        guard i - start <= 64 else { throw error("number too long") }
    }

    // MARK: raw capture

    /// Validates the value at `i` as `parseValue` would and appends its text to `out` without
    /// whitespace outside strings.
    private mutating func copyValue(depth: Int, into out: inout [UInt8]) throws {
        guard depth < JSONParser.maxDepth else { throw error("nesting too deep") }
        guard i < bytes.count else { throw error("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            // An object's members are a key, ':' and a value; an array's, a value.
            let keyed = bytes[i] == UInt8(ascii: "{")
            let close = keyed ? UInt8(ascii: "}") : UInt8(ascii: "]")
            out.append(bytes[i])
            i += 1
            skipWhitespace()
            if i < bytes.count, bytes[i] == close { i += 1; out.append(close); return }
            while true {
                skipWhitespace()
                if keyed {
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw error("expected a key") }
                    try copyString(into: &out)
                    skipWhitespace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
                    i += 1
                    out.append(UInt8(ascii: ":"))
                    skipWhitespace()
                }
                try copyValue(depth: depth + 1, into: &out)
                skipWhitespace()
                guard i < bytes.count else { throw error("unexpected end of input") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; out.append(UInt8(ascii: ",")); continue }
                if bytes[i] == close { i += 1; out.append(close); return }
                throw error(keyed ? "expected ',' or '}'" : "expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            try copyString(into: &out)
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            let start = i
            try literal(bytes[i] == UInt8(ascii: "t") ? "true" : bytes[i] == UInt8(ascii: "f") ? "false" : "null")
            out.append(contentsOf: bytes[start..<i])
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = i
            try scanNumber()
            out.append(contentsOf: bytes[start..<i])
        default:
            throw error("unexpected character")
        }
    }

    /// Validates the string at `i` as `parseString` would (escapes, surrogate pairs, no
    /// control characters, UTF-8) and appends it as written, quotes and escapes included.
    private mutating func copyString(into out: inout [UInt8]) throws {
        let start = i
        i += 1
        var ascii = true
        while true {
            guard i < bytes.count else { throw error("unterminated string") }
            let b = bytes[i]
            if b == UInt8(ascii: "\"") { i += 1; break }
            if b < 0x20 { throw error("control character in string") }
            if b >= 0x80 { ascii = false }
            if b == UInt8(ascii: "\\") {
                i += 1
                guard i < bytes.count else { throw error("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    break
                case UInt8(ascii: "u"):
                    _ = try unicodeEscape()
                default: throw error("invalid escape")
                }
                continue
            }
            i += 1
        }
        if !ascii {
            guard String(validating: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self) != nil else { throw error("invalid UTF-8") }
        }
        out.append(contentsOf: bytes[start..<i])
    }

    private func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    private mutating func parseString() throws -> String {
        i += 1 // opening quote
        // Fast path: no escape before the closing quote, so the string is one run, copied
        // without validation when it is ASCII.
        var j = i
        var ascii = true
        while j < bytes.count {
            let b = bytes[j]
            if b == UInt8(ascii: "\"") {
                let start = i
                i = j
                let run = UnsafeBufferPointer(rebasing: bytes[start..<j])
                let s: String? = ascii ? String(decoding: run, as: UTF8.self) : String(validating: run, as: UTF8.self)
                guard let s else { throw error("invalid UTF-8") }
                i += 1
                return s
            }
            if b == UInt8(ascii: "\\") || b < 0x20 { break }
            if b >= 0x80 { ascii = false }
            j += 1
        }
        let scalars = String.UnicodeScalarView()
        var runStart = i
        var out = ""
        func flush(_ end: Int) throws {
            if end > runStart {
                guard let s = String(validating: bytes[runStart..<end], as: UTF8.self) else { throw error("invalid UTF-8") }
                out += s
            }
        }
        while true {
            guard i < bytes.count else { throw error("unterminated string") }
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                try flush(i)
                i += 1
                if !scalars.isEmpty { out.unicodeScalars.append(contentsOf: scalars) }
                return out
            }
            if b < 0x20 { throw error("control character in string") }
            if b == UInt8(ascii: "\\") {
                try flush(i)
                i += 1
                guard i < bytes.count else { throw error("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out += "\""
                case UInt8(ascii: "\\"): out += "\\"
                case UInt8(ascii: "/"): out += "/"
                case UInt8(ascii: "b"): out += "\u{08}"
                case UInt8(ascii: "f"): out += "\u{0C}"
                case UInt8(ascii: "n"): out += "\n"
                case UInt8(ascii: "r"): out += "\r"
                case UInt8(ascii: "t"): out += "\t"
                case UInt8(ascii: "u"):
                    guard let scalar = Unicode.Scalar(try unicodeEscape()) else { throw error("invalid escape") }
                    out.unicodeScalars.append(scalar)
                default: throw error("invalid escape")
                }
                runStart = i
                continue
            }
            i += 1
        }
    }

    /// The code point of a `\u` escape whose `u` was just read: four hex digits, and for a
    /// high surrogate the `\u` low surrogate that must follow.
    private mutating func unicodeEscape() throws -> UInt32 {
        let code = try hex4()
        if code >= 0xD800 && code < 0xDC00 {
            guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else { throw error("unpaired surrogate") }
            i += 2
            let low = try hex4()
            guard low >= 0xDC00 && low < 0xE000 else { throw error("unpaired surrogate") }
            return 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        }
        if code >= 0xDC00 && code < 0xE000 { throw error("unpaired surrogate") }
        return code
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw error("invalid \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[i]
            let d: UInt32
            switch b {
            case 0x30...0x39: d = UInt32(b - 0x30)
            case 0x41...0x46: d = UInt32(b - 0x41 + 10)
            case 0x61...0x66: d = UInt32(b - 0x61 + 10)
            default: throw error("invalid \\u escape")
            }
            v = v * 16 + d
            i += 1
        }
        return v
    }
}
