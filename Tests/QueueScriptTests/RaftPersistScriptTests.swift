// lua/raft_persist-3.lua against a real redis-server (it lives beside the queue scripts' tests
// for their harness): a node pipelines its Raft writes, so a write whose predecessor was not
// stored must store nothing and publish nothing.
import Foundation
import XCTest

final class RaftPersistScriptTests: XCTestCase {
    private var server: RedisServer!
    private var client: RESPClient!
    private var scripts: Scripts!
    private let keys = ["concord:t:raft:{n1}:hard", "concord:t:raft:{n1}:log", "concord:t:raft:{n1}:snapshot"]

    override func setUpWithError() throws {
        server = try RedisServer()
        client = try server.client()
        scripts = Scripts()
    }

    override func tearDown() {
        client = nil
        server?.stop()
        server = nil
    }

    /// ARGV as the driver lays it out (see the script's header).
    private func write(follows: String, seq: Int, term: Int = 1, entries: [(Int, String)], publish: [(String, String)] = [],
                       expectStored: Bool = true) throws -> RESP {
        var args = ["none", "0", "0", "", "1", String(term), "", "0",
                    String(entries.first?.0 ?? 0), String(entries.count), expectStored ? "1" : "0", follows, String(seq)]
        for (index, entry) in entries { args += [String(index), entry] }
        for (channel, message) in publish { args += [channel, message] }
        return try scripts.eval(client, "raft_persist-3.lua", keys: keys, args: args)
    }

    func testAWriteWhosePredecessorWasNotStoredStoresAndPublishesNothing() throws {
        let subscriber = try server.client()
        _ = try subscriber.command(["SUBSCRIBE", "peer"])

        XCTAssertEqual(try write(follows: "", seq: 1, entries: [(1, "a")], publish: [("peer", "ack-1")], expectStored: false).int, 1)
        XCTAssertEqual(try subscriber.readReply().array?.last?.string, "ack-1")
        XCTAssertEqual(try write(follows: "1", seq: 2, entries: [(2, "b")]).int, 2)

        // Write 4 says it follows write 3, which never ran (it failed): refused whole.
        let refused = try write(follows: "3", seq: 4, entries: [(3, "c")], publish: [("peer", "ack-3")])
        XCTAssertTrue(refused.errorMessage?.hasPrefix("SEQ") ?? false, "\(refused)")
        XCTAssertEqual(try client.command(["ZCARD", keys[1]]).int, 2, "no entry stored")
        XCTAssertEqual(try client.command(["HGET", keys[0], "wseq"]).string, "2")
        // Nothing was published: the next thing the subscriber hears is its own PING.
        try subscriber.send([["PING"]])
        XCTAssertEqual(try subscriber.readReply().array?.first?.string, "pong")

        // The write that does follow the stored one runs, publishes, and moves wseq on.
        XCTAssertEqual(try write(follows: "2", seq: 3, entries: [(3, "c")], publish: [("peer", "ack-3")]).int, 3)
        XCTAssertEqual(try subscriber.readReply().array?.last?.string, "ack-3")
        XCTAssertEqual(try client.command(["HGET", keys[0], "wseq"]).string, "3")

        // No predecessor named (a write-back after loading): no check.
        XCTAssertEqual(try write(follows: "", seq: 9, entries: [(4, "d")]).int, 4)
        XCTAssertEqual(try client.command(["HGET", keys[0], "wseq"]).string, "9")
    }

    func testHardStateLostIsReportedBeforeTheSequence() throws {
        XCTAssertEqual(try write(follows: "", seq: 1, entries: [(1, "a")], expectStored: false).int, 1)
        _ = try client.command(["FLUSHALL"])
        let reply = try write(follows: "1", seq: 2, entries: [(2, "b")])
        XCTAssertTrue(reply.errorMessage?.hasPrefix("LOST") ?? false, "\(reply)")
        XCTAssertEqual(try client.command(["EXISTS", keys[1]]).int, 0, "nothing written")
    }
}
