// The queue's Lua scripts (lua/queue_*.lua) against a real redis-server.
import Foundation
import Node
import XCTest

final class QueueScriptTests: XCTestCase {
    private var server: RedisServer!
    private var client: RESPClient!
    private var scripts: Scripts!
    private var q: Queue!

    private let t0 = 1_700_000_000_000

    override func setUpWithError() throws {
        server = try RedisServer()
        client = try server.client()
        scripts = Scripts()
        q = Queue(client: client, scripts: scripts, keys: PartitionKeys(topic: "orders", partition: 3), partition: 3)
    }

    override func tearDown() {
        client = nil
        server?.stop()
        server = nil
    }

    private func messages(_ range: Range<Int>, key: String = "k", maxAttempts: Int = 5) -> [Message] {
        range.map { Message(id: "m\($0)", key: key, body: "{\"n\":\($0)}", maxAttempts: maxAttempts) }
    }

    /// Every key and its DUMP, to prove a call changed nothing.
    private func snapshot() throws -> [String: RESP] {
        var result: [String: RESP] = [:]
        for key in try client.command(["KEYS", "*"]).array ?? [] {
            let name = key.string!
            result[name] = try client.command(["DUMP", name])
        }
        return result
    }

    // MARK: - Round trip, batches

    func testProduceConsumeAckRoundTrip() throws {
        XCTAssertTrue(try q.ensureGroup("g").created)
        let produced = try q.produce(messages(0..<3), now: t0)
        XCTAssertEqual(produced.map(\.0), ["new", "new", "new"])
        XCTAssertEqual(produced.map(\.1), ["1", "2", "3"])
        XCTAssertEqual(try q.logSeqs(), [1, 2, 3])

        let got = try q.consume("g", now: t0 + 1, max: 10)
        XCTAssertEqual(got.map(\.id), ["m0", "m1", "m2"])
        XCTAssertEqual(got.map(\.body), ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"])
        XCTAssertEqual(got.map(\.key), ["k", "k", "k"])
        XCTAssertEqual(got.map(\.attempt), [1, 1, 1])
        // First deliveries of one call form a lease (one in-flight member for the batch).
        XCTAssertEqual(got.map(\.receipt), ["3:1:L1", "3:2:L1", "3:3:L1"])
        XCTAssertEqual(try q.status("g", now: t0 + 1).inflight, 3)

        let acked = try q.ack("g", got.map(\.receipt) + ["3:9:1", "garbage", "4:1:1"])
        XCTAssertEqual(acked.acked, 3)
        XCTAssertEqual(acked.notFound, ["3:9:1", "garbage", "4:1:1"])
        XCTAssertEqual(try q.ack("g", [got[0].receipt]).notFound, [got[0].receipt], "second ack finds nothing")
        XCTAssertEqual(try q.consume("g", now: t0 + 2, max: 10), [])
        XCTAssertEqual(try q.redeliver("g", now: t0 + 10_000_000).requeued, 0)

        let status = try q.status("g", now: t0 + 3)
        XCTAssertEqual(status, QueueStatus(lastSeq: 3, logLength: 3, delayed: 0, delayedDue: 0, groupKnown: 1,
                                           cursor: 3, backlog: 0, retryDue: 0, retryWaiting: 0, inflight: 0, dead: 0))
        // Acked entries leave no per-group state behind.
        let g = q.keys.group("g")
        for key in [g.inflight, g.retry, g.attempts, g.data, q.keys.refs] {
            XCTAssertEqual(try client.command(["EXISTS", key]).int, 0, key)
        }
    }

    func testBatchesOfOneThousandBothWays() throws {
        _ = try q.ensureGroup("g")
        let batch = messages(0..<1000)
        let produced = try q.produce(batch, now: t0)
        XCTAssertEqual(produced.count, 1000)
        XCTAssertEqual(produced.map(\.1), (1...1000).map(String.init))
        XCTAssertEqual(try client.command(["XLEN", q.keys.log]).int, 1000)

        let got = try q.consume("g", now: t0, max: 1000)
        XCTAssertEqual(got.count, 1000)
        XCTAssertEqual(got.map(\.id), batch.map(\.id))
        let acked = try q.ack("g", got.map(\.receipt))
        XCTAssertEqual(acked.acked, 1000)
        XCTAssertEqual(acked.notFound, [])

        // 1001 messages, 1001 deliveries or 1001 receipts: refused.
        let before = try snapshot()
        let tooMany = try q.raw("queue_produce-6.lua", keys: q.produceKeys, args: q.produceArgs(messages(0..<1001), now: t0))
        XCTAssertTrue(tooMany.errorMessage?.hasPrefix("BADARG n") ?? false, "\(tooMany)")
        let tooManyConsume = try q.raw("queue_consume-8.lua", keys: q.consumeKeys("g"), args: ["\(t0)", "g", "3", "1001", "1000"])
        XCTAssertTrue(tooManyConsume.errorMessage?.hasPrefix("BADARG max") ?? false)
        let tooManyAck = try q.raw("queue_ack-5.lua", keys: q.ackKeys("g"), args: ["g", "3"] + Array(repeating: "3:1:1", count: 1001))
        XCTAssertTrue(tooManyAck.errorMessage?.hasPrefix("BADARG") ?? false)
        XCTAssertEqual(try snapshot(), before)
    }

    /// The ack script looks receipts up in bulk: a receipt twice in one call acks once; a
    /// stale and the current receipt of one entry in one call ack it once (the current one);
    /// redelivered entries (retry path of consume) ack like first deliveries.
    func testBatchedAckCountsEachEntryOnceWithinOneCall() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<4), now: t0)
        let first = try q.consume("g", now: t0, max: 4, visibilityMs: 100)
        XCTAssertEqual(try q.redeliver("g", now: t0 + 200).requeued, 4)
        let second = try q.consume("g", now: t0 + 300, max: 4)
        XCTAssertEqual(second.map(\.attempt), [2, 2, 2, 2])
        let args = [first[0].receipt, second[0].receipt, second[0].receipt, second[1].receipt, "3:2:1", second[2].receipt]
        let acked = try q.ack("g", args)
        XCTAssertEqual(acked.acked, 3)
        XCTAssertEqual(acked.notFound, [first[0].receipt, second[0].receipt, "3:2:1"])
        let status = try q.status("g", now: t0 + 400)
        XCTAssertEqual(status.inflight, 1)
        XCTAssertEqual(try q.ack("g", [second[3].receipt]).acked, 1)
        let g = q.keys.group("g")
        for key in [g.inflight, g.retry, g.attempts, g.data, q.keys.refs] {
            XCTAssertEqual(try client.command(["EXISTS", key]).int, 0, key)
        }
    }

    // MARK: - Idempotent produce

    func testDedupWithinAndAfterTheWindow() throws {
        _ = try q.ensureGroup("g")
        var m = Message(id: "order-1", dedup: true, key: "k", body: "\"first\"")
        XCTAssertEqual(try q.produce([m], now: t0).first?.0, "new")
        m.body = "\"second\""
        // Same id within the window, also twice inside one batch: nothing added, first result back.
        let again = try q.produce([m, m], now: t0 + Queue.dayMs - 1)
        XCTAssertEqual(again.map(\.0), ["dup", "dup"])
        XCTAssertEqual(again.map(\.1), ["1", "1"])
        XCTAssertEqual(try client.command(["XLEN", q.keys.log]).int, 1)

        // A generated id (dedup=0) never deduplicates.
        let generated = Message(id: "gen", dedup: false, body: "1")
        XCTAssertEqual(try q.produce([generated, generated], now: t0).map(\.0), ["new", "new"])

        // A delayed message's first result is its delayed ref.
        let delayed = Message(id: "later", dedup: true, body: "2", delayMs: 10_000)
        let first = try q.produce([delayed], now: t0)
        XCTAssertEqual(first.first?.0, "delayed")
        XCTAssertEqual(try q.produce([delayed], now: t0 + 1).first.map { [$0.0, $0.1] }, ["dup", first[0].1])

        // After the window (24 h): a new message, and the expired ids are pruned.
        let after = try q.produce([m], now: t0 + Queue.dayMs)
        XCTAssertEqual(after.first?.0, "new")
        XCTAssertEqual(after.first?.1, "4")
        let got = try q.consume("g", now: t0 + Queue.dayMs, max: 10)
        XCTAssertEqual(got.map(\.body), ["\"first\"", "1", "1", "\"second\""])
        XCTAssertEqual(try client.command(["ZSCORE", q.keys.dedupExp, "later"]), .bulk(nil), "expired id pruned")
        XCTAssertEqual(try client.command(["HEXISTS", q.keys.dedup, "later"]).int, 0)
        XCTAssertEqual(try client.command(["ZCARD", q.keys.dedupExp]).int, 1, "only the re-produced id remains")
        // The window restarts from the new result.
        XCTAssertEqual(try q.produce([m], now: t0 + Queue.dayMs + 5).first.map { [$0.0, $0.1] }, ["dup", "4"])
    }

    // MARK: - Concurrent consumers

    func testTwoConsumersClaimingAtOnceEachMessageOnce() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<400), now: t0)

        // 1. Pipelined on two connections: both requests are in Redis before either reply is read.
        let a = try server.client(), b = try server.client()
        let sha = try XCTUnwrap({ _ = try q.consume("g", now: t0, max: 0); return scripts.sha("queue_consume-8.lua") }())
        let call = ["EVALSHA", sha, "8"] + q.consumeKeys("g") + ["\(t0)", "g", "3", "5", "30000"]
        try a.send([call, call])
        try b.send([call, call])
        var seen: [Int] = []
        for c in [a, b, a, b] {
            seen += try q.deliveries(try c.readReply()).map(\.seq)
        }
        XCTAssertEqual(seen.count, 20)
        XCTAssertEqual(Set(seen).count, 20, "no entry handed out twice")

        // 2. Two threads racing until the partition is drained.
        final class Collected: @unchecked Sendable {
            let lock = NSLock()
            var seqs: [Int] = []
            var errors: [String] = []
        }
        let collected = Collected()
        let port = server.port
        let scriptDir = scripts.directory
        let keys = q.keys
        let group = DispatchGroup()
        let now = t0
        for _ in 0..<2 {
            DispatchQueue.global().async(group: group) {
                do {
                    let conn = try RESPClient(port: port)
                    let own = Queue(client: conn, scripts: Scripts(directory: scriptDir), keys: keys, partition: 3)
                    while true {
                        let got = try own.consume("g", now: now, max: 7)
                        if got.isEmpty { break }
                        collected.lock.lock(); collected.seqs += got.map(\.seq); collected.lock.unlock()
                    }
                } catch {
                    collected.lock.lock(); collected.errors.append("\(error)"); collected.lock.unlock()
                }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(collected.errors, [])
        let all = seen + collected.seqs
        XCTAssertEqual(all.count, 400)
        XCTAssertEqual(Set(all), Set(1...400))
    }

    // MARK: - Visibility, redelivery and its race with ack

    func testRedeliveryAfterVisibilityWithAttemptTwo() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<1), now: t0)
        let first = try q.consume("g", now: t0, max: 1, visibilityMs: 1000)
        XCTAssertEqual(first.map(\.attempt), [1])

        let early = try q.redeliver("g", now: t0 + 999)
        XCTAssertEqual(early.requeued, 0)
        XCTAssertEqual(early.nextDeadlineMs, t0 + 1000)
        XCTAssertEqual(try q.consume("g", now: t0 + 999, max: 1), [], "still in flight")

        let due = try q.redeliver("g", now: t0 + 1000)
        XCTAssertEqual([due.requeued, due.dead, due.lost, due.nextDeadlineMs], [1, 0, 0, -1])
        let second = try q.consume("g", now: t0 + 1001, max: 1, visibilityMs: 1000)
        XCTAssertEqual(second.map(\.attempt), [2])
        XCTAssertEqual(second.map(\.id), ["m0"])
        XCTAssertEqual(second.first?.receipt, "3:1:2")
        XCTAssertEqual(try q.ack("g", [first[0].receipt]).notFound, [first[0].receipt], "stale receipt")
        XCTAssertEqual(try q.ack("g", [second[0].receipt]).acked, 1)
    }

    func testAckBeforeRedeliveryWins() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<1), now: t0)
        let got = try q.consume("g", now: t0, max: 1, visibilityMs: 1000)
        // Deadline passed but the timer has not run yet: the ack still counts.
        XCTAssertEqual(try q.ack("g", [got[0].receipt]).acked, 1)
        let timer = try q.redeliver("g", now: t0 + 5000)
        XCTAssertEqual([timer.requeued, timer.dead, timer.lost], [0, 0, 0])
        XCTAssertEqual(try q.consume("g", now: t0 + 5001, max: 10), [])
    }

    func testRedeliveryBeforeAckMakesTheOldReceiptStale() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<1), now: t0)
        let got = try q.consume("g", now: t0, max: 1, visibilityMs: 1000)
        XCTAssertEqual(try q.redeliver("g", now: t0 + 1000).requeued, 1)
        // Neither ack nor nack accept the receipt of the timed-out delivery.
        XCTAssertEqual(try q.ack("g", [got[0].receipt]).notFound, [got[0].receipt])
        XCTAssertEqual(try q.nack("g", got[0].receipt, now: t0 + 1000).0, "not_found")
        let again = try q.consume("g", now: t0 + 1001, max: 1)
        XCTAssertEqual(again.map(\.attempt), [2])
        XCTAssertEqual(try q.ack("g", [got[0].receipt, again[0].receipt]).acked, 1)
    }

    // MARK: - Dead letters, redrive

    func testMaxAttemptsDeadLettersKeepingBodyAttemptsAndLastDelivery() throws {
        _ = try q.ensureGroup("g")
        try q.produce([Message(id: "poison", key: "pk", body: "{\"bad\":true}", maxAttempts: 2)] + messages(1..<2), now: t0)
        let d1 = try q.consume("g", now: t0, max: 1, visibilityMs: 100)
        XCTAssertEqual(d1.map(\.id), ["poison"])
        XCTAssertEqual(try q.redeliver("g", now: t0 + 100).requeued, 1)
        let d2 = try q.consume("g", now: t0 + 200, max: 1, visibilityMs: 100)
        XCTAssertEqual(d2.map(\.attempt), [2])
        let timer = try q.redeliver("g", now: t0 + 300)
        XCTAssertEqual([timer.requeued, timer.dead], [0, 1])

        let dead = try q.dlq("g")
        XCTAssertEqual(dead.total, 1)
        XCTAssertEqual(dead.entries, [DeadEntry(seq: 1, id: "poison", body: "{\"bad\":true}", key: "pk",
                                                attempts: 2, lastDeliveryMs: t0 + 200, deadMs: t0 + 300)])
        XCTAssertEqual(try q.status("g", now: t0 + 300).dead, 1)
        XCTAssertEqual(try q.ack("g", [d2[0].receipt]).acked, 0, "a dead entry cannot be acked")
        // The group moves on to the next message; the dead one is not delivered again.
        XCTAssertEqual(try q.consume("g", now: t0 + 400, max: 10).map(\.id), ["m1"])

        // nack of the last allowed attempt also dead-letters.
        try q.produce([Message(id: "nacked", body: "3", maxAttempts: 1)], now: t0 + 500)
        let d3 = try q.consume("g", now: t0 + 500, max: 1)
        XCTAssertEqual(d3.map(\.id), ["nacked"])
        XCTAssertEqual(try q.nack("g", d3[0].receipt, now: t0 + 600).0, "dead")
        XCTAssertEqual(try q.dlq("g").entries.map(\.id), ["poison", "nacked"])
        XCTAssertEqual(try q.dlq("g", limit: 1, offset: 1).entries.map(\.id), ["nacked"])
    }

    func testRedriveByIdAndAllEvenAfterTrim() throws {
        _ = try q.ensureGroup("g")
        try q.produce([Message(id: "a", key: "ka", body: "\"A\"", maxAttempts: 1),
                       Message(id: "b", body: "\"B\"", maxAttempts: 1),
                       Message(id: "c", body: "\"C\"", maxAttempts: 1)], now: t0)
        let got = try q.consume("g", now: t0, max: 3, visibilityMs: 10)
        XCTAssertEqual(try q.redeliver("g", now: t0 + 10).dead, 3)
        XCTAssertEqual(try q.dlq("g").total, 3)
        // Dead entries live on in the group's copy: the log may go.
        XCTAssertEqual(try q.trim().deleted, 3)
        XCTAssertEqual(try q.logSeqs(), [])

        let byId = try q.redrive("g", now: t0 + 20, ids: ["b", "nope"])
        XCTAssertEqual(byId.redriven, 1)
        XCTAssertEqual(byId.notFound, ["nope"])
        XCTAssertEqual(byId.remaining, 2)
        let again = try q.consume("g", now: t0 + 20, max: 10)
        XCTAssertEqual(again.map(\.id), ["b"])
        XCTAssertEqual(again.map(\.body), ["\"B\""])
        XCTAssertEqual(again.map(\.attempt), [1], "attempts reset")
        XCTAssertNotEqual(again[0].receipt, got[1].receipt)
        XCTAssertEqual(try q.ack("g", [got[1].receipt]).acked, 0, "the pre-DLQ receipt stays dead")
        XCTAssertEqual(try q.ack("g", [again[0].receipt]).acked, 1)

        let rest = try q.redrive("g", now: t0 + 30, limit: 1)
        XCTAssertEqual([rest.redriven, rest.remaining], [1, 1], "bounded by limit")
        XCTAssertEqual(try q.redrive("g", now: t0 + 30).redriven, 1)
        let last = try q.consume("g", now: t0 + 30, max: 10, visibilityMs: 10)
        XCTAssertEqual(last.map(\.id), ["a", "c"])
        XCTAssertEqual(last.map(\.key), ["ka", ""])
        // Still max_attempts 1: timing out again dead-letters again.
        XCTAssertEqual(try q.redeliver("g", now: t0 + 40).dead, 2)
        XCTAssertEqual(try q.dlq("g").entries.map(\.attempts), [1, 1])
        XCTAssertEqual(try q.redrive("g", now: t0 + 50, ids: ["a", "c"]).redriven, 2)
        XCTAssertEqual(try q.dlq("g").total, 0)
        XCTAssertEqual(try client.command(["HLEN", q.keys.group("g").dlqIds]).int, 0)
    }

    // MARK: - nack

    func testNackDefaultExponentialBackoffAndExplicitDelay() throws {
        _ = try q.ensureGroup("g")
        try q.produce([Message(id: "x", body: "1", maxAttempts: 30)], now: t0)
        var now = t0
        var d = try q.consume("g", now: now, max: 1)
        // attempt 1 -> 1 s, 2 -> 2 s, 3 -> 4 s ... capped at 5 min.
        var expected: [Int] = []
        var observed: [Int] = []
        for attempt in 1...12 {
            XCTAssertEqual(d.map(\.attempt), [attempt])
            guard !d.isEmpty else { return }
            let (status, visibleAt) = try q.nack("g", d[0].receipt, now: now)
            XCTAssertEqual(status, "requeued")
            observed.append(visibleAt - now)
            expected.append(min(1000 << (attempt - 1), 300_000))
            XCTAssertEqual(try q.consume("g", now: visibleAt - 1, max: 1), [], "not visible before its time")
            now = visibleAt
            d = try q.consume("g", now: now, max: 1)
        }
        XCTAssertEqual(observed, expected)
        guard !d.isEmpty else { return XCTFail("nothing delivered") }
        XCTAssertEqual(try q.nack("g", d[0].receipt, now: now, delayMs: 50).1, now + 50)
        XCTAssertEqual(try q.nack("g", d[0].receipt, now: now).0, "not_found", "a nacked receipt is dead")
        XCTAssertEqual(try q.consume("g", now: now + 50, max: 1).map(\.attempt), [14])
        let status = try q.status("g", now: now + 50)
        XCTAssertEqual([status.inflight, status.retryDue, status.retryWaiting], [1, 0, 0])
    }

    // MARK: - Delayed messages

    func testDelayedMessagesArePromotedWhenDue() throws {
        _ = try q.ensureGroup("g")
        let produced = try q.produce([Message(id: "later", key: "lk", body: "\"L\"", delayMs: 5000, maxAttempts: 7),
                                      Message(id: "now", body: "\"N\"")], now: t0)
        XCTAssertEqual(produced.map(\.0), ["delayed", "new"])
        XCTAssertEqual(try q.consume("g", now: t0, max: 10).map(\.id), ["now"])
        var status = try q.status("g", now: t0)
        XCTAssertEqual([status.delayed, status.delayedDue], [1, 0])

        let early = try q.promote(now: t0 + 4999)
        XCTAssertEqual([early.promoted, early.nextDueMs], [0, t0 + 5000])
        let due = try q.promote(now: t0 + 5000)
        XCTAssertEqual([due.promoted, due.nextDueMs], [1, -1])
        status = try q.status("g", now: t0 + 5000)
        XCTAssertEqual([status.delayed, status.lastSeq, status.backlog], [0, 2, 1])

        let got = try q.consume("g", now: t0 + 5000, max: 10)
        XCTAssertEqual(got.map(\.id), ["later"])
        XCTAssertEqual(got.map(\.key), ["lk"])
        XCTAssertEqual(got.map(\.body), ["\"L\""])
        let entry = try client.command(["XRANGE", q.keys.log, "0-2", "0-2"]).array![0].array![1].array!.map { $0.string! }
        XCTAssertEqual(entry, ["id", "later", "body", "\"L\"", "key", "lk", "max", "7"])
        // No key and the default max_attempts: the entry is two fields (lua/includes/log_entry.lua).
        let plain = try client.command(["XRANGE", q.keys.log, "0-1", "0-1"]).array![0].array![1].array!.map { $0.string! }
        XCTAssertEqual(plain, ["id", "now", "body", "\"N\""])
        XCTAssertEqual(try client.command(["HLEN", q.keys.delayedData]).int, 0)
    }

    func testPromotionIsBounded() throws {
        try q.produce((0..<25).map { Message(id: "d\($0)", body: "\($0)", delayMs: 100 + $0) }, now: t0)
        let first = try q.promote(now: t0 + 1000, limit: 10)
        XCTAssertEqual(first.promoted, 10)
        XCTAssertLessThanOrEqual(first.nextDueMs, t0 + 1000, "more are due: call again")
        XCTAssertEqual(try q.promote(now: t0 + 1000, limit: 10).promoted, 10)
        XCTAssertEqual(try q.promote(now: t0 + 1000, limit: 10).promoted, 5)
        // Due order is kept.
        _ = try q.ensureGroup("g")
        XCTAssertEqual(try client.command(["XLEN", q.keys.log]).int, 25)
        let bodies = (try client.command(["XRANGE", q.keys.log, "-", "+"]).array ?? []).map { $0.array![1].array![3].string! }
        XCTAssertEqual(bodies, (0..<25).map(String.init))
    }

    // MARK: - Groups and order

    func testTwoGroupsEachGetEveryMessage() throws {
        _ = try q.ensureGroup("g1")
        _ = try q.ensureGroup("g2")
        try q.produce(messages(0..<50), now: t0)
        var g1: [String] = [], g2: [String] = []
        while case let got = try q.consume("g1", now: t0, max: 7), !got.isEmpty {
            g1 += got.map(\.id)
            XCTAssertEqual(try q.ack("g1", got.map(\.receipt)).acked, got.count)
        }
        while case let got = try q.consume("g2", now: t0, max: 13), !got.isEmpty { g2 += got.map(\.id) }
        XCTAssertEqual(g1, (0..<50).map { "m\($0)" })
        XCTAssertEqual(g2, g1)
        // g1 acked everything, g2 nothing: independent state.
        XCTAssertEqual(try q.status("g1", now: t0).inflight, 0)
        XCTAssertEqual(try q.status("g2", now: t0).inflight, 50)
    }

    func testFirstDeliveriesFollowProduceOrderPerPartition() throws {
        _ = try q.ensureGroup("g")
        var produced: [String] = []
        var now = t0
        var firstDeliveries: [String] = []
        var lastSeq = 0
        var rng = SystemRandomNumberGenerator()
        for batch in 0..<20 {
            let msgs = (0..<Int.random(in: 1...40, using: &rng)).map {
                Message(id: "b\(batch)-\($0)", key: "key\($0 % 3)", body: "0")
            }
            try q.produce(msgs, now: now)
            produced += msgs.map(\.id)
            let got = try q.consume("g", now: now, max: Int.random(in: 1...30, using: &rng), visibilityMs: 50)
            for d in got where d.attempt == 1 {
                XCTAssertGreaterThan(d.seq, lastSeq)
                lastSeq = d.seq
                firstDeliveries.append(d.id)
            }
            // Nack some, let others time out, ack the rest: redeliveries interleave.
            for (i, d) in got.enumerated() {
                switch i % 3 {
                case 0: _ = try q.nack("g", d.receipt, now: now, delayMs: 0)
                case 1: break
                default: _ = try q.ack("g", [d.receipt])
                }
            }
            now += 100
            _ = try q.redeliver("g", now: now)
        }
        while case let got = try q.consume("g", now: now, max: 50), !got.isEmpty {
            for d in got {
                if d.attempt == 1 { firstDeliveries.append(d.id) }
                _ = try q.ack("g", [d.receipt])
            }
        }
        XCTAssertEqual(firstDeliveries, produced)
    }

    func testGroupFirstUseStartsAtTheLogEnd() throws {
        try q.produce(messages(0..<5), now: t0)
        // consume is a first use: the five earlier messages are not for this group.
        XCTAssertEqual(try q.consume("late", now: t0, max: 10), [])
        try q.produce(messages(5..<8), now: t0)
        XCTAssertEqual(try q.consume("late", now: t0, max: 10).map(\.id), ["m5", "m6", "m7"])

        // queue_group-2 registers without consuming; idempotent.
        let created = try q.ensureGroup("reg")
        XCTAssertEqual(created.created, true)
        XCTAssertEqual(created.cursor, 8)
        try q.produce(messages(8..<9), now: t0)
        let again = try q.ensureGroup("reg")
        XCTAssertEqual(again.created, false)
        XCTAssertEqual(again.cursor, 8)
        XCTAssertEqual(try q.consume("reg", now: t0, max: 10).map(\.id), ["m8"])
        // consume max 0 only registers.
        XCTAssertEqual(try q.consume("zero", now: t0, max: 0), [])
        XCTAssertEqual(try q.status("zero", now: t0).groupKnown, 1)
        XCTAssertEqual(try q.status("zero", now: t0).cursor, 9)
        XCTAssertEqual(try q.status("never", now: t0).groupKnown, 0)
    }

    // MARK: - Topic registry

    func testTopicRegistryCreatesOnceAndRefusesBeyondTheBound() throws {
        let topics = "concord:test:q:topics:\(UInt32.random(in: 0..<UInt32.max))"
        func create(_ topic: String, _ partitions: Int, max: Int = 2) throws -> [Int] {
            try q.raw("queue_topic-1.lua", keys: [topics], args: [topic, String(partitions), String(max)]).array!.map { $0.int! }
        }
        XCTAssertEqual(try create("a", 4), [1, 4, 1])
        XCTAssertEqual(try create("a", 8), [0, 4, 1], "an existing topic keeps its count")
        XCTAssertEqual(try create("b", 8), [1, 8, 2])
        XCTAssertEqual(try create("c", 8), [-1, 0, 2], "the registry is full")
        XCTAssertEqual(try create("a", 8), [0, 4, 2], "existing topics still answer when full")
        XCTAssertEqual(try client.command(["HLEN", topics]).int, 2)
        for bad in [["", "8", "2"], ["d", "0", "2"], ["d", "257", "2"], ["d", "8", "0"], ["d", "x", "2"]] {
            let reply = try q.raw("queue_topic-1.lua", keys: [topics], args: bad)
            XCTAssertTrue(reply.errorMessage?.hasPrefix("BADARG") ?? false, "\(bad): \(reply)")
        }
        XCTAssertEqual(try client.command(["HLEN", topics]).int, 2, "bad input wrote nothing")
    }

    // MARK: - Leases

    /// A batch's first deliveries share one lease; acks, a nack and the visibility timeout
    /// take entries out of it one by one, and the counts stay exact throughout.
    func testLeaseEntriesLeaveOneByOne() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<5), now: t0)
        let got = try q.consume("g", now: t0, max: 5, visibilityMs: 1000)
        XCTAssertEqual(Set(got.map { $0.receipt.split(separator: ":")[2] }).count, 1, "one lease")
        let g = q.keys.group("g")
        XCTAssertEqual(try client.command(["ZCARD", g.inflight]).int, 1)
        XCTAssertEqual(try q.status("g", now: t0).inflight, 5)

        // Ack two (one twice, in one call): three left in flight.
        let acked = try q.ack("g", [got[0].receipt, got[2].receipt, got[0].receipt])
        XCTAssertEqual(acked.acked, 2)
        XCTAssertEqual(acked.notFound, [got[0].receipt])
        XCTAssertEqual(try q.status("g", now: t0).inflight, 3)
        XCTAssertEqual(try q.ack("g", [got[2].receipt]).notFound, [got[2].receipt], "acked entries stay acked")

        // Nack one: it leaves the lease, waits in retry, comes back as attempt 2.
        let (status, _) = try q.nack("g", got[1].receipt, now: t0 + 10, delayMs: 0)
        XCTAssertEqual(status, "requeued")
        XCTAssertEqual(try q.nack("g", got[1].receipt, now: t0 + 10, delayMs: 0).0, "not_found")
        XCTAssertEqual(try q.status("g", now: t0 + 10).inflight, 2)
        let retried = try q.consume("g", now: t0 + 10, max: 5, visibilityMs: 1000)
        XCTAssertEqual(retried.map(\.id), ["m1"])
        XCTAssertEqual(retried.map(\.attempt), [2])
        XCTAssertEqual(try q.status("g", now: t0 + 10).inflight, 3)

        // The lease times out: its two remaining entries come back as attempt 2, in order.
        XCTAssertEqual(try q.redeliver("g", now: t0 + 1000).requeued, 2)
        XCTAssertEqual(try q.ack("g", [got[3].receipt]).notFound, [got[3].receipt], "a timed-out lease's receipts are dead")
        let back = try q.consume("g", now: t0 + 1000, max: 5)
        XCTAssertEqual(back.map(\.id), ["m3", "m4"])
        XCTAssertEqual(back.map(\.attempt), [2, 2])
        XCTAssertEqual(try q.ack("g", back.map(\.receipt) + retried.map(\.receipt)).acked, 3)

        // Nothing is left behind: no lease, no counter, no ref.
        XCTAssertEqual(try q.status("g", now: t0 + 1000).inflight, 0)
        for key in [g.inflight, g.retry, g.attempts, g.data, q.keys.refs] {
            XCTAssertEqual(try client.command(["EXISTS", key]).int, 0, key)
        }
    }

    /// A short lease (at most 4 entries) comes back as its entries, which saves the node the
    /// XRANGE round trip; a longer one as a range the node reads. Both are leases alike.
    func testShortLeasesComeInlineLongOnesAsARange() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<10), now: t0)
        func consumeRaw(_ max: Int) throws -> [RESP] {
            try q.check(q.raw("queue_consume-8.lua", keys: q.consumeKeys("g"), args: [String(t0), "g", String(q.partition), String(max), "30000"]), "consume").array ?? []
        }
        let short = try consumeRaw(4)
        XCTAssertEqual(short.map { $0.array?.count ?? 0 }, [6, 6, 6, 6], "entries inline")
        let inline = short.map(Queue.delivery)
        XCTAssertEqual(inline.map(\.id), ["m0", "m1", "m2", "m3"])
        XCTAssertEqual(inline.map(\.attempt), [1, 1, 1, 1])
        XCTAssertEqual(inline.map(\.body), (0..<4).map { "{\"n\":\($0)}" })
        XCTAssertEqual(Set(inline.map { $0.receipt.split(separator: ":")[2] }).count, 1, "one lease")
        XCTAssertTrue(inline[0].receipt.split(separator: ":")[2].hasPrefix("L"))
        let long = try consumeRaw(5)
        XCTAssertEqual(long.map { $0.array?.count ?? 0 }, [3], "a range {lease, first, last}")
        let rest = try q.deliveries(.array(long))
        XCTAssertEqual(rest.map(\.id), ["m4", "m5", "m6", "m7", "m8"])
        XCTAssertEqual(try q.status("g", now: t0).inflight, 9)
        XCTAssertEqual(try q.ack("g", (inline + rest).map(\.receipt)).acked, 9)
        XCTAssertEqual(try q.status("g", now: t0).inflight, 0)
    }

    /// The node joins a run of one lease's receipts into the short form `p:first-last:L<n>`
    /// (`compactLeaseReceipts`): a whole lease is acked at once; a short form that covers
    /// only part of what is left acks that part; what it names that is not in flight comes
    /// back in `not_found` spelled receipt by receipt, as the client wrote them.
    func testShortFormReceiptsAckWholeLeasesAndSpellWhatIsLeft() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<20), now: t0)
        let a = try q.consume("g", now: t0, max: 10)
        let b = try q.consume("g", now: t0, max: 10)
        let la = String(a[0].receipt.split(separator: ":")[2]), lb = String(b[0].receipt.split(separator: ":")[2])
        XCTAssertEqual(try client.command(["HGET", q.keys.group("g").attempts, la]).string, "\(t0):1-10", "a new lease's record is its range")
        XCTAssertEqual(compactLeaseReceipts(a.map(\.receipt)), ["3:1-10:\(la)"])

        // Lease a, whole, in one short form.
        let whole = try q.ack("g", compactLeaseReceipts(a.map(\.receipt)))
        XCTAssertEqual(whole.acked, 10)
        XCTAssertEqual(whole.notFound, [])
        XCTAssertEqual(try q.status("g", now: t0).inflight, 10)

        // Lease b: part of it (11..13 and 15), then a short form over all of it.
        let part = compactLeaseReceipts([b[0], b[1], b[2], b[4]].map(\.receipt))
        XCTAssertEqual(part, ["3:11-13:\(lb)", "3:15:\(lb)"])
        XCTAssertEqual(try q.ack("g", part).acked, 4)
        XCTAssertEqual(try client.command(["HGET", q.keys.group("g").attempts, lb]).string, "\(t0):14,16,17,18,19,20")
        let rest = try q.ack("g", compactLeaseReceipts(b.map(\.receipt)) + [a[3].receipt])
        XCTAssertEqual(rest.acked, 6)
        XCTAssertEqual(rest.notFound, ["3:11:\(lb)", "3:12:\(lb)", "3:13:\(lb)", "3:15:\(lb)", a[3].receipt])

        // A short form of the wrong shape is not found as given; more than 1000 in all is refused.
        XCTAssertEqual(try q.ack("g", ["3:9-5:\(la)", "3:1-1001:\(la)"]).notFound, ["3:9-5:\(la)", "3:1-1001:\(la)"])
        let before = try snapshot()
        let tooMany = try q.raw("queue_ack-5.lua", keys: q.ackKeys("g"), args: ["g", "3", "3:1-600:L1", "3:601-1200:L2"])
        XCTAssertEqual(tooMany.errorMessage?.hasPrefix("BADARG"), true, "\(tooMany)")
        XCTAssertEqual(try snapshot(), before)
        let g = q.keys.group("g")
        for key in [g.inflight, g.retry, g.attempts, g.data, q.keys.refs] {
            XCTAssertEqual(try client.command(["EXISTS", key]).int, 0, key)
        }
    }

    /// Only canonical receipts of one lease with consecutive seqs, in order, are joined.
    func testCompactLeaseReceiptsJoinsOnlyCanonicalConsecutiveRuns() {
        XCTAssertEqual(compactLeaseReceipts(["3:5:L2", "3:6:L2", "3:7:L2", "3:9:L2", "3:10:L3", "3:11:L3"]),
                       ["3:5-7:L2", "3:9:L2", "3:10-11:L3"])
        XCTAssertEqual(compactLeaseReceipts(["3:5:L2", "3:5:L2", "3:6:L2"]), ["3:5:L2", "3:5-6:L2"])
        XCTAssertEqual(compactLeaseReceipts(["3:6:L2", "3:5:L2"]), ["3:6:L2", "3:5:L2"], "descending: not joined")
        XCTAssertEqual(compactLeaseReceipts(["3:05:L2", "3:6:L2", "03:7:L2", "3:8:L02"]), ["3:05:L2", "3:6:L2", "03:7:L2", "3:8:L02"])
        XCTAssertEqual(compactLeaseReceipts(["3:5:7", "3:6:8", "3:7:L1", "x", "3:8:L1", "3:9:L1"]),
                       ["3:5:7", "3:6:8", "3:7:L1", "x", "3:8-9:L1"])
        XCTAssertEqual(compactLeaseReceipts([]), [])
        for r in ["3:5:L2", "0:1:7", "65535:123456789012345:L99"] { XCTAssertTrue(isDeliveredReceipt(r), r) }
        for r in ["3:5-7:L2", "3:5:L", "3::1", ":5:1", "3:5", "3:5:1:2", "3:5:LL2", "3:L5:2", "x", "", "3:5:2L"] {
            XCTAssertFalse(isDeliveredReceipt(r), r)
        }
    }

    /// Differential, seeded: two partitions given the same history, one acked receipt by
    /// receipt, the other through `compactLeaseReceipts`, agree on every answer and on the
    /// in-flight count after every step (random batches, acks of random subsets with
    /// duplicates and stale receipts, nacks, timeouts).
    func testCompactedAcksAnswerLikeSingleReceipts() throws {
        let other = Queue(client: client, scripts: scripts, keys: PartitionKeys(topic: "orders", partition: 4), partition: 4)
        var state: UInt64 = 0x9E3779B97F4A7C15
        func next(_ n: Int) -> Int {   // xorshift64*
            state ^= state >> 12; state ^= state << 25; state ^= state >> 27
            return Int((state &* 2685821657736338717) >> 33) % n
        }
        func on4(_ r: String) -> String { "4" + r.dropFirst(1) }
        _ = try q.ensureGroup("g")
        _ = try other.ensureGroup("g")
        var held: [String] = []     // partition 3's receipts handed out so far (acked ones included)
        var now = t0
        for step in 0..<300 {
            switch next(10) {
            case 0, 1:
                let batch = messages(0..<(1 + next(150)))
                try q.produce(batch, now: now)
                try other.produce(batch, now: now)
            case 2, 3:
                let max = 1 + next(150)
                let got = try q.consume("g", now: now, max: max, visibilityMs: 5000)
                let got4 = try other.consume("g", now: now, max: max, visibilityMs: 5000)
                XCTAssertEqual(got.map { on4($0.receipt) }, got4.map(\.receipt), "step \(step)")
                held += got.map(\.receipt)
            case 4:
                guard !held.isEmpty else { continue }
                let r = held[next(held.count)]
                let n3 = try q.nack("g", r, now: now, delayMs: 0)
                let n4 = try other.nack("g", on4(r), now: now, delayMs: 0)
                XCTAssertEqual(n3.0, n4.0, "step \(step)")
            case 5:
                now += 6000
                let r3 = try q.redeliver("g", now: now), r4 = try other.redeliver("g", now: now)
                XCTAssertEqual(r3.requeued, r4.requeued, "step \(step)")
            default:
                guard !held.isEmpty else { continue }
                // A run from the held receipts (often a whole batch, in order), sometimes with
                // a gap, a duplicate or an older receipt mixed in.
                let start = next(held.count)
                var pick = Array(held[start..<min(held.count, start + 1 + next(160))])
                if next(3) == 0, pick.count > 2 { pick.remove(at: next(pick.count)) }
                if next(3) == 0 { pick.insert(held[next(held.count)], at: next(pick.count + 1)) }
                pick = Array(pick.prefix(1000))
                let a3 = try q.ack("g", pick)
                let a4 = try other.ack("g", compactLeaseReceipts(pick.map(on4)))
                XCTAssertEqual(a3.acked, a4.acked, "step \(step)")
                XCTAssertEqual(a3.notFound.map(on4), a4.notFound, "step \(step)")
            }
            XCTAssertEqual(try q.status("g", now: now).inflight, try other.status("g", now: now).inflight, "step \(step)")
        }
    }

    /// A batch over 100 is split into leases of at most 100; counts and cleanup stay exact.
    func testLargeBatchesSplitIntoBoundedLeases() throws {
        _ = try q.ensureGroup("g")
        for chunk in 0..<3 { try q.produce(messages((chunk * 100)..<(chunk * 100 + 100)), now: t0) }
        let got = try q.consume("g", now: t0, max: 250)
        XCTAssertEqual(got.map(\.seq), Array(1...250))
        let leases = got.map { String($0.receipt.split(separator: ":")[2]) }
        XCTAssertEqual(Set(leases).count, 3)
        XCTAssertEqual(leases.filter { $0 == leases[0] }.count, 100)
        XCTAssertEqual(leases.filter { $0 == leases[249] }.count, 50)
        XCTAssertEqual(try client.command(["ZCARD", q.keys.group("g").inflight]).int, 3)
        XCTAssertEqual(try q.status("g", now: t0).inflight, 250)
        XCTAssertEqual(try q.ack("g", [got[150].receipt]).acked, 1)
        XCTAssertEqual(try q.status("g", now: t0).inflight, 249)
        XCTAssertEqual(try q.ack("g", got.map(\.receipt)).acked, 249)
        XCTAssertEqual(try q.status("g", now: t0).inflight, 0)
        let g = q.keys.group("g")
        for key in [g.inflight, g.retry, g.attempts, g.data, q.keys.refs] {
            XCTAssertEqual(try client.command(["EXISTS", key]).int, 0, key)
        }
    }

    /// A lease of entries with max_attempts 1 dead-letters them when it times out, keeping
    /// the lease's delivery time as their last delivery.
    func testTimedOutLeaseDeadLettersAtMaxAttempts() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<3, maxAttempts: 1), now: t0)
        let got = try q.consume("g", now: t0 + 5, max: 3, visibilityMs: 100)
        XCTAssertEqual(try q.ack("g", [got[1].receipt]).acked, 1)
        let r = try q.redeliver("g", now: t0 + 105)
        XCTAssertEqual([r.requeued, r.dead], [0, 2])
        let dead = try q.dlq("g").entries
        XCTAssertEqual(dead.map(\.id), ["m0", "m2"])
        XCTAssertEqual(dead.map(\.attempts), [1, 1])
        XCTAssertEqual(dead.map(\.lastDeliveryMs), [t0 + 5, t0 + 5])
        XCTAssertEqual(try q.status("g", now: t0 + 105).inflight, 0)
    }

    // MARK: - Trim

    func testTrimKeepsEntriesAnyGroupStillNeeds() throws {
        _ = try q.ensureGroup("g1")
        _ = try q.ensureGroup("g2")
        try q.produce(messages(0..<10), now: t0)
        let g1 = try q.consume("g1", now: t0, max: 10, visibilityMs: 100)
        // g1 acks all but seq 3 (in flight), g2 received 1...5 and acked them.
        XCTAssertEqual(try q.ack("g1", g1.filter { $0.seq != 3 }.map(\.receipt)).acked, 9)
        let g2 = try q.consume("g2", now: t0, max: 5)
        XCTAssertEqual(try q.ack("g2", g2.map(\.receipt)).acked, 5)

        let bounded = try q.trim(maxDelete: 1)
        XCTAssertEqual([bounded.deleted, bounded.keepFromSeq], [1, 3])
        XCTAssertEqual(try q.trim().deleted, 1)
        XCTAssertEqual(try q.logSeqs(), Array(3...10))

        // The in-flight entry is still readable: it times out and comes back.
        XCTAssertEqual(try q.redeliver("g1", now: t0 + 100).requeued, 1)
        XCTAssertEqual(try q.trim().deleted, 0, "an entry waiting in retry holds the log")
        let again = try q.consume("g1", now: t0 + 100, max: 10)
        XCTAssertEqual(again.map(\.id), ["m2"])
        XCTAssertEqual(again.map(\.attempt), [2])
        XCTAssertEqual(try q.ack("g1", again.map(\.receipt)).acked, 1)

        // Now only g2's cursor (5) holds the log.
        let next = try q.trim()
        XCTAssertEqual([next.deleted, next.keepFromSeq], [3, 6])
        XCTAssertEqual(try q.logSeqs(), Array(6...10))
        let g2tail = try q.consume("g2", now: t0, max: 10)
        XCTAssertEqual(g2tail.map(\.seq), Array(6...10))

        // retain keeps the newest entries even when nobody needs them.
        let g2rest = try q.consume("g2", now: t0, max: 10)
        XCTAssertEqual(g2rest, [])
        XCTAssertEqual(try q.ack("g2", g2tail.map(\.receipt)).acked, 5)
        XCTAssertEqual(try q.trim(retain: 2).deleted, 3)
        XCTAssertEqual(try q.logSeqs(), [9, 10])
        XCTAssertEqual(try q.trim().deleted, 2)
        XCTAssertEqual(try q.trim().deleted, 0)
        // The sequence continues after a fully trimmed log.
        XCTAssertEqual(try q.produce(messages(10..<11), now: t0).map(\.1), ["11"])
    }

    // MARK: - Bad arguments

    func testBadArgumentsAreRefusedAndChangeNothing() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<3), now: t0)
        _ = try q.consume("g", now: t0, max: 1)
        try q.produce([Message(id: "d", body: "1", delayMs: 10)], now: t0)
        let before = try snapshot()
        let now = "\(t0)"
        let g = q.keys.group("g")
        let pk = q.keys
        var good = q.produceArgs(messages(3..<5), now: t0)
        var cases: [(String, [String], [String])] = []
        func produce(_ args: [String]) { cases.append(("queue_produce-6.lua", q.produceKeys, args)) }
        produce([])
        produce(["-1"] + good.dropFirst())
        good[2] = "3"; produce(good)                                    // n does not match
        good[2] = "0"; produce(Array(good.prefix(3)))                   // n = 0
        good = q.produceArgs(messages(3..<5), now: t0); good[4] = "2"; produce(good)   // dedup not 0/1
        good = q.produceArgs(messages(3..<5), now: t0); good[13] = "1.5"; produce(good) // delay of the 2nd
        good = q.produceArgs(messages(3..<5), now: t0); good[14] = "0"; produce(good)   // max_attempts 0
        good = q.produceArgs(messages(3..<5), now: t0); good[9] = ""; produce(good)     // empty id
        produce(["abc", "86400000", "1", "x", "0", "", "1", "0", "5"])
        produce([now, "0", "1", "x", "0", "", "1", "0", "5"])           // window 0
        let consumeKeys = q.consumeKeys("g")
        for args in [[now, "g", "3", "1"], [now, "", "3", "1", "1000"], [now, "g", "70000", "1", "1000"],
                     [now, "g", "3", "x", "1000"], [now, "g", "3", "1", "0"], ["1e3", "g", "3", "1", "1000"]] {
            cases.append(("queue_consume-8.lua", consumeKeys, args))
        }
        cases.append(("queue_ack-5.lua", q.ackKeys("g"), ["g", "3"]))
        cases.append(("queue_ack-5.lua", q.ackKeys("g"), ["", "3", "3:1:1"]))
        cases.append(("queue_ack-5.lua", q.ackKeys("g"), ["g", "-3", "3:1:1"]))
        for args in [[now, "g", "3", "3:1:1"], [now, "g", "3", "3:1:1", "-5"], [now, "g", "x", "3:1:1", ""],
                     [now, "", "3", "3:1:1", ""], [now, "g", "3", "3:1:1", "43200001"]] {
            cases.append(("queue_nack-8.lua", q.timerKeys("g"), args))
        }
        for args in [[now, "g"], [now, "g", "0"], [now, "g", "10001"], ["x", "g", "1"], [now, "", "1"]] {
            cases.append(("queue_redeliver-8.lua", q.timerKeys("g"), args))
        }
        for args in [[now], [now, "0"], ["", "5"]] {
            cases.append(("queue_promote-3.lua", [pk.log, pk.delayed, pk.delayedData], args))
        }
        for args in [["0", "0"], ["1001", "0"], ["1"], ["5", "-1"]] {
            cases.append(("queue_dlq-2.lua", [g.dlq, g.data], args))
        }
        for args in [[now], [now, "0"], ["x", "10"]] {
            cases.append(("queue_redrive-5.lua", q.redriveKeys("g"), args))
        }
        cases.append(("queue_redrive-5.lua", q.redriveKeys("g"), [now, "10"] + Array(repeating: "i", count: 1001)))
        for args in [[now], ["x", "g"], [now, "g", "extra"]] {
            cases.append(("queue_status-8.lua", q.statusKeys("g"), args))
        }
        for args in [["0", "0"], ["100001", "0"], ["10"], ["10", "x"]] {
            cases.append(("queue_trim-3.lua", [pk.log, pk.groups, pk.refs], args))
        }
        cases.append(("queue_group-2.lua", [pk.log, pk.groups], [""]))
        cases.append(("queue_group-2.lua", [pk.log, pk.groups], ["g", "x"]))

        for (name, keys, args) in cases {
            let reply = try q.raw(name, keys: keys, args: args)
            XCTAssertTrue(reply.errorMessage?.hasPrefix("BADARG ") ?? false, "\(name) \(args.prefix(6)): \(reply)")
        }
        XCTAssertEqual(try snapshot(), before, "an error reply leaves every key unchanged")
        // Stale or foreign receipts are answers, not errors, and change nothing either.
        XCTAssertEqual(try q.ack("g", ["3:99:1", "3:1:7", "0:1:1", "3:1:1:1"]).acked, 0)
        XCTAssertEqual(try q.nack("g", "3:2:1", now: t0).0, "not_found")
        XCTAssertEqual(try snapshot(), before)
    }

    // MARK: - Loading

    func testNoScriptAfterFlushReloadsTransparently() throws {
        _ = try q.ensureGroup("g")
        try q.produce(messages(0..<2), now: t0)
        let loadsBefore = scripts.loads
        XCTAssertEqual(try client.command(["SCRIPT", "FLUSH"]), .simple("OK"))
        let sha = try XCTUnwrap(scripts.sha("queue_produce-6.lua"))
        XCTAssertEqual(try client.command(["SCRIPT", "EXISTS", sha]).array?.first?.int, 0)
        let raw = try client.command(["EVALSHA", sha, "0"])
        XCTAssertTrue(raw.errorMessage?.hasPrefix("NOSCRIPT") ?? false)
        // The wrapper sees NOSCRIPT, loads again and succeeds.
        XCTAssertEqual(try q.consume("g", now: t0, max: 10).count, 2)
        try q.produce(messages(2..<3), now: t0)
        XCTAssertEqual(scripts.loads, loadsBefore + 2)
        XCTAssertEqual(try client.command(["SCRIPT", "EXISTS", sha]).array?.first?.int, 1)
    }

    func testEveryScriptHasAHeaderNamingItsKeysAndArgs() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: scripts.directory.path)
            .filter { $0.hasPrefix("queue_") && $0.hasSuffix(".lua") }.sorted()
        XCTAssertEqual(files.count, 12)
        for file in files {
            let source = try scripts.source(file)
            XCTAssertTrue(source.hasPrefix("--[["), file)
            let keyCount = Int(file.split(separator: "-").last!.dropLast(4))!
            for n in 1...keyCount { XCTAssertTrue(source.contains("KEYS[\(n)]"), "\(file) KEYS[\(n)]") }
            XCTAssertFalse(source.contains("KEYS[\(keyCount + 1)]"), file)
            XCTAssertTrue(source.contains("ARGV[1]"), file)
            XCTAssertTrue(source.contains("Reply:"), file)
            XCTAssertTrue(source.contains("local rcall = redis.call"), file)
            XCTAssertFalse(source.contains("\"TIME\""), "\(file) must take time from ARGV")
        }
    }
}
