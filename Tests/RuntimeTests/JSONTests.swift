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
}
