import XCTest
import Locks

final class LockCodecTests: XCTestCase {
    static let samples: [LockCommand] = [
        .acquire(AcquireCommand(resource: "orders/42", owner: "worker-7", mode: .shared, ttlMs: 30_000, waitMs: 5_000,
                                requestId: "req-éß", origin: "node-1", tag: 77, nowMs: 1_700_000_000_000)),
        .acquire(AcquireCommand(resource: "r", owner: "o", mode: .exclusive, ttlMs: .max, waitMs: .min,
                                requestId: nil, origin: "n", tag: .max, nowMs: .min)),
        .release(ReleaseCommand(resource: "r", owner: "o", fencingToken: 123, origin: "n2", tag: 1, nowMs: 5)),
        .release(ReleaseCommand(resource: "r", owner: "o", fencingToken: nil, origin: "n2", tag: 0, nowMs: -5)),
        .renew(RenewCommand(resource: String(repeating: "x", count: 256), owner: "o", ttlMs: 1_000, origin: "n3",
                            tag: 9, nowMs: 10)),
        .cancelWait(CancelWaitCommand(resource: "r", owner: "o", origin: "n", tag: 3, nowMs: 11)),
        .tick(nowMs: 1_700_000_000_123),
        .leaderGrace(nowMs: 42, graceMs: 3_000),
    ]

    func testRoundTripOfEveryKind() throws {
        for command in Self.samples {
            let bytes = command.encode()
            XCTAssertEqual(bytes.first, LockCommand.codecVersion)
            XCTAssertEqual(try LockCommand.decode(bytes), command)
        }
    }

    func testEveryTruncationIsRejected() {
        for command in Self.samples {
            let bytes = command.encode()
            for length in 0..<bytes.count {
                XCTAssertThrowsError(try LockCommand.decode(Array(bytes[0..<length])), "\(command) cut at \(length)")
            }
        }
    }

    func testTrailingBytesVersionAndKindAreRejected() {
        let bytes = Self.samples[0].encode()
        XCTAssertThrowsError(try LockCommand.decode(bytes + [0])) { XCTAssertEqual($0 as? LockCodecError, .trailingBytes) }
        var badVersion = bytes
        badVersion[0] = 2
        XCTAssertThrowsError(try LockCommand.decode(badVersion)) { XCTAssertEqual($0 as? LockCodecError, .unsupportedVersion(2)) }
        var badKind = bytes
        badKind[1] = 99
        XCTAssertThrowsError(try LockCommand.decode(badKind)) { XCTAssertEqual($0 as? LockCodecError, .unknownKind(99)) }
        XCTAssertThrowsError(try LockCommand.decode([]))
    }

    func testBadStringsAndFieldsAreRejected() {
        func acquire(resource: String) -> [UInt8] {
            LockCommand.acquire(AcquireCommand(resource: resource, owner: "o", origin: "n", tag: 1, nowMs: 1)).encode()
        }
        // Too long.
        XCTAssertThrowsError(try LockCommand.decode(acquire(resource: String(repeating: "x", count: 257))))
        // Empty.
        XCTAssertThrowsError(try LockCommand.decode(acquire(resource: "")))
        // Invalid UTF-8: replace the one-byte resource "a" with 0xFF.
        var invalid = acquire(resource: "a")
        invalid[6] = 0xFF
        XCTAssertThrowsError(try LockCommand.decode(invalid))
        // A huge declared length does not allocate or read past the end.
        var huge = acquire(resource: "a")
        huge[2] = 0xFF; huge[3] = 0xFF; huge[4] = 0xFF; huge[5] = 0xFF
        XCTAssertThrowsError(try LockCommand.decode(huge))
        // Mode byte out of range (after resource and owner: 2 + 5 + 5).
        var badMode = acquire(resource: "a")
        badMode[12] = 7
        XCTAssertThrowsError(try LockCommand.decode(badMode))
        // Optional flag that is neither 0 nor 1.
        var badFlag = LockCommand.release(ReleaseCommand(resource: "r", owner: "o", origin: "n", tag: 1, nowMs: 1)).encode()
        badFlag[12] = 2
        XCTAssertThrowsError(try LockCommand.decode(badFlag))
    }

    func testGarbageNeverCrashes() {
        var generator = SeededGenerator(seed: 0xC0DEC)
        var decoded = 0
        for round in 0..<20_000 {
            let bytes: [UInt8]
            if round % 2 == 0 {
                // Random bytes with a plausible header.
                let length = Int.random(in: 0...80, using: &generator)
                var random = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if random.count >= 2 {
                    random[0] = 1
                    random[1] = UInt8.random(in: 1...6, using: &generator)
                }
                bytes = random
            } else {
                // A valid encoding with a few bytes flipped.
                var valid = Self.samples[Int.random(in: 0..<Self.samples.count, using: &generator)].encode()
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    valid[Int.random(in: 0..<valid.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
                bytes = valid
            }
            if let command = try? LockCommand.decode(bytes) {
                decoded += 1
                // Whatever decodes re-encodes to the same bytes and applies without trapping.
                XCTAssertEqual(command.encode(), bytes)
                var table = LockTable()
                _ = table.apply(command, index: 1)
            }
        }
        XCTAssertGreaterThan(decoded, 0)
    }
}
