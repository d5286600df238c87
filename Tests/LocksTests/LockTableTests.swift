import XCTest
import Locks

/// One test (or a few) per rule of CONTRACT §2.1.
final class LockTableTests: XCTestCase {

    // MARK: Compatibility

    func testExclusiveIsCompatibleWithNothing() {
        let h = Harness()
        let first = h.acquire("r", "a")
        let grant = try! XCTUnwrap(h.grant(first.events, tag: first.tag))
        XCTAssertEqual(grant, Grant(resource: "r", owner: "a", mode: .exclusive, fencingToken: 1, expiresAtMs: h.now + 30_000))

        let second = h.acquire("r", "b")
        XCTAssertEqual(second.events, [.conflict(origin: "n1", tag: second.tag)])
        let third = h.acquire("r", "c", .shared)
        XCTAssertEqual(third.events, [.conflict(origin: "n1", tag: third.tag)])
        XCTAssertEqual(h.table.status("r").mode, .exclusive)
        XCTAssertEqual(h.holders("r"), ["a"])
    }

    func testSharedIsCompatibleWithShared() {
        let h = Harness()
        let a = h.acquire("r", "a", .shared)
        let b = h.acquire("r", "b", .shared)
        XCTAssertNotNil(h.grant(a.events, tag: a.tag))
        XCTAssertNotNil(h.grant(b.events, tag: b.tag))
        XCTAssertEqual(h.table.status("r").mode, .shared)
        XCTAssertEqual(h.holders("r"), ["a", "b"])
        let c = h.acquire("r", "c", .exclusive)
        XCTAssertEqual(c.events, [.conflict(origin: "n1", tag: c.tag)])
    }

    func testFreeResourceStatus() {
        let h = Harness()
        XCTAssertEqual(h.table.status("nothing"), ResourceStatus(resource: "nothing", mode: .free, holders: [], waiters: []))
        XCTAssertEqual(h.table.allStatus(), [])
        XCTAssertNil(h.table.nextDeadlineMs())
    }

    // MARK: Fencing tokens

    func testTokenIsTheGrantingEntryIndex() {
        let h = Harness()
        h.index = 41
        let a = h.acquire("r1", "a")
        XCTAssertEqual(h.grant(a.events, tag: a.tag)?.fencingToken, 42)
        h.index = 99
        let b = h.acquire("r2", "b")
        XCTAssertEqual(h.grant(b.events, tag: b.tag)?.fencingToken, 100)
    }

    func testOneEntryGrantingSeveralWaitersGivesIncreasingTokens() {
        let h = Harness()
        h.acquire("r", "x")
        let s1 = h.acquire("r", "s1", .shared, wait: 10_000)
        let s2 = h.acquire("r", "s2", .shared, wait: 10_000)
        let s3 = h.acquire("r", "s3", .shared, wait: 10_000)
        let release = h.release("r", "x")
        let releaseIndex = h.index
        let tokens = [s1, s2, s3].map { h.grant(release.events, tag: $0.tag)!.fencingToken }
        XCTAssertEqual(tokens, [releaseIndex, releaseIndex + 1, releaseIndex + 2])
        // The next entry's index is below lastToken: the token still increases.
        let y = h.acquire("other", "y")
        XCTAssertEqual(h.grant(y.events, tag: y.tag)?.fencingToken, releaseIndex + 3)
        XCTAssertEqual(h.table.lastToken, releaseIndex + 3)
    }

    // MARK: Same owner again

    func testSameOwnerGetsSameGrantWithLeaseExtended() {
        let h = Harness()
        let first = h.acquire("r", "a", ttl: 1_000)
        let token = h.grant(first.events, tag: first.tag)!.fencingToken
        h.now += 500
        let again = h.acquire("r", "a", ttl: 2_000)
        XCTAssertEqual(h.grant(again.events, tag: again.tag),
                       Grant(resource: "r", owner: "a", mode: .exclusive, fencingToken: token, expiresAtMs: h.now + 2_000))
        // A shorter ttl never shortens the lease.
        let shorter = h.acquire("r", "a", ttl: 100)
        XCTAssertEqual(h.grant(shorter.events, tag: shorter.tag)?.expiresAtMs, h.now + 2_000)
        // An exclusive holder asking for shared keeps its exclusive grant.
        let shared = h.acquire("r", "a", .shared)
        XCTAssertEqual(h.grant(shared.events, tag: shared.tag)?.mode, .exclusive)
        XCTAssertEqual(h.grant(shared.events, tag: shared.tag)?.fencingToken, token)
        XCTAssertEqual(h.holders("r"), ["a"])
        XCTAssertEqual(h.table.counters.reacquired, 3)
    }

    // MARK: FIFO

    func testFifoMixOfSharedAndExclusiveWaiters() {
        let h = Harness()
        h.acquire("r", "x")  // exclusive holder
        let s1 = h.acquire("r", "s1", .shared, wait: 60_000)
        let s2 = h.acquire("r", "s2", .shared, wait: 60_000)
        let e1 = h.acquire("r", "e1", .exclusive, wait: 60_000)
        let s3 = h.acquire("r", "s3", .shared, wait: 60_000)
        let e2 = h.acquire("r", "e2", .exclusive, wait: 60_000)
        for request in [s1, s2, e1, s3, e2] {
            XCTAssertEqual(request.events, [.queued(origin: "n1", tag: request.tag)])
        }
        XCTAssertEqual(h.waiters("r"), ["s1", "s2", "e1", "s3", "e2"])

        // x leaves: both leading shared waiters enter together; e1 stops the line, and s3 does
        // not overtake e1 although it is compatible with the shared holders.
        let afterX = h.release("r", "x")
        XCTAssertNotNil(h.grant(afterX.events, tag: s1.tag))
        XCTAssertNotNil(h.grant(afterX.events, tag: s2.tag))
        XCTAssertEqual(h.holders("r"), ["s1", "s2"])
        XCTAssertEqual(h.waiters("r"), ["e1", "s3", "e2"])

        // A new shared request does not overtake the queued exclusive one either.
        let late = h.acquire("r", "late", .shared)
        XCTAssertEqual(late.events, [.conflict(origin: "n1", tag: late.tag)])

        h.release("r", "s1")
        XCTAssertEqual(h.holders("r"), ["s2"])
        let afterS2 = h.release("r", "s2")
        XCTAssertEqual(h.grant(afterS2.events, tag: e1.tag)?.mode, .exclusive)
        XCTAssertEqual(h.waiters("r"), ["s3", "e2"])
        let afterE1 = h.release("r", "e1")
        XCTAssertEqual(h.grant(afterE1.events, tag: s3.tag)?.mode, .shared)
        XCTAssertEqual(h.waiters("r"), ["e2"])
        let afterS3 = h.release("r", "s3")
        XCTAssertNotNil(h.grant(afterS3.events, tag: e2.tag))
        XCTAssertEqual(h.table.status("r").waiters, [])
    }

    func testWaitersStatusShowsSinceAndOrder() {
        let h = Harness()
        h.acquire("r", "x")
        let t0 = h.now
        h.acquire("r", "a", .shared, wait: 5_000)
        h.now += 10
        h.acquire("r", "b", wait: 5_000)
        XCTAssertEqual(h.table.status("r").waiters, [
            WaiterStatus(owner: "a", mode: .shared, sinceMs: t0, deadlineMs: t0 + 5_000),
            WaiterStatus(owner: "b", mode: .exclusive, sinceMs: t0 + 10, deadlineMs: t0 + 10 + 5_000),
        ])
        XCTAssertEqual(h.table.allStatus().map(\.resource), ["r"])
    }

    // MARK: Leases

    func testLeaseExpiryHandsOverToNextWaiter() {
        let h = Harness()
        let a = h.acquire("r", "a", ttl: 1_000)
        let tokenA = h.grant(a.events, tag: a.tag)!.fencingToken
        let b = h.acquire("r", "b", ttl: 5_000, wait: 10_000)
        XCTAssertEqual(b.events, [.queued(origin: "n1", tag: b.tag)])
        XCTAssertEqual(h.table.nextDeadlineMs(), h.now + 1_000)

        XCTAssertEqual(h.tick(advance: 999), [])
        let events = h.tick(advance: 1)
        XCTAssertEqual(events.first, .expired(resource: "r", owner: "a", fencingToken: tokenA))
        let grantB = try! XCTUnwrap(h.grant(events, tag: b.tag))
        XCTAssertGreaterThan(grantB.fencingToken, tokenA)
        XCTAssertEqual(grantB.expiresAtMs, h.now + 5_000)
        XCTAssertEqual(h.holders("r"), ["b"])
        XCTAssertEqual(h.table.nextDeadlineMs(), h.now + 5_000)
        XCTAssertEqual(h.table.counters.leaseExpiries, 1)
        XCTAssertEqual(h.table.counters.grantedAfterWait, 1)
    }

    func testAnyCommandFirstExpiresWhatIsDue() {
        let h = Harness()
        h.acquire("r", "a", ttl: 1_000)
        h.now += 1_500  // no tick committed in between
        let b = h.acquire("r", "b")
        XCTAssertEqual(b.events.first, .expired(resource: "r", owner: "a", fencingToken: 1))
        XCTAssertNotNil(h.grant(b.events, tag: b.tag))
        // A renew after the lease ended is too late.
        h.now += 40_000
        let renew = h.renew("r", "b", ttl: 1_000)
        XCTAssertEqual(renew.events.last, .notHeld(origin: "n1", tag: renew.tag))
    }

    func testLeaseEndingBeforeWaitDeadlineGrantsEvenIfTickIsLate() {
        let h = Harness()
        h.acquire("r", "a", ttl: 1_000)
        let b = h.acquire("r", "b", wait: 2_000)
        // The tick arrives after both the lease end (t+1000) and b's deadline (t+2000):
        // the lease ended first, so b got the lock before its deadline.
        let events = h.tick(advance: 3_000)
        XCTAssertNotNil(h.grant(events, tag: b.tag))
        XCTAssertFalse(events.contains(.timedOut(origin: "n1", tag: b.tag)))
    }

    func testWaitTimesOut() {
        let h = Harness()
        h.acquire("r", "a")
        let b = h.acquire("r", "b", wait: 1_000)
        XCTAssertEqual(h.table.nextDeadlineMs(), h.now + 1_000)
        let events = h.tick(advance: 1_000)
        XCTAssertEqual(events, [.timedOut(origin: "n1", tag: b.tag)])
        XCTAssertEqual(h.waiters("r"), [])
        XCTAssertEqual(h.table.counters.timeouts, 1)
    }

    func testTimedOutExclusiveWaiterLetsSharedWaitersBehindIt() {
        let h = Harness()
        h.acquire("r", "a", .shared)
        let e = h.acquire("r", "e", wait: 1_000)
        let s = h.acquire("r", "s", .shared, wait: 5_000)
        let events = h.tick(advance: 1_000)
        XCTAssertEqual(events.first, .timedOut(origin: "n1", tag: e.tag))
        XCTAssertNotNil(h.grant(events, tag: s.tag))
        XCTAssertEqual(h.holders("r"), ["a", "s"])
    }

    // MARK: Renew

    func testRenewAndNotHeld() {
        let h = Harness()
        h.acquire("r", "a", ttl: 1_000)
        h.now += 900
        let renew = h.renew("r", "a", ttl: 5_000)
        XCTAssertEqual(renew.events, [.renewed(origin: "n1", tag: renew.tag, expiresAtMs: h.now + 5_000)])
        XCTAssertEqual(h.table.status("r").holders.first?.expiresAtMs, h.now + 5_000)
        // The old expiry time passes without effect.
        XCTAssertEqual(h.tick(advance: 200), [])
        XCTAssertEqual(h.holders("r"), ["a"])

        let other = h.renew("r", "b", ttl: 5_000)
        XCTAssertEqual(other.events, [.notHeld(origin: "n1", tag: other.tag)])
        let unknown = h.renew("nothing", "a", ttl: 5_000)
        XCTAssertEqual(unknown.events, [.notHeld(origin: "n1", tag: unknown.tag)])
        let bad = h.renew("r", "a", ttl: 5)
        XCTAssertEqual(bad.events, [.rejected(origin: "n1", tag: bad.tag, reason: .invalidArgument)])
    }

    // MARK: Release

    func testReleaseWithTokens() {
        let h = Harness()
        let a = h.acquire("r", "a")
        let token = h.grant(a.events, tag: a.tag)!.fencingToken
        let stale = h.release("r", "a", token: token + 7)
        XCTAssertEqual(stale.events, [.staleToken(origin: "n1", tag: stale.tag)])
        XCTAssertEqual(h.holders("r"), ["a"])
        let notMine = h.release("r", "b", token: token)
        XCTAssertEqual(notMine.events, [.notHeld(origin: "n1", tag: notMine.tag)])
        let good = h.release("r", "a", token: token)
        XCTAssertEqual(good.events, [.released(origin: "n1", tag: good.tag)])
        XCTAssertEqual(h.table.status("r").mode, .free)
        let again = h.release("r", "a")
        XCTAssertEqual(again.events, [.notHeld(origin: "n1", tag: again.tag)])
        // A token from a previous grant is stale for the current one.
        let second = h.acquire("r", "a")
        let newToken = h.grant(second.events, tag: second.tag)!.fencingToken
        XCTAssertGreaterThan(newToken, token)
        let old = h.release("r", "a", token: token)
        XCTAssertEqual(old.events, [.staleToken(origin: "n1", tag: old.tag)])
        XCTAssertEqual(h.release("r", "a").events.count, 1)
        XCTAssertEqual(h.table.resourceCount, 0)
    }

    func testWaitingOwnerReleasingIsNotHeldAndKeepsWaiting() {
        let h = Harness()
        h.acquire("r", "a")
        h.acquire("r", "b", wait: 5_000)
        let release = h.release("r", "b")
        XCTAssertEqual(release.events, [.notHeld(origin: "n1", tag: release.tag)])
        XCTAssertEqual(h.waiters("r"), ["b"])
    }

    // MARK: Upgrades

    func testSoleSharedHolderUpgradesAtOnce() {
        let h = Harness()
        let s = h.acquire("r", "a", .shared)
        let sharedToken = h.grant(s.events, tag: s.tag)!.fencingToken
        let up = h.acquire("r", "a", .exclusive)
        let grant = try! XCTUnwrap(h.grant(up.events, tag: up.tag))
        XCTAssertEqual(grant.mode, .exclusive)
        XCTAssertGreaterThan(grant.fencingToken, sharedToken)
        XCTAssertEqual(h.table.status("r").mode, .exclusive)
        XCTAssertEqual(h.holders("r"), ["a"])
        // The shared token is now stale.
        let stale = h.release("r", "a", token: sharedToken)
        XCTAssertEqual(stale.events, [.staleToken(origin: "n1", tag: stale.tag)])
    }

    func testUpgradeWaitsForOtherSharedHolders() {
        let h = Harness()
        h.acquire("r", "a", .shared)
        h.acquire("r", "b", .shared)
        let noWait = h.acquire("r", "a", .exclusive)
        XCTAssertEqual(noWait.events, [.conflict(origin: "n1", tag: noWait.tag)])
        let up = h.acquire("r", "a", .exclusive, wait: 10_000)
        XCTAssertEqual(up.events, [.queued(origin: "n1", tag: up.tag)])
        XCTAssertEqual(h.table.status("r").mode, .shared)  // still holding shared meanwhile
        let release = h.release("r", "b")
        let grant = try! XCTUnwrap(h.grant(release.events, tag: up.tag))
        XCTAssertEqual(grant.mode, .exclusive)
        XCTAssertEqual(h.holders("r"), ["a"])
        XCTAssertEqual(h.table.status("r").mode, .exclusive)
    }

    func testWaitingUpgradeIsServedBeforeEarlierQueuedRequests() {
        let h = Harness()
        h.acquire("r", "a", .shared)
        h.acquire("r", "b", .shared)
        let x = h.acquire("r", "x", .exclusive, wait: 10_000)  // waits for a and b
        let up = h.acquire("r", "a", .exclusive, wait: 10_000)  // waits for b only
        XCTAssertEqual(h.waiters("r"), ["a", "x"])
        let release = h.release("r", "b")
        XCTAssertNotNil(h.grant(release.events, tag: up.tag))
        XCTAssertNil(h.grant(release.events, tag: x.tag))
        XCTAssertEqual(h.waiters("r"), ["x"])
        let last = h.release("r", "a")
        XCTAssertNotNil(h.grant(last.events, tag: x.tag))
    }

    func testUpgraderThatLosesItsHoldWaitsAsAPlainRequestBehindANewUpgrade() {
        let h = Harness()
        h.acquire("r", "a", .shared)
        h.acquire("r", "b", .shared)
        h.acquire("r", "c", .shared)
        let aUp = h.acquire("r", "a", .exclusive, wait: 10_000)
        h.release("r", "a")  // a keeps waiting, now as a plain exclusive request
        XCTAssertEqual(h.waiters("r"), ["a"])
        let bUp = h.acquire("r", "b", .exclusive, wait: 10_000)
        XCTAssertEqual(bUp.events, [.queued(origin: "n1", tag: bUp.tag)])
        XCTAssertEqual(h.waiters("r"), ["b", "a"])
        let release = h.release("r", "c")
        XCTAssertEqual(h.grant(release.events, tag: bUp.tag)?.mode, .exclusive)
        XCTAssertNil(h.grant(release.events, tag: aUp.tag))
        let last = h.release("r", "b")
        XCTAssertNotNil(h.grant(last.events, tag: aUp.tag))
    }

    func testTwoUpgradersDeadlockAndTheYoungerIsTheVictim() {
        let h = Harness()
        h.acquire("r", "old", .shared)
        h.acquire("r", "young", .shared)
        let oldUp = h.acquire("r", "old", .exclusive, wait: 10_000)
        XCTAssertEqual(oldUp.events, [.queued(origin: "n1", tag: oldUp.tag)])
        let youngUp = h.acquire("r", "young", .exclusive, wait: 10_000)
        XCTAssertEqual(youngUp.events, [.deadlock(origin: "n1", tag: youngUp.tag, cycle: ["young", "old"])])
        // The victim keeps its shared hold; releasing it lets the older upgrade through.
        XCTAssertEqual(h.holders("r"), ["old", "young"])
        let release = h.release("r", "young")
        XCTAssertEqual(h.grant(release.events, tag: oldUp.tag)?.mode, .exclusive)
        XCTAssertEqual(h.table.counters.deadlocks, 1)
    }

    // MARK: requestId retries

    func testRetryOfGrantedRequestReturnsTheSameGrant() {
        let h = Harness()
        let first = h.acquire("r", "a", ttl: 1_000, requestId: "req-1", origin: "n1")
        let grant = try! XCTUnwrap(h.grant(first.events, tag: first.tag))
        h.now += 100
        let retry = h.acquire("r", "a", ttl: 1_000, requestId: "req-1", origin: "n2")
        XCTAssertEqual(retry.events, [.granted(origin: "n2", tag: retry.tag, requestId: "req-1",
                                               grant: Grant(resource: "r", owner: "a", mode: .exclusive,
                                                            fencingToken: grant.fencingToken, expiresAtMs: h.now + 1_000))])
        XCTAssertEqual(h.table.heldCount, 1)

        // After the lock was released (and taken by someone else), a late retry makes no second
        // grant and is not told "granted" either (b holds it now).
        h.release("r", "a")
        h.acquire("r", "b")
        let late = h.acquire("r", "a", ttl: 1_000, requestId: "req-1")
        XCTAssertEqual(late.events, [.rejected(origin: "n1", tag: late.tag, reason: .grantEnded)])
        XCTAssertEqual(h.holders("r"), ["b"])
        XCTAssertEqual(h.table.counters.retried, 2)

        // Another request id from the same owner is a new request.
        let fresh = h.acquire("r", "a", requestId: "req-2")
        XCTAssertEqual(fresh.events, [.conflict(origin: "n1", tag: fresh.tag)])
    }

    func testRetryOfWaitingRequestReattachesTheWaiter() {
        let h = Harness()
        h.acquire("r", "x")
        let first = h.acquire("r", "a", wait: 10_000, requestId: "req-1", origin: "n1")
        XCTAssertEqual(first.events, [.queued(origin: "n1", tag: first.tag)])
        let retry = h.acquire("r", "a", wait: 10_000, requestId: "req-1", origin: "n2")
        XCTAssertEqual(retry.events, [.superseded(origin: "n1", tag: first.tag), .queued(origin: "n2", tag: retry.tag)])
        XCTAssertEqual(h.waiters("r"), ["a"])
        // Cancelling the superseded request does nothing.
        XCTAssertEqual(h.cancel("r", "a", tag: first.tag, origin: "n1"), [])
        XCTAssertEqual(h.waiters("r"), ["a"])

        let release = h.release("r", "x")
        let granted = release.events.filter { if case .granted = $0 { return true } else { return false } }
        XCTAssertEqual(granted.count, 1)
        XCTAssertEqual(granted.first?.origin, "n2")
        XCTAssertEqual(granted.first?.tag, retry.tag)
        // A retry after the grant returns it (same token).
        let token = h.grant(release.events, tag: retry.tag)!.fencingToken
        let after = h.acquire("r", "a", wait: 10_000, requestId: "req-1", origin: "n3")
        XCTAssertEqual(h.grant(after.events, tag: after.tag)?.fencingToken, token)
        XCTAssertEqual(h.table.heldCount, 1)
        XCTAssertEqual(h.table.waiterCount, 0)
    }

    func testRequestIdIsScopedToOwnerAndResource() {
        let h = Harness()
        let a = h.acquire("r", "a", requestId: "same")
        XCTAssertNotNil(h.grant(a.events, tag: a.tag))
        let b = h.acquire("r", "b", requestId: "same")
        XCTAssertEqual(b.events, [.conflict(origin: "n1", tag: b.tag)])
        let other = h.acquire("r2", "a", requestId: "same")
        XCTAssertEqual(h.grant(other.events, tag: other.tag)?.resource, "r2")
    }

    func testRetryRecordsExpireAfterRetentionAndAreBounded() {
        let h = Harness(limits: LockLimits(dedupEntriesMax: 3, dedupRetentionMs: 1_000))
        for number in 0..<5 {
            h.acquire("r\(number)", "a", ttl: 100_000, requestId: "id\(number)")
        }
        XCTAssertEqual(h.table.dedupCount, 3)
        h.tick(advance: 1_000)
        XCTAssertEqual(h.table.dedupCount, 0)
        // The grants themselves are untouched; a retry now is a same-owner re-acquire.
        let retry = h.acquire("r0", "a", requestId: "id0")
        XCTAssertEqual(h.grant(retry.events, tag: retry.tag)?.fencingToken, 1)
    }

    // MARK: Waiting rules

    func testWaitZeroMeansConflict() {
        let h = Harness()
        h.acquire("r", "a")
        let b = h.acquire("r", "b", wait: 0)
        XCTAssertEqual(b.events, [.conflict(origin: "n1", tag: b.tag)])
        XCTAssertEqual(h.table.waiterCount, 0)
        XCTAssertEqual(h.table.counters.conflicts, 1)
    }

    func testSecondWaitBySameOwnerTakesTheWaitOverAndSameProposalIsIdempotent() {
        let h = Harness()
        h.acquire("r", "a")
        let first = h.acquire("r", "b", wait: 5_000)
        let c = h.acquire("r", "c", wait: 5_000)
        let again = h.acquire("r", "b", wait: 5_000, tag: first.tag)  // the same proposal applied twice
        XCTAssertEqual(again.events, [.queued(origin: "n1", tag: first.tag)])
        // Without a wait, or for the other mode: refused, and the wait stays the first request's.
        let noWait = h.acquire("r", "b", wait: 0)
        XCTAssertEqual(noWait.events, [.rejected(origin: "n1", tag: noWait.tag, reason: .alreadyWaiting)])
        let otherMode = h.acquire("r", "b", .shared, wait: 5_000)
        XCTAssertEqual(otherMode.events, [.rejected(origin: "n1", tag: otherMode.tag, reason: .alreadyWaiting)])
        // Through another node: refused (its tag cannot be ordered against the first's).
        let elsewhere = h.acquire("r", "b", wait: 5_000, origin: "n2")
        XCTAssertEqual(elsewhere.events, [.rejected(origin: "n2", tag: elsewhere.tag, reason: .alreadyWaiting)])
        // The client asked again through the same node (no request id): it takes the wait over
        // in its place (ahead of c), with its own lease and wait time.
        h.now += 4_000
        let retry = h.acquire("r", "b", ttl: 7_000, wait: 3_000)
        XCTAssertEqual(retry.events, [.superseded(origin: "n1", tag: first.tag), .queued(origin: "n1", tag: retry.tag)])
        // A late duplicate of the first proposal does not take it back.
        let duplicate = h.acquire("r", "b", wait: 5_000, tag: first.tag)
        XCTAssertEqual(duplicate.events, [.rejected(origin: "n1", tag: first.tag, reason: .alreadyWaiting)])
        XCTAssertEqual(h.waiters("r"), ["b", "c"])
        // The first request's deadline (5 s after it) is no longer the wait's: at 5 s nothing of
        // b's ends (c, queued at the same time, times out); at 7 s (the retry's 3 s) it does.
        XCTAssertEqual(h.tick(advance: 1_500), [.timedOut(origin: "n1", tag: c.tag)])
        XCTAssertEqual(h.waiters("r"), ["b"])
        XCTAssertEqual(h.tick(advance: 1_600), [.timedOut(origin: "n1", tag: retry.tag)])
        XCTAssertEqual(h.waiters("r"), [])
    }

    func testWaitsOfAnOriginBelowATagAreListed() {
        let h = Harness()
        h.acquire("r", "a")
        h.acquire("s", "a")
        let old = h.acquire("r", "b", wait: 5_000, origin: "n2")
        let newer = h.acquire("s", "c", wait: 5_000, origin: "n2")
        h.acquire("r", "d", wait: 5_000, origin: "n3")
        let listed = h.table.waits(of: "n2", tagBelow: newer.tag, limit: 10)
        XCTAssertEqual(listed.map(\.tag), [old.tag])
        XCTAssertEqual(listed.first?.resource, "r")
        XCTAssertEqual(listed.first?.owner, "b")
        XCTAssertEqual(h.table.waits(of: "n2", tagBelow: .max, limit: 10).count, 2)
        XCTAssertEqual(h.table.waits(of: "n2", tagBelow: .max, limit: 1).count, 1)
        XCTAssertEqual(h.table.waits(of: "n9", tagBelow: .max, limit: 10).count, 0)
    }

    func testTakenOverWaitIsGrantedToTheNewRequestWithItsLease() {
        let h = Harness()
        h.acquire("r", "a")
        let first = h.acquire("r", "b", wait: 60_000, origin: "n3")
        let retry = h.acquire("r", "b", ttl: 9_000, wait: 60_000, origin: "n3")
        XCTAssertEqual(retry.events, [.superseded(origin: "n3", tag: first.tag), .queued(origin: "n3", tag: retry.tag)])
        // Cancelling the superseded request withdraws nothing.
        XCTAssertEqual(h.cancel("r", "b", tag: first.tag, origin: "n3"), [])
        let release = h.release("r", "a")
        let grant = h.grant(release.events, tag: retry.tag)
        XCTAssertEqual(grant?.owner, "b")
        XCTAssertEqual(grant?.expiresAtMs, h.now + 9_000)
        XCTAssertNil(h.grant(release.events, tag: first.tag))
    }

    func testCancelWait() {
        let h = Harness()
        h.acquire("r", "a", .shared)
        let e = h.acquire("r", "e", wait: 5_000)
        let s = h.acquire("r", "s", .shared, wait: 5_000)
        XCTAssertEqual(h.cancel("r", "e", tag: e.tag + 100), [])  // another request: ignored
        let events = h.cancel("r", "e", tag: e.tag)
        XCTAssertEqual(events.first, .cancelled(origin: "n1", tag: e.tag))
        XCTAssertNotNil(h.grant(events, tag: s.tag))
        XCTAssertEqual(h.table.counters.cancelled, 1)
        // Cancelling a request that was granted does nothing.
        XCTAssertEqual(h.cancel("r", "s", tag: s.tag), [])
        XCTAssertEqual(h.holders("r"), ["a", "s"])
    }

    // MARK: Deadlock

    func testThreeOwnerDeadlockRequesterIsYoungest() {
        let h = Harness()
        h.acquire("r1", "a")
        h.acquire("r2", "b")
        h.acquire("r3", "c")  // c is the youngest
        let aWait = h.acquire("r2", "a", wait: 10_000)
        let bWait = h.acquire("r3", "b", wait: 10_000)
        XCTAssertEqual(aWait.events, [.queued(origin: "n1", tag: aWait.tag)])
        XCTAssertEqual(bWait.events, [.queued(origin: "n1", tag: bWait.tag)])
        let cWait = h.acquire("r1", "c", wait: 10_000)
        XCTAssertEqual(cWait.events, [.deadlock(origin: "n1", tag: cWait.tag, cycle: ["c", "a", "b"])])
        // c's locks stay held; the others still wait.
        XCTAssertEqual(h.holders("r3"), ["c"])
        XCTAssertEqual(h.waiters("r1"), [])
        XCTAssertEqual(h.waiters("r2"), ["a"])
        XCTAssertEqual(h.waiters("r3"), ["b"])
        XCTAssertEqual(h.table.counters.deadlocks, 1)
        // Breaking the chain: c releases r3, b gets it.
        let release = h.release("r3", "c")
        XCTAssertNotNil(h.grant(release.events, tag: bWait.tag))
    }

    func testThreeOwnerDeadlockVictimIsNotTheRequester() {
        let h = Harness()
        h.acquire("r2", "b")  // index 1
        h.acquire("r3", "c")  // index 2
        h.acquire("r1", "a")  // index 3: a is the youngest
        let aWait = h.acquire("r2", "a", wait: 10_000)
        let bWait = h.acquire("r3", "b", wait: 10_000)
        let cWait = h.acquire("r1", "c", wait: 10_000)
        // c closed the cycle c -> a -> b -> c; a is the youngest: a's wait fails, c waits.
        XCTAssertEqual(cWait.events, [.deadlock(origin: "n1", tag: aWait.tag, cycle: ["a", "b", "c"]),
                                      .queued(origin: "n1", tag: cWait.tag)])
        XCTAssertEqual(h.waiters("r2"), [])
        XCTAssertEqual(h.waiters("r1"), ["c"])
        XCTAssertEqual(h.holders("r1"), ["a"])  // the victim keeps what it holds
        XCTAssertNil(h.grant(cWait.events, tag: bWait.tag))
    }

    func testCycleClosedByAGrantIsBroken() {
        let h = Harness()
        h.acquire("r1", "x")                      // 1
        h.acquire("r3", "b")                      // 2
        let aOnR1 = h.acquire("r1", "a", wait: 10_000)  // 3: a -> x
        let bOnR1 = h.acquire("r1", "b", wait: 10_000)  // 4: b -> x
        let aOnR3 = h.acquire("r3", "a", wait: 10_000)  // 5: a -> b (no cycle yet)
        XCTAssertEqual(aOnR3.events, [.queued(origin: "n1", tag: aOnR3.tag)])
        // x leaves: a gets r1, so b (waiting on r1) now waits for a, who waits for b.
        let events = h.release("r1", "x").events
        XCTAssertNotNil(h.grant(events, tag: aOnR1.tag))
        // a's first acquisition (index 3) is newer than b's (index 2): a's wait on r3 fails.
        XCTAssertEqual(events.last, .deadlock(origin: "n1", tag: aOnR3.tag, cycle: ["a", "b"]))
        XCTAssertEqual(h.waiters("r1"), ["b"])
        XCTAssertEqual(h.waiters("r3"), [])
        _ = bOnR1
    }

    func testSharedWaiterBehindQueuedExclusiveSeesTheDeadlock() {
        // a holds r1 shared, x queues exclusive on r1; b holds r2 and queues shared on r1
        // (compatible with a, but behind x); a then waits for r2: a -> b -> a.
        let h = Harness()
        h.acquire("r1", "a", .shared)
        h.acquire("r2", "b")
        h.acquire("r1", "x", wait: 10_000)
        let bWait = h.acquire("r1", "b", .shared, wait: 10_000)
        XCTAssertEqual(bWait.events, [.queued(origin: "n1", tag: bWait.tag)])
        let aWait = h.acquire("r2", "a", wait: 10_000)
        // b (first acquisition index 2) is younger than a (index 1): b's wait fails.
        XCTAssertEqual(aWait.events, [.deadlock(origin: "n1", tag: bWait.tag, cycle: ["b", "a"]),
                                      .queued(origin: "n1", tag: aWait.tag)])
    }

    func testNoFalseDeadlockWithoutCycle() {
        let h = Harness()
        h.acquire("r1", "a")
        h.acquire("r2", "b")
        let w1 = h.acquire("r2", "a", wait: 1_000)
        let w2 = h.acquire("r1", "c", wait: 1_000)
        XCTAssertEqual(w1.events, [.queued(origin: "n1", tag: w1.tag)])
        XCTAssertEqual(w2.events, [.queued(origin: "n1", tag: w2.tag)])
        XCTAssertEqual(h.table.counters.deadlocks, 0)
    }

    // MARK: Leader change

    func testLeaderGraceNeverShortens() {
        let h = Harness()
        let t0 = h.now
        h.acquire("soon", "a", ttl: 1_000)
        h.acquire("late", "b", ttl: 60_000)
        h.acquire("soon", "w", wait: 2_000)
        h.now += 5_000  // the old leader died; its expiry of "soon" was never committed
        h.index += 1
        let events = h.table.apply(.leaderGrace(nowMs: h.now, graceMs: 3_000), index: h.index)
        XCTAssertEqual(events, [])  // nothing expires in the grace entry itself
        XCTAssertEqual(h.table.status("soon").holders.first?.expiresAtMs, h.now + 3_000)
        XCTAssertEqual(h.table.status("late").holders.first?.expiresAtMs, t0 + 60_000)
        XCTAssertEqual(h.table.status("soon").waiters.first?.deadlineMs, h.now + 3_000)
        XCTAssertEqual(h.table.nextDeadlineMs(), h.now + 3_000)
        // The holder renews within the grace and keeps the lock.
        h.now += 2_000
        let renew = h.renew("soon", "a", ttl: 10_000)
        XCTAssertEqual(renew.events, [.renewed(origin: "n1", tag: renew.tag, expiresAtMs: h.now + 10_000)])
        XCTAssertEqual(h.holders("soon"), ["a"])
        // A negative grace changes nothing.
        let before = h.table
        h.index += 1
        _ = h.table.apply(.leaderGrace(nowMs: h.now, graceMs: -50_000), index: h.index)
        XCTAssertEqual(h.table.status("late"), before.status("late"))
        XCTAssertEqual(h.table.status("soon"), before.status("soon"))
    }

    // MARK: Bounds and validation

    func testBoundsAreEnforcedWithRejections() {
        let h = Harness(limits: LockLimits(resourcesMax: 2, entriesPerResourceMax: 3, entriesMax: 5))
        h.acquire("r1", "a")
        h.acquire("r2", "a")
        let third = h.acquire("r3", "a")
        XCTAssertEqual(third.events, [.rejected(origin: "n1", tag: third.tag, reason: .tooManyResources)])
        h.acquire("r1", "b", wait: 1_000)
        h.acquire("r1", "c", wait: 1_000)
        let full = h.acquire("r1", "d", wait: 1_000)
        XCTAssertEqual(full.events, [.rejected(origin: "n1", tag: full.tag, reason: .resourceFull)])
        h.acquire("r2", "b", wait: 1_000)
        let tableFull = h.acquire("r2", "c", wait: 1_000)
        XCTAssertEqual(tableFull.events, [.rejected(origin: "n1", tag: tableFull.tag, reason: .tableFull)])
        // A conflict needs no room; a re-acquire neither.
        XCTAssertEqual(h.acquire("r2", "z").events.count, 1)
        let again = h.acquire("r1", "a")
        XCTAssertNotNil(h.grant(again.events, tag: again.tag))
        XCTAssertEqual(h.table.counters.rejected, 3)
    }

    func testInvalidArgumentsAreRejectedAndChangeNothing() {
        let h = Harness()
        let long = String(repeating: "x", count: 257)
        let cases: [(String, String, Int64, Int64, String?)] = [
            ("", "a", 30_000, 0, nil), ("r", "", 30_000, 0, nil), (long, "a", 30_000, 0, nil),
            ("r", "a\u{1}", 30_000, 0, nil), ("r", "a", 99, 0, nil), ("r", "a", 3_600_001, 0, nil),
            ("r", "a", 30_000, -1, nil), ("r", "a", 30_000, 300_001, nil), ("r", "a", 30_000, 0, ""),
            ("r\u{85}", "a", 30_000, 0, nil),
        ]
        for (resource, owner, ttl, wait, requestId) in cases {
            let result = h.acquire(resource, owner, ttl: ttl, wait: wait, requestId: requestId)
            XCTAssertEqual(result.events, [.rejected(origin: "n1", tag: result.tag, reason: .invalidArgument)],
                           "\(resource) \(owner) \(ttl) \(wait)")
        }
        for origin in ["", String(repeating: "n", count: 257)] {
            let result = h.acquire("r", "a", wait: 1_000, origin: origin)
            XCTAssertEqual(result.events, [.rejected(origin: origin, tag: result.tag, reason: .invalidArgument)])
        }
        XCTAssertEqual(h.table.resourceCount, 0)
        XCTAssertEqual(h.table.lastToken, 0)
        let ok = h.acquire(String(repeating: "é", count: 128), "a")  // 256 bytes exactly
        XCTAssertNotNil(h.grant(ok.events, tag: ok.tag))
    }

    // MARK: Counters

    func testCountersTrackOutcomes() {
        let h = Harness()
        h.acquire("r", "a", ttl: 1_000)          // granted
        h.acquire("r", "b")                      // conflict
        h.acquire("r", "c", wait: 5_000)         // queued, then granted after wait
        h.acquire("r", "a")                      // reacquired
        h.renew("r", "a", ttl: 1_000)            // renewal
        h.tick(advance: 1_000)                   // expiry -> c granted
        h.release("r", "c")                      // release
        let c = h.table.counters
        XCTAssertEqual([c.grantedImmediately, c.conflicts, c.queued, c.grantedAfterWait, c.reacquired,
                        c.renewals, c.leaseExpiries, c.releases], [1, 1, 1, 1, 1, 1, 1, 1])
        XCTAssertEqual(c.all.count, 13)
        XCTAssertEqual(h.table.heldCount, 0)
        XCTAssertEqual(h.table.waiterCount, 0)
    }
}
