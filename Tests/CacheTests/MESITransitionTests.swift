import XCTest
@testable import Cache

final class MESITransitionTests: XCTestCase {
    private typealias Row = (state: MESIState, event: MESIEvent, next: MESIState, actions: [MESIAction], why: String)

    /// Every state x every event, each expected result written out (4 states x 9 events).
    private let table: [Row] = [
        // I: misses fetch; snoops and eviction do nothing.
        (.I, .processorRead(otherCopies: false), .E, [.busRead], "read miss, no other copy -> E"),
        (.I, .processorRead(otherCopies: true), .S, [.busRead], "read miss, other copies -> S"),
        (.I, .processorWrite, .M, [.busReadExclusive], "write miss -> M via BusRdX"),
        (.I, .busRead, .I, [], "nothing to snoop"),
        (.I, .busReadExclusive, .I, [], "nothing to snoop"),
        (.I, .busUpgrade, .I, [], "nothing to snoop"),
        (.I, .flush, .I, [], "nothing to snoop"),
        (.I, .invalidate, .I, [], "already invalid"),
        (.I, .evict, .I, [], "nothing to evict"),
        // E: clean and alone.
        (.E, .processorRead(otherCopies: false), .E, [], "read hit"),
        (.E, .processorRead(otherCopies: true), .E, [], "read hit: flag ignored, no bus traffic"),
        (.E, .processorWrite, .M, [], "silent upgrade: no other copy exists"),
        (.E, .busRead, .S, [], "another reader: clean, so no flush"),
        (.E, .busReadExclusive, .I, [], "another writer"),
        (.E, .busUpgrade, .I, [], "impossible in a correct run; invalidate to be safe"),
        (.E, .flush, .I, [], "a newer owner wrote back: our copy is superseded"),
        (.E, .invalidate, .I, [], "invalidate, clean"),
        (.E, .evict, .I, [], "evict, clean: no write-back"),
        // S: clean, possibly shared.
        (.S, .processorRead(otherCopies: false), .S, [], "read hit"),
        (.S, .processorRead(otherCopies: true), .S, [], "read hit"),
        (.S, .processorWrite, .M, [.busUpgrade], "write hit on S: BusUpgr invalidates the others"),
        (.S, .busRead, .S, [], "one more reader"),
        (.S, .busReadExclusive, .I, [], "another writer"),
        (.S, .busUpgrade, .I, [], "another sharer upgrades"),
        (.S, .flush, .I, [], "a newer owner wrote back: our copy is superseded"),
        (.S, .invalidate, .I, [], "invalidate, clean"),
        (.S, .evict, .I, [], "evict, clean: no write-back"),
        // M: the only, newest copy.
        (.M, .processorRead(otherCopies: false), .M, [], "read hit"),
        (.M, .processorRead(otherCopies: true), .M, [], "read hit"),
        (.M, .processorWrite, .M, [], "write hit"),
        (.M, .busRead, .S, [.flush], "another reader: write back, then share"),
        (.M, .busReadExclusive, .I, [.flush], "another writer: write back, then invalidate"),
        (.M, .busUpgrade, .I, [.flush], "impossible in a correct run; keep the newest value, invalidate"),
        (.M, .flush, .I, [], "a newer owner wrote back: ours is superseded, do not clobber it"),
        (.M, .invalidate, .I, [.flush], "invalidate: dirty line written back first"),
        (.M, .evict, .I, [.flush], "evicting M writes back"),
    ]

    func testTransitionTableExhaustively() {
        for row in table {
            let (next, actions) = mesiTransition(row.state, row.event)
            XCTAssertEqual(next, row.next, "\(row.state) x \(row.event): \(row.why)")
            XCTAssertEqual(actions, row.actions, "\(row.state) x \(row.event): \(row.why)")
        }
    }

    func testTableCoversEveryStateAndEventExactlyOnce() {
        XCTAssertEqual(MESIState.allCases.count, 4)
        XCTAssertEqual(MESIEvent.allEvents.count, 9)
        XCTAssertEqual(Set(MESIEvent.allEvents).count, 9)
        var seen = Set<String>()
        for row in table { XCTAssertTrue(seen.insert("\(row.state)|\(row.event)").inserted, "duplicate row \(row.state) x \(row.event)") }
        for state in MESIState.allCases {
            for event in MESIEvent.allEvents {
                XCTAssertTrue(seen.contains("\(state)|\(event)"), "missing row \(state) x \(event)")
            }
        }
        XCTAssertEqual(table.count, 36)
    }

    func testTableInvariants() {
        for state in MESIState.allCases {
            for event in MESIEvent.allEvents {
                let (next, actions) = mesiTransition(state, event)
                // Only a Modified line ever has something to write back.
                if actions.contains(.flush) { XCTAssertEqual(state, .M, "\(state) x \(event)") }
                // Snoops and evictions never issue bus requests and never gain rights.
                if event.isSnooped || event == .evict || event == .invalidate {
                    XCTAssertTrue(actions.allSatisfy { $0 == .flush }, "\(state) x \(event)")
                    XCTAssertTrue(next == .I || next == .S || next == state, "\(state) x \(event)")
                    XCTAssertFalse(next == .M && state != .M)
                }
                // Losing the line after evict or invalidate, always.
                if event == .evict || event == .invalidate { XCTAssertEqual(next, .I) }
                // A write always ends in M; only E and M may get there without the bus.
                if event == .processorWrite {
                    XCTAssertEqual(next, .M)
                    if !state.isExclusive { XCTAssertFalse(actions.isEmpty, "\(state) x PrWr must tell the others") }
                }
                // A read always ends valid; only a miss uses the bus.
                if case .processorRead = event {
                    XCTAssertTrue(next.isValid)
                    XCTAssertEqual(actions.isEmpty, state.isValid)
                }
            }
        }
    }

    func testRawValuesForTheAPIAndMetrics() {
        XCTAssertEqual(MESIState.allCases.map(\.rawValue), ["M", "E", "S", "I"])
        XCTAssertEqual(MESIState(rawValue: "S"), .S)
        XCTAssertEqual(MESIAction.allCases.map(\.rawValue), ["BusRd", "BusRdX", "BusUpgr", "Flush"])
        XCTAssertEqual(MESIEvent.allEvents.map(\.description),
                       ["PrRd(alone)", "PrRd(shared)", "PrWr", "BusRd", "BusRdX", "BusUpgr", "Flush", "Invalidate", "Evict"])
        XCTAssertTrue(MESIState.M.isValid && MESIState.E.isValid && MESIState.S.isValid && !MESIState.I.isValid)
        XCTAssertTrue(MESIState.M.isExclusive && MESIState.E.isExclusive && !MESIState.S.isExclusive && !MESIState.I.isExclusive)
    }
}

/// The table driven by a tiny snooping-bus model of several nodes, memory (Redis) and values:
/// the contract's walk, then random operations checking coherence after every step.
final class MESIBusModelTests: XCTestCase {
    /// Nodes with one line each for a single key; memory holds the value in Redis.
    private struct Model {
        var states: [MESIState]
        var values: [Int?]
        var memory: Int
        var latestWritten: Int
        var busMessages: [MESIAction: Int] = [:]

        init(nodes: Int) {
            states = Array(repeating: .I, count: nodes)
            values = Array(repeating: nil, count: nodes)
            memory = 0
            latestWritten = 0
        }

        /// Applies `event` to node `node`; a Flush writes its value back to memory.
        mutating func apply(_ event: MESIEvent, at node: Int) {
            let (next, actions) = mesiTransition(states[node], event)
            for action in actions {
                busMessages[action, default: 0] += 1
                if action == .flush { memory = values[node]! }
            }
            states[node] = next
            if next == .I { values[node] = nil }
        }

        /// Processor read on `node`; returns the value read.
        mutating func read(at node: Int) -> Int {
            if !states[node].isValid {
                let others = states.indices.filter { $0 != node && states[$0].isValid }
                // The BusRd is snooped first (an M holder flushes), then memory answers.
                for other in others { apply(.busRead, at: other) }
                apply(.processorRead(otherCopies: !others.isEmpty), at: node)
                values[node] = memory
            } else {
                apply(.processorRead(otherCopies: true), at: node)
            }
            return values[node]!
        }

        /// Processor write of `value` on `node` (write-back: memory is updated on flush only).
        mutating func write(_ value: Int, at node: Int) {
            let (_, actions) = mesiTransition(states[node], .processorWrite)
            let snooped: MESIEvent? = actions.contains(.busReadExclusive) ? .busReadExclusive
                : actions.contains(.busUpgrade) ? .busUpgrade : nil
            if let snooped {
                for other in states.indices where other != node { apply(snooped, at: other) }
            }
            apply(.processorWrite, at: node)
            values[node] = value
            latestWritten = value
        }

        func checkCoherence(file: StaticString = #filePath, line: UInt = #line) {
            let valid = states.indices.filter { states[$0].isValid }
            let exclusive = valid.filter { states[$0].isExclusive }
            // Single writer or multiple readers.
            if !exclusive.isEmpty { XCTAssertEqual(valid, exclusive, "E/M with other copies: \(states)", file: file, line: line) }
            XCTAssertLessThanOrEqual(exclusive.count, 1, "\(states)", file: file, line: line)
            // Every valid copy holds the latest value; memory does unless someone holds M.
            for node in valid { XCTAssertEqual(values[node], latestWritten, "stale copy at node \(node): \(states)", file: file, line: line) }
            if !states.contains(.M) { XCTAssertEqual(memory, latestWritten, "memory stale without an M holder", file: file, line: line) }
        }
    }

    /// CONTRACT §2.3 / issue 6: write on n1 -> M; read on n2 -> S and n1 S; read on n3 -> S;
    /// write on n3 -> M, others I; read on n1 sees the new value; a lone reader -> E.
    func testContractWalk() {
        var model = Model(nodes: 3)
        model.write(1, at: 0)
        XCTAssertEqual(model.states, [.M, .I, .I])
        XCTAssertEqual(model.read(at: 1), 1)
        XCTAssertEqual(model.states, [.S, .S, .I])
        XCTAssertEqual(model.memory, 1, "the M holder wrote back when it dropped to S")
        XCTAssertEqual(model.read(at: 2), 1)
        XCTAssertEqual(model.states, [.S, .S, .S])
        model.write(2, at: 2)
        XCTAssertEqual(model.states, [.I, .I, .M])
        XCTAssertEqual(model.read(at: 0), 2)
        XCTAssertEqual(model.states, [.S, .I, .S])
        model.checkCoherence()

        var lone = Model(nodes: 3)
        _ = lone.read(at: 1)
        XCTAssertEqual(lone.states, [.I, .E, .I])
        lone.write(7, at: 1)
        XCTAssertEqual(lone.states, [.I, .M, .I])
        XCTAssertEqual(lone.busMessages, [.busRead: 1], "E -> M is silent")
        lone.apply(.evict, at: 1)
        XCTAssertEqual(lone.memory, 7, "evicting M writes back")
        lone.checkCoherence()
    }

    func testRandomOperationsStayCoherent() {
        var generator = SplitMix64(seed: 2024)
        for nodes in [2, 3, 5] {
            var model = Model(nodes: nodes)
            var nextValue = 1
            for _ in 0..<20_000 {
                let node = Int.random(in: 0..<nodes, using: &generator)
                switch Int.random(in: 0..<10, using: &generator) {
                case 0..<5:
                    XCTAssertEqual(model.read(at: node), model.latestWritten)
                case 5..<8:
                    model.write(nextValue, at: node)
                    nextValue += 1
                case 8:
                    model.apply(.evict, at: node)
                default:
                    model.apply(.invalidate, at: node)
                }
                model.checkCoherence()
            }
            print("MESI model, \(nodes) nodes, 20000 ops: bus messages \(model.busMessages.sorted { $0.key.rawValue < $1.key.rawValue })")
        }
    }
}
