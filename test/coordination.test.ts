// The coordination contract, run against both implementations: in-process (a ManualClock moves time)
// and Redis (the machine's Redis at 127.0.0.1:6379, a unique key prefix per run; two coordinators on
// it are two gateway nodes). Then Redis-only fault behaviour against a private redis-server that the
// test stops and starts: calls fail fast with COORDINATION_UNAVAILABLE and everything recovers alone.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { Coordinator } from '../src/coordination/coordinator.js';
import { MemoryCoordinator, withLockPolling } from '../src/coordination/memory-coordinator.js';
import { RedisCoordinator, parseClusterCommand } from '../src/coordination/redis-coordinator.js';
import { createCoordinator } from '../src/coordination/create-coordinator.js';
import { loadConfig } from '../src/config/config.js';
import { systemClock } from '../src/lib/clock.js';
import { createLogger } from '../src/observability/logger.js';
import { startRedisServer, type RedisServerFixture } from './helpers/redis-server.js';
import {
  commandInbox,
  contractSuite,
  isUnavailable,
  memoryHarness,
  redisHarness,
  waitFor,
} from './helpers/coordination-contract.js';

const SHARED_REDIS_URL = 'redis://127.0.0.1:6379';
const logger = createLogger({ level: 'silent' });

contractSuite('in-process', memoryHarness);
contractSuite('redis', () => redisHarness(SHARED_REDIS_URL));

void describe('redis coordinator specifics', () => {
  let h: ReturnType<typeof redisHarness>;
  let raw: Redis;
  before(() => {
    h = redisHarness(SHARED_REDIS_URL);
    raw = new Redis(SHARED_REDIS_URL, { lazyConnect: true });
  });
  after(async () => {
    // Leave nothing behind on the shared Redis.
    await raw.connect().catch(() => undefined);
    let cursor = '0';
    do {
      const [next, keys] = await raw.scan(cursor, 'MATCH', `${h.prefix}*`, 'COUNT', 500);
      if (keys.length > 0) await raw.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    raw.disconnect();
    await h.close();
  });

  void it('keeps every key under its prefix, with an expiry', async () => {
    const [a] = await h.nodes(1);
    await raw.connect().catch(() => undefined);
    const ticket = await a!.issueTicket({ userId: 'u', sessionId: 's' }, 30_000);
    const lock = await a!.tryLock('display:i1', 30_000);
    await a!.putViewer({ sessionId: 'sess-ttl', viewerId: 'v', nodeId: 'n' }, 30_000);
    for (const key of [
      `${h.prefix}ticket:{${ticket}}`,
      `${h.prefix}lock:{display:i1}`,
      `${h.prefix}fence:{display:i1}`,
      `${h.prefix}viewers:{sess-ttl}`,
    ]) {
      const ttl = await raw.pttl(key);
      assert.ok(ttl > 0, `${key} expires (pttl ${ttl})`);
    }
    assert.ok(lock);
    await a!.unlock(lock);
  });

  void it('ignores malformed messages on the command channel', async () => {
    const [a] = await h.nodes(1);
    await raw.connect().catch(() => undefined);
    const inbox = commandInbox(a!);
    const got = inbox.next();
    await raw.publish(`${h.prefix}commands`, 'not json');
    await raw.publish(`${h.prefix}commands`, JSON.stringify({ type: 'format-disk' }));
    await raw.publish(`${h.prefix}commands`, JSON.stringify({ type: 'end-session', sessionId: 7 }));
    await a!.publish({ type: 'sign-out-user', userId: 'u1' });
    assert.deepEqual(await got, { type: 'sign-out-user', userId: 'u1' });
    assert.deepEqual(inbox.received, [{ type: 'sign-out-user', userId: 'u1' }]);
    assert.equal(parseClusterCommand('{"type":"sign-out-user"}'), null);
  });
});

void describe('withLock holds a lease', () => {
  let h: ReturnType<typeof redisHarness>;
  before(() => {
    h = redisHarness(SHARED_REDIS_URL);
  });
  after(() => h.close());

  it('renews the lock while the section runs (however long), and releases it when done', async () => {
    const [a, b] = await h.nodes(2);
    const key = `lease:${Math.random().toString(36).slice(2)}`;
    let renewals = 0;
    let onRenewal = () => undefined as void;
    const counted: Pick<Coordinator, 'tryLock' | 'unlock' | 'extendLock'> = {
      tryLock: (k, ttl) => a!.tryLock(k, ttl),
      unlock: (handle) => a!.unlock(handle),
      extendLock: async (handle, ttl) => {
        const held = await a!.extendLock(handle, ttl);
        renewals++;
        onRenewal();
        return held;
      },
    };
    await withLockPolling(counted, key, 300, 1_000, async () => {
      // Four renewals, a third of the ttl apart: the section has run past its first 300 ms.
      await new Promise<void>((resolve) => {
        onRenewal = () => {
          if (renewals >= 4) resolve();
        };
      });
      assert.equal(await b!.tryLock(key, 1_000), null, 'still held past its first ttl');
    });
    const free = await b!.tryLock(key, 1_000);
    assert.ok(free, 'released when the section is done');
    await b!.unlock(free);
  });
});

void describe('redis coordinator when Redis goes away', () => {
  let server: RedisServerFixture;
  const nodes: RedisCoordinator[] = [];
  before(async () => {
    server = await startRedisServer();
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.close()));
    await server.dispose();
  });

  void it(
    'gives up within its retry budget while Redis is down and recovers by itself, pub/sub included',
    { timeout: 60_000 },
    async () => {
      // A command timeout far longer than the test: a call that waited for Redis instead of giving
      // up once its retry budget (300 ms) is spent would time the test out rather than pass.
      const make = () =>
        new RedisCoordinator({
          url: server.url,
          clock: systemClock,
          logger,
          commandTimeoutMs: 120_000,
          retryBudgetMs: 300,
          maxReconnectDelayMs: 200,
        });
      const a = make();
      const b = make();
      nodes.push(a, b);
      assert.equal(await a.waitUntilReady(10_000), true);
      assert.equal(await b.waitUntilReady(10_000), true);
      assert.equal(a.state(), 'up');

      await server.stop();
      await waitFor('state down', () => a.state() === 'down' && b.state() === 'down');
      const downAt = Date.now();
      await assert.rejects(a.issueTicket({ userId: 'u', sessionId: 's' }, 1000), isUnavailable);
      await assert.rejects(a.redeemTicket('a-ticket-that-looks-valid-000000'), isUnavailable);
      await assert.rejects(a.tryLock('k', 1000), isUnavailable);
      await assert.rejects(
        a.withLock('k', 1000, 10_000, () => Promise.resolve(1)),
        isUnavailable,
      );
      await assert.rejects(a.putViewer({ sessionId: 's', viewerId: 'v', nodeId: 'a' }, 1000), isUnavailable);
      await assert.rejects(a.countViewers(['s']), isUnavailable);
      await assert.rejects(a.publish({ type: 'sign-out-user', userId: 'u' }), isUnavailable);
      await assert.rejects(a.ping(), isUnavailable);
      // Eight calls, each retried for at most its 300 ms budget (ping not at all).
      assert.ok(Date.now() - downAt < 8 * 1_500, `gave up within the budget (${Date.now() - downAt} ms)`);

      await server.start();
      assert.equal(await a.waitUntilReady(20_000), true);
      assert.equal(await b.waitUntilReady(20_000), true);
      assert.equal(a.state(), 'up');
      await a.ping();
      const ticket = await a.issueTicket({ userId: 'u', sessionId: 's' }, 30_000);
      assert.deepEqual(await b.redeemTicket(ticket), { userId: 'u', sessionId: 's' });

      // The subscriber re-subscribes on its own; its SUBSCRIBE may land just after 'ready', so
      // publish until the other node hears one.
      const inbox = commandInbox(b);
      await waitFor('command delivered after reconnect', async () => {
        await a.publish({ type: 'end-session', sessionId: 's', reason: 'test' });
        await sleep(50);
        return inbox.received.length > 0;
      });
      assert.deepEqual(inbox.received[0], { type: 'end-session', sessionId: 's', reason: 'test' });
    },
  );
});

void describe('createCoordinator', () => {
  void it('picks in-process coordination without REDIS_URL and Redis with it', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'cd-coord-'));
    after(() => rm(dataDir, { recursive: true, force: true }));
    const base = { DATA_DIR: dataDir };
    const memory = createCoordinator(loadConfig({ ...base }), { clock: systemClock, logger });
    assert.ok(memory instanceof MemoryCoordinator);
    await memory.close();
    const redis = createCoordinator(loadConfig({ ...base, REDIS_URL: SHARED_REDIS_URL }), {
      clock: systemClock,
      logger,
    });
    assert.ok(redis instanceof RedisCoordinator);
    assert.equal(await redis.waitUntilReady(10_000), true);
    await redis.ping();
    await redis.close();
  });
});
