import XCTest
@testable import Raft

/// Unit tests named after the rule of the Raft paper (Figure 2 / section) or thesis they check.
final class RaftPaperTests: XCTestCase {
    private func config(_ id: NodeID, _ voters: [NodeID] = ["n1", "n2", "n3"], preVote: Bool = false,
                        checkQuorum: Bool = false) -> RaftConfig {
        RaftConfig(id: id, voters: voters, electionTicks: 10, heartbeatTicks: 1, preVote: preVote, checkQuorum: checkQuorum)
    }

    private func timeOut(_ node: RaftNode) {
        for _ in 0..<20 where node.status.role == .follower { node.tick() }
    }

    // MARK: Elections (§5.2)

    /// Figure 2, Followers: "If election timeout elapses without receiving AppendEntries from
    /// current leader or granting vote to candidate: convert to candidate." Candidates:
    /// "increment currentTerm, vote for self, send RequestVote RPCs to all other servers".
    func testFollowerBecomesCandidateAfterElectionTimeout() {
        let node = RaftNode(config: config("n1"), restoring: nil, seed: 7)
        timeOut(node)
        XCTAssertEqual(node.status.role, .candidate)
        XCTAssertEqual(node.status.term, 1)
        XCTAssertEqual(node.status.votedFor, "n1")
        let rd = collect(node)
        XCTAssertEqual(rd.hardState, HardState(term: 1, vote: "n1", commit: 0), "vote persisted with the requests")
        XCTAssertEqual(Set(rd.messages.map(\.to)), ["n2", "n3"])
        XCTAssertTrue(rd.messages.allSatisfy { $0.type == .vote && $0.term == 1 })
    }

    /// §5.2: "election timeouts are chosen randomly from a fixed interval" — here [T, 2T).
    func testElectionTimeoutIsRandomizedInTTo2T() {
        var seen = Set<Int>()
        for seed in 0..<200 as Range<UInt64> {
            let node = RaftNode(config: config("n1"), restoring: nil, seed: seed)
            var ticks = 0
            while node.status.role == .follower && ticks < 100 { node.tick(); ticks += 1 }
            XCTAssert((10..<20).contains(ticks), "timeout \(ticks) outside [T, 2T)")
            seen.insert(ticks)
        }
        XCTAssertGreaterThan(seen.count, 5, "timeouts are not spread")
    }

    /// Figure 2, RequestVote receiver 2: grant only if votedFor is null or candidateId
    /// (Election Safety, §5.2: at most one vote per term).
    func testVoteGrantedAtMostOncePerTerm() {
        let node = RaftNode(config: config("n1"), restoring: nil, seed: 1)
        node.step(Message(from: "n2", to: "n1", term: 1, type: .vote))
        node.step(Message(from: "n3", to: "n1", term: 1, type: .vote))
        node.step(Message(from: "n2", to: "n1", term: 1, type: .vote)) // retry is fine
        let rd = collect(node)
        XCTAssertEqual(rd.hardState?.vote, "n2")
        XCTAssertEqual(rd.messages.map(\.reject), [false, true, false])
    }

    /// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the candidate".
    func testVoteDeniedToCandidateWithStaleLog() {
        let restored = PersistentState(hardState: HardState(term: 2),
                                       entries: [Entry(term: 1, index: 1), Entry(term: 2, index: 2)])
        let node = RaftNode(config: config("n1"), restoring: restored, seed: 1)
        // Lower last term: denied. Same last term, shorter log: denied. Higher last term: granted.
        node.step(Message(from: "n2", to: "n1", term: 3, type: .vote, logTerm: 1, index: 5))
        node.step(Message(from: "n3", to: "n1", term: 4, type: .vote, logTerm: 2, index: 1))
        node.step(Message(from: "n2", to: "n1", term: 5, type: .vote, logTerm: 3, index: 3))
        XCTAssertEqual(collect(node).messages.map(\.reject), [true, true, false])
    }

    /// Figure 2, RequestVote/AppendEntries receiver 1: "Reply false if term < currentTerm".
    func testRequestsFromStaleTermsRejected() {
        let node = RaftNode(config: config("n1", checkQuorum: true), restoring: PersistentState(hardState: HardState(term: 5)), seed: 1)
        node.step(Message(from: "n2", to: "n1", term: 4, type: .vote, logTerm: 9, index: 9))
        node.step(Message(from: "n2", to: "n1", term: 4, type: .append, entries: [Entry(term: 4, index: 1)]))
        let rd = collect(node)
        XCTAssertNil(rd.hardState)
        XCTAssertEqual(node.status.lastLogIndex, 0)
        // The stale leader is told the newer term so it steps down.
        XCTAssertEqual(rd.messages.map(\.term), [5])
    }

    /// Figure 2, All servers: "If RPC request or response contains term T > currentTerm: set
    /// currentTerm = T, convert to follower".
    func testHigherTermTurnsLeaderIntoFollower() {
        let cluster = TestCluster(size: 3) { $0.preVote = false }
        cluster.elect("n1")
        XCTAssertEqual(cluster.leader(), "n1")
        cluster["n1"].step(Message(from: "n2", to: "n1", term: 9, type: .appendResponse))
        XCTAssertEqual(cluster["n1"].status.role, .follower)
        XCTAssertEqual(cluster["n1"].status.term, 9)
    }

    /// Figure 2, Candidates: "If votes received from majority of servers: become leader";
    /// §8: the new leader appends a no-op entry of its term and commits it.
    func testMajorityVoteElectsLeaderWhichCommitsNoop() {
        let cluster = TestCluster(size: 5) { $0.preVote = false }
        cluster.elect("n3")
        XCTAssertEqual(cluster.leader(), "n3")
        cluster.deliverAll()
        // Followers learn the new commit index on the leader's next tick (noteCommitAdvanced).
        cluster.tickAll(1)
        for id in cluster.ids {
            XCTAssertEqual(cluster.applied[id]?.map(\.kind), [.noop], id)
            XCTAssertEqual(cluster[id].status.leader, "n3")
        }
    }

    /// Figure 2, Candidates: "If AppendEntries RPC received from new leader: convert to follower".
    func testCandidateStepsDownOnAppendFromLeaderOfSameTerm() {
        let node = RaftNode(config: config("n1"), restoring: nil, seed: 1)
        timeOut(node)
        XCTAssertEqual(node.status.role, .candidate)
        node.step(Message(from: "n2", to: "n1", term: 1, type: .heartbeat))
        XCTAssertEqual(node.status.role, .follower)
        XCTAssertEqual(node.status.leader, "n2")
    }

    // MARK: Log replication (§5.3)

    /// Figure 2, AppendEntries receiver 2: "Reply false if log doesn't contain an entry at
    /// prevLogIndex whose term matches prevLogTerm", with a conflict hint (§5.3, fast backup):
    /// the hint is the last index whose term is <= prevLogTerm.
    func testAppendRejectedOnPrevMismatchWithConflictHint() {
        let entries = [1, 1, 2, 2, 2].enumerated().map { Entry(term: UInt64($0.element), index: UInt64($0.offset + 1)) }
        let node = RaftNode(config: config("n1"), restoring: PersistentState(hardState: HardState(term: 3), entries: entries), seed: 1)
        node.step(Message(from: "n2", to: "n1", term: 3, type: .append, logTerm: 1, index: 4))
        let reply = collect(node).messages[0]
        XCTAssertTrue(reply.reject)
        XCTAssertEqual(reply.index, 4)
        XCTAssertEqual(reply.hintIndex, 2, "skips all of term 2 at once")
        XCTAssertEqual(reply.hintTerm, 1)
        // Beyond the end: hint is our last index.
        node.step(Message(from: "n2", to: "n1", term: 3, type: .append, logTerm: 3, index: 9))
        let beyond = collect(node).messages[0]
        XCTAssertEqual(beyond.hintIndex, 5)
    }

    /// Figure 2, AppendEntries receiver 3-4: "If an existing entry conflicts with a new one
    /// (same index but different terms), delete the existing entry and all that follow it";
    /// append any new entries. Entries already present are kept (a stale message must not truncate).
    func testConflictingSuffixReplacedAndStaleAppendKeepsLog() {
        let entries = [Entry(term: 1, index: 1), Entry(term: 1, index: 2), Entry(term: 1, index: 3)]
        let node = RaftNode(config: config("n1"), restoring: PersistentState(hardState: HardState(term: 2), entries: entries), seed: 1)
        node.step(Message(from: "n2", to: "n1", term: 2, type: .append, logTerm: 1, index: 1,
                          entries: [Entry(term: 2, index: 2)]))
        let rd = collect(node)
        XCTAssertEqual(rd.entries, [Entry(term: 2, index: 2)], "overwrite from index 2")
        XCTAssertEqual(node.status.lastLogIndex, 2)
        XCTAssertEqual(rd.messages[0].index, 2)
        // A duplicate of an older, shorter message changes nothing.
        node.step(Message(from: "n2", to: "n1", term: 2, type: .append, logTerm: 0, index: 0,
                          entries: [Entry(term: 1, index: 1)]))
        XCTAssertEqual(collect(node).entries, [])
        XCTAssertEqual(node.status.lastLogIndex, 2)
    }

    /// Figure 2, AppendEntries receiver 5: "If leaderCommit > commitIndex, set commitIndex =
    /// min(leaderCommit, index of last new entry)".
    func testFollowerCommitIsMinOfLeaderCommitAndLastNewEntry() {
        let node = RaftNode(config: config("n1"), restoring: nil, seed: 1)
        node.step(Message(from: "n2", to: "n1", term: 1, type: .append, logTerm: 0, index: 0,
                          entries: [Entry(term: 1, index: 1), Entry(term: 1, index: 2)], commit: 7))
        let rd = collect(node)
        XCTAssertEqual(rd.hardState?.commit, 2)
        XCTAssertEqual(rd.committedEntries.map(\.index), [1, 2])
    }

    /// §5.3 / Figure 2, Leaders: entries are replicated and, once stored on a majority,
    /// committed and applied everywhere, in order.
    func testProposalsCommittedOnAllNodesInOrder() {
        let cluster = TestCluster(size: 3)
        cluster.tickAll(30)
        guard let leader = cluster.leader() else { return XCTFail("no leader") }
        for value in 0..<50 { _ = cluster[leader].propose(bytes("v\(value)")) }
        cluster.deliverAll()
        cluster.tickAll(2)
        for id in cluster.ids {
            XCTAssertEqual(cluster.appliedData(id), (0..<50).map { bytes("v\($0)") }, id)
        }
    }

    /// Entries committed by a quorum's acknowledgements while the leader's own Ready is still
    /// outstanding (its write in flight) are handed out by `takeCommittedEntries`, count as
    /// applied at once (so compaction may cover them before that Ready is advanced), and are
    /// not handed out again by the next Ready.
    func testCommittedEntriesAreTakenWhileAReadyIsOutstanding() {
        let cluster = TestCluster(size: 3)
        cluster.tickAll(30)
        guard let id = cluster.leader() else { return XCTFail("no leader") }
        let leader = cluster[id]
        guard case .accepted(let index) = leader.propose(bytes("v")) else { return XCTFail("not accepted") }
        let rd = leader.ready()   // outstanding: not advanced below until the end
        XCTAssertEqual(rd.entries.last?.index, index)
        XCTAssertEqual(leader.takeCommittedEntries(), [], "nothing committed yet")
        // Both followers store and acknowledge; the leader steps the acknowledgements.
        for message in rd.messages where message.type == .append {
            cluster[message.to].step(message)
            for frd in cluster.drain(message.to) {
                for ack in frd.messages where ack.to == id { leader.step(ack) }
            }
        }
        cluster.queue.removeAll()
        let taken = leader.takeCommittedEntries()
        XCTAssertEqual(taken.last?.index, index)
        XCTAssertEqual(taken.last?.data, bytes("v"))
        XCTAssertEqual(leader.takeCommittedEntries(), [], "handed out once")
        leader.compact(upTo: index, snapshotData: bytes("state"))
        leader.advance(rd)
        let next = leader.ready()
        XCTAssertEqual(next.compactedSnapshot?.index, index, "compaction covers entries taken mid-Ready")
        XCTAssertFalse(next.committedEntries.contains { $0.index <= index }, "not handed out again")
        leader.advance(next)
    }

    /// §5.4.2 / Figure 8: "Raft never commits log entries from previous terms by counting
    /// replicas. Only log entries from the leader's current term are committed by counting."
    func testPreviousTermEntryNotCommittedByCounting() {
        for broken in [false, true] {
            let log = [Entry(term: 1, index: 1), Entry(term: 2, index: 2)]
            let node = RaftNode(config: config("n1"), restoring: PersistentState(hardState: HardState(term: 2, commit: 1), entries: log), seed: 1)
            node.faults = RaftFaults(commitPreviousTermByCounting: broken, skipNoopOnElection: true)
            timeOut(node)
            collect(node)
            node.step(Message(from: "n2", to: "n1", term: 3, type: .voteResponse))
            XCTAssertEqual(node.status.role, .leader)
            collect(node)
            // n2 now holds index 2 (term 2): a majority, but of an earlier term.
            node.step(Message(from: "n2", to: "n1", term: 3, type: .appendResponse, index: 2))
            collect(node)
            XCTAssertEqual(node.status.commitIndex, broken ? 2 : 1, broken ? "broken variant commits" : "must not commit")
        }
        // With the no-op (§8) the same replies commit everything once it is replicated.
        let log = [Entry(term: 1, index: 1), Entry(term: 2, index: 2)]
        let node = RaftNode(config: config("n1"), restoring: PersistentState(hardState: HardState(term: 2, commit: 1), entries: log), seed: 1)
        timeOut(node)
        collect(node)
        node.step(Message(from: "n2", to: "n1", term: 3, type: .voteResponse))
        collect(node)
        node.step(Message(from: "n2", to: "n1", term: 3, type: .appendResponse, index: 2))
        collect(node)
        XCTAssertEqual(node.status.commitIndex, 1)
        node.step(Message(from: "n2", to: "n1", term: 3, type: .appendResponse, index: 3))
        collect(node)
        XCTAssertEqual(node.status.commitIndex, 3)
    }

    /// DESIGN §3, "persist before you speak": the leader counts itself only for entries that
    /// a Ready has handed out and advance() acknowledged.
    func testLeaderCountsItselfOnlyAfterPersisting() {
        let node = RaftNode(config: config("n1", ["n1"]), restoring: nil, seed: 1)
        timeOut(node)
        XCTAssertEqual(node.status.role, .leader)
        XCTAssertEqual(node.status.commitIndex, 0, "no-op not yet durable")
        let rd = node.ready()
        XCTAssertEqual(rd.entries.count, 1)
        XCTAssertEqual(node.status.commitIndex, 0)
        node.advance(rd)
        XCTAssertEqual(node.status.commitIndex, 1)
    }

    /// Flow control (issue 3): bounded entries per message and messages in flight per follower.
    func testEntriesPerMessageAndInflightMessagesAreBounded() {
        let cluster = TestCluster(size: 3) {
            $0.maxEntriesPerMessage = 3
            $0.maxInflightMessages = 2
            $0.preVote = false
        }
        cluster.elect("n1")
        cluster.deliverAll()
        cluster.isolated = ["n2", "n3"] // replies never come back
        cluster.sent = []
        for value in 0..<40 { _ = cluster["n1"].propose([UInt8(value)]) }
        cluster.drain("n1")
        let appends = cluster.sent.filter { $0.type == .append && $0.to == "n2" }
        XCTAssertEqual(appends.count, 2, "at most maxInflightMessages in flight")
        XCTAssertTrue(appends.allSatisfy { $0.entries.count <= 3 })
    }

    // MARK: PreVote, CheckQuorum, leases

    /// Thesis §9.6 PreVote: a node rejoining from a partition does not raise its term and so
    /// does not depose a healthy leader.
    func testPreVotePreventsDisruptionByRejoiningNode() {
        let cluster = TestCluster(size: 3) { $0.preVote = true; $0.checkQuorum = true }
        cluster.elect("n1")
        cluster.deliverAll()
        let term = cluster["n1"].status.term
        cluster.isolated = ["n3"]
        for _ in 0..<100 {
            cluster.tickAll()
        }
        XCTAssertEqual(cluster["n3"].status.term, term, "pre-candidate never raised its term")
        cluster.isolated = []
        cluster.tickAll(30)
        XCTAssertEqual(cluster.leader(), "n1")
        XCTAssertEqual(cluster["n1"].status.term, term)
    }

    /// Thesis §6.2 CheckQuorum: "a leader steps down if an election timeout elapses without a
    /// successful round of heartbeats to a majority of its cluster".
    func testCheckQuorumLeaderStepsDownWithoutMajority() {
        let cluster = TestCluster(size: 3) { $0.checkQuorum = true }
        cluster.elect("n1")
        cluster.deliverAll()
        cluster.isolated = ["n1"]
        for _ in 0..<25 { cluster.tick("n1") }
        XCTAssertEqual(cluster["n1"].status.role, .follower)
    }

    /// Thesis §4.2.3: a server that heard from a current leader within the minimum election
    /// timeout ignores RequestVote (it neither updates its term nor grants its vote).
    func testLeaseIgnoresVoteRequestsWhileLeaderIsHeard() {
        let cluster = TestCluster(size: 3) { $0.checkQuorum = true; $0.preVote = false }
        cluster.elect("n1")
        cluster.deliverAll()
        let term = cluster["n2"].status.term
        cluster["n2"].step(Message(from: "n3", to: "n2", term: term + 1, type: .vote, logTerm: 99, index: 99))
        XCTAssertEqual(cluster["n2"].status.term, term)
        XCTAssertTrue(cluster.drain("n2").flatMap(\.messages).isEmpty)
    }

    // MARK: Restart, snapshots

    /// Figure 2 "Persistent state on all servers (updated on stable storage before responding
    /// to RPCs)": a node rebuilt from exactly what Ready said to persist is the same node.
    func testRestartFromPersistedStateGivesTheSameNode() {
        let cluster = TestCluster(size: 3)
        cluster.tickAll(30)
        guard let leader = cluster.leader() else { return XCTFail("no leader") }
        for value in 0..<10 { _ = cluster[leader].propose([UInt8(value)]) }
        cluster.deliverAll()
        cluster.tickAll(1)
        let follower = cluster.ids.first { $0 != leader }!
        let before = cluster[follower].status
        cluster.crash(follower)
        cluster.restart(follower)
        let after = cluster[follower].status
        XCTAssertEqual(after.term, before.term)
        XCTAssertEqual(after.votedFor, before.votedFor)
        XCTAssertEqual(after.lastLogIndex, before.lastLogIndex)
        XCTAssertEqual(after.lastLogTerm, before.lastLogTerm)
        XCTAssertEqual(after.commitIndex, before.commitIndex)
        // Committed entries are applied again from the start.
        cluster.drain(follower)
        XCTAssertEqual(cluster.appliedData(follower).count, 10)
        // And the cluster keeps going.
        _ = cluster[leader].propose(bytes("after"))
        cluster.tickAll(3)
        XCTAssertEqual(cluster.appliedData(follower).last, bytes("after"))
    }

    /// A commit that needs no new AppendEntries is told to followers on the leader's next tick,
    /// not by an empty AppendEntries per commit (noteCommitAdvanced); one carrying entries
    /// carries the commit index with it.
    func testCommitIndexReachesFollowersOnTheNextTickOrWithTheNextEntries() {
        let cluster = TestCluster(size: 3)
        cluster.tickAll(30)
        guard let leader = cluster.leader() else { return XCTFail("no leader") }
        let followers = cluster.ids.filter { $0 != leader }
        _ = cluster[leader].propose(bytes("a"))
        cluster.deliverAll()
        let committed = cluster[leader].status.commitIndex
        XCTAssertEqual(cluster.appliedData(leader).last, bytes("a"))
        for f in followers {
            XCTAssertLessThan(cluster[f].status.commitIndex, committed, "no empty append per commit")
        }
        // The next proposal's AppendEntries carries the commit index of the first.
        _ = cluster[leader].propose(bytes("b"))
        cluster.drain(leader)
        let appends = cluster.queue.filter { $0.type == .append }
        XCTAssertEqual(appends.count, 2)
        for m in appends { XCTAssertEqual(m.commit, committed); XCTAssertEqual(m.entries.map(\.data), [bytes("b")]) }
        cluster.deliverAll()
        // Without further proposals, one tick tells everyone.
        cluster.tick(leader)
        cluster.deliverAll()
        for f in followers {
            XCTAssertEqual(cluster[f].status.commitIndex, cluster[leader].status.commitIndex, f)
            XCTAssertEqual(cluster.appliedData(f).suffix(2), [bytes("a"), bytes("b")], f)
        }
    }

    /// Figure 13 / §7: a follower whose next entries were compacted away gets an
    /// InstallSnapshot, in chunks of at most snapshotChunkBytes, then entries again.
    func testLaggingFollowerCatchesUpBySnapshotInBoundedChunks() {
        let cluster = TestCluster(size: 3) { $0.snapshotChunkBytes = 5 }
        cluster.tickAll(30)
        guard let leader = cluster.leader() else { return XCTFail("no leader") }
        let lagging = cluster.ids.first { $0 != leader }!
        cluster.isolated = [lagging]
        for value in 0..<20 { _ = cluster[leader].propose([UInt8(value)]) }
        cluster.deliverAll()
        let applied = cluster[leader].status.appliedIndex
        let snapshotData = bytes("the application state, 33 bytes!!")
        cluster[leader].compact(upTo: applied, snapshotData: snapshotData)
        let rd = cluster.drain(leader)
        XCTAssertEqual(rd.first?.compactedSnapshot?.index, applied)
        XCTAssertEqual(cluster[leader].status.snapshotIndex, applied)
        cluster.isolated = []
        cluster.sent = []
        cluster.tickAll(20)
        let chunks = cluster.sent.filter { $0.type == .snapshot }
        XCTAssertGreaterThanOrEqual(chunks.count, 7)
        XCTAssertTrue(chunks.allSatisfy { ($0.snapshot?.data.count ?? 99) <= 5 })
        XCTAssertEqual(cluster.storage[lagging]?.snapshot?.data, snapshotData)
        XCTAssertEqual(cluster[lagging].status.commitIndex, cluster[leader].status.commitIndex)
        _ = cluster[leader].propose(bytes("after"))
        cluster.tickAll(3)
        XCTAssertEqual(cluster.appliedData(lagging).last, bytes("after"))
    }

    // MARK: ReadIndex (thesis §6.4), leadership transfer (thesis §3.10)

    /// Thesis §6.4: the leader records its commit index, confirms leadership with a round of
    /// heartbeats to a majority, then the read may be served at that index.
    func testReadIndexNeedsHeartbeatQuorum() {
        let cluster = TestCluster(size: 3)
        cluster.tickAll(30)
        guard let leader = cluster.leader() else { return XCTFail("no leader") }
        let follower = cluster.ids.first { $0 != leader }!
        XCTAssertFalse(cluster[follower].readIndex(context: 1), "followers cannot serve ReadIndex")
        cluster.isolated = Set(cluster.ids.filter { $0 != leader })
        XCTAssertTrue(cluster[leader].readIndex(context: 42))
        cluster.deliverAll()
        XCTAssertEqual(cluster.readStates[leader] ?? [], [], "no quorum, no read")
        cluster.isolated = []
        cluster.tickAll(2)
        XCTAssertEqual(cluster.readStates[leader]?.map(\.context), [42])
        XCTAssertEqual(cluster.readStates[leader]?.first?.index, cluster[leader].status.commitIndex)
    }

    /// Thesis §6.4 step 1: a new leader serves reads only after committing an entry of its term.
    func testReadIndexWaitsForCommitInCurrentTerm() {
        let node = RaftNode(config: config("n1"), restoring: nil, seed: 1)
        timeOut(node)
        collect(node)
        node.step(Message(from: "n2", to: "n1", term: 1, type: .voteResponse))
        collect(node)
        XCTAssertTrue(node.readIndex(context: 5))
        node.step(Message(from: "n2", to: "n1", term: 1, type: .heartbeatResponse, context: 5))
        XCTAssertEqual(collect(node).readStates, [], "no-op not committed yet")
        node.step(Message(from: "n2", to: "n1", term: 1, type: .appendResponse, index: 1))
        let rd = collect(node)
        let heartbeat = rd.messages.first { $0.type == .heartbeat && $0.context == 5 }
        XCTAssertNotNil(heartbeat)
        node.step(Message(from: "n2", to: "n1", term: 1, type: .heartbeatResponse, context: 5))
        XCTAssertEqual(collect(node).readStates, [ReadState(context: 5, index: 1)])
    }

    /// Thesis §3.10: the leader stops accepting requests, brings the target up to date, sends
    /// TimeoutNow; the target starts an election at once (past any lease) and wins.
    func testLeadershipTransferWithTimeoutNow() {
        let cluster = TestCluster(size: 3) { $0.checkQuorum = true; $0.preVote = true }
        cluster.elect("n1")
        cluster.deliverAll()
        cluster.isolated = ["n3"]
        for value in 0..<5 { _ = cluster["n1"].propose([UInt8(value)]) }
        cluster.deliverAll()
        cluster.isolated = []
        cluster["n1"].transferLeadership(to: "n3")
        XCTAssertEqual(cluster["n1"].propose([9]), .dropped, "proposals refused during transfer")
        cluster.deliverAll()
        XCTAssertEqual(cluster.leader(), "n3")
        XCTAssertTrue(cluster.sent.contains { $0.type == .timeoutNow && $0.to == "n3" })
        cluster.tickAll(2)
        XCTAssertEqual(cluster["n1"].status.leader, "n3")
        XCTAssertEqual(cluster.appliedData("n3").count, 5)
    }

    /// transferLeadership(to: nil) picks the most up-to-date follower.
    func testTransferToNilPicksMostUpToDateFollower() {
        let cluster = TestCluster(size: 3) { $0.preVote = false }
        cluster.elect("n1")
        cluster.deliverAll()
        cluster.isolated = ["n2"]
        _ = cluster["n1"].propose([1])
        cluster.deliverAll()
        cluster.isolated = []
        cluster["n1"].transferLeadership(to: nil)
        XCTAssertEqual(cluster["n1"].status.transferringTo, "n3")
    }

    /// Backpressure: the leader refuses proposals beyond maxUncommittedEntries.
    func testProposalsDroppedBeyondUncommittedBound() {
        let cluster = TestCluster(size: 3) { $0.maxUncommittedEntries = 5; $0.preVote = false }
        cluster.elect("n1")
        cluster.deliverAll()
        cluster.isolated = ["n2", "n3"]
        var results: [ProposeResult] = []
        for value in 0..<7 { results.append(cluster["n1"].propose([UInt8(value)])) }
        XCTAssertEqual(results.filter { $0 == .dropped }.count, 2)
        XCTAssertEqual(cluster["n2"].propose([1]), .notLeader(leader: "n1"))
    }

    func testRoleExternalNames() {
        XCTAssertEqual(Role.preCandidate.externalName, "candidate")
        XCTAssertEqual(Role.leader.externalName, "leader")
        XCTAssertEqual(Role.follower.rawValue, "follower")
    }

    func testThroughputSimulationCommitsEverything() {
        let result = runThroughputSimulation(entries: 2_000, batch: 100)
        XCTAssertEqual(result.committed, 2_000)
        XCTAssertLessThan(result.ticks, 100)
    }
}
