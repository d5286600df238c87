import XCTest
@testable import Placement

final class StableHashTests: XCTestCase {
    /// Published FNV-1a 64-bit test vectors (Fowler/Noll/Vo reference suite).
    func testFNV1aMatchesReferenceVectors() {
        XCTAssertEqual(StableHash.fnv1a64(""), 0xcbf2_9ce4_8422_2325)
        XCTAssertEqual(StableHash.fnv1a64("a"), 0xaf63_dc4c_8601_ec8c)
        XCTAssertEqual(StableHash.fnv1a64("foobar"), 0x8594_4171_f739_67e8)
    }

    /// Golden values, computed independently (Python) from the definition in StableHash.swift.
    /// If one changes, every key and partition in every deployed cluster moves: never edit these
    /// to make a test pass.
    func testHash64GoldenValuesAreStableAcrossRunsAndProcesses() {
        XCTAssertEqual(StableHash.hash64(""), 0xefd0_1f60_ba99_2926)
        XCTAssertEqual(StableHash.hash64("a"), 0x82a2_a958_a9be_ce5b)
        XCTAssertEqual(StableHash.hash64("foobar"), 0x2c22_1949_22d1_672b)
        XCTAssertEqual(StableHash.hash64("n1#0"), 0x888a_f6a8_b088_99c2)
        XCTAssertEqual(StableHash.hash64("orders:3"), 0xb0f6_2a2c_90d1_981f)
        XCTAssertEqual(StableHash.hash64("héllo"), 0xc185_4127_47a0_264d)  // UTF-8 bytes
    }

    func testNonContiguousStringsHashLikeNativeOnes() {
        // A bridged or substring-derived string may not expose contiguous UTF-8; the slow path
        // must agree with the fast one.
        let native = "partition-key-éü"
        XCTAssertEqual(StableHash.fnv1a64(native), StableHash.fnv1a64(bytes: Array(native.utf8)))
        let fromSubstring = String(native.dropFirst(0)[...])
        XCTAssertEqual(StableHash.hash64(fromSubstring), StableHash.hash64(native))
    }

    func testFmix64IsABijectionOnSamples() {
        var seen = Set<UInt64>()
        for value in UInt64(0)..<10_000 { seen.insert(StableHash.fmix64(value)) }
        XCTAssertEqual(seen.count, 10_000)
        XCTAssertEqual(StableHash.fmix64(0), 0)
    }

    func testPartitionForKeyGolden() {
        XCTAssertEqual(partition(forKey: "", partitions: 8), 6)
        XCTAssertEqual(partition(forKey: "a", partitions: 8), 3)
        XCTAssertEqual(partition(forKey: "foobar", partitions: 8), 3)
        XCTAssertEqual(partition(forKey: "héllo", partitions: 8), 5)
        XCTAssertEqual(partition(forKey: "anything", partitions: 1), 0)
    }

    func testPartitionForKeyIsInRangeDeterministicAndUniform() {
        let partitions = 8
        let keys = 80_000
        var counts = [Int](repeating: 0, count: partitions)
        for index in 0..<keys {
            let key = "user-\(index)"
            let chosen = partition(forKey: key, partitions: partitions)
            XCTAssert((0..<partitions).contains(chosen))
            XCTAssertEqual(chosen, partition(forKey: key, partitions: partitions))
            counts[chosen] += 1
        }
        // Expected 10,000 per partition, binomial std-dev ~94: allow 5 sigma.
        let expected = Double(keys) / Double(partitions)
        for count in counts {
            XCTAssertLessThan(abs(Double(count) - expected), 470, "counts \(counts)")
        }
        print("partition(forKey:) spread over \(keys) keys, 8 partitions: \(counts)")
    }
}
