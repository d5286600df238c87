import Runtime

// MARK: - Long-poll waiters
//
// A consume with `wait_ms > 0` that found nothing waits here, per (topic, group), FIFO. It is
// woken by a notification — a produce, a delayed promotion, a redelivery or a redrive on any
// node publishes `queueNotify` on the bus after Redis stored the change — never by polling
// Redis in a loop. One attempt per (topic, group) runs at a time on this node: a wake-up
// tries the first idle waiter on the partitions named in the notification; if that attempt
// delivered something, the next waiter tries again (the chain stops at the first empty
// attempt), so N waiters and one message cost one or two script calls, not N. A bounded
// fallback (every `fallbackMs`) re-checks every partition, for what no notification names:
// a nacked message whose backoff ran out, or a notification lost while the subscriber
// reconnected (pub/sub is at-most-once).

final class Waiter {
    let request: HTTPRequest
    let consume: ConsumeRequest
    var timer: LoopTimer?
    var busy = false
    var expired = false
    var done = false

    init(request: HTTPRequest, consume: ConsumeRequest) {
        self.request = request
        self.consume = consume
    }
}

final class WaitQueue {
    let topic: String
    let group: String
    var waiters: [Waiter] = []
    /// Partitions named by notifications not yet tried by an attempt.
    var dirty: Set<Int> = []
    /// When the oldest untried notification arrived (for the wake latency metric).
    var dirtySinceMicros: Int64?
    var attemptRunning = false
    var fallback: LoopTimer?

    init(topic: String, group: String) { self.topic = topic; self.group = group }

    var isEmpty: Bool { waiters.isEmpty }

    func remove(_ waiter: Waiter) {
        waiters.removeAll { $0 === waiter }
    }

    var firstIdle: Waiter? { waiters.first { !$0.busy && !$0.done } }
}
