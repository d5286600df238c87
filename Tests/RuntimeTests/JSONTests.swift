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
}
