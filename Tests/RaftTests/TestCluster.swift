@testable import Raft

/// A perfect in-memory network for unit tests: messages are delivered when asked, storage
/// is exactly what each Ready said to persist.
final class TestCluster {
    var nodes: [NodeID: RaftNode] = [:]
    var storage: [NodeID: PersistentState] = [:]
    var queue: [Message] = []
    var isolated: Set<NodeID> = []
    var applied: [NodeID: [Entry]] = [:]
    var readStates: [NodeID: [ReadState]] = [:]
    var sent: [Message] = []
    let ids: [NodeID]
    let base: RaftConfig

    init(size: Int, configure: (inout RaftConfig) -> Void = { _ in }) {
        ids = (1...size).map { "n\($0)" }
        var config = RaftConfig(id: "n1", voters: ids, electionTicks: 10, heartbeatTicks: 1)
        configure(&config)
        base = config
        for id in ids {
            var own = config
            own.id = id
            nodes[id] = RaftNode(config: own, restoring: nil, seed: 1)
            storage[id] = PersistentState(hardState: HardState())
        }
    }

    subscript(_ id: NodeID) -> RaftNode { nodes[id]! }

    /// Handles every Ready of `id`; returns what it produced.
    @discardableResult
    func drain(_ id: NodeID) -> [Ready] {
        let node = nodes[id]!
        var readies: [Ready] = []
        while node.hasReady {
            let rd = node.ready()
            var state = storage[id]!
            if let snapshot = rd.snapshot {
                state.snapshot = snapshot
                state.entries = []
            }
            if let snapshot = rd.compactedSnapshot {
                state.snapshot = snapshot
                state.entries.removeAll { $0.index <= snapshot.index }
            }
            if let first = rd.entries.first {
                state.entries.removeAll { $0.index >= first.index }
                state.entries.append(contentsOf: rd.entries)
            }
            if let hardState = rd.hardState { state.hardState = hardState }
            storage[id] = state
            queue.append(contentsOf: rd.messages)
            sent.append(contentsOf: rd.messages)
            applied[id, default: []].append(contentsOf: rd.committedEntries)
            readStates[id, default: []].append(contentsOf: rd.readStates)
            node.advance(rd)
            readies.append(rd)
        }
        return readies
    }

    func drainAll() {
        for id in ids where nodes[id] != nil { drain(id) }
    }

    /// Delivers until the network is quiet (bounded).
    func deliverAll(rounds: Int = 100) {
        drainAll()
        var round = 0
        while !queue.isEmpty && round < rounds {
            round += 1
            let pending = queue
            queue = []
            for message in pending {
                guard !isolated.contains(message.from), !isolated.contains(message.to),
                      let node = nodes[message.to] else { continue }
                node.step(message)
                drain(message.to)
            }
        }
    }

    func tick(_ id: NodeID, _ times: Int = 1) {
        for _ in 0..<times {
            nodes[id]!.tick()
            drain(id)
        }
    }

    func tickAll(_ times: Int = 1) {
        for _ in 0..<times {
            for id in ids where nodes[id] != nil {
                nodes[id]!.tick()
                drain(id)
            }
            deliverAll()
        }
    }

    /// Makes `id` leader by timing it out while the others stay quiet.
    func elect(_ id: NodeID) {
        for _ in 0..<(4 * base.electionTicks) where nodes[id]!.status.role != .leader {
            tick(id)
            deliverAll()
        }
    }

    func leader() -> NodeID? {
        ids.first { nodes[$0]?.status.role == .leader }
    }

    func crash(_ id: NodeID) {
        nodes[id] = nil
        queue.removeAll { $0.to == id }
    }

    func restart(_ id: NodeID) {
        var own = base
        own.id = id
        nodes[id] = RaftNode(config: own, restoring: storage[id]!, seed: 2)
        applied[id] = []
    }

    func appliedData(_ id: NodeID) -> [[UInt8]] {
        (applied[id] ?? []).filter { $0.kind == .normal }.map(\.data)
    }
}

/// Drives one node by hand: returns its next Ready (advanced).
@discardableResult
func collect(_ node: RaftNode) -> Ready {
    guard node.hasReady else { return Ready() }
    let rd = node.ready()
    node.advance(rd)
    return rd
}

func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }
