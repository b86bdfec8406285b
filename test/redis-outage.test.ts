// A Redis outage for one gateway or for every gateway (issue 11), with real redis-server processes on
// free ports and two gateways sharing one store (PostgreSQL, and the embedded store's file). Each
// gateway has a Redis of its own, so one can be stopped for one gateway only. Time (REDIS_RETRY_MS, the
// node rows' age) moves on an injected clock; each gateway's beat is called by the test, not a timer.
//
//   Redis gone for one gateway only → that one answers /api/ready 503 (`local`), the other 200.
//   A peer whose row went stale (a gateway gone) does not count as one that reaches Redis.
//   Redis gone for both → both 200 with checks.coordination false (`cluster-wide`); a connect answers
//   503 COORDINATION_UNAVAILABLE with Retry-After while the instance list answers 200.
//   Redis back for one → the other is the odd one out; back for both → ready, the gauge back to 0.
//   Redis down for both at once → neither is ever taken out (no beat-long window of all 503).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RedisCoordinator } from '../src/coordination/redis-coordinator.js';
import { COORDINATION_BEAT_MS, LIVE_BEATS } from '../src/coordination/coordination-watch.js';
import { ManualClock } from '../src/lib/clock.js';
import { buildTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { createTestDatabase } from './helpers/postgres-database.js';
import { startRedisServer, type RedisServerFixture } from './helpers/redis-server.js';

const RETRY_MS = 300;

interface Ready {
  ready: boolean;
  checks: { database: boolean; coordination?: boolean };
  coordinationOutage?: string;
}

async function ready(gw: TestGateway): Promise<{ status: number; body: Ready }> {
  const res = await gw.app.inject({ method: 'GET', url: '/api/ready' });
  return { status: res.statusCode, body: res.json<Ready>() };
}

async function outageGauge(gw: TestGateway): Promise<Record<string, number>> {
  const metric = await gw.metrics.registry.getSingleMetric('clouddesk_coordination_outage')?.get();
  return Object.fromEntries((metric?.values ?? []).map((v) => [String(v.labels.scope), v.value]));
}

/** Until the gateway's Redis client has reconnected (its own backoff, real time). */
async function redisBack(gw: TestGateway): Promise<void> {
  const ok = await (gw.coordinator as RedisCoordinator).waitUntilReady(20_000);
  assert.equal(ok, true, 'Redis client reconnected');
}

for (const kind of ['postgres', 'sqlite'] as const) {
  void describe(`Redis outage: one gateway or all (${kind} store)`, { timeout: 120_000 }, () => {
    const clock = new ManualClock(Date.now());
    let redisA: RedisServerFixture;
    let redisB: RedisServerFixture;
    let a: TestGateway;
    let b: TestGateway;
    let dropDatabase: (() => Promise<void>) | null = null;
    let sharedDir: string | null = null;
    const beat = () => Promise.all([a.coordinationWatch.beat(), b.coordinationWatch.beat()]);

    before(async () => {
      [redisA, redisB] = await Promise.all([startRedisServer(), startRedisServer()]);
      let storeEnv: Record<string, string>;
      if (kind === 'postgres') {
        const db = await createTestDatabase();
        dropDatabase = db.drop;
        storeEnv = { DATABASE_URL: db.url };
      } else {
        sharedDir = mkdtempSync(join(tmpdir(), 'clouddesk-redis-outage-'));
        storeEnv = { DATA_DIR: sharedDir };
      }
      const env = (node: string, redis: RedisServerFixture) => ({
        ...storeEnv,
        NODE_ID: node,
        REDIS_URL: redis.url,
        REDIS_RETRY_MS: String(RETRY_MS),
        REGISTRATION: 'open',
      });
      a = await buildTestGateway(env('node-a', redisA), { clock });
      b = await buildTestGateway(env('node-b', redisB), { clock });
      await Promise.all([redisBack(a), redisBack(b)]);
    });
    after(async () => {
      await Promise.all([a?.cleanup(), b?.cleanup()]);
      await Promise.all([redisA?.dispose(), redisB?.dispose()]);
      await dropDatabase?.();
      if (sharedDir) rmSync(sharedDir, { recursive: true, force: true });
    });

    it('503 for the one gateway cut off from Redis; 200 on every gateway when Redis is down for all', async () => {
      const owner = await newUser(a);
      const instance = await newInstance(
        a,
        owner,
        { host: '127.0.0.1', port: 22, user: { username: 'nobody', password: 'pw', privateKey: '' } },
        { auth: 'password' },
      );
      await beat();
      for (const gw of [a, b]) {
        assert.deepEqual((await ready(gw)).body, {
          ready: true,
          draining: false,
          checks: { database: true, coordination: true },
        });
      }

      // Redis gone for gateway A only: within REDIS_RETRY_MS nothing changes (a failover is waited out).
      await redisA.stop();
      await beat();
      assert.equal((await ready(a)).status, 200);
      clock.advance(RETRY_MS + 1);
      await beat();
      const cutOff = await ready(a);
      assert.equal(cutOff.status, 503, 'B reaches Redis: A alone is cut off');
      assert.deepEqual(cutOff.body.checks, { database: true, coordination: false });
      assert.equal(cutOff.body.coordinationOutage, 'local');
      assert.deepEqual(await outageGauge(a), { local: 1, 'cluster-wide': 0 });
      assert.equal((await ready(b)).status, 200);
      assert.deepEqual(await outageGauge(b), { local: 0, 'cluster-wide': 0 });

      // B stops writing its row (as a gateway that is gone would): once it is older than the live window
      // A has no live peer that reaches Redis, and stays in the balancer.
      clock.advance(LIVE_BEATS * COORDINATION_BEAT_MS + 1);
      await a.coordinationWatch.beat();
      assert.equal((await ready(a)).body.coordinationOutage, 'cluster-wide');
      await b.coordinationWatch.beat();
      assert.equal((await ready(a)).status, 503, "B's fresh row: A is the odd one out again");

      // Redis gone for B too: once B's own check has failed past REDIS_RETRY_MS, no live node reaches
      // Redis and both stay ready.
      await redisB.stop();
      await beat();
      clock.advance(RETRY_MS + 1);
      await beat();
      for (const gw of [a, b]) {
        const r = await ready(gw);
        assert.equal(r.status, 200, `${gw.config.cluster.nodeId} stays ready`);
        assert.deepEqual(r.body, {
          ready: true,
          draining: false,
          checks: { database: true, coordination: false },
          coordinationOutage: 'cluster-wide',
        });
        assert.deepEqual(await outageGauge(gw), { local: 0, 'cluster-wide': 1 });
      }

      // What needs Redis answers a coded 503 with Retry-After; what does not keeps answering.
      const connect = await a.app.inject({
        method: 'POST',
        url: '/api/sessions/connect',
        headers: owner.auth,
        payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
      });
      assert.equal(connect.statusCode, 503);
      assert.equal(connect.json<{ error: { code: string } }>().error.code, 'COORDINATION_UNAVAILABLE');
      assert.equal(connect.headers['retry-after'], '1');
      for (const gw of [a, b]) {
        const list = await gw.app.inject({ method: 'GET', url: '/api/instances', headers: owner.auth });
        assert.equal(list.statusCode, 200, list.body);
        assert.deepEqual(
          list.json<{ data: { id: string }[] }>().data.map((i) => i.id),
          [instance.id],
        );
      }
      const health = await b.app.inject({ method: 'GET', url: '/api/health' });
      assert.equal(health.json<{ status: string }>().status, 'degraded');

      // Redis back for B only: A is the odd one out again.
      await redisB.start();
      await redisBack(b);
      await beat();
      assert.equal((await ready(b)).status, 200);
      assert.equal((await ready(a)).body.coordinationOutage, 'local');
      assert.equal((await ready(a)).status, 503);

      // And for A: both ready, no outage.
      await redisA.start();
      await redisBack(a);
      await beat();
      for (const gw of [a, b]) {
        assert.deepEqual((await ready(gw)).body.checks, { database: true, coordination: true });
        assert.deepEqual(await outageGauge(gw), { local: 0, 'cluster-wide': 0 });
      }
    });

    it('Redis down for both at once: no moment where every gateway is out', async () => {
      await beat();
      clock.advance(1_000);
      await Promise.all([redisA.stop(), redisB.stop()]);
      for (const gw of [a, b]) assert.equal((await ready(gw)).status, 200, 'within REDIS_RETRY_MS');
      // Past the grace, before either has written its row again: each peer's last success is older than
      // this node's first failure, so neither is taken for a node that still reaches Redis.
      clock.advance(RETRY_MS + 1);
      for (const gw of [a, b]) {
        const r = await ready(gw);
        assert.equal(r.status, 200);
        assert.equal(r.body.coordinationOutage, 'cluster-wide');
      }
      await Promise.all([redisA.start(), redisB.start()]);
      await Promise.all([redisBack(a), redisBack(b)]);
      for (const gw of [a, b]) assert.equal((await ready(gw)).body.checks.coordination, true);
    });
  });
}
