// Deterministic cluster simulation (VOPR / FoundationDB style): a seeded network that drops,
// delays, duplicates and reorders; partitions and heals; crashes and restarts nodes from what
// their Readies said to persist; runs clocks at different rates; proposes throughout; and
// checks Raft's safety properties after every step. Then a liveness phase: faults stop, a
// leader must be elected and a new entry applied on every node within a bound.
//
// Pure code: the same seed gives the same run, on any machine.

public struct SimulationOptions: Sendable {
    public var nodeCount: Int = 3
    /// Global steps with faults enabled.
    public var faultSteps: Int = 800
    /// Bound (global steps) for the liveness phase: elect + commit everywhere.
    public var livenessSteps: Int = 600
    public var electionTicks: Int = 10
    public var heartbeatTicks: Int = 2
    public var maxDelaySteps: Int = 4
    /// Nodes' clocks run at a rate drawn from [1000 - skew, 1000 + skew] per mille.
    public var clockSkewPerMille: Int = 300
    /// Compact a node's log once it has applied this many entries past its snapshot.
    public var compactEvery: UInt64 = 24
    public var faults = RaftFaults()
    /// Chunk size small enough that snapshots go out in several chunks.
    public var snapshotChunkBytes: Int = 8
    public var preVote = true
    public var maxEntriesPerMessage = 4
    public var checkQuorum = true
    /// Per-step chances (per mille) of client proposals, crashes and partitions.
    public var proposalPerMille = 300
    public var crashPerMille = 8
    /// Per Ready during the faults: crash after ready() with nothing persisted, or after
    /// persisting but before sending (a crash in the middle of handling a Ready).
    public var crashMidReadyPerMille = 2
    public var partitionPerMille = 15
    /// Per Ready: before `advance`, deliver the messages due to this node and apply what that
    /// commits (`takeCommittedEntries`), as the runtime does while a Ready's write is in flight.
    public var midReadyDeliveryPerMille = 150
    /// Pipelined writes, as the runtime does them: up to `maxPipelinedReadies` Readies handed
    /// out and not yet written. Each time a node is drained its oldest outstanding write
    /// completes with `writeNowPerMille`; the rest complete in later steps (one step's chance:
    /// `writeLaterPerMille`), so ticks, proposals and messages arrive while writes are in flight.
    public var maxPipelinedReadies = 4
    public var writeNowPerMille = 600
    public var writeLaterPerMille = 500
    /// Per step and node with writes in flight, during the faults: one write fails, as a Redis
    /// error or a dropped connection does. The writes before it were stored, none after it
    /// (the runtime's `wseq` check), and the node rebuilds from storage at once.
    public var writeFailurePerMille = 3
    /// A deliberately broken driver for `BrokenVariantTests`: send a Ready's messages when it
    /// is handed out, before it (and the writes before it) are stored.
    public var brokenSendBeforeWrite = false

    public init() {}

    /// The mix used by the test suite: odd seeds run 5 nodes, even seeds 3.
    public static func standard(seed: UInt64) -> SimulationOptions {
        var options = SimulationOptions()
        options.nodeCount = seed % 2 == 0 ? 3 : 5
        return options
    }
}

public struct SimulationReport: Sendable {
    public var seed: UInt64
    public var nodeCount: Int
    /// Nil if every check passed.
    public var violation: String?
    /// Global steps run, and node ticks run (sum over nodes).
    public var steps: Int = 0
    public var nodeTicks: Int = 0
    /// Steps from the end of the faults until every live node follows one leader.
    public var stepsToElectAfterFaults: Int?
    /// Steps from the end of the faults until the probe entry was applied everywhere.
    public var stepsToCommitAfterFaults: Int?
    public var committedEntries: Int = 0
    public var elections: Int = 0
    public var snapshotsInstalled: Int = 0
    /// Readies during which messages were stepped and the entries they committed applied.
    public var midReadyApplies: Int = 0
    /// Readies handed out while an earlier one was still unwritten.
    public var pipelinedReadies: Int = 0
    /// Writes failed mid-pipeline (the node rebuilt from what was stored).
    public var failedWrites: Int = 0
    public var readsServed: Int = 0
}

private struct SimViolation: Error {
    var text: String
}

/// What the simulated disk holds for one node: exactly what Readies asked to persist.
private struct SimStorage {
    var hardState = HardState()
    var snapshot: Snapshot?
    var entries: [Entry] = []

    var firstIndex: UInt64 { (snapshot?.index ?? 0) + 1 }
    var lastIndex: UInt64 { (snapshot?.index ?? 0) + UInt64(entries.count) }

    func term(at index: UInt64) -> UInt64? {
        let base = snapshot?.index ?? 0
        if index == base { return snapshot?.term ?? 0 }
        if index < base || index > lastIndex { return nil }
        return entries[Int(index - base - 1)].term
    }

    var persistent: PersistentState {
        PersistentState(hardState: hardState, snapshot: snapshot, entries: entries)
    }
}

/// The replicated application: a hash chain over applied entries.
private struct SimStateMachine {
    var appliedIndex: UInt64 = 0
    var chain: UInt64 = 0

    var snapshotData: [UInt8] {
        var out: [UInt8] = []
        Wire.putVarint(appliedIndex, &out)
        Wire.putVarint(chain, &out)
        return out
    }

    init() {}

    init(snapshotData data: [UInt8]) throws {
        var reader = Wire.Reader(buffer: data)
        appliedIndex = try reader.varint()
        chain = try reader.varint()
    }
}

private struct SimNode {
    let id: NodeID
    var raft: RaftNode?
    var storage = SimStorage()
    var machine = SimStateMachine()
    var clockRatePerMille: Int
    var clockAccumulator = 0
    var restarts = 0
    /// Readies handed out and not yet written, oldest first (writes in flight).
    var pending: [Ready] = []
}

private struct InFlight {
    var deliverAt: Int
    var order: UInt64
    var message: Message
}

public final class Simulation {
    public let seed: UInt64
    public let options: SimulationOptions
    private var random: SplitMix64
    private var nodes: [SimNode] = []
    private var indexOf: [NodeID: Int] = [:]
    private var network: [InFlight] = []
    private var partitionLabel: [Int]
    private var dropPerMille = 0
    private var duplicatePerMille = 0
    private var maxDelay = 1
    private var now = 0
    private var faultsActive = false
    private var report: SimulationReport

    // Global knowledge for the checkers.
    private var leaderOfTerm: [UInt64: NodeID] = [:]
    /// Log Matching: (index, term) -> (hash of entry, term of the previous entry).
    private var entryRecord: [UInt64: [UInt64: (hash: UInt64, previousTerm: UInt64)]] = [:]
    /// State Machine Safety: the one applied sequence (index i at position i-1).
    private var appliedTerm: [UInt64] = []
    private var appliedChain: [UInt64] = []
    /// Every index some node persisted as committed: the entry's term, and the term of the
    /// node that first persisted it as committed (the leader that committed it, which always
    /// persists before it speaks), non-decreasing along the log.
    private var committedEntryTerm: [UInt64] = []
    private var committedDuringTerm: [UInt64] = []
    private var proposalCounter: UInt64 = 0
    private var readCounter: UInt64 = 0
    /// ReadIndex: context -> highest commit index known anywhere when the read was asked.
    private var readFloor: [UInt64: UInt64] = [:]

    public init(seed: UInt64, options: SimulationOptions) {
        self.seed = seed
        self.options = options
        self.random = SplitMix64(seed: seed)
        self.partitionLabel = Array(repeating: 0, count: options.nodeCount)
        self.report = SimulationReport(seed: seed, nodeCount: options.nodeCount)
        let ids = (1...options.nodeCount).map { "n\($0)" }
        for (position, id) in ids.enumerated() {
            indexOf[id] = position
            let rate = 1000 - options.clockSkewPerMille + random.below(2 * options.clockSkewPerMille + 1)
            var node = SimNode(id: id, clockRatePerMille: rate)
            node.raft = makeRaft(id: id, restoring: nil, restarts: 0)
            nodes.append(node)
        }
    }

    private func makeRaft(id: NodeID, restoring: PersistentState?, restarts: Int) -> RaftNode {
        let config = RaftConfig(id: id, voters: (1...options.nodeCount).map { "n\($0)" },
                                electionTicks: options.electionTicks, heartbeatTicks: options.heartbeatTicks,
                                maxEntriesPerMessage: options.maxEntriesPerMessage, maxBytesPerMessage: 64, maxInflightMessages: 3,
                                preVote: options.preVote, checkQuorum: options.checkQuorum,
                                snapshotChunkBytes: options.snapshotChunkBytes, maxUncommittedEntries: 64)
        let raft = RaftNode(config: config, restoring: restoring, seed: seed &+ UInt64(restarts) &* 7919)
        raft.faults = options.faults
        return raft
    }

    /// Runs the whole scenario. Never traps on a Raft bug it can detect: returns the violation.
    public func run() -> SimulationReport {
        do {
            try runFaultPhase()
            try runLivenessPhase()
        } catch let violation as SimViolation {
            report.violation = "step \(now): \(violation.text)"
        } catch {
            report.violation = "step \(now): \(error)"
        }
        report.steps = now
        report.committedEntries = appliedTerm.count
        return report
    }

    // MARK: - Phases

    private func runFaultPhase() throws {
        faultsActive = true
        defer { faultsActive = false }
        for _ in 0..<options.faultSteps {
            try injectFaults()
            try clientActivity()
            try step()
        }
    }

    private func runLivenessPhase() throws {
        // Faults stop: heal, restart everyone, clean network (clock skew stays).
        for position in nodes.indices { partitionLabel[position] = 0 }
        dropPerMille = 0
        duplicatePerMille = 0
        maxDelay = 1
        for position in nodes.indices where nodes[position].raft == nil { try restart(position) }
        let start = now
        var probeIndex: (index: UInt64, term: UInt64)?
        var probeData: [UInt8] = []
        for _ in 0..<options.livenessSteps {
            try step()
            if report.stepsToElectAfterFaults == nil, let leader = stableLeader() {
                report.stepsToElectAfterFaults = now - start
                _ = leader
            }
            if report.stepsToElectAfterFaults != nil {
                if probeIndex == nil || (probeIndex.map { !probeStillPossible($0) } ?? false) {
                    if let leader = stableLeader(), let raft = nodes[leader].raft {
                        proposalCounter += 1
                        probeData = Array("probe-\(proposalCounter)".utf8)
                        if case let .accepted(index) = raft.propose(probeData) {
                            probeIndex = (index, raft.term)
                            try drain(leader)
                        }
                    }
                }
                if let probe = probeIndex, nodes.allSatisfy({ probeApplied(on: $0, probe) }) {
                    report.stepsToCommitAfterFaults = now - start
                    return
                }
            }
        }
        var detail: [String] = []
        for node in nodes {
            if let raft = node.raft {
                detail.append("\(node.id): \(raft.role) term \(raft.term) leader \(raft.leader ?? "-") commit \(raft.log.committed) last \(raft.log.lastIndex) applied \(node.machine.appliedIndex)")
            }
        }
        throw SimViolation(text: "liveness: no leader elected and probe entry applied on every node within \(options.livenessSteps) steps after faults stopped (elected: \(report.stepsToElectAfterFaults.map(String.init) ?? "no"), probe: \(probeIndex.map { "\($0.index)@\($0.term)" } ?? "none")); \(detail.joined(separator: "; "))")
    }

    private func probeStillPossible(_ probe: (index: UInt64, term: UInt64)) -> Bool {
        // The probe is lost if some node applied a different entry at its index, or the
        // current leader no longer holds it (a new leader overwrote it).
        if probe.index <= UInt64(appliedTerm.count) { return appliedTerm[Int(probe.index - 1)] == probe.term }
        guard let leader = stableLeader(), let raft = nodes[leader].raft else { return true }
        return raft.log.term(at: probe.index) == probe.term
    }

    private func probeApplied(on node: SimNode, _ probe: (index: UInt64, term: UInt64)) -> Bool {
        node.machine.appliedIndex >= probe.index && probe.index <= UInt64(appliedTerm.count)
            && appliedTerm[Int(probe.index - 1)] == probe.term
    }

    /// A leader of the highest term that every live node follows.
    private func stableLeader() -> Int? {
        var leaderPosition: Int?
        for (position, node) in nodes.enumerated() {
            guard let raft = node.raft else { continue }
            if raft.role == .leader { leaderPosition = position }
        }
        guard let position = leaderPosition, let leaderRaft = nodes[position].raft else { return nil }
        for node in nodes {
            guard let raft = node.raft else { continue }
            if raft.term != leaderRaft.term || raft.leader != leaderRaft.id { return nil }
        }
        return position
    }

    // MARK: - One step

    private func step() throws {
        now += 1
        for position in nodes.indices { try completeWrites(position) }
        // Clocks at different rates.
        for position in nodes.indices {
            guard nodes[position].raft != nil else { continue }
            nodes[position].clockAccumulator += nodes[position].clockRatePerMille
            while nodes[position].clockAccumulator >= 1000, let raft = nodes[position].raft {
                nodes[position].clockAccumulator -= 1000
                raft.tick()
                report.nodeTicks += 1
                try drain(position)
            }
        }
        // Deliver what is due, in the order the network scrambled it.
        var due: [InFlight] = []
        var later: [InFlight] = []
        for flight in network {
            if flight.deliverAt <= now { due.append(flight) } else { later.append(flight) }
        }
        network = later
        due.sort { $0.deliverAt != $1.deliverAt ? $0.deliverAt < $1.deliverAt : $0.order < $1.order }
        for flight in due {
            guard let target = indexOf[flight.message.to], let source = indexOf[flight.message.from],
                  let raft = nodes[target].raft else { continue }
            guard partitionLabel[target] == partitionLabel[source] else { continue }
            raft.step(flight.message)
            try drain(target)
        }
    }

    private func injectFaults() throws {
        let count = nodes.count
        if random.chance(options.partitionPerMille) {
            // Partition: a random subset against the rest.
            for position in 0..<count { partitionLabel[position] = random.below(2) }
        }
        if random.chance(10) {
            // Isolate one node.
            for position in 0..<count { partitionLabel[position] = 0 }
            partitionLabel[random.below(count)] = 1
        }
        if random.chance(25) {
            for position in 0..<count { partitionLabel[position] = 0 }
        }
        if random.chance(options.crashPerMille) {
            let position = random.below(count)
            if nodes[position].raft != nil && crashAllowed() {
                // Writes in flight: Redis may have run some of them (a prefix) first.
                try crash(position, storingWrites: random.below(nodes[position].pending.count + 1))
            }
        }
        if random.chance(20) {
            let position = random.below(count)
            if nodes[position].raft == nil { try restart(position) }
        }
        if random.chance(20) {
            dropPerMille = [0, 0, 20, 100, 300][random.below(5)]
            duplicatePerMille = [0, 0, 20, 100][random.below(4)]
            maxDelay = 1 + random.below(options.maxDelaySteps)
        }
    }

    /// Keeps at most a minority plus one crashed at once, so the faults phase still progresses.
    private func crashAllowed() -> Bool {
        nodes.filter { $0.raft == nil }.count < (nodes.count - 1) / 2 + 1
    }

    private func clientActivity() throws {
        let count = nodes.count
        if random.chance(options.proposalPerMille) {
            // Propose on a random node (most will answer notLeader), a few entries at once.
            let position = random.below(count)
            if let raft = nodes[position].raft {
                for _ in 0..<(1 + random.below(3)) {
                    proposalCounter += 1
                    let data = Array("p\(proposalCounter)".utf8)
                    if case .notLeader = raft.propose(data) { break }
                }
                try drain(position)
            }
        }
        if random.chance(30) {
            let position = random.below(count)
            if let raft = nodes[position].raft {
                readCounter += 1
                if raft.readIndex(context: readCounter) {
                    readFloor[readCounter] = maxKnownCommit()
                }
                try drain(position)
            }
        }
        if random.chance(5) {
            let position = random.below(count)
            if let raft = nodes[position].raft, raft.role == .leader {
                let target: NodeID? = random.chance(500) ? nil : nodes[random.below(count)].id
                raft.transferLeadership(to: target)
                try drain(position)
            }
        }
        if random.chance(40) {
            let position = random.below(count)
            if let raft = nodes[position].raft {
                let machine = nodes[position].machine
                if machine.appliedIndex >= raft.log.snapshotIndex + options.compactEvery,
                   machine.appliedIndex == raft.log.applied {
                    raft.compact(upTo: machine.appliedIndex, snapshotData: machine.snapshotData)
                    try drain(position)
                }
            }
        }
    }

    private func maxKnownCommit() -> UInt64 {
        var highest: UInt64 = 0
        for node in nodes { highest = max(highest, node.storage.hardState.commit) }
        return min(highest, UInt64(appliedTerm.count))
    }

    private func restart(_ position: Int) throws {
        let id = nodes[position].id
        nodes[position].restarts += 1
        let storage = nodes[position].storage
        nodes[position].raft = makeRaft(id: id, restoring: storage.persistent, restarts: nodes[position].restarts)
        if let snapshot = storage.snapshot {
            nodes[position].machine = try SimStateMachine(snapshotData: snapshot.data)
            try checkSnapshotMachine(nodes[position].machine, snapshot: snapshot, node: id)
        } else {
            nodes[position].machine = SimStateMachine()
        }
        try drain(position)
    }

    // MARK: - Ready handling and checks

    /// Handles one node's Readies as the runtime does: when a Ready is handed out, its
    /// snapshot is restored, its committed entries applied and its reads served; it is then
    /// written (persisted), its messages sent and it is advanced, oldest first, either now or
    /// in a later step (`completeWrites`). Up to `maxPipelinedReadies` are outstanding; messages
    /// may be stepped (and what they commit applied) while they are.
    private func drain(_ position: Int) throws {
        guard let raft = nodes[position].raft else { return }
        var rounds = 0
        while raft.hasReady || (!nodes[position].pending.isEmpty && random.chance(options.writeNowPerMille)) {
            rounds += 1
            if rounds > 200 { throw SimViolation(text: "\(raft.id): hasReady never settles") }
            if raft.hasReady && nodes[position].pending.count < options.maxPipelinedReadies {
                let rd = raft.ready()
                if !nodes[position].pending.isEmpty { report.pipelinedReadies += 1 }
                nodes[position].pending.append(rd)
                if options.brokenSendBeforeWrite { for message in rd.messages { transmit(message) } }
                try apply(rd, position: position)
                if random.chance(options.midReadyDeliveryPerMille) { try deliverMidReady(position, raft) }
                continue
            }
            if try !completeOldestWrite(position) { return }
        }
        try checkNode(position)
    }

    /// Redis runs the oldest write: persist it, send its messages, advance. False if the node
    /// crashed in the middle.
    private func completeOldestWrite(_ position: Int) throws -> Bool {
        guard let raft = nodes[position].raft, !nodes[position].pending.isEmpty else { return true }
        let rd = nodes[position].pending.removeFirst()
        if faultsActive && random.chance(options.crashMidReadyPerMille) && crashAllowed() {
            // Crash mid-Ready: maybe persisted, never sent, never advanced; later ones lost.
            if random.chance(500) { try persist(rd, position: position) }
            try crash(position)
            return false
        }
        try persist(rd, position: position)
        if !options.brokenSendBeforeWrite { for message in rd.messages { transmit(message) } }
        raft.advance(rd)
        return true
    }

    /// Writes in flight that Redis gets to this step (oldest first), or one that fails.
    private func completeWrites(_ position: Int) throws {
        guard nodes[position].raft != nil, !nodes[position].pending.isEmpty else { return }
        if faultsActive && random.chance(options.writeFailurePerMille) {
            // The writes before the failed one were stored; it and those after it were refused.
            // The runtime drops the core and rebuilds it from storage at once.
            report.failedWrites += 1
            try crash(position, storingWrites: random.below(nodes[position].pending.count))
            try restart(position)
            return
        }
        while !nodes[position].pending.isEmpty && random.chance(options.writeLaterPerMille) {
            if try !completeOldestWrite(position) { return }
        }
        try drain(position)
    }

    /// The node stops; the first `storingWrites` of its writes in flight were stored before it
    /// did, the rest are lost.
    private func crash(_ position: Int, storingWrites: Int = 0) throws {
        for rd in nodes[position].pending.prefix(storingWrites) { try persist(rd, position: position) }
        nodes[position].raft = nil
        nodes[position].pending = []
        nodes[position].clockAccumulator = 0
    }

    private func persist(_ rd: Ready, position: Int) throws {
        let id = nodes[position].id
        var storage = nodes[position].storage
        if let snapshot = rd.snapshot {
            storage.snapshot = snapshot
            storage.entries = []
            report.snapshotsInstalled += 1
        }
        if let snapshot = rd.compactedSnapshot {
            let drop = Int(min(snapshot.index, storage.lastIndex) - (storage.snapshot?.index ?? 0))
            if drop > 0 { storage.entries.removeFirst(drop) }
            storage.snapshot = snapshot
        }
        if let first = rd.entries.first {
            guard first.index >= storage.firstIndex && first.index <= storage.lastIndex + 1 else {
                throw SimViolation(text: "\(id): Ready.entries start at \(first.index), storage holds \(storage.firstIndex)...\(storage.lastIndex)")
            }
            storage.entries.removeSubrange(Int(first.index - storage.firstIndex)...)
            storage.entries.append(contentsOf: rd.entries)
            for entry in rd.entries {
                try recordEntry(entry, previousTerm: storage.term(at: entry.index - 1) ?? 0, node: id)
            }
        }
        if let hardState = rd.hardState {
            let old = storage.hardState
            // Persisted state must never go back: term, commit; one vote per term.
            if hardState.term < old.term {
                throw SimViolation(text: "\(id): persisted term went back \(old.term) -> \(hardState.term)")
            }
            if hardState.commit < old.commit {
                throw SimViolation(text: "\(id): persisted commit index went back \(old.commit) -> \(hardState.commit)")
            }
            if hardState.term == old.term, let oldVote = old.vote, hardState.vote != oldVote {
                throw SimViolation(text: "\(id): vote changed within term \(old.term): \(oldVote) -> \(hardState.vote ?? "nil")")
            }
            storage.hardState = hardState
            try recordCommitted(from: old.commit + 1, through: hardState.commit, storage: storage, node: id)
        }
        if storage.hardState.commit > storage.lastIndex {
            throw SimViolation(text: "\(id): persisted commit \(storage.hardState.commit) beyond persisted log \(storage.lastIndex)")
        }
        nodes[position].storage = storage
        if rd.role == .leader && rd.roleChanged { report.elections += 1 }
    }

    private func transmit(_ message: Message) {
        if random.chance(dropPerMille) { return }
        let copies = random.chance(duplicatePerMille) ? 2 : 1
        for _ in 0..<copies {
            network.append(InFlight(deliverAt: now + 1 + random.below(maxDelay), order: random.next(), message: message))
        }
    }

    /// Steps the messages due to this node while its Ready is outstanding, then applies the
    /// entries that became committed, before the Ready is advanced.
    private func deliverMidReady(_ position: Int, _ raft: RaftNode) throws {
        var kept: [InFlight] = []
        var due: [InFlight] = []
        for flight in network {
            if flight.deliverAt <= now && flight.message.to == nodes[position].id { due.append(flight) } else { kept.append(flight) }
        }
        network = kept
        due.sort { $0.deliverAt != $1.deliverAt ? $0.deliverAt < $1.deliverAt : $0.order < $1.order }
        for flight in due {
            guard let source = indexOf[flight.message.from], partitionLabel[position] == partitionLabel[source] else { continue }
            raft.step(flight.message)
        }
        let taken = raft.takeCommittedEntries()
        if !taken.isEmpty { report.midReadyApplies += 1 }
        try applyEntries(taken, position: position)
    }

    private func apply(_ rd: Ready, position: Int) throws {
        if let snapshot = rd.snapshot {
            nodes[position].machine = try SimStateMachine(snapshotData: snapshot.data)
            try checkSnapshotMachine(nodes[position].machine, snapshot: snapshot, node: nodes[position].id)
        }
        try applyEntries(rd.committedEntries, position: position)
        try serveReads(rd, position: position)
    }

    private func applyEntries(_ entries: [Entry], position: Int) throws {
        let id = nodes[position].id
        var machine = nodes[position].machine
        for entry in entries {
            guard entry.index == machine.appliedIndex + 1 else {
                throw SimViolation(text: "\(id): applied \(entry.index) after \(machine.appliedIndex)")
            }
            let hash = entryHash(entry)
            machine.chain = mix(machine.chain, hash)
            machine.appliedIndex = entry.index
            // State Machine Safety: every node applies the same entry at each index.
            let slot = Int(entry.index - 1)
            if slot < appliedTerm.count {
                if appliedTerm[slot] != entry.term || appliedChain[slot] != machine.chain {
                    throw SimViolation(text: "State Machine Safety: \(id) applied \(entry.index)@\(entry.term), another node applied \(entry.index)@\(appliedTerm[slot])")
                }
            } else {
                appliedTerm.append(entry.term)
                appliedChain.append(machine.chain)
            }
        }
        nodes[position].machine = machine
    }

    private func serveReads(_ rd: Ready, position: Int) throws {
        let id = nodes[position].id
        for read in rd.readStates {
            report.readsServed += 1
            if let floor = readFloor[read.context], read.index < floor {
                throw SimViolation(text: "ReadIndex: \(id) served read \(read.context) at \(read.index) but \(floor) was committed before it was asked")
            }
            readFloor[read.context] = nil
        }
    }

    private func checkSnapshotMachine(_ machine: SimStateMachine, snapshot: Snapshot, node: NodeID) throws {
        guard machine.appliedIndex == snapshot.index else {
            throw SimViolation(text: "\(node): snapshot at \(snapshot.index) holds state applied through \(machine.appliedIndex)")
        }
        let slot = Int(snapshot.index) - 1
        if slot >= 0 && slot < appliedChain.count && appliedChain[slot] != machine.chain {
            throw SimViolation(text: "State Machine Safety: \(node) snapshot at \(snapshot.index) differs from the applied sequence")
        }
    }

    /// Log Matching (§5.3): two entries with the same index and term hold the same command
    /// and are preceded by identical logs; by induction it suffices that they agree on the
    /// command and on the previous entry's term.
    private func recordEntry(_ entry: Entry, previousTerm: UInt64, node: NodeID) throws {
        let hash = entryHash(entry)
        if let known = entryRecord[entry.index]?[entry.term] {
            if known.hash != hash || known.previousTerm != previousTerm {
                throw SimViolation(text: "Log Matching: \(node) has \(entry.index)@\(entry.term) (previous term \(previousTerm)) unlike another node (previous term \(known.previousTerm))")
            }
        } else {
            entryRecord[entry.index, default: [:]][entry.term] = (hash, previousTerm)
        }
    }

    /// A committed entry never changes: every node that persists a commit index agrees on the
    /// entries it covers.
    private func recordCommitted(from: UInt64, through: UInt64, storage: SimStorage, node: NodeID) throws {
        let start = max(from, storage.firstIndex)
        guard start <= through else { return }
        for index in start...through {
            guard let term = storage.term(at: index) else { continue }
            let slot = Int(index - 1)
            if slot < committedEntryTerm.count {
                if committedEntryTerm[slot] != term {
                    throw SimViolation(text: "State Machine Safety: \(node) committed \(index)@\(term), already committed as \(index)@\(committedEntryTerm[slot])")
                }
            } else if slot == committedEntryTerm.count {
                committedEntryTerm.append(term)
                committedDuringTerm.append(storage.hardState.term)
            }
        }
    }

    private func checkNode(_ position: Int) throws {
        guard let raft = nodes[position].raft, raft.role == .leader else { return }
        // Election Safety (§5.2): at most one leader per term.
        if let other = leaderOfTerm[raft.term], other != raft.id {
            throw SimViolation(text: "Election Safety: \(other) and \(raft.id) both leader in term \(raft.term)")
        }
        leaderOfTerm[raft.term] = raft.id
        // Leader Completeness (§5.4): a leader holds every entry committed in an earlier term.
        // committedDuringTerm is non-decreasing: find the last index committed before its term.
        var low = 0
        var high = committedDuringTerm.count
        while low < high {
            let middle = (low + high) / 2
            if committedDuringTerm[middle] < raft.term { low = middle + 1 } else { high = middle }
        }
        let index = UInt64(low) // entries 1...low were committed in earlier terms
        if index > raft.log.snapshotIndex {
            let term = raft.log.term(at: index)
            if term != committedEntryTerm[low - 1] {
                throw SimViolation(text: "Leader Completeness: leader \(raft.id) of term \(raft.term) has \(term.map(String.init) ?? "nothing") at \(index), committed earlier as term \(committedEntryTerm[low - 1])")
            }
        }
    }

    private func entryHash(_ entry: Entry) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(entry.kind.rawValue)
        for byte in entry.data { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return mix(hash, entry.term)
    }

    private func mix(_ left: UInt64, _ right: UInt64) -> UInt64 {
        var generator = SplitMix64(seed: left ^ (right &* 0x9E37_79B9_7F4A_7C15))
        return generator.next()
    }
}

// MARK: - Throughput

/// Drives a fault-free 3-node cluster as fast as the core allows: the leader gets `batch`
/// proposals per round, every message is delivered at once, storage is a no-op. Returns the
/// entries committed (applied on the leader) and the rounds (ticks) it took. Time it from outside.
public func runThroughputSimulation(entries: Int, batch: Int, payloadBytes: Int = 16) -> (committed: Int, ticks: Int) {
    let ids = ["n1", "n2", "n3"]
    let nodes = ids.map { id in
        RaftNode(config: RaftConfig(id: id, voters: ids, electionTicks: 10, heartbeatTicks: 1,
                                    maxEntriesPerMessage: max(batch, 64), maxBytesPerMessage: 4 << 20,
                                    maxInflightMessages: 8, maxUncommittedEntries: max(4 * batch, 1024)),
                 restoring: nil, seed: 42)
    }
    var position: [NodeID: Int] = [:]
    for (offset, id) in ids.enumerated() { position[id] = offset }
    var queue: [Message] = []
    var applied = [Int](repeating: 0, count: 3)
    var appliedIndex = [UInt64](repeating: 0, count: 3)

    func drain(_ offset: Int) {
        let node = nodes[offset]
        while node.hasReady {
            let rd = node.ready()
            queue.append(contentsOf: rd.messages)
            for entry in rd.committedEntries where entry.kind == .normal { applied[offset] += 1 }
            if let last = rd.committedEntries.last { appliedIndex[offset] = last.index }
            node.advance(rd)
        }
    }

    func deliverAll() {
        var rounds = 0
        while !queue.isEmpty && rounds < 64 {
            rounds += 1
            let pending = queue
            queue = []
            for message in pending {
                guard let target = position[message.to] else { continue }
                nodes[target].step(message)
                drain(target)
            }
        }
    }

    var ticks = 0
    // Elect n1: tick it alone until it campaigns.
    while nodes[0].role != .leader && ticks < 1000 {
        ticks += 1
        nodes[0].tick()
        drain(0)
        deliverAll()
    }
    let payload = [UInt8](repeating: 7, count: payloadBytes)
    var proposed = 0
    while applied[0] < entries && ticks < 10_000_000 {
        ticks += 1
        let count = min(batch, entries - proposed)
        for _ in 0..<count {
            if case .accepted = nodes[0].propose(payload) { proposed += 1 } else { break }
        }
        for offset in 0..<3 {
            nodes[offset].tick()
            drain(offset)
        }
        deliverAll()
        // Keep memory bounded as a real node would.
        for offset in 0..<3 where appliedIndex[offset] > nodes[offset].log.snapshotIndex + 100_000 {
            nodes[offset].compact(upTo: appliedIndex[offset] - 1000, snapshotData: [])
        }
    }
    return (applied[0], ticks)
}
