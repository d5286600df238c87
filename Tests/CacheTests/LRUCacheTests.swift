import XCTest
@testable import Cache

final class LRUCacheTests: XCTestCase {
    func testGetPutPeekRemove() {
        var cache = LRUCache<String>(capacity: 3)
        XCTAssertTrue(cache.isEmpty)
        XCTAssertNil(cache.get("a"))
        XCTAssertEqual(cache.put("a", "A", bytes: 1), [])
        XCTAssertEqual(cache.put("b", "B", bytes: 2), [])
        XCTAssertEqual(cache.get("a"), "A")
        XCTAssertEqual(cache.peek("b"), "B")
        XCTAssertTrue(cache.contains("b"))
        XCTAssertEqual(cache.bytes(of: "b"), 2)
        XCTAssertEqual(cache.count, 2)
        XCTAssertEqual(cache.totalBytes, 3)
        XCTAssertEqual(cache.remove("a"), LRUEntry(key: "a", value: "A", bytes: 1))
        XCTAssertNil(cache.remove("a"))
        XCTAssertEqual(cache.count, 1)
        XCTAssertEqual(cache.totalBytes, 2)
        XCTAssertFalse(cache.contains("a"))
    }

    func testEvictionOrderIsLeastRecentlyUsedFirst() {
        var cache = LRUCache<Int>(capacity: 3)
        _ = cache.put("a", 1, bytes: 0)
        _ = cache.put("b", 2, bytes: 0)
        _ = cache.put("c", 3, bytes: 0)
        XCTAssertEqual(cache.keys, ["c", "b", "a"])
        _ = cache.get("a")  // a becomes most recent; b is now least recent
        XCTAssertEqual(cache.keys, ["a", "c", "b"])
        XCTAssertEqual(cache.put("d", 4, bytes: 0).map(\.key), ["b"])
        _ = cache.peek("c")  // peek does not promote
        XCTAssertEqual(cache.put("e", 5, bytes: 0).map(\.key), ["c"])
        _ = cache.put("a", 10, bytes: 0)  // replacing promotes and does not evict
        XCTAssertEqual(cache.keys, ["a", "e", "d"])
        XCTAssertEqual(cache.put("f", 6, bytes: 0), [LRUEntry(key: "d", value: 4, bytes: 0)])
        XCTAssertEqual(cache.leastRecent?.key, "e")
        XCTAssertEqual(cache.mostRecent?.key, "f")
    }

    func testModifyChangesValueWithoutTouchingRecency() {
        var cache = LRUCache<Int>(capacity: 2)
        _ = cache.put("a", 1, bytes: 5)
        _ = cache.put("b", 2, bytes: 5)
        XCTAssertEqual(cache.modify("a") { value -> Int in value += 100; return value }, 101)
        XCTAssertNil(cache.modify("zzz") { $0 += 1 })
        XCTAssertEqual(cache.peek("a"), 101)
        XCTAssertEqual(cache.keys, ["b", "a"], "a snoop must not make a line recently used")
        XCTAssertEqual(cache.totalBytes, 10)
        XCTAssertEqual(cache.put("c", 3, bytes: 1).map(\.key), ["a"])
    }

    func testByteBoundEvictsAsManyAsNeededLeastRecentFirst() {
        var cache = LRUCache<String>(capacity: 100, maxBytes: 100)
        _ = cache.put("a", "a", bytes: 30)
        _ = cache.put("b", "b", bytes: 30)
        _ = cache.put("c", "c", bytes: 30)
        XCTAssertEqual(cache.totalBytes, 90)
        let evicted = cache.put("d", "d", bytes: 65)
        XCTAssertEqual(evicted.map(\.key), ["a", "b"])
        XCTAssertEqual(evicted.map(\.bytes), [30, 30])
        XCTAssertEqual(cache.totalBytes, 95)
        XCTAssertEqual(cache.keys, ["d", "c"])
    }

    func testReplacingAValueUpdatesBytesAndMayEvictOthers() {
        var cache = LRUCache<String>(capacity: 10, maxBytes: 100)
        _ = cache.put("a", "small", bytes: 10)
        _ = cache.put("b", "b", bytes: 40)
        XCTAssertEqual(cache.put("a", "bigger", bytes: 70).map(\.key), ["b"], "the grown entry stays; the others go")
        XCTAssertEqual(cache.totalBytes, 70)
        XCTAssertEqual(cache.put("a", "tiny", bytes: 1), [])
        XCTAssertEqual(cache.totalBytes, 1)
        XCTAssertEqual(cache.peek("a"), "tiny")
    }

    func testAValueLargerThanTheByteBoundIsNotStoredButHandedBack() {
        var cache = LRUCache<String>(capacity: 10, maxBytes: 100)
        _ = cache.put("keep", "k", bytes: 50)
        _ = cache.put("big", "old", bytes: 10)
        let evicted = cache.put("big", "huge", bytes: 101)
        XCTAssertEqual(evicted, [LRUEntry(key: "big", value: "huge", bytes: 101)], "the caller can still write it back")
        XCTAssertFalse(cache.contains("big"), "the superseded old value is gone too")
        XCTAssertEqual(cache.keys, ["keep"])
        XCTAssertEqual(cache.totalBytes, 50)
        // Exactly the bound fits, evicting everything else.
        XCTAssertEqual(cache.put("full", "f", bytes: 100).map(\.key), ["keep"])
        XCTAssertEqual(cache.totalBytes, 100)
    }

    func testCapacityOfOne() {
        var cache = LRUCache<Int>(capacity: 1)
        _ = cache.put("a", 1, bytes: 3)
        XCTAssertEqual(cache.put("b", 2, bytes: 4), [LRUEntry(key: "a", value: 1, bytes: 3)])
        XCTAssertEqual(cache.put("b", 3, bytes: 5), [])
        XCTAssertEqual(cache.entries, [LRUEntry(key: "b", value: 3, bytes: 5)])
        XCTAssertEqual(cache.totalBytes, 5)
    }

    func testPopLeastRecentAndRemoveAll() {
        var cache = LRUCache<Int>(capacity: 5)
        for (index, key) in ["a", "b", "c"].enumerated() { _ = cache.put(key, index, bytes: 1) }
        XCTAssertEqual(cache.popLeastRecent()?.key, "a")
        XCTAssertEqual(cache.count, 2)
        let all = cache.removeAll()
        XCTAssertEqual(all.map(\.key), ["c", "b"])
        XCTAssertTrue(cache.isEmpty)
        XCTAssertEqual(cache.totalBytes, 0)
        XCTAssertNil(cache.popLeastRecent())
        XCTAssertNil(cache.leastRecent)
        _ = cache.put("z", 26, bytes: 2)  // usable after removeAll
        XCTAssertEqual(cache.get("z"), 26)
    }

    func testEvictedEntriesLetTheCallerWriteBackModifiedLines() {
        // The runtime's use: lines are CacheLines; an evicted M line must be written back.
        var cache = LRUCache<CacheLine>(capacity: 2)
        let dirty = CacheLine(value: Array("v1".utf8), version: 1, state: .M, leaseUntilMs: 0, dirty: true)
        let clean = CacheLine(value: Array("v2".utf8), version: 2, state: .S, leaseUntilMs: 0)
        _ = cache.put("k1", dirty, bytes: dirty.byteCount)
        _ = cache.put("k2", clean, bytes: clean.byteCount)
        let evicted = cache.put("k3", clean, bytes: clean.byteCount)
        XCTAssertEqual(evicted.map(\.key), ["k1"])
        var line = evicted[0].value
        XCTAssertEqual(line.apply(.evict), [.flush])
        XCTAssertEqual(line.state, .I)
    }

    /// Model-based: random operations against a plain array kept in recency order.
    func testAgreesWithAReferenceModel() {
        var generator = SplitMix64(seed: 99)
        for (capacity, maxBytes) in [(1, Int.max), (4, 40), (16, 100), (64, Int.max), (50, 300)] {
            var cache = LRUCache<Int>(capacity: capacity, maxBytes: maxBytes)
            var model: [LRUEntry<Int>] = []  // most recent first
            for step in 0..<20_000 {
                let key = "k\(Int.random(in: 0..<(capacity * 2 + 3), using: &generator))"
                switch Int.random(in: 0..<10, using: &generator) {
                case 0..<4:
                    let bytes = Int.random(in: 0...40, using: &generator)
                    let evicted = cache.put(key, step, bytes: bytes)
                    var expected: [LRUEntry<Int>] = []
                    model.removeAll { $0.key == key }
                    if bytes > maxBytes {
                        expected = [LRUEntry(key: key, value: step, bytes: bytes)]
                    } else {
                        model.insert(LRUEntry(key: key, value: step, bytes: bytes), at: 0)
                        while model.count > capacity || model.reduce(0, { $0 + $1.bytes }) > maxBytes {
                            expected.append(model.removeLast())
                        }
                    }
                    XCTAssertEqual(evicted, expected, "step \(step)")
                case 4..<7:
                    let value = cache.get(key)
                    if let index = model.firstIndex(where: { $0.key == key }) {
                        XCTAssertEqual(value, model[index].value)
                        model.insert(model.remove(at: index), at: 0)
                    } else {
                        XCTAssertNil(value)
                    }
                case 7:
                    XCTAssertEqual(cache.peek(key), model.first { $0.key == key }?.value)
                case 8:
                    let removed = cache.remove(key)
                    let index = model.firstIndex { $0.key == key }
                    XCTAssertEqual(removed, index.map { model.remove(at: $0) })
                default:
                    XCTAssertEqual(cache.popLeastRecent(), model.popLast())
                }
                XCTAssertEqual(cache.count, model.count)
                XCTAssertEqual(cache.totalBytes, model.reduce(0) { $0 + $1.bytes })
                if step % 97 == 0 { XCTAssertEqual(cache.entries, model, "step \(step)") }
            }
        }
    }

    func testManyOperationsAtDefaultCapacity() {
        // 10,000 lines (the default capacity), 200,000 puts and gets with constant churn. Prints
        // the rate; the O(1) claim is structural (dictionary + array-linked list), not timed here.
        var cache = LRUCache<Int>(capacity: 10_000)
        let keys = (0..<20_000).map { "key-\($0)" }
        var evictions = 0
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for index in 0..<100_000 {
                evictions += cache.put(keys[index % keys.count], index, bytes: 8).count
                _ = cache.get(keys[(index * 7) % keys.count])
            }
        }
        print("LRU: 200000 put+get at 10000 lines in \(elapsed)")
        XCTAssertEqual(cache.count, 10_000)
        XCTAssertEqual(cache.totalBytes, 80_000)
        XCTAssertEqual(evictions, 90_000)
    }
}

final class CacheLineTests: XCTestCase {
    func testApplyUpdatesStateAndDropsFlushForCleanLines() {
        var writeThrough = CacheLine(value: [1, 2, 3], version: 4, state: .M, leaseUntilMs: 1_000)
        XCTAssertEqual(writeThrough.byteCount, 3)
        XCTAssertEqual(writeThrough.apply(.busRead), [], "a clean M line is already in Redis")
        XCTAssertEqual(writeThrough.state, .S)

        var writeBack = CacheLine(value: [1], version: 5, state: .M, leaseUntilMs: 1_000, dirty: true)
        XCTAssertEqual(writeBack.apply(.busRead), [.flush])
        XCTAssertEqual(writeBack.state, .S)
        XCTAssertTrue(writeBack.dirty, "cleared by the caller once the write-back succeeded")

        var invalid = CacheLine(value: [], version: 0, state: .I, leaseUntilMs: 0)
        XCTAssertEqual(invalid.apply(.processorWrite), [.busReadExclusive])
        XCTAssertEqual(invalid.state, .M)
    }

    func testServableOnlyWhenValidAndLeased() {
        let line = CacheLine(value: [0x31], version: 1, state: .S, leaseUntilMs: 1_000)
        XCTAssertTrue(line.isServable(nowMs: 999))
        XCTAssertFalse(line.isServable(nowMs: 1_000))
        var invalid = line
        invalid.state = .I
        XCTAssertFalse(invalid.isServable(nowMs: 0))
        XCTAssertEqual(line, CacheLine(value: [0x31], version: 1, state: .S, leaseUntilMs: 1_000, dirty: false))
    }
}
