import XCTest
@testable import Runtime

final class EnvelopeTests: XCTestCase {
    func testRoundTrip() throws {
        for type in BusMessageType.allCases {
            let e = Envelope(type: type, sender: "node-1", correlationID: 0xDEAD_BEEF_0102, payload: Array("hello".utf8))
            XCTAssertEqual(try Envelope.decode(e.encode()), e)
        }
        let withHMAC = Envelope(type: .raft, sender: "n", payload: [], hmac: [UInt8](repeating: 7, count: 32))
        XCTAssertEqual(try Envelope.decode(withHMAC.encode()), withHMAC)
    }

    func testEveryTruncationIsRejected() {
        let bytes = Envelope(type: .cache, sender: "n1", correlationID: 9, payload: [1, 2, 3, 4]).encode()
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try Envelope.decode(Array(bytes[0..<cut])), "prefix of \(cut) bytes must be rejected")
        }
    }

    func testRejectsUnknownVersionTypeMagicAndTrailingBytes() {
        var bytes = Envelope(type: .raft, sender: "n1", payload: [1]).encode()
        var v = bytes; v[2] = 2
        XCTAssertThrowsError(try Envelope.decode(v)) { XCTAssertEqual($0 as? Envelope.DecodeError, .unsupportedVersion(2)) }
        var t = bytes; t[3] = 200
        XCTAssertThrowsError(try Envelope.decode(t)) { XCTAssertEqual($0 as? Envelope.DecodeError, .unknownType(200)) }
        var m = bytes; m[0] = 0
        XCTAssertThrowsError(try Envelope.decode(m)) { XCTAssertEqual($0 as? Envelope.DecodeError, .badMagic) }
        bytes.append(0)
        XCTAssertThrowsError(try Envelope.decode(bytes)) { XCTAssertEqual($0 as? Envelope.DecodeError, .trailingBytes) }
    }

    func testRejectsOversizedLengthWithoutAllocating() {
        var bytes = Envelope(type: .raft, sender: "n1", payload: []).encode()
        // payload length field = 0xFFFFFFFF
        let lengthOffset = 6 + 2 + 8
        for i in 0..<4 { bytes[lengthOffset + i] = 0xFF }
        XCTAssertThrowsError(try Envelope.decode(bytes)) { XCTAssertEqual($0 as? Envelope.DecodeError, .oversized) }
    }

    func testRandomGarbageNeverCrashes() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let n = Int.random(in: 0..<64, using: &rng)
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? Envelope.decode(bytes)
        }
    }
}
