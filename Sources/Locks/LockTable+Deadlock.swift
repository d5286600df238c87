// Deadlock detection on the wait-for graph.
//
// Nodes are owners. An owner waiting for resource R has an edge to every other holder of R —
// compatible or not: a queued shared request also waits, through the FIFO queue, for the
// holders the requests ahead of it wait for, so "waiter -> every other holder" is exactly the
// transitive blocking relation of the queue discipline (upgrades first, then FIFO).
//
// Edges appear only when a wait is added or a grant is made, so the table keeps the graph
// acyclic by checking for a cycle through the new waiter, or through a newly granted owner
// that waits elsewhere, right then. The victim is the youngest owner of the cycle: the one
// whose oldest current hold or wait has the largest log index (ties: the larger owner name).
// Its wait on the cycle's edge fails with `deadlock`; its holds stay.

extension LockTable {
    /// One step of a cycle: `owner` waits for `resource`, held by the next owner of the cycle.
    struct CycleStep: Equatable {
        var owner: String
        var resource: String
    }

    /// Breaks every cycle through `start`, one victim at a time (each turn removes a waiter, so
    /// the loop is bounded by the number of waiters).
    mutating func resolveCycles(through start: String, _ step: inout ApplyStep) {
        while let cycle = findCycle(through: start) {
            let victimPosition = youngest(in: cycle)
            let victim = cycle[victimPosition]
            // Report the cycle starting at the victim.
            let owners = (cycle[victimPosition...] + cycle[..<victimPosition]).map(\.owner)
            guard let index = resources[victim.resource]?.waiterIndex(victim.owner) else {
                assertionFailure("cycle edge without a waiter")
                return
            }
            let waiter = removeWaiter(victim.resource, index)
            counters.deadlocks += 1
            step.events.append(.deadlock(origin: waiter.origin, tag: waiter.tag, cycle: owners))
            // Removing a waiter may let those behind it through; serve them now so the graph
            // stays in normal form (a grantable waiter would add false edges).
            grantWaiters(victim.resource, &step)
        }
    }

    /// Looks for cycles through owners granted in this entry while they wait elsewhere.
    mutating func settle(_ step: inout ApplyStep) {
        var next = 0
        while next < step.ownersToCheck.count {
            let owner = step.ownersToCheck[next]
            next += 1
            if owners[owner]?.waiting.isEmpty == false {
                resolveCycles(through: owner, &step)
            }
        }
        step.ownersToCheck.removeAll()
    }

    /// The wait-for edges out of `owner`, in a deterministic order (resources by name, then
    /// holders in grant order).
    func waitEdges(of owner: String) -> [CycleStep] {
        guard let refs = owners[owner], !refs.waiting.isEmpty else { return [] }
        var edges: [CycleStep] = []
        for resource in refs.waiting.sorted() {
            guard let state = resources[resource] else { continue }
            for holder in state.holders where holder.owner != owner {
                edges.append(CycleStep(owner: holder.owner, resource: resource))
            }
        }
        return edges
    }

    /// A cycle through `start` as steps `[start waits on r0 held by o1, o1 waits on r1 ..., ok
    /// waits on rk held by start]`, or nil. Iterative depth-first search; each owner is entered
    /// at most once (an owner fully explored without reaching `start` cannot reach it later).
    func findCycle(through start: String) -> [CycleStep]? {
        struct Frame {
            var owner: String
            var edges: [CycleStep]
            var next = 0
        }
        var visited: Set<String> = [start]
        var stack = [Frame(owner: start, edges: waitEdges(of: start))]
        while let top = stack.indices.last {
            guard stack[top].next < stack[top].edges.count else {
                stack.removeLast()
                continue
            }
            let edge = stack[top].edges[stack[top].next]
            stack[top].next += 1
            if edge.owner == start {
                return stack.map { frame in
                    CycleStep(owner: frame.owner, resource: frame.edges[frame.next - 1].resource)
                }
            }
            if visited.insert(edge.owner).inserted {
                stack.append(Frame(owner: edge.owner, edges: waitEdges(of: edge.owner)))
            }
        }
        return nil
    }

    /// The log index of `owner`'s oldest current hold or wait ("first acquisition").
    func firstAcquisitionIndex(of owner: String) -> UInt64 {
        guard let refs = owners[owner] else { return 0 }
        var oldest = UInt64.max
        for resource in refs.held {
            if let state = resources[resource], let index = state.holderIndex(owner) {
                oldest = min(oldest, state.holders[index].acquiredIndex)
            }
        }
        for resource in refs.waiting {
            if let state = resources[resource], let index = state.waiterIndex(owner) {
                oldest = min(oldest, state.waiters[index].acquiredIndex)
            }
        }
        return oldest
    }

    /// Position in `cycle` of the youngest owner.
    func youngest(in cycle: [CycleStep]) -> Int {
        var best = 0
        var bestAge = firstAcquisitionIndex(of: cycle[0].owner)
        for position in cycle.indices.dropFirst() {
            let age = firstAcquisitionIndex(of: cycle[position].owner)
            if age > bestAge || (age == bestAge && cycle[position].owner > cycle[best].owner) {
                best = position
                bestAge = age
            }
        }
        return best
    }
}
