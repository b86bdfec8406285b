// Renewing the viewer leases of a process with thousands of viewers (src/relay/lease-renewal.ts): a
// bounded number in flight, never two rounds at once, viewers that left meanwhile not given their lease
// back, the first failure ends the round. Then a round of 3,000 leases against the machine's real Redis,
// through the Redis coordinator, with viewers leaving while it runs.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ViewerLease } from '../src/coordination/coordinator.js';
import { LeaseRenewal } from '../src/relay/lease-renewal.js';
import { redisHarness } from './helpers/coordination-contract.js';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const settle = () => new Promise((r) => setImmediate(r));

void describe('LeaseRenewal', () => {
  void it('keeps at most `concurrency` renewals in flight and renews every item once', async () => {
    const pending = new Map<number, ReturnType<typeof deferred>>();
    let inFlight = 0;
    let most = 0;
    const renewal = new LeaseRenewal<number>(
      async (i) => {
        const d = deferred();
        pending.set(i, d);
        inFlight++;
        most = Math.max(most, inFlight);
        await d.promise;
        inFlight--;
      },
      { concurrency: 3 },
    );
    const round = renewal.round([0, 1, 2, 3, 4, 5, 6])!;
    await settle();
    assert.deepEqual([...pending.keys()], [0, 1, 2], 'three started, the rest wait');
    for (let i = 0; i < 7; i++) {
      pending.get(i)!.resolve();
      await settle();
    }
    assert.deepEqual(await round, { renewed: 7, skipped: 0, error: undefined });
    assert.equal(most, 3);
    assert.deepEqual(
      [...pending.keys()].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6],
    );
  });

  void it('starts no second round while one runs; the next due round after it runs again', async () => {
    const gate = deferred();
    let calls = 0;
    const renewal = new LeaseRenewal<string>(
      async () => {
        calls++;
        await gate.promise;
      },
      { concurrency: 8 },
    );
    const first = renewal.round(['a', 'b']);
    assert.ok(first);
    assert.equal(renewal.busy, true);
    assert.equal(renewal.round(['a', 'b']), null, 'a round still runs');
    gate.resolve();
    assert.equal((await first).renewed, 2);
    assert.equal(renewal.busy, false);
    const second = renewal.round(['a']);
    assert.ok(second);
    assert.equal((await second).renewed, 1);
    assert.equal(calls, 3);
  });

  void it('skips items that went away during the round, and stops at the first failure', async () => {
    const gone = new Set<number>();
    const renewedIds: number[] = [];
    const renewal = new LeaseRenewal<number>(
      (i) => {
        renewedIds.push(i);
        // The viewer after this one leaves while this renewal is on its way.
        gone.add(i + 1);
        return Promise.resolve();
      },
      { concurrency: 1, stillWanted: (i) => !gone.has(i) },
    );
    assert.deepEqual(await renewal.round([0, 1, 2, 3]), { renewed: 2, skipped: 2, error: undefined });
    assert.deepEqual(renewedIds, [0, 2]);

    const down = new Error('store down');
    let tried = 0;
    const failing = new LeaseRenewal<number>(
      (i) => {
        tried++;
        return i === 2 ? Promise.reject(down) : Promise.resolve();
      },
      { concurrency: 1 },
    );
    const round = await failing.round([0, 1, 2, 3, 4]);
    assert.deepEqual(round, { renewed: 2, skipped: 3, error: down });
    assert.equal(tried, 3, 'nothing is tried after the failure');
  });

  void it('refuses a concurrency below 1', () => {
    assert.throws(() => new LeaseRenewal(() => Promise.resolve(), { concurrency: 0 }), /at least 1/);
  });
});

void describe('LeaseRenewal against Redis', () => {
  const harness = redisHarness('redis://127.0.0.1:6379');
  after(() => harness.close());

  void it('renews 3,000 leases over 300 sessions, 64 at a time, and gives none back to viewers that left', async () => {
    const [node] = await harness.nodes(1);
    const sessions = Array.from({ length: 300 }, (_, s) => `s${s}`);
    const leases: ViewerLease[] = sessions.flatMap((sessionId) =>
      Array.from({ length: 10 }, (_, v) => ({ sessionId, viewerId: `${sessionId}-v${v}`, nodeId: 'n1' })),
    );
    // Every lease exists first (as each viewer's attach puts it), with a short life of its own.
    await Promise.all(leases.map((l) => node!.putViewer(l, 60_000)));
    // The first viewer of every session leaves (its lease removed) while the round runs.
    const left = new Set(leases.filter((l) => l.viewerId.endsWith('-v0')));
    const live = new Set(leases);
    let inFlight = 0;
    let most = 0;
    let renewedCount = 0;
    const removals: Promise<void>[] = [];
    const renewal = new LeaseRenewal<ViewerLease>(
      async (l) => {
        inFlight++;
        most = Math.max(most, inFlight);
        try {
          await node!.putViewer(l, 60_000);
        } finally {
          inFlight--;
        }
        renewedCount++;
        // Part-way through, the leavers detach (the gateway removes their leases).
        if (renewedCount === 500)
          for (const gone of left) {
            live.delete(gone);
            removals.push(node!.removeViewer(gone.sessionId, gone.viewerId));
          }
      },
      { concurrency: 64, stillWanted: (l) => live.has(l) },
    );
    const round = await renewal.round(leases);
    assert.ok(round);
    assert.equal(round.error, undefined);
    await Promise.all(removals);
    assert.ok(most > 1 && most <= 64, `in flight at most 64 and more than one (was ${most})`);
    // Leavers renewed before they left are removed after (one connection: Redis takes the commands in
    // the order they were sent); the others are not renewed: none comes back.
    const counts = await node!.countViewers(sessions);
    for (const s of sessions) assert.equal(counts.get(s), 9, `session ${s} keeps its 9 live viewers`);
    assert.equal(round.renewed + round.skipped, leases.length);
    assert.ok(round.skipped > 0, 'the leavers not yet reached were skipped');
  });
});
