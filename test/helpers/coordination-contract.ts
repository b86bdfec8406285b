// The coordination contract every implementation passes (in-process, Redis on one server, through
// Sentinel, on a Redis Cluster): test/coordination.test.ts and test/redis-failover.test.ts run it.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisSettings } from '../../src/config/config.js';
import type { ClusterCommand, Coordinator } from '../../src/coordination/coordinator.js';
import { MemoryCoordinator } from '../../src/coordination/memory-coordinator.js';
import { RedisCoordinator, type RedisCoordinatorOptions } from '../../src/coordination/redis-coordinator.js';
import { AppError } from '../../src/errors/errors.js';
import { ManualClock, systemClock } from '../../src/lib/clock.js';
import { createLogger } from '../../src/observability/logger.js';

/** A lease of a node that died: it lapses by itself. */
const DEAD_LEASE_MS = 3_000;

const logger = createLogger({ level: 'silent' });

export interface Harness {
  /** `n` coordinators that share state, as `n` gateway nodes would. */
  nodes(n: number): Promise<Coordinator[]>;
  /** Lets `ms` of lease/lock/ticket time pass. */
  advance(ms: number): Promise<void>;
}

export function isUnavailable(e: unknown): boolean {
  return e instanceof AppError && e.code === 'COORDINATION_UNAVAILABLE';
}

export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Collects commands a node receives; `next()` resolves with the next one. */
export function commandInbox(node: Coordinator): {
  received: ClusterCommand[];
  next(): Promise<ClusterCommand>;
} {
  const received: ClusterCommand[] = [];
  const waiters: ((c: ClusterCommand) => void)[] = [];
  node.onCommand((c) => {
    received.push(c);
    waiters.shift()?.(c);
  });
  return { received, next: () => new Promise((resolve) => waiters.push(resolve)) };
}

export function memoryHarness(): Harness & { close(): Promise<void> } {
  const clock = new ManualClock();
  // One process is the whole "cluster": every node is the same in-process coordinator.
  const coordinator = new MemoryCoordinator(clock);
  return {
    nodes: (n) => Promise.resolve(Array.from({ length: n }, () => coordinator)),
    advance: (ms) => {
      clock.advance(ms);
      return Promise.resolve();
    },
    close: () => coordinator.close(),
  };
}

/** Coordinators on one Redis (a URL, or Sentinel / Cluster settings), under a fresh key prefix. */
export function redisHarness(
  target: string | RedisSettings,
  options: Partial<RedisCoordinatorOptions> = {},
): Harness & { prefix: string; close(): Promise<void> } {
  const prefix = `cd:test:${randomBytes(6).toString('hex')}:`;
  const open: RedisCoordinator[] = [];
  const connection = typeof target === 'string' ? { url: target } : { connection: target };
  return {
    prefix,
    async nodes(n) {
      const made = Array.from(
        { length: n },
        () =>
          new RedisCoordinator({ ...connection, clock: systemClock, logger, keyPrefix: prefix, ...options }),
      );
      open.push(...made);
      for (const node of made) assert.equal(await node.waitUntilReady(10_000), true, 'redis ready');
      return made;
    },
    // Redis expires keys on its own clock: real time has to pass. TTLs in these tests are short.
    advance: (ms) => sleep(ms),
    async close() {
      await Promise.all(open.map((c) => c.close()));
    },
  };
}

export function contractSuite(
  name: string,
  make: () => (Harness & { close(): Promise<void> }) | Promise<Harness & { close(): Promise<void> }>,
): void {
  void describe(`coordination contract: ${name}`, () => {
    let h: Harness & { close(): Promise<void> };
    before(async () => {
      h = await make();
    });
    after(() => h.close());

    void it('a ticket is redeemed once, on any node, then forgotten', async () => {
      const [a, b] = await h.nodes(2);
      const ticket = await a!.issueTicket({ userId: 'u1', sessionId: 's1' }, 30_000);
      assert.match(ticket, /^[A-Za-z0-9_-]{32,}$/);
      assert.deepEqual(await b!.redeemTicket(ticket), { userId: 'u1', sessionId: 's1' });
      assert.equal(await a!.redeemTicket(ticket), null);
      assert.equal(await b!.redeemTicket(ticket), null);
    });

    void it("a share guest's ticket carries who they are and the share, on any node", async () => {
      const [a, b] = await h.nodes(2);
      const guest = {
        shareId: 'sh1',
        mode: 'view' as const,
        userId: null,
        name: 'Bob',
        expiresAt: 1_234_567,
      };
      const ticket = await a!.issueTicket({ userId: 'u1', sessionId: 's1', guest }, 30_000);
      assert.deepEqual(await b!.redeemTicket(ticket), { userId: 'u1', sessionId: 's1', guest });
      await a!.putViewer(
        { sessionId: 's-g', viewerId: 'g1', nodeId: 'a', guest: { shareId: 'sh1', name: 'Bob' } },
        60_000,
      );
      await b!.putViewer({ sessionId: 's-g', viewerId: 'o1', nodeId: 'b' }, 60_000);
      const leases = (await b!.listViewers(['s-g'])).get('s-g') ?? [];
      assert.deepEqual(
        leases.sort((x, y) => x.viewerId.localeCompare(y.viewerId)),
        [
          { sessionId: 's-g', viewerId: 'g1', nodeId: 'a', guest: { shareId: 'sh1', name: 'Bob' } },
          { sessionId: 's-g', viewerId: 'o1', nodeId: 'b' },
        ],
      );
      await a!.removeViewer('s-g', 'g1');
      await a!.removeViewer('s-g', 'o1');
    });

    void it('two nodes racing to redeem one ticket: exactly one gets the claims', async () => {
      const [a, b] = await h.nodes(2);
      for (let i = 0; i < 20; i++) {
        const ticket = await a!.issueTicket({ userId: 'u1', sessionId: `s${i}` }, 30_000);
        const results = await Promise.all([a!.redeemTicket(ticket), b!.redeemTicket(ticket)]);
        assert.equal(results.filter((r) => r !== null).length, 1);
      }
    });

    void it('an expired or unknown ticket is refused', async () => {
      const [a] = await h.nodes(1);
      const ticket = await a!.issueTicket({ userId: 'u1', sessionId: 's1' }, 100);
      await h.advance(150);
      assert.equal(await a!.redeemTicket(ticket), null);
      assert.equal(await a!.redeemTicket('no-such-ticket-at-all-0000000000'), null);
      assert.equal(await a!.redeemTicket(''), null);
      assert.equal(await a!.redeemTicket('../../etc/passwd'), null);
    });

    void it('a single-use value is taken once, on any node, and lapses after its ttl', async () => {
      const [a, b] = await h.nodes(2);
      const id = randomBytes(16).toString('base64url');
      await a!.putOnce('oidc', id, '{"nonce":"n"}', 30_000);
      assert.equal(await b!.takeOnce('mfa', id), null, 'kinds are apart');
      const taken = await Promise.all([a!.takeOnce('oidc', id), b!.takeOnce('oidc', id)]);
      assert.deepEqual(
        taken.filter((t) => t !== null),
        ['{"nonce":"n"}'],
      );
      const late = randomBytes(16).toString('base64url');
      await a!.putOnce('mfa', late, 'x', 100);
      await h.advance(150);
      assert.equal(await b!.takeOnce('mfa', late), null);
      assert.equal(await b!.takeOnce('mfa', '../x'), null);
    });

    void it('a lock is exclusive across nodes and only its owner releases it', async () => {
      const [a, b] = await h.nodes(2);
      const key = `display:${randomBytes(4).toString('hex')}`;
      const held = await a!.tryLock(key, 30_000);
      assert.ok(held);
      assert.equal(await b!.tryLock(key, 30_000), null);
      await b!.unlock({ key, token: 'not-the-owner', fence: 0 });
      assert.equal(await b!.tryLock(key, 30_000), null, 'a wrong token must not release the lock');
      await a!.unlock(held);
      const next = await b!.tryLock(key, 30_000);
      assert.ok(next);
      await b!.unlock(next);
    });

    void it('every grant of a lock key carries a larger fencing number', async () => {
      const [a, b] = await h.nodes(2);
      const key = `fence:${randomBytes(4).toString('hex')}`;
      const first = await a!.tryLock(key, 30_000);
      assert.ok(first && first.fence >= 1);
      await a!.unlock(first);
      const second = await b!.tryLock(key, 100);
      assert.ok(second && second.fence > first.fence);
      await h.advance(150);
      const third = await a!.tryLock(key, 30_000);
      assert.ok(third && third.fence > second.fence, 'a grant after a lapse is fenced higher too');
      await a!.unlock(third);
    });

    void it('a lock lapses after its ttl, and the late first owner cannot release the new holder', async () => {
      const [a, b] = await h.nodes(2);
      const key = `display:${randomBytes(4).toString('hex')}`;
      const first = await a!.tryLock(key, 100);
      assert.ok(first);
      await h.advance(150);
      const second = await b!.tryLock(key, 30_000);
      assert.ok(second, 'an expired lock can be taken');
      await a!.unlock(first);
      assert.equal(await a!.tryLock(key, 30_000), null, 'the stale token released nothing');
      await b!.unlock(second);
    });

    void it('only the holder extends a lock, and an extended lock outlives its first ttl', async () => {
      const [a, b] = await h.nodes(2);
      const key = `lease:${randomBytes(4).toString('hex')}`;
      const held = await a!.tryLock(key, 100);
      assert.ok(held);
      assert.equal(await b!.extendLock({ key, token: 'not-the-owner', fence: 0 }, 30_000), false);
      assert.equal(await a!.extendLock(held, 30_000), true);
      await h.advance(150);
      assert.equal(await b!.tryLock(key, 30_000), null, 'still held past its first ttl');
      await a!.unlock(held);

      const lapsing = await a!.tryLock(key, 100);
      assert.ok(lapsing);
      await h.advance(150);
      assert.equal(await a!.extendLock(lapsing, 30_000), false, 'a lapsed lock is not revived');
      const next = await b!.tryLock(key, 30_000);
      assert.ok(next, 'and can be taken');
      await b!.unlock(next);
    });

    void it('withLock serialises critical sections across nodes and releases on failure', async () => {
      const nodes = await h.nodes(2);
      const key = `limit:${randomBytes(4).toString('hex')}`;
      let counter = 0;
      let inside = 0;
      let maxInside = 0;
      await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          nodes[i % 2]!.withLock(key, 10_000, 10_000, async () => {
            inside++;
            maxInside = Math.max(maxInside, inside);
            const seen = counter;
            await sleep(2);
            counter = seen + 1;
            inside--;
          }),
        ),
      );
      assert.equal(counter, 12, 'no lost update');
      assert.equal(maxInside, 1);

      await assert.rejects(
        nodes[0]!.withLock(key, 10_000, 1_000, () => Promise.reject(new Error('boom'))),
        /boom/,
      );
      const again = await nodes[1]!.tryLock(key, 1_000);
      assert.ok(again, 'the lock was released after the failure');
      await nodes[1]!.unlock(again);
    });

    void it('withLock gives up with BUSY (503, retry) when the lock stays held', async () => {
      const [a, b] = await h.nodes(2);
      const key = `busy:${randomBytes(4).toString('hex')}`;
      const held = await a!.tryLock(key, 30_000);
      assert.ok(held);
      await assert.rejects(
        b!.withLock(key, 1_000, 50, () => Promise.resolve('ran')),
        (e: unknown) => e instanceof AppError && e.code === 'BUSY' && e.status === 503,
      );
      await a!.unlock(held);
    });

    void it('viewer leases are counted cluster-wide, renewed, removed and lapse by themselves', async () => {
      const [a, b] = await h.nodes(2);
      const s1 = `s1-${randomBytes(3).toString('hex')}`;
      const s2 = `s2-${randomBytes(3).toString('hex')}`;
      const s3 = `s3-${randomBytes(3).toString('hex')}`;
      await a!.putViewer({ sessionId: s1, viewerId: 'v1', nodeId: 'a' }, 300);
      await b!.putViewer({ sessionId: s1, viewerId: 'v2', nodeId: 'b' }, 300);
      await b!.putViewer({ sessionId: s2, viewerId: 'v3', nodeId: 'b' }, 30_000);
      assert.deepEqual(
        [...(await a!.countViewers([s1, s2, s3])).entries()],
        [
          [s1, 2],
          [s2, 1],
          [s3, 0],
        ],
      );
      assert.equal((await b!.countViewers([s1])).get(s1), 2);
      assert.equal((await a!.countViewers([])).size, 0);
      // Who serves each viewer, for the admin's session list.
      const listed = await b!.listViewers([s1, s3]);
      assert.deepEqual(
        listed
          .get(s1)
          ?.map((l) => [l.viewerId, l.nodeId])
          .sort(),
        [
          ['v1', 'a'],
          ['v2', 'b'],
        ],
      );
      assert.deepEqual(listed.get(s3), []);

      // Renewing the same viewer does not add one.
      await a!.putViewer({ sessionId: s1, viewerId: 'v1', nodeId: 'a' }, 300);
      assert.equal((await a!.countViewers([s1])).get(s1), 2);

      await b!.removeViewer(s1, 'v2');
      assert.equal((await a!.countViewers([s1])).get(s1), 1);
      await a!.removeViewer(s1, 'never-there');

      // v1 renewed half-way stays; v1 not renewed lapses.
      await h.advance(200);
      await a!.putViewer({ sessionId: s1, viewerId: 'v1', nodeId: 'a' }, 300);
      await h.advance(200);
      assert.equal((await b!.countViewers([s1])).get(s1), 1, 'renewed lease still live');
      await h.advance(200);
      assert.equal((await b!.countViewers([s1])).get(s1), 0, 'lapsed lease no longer counts');
      assert.deepEqual((await a!.listViewers([s1])).get(s1), [], 'nor is it listed');
      assert.equal((await b!.countViewers([s2])).get(s2), 1);
    });

    void it('SESSION_MAX_VIEWERS is exact: concurrent adds on every node never pass the cap', async () => {
      const nodes = await h.nodes(4);
      const s = `cap-${randomBytes(3).toString('hex')}`;
      const lease = (viewerId: string, node: number) => ({ sessionId: s, viewerId, nodeId: `n${node}` });
      // The owner's viewer (not capped) holds one of three places; a dead node's guest a second, briefly.
      // Against a real Redis the lease lapses in real time: it must outlive the concurrent adds below on
      // a loaded machine (300 ms did not, in a full-suite run at load 20).
      await nodes[0]!.putViewer(lease('owner', 0), 60_000);
      assert.equal(await nodes[1]!.addViewerWithin(lease('dead', 1), DEAD_LEASE_MS, 3), true);
      // Twelve guests at one instant, three on each node: exactly one gets the last place.
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) => nodes[i % 4]!.addViewerWithin(lease(`g${i}`, i % 4), 60_000, 3)),
      );
      assert.equal(results.filter(Boolean).length, 1, `admitted: ${results.join(',')}`);
      assert.equal((await nodes[2]!.countViewers([s])).get(s), 3);
      const winner = `g${results.indexOf(true)}`;
      // A viewer already in renews at the cap; a newcomer is refused.
      assert.equal(await nodes[3]!.addViewerWithin(lease(winner, 0), 60_000, 3), true);
      assert.equal(await nodes[3]!.addViewerWithin(lease('late', 3), 60_000, 3), false);
      // A dead node's lease lapses and gives its place back.
      await h.advance(DEAD_LEASE_MS + 100);
      const again = await Promise.all(
        Array.from({ length: 6 }, (_, i) => nodes[i % 4]!.addViewerWithin(lease(`h${i}`, i % 4), 60_000, 3)),
      );
      assert.equal(again.filter(Boolean).length, 1, `admitted after the lapse: ${again.join(',')}`);
      // A detach (removeViewer) frees a place at once.
      await nodes[1]!.removeViewer(s, winner);
      assert.equal(await nodes[2]!.addViewerWithin(lease('after-detach', 2), 60_000, 3), true);
      assert.equal((await nodes[0]!.countViewers([s])).get(s), 3);
      const listed = (await nodes[0]!.listViewers([s])).get(s)!.map((l) => l.viewerId);
      assert.ok(listed.includes('after-detach') && listed.includes('owner'), listed.join(','));
    });

    void it('a published command reaches every node, the sender included', async () => {
      const [a, b] = await h.nodes(2);
      const inboxA = commandInbox(a!);
      const inboxB = commandInbox(b!);
      const command: ClusterCommand = { type: 'end-session', sessionId: 's-x', reason: 'ended by owner' };
      const gotA = inboxA.next();
      const gotB = inboxB.next();
      await a!.publish(command);
      assert.deepEqual(await gotA, command);
      assert.deepEqual(await gotB, command);
      const signOut: ClusterCommand = { type: 'sign-out-user', userId: 'u-9' };
      const gotB2 = inboxB.next();
      // A hears it too, maybe later than B (on a cluster it crosses the bus): wait for it, so the
      // next waiter on A is not handed this one.
      const gotA1 = inboxA.next();
      await b!.publish(signOut);
      assert.deepEqual(await gotB2, signOut);
      assert.deepEqual(await gotA1, signOut);
      const revoke: ClusterCommand = { type: 'revoke-share', shareId: 'sh-9' };
      const gotA2 = inboxA.next();
      await b!.publish(revoke);
      assert.deepEqual(await gotA2, revoke);
    });

    void it('ping answers and state is up', async () => {
      const [a] = await h.nodes(1);
      await a!.ping();
      assert.equal(a!.state(), 'up');
    });
  });
}
