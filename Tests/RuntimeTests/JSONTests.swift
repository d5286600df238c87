import XCTest
@testable import Runtime

final class JSONTests: XCTestCase {
    func testParsesAndWritesBack() throws {
        let text = #"{"a":1,"b":[true,false,null],"c":"x\"y\\z\n","d":-0.5e3,"e":{}}"#
        let v = try JSONParser.parse(text)
        XCTAssertEqual(v["a"]?.int64Value, 1)
        XCTAssertEqual(v["c"]?.stringValue, "x\"y\\z\n")
        XCTAssertEqual(v.serialized(), text)
    }

    func testNumbersKeepTheirLiteral() throws {
        XCTAssertEqual(try JSONParser.parse("[1.0, 1e2, 123456789012345678901234]").serialized(), "[1.0,1e2,123456789012345678901234]")
    }

    func testUnicodeEscapes() throws {
        XCTAssertEqual(try JSONParser.parse(#""\u00e9\ud83d\ude00""#).stringValue, "é😀")
        XCTAssertThrowsError(try JSONParser.parse(#""\ud83d""#))
    }

    func testRejectsMalformed() {
        for bad in ["", "{", "{\"a\"}", "{\"a\":}", "[1,]", "01", "1.", "-", "tru", "\"abc", "{} x", "[\"\u{01}\"]", "{'a':1}", "NaN"] {
            XCTAssertThrowsError(try JSONParser.parse(bad), "should reject \(bad.debugDescription)")
        }
    }

    func testDepthIsBounded() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        XCTAssertThrowsError(try JSONParser.parse(deep))
        let ok = String(repeating: "[", count: 32) + String(repeating: "]", count: 32)
        XCTAssertNoThrow(try JSONParser.parse(ok))
    }

    func testInvalidUTF8Rejected() {
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0xFF, 0xFE, 0x22]))
    }

    func testControlCharactersEscapedOnOutput() throws {
        let v = JSONValue.string("a\u{01}b")
        XCTAssertEqual(v.serialized(), #""a\u0001b""#)
        XCTAssertEqual(try JSONParser.parse(v.serialized()), v)
    }

    /// The byte writers used on hot paths write what the parser reads back, for every
    /// character class: plain ASCII, quotes and backslashes, controls, multi-byte UTF-8.
    func testByteWritersRoundTrip() throws {
        for text in ["", "plain", "q\"uo\\te", "tab\tnl\ncr\r\u{01}\u{1F}\u{7F}", "é😀 naïve", "mixed \"é\"\n"] {
            var out: [UInt8] = []
            JSONBytes.appendString(text, into: &out)
            XCTAssertEqual(try JSONParser.parse(out).stringValue, text, text.debugDescription)
            var viaBuffer: [UInt8] = []
            Array(text.utf8).withUnsafeBufferPointer { JSONBytes.appendString($0, into: &viaBuffer) }
            XCTAssertEqual(viaBuffer, out)
            XCTAssertEqual(JSONValue.string(text).bytes, out)
        }
        // Bytes that are not UTF-8 (written to Redis by hand) are repaired, never passed on.
        var repaired: [UInt8] = []
        [0x61, 0xFF, 0x22].withUnsafeBufferPointer { JSONBytes.appendString($0, into: &repaired) }
        XCTAssertEqual(try JSONParser.parse(repaired).stringValue, "a\u{FFFD}\"")
        var raw: [UInt8] = []
        [0x22, 0xFF, 0x22].withUnsafeBufferPointer { JSONBytes.appendRaw($0, into: &raw) }
        XCTAssertNoThrow(try JSONParser.parse(raw))
        var empty: [UInt8] = []
        JSONBytes.appendRaw(UnsafeBufferPointer(start: nil, count: 0), into: &empty)
        XCTAssertEqual(String(decoding: empty, as: UTF8.self), "null")
        for n: Int64 in [0, 7, 10, 99, 100, 123_456_789, -1, -10, Int64.max, Int64.min] {
            var out: [UInt8] = []
            JSONBytes.appendInt(n, into: &out)
            XCTAssertEqual(String(decoding: out, as: UTF8.self), String(n))
        }
    }

    func testAsciiAndNonAsciiStringsParseAlike() throws {
        XCTAssertEqual(try JSONParser.parse(#"["abc","é","a\"b","\u0041é"]"#), .array([.string("abc"), .string("é"), .string("a\"b"), .string("Aé")]))
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0x61, 0xC3, 0x22]), "a truncated sequence in an escape-free string")
    }

    // MARK: raw members (a produced message's body)

    /// A member kept raw is validated like any value and comes as its compact text: that text
    /// parses to the same value the ordinary parse gives. Seeded: random values written with
    /// random whitespace and random (valid) escapes.
    func testRawMembersParseToTheSameValue() throws {
        var state: UInt64 = 0x2545F4914F6CDD1D
        func next(_ n: Int) -> Int {   // xorshift64*
            state ^= state >> 12; state ^= state << 25; state ^= state >> 27
            return Int((state &* 2685821657736338717) >> 33) % n
        }
        func ws() -> String { ["", "", " ", "\n ", "\t", "\r\n"][next(6)] }
        func string() -> String {
            var out = "\""
            for _ in 0..<next(8) {
                switch next(9) {
                case 0: out += "\\\""
                case 1: out += "\\n"
                case 2: out += "\\u00e9"
                case 3: out += "\\ud83d\\ude00"
                case 4: out += "é"
                case 5: out += "\\/"
                case 6: out += "😀"
                default: out += String(UnicodeScalar(UInt8(0x61 + next(26))))
                }
            }
            return out + "\""
        }
        func value(_ depth: Int) -> String {
            switch depth > 4 ? next(4) : next(7) {
            case 0: return ["true", "false", "null"][next(3)]
            case 1: return ["0", "-1", "1.5e3", "123456789012345678901234", "-0.25"][next(5)]
            case 2, 3: return string()
            case 4: return "[" + (0..<next(4)).map { _ in ws() + value(depth + 1) + ws() }.joined(separator: ",") + "]"
            default: return "{" + (0..<next(4)).map { _ in ws() + string() + ws() + ":" + ws() + value(depth + 1) + ws() }.joined(separator: ",") + "}"
            }
        }
        for round in 0..<2000 {
            let body = value(0)
            let text = "{" + ws() + "\"topic\":\"t\"," + ws() + "\"body\"" + ws() + ":" + ws() + body + ws() + "}"
            let parsed = try JSONParser.parse(Array(text.utf8), rawMembers: "body")
            guard case .raw(let raw)? = parsed["body"] else { return XCTFail("round \(round): body not raw in \(text)") }
            XCTAssertEqual(try JSONParser.parse(raw), try JSONParser.parse(body), "round \(round): \(text)")
            XCTAssertFalse(raw.contains(0x0A), "no whitespace outside strings")
            XCTAssertEqual(parsed["topic"], .string("t"))
        }
        // Compact, escape-free text is kept byte for byte, and written back as is.
        let plain = #"{"a":[1,2.50,{"b":null}],"c":"é"}"#
        let v = try JSONParser.parse(Array("{\"body\": \(plain)}".utf8), rawMembers: "body")
        XCTAssertEqual(v["body"], .raw(Array(plain.utf8)))
        XCTAssertEqual(v.serialized(), "{\"body\":\(plain)}")
    }

    /// Whatever the ordinary parse refuses inside a raw member, the raw capture refuses too.
    func testRawMembersRefuseWhatTheParserRefuses() {
        let bad = ["{", "[1,]", "01", "1.", "-", "tru", "\"abc", "[\"\u{01}\"]", "{'a':1}", "NaN", #""\ud83d""#, #""\udc00""#,
                   #""\x""#, #""\u12""#, "{\"a\" 1}", "[1 2]", "{\"a\":1,}",
                   String(repeating: "[", count: 100) + String(repeating: "]", count: 100)]
        for body in bad {
            XCTAssertThrowsError(try JSONParser.parse(Array(body.utf8)), body.debugDescription)
            XCTAssertThrowsError(try JSONParser.parse(Array("{\"body\":\(body)}".utf8), rawMembers: "body"), body.debugDescription)
        }
        XCTAssertThrowsError(try JSONParser.parse([0x7B, 0x22, 0x62, 0x6F, 0x64, 0x79, 0x22, 0x3A, 0x22, 0xC3, 0x22, 0x7D], rawMembers: "body"), "invalid UTF-8")
    }
}
