import Foundation
import XCTest
@testable import Runtime

// The queue end to end (CONTRACT §2.2): a real redis-server, three real `concord node`
// processes, real HTTP. Most tests share one cluster (each on its own topic) to keep the file's
// run time down; the Redis-down and chaos tests get their own.

private final class SharedQueueCluster: @unchecked Sendable {
    static let lock = NSLock()
    nonisolated(unsafe) static var cluster: TestCluster?

    static func get() throws -> TestCluster {
        lock.lock(); defer { lock.unlock() }
        if let c = cluster { return c }
        let c = try TestCluster(nodes: 3)
        // Wait until every node sees all three alive, so owners agree.
        for n in c.nodes {
            try waitUntil("\(n.id) sees 3 alive", seconds: 10) {
                let members = try n.client().get("/status").json?["members"]?.arrayValue ?? []
                return members.count == 3 && members.allSatisfy { $0["alive"]?.boolValue == true }
            }
        }
        cluster = c
        return c
    }
}

/// A queue message as consumed.
fileprivate struct Consumed {
    var id: String
    var receipt: String
    var body: JSONValue
    var key: String?
    var partition: Int
    var attempt: Int
}

fileprivate extension HTTPClient {
    func postJSON(_ path: String, _ text: String) throws -> HTTPResponse { try post(path, json: text) }

    func consume(_ topic: String, group: String = "default", consumer: String = "c", max: Int = 1, visibilityMs: Int = 30_000, waitMs: Int = 0) throws -> (HTTPResponse, [Consumed]) {
        let r = try post("/queue/consume", .object([("topic", .string(topic)), ("group", .string(group)), ("consumer", .string(consumer)),
                                                    ("max", .int(max)), ("visibility_ms", .int(visibilityMs)), ("wait_ms", .int(waitMs))]))
        let items = r.json?["messages"]?.arrayValue ?? []
        let messages = items.map { m in
            Consumed(id: m["id"]?.stringValue ?? "", receipt: m["receipt"]?.stringValue ?? "", body: m["body"] ?? .null,
                     key: m["key"]?.stringValue, partition: Int(m["partition"]?.int64Value ?? -1), attempt: Int(m["attempt"]?.int64Value ?? 0))
        }
        return (r, messages)
    }

    func ack(_ topic: String, group: String = "default", _ receipts: [String]) throws -> HTTPResponse {
        try post("/queue/ack", .object([("topic", .string(topic)), ("group", .string(group)), ("receipts", .array(receipts.map { .string($0) }))]))
    }
}

final class QueueIntegrationTests: XCTestCase {
    override class func tearDown() {
        SharedQueueCluster.lock.lock()
        SharedQueueCluster.cluster?.stopAll()
        SharedQueueCluster.cluster = nil
        SharedQueueCluster.lock.unlock()
        super.tearDown()
    }

    private func randomClient(_ c: TestCluster) -> HTTPClient { c.nodes.randomElement()!.client() }

    // MARK: delivery to two groups, order per key

    func testTwoGroupsEachReceiveAll2000MessagesInOrderPerKey() throws {
        let c = try SharedQueueCluster.get()
        let topic = "orders-\(UInt32.random(in: 0..<UInt32.max))"
        let clients = c.nodes.map { $0.client() }
        // First use of both groups: they receive everything produced afterwards.
        for g in ["g1", "g2"] { XCTAssertEqual(try clients[0].consume(topic, group: g).0.status, 200) }

        let total = 2000, keys = 20
        var next = Array(repeating: 0, count: keys)
        for batch in 0..<(total / 100) {
            var messages: [JSONValue] = []
            for i in 0..<100 {
                let n = batch * 100 + i
                let k = n % keys
                messages.append(.object([("key", .string("k\(k)")), ("body", .object([("k", .int(k)), ("i", .int(next[k]))]))]))
                next[k] += 1
            }
            let r = try clients[batch % 3].post("/queue/produce", .object([("topic", .string(topic)), ("messages", .array(messages))]))
            XCTAssertEqual(r.status, 200, r.text)
            XCTAssertEqual(r.json?["messages"]?.arrayValue?.count, 100)
        }

        // One consumer per group (so its receive order is the delivery order), through all nodes.
        let results = ConcurrentResults()
        let group = DispatchGroup()
        let ports = c.nodes.map(\.port)
        for g in ["g1", "g2"] {
            group.enter()
            Thread {
                defer { group.leave() }
                var seen = Set<String>(), lastIndex = [Int: Int](), outOfOrder = 0, duplicates = 0
                let cs = ports.map { HTTPClient(host: "127.0.0.1", port: $0) }
                let deadline = Date().addingTimeInterval(40)
                var turn = 0
                while seen.count < total && Date() < deadline {
                    turn += 1
                    guard let (r, ms) = try? cs[turn % 3].consume(topic, group: g, consumer: "\(g)-c", max: 100, waitMs: 1000), r.status == 200 else { continue }
                    for m in ms {
                        if !seen.insert(m.id).inserted { duplicates += 1; continue }
                        let k = Int(m.body["k"]?.int64Value ?? -1), i = Int(m.body["i"]?.int64Value ?? -1)
                        if let last = lastIndex[k], i <= last { outOfOrder += 1 }
                        lastIndex[k] = i
                        if m.key != "k\(k)" { outOfOrder += 1 }
                    }
                    if !ms.isEmpty { _ = try? cs[(turn + 1) % 3].ack(topic, group: g, ms.map(\.receipt)) }
                }
                results.set(g, (seen.count, outOfOrder, duplicates))
            }.start()
        }
        group.wait()
        for g in ["g1", "g2"] {
            let (received, outOfOrder, duplicates) = results.get(g)
            XCTAssertEqual(received, total, "group \(g) received \(received) of \(total)")
            XCTAssertEqual(outOfOrder, 0, "group \(g): deliveries out of produce order within a key")
            print("group \(g): \(received) messages, \(duplicates) duplicates, \(outOfOrder) out of order")
        }
        let status = try clients[1].get("/queue/status/\(topic)")
        XCTAssertEqual(status.status, 200)
        for g in status.json?["groups"]?.arrayValue ?? [] {
            XCTAssertEqual(g["ready"]?.int64Value, 0, status.text)
            XCTAssertEqual(g["inflight"]?.int64Value, 0, status.text)
        }
    }

    // MARK: redelivery

    func testUnackedMessageIsRedeliveredWithAttempt2AndTheOldReceiptDies() throws {
        let c = try SharedQueueCluster.get()
        let topic = "redeliver-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client(), n2 = c.node("n2").client()
        XCTAssertEqual(try n1.consume(topic).0.status, 200)
        XCTAssertEqual(try n1.post("/queue/produce", .object([("topic", .string(topic)), ("body", .string("again"))])).status, 200)
        let (_, first) = try n1.consume(topic, visibilityMs: 300)
        XCTAssertEqual(first.count, 1)
        XCTAssertEqual(first.first?.attempt, 1)
        // Not acked: the owner's timer returns it after 300 ms; a waiting consumer is woken.
        let started = Date()
        let (_, second) = try n2.consume(topic, visibilityMs: 30_000, waitMs: 5000)
        XCTAssertEqual(second.count, 1, "redelivered within the wait")
        XCTAssertEqual(second.first?.id, first.first?.id)
        XCTAssertEqual(second.first?.attempt, 2)
        XCTAssertEqual(second.first?.body, .string("again"))
        print("redelivered after \(Date().timeIntervalSince(started)) s")
        let stale = try n1.ack(topic, [first[0].receipt])
        XCTAssertEqual(stale.json?["acked"]?.int64Value, 0, "the first delivery's receipt is dead")
        XCTAssertEqual(stale.json?["not_found"]?.arrayValue, [.string(first[0].receipt)])
        XCTAssertEqual(try n2.ack(topic, [second[0].receipt]).json?["acked"]?.int64Value, 1)
    }

    /// The node acks a run of one lease's receipts in queue_ack's short form
    /// (`p:first-last:L<n>`); a client that sends that form itself gets it back as not found,
    /// and nothing is acked by it. A batch acked whole, in order, then answers no not_found.
    func testAckTakesOnlyDeliveredReceiptsAndAWholeBatchAtOnce() throws {
        let c = try SharedQueueCluster.get()
        let topic = "shortform-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client()
        XCTAssertEqual(try n1.post("/queue/topic", .object([("topic", .string(topic)), ("partitions", .int(1))])).status, 200)
        XCTAssertEqual(try n1.consume(topic).0.status, 200)
        let batch = JSONValue.object([("topic", .string(topic)), ("messages", .array((0..<6).map { .object([("body", .int(Int64($0)))]) }))])
        XCTAssertEqual(try n1.post("/queue/produce", batch).status, 200)
        let (_, got) = try n1.consume(topic, max: 6)
        XCTAssertEqual(got.count, 6)
        let parts = got[0].receipt.split(separator: ":")
        XCTAssertEqual(parts.count, 3)
        let forged = "\(parts[0]):\(parts[1])-\(Int(parts[1])! + 5):\(parts[2])"
        let r = try n1.ack(topic, [forged, "junk", got[0].receipt])
        XCTAssertEqual(r.json?["acked"]?.int64Value, 1, r.text)
        XCTAssertEqual(r.json?["not_found"]?.arrayValue, [.string(forged), .string("junk")], r.text)
        let rest = try n1.ack(topic, got.dropFirst().map(\.receipt))
        XCTAssertEqual(rest.json?["acked"]?.int64Value, 5, rest.text)
        XCTAssertEqual(rest.json?["not_found"]?.arrayValue, [], rest.text)
        let again = try n1.ack(topic, got.map(\.receipt))
        XCTAssertEqual(again.json?["acked"]?.int64Value, 0, again.text)
        XCTAssertEqual(again.json?["not_found"]?.arrayValue, got.map { .string($0.receipt) }, "acked receipts are not found, each as sent")
    }

    // MARK: dead letters

    func testMaxAttemptsDeadLettersThenRedriveMakesItReadyAgain() throws {
        let c = try SharedQueueCluster.get()
        let topic = "dlq-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client(), n3 = c.node("n3").client()
        XCTAssertEqual(try n1.consume(topic, group: "w").0.status, 200)
        let produced = try n1.post("/queue/produce", .object([("topic", .string(topic)), ("id", .string("poison")), ("key", .string("pk")),
                                                              ("body", .object([("n", .number("1.50"))])), ("max_attempts", .int(2))]))
        XCTAssertEqual(produced.status, 200, produced.text)
        let (_, a1) = try n1.consume(topic, group: "w", visibilityMs: 200)
        XCTAssertEqual(a1.first?.attempt, 1)
        let (_, a2) = try n3.consume(topic, group: "w", visibilityMs: 200, waitMs: 5000)
        XCTAssertEqual(a2.first?.attempt, 2)
        var dead: [JSONValue] = []
        try waitUntil("message in the DLQ", seconds: 5) {
            dead = try n3.get("/queue/dlq/\(topic)?group=w&limit=10").json?["messages"]?.arrayValue ?? []
            return dead.count == 1
        }
        XCTAssertEqual(dead[0]["id"]?.stringValue, "poison")
        XCTAssertEqual(dead[0]["attempts"]?.int64Value, 2)
        XCTAssertEqual(dead[0]["key"]?.stringValue, "pk")
        XCTAssertEqual(dead[0]["body"]?.serialized(), "{\"n\":1.50}", "the body comes back byte for byte")
        XCTAssertGreaterThan(dead[0]["last_delivery_ms"]?.int64Value ?? 0, 0)
        let status = try n1.get("/queue/status/\(topic)").json
        XCTAssertEqual(status?["groups"]?.arrayValue?.first { $0["group"]?.stringValue == "w" }?["dead"]?.int64Value, 1)
        // Nothing more is delivered while it is dead.
        XCTAssertEqual(try n1.consume(topic, group: "w").1.count, 0)

        let redriven = try n3.post("/queue/dlq/redrive", .object([("topic", .string(topic)), ("group", .string("w")), ("ids", .array([.string("poison")]))]))
        XCTAssertEqual(redriven.status, 200, redriven.text)
        XCTAssertEqual(redriven.json?["redriven"]?.int64Value, 1)
        let (_, again) = try n1.consume(topic, group: "w", waitMs: 3000)
        XCTAssertEqual(again.first?.id, "poison")
        XCTAssertEqual(again.first?.attempt, 1, "attempts reset by redrive")
        XCTAssertEqual(try n1.ack(topic, group: "w", again.map(\.receipt)).json?["acked"]?.int64Value, 1)
        XCTAssertEqual(try n1.get("/queue/dlq/\(topic)?group=w").json?["messages"]?.arrayValue?.count, 0)
    }

    // MARK: idempotent produce

    func testProducingTheSameIdAgainAddsNothingAndReturnsTheFirstResult() throws {
        let c = try SharedQueueCluster.get()
        let topic = "idem-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client(), n2 = c.node("n2").client()
        XCTAssertEqual(try n1.consume(topic).0.status, 200)
        let body = JSONValue.object([("topic", .string(topic)), ("id", .string("order-17")), ("body", .string("once"))])
        let first = try n1.post("/queue/produce", body)
        let second = try n2.post("/queue/produce", body)
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(first.json, second.json, "a retry answers the first result")
        let batch = try n2.post("/queue/produce", .object([("topic", .string(topic)), ("messages", .array([
            .object([("id", .string("order-17")), ("body", .string("once"))]),
            .object([("id", .string("order-18")), ("body", .string("two"))]),
            .object([("id", .string("order-18")), ("body", .string("two"))]),
        ]))]))
        XCTAssertEqual(batch.status, 200, batch.text)
        let (_, got) = try n1.consume(topic, max: 10)
        XCTAssertEqual(got.map(\.id).sorted(), ["order-17", "order-18"])
        XCTAssertEqual(try n1.consume(topic, max: 10, waitMs: 300).1.count, 0)
    }

    // MARK: long-poll

    func testLongPollWakesPromptlyWhenAnotherNodeProduces() throws {
        let c = try SharedQueueCluster.get()
        let topic = "poll-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client(), n3 = c.node("n3").client()
        XCTAssertEqual(try n1.consume(topic).0.status, 200)
        var latencies: [Double] = []
        for round in 0..<3 {
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var received: [Consumed] = []
            nonisolated(unsafe) var returnedAt = Date.distantFuture
            let port1 = c.node("n1").port
            Thread {
                received = (try? HTTPClient(host: "127.0.0.1", port: port1).consume(topic, waitMs: 8000).1) ?? []
                returnedAt = Date()
                done.signal()
            }.start()
            try waitUntil("the consumer waits on n1", seconds: 5) { try self.longPollWaiters(c.node("n1")) >= 1 }
            let producedAt = Date()
            XCTAssertEqual(try n3.post("/queue/produce", .object([("topic", .string(topic)), ("body", .int(round))])).status, 200)
            done.wait()
            let latency = returnedAt.timeIntervalSince(producedAt)
            latencies.append(latency)
            XCTAssertEqual(received.count, 1)
            XCTAssertLessThan(latency, 1.0, "woken by the notification, not by the 8 s deadline")
            _ = try n1.ack(topic, received.map(\.receipt))
        }
        print("long-poll wake latency produce(n3) -> consume answer(n1): \(latencies.map { String(format: "%.1f ms", $0 * 1000) })")
        // An empty long-poll answers empty at its wait, not before and not with an error, also
        // past the node's 10 s default request deadline.
        let t0 = Date()
        let (r, none) = try n1.consume(topic, waitMs: 10_500)
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertTrue(none.isEmpty)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(t0), 10.4)
    }

    /// A long-poll whose client closed its connection (its own HTTP timeout shorter than
    /// wait_ms) is withdrawn: the next message stays ready for a live consumer, instead of
    /// going to the dead connection, in flight for nobody and one attempt spent.
    func testALongPollWhoseClientLeftIsWithdrawnAndGetsNothing() throws {
        let c = try SharedQueueCluster.get()
        let topic = "ghost-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1"), n3 = c.node("n3").client()
        XCTAssertEqual(try n1.client().consume(topic).0.status, 200) // the group exists
        let before = try longPollWaiters(n1)
        let body = #"{"topic":"\#(topic)","consumer":"ghost","wait_ms":30000}"#
        let request = Array("POST /queue/consume HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        let port = n1.port
        let ghost = LockIntegrationTests.Async { rawHTTP(port: port, request, readTimeoutMs: 1500) }
        try waitUntil("the ghost waits on n1", seconds: 5) { try self.longPollWaiters(n1) > before }
        XCTAssertEqual(try ghost.result(), "", "the long-poll must not have been answered")
        // The ghost's socket is closed now. A message arrives; n1 is notified and tries its waiter.
        XCTAssertEqual(try n3.post("/queue/produce", .object([("topic", .string(topic)), ("body", .string("for the living"))])).status, 200)
        try waitUntil("n1 dealt with the ghost", seconds: 5) { try self.longPollWaiters(n1) == before }
        let group = try n1.client().get("/queue/status/\(topic)").json?["groups"]?.arrayValue?.first
        XCTAssertEqual(group?["inflight"]?.int64Value, 0, "nothing may be in flight to a closed connection")
        let (r, got) = try n1.client().consume(topic, consumer: "alive", waitMs: 5000)
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(got.map(\.attempt), [1], "the live consumer gets the message, first attempt")
        XCTAssertTrue(try n1.client().get("/metrics").text.contains("concord_queue_waits_abandoned_total"))
        _ = try n1.client().ack(topic, got.map(\.receipt))
    }

    /// A nacked message whose backoff runs out is announced on the bus when it comes due, as a
    /// new message is, so long-polls wake then rather than at their once-a-second re-check.
    func testANackedMessageIsAnnouncedWhenItsBackoffRunsOut() throws {
        let c = try SharedQueueCluster.get()
        let topic = "due-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client()
        XCTAssertEqual(try n1.consume(topic).0.status, 200)
        let bus = RESPTestClient(port: c.redis.port)
        defer { bus.close() }
        _ = try bus.command(["SUBSCRIBE", "concord:\(c.cluster):bus:all"])
        /// The next queue notification naming this topic (its payload is
        /// {"topics":[[topic,[p...]]]}), and when it came; nil if none within `seconds`.
        func nextNotification(seconds: Double) -> Int64? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                guard let push = try? bus.nextPush() else { return nil }
                if push.contains("{\"topics\":") && push.contains("\"\(topic)\"") { return Int64(Date().timeIntervalSince1970 * 1000) }
            }
            return nil
        }
        XCTAssertEqual(try n1.post("/queue/produce", .object([("topic", .string(topic)), ("body", .int(1))])).status, 200)
        XCTAssertNotNil(nextNotification(seconds: 5), "the produce is announced")
        let (_, got) = try n1.consume(topic)
        XCTAssertEqual(got.count, 1)
        let nacked = try c.node("n2").client().post("/queue/nack", .object([("topic", .string(topic)), ("receipt", .string(got[0].receipt)), ("delay_ms", .int(1500))]))
        XCTAssertEqual(nacked.status, 200, nacked.text)
        let due = nacked.json?["visible_at_ms"]?.int64Value ?? 0
        guard let announcedAt = nextNotification(seconds: 6) else { return XCTFail("no notification for \(topic) when its retry came due") }
        XCTAssertGreaterThanOrEqual(announcedAt, due - 50, "announced before the retry was due")
        let (r, again) = try n1.consume(topic, waitMs: 2000)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(again.map(\.attempt), [2])
        _ = try n1.ack(topic, again.map(\.receipt))
    }

    /// This node's long-poll waiters, from its metrics.
    private func longPollWaiters(_ node: NodeProcess) throws -> Double {
        let text = try node.client().get("/metrics").text
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("concord_queue_longpoll_waiters ") }),
              let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { return 0 }
        return value
    }

    // MARK: bad input

    func testBadInputIs400NamingTheFieldAndStoresNothing() throws {
        let c = try SharedQueueCluster.get()
        let client = c.node("n2").client()
        let t = "badtopic"
        let long = String(repeating: "x", count: 300)
        let cases: [(String, String, String)] = [
            ("/queue/produce", "{not json", "JSON"),
            ("/queue/produce", "[1]", "object"),
            ("/queue/produce", "{}", "topic"),
            ("/queue/produce", "{\"topic\":\"\",\"body\":1}", "topic"),
            ("/queue/produce", "{\"topic\":\"\(long)\",\"body\":1}", "topic"),
            ("/queue/produce", "{\"topic\":\"bad\\u0001\",\"body\":1}", "topic"),
            ("/queue/produce", "{\"topic\":\"\(t)\"}", "body"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"body\":1,\"delay_ms\":-5}", "delay_ms"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"body\":1,\"delay_ms\":2592000001}", "delay_ms"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"body\":1,\"max_attempts\":0}", "max_attempts"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"body\":1,\"key\":\"\"}", "key"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"body\":1,\"id\":5}", "id"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"messages\":[]}", "messages"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"messages\":{}}", "messages"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"messages\":[{\"body\":1},{\"body\":2,\"max_attempts\":\"x\"}]}", "messages[1].max_attempts"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"messages\":[{\"body\":1},{\"nobody\":2}]}", "messages[1].body"),
            ("/queue/produce", "{\"topic\":\"\(t)\",\"messages\":[" + Array(repeating: "{\"body\":1}", count: 1001).joined(separator: ",") + "]}", "messages"),
            ("/queue/consume", "{\"topic\":\"\(t)\"}", "consumer"),
            ("/queue/consume", "{\"topic\":\"\(t)\",\"consumer\":\"c\",\"max\":1001}", "max"),
            ("/queue/consume", "{\"topic\":\"\(t)\",\"consumer\":\"c\",\"max\":0}", "max"),
            ("/queue/consume", "{\"topic\":\"\(t)\",\"consumer\":\"c\",\"wait_ms\":60001}", "wait_ms"),
            ("/queue/consume", "{\"topic\":\"\(t)\",\"consumer\":\"c\",\"visibility_ms\":0}", "visibility_ms"),
            ("/queue/consume", "{\"topic\":\"\(t)\",\"consumer\":\"c\",\"group\":\"\"}", "group"),
            ("/queue/ack", "{\"topic\":\"\(t)\",\"receipts\":\"r\"}", "receipts"),
            ("/queue/ack", "{\"topic\":\"\(t)\",\"receipts\":[1]}", "receipts[0]"),
            ("/queue/nack", "{\"topic\":\"\(t)\"}", "receipt"),
            ("/queue/nack", "{\"topic\":\"\(t)\",\"receipt\":\"0:1:1\",\"delay_ms\":-1}", "delay_ms"),
            ("/queue/topic", "{\"topic\":\"\(t)\",\"partitions\":0}", "partitions"),
            ("/queue/topic", "{\"topic\":\"\(t)\",\"partitions\":257}", "partitions"),
            ("/queue/topic", "{\"topic\":\"\(t)\",\"partitions\":1.5}", "partitions"),
            ("/queue/dlq/redrive", "{\"topic\":\"\(t)\",\"ids\":[\"\"]}", "ids[0]"),
        ]
        for (path, body, field) in cases {
            let r = try client.postJSON(path, body)
            XCTAssertEqual(r.status, 400, "\(path) \(body.prefix(80)): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "bad_request")
            XCTAssertTrue(r.json?["message"]?.stringValue?.contains(field) == true, "\(path) \(body.prefix(80)): message should name \(field): \(r.text)")
        }
        let badLimit = try client.get("/queue/dlq/\(t)?limit=0")
        XCTAssertEqual(badLimit.status, 400, badLimit.text)
        // Nothing stored: no topic registered, no key of the topic anywhere.
        XCTAssertEqual(try c.redis.cli("HEXISTS", "concord:\(c.cluster):q:topics", t), "0")
        XCTAssertEqual(try c.redis.cli("EXISTS", "concord:\(c.cluster):q:groups:\(t)"), "0")
        XCTAssertEqual(try c.redis.cli("KEYS", "concord:\(c.cluster):q:{\(t):*"), "")
        XCTAssertEqual(try client.get("/health").status, 200)
    }

    // MARK: topics, status, 404s

    func testTopicCreationConflictStatusOwnersAndUnknownTopics() throws {
        let c = try SharedQueueCluster.get()
        let topic = "cfg-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client()
        let created = try n1.post("/queue/topic", .object([("topic", .string(topic)), ("partitions", .int(4))]))
        XCTAssertEqual(created.status, 200, created.text)
        XCTAssertEqual(created.json, .object([("topic", .string(topic)), ("partitions", .int(4))]))
        XCTAssertEqual(try c.node("n2").client().post("/queue/topic", .object([("topic", .string(topic)), ("partitions", .int(4))])).status, 200)
        let conflict = try c.node("n3").client().post("/queue/topic", .object([("topic", .string(topic)), ("partitions", .int(8))]))
        XCTAssertEqual(conflict.status, 409, conflict.text)
        XCTAssertEqual(conflict.json?["error"]?.stringValue, "conflict")
        // Messages with a key land on the key's partition, always.
        var partitions = Set<Int64>()
        for _ in 0..<5 {
            let r = try c.nodes.randomElement()!.client().post("/queue/produce", .object([("topic", .string(topic)), ("key", .string("same")), ("body", .null)]))
            partitions.insert(r.json?["partition"]?.int64Value ?? -1)
        }
        XCTAssertEqual(partitions.count, 1)
        XCTAssertTrue((0..<4).contains(partitions.first!))

        var owners: [[String]] = []
        for n in c.nodes {
            let s = try n.client().get("/queue/status/\(topic)")
            XCTAssertEqual(s.status, 200, s.text)
            let parts = s.json?["partitions"]?.arrayValue ?? []
            XCTAssertEqual(parts.map { $0["partition"]?.int64Value ?? -1 }, [0, 1, 2, 3])
            for p in parts { for f in ["owner", "ready", "inflight", "delayed"] { XCTAssertNotNil(p[f], "partition missing \(f)") } }
            owners.append(parts.map { $0["owner"]?.stringValue ?? "?" })
        }
        XCTAssertEqual(Set(owners.map { $0.joined(separator: ",") }).count, 1, "every node computes the same owners: \(owners)")
        XCTAssertTrue(owners[0].allSatisfy { ["n1", "n2", "n3"].contains($0) })

        for path in ["/queue/status/nosuch-\(topic)", "/queue/dlq/nosuch-\(topic)?group=g"] {
            let r = try n1.get(path)
            XCTAssertEqual(r.status, 404, "\(path): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "not_found")
        }
        XCTAssertEqual(try n1.post("/queue/dlq/redrive", .object([("topic", .string("nosuch-\(topic)")), ("group", .string("g"))])).status, 404)
        XCTAssertEqual(try n1.request("DELETE", "/queue/produce").status, 405)
        // Names with the key layout's structural characters do not collide.
        let odd = "a:1}:g:{x}%"
        let r = try n1.post("/queue/produce", .object([("topic", .string(odd)), ("body", .int(1))]))
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(try n1.get("/queue/status/\(odd.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)").status, 200)
    }

    // MARK: Redis down

    func testRedisDownAnswers503WithRetryAfterAndRecovers() throws {
        let c = try TestCluster(nodes: 1)
        let n1 = c.node("n1").client(timeoutMs: 5000)
        let produce = JSONValue.object([("topic", .string("down")), ("id", .string("m-1")), ("body", .int(1))])
        XCTAssertEqual(try n1.post("/queue/produce", produce).status, 200)
        c.redis.stop()
        try waitUntil("produce answers 503", seconds: 5) { try n1.post("/queue/produce", produce).status == 503 }
        let r = try n1.post("/queue/produce", produce)
        XCTAssertEqual(r.json?["error"]?.stringValue, "unavailable")
        XCTAssertNotNil(r.headers["retry-after"])
        XCTAssertEqual(try n1.consume("down").0.status, 503)
        XCTAssertEqual(try n1.get("/queue/status/down").status, 503)
        try c.redis.start()
        try waitUntil("produce answers 200 again", seconds: 10) { try n1.post("/queue/produce", produce).status == 200 }
    }

    /// Redis at maxmemory refuses the queued XADDs of a produce transaction: the answer names
    /// the refusal (not EXEC's bare EXECABORT), is a retryable 503, and nothing is stored.
    func testRedisOutOfMemoryAnswers503NamingItAndStoresNothing() throws {
        let c = try TestCluster(nodes: 1)
        let n1 = c.node("n1").client(timeoutMs: 5000)
        let topic = JSONValue.object([("topic", .string("full")), ("partitions", .int(1))])
        XCTAssertEqual(try n1.post("/queue/topic", topic).status, 200)
        let batch = JSONValue.object([("topic", .string("full")), ("messages", .array((0..<5).map { .object([("body", .int($0))]) }))])
        _ = try c.redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        _ = try c.redis.cli("CONFIG", "SET", "maxmemory", "1")
        let r = try n1.post("/queue/produce", batch)
        _ = try c.redis.cli("CONFIG", "SET", "maxmemory", "0")
        XCTAssertEqual(r.status, 503, r.text)
        XCTAssertEqual(r.json?["error"]?.stringValue, "unavailable")
        XCTAssertTrue(r.json?["message"]?.stringValue?.contains("OOM") ?? false, r.text)
        XCTAssertNotNil(r.headers["retry-after"])
        func stored() throws -> Int64? { try n1.get("/queue/status/full").json?["partitions"]?.arrayValue?.first?["log_length"]?.int64Value }
        XCTAssertEqual(try stored(), 0, "a refused produce stored something")
        XCTAssertEqual(try n1.post("/queue/produce", batch).status, 200)
        XCTAssertEqual(try stored(), 5)
    }

    /// A produce's shares are pipelined XADDs, one share per partition: when one share fails
    /// (here its log key holds a string: WRONGTYPE), the produce is answered with the error,
    /// never 200, and the other share is stored (at least once: a retry adds it again).
    func testAProduceWhoseShareFailsIsAnErrorAndTheOtherShareIsStored() throws {
        let c = try TestCluster(nodes: 1)
        let n1 = c.node("n1").client(timeoutMs: 5000)
        XCTAssertEqual(try n1.post("/queue/topic", .object([("topic", .string("split")), ("partitions", .int(2))])).status, 200)
        // A key for each partition, found by producing one message per key.
        var keyOf: [Int64: String] = [:]
        for k in 0..<64 where keyOf.count < 2 {
            let r = try n1.post("/queue/produce", .object([("topic", .string("split")), ("key", .string("k\(k)")), ("body", .int(0))]))
            XCTAssertEqual(r.status, 200, r.text)
            if let p = r.json?["partition"]?.int64Value, keyOf[p] == nil { keyOf[p] = "k\(k)" }
        }
        guard let k0 = keyOf[0], let k1 = keyOf[1] else { return XCTFail("no key for each partition: \(keyOf)") }
        let log1 = "concord:\(c.cluster):q:{split:1}:log"
        let before1 = Int(try c.redis.cli("XLEN", log1)) ?? -1
        let log0 = "concord:\(c.cluster):q:{split:0}:log"
        _ = try c.redis.cli("DEL", log0)
        _ = try c.redis.cli("SET", log0, "not a stream")
        let batch = JSONValue.object([("topic", .string("split")), ("messages", .array((0..<6).map { i in
            .object([("key", .string(i % 2 == 0 ? k0 : k1)), ("body", .int(Int64(i)))]) }))])
        let r = try n1.post("/queue/produce", batch)
        XCTAssertNotEqual(r.status, 200, r.text)
        XCTAssertTrue(r.text.contains("WRONGTYPE"), r.text)
        XCTAssertEqual(try c.redis.cli("TYPE", log0), "string", "the failed share stored nothing")
        XCTAssertEqual(Int(try c.redis.cli("XLEN", log1)), before1 + 3, "the other share is stored")
    }

    // MARK: ownership moves

    /// The owner of a partition runs its redelivery timer; SIGKILL it and the next owner (by
    /// the ring over the survivors) takes the timer over: the unacked message still comes back.
    func testRedeliveryContinuesWhenThePartitionOwnerIsKilled() throws {
        let c = try TestCluster(nodes: 3)
        let topic = "owned"
        let any = c.node("n1").client()
        XCTAssertEqual(try any.post("/queue/topic", .object([("topic", .string(topic)), ("partitions", .int(1))])).status, 200)
        try waitUntil("every node sees 3 alive owners", seconds: 10) {
            let owners = try c.nodes.map { try $0.client().get("/queue/status/\(topic)").json?["partitions"]?.arrayValue?.first?["owner"]?.stringValue ?? "?" }
            let members = try any.get("/status").json?["members"]?.arrayValue ?? []
            let allAlive = members.count == 3 && members.allSatisfy { $0["alive"]?.boolValue == true }
            return Set(owners).count == 1 && owners[0] != "?" && allAlive
        }
        let owner = try any.get("/queue/status/\(topic)").json!["partitions"]!.arrayValue![0]["owner"]!.stringValue!
        let survivor = c.nodes.first { $0.id != owner }!.client()
        XCTAssertEqual(try survivor.consume(topic).0.status, 200)
        XCTAssertEqual(try survivor.post("/queue/produce", .object([("topic", .string(topic)), ("body", .string("m"))])).status, 200)
        let (_, first) = try survivor.consume(topic, visibilityMs: 500)
        XCTAssertEqual(first.count, 1)
        c.node(owner).kill9()
        let started = Date()
        var again: [Consumed] = []
        try waitUntil("redelivered by the new owner", seconds: 10) {
            again = try survivor.consume(topic, waitMs: 1000).1
            return !again.isEmpty
        }
        XCTAssertEqual(again.first?.attempt, 2)
        let newOwner = try survivor.get("/queue/status/\(topic)").json?["partitions"]?.arrayValue?.first?["owner"]?.stringValue
        XCTAssertNotEqual(newOwner, owner)
        print("owner \(owner) killed; redelivered \(String(format: "%.2f", Date().timeIntervalSince(started))) s later, new owner \(newOwner ?? "?")")
    }

    // MARK: chaos

    /// Producers and consumers through random nodes while nodes are SIGKILLed and restarted
    /// and Redis (AOF, fsync always) restarts once: every message answered 200 is delivered at
    /// least once.
    func testChaosEveryAcknowledgedProduceIsDeliveredAtLeastOnce() throws {
        let c = try TestCluster(nodes: 3, aof: true)
        let topic = "chaos"
        let group = "cg"
        try waitUntil("group registered", seconds: 5) { try c.node("n1").client().consume(topic, group: group).0.status == 200 }

        let state = ChaosState()
        let ports = c.nodes.map(\.port)
        let stopProducing = QueueFlag(), stopConsuming = QueueFlag()
        let producers = DispatchGroup(), consumers = DispatchGroup()
        for worker in 0..<2 {
            producers.enter()
            Thread {
                defer { producers.leave() }
                let clients = ports.map { HTTPClient(host: "127.0.0.1", port: $0, timeoutMs: 3000) }
                var batch = 0
                while !stopProducing.isSet {
                    batch += 1
                    let ids = (0..<10).map { "p\(worker)-\(batch)-\($0)" }
                    let messages: [JSONValue] = ids.map { .object([("id", .string($0)), ("key", .string("k\(Int.random(in: 0..<16))")), ("body", .string($0))]) }
                    let body = JSONValue.object([("topic", .string(topic)), ("messages", .array(messages))])
                    // Retry the same ids through any node: the dedup makes it safe.
                    for _ in 0..<20 where !stopProducing.isSet {
                        if let r = try? clients.randomElement()!.post("/queue/produce", body), r.status == 200 {
                            state.confirm(ids)
                            break
                        }
                        usleep(100_000)
                    }
                    usleep(20_000)
                }
            }.start()
        }
        for worker in 0..<2 {
            consumers.enter()
            Thread {
                defer { consumers.leave() }
                let clients = ports.map { HTTPClient(host: "127.0.0.1", port: $0, timeoutMs: 3000) }
                while !stopConsuming.isSet {
                    let client = clients.randomElement()!
                    guard let (r, ms) = try? client.consume(topic, group: group, consumer: "w\(worker)", max: 50, visibilityMs: 2000, waitMs: 500), r.status == 200 else {
                        usleep(100_000); continue
                    }
                    state.received(ms.map(\.id))
                    if !ms.isEmpty { _ = try? clients.randomElement()!.ack(topic, group: group, ms.map(\.receipt)) }
                }
            }.start()
        }

        func pause(_ s: Double) { usleep(useconds_t(s * 1_000_000)) }
        pause(2)
        for (i, victim) in ["n2", "n3", "n1"].enumerated() {
            c.node(victim).kill9()
            print("chaos: SIGKILL \(victim) (confirmed so far \(state.confirmedCount))")
            pause(1.5)
            if i == 1 {
                print("chaos: restarting redis")
                try c.redis.restart()
            }
            try c.node(victim).start()
            try c.node(victim).waitHealthy()
            pause(1.5)
        }
        stopProducing.set()
        // A produce in flight when the flag was set may still be answered 200 and confirmed:
        // the drain is judged only once no producer can confirm anything more.
        XCTAssertEqual(producers.wait(timeout: .now() + 30), .success, "producers did not stop")
        print("chaos: producers stopped with \(state.confirmedCount) confirmed")
        let missingAfter = try? waitUntil("every confirmed message delivered", seconds: 20) { state.missing.isEmpty }
        stopConsuming.set()
        consumers.wait()
        let missing = state.missing
        print("chaos: confirmed \(state.confirmedCount), delivered distinct \(state.distinctCount), duplicates \(state.duplicates), missing \(missing.count)\(missingAfter.map { String(format: ", drained %.1f s after the faults", $0) } ?? "")")
        XCTAssertGreaterThan(state.confirmedCount, 100)
        XCTAssertTrue(missing.isEmpty, "never delivered: \(missing.prefix(20))\n\(c.dumpLogs())")
    }
}

// MARK: - helpers

fileprivate final class ConcurrentResults: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String: (Int, Int, Int)] = [:]
    func set(_ k: String, _ v: (Int, Int, Int)) { lock.lock(); values[k] = v; lock.unlock() }
    func get(_ k: String) -> (Int, Int, Int) { lock.lock(); defer { lock.unlock() }; return values[k] ?? (0, 0, 0) }
}

fileprivate final class QueueFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

fileprivate final class ChaosState: @unchecked Sendable {
    private let lock = NSLock()
    private var confirmed = Set<String>()
    private var seen = [String: Int]()
    func confirm(_ ids: [String]) { lock.lock(); confirmed.formUnion(ids); lock.unlock() }
    func received(_ ids: [String]) { lock.lock(); for id in ids { seen[id, default: 0] += 1 }; lock.unlock() }
    var confirmedCount: Int { lock.lock(); defer { lock.unlock() }; return confirmed.count }
    var distinctCount: Int { lock.lock(); defer { lock.unlock() }; return seen.count }
    var duplicates: Int { lock.lock(); defer { lock.unlock() }; return seen.values.reduce(0) { $0 + $1 - 1 } }
    var missing: [String] { lock.lock(); defer { lock.unlock() }; return confirmed.filter { seen[$0] == nil }.sorted() }
}

extension QueueIntegrationTests {
    /// A topic that comes back with fewer partitions (its registry entry lost with a flushed
    /// Redis, then created again) must never get a keyless message placed on a partition it no
    /// longer has: such a produce was answered 200 and then never delivered to any consumer.
    func testKeylessProduceStaysInsideTheTopicsCurrentPartitions() throws {
        let c = try SharedQueueCluster.get()
        let topic = "rr-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client()
        // Keyless messages rotate over the partitions: stop where the next one would be 2...6.
        for i in 0..<8 {
            let r = try n1.post("/queue/produce", .object([("topic", .string(topic)), ("body", .int(Int64(i)))]))
            XCTAssertEqual(r.status, 200, r.text)
            if (1...5).contains(r.json?["partition"]?.int64Value ?? -1) { break }
        }
        // The registry entry goes (as with a flushed Redis); the node forgets it at its next refresh.
        _ = try c.redis.cli("HDEL", "concord:\(c.cluster):q:topics", topic)
        try waitUntil("n1 forgot the topic", seconds: 10) { try n1.get("/queue/status/\(topic)").status == 404 }
        let created = try n1.post("/queue/topic", .object([("topic", .string(topic)), ("partitions", .int(2))]))
        XCTAssertEqual(created.status, 200, created.text)
        let (first, none) = try n1.consume(topic, group: "g2")
        XCTAssertEqual(first.status, 200, first.text)
        XCTAssertEqual(none.count, 0)
        for i in 0..<4 {
            let r = try n1.post("/queue/produce", .object([("topic", .string(topic)), ("body", .int(Int64(10 + i)))]))
            XCTAssertEqual(r.status, 200, r.text)
            let p = r.json?["partition"]?.int64Value ?? -1
            XCTAssertTrue((0..<2).contains(p), "message placed on partition \(p) of a 2-partition topic")
        }
        let (_, got) = try n1.consume(topic, group: "g2", max: 10)
        XCTAssertEqual(got.map { $0.body }.sorted { ($0.int64Value ?? 0) < ($1.int64Value ?? 0) }, [.int(10), .int(11), .int(12), .int(13)])
    }
}

extension QueueIntegrationTests {
    /// Topics are bounded (every node tracks them all): beyond the bound a new topic is refused
    /// with 409 and nothing is stored; existing topics keep working.
    func testTopicsBeyondTheBoundAreRefusedWith409() throws {
        let c = try TestCluster(nodes: 1, environment: ["CONCORD_MAX_TOPICS": "2"])
        let n1 = c.nodes[0].client()
        XCTAssertEqual(try n1.post("/queue/topic", .object([("topic", .string("t1")), ("partitions", .int(2))])).status, 200)
        XCTAssertEqual(try n1.post("/queue/produce", .object([("topic", .string("t2")), ("body", .int(1))])).status, 200)
        let refused = try n1.post("/queue/produce", .object([("topic", .string("t3")), ("body", .int(1))]))
        XCTAssertEqual(refused.status, 409, refused.text)
        XCTAssertEqual(refused.json?["error"]?.stringValue, "conflict")
        XCTAssertEqual(refused.json?["max_topics"]?.int64Value, 2)
        XCTAssertEqual(try n1.post("/queue/topic", .object([("topic", .string("t3")), ("partitions", .int(2))])).status, 409)
        XCTAssertEqual(try n1.get("/queue/status/t3").status, 404, "nothing was created")
        XCTAssertEqual(try n1.post("/queue/produce", .object([("topic", .string("t1")), ("body", .int(2))])).status, 200)
        XCTAssertEqual(try n1.consume("t2", group: "g").0.status, 200)
    }

    /// `"ids": []` names no message: it redrives nothing (it used to empty the whole DLQ, as if
    /// `ids` had been left out).
    func testRedriveWithAnEmptyIdListRedrivesNothing() throws {
        let c = try SharedQueueCluster.get()
        let topic = "dlq0-\(UInt32.random(in: 0..<UInt32.max))"
        let n1 = c.node("n1").client()
        XCTAssertEqual(try n1.consume(topic, group: "w").0.status, 200)
        let produced = try n1.post("/queue/produce", .object([("topic", .string(topic)), ("id", .string("poison")), ("body", .int(1)), ("max_attempts", .int(1))]))
        XCTAssertEqual(produced.status, 200, produced.text)
        let (_, got) = try n1.consume(topic, group: "w")
        XCTAssertEqual(got.count, 1)
        let nacked = try n1.post("/queue/nack", .object([("topic", .string(topic)), ("group", .string("w")), ("receipt", .string(got.first?.receipt ?? "?"))]))
        XCTAssertEqual(nacked.status, 200, nacked.text)
        XCTAssertEqual(try n1.get("/queue/dlq/\(topic)?group=w").json?["messages"]?.arrayValue?.count, 1)

        let none = try n1.post("/queue/dlq/redrive", .object([("topic", .string(topic)), ("group", .string("w")), ("ids", .array([]))]))
        XCTAssertEqual(none.status, 200, none.text)
        XCTAssertEqual(none.json?["redriven"]?.int64Value, 0, none.text)
        XCTAssertEqual(try n1.get("/queue/dlq/\(topic)?group=w").json?["messages"]?.arrayValue?.count, 1, "the DLQ is untouched")
    }

    /// An empty topic at the end of a path is a name that is empty: 400 (was 404 "no such
    /// path"); a bad percent escape in the query string is 400 like one in the path.
    func testEmptyTopicInPathAndBadQueryEncodingAre400() throws {
        let c = try SharedQueueCluster.get()
        let n1 = c.node("n1").client()
        for path in ["/queue/status/", "/queue/dlq/", "/queue/dlq/?group=g&limit=5", "//queue//status//"] {
            let r = try n1.get(path)
            XCTAssertEqual(r.status, 400, "\(path): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "bad_request", path)
            XCTAssertTrue(r.json?["message"]?.stringValue?.contains("'topic' must not be empty") == true, "\(path): \(r.text)")
        }
        let topic = "q400-\(UInt32.random(in: 0..<UInt32.max))"
        XCTAssertEqual(try n1.post("/queue/topic", .object([("topic", .string(topic)), ("partitions", .int(2))])).status, 200)
        XCTAssertEqual(try n1.get("/queue/dlq/\(topic)?group=g&limit=5").status, 200)
        for (query, name) in [("group=%ZZ&limit=5", "group"), ("group=g&limit=%", "limit"), ("group=%ff", "group"), ("%zz=1&group=g", "%zz")] {
            let r = try n1.get("/queue/dlq/\(topic)?\(query)")
            XCTAssertEqual(r.status, 400, "\(query): \(r.text)")
            XCTAssertEqual(r.json?["error"]?.stringValue, "bad_request", query)
            XCTAssertEqual(r.json?["message"]?.stringValue, "query parameter '\(name)' is not valid percent-encoding", query)
        }
        XCTAssertEqual(try n1.get("/queue/dlq/\(topic)?group=a%20b&limit=5").status, 200)
        XCTAssertEqual(try n1.get("/health").status, 200)
    }

    /// `concord queue topic <topic> --partitions N`: POST /queue/topic; exit 1 with the error
    /// body on stderr for an HTTP error, 64 for a usage error.
    func testCLIQueueTopicCreatesATopic() throws {
        let c = try SharedQueueCluster.get()
        let topic = "cli-\(UInt32.random(in: 0..<UInt32.max))"
        let url = c.node("n2").url
        let (status, output) = try runConcord(["queue", "topic", topic, "--partitions", "3", "--url", url])
        XCTAssertEqual(status, 0, output)
        XCTAssertEqual(try JSONParser.parse(output), .object([("topic", .string(topic)), ("partitions", .int(3))]), output)
        XCTAssertEqual(try c.redis.cli("HGET", "concord:\(c.cluster):q:topics", topic), "3")
        XCTAssertEqual(try c.node("n1").client().get("/queue/status/\(topic)").json?["partitions"]?.arrayValue?.count, 3)

        let (conflict, conflictOutput) = try runConcord(["queue", "topic", topic, "--partitions", "5", "--url", url])
        XCTAssertEqual(conflict, 1, conflictOutput)
        XCTAssertTrue(conflictOutput.contains("HTTP 409") && conflictOutput.contains("\"conflict\""), conflictOutput)
        let (bad, badOutput) = try runConcord(["queue", "topic", topic, "--partitions", "0", "--url", url])
        XCTAssertEqual(bad, 1, badOutput)
        XCTAssertTrue(badOutput.contains("HTTP 400") && badOutput.contains("partitions"), badOutput)
        for args in [["queue", "topic", "--url", url], ["queue", "topic", topic, "--partitions", "x", "--url", url]] {
            let (usage, usageOutput) = try runConcord(args)
            XCTAssertEqual(usage, 64, "\(args): \(usageOutput)")
        }
        let (same, sameOutput) = try runConcord(["queue", "topic", topic, "--partitions", "3", "--url", url])
        XCTAssertEqual(same, 0, sameOutput)
    }
}
