import XCTest
@testable import Raft

/// The versioned binary codec: round trips, and decode rejects bad input with an error
/// without crashing or allocating beyond its input.
final class CodecTests: XCTestCase {
    private func samples() -> [Message] {
        [
            Message(from: "n1", to: "n2", term: 3, type: .vote, logTerm: 2, index: 17, transfer: true),
            Message(from: "n2", to: "n1", term: 3, type: .voteResponse, reject: true),
            Message(from: "leader-ü", to: "n3", term: UInt64.max, type: .append, logTerm: 1, index: 1 << 40,
                    entries: [Entry(term: 5, index: 6, kind: .noop),
                              Entry(term: 5, index: 7, kind: .normal, data: Array(0...255)),
                              Entry(term: 5, index: 8, kind: .config, data: [1])],
                    commit: 99),
            Message(from: "n3", to: "n1", term: 4, type: .appendResponse, index: 12, reject: true, hintIndex: 9, hintTerm: 2),
            Message(from: "n1", to: "n2", term: 4, type: .heartbeat, commit: 5, context: 77),
            Message(from: "n1", to: "n2", term: 4, type: .snapshot,
                    snapshot: SnapshotChunk(index: 50, term: 3, voters: ["n1", "n2", "n3"], totalBytes: 100,
                                            offset: 40, data: Array(repeating: 9, count: 20))),
            Message(from: "n2", to: "n1", term: 4, type: .snapshotResponse, logTerm: 3, index: 50, hintIndex: 60),
            Message(from: "n1", to: "n2", term: 4, type: .timeoutNow),
        ]
    }

    func testRoundTripEveryType() throws {
        for message in samples() {
            XCTAssertEqual(try Message.decode(message.encode()), message)
        }
    }

    func testEveryTruncationIsRejected() {
        for message in samples() {
            let encoded = message.encode()
            for length in 0..<encoded.count {
                XCTAssertThrowsError(try Message.decode(Array(encoded[0..<length])), "prefix \(length) of \(message.type)")
            }
        }
    }

    func testTrailingBytesUnknownVersionTypeAndKindRejected() {
        let encoded = samples()[2].encode()
        XCTAssertThrowsError(try Message.decode(encoded + [0]))
        var version = encoded
        version[0] = 2
        XCTAssertThrowsError(try Message.decode(version)) { XCTAssertEqual($0 as? MessageDecodeError, .unsupportedVersion(2)) }
        var type = encoded
        type[1] = 200
        XCTAssertThrowsError(try Message.decode(type)) { XCTAssertEqual($0 as? MessageDecodeError, .unknownType(200)) }
        var flags = encoded
        flags[2] = 0x80
        XCTAssertThrowsError(try Message.decode(flags))
        XCTAssertThrowsError(try Message.decode([])) { XCTAssertEqual($0 as? MessageDecodeError, .empty) }
    }

    /// A count or length claiming more than the input holds is refused before allocating.
    func testHugeCountsAndLengthsRejectedWithoutAllocation() {
        var out: [UInt8] = [1, MessageType.append.rawValue, 0]
        Wire.putString("a", &out)
        Wire.putString("b", &out)
        for _ in 0..<7 { Wire.putVarint(1, &out) }
        Wire.putVarint(UInt64.max, &out) // entry count
        XCTAssertThrowsError(try Message.decode(out))
        var long: [UInt8] = [1, MessageType.append.rawValue, 0]
        Wire.putVarint(1 << 62, &long) // from length
        XCTAssertThrowsError(try Message.decode(long))
        let overflow: [UInt8] = [1, MessageType.append.rawValue, 0] + Array(repeating: 0xFF, count: 11)
        XCTAssertThrowsError(try Message.decode(overflow))
        XCTAssertThrowsError(try Message.decode(Array(repeating: 1, count: Message.maxEncodedBytes + 1)))
    }

    /// Random mutations never crash the decoder (seeded, reproducible).
    func testRandomMutationsNeverCrash() {
        var random = SplitMix64(seed: 99)
        let encoded = samples().map { $0.encode() }
        var decoded = 0
        for _ in 0..<20_000 {
            var bytes = encoded[random.below(encoded.count)]
            for _ in 0..<(1 + random.below(4)) {
                switch random.below(3) {
                case 0: bytes[random.below(bytes.count)] = UInt8(truncatingIfNeeded: random.next())
                case 1: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: random.below(bytes.count))
                default: if bytes.count > 1 { bytes.remove(at: random.below(bytes.count)) }
                }
            }
            if let message = try? Message.decode(bytes) {
                decoded += 1
                XCTAssertEqual(try? Message.decode(message.encode()), message)
            }
        }
        XCTAssertGreaterThan(decoded, 0)
    }
}
