// HashRing: consistent hashing with virtual nodes (Karger et al. 1997), partition -> owner.
//
// Every node is placed on a 64-bit ring at `virtualNodes` points, the point of its i-th
// virtual node being `StableHash.hash64("\(node)#\(i)")`. A partition key is hashed the same
// way and is owned by the node of the first point at or after its hash, wrapping around.
// Properties the queue relies on (tested in PlacementTests):
//   - deterministic: the same set of nodes gives the same owners in every process, whatever
//     the order or repetition of the nodes passed in;
//   - balanced: with V virtual nodes each of N nodes owns about 1/N of the ring (relative
//     spread about 1/sqrt(V));
//   - minimal movement: adding a node moves only partitions to it; removing one moves only
//     partitions it owned.

public struct HashRing: Sendable, Equatable {
    /// CONTRACT §2.2: 150 virtual nodes per node unless configured otherwise.
    public static let defaultVirtualNodes = 150
    /// Upper bound on virtual nodes per node: keeps construction and memory bounded.
    public static let virtualNodesMax = 10_000

    /// The distinct nodes on the ring, sorted (byte-wise by UTF-8, as Swift `<` on String).
    public let nodes: [String]
    /// Virtual nodes (ring points) per node.
    public let virtualNodes: Int

    /// Ring point hashes, ascending. `pointOwners[i]` is the index in `nodes` of the owner of
    /// `pointHashes[i]`. Two arrays instead of an array of tuples: the binary search touches
    /// only the hashes.
    private let pointHashes: [UInt64]
    private let pointOwners: [Int32]

    /// Builds the ring. Duplicate node names count once; their order does not matter.
    /// Precondition: `1 <= virtualNodes <= virtualNodesMax`.
    public init(nodes: [String], virtualNodes: Int = HashRing.defaultVirtualNodes) {
        precondition(virtualNodes >= 1 && virtualNodes <= HashRing.virtualNodesMax,
                     "virtualNodes must be in 1...\(HashRing.virtualNodesMax)")
        let sortedNodes = Array(Set(nodes)).sorted()
        precondition(sortedNodes.count <= Int(Int32.max) / virtualNodes, "too many nodes")

        var points: [(hash: UInt64, owner: Int32)] = []
        points.reserveCapacity(sortedNodes.count * virtualNodes)
        for (nodeIndex, node) in sortedNodes.enumerated() {
            for virtualIndex in 0..<virtualNodes {
                points.append((StableHash.hash64("\(node)#\(virtualIndex)"), Int32(nodeIndex)))
            }
        }
        // Ties between equal hashes are broken by node order (nodes are sorted), so the result
        // does not depend on the order the caller listed the nodes in.
        points.sort { lhs, rhs in
            lhs.hash != rhs.hash ? lhs.hash < rhs.hash : lhs.owner < rhs.owner
        }

        self.nodes = sortedNodes
        self.virtualNodes = virtualNodes
        self.pointHashes = points.map(\.hash)
        self.pointOwners = points.map(\.owner)
        assert(pointHashes.count == sortedNodes.count * virtualNodes)
    }

    /// True when the ring has no node; every owner lookup then answers nil.
    public var isEmpty: Bool { nodes.isEmpty }

    /// Whether `node` is on the ring.
    public func contains(node: String) -> Bool {
        nodes.binarySearchIndex(of: node) != nil
    }

    /// The node owning `partitionKey`, or nil when the ring is empty.
    public func owner(of partitionKey: String) -> String? {
        owner(ofHash: StableHash.hash64(partitionKey))
    }

    /// The node owning partition `partition` of `topic`, or nil when the ring is empty.
    public func owner(topic: String, partition: Int) -> String? {
        owner(of: HashRing.partitionKey(topic: topic, partition: partition))
    }

    /// The key a partition is placed by: `"<topic>:<partition>"`. Unambiguous although topic
    /// names may contain ':', because the partition number always comes last.
    public static func partitionKey(topic: String, partition: Int) -> String {
        "\(topic):\(partition)"
    }

    /// Owners of every partition of a topic: element p is the owner of partition p.
    /// Empty when the ring is empty. Precondition: `partitions >= 0`.
    public func owners(topic: String, partitions: Int) -> [String] {
        precondition(partitions >= 0)
        if isEmpty { return [] }
        return (0..<partitions).map { owner(topic: topic, partition: $0)! }
    }

    /// The partitions of `topic` (ascending) that `node` owns: the ones whose timers it runs.
    public func partitions(ownedBy node: String, topic: String, partitions: Int) -> [Int] {
        precondition(partitions >= 0)
        return (0..<partitions).filter { owner(topic: topic, partition: $0) == node }
    }

    /// Owners of every partition of a topic with bounded loads (consistent hashing with bounded
    /// loads, Mirrokni, Thorup & Zadimoghaddam 2018): partitions are placed in order, each at its
    /// ring position, skipping clockwise past nodes that already hold `cap` partitions, where
    /// `cap = max(ceil(P/N), floor(1.1 P/N))`. With few partitions per topic (8 on 3 nodes)
    /// plain consistent hashing often leaves a node with none or one with most; this keeps
    /// every node within the cap while a membership change still moves mostly the partitions
    /// of the node that came or went. Element p is the owner of partition p.
    public func boundedOwners(topic: String, partitions: Int) -> [String] {
        precondition(partitions >= 0)
        if isEmpty || partitions == 0 { return [] }
        let n = nodes.count
        let cap = Swift.max((partitions + n - 1) / n, Int(Double(partitions) / Double(n) * 1.1))
        var load = [Int](repeating: 0, count: n)
        var out: [String] = []
        out.reserveCapacity(partitions)
        for p in 0..<partitions {
            var index = lowerBound(StableHash.hash64(HashRing.partitionKey(topic: topic, partition: p)))
            // n * cap >= partitions, so a node with room exists; the walk is bounded by the ring.
            for _ in 0..<pointHashes.count {
                if index == pointHashes.count { index = 0 }
                let owner = Int(pointOwners[index])
                if load[owner] < cap {
                    load[owner] += 1
                    out.append(nodes[owner])
                    break
                }
                index += 1
            }
        }
        assert(out.count == partitions)
        return out
    }

    /// The first point index whose hash is >= `hash` (may equal the point count: wrap to 0).
    private func lowerBound(_ hash: UInt64) -> Int {
        var low = 0
        var high = pointHashes.count
        while low < high {
            let middle = low + (high - low) / 2
            if pointHashes[middle] < hash { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The ring with `node` added (unchanged if already present).
    public func adding(node: String) -> HashRing {
        HashRing(nodes: nodes + [node], virtualNodes: virtualNodes)
    }

    /// The ring with `node` removed (unchanged if absent).
    public func removing(node: String) -> HashRing {
        HashRing(nodes: nodes.filter { $0 != node }, virtualNodes: virtualNodes)
    }

    /// Owner of a raw 64-bit ring position: the first point at or after it, wrapping around.
    public func owner(ofHash hash: UInt64) -> String? {
        if pointHashes.isEmpty { return nil }
        let low = lowerBound(hash)
        let pointIndex = low == pointHashes.count ? 0 : low
        return nodes[Int(pointOwners[pointIndex])]
    }
}

extension Array where Element == String {
    /// Binary search in an ascending array.
    fileprivate func binarySearchIndex(of element: String) -> Int? {
        var low = 0
        var high = count
        while low < high {
            let middle = low + (high - low) / 2
            if self[middle] < element {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low < count && self[low] == element ? low : nil
    }
}
