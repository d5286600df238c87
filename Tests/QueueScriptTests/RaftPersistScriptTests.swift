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
                       expectStored: Bool = true, compactTo: Int? = nil) throws -> RESP {
        var args = [compactTo == nil ? "none" : "compact", String(compactTo ?? 0), "1", "state", "1", String(term), "", "0",
                    String(entries.first?.0 ?? 0), String(entries.count), expectStored ? "1" : "0", follows, String(seq)]
        for (_, entry) in entries { args.append(entry) }
        for (channel, message) in publish { args += [channel, message] }
        return try scripts.eval(client, "raft_persist-3.lua", keys: keys, args: args)
    }

    func testAWriteWhosePredecessorWasNotStoredStoresAndPublishesNothing() throws {
        let subscriber = try server.client()
        _ = try subscriber.command(["SUBSCRIBE", "peer"])

        // "none": no write may be stored yet.
        XCTAssertEqual(try write(follows: "none", seq: 1, entries: [(1, "a")], publish: [("peer", "ack-1")], expectStored: false).int, 1)
        XCTAssertEqual(try subscriber.readReply().array?.last?.string, "ack-1")
        XCTAssertEqual(try write(follows: "1", seq: 2, entries: [(2, "b")]).int, 2)

        // Write 4 says it follows write 3, which never ran (it failed): refused whole.
        let refused = try write(follows: "3", seq: 4, entries: [(3, "c")], publish: [("peer", "ack-3")])
        XCTAssertTrue(refused.errorMessage?.hasPrefix("SEQ") ?? false, "\(refused)")
        XCTAssertEqual(try client.command(["LLEN", keys[1]]).int, 2, "no entry stored")
        XCTAssertEqual(try client.command(["HGET", keys[0], "wseq"]).string, "2")
        // Nothing was published: the next thing the subscriber hears is its own PING.
        try subscriber.send([["PING"]])
        XCTAssertEqual(try subscriber.readReply().array?.first?.string, "pong")

        // The write that does follow the stored one runs, publishes, and moves wseq on.
        XCTAssertEqual(try write(follows: "2", seq: 3, entries: [(3, "c")], publish: [("peer", "ack-3")]).int, 3)
        XCTAssertEqual(try subscriber.readReply().array?.last?.string, "ack-3")
        XCTAssertEqual(try client.command(["HGET", keys[0], "wseq"]).string, "3")

        // A write that expects nothing stored runs only while nothing is.
        XCTAssertTrue(try write(follows: "none", seq: 8, entries: [(4, "d")]).errorMessage?.hasPrefix("SEQ") ?? false)
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

    private func log() throws -> [String] {
        (try client.command(["LRANGE", keys[1], "0", "-1"]).array ?? []).compactMap(\.string)
    }

    /// The log is a list from the entry after the snapshot: a conflicting suffix is replaced,
    /// compaction drops the head, and entries that would leave a gap are refused whole.
    func testConflictsCompactionAndGaps() throws {
        XCTAssertEqual(try write(follows: "", seq: 1, entries: [(1, "a"), (2, "b"), (3, "c")], expectStored: false).int, 3)
        // A new leader's entry 2 replaces 2 and 3.
        XCTAssertEqual(try write(follows: "1", seq: 2, term: 2, entries: [(2, "B")]).int, 2)
        XCTAssertEqual(try log(), ["a", "B"])
        XCTAssertEqual(try write(follows: "2", seq: 3, term: 2, entries: [(3, "C"), (4, "D")]).int, 4)
        // Compact through 2 (snapshot index 2), with entry 5 in the same write.
        XCTAssertEqual(try write(follows: "3", seq: 4, term: 2, entries: [(5, "E")], compactTo: 2).int, 3)
        XCTAssertEqual(try log(), ["C", "D", "E"])
        XCTAssertEqual(try client.command(["HGET", keys[2], "index"]).string, "2")
        // Entry 7 would leave 6 missing; entry 2 lies under the snapshot: refused, nothing written.
        for bad in [7, 2] {
            let reply = try write(follows: "4", seq: 5, term: 2, entries: [(bad, "X")])
            XCTAssertTrue(reply.errorMessage?.hasPrefix("GAP") ?? false, "\(bad): \(reply)")
        }
        XCTAssertEqual(try log(), ["C", "D", "E"])
        XCTAssertEqual(try client.command(["HGET", keys[0], "wseq"]).string, "4")
        // Entry 3 (right after the snapshot) replaces the whole list.
        XCTAssertEqual(try write(follows: "4", seq: 5, term: 3, entries: [(3, "c3")]).int, 1)
        XCTAssertEqual(try log(), ["c3"])
    }
}
