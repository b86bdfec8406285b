import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fastify from 'fastify';
import { registerHealthRoutes } from '../src/http/health.routes.js';
import { CoordinationWatch } from '../src/coordination/coordination-watch.js';
import { ManualClock } from '../src/lib/clock.js';
import { openStore, type Store } from '../src/store/database.js';
import { buildTestGateway, captureLogger, type TestGateway } from './helpers/builders.js';

describe('health and readiness', () => {
  let gw: TestGateway;
  let store: Store;
  let storeUp = true;
  const dir = mkdtempSync(join(tmpdir(), 'clouddesk-health-'));

  before(async () => {
    const real = await openStore({ databaseUrl: null, dataDir: dir });
    // The real store, with a switch to make it stop answering (as a PostgreSQL outage would).
    store = {
      ...real,
      ping: (ms) => (storeUp ? real.ping(ms) : Promise.reject(new Error('database ping timed out'))),
    };
    gw = await buildTestGateway({}, { store });
  });
  after(async () => {
    await gw.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('liveness reports process facts, counts and dependency states', async () => {
    const res = await gw.app.inject({ method: 'GET', url: '/api/health' });
    assert.equal(res.statusCode, 200);
    const h = res.json();
    assert.equal(h.status, 'healthy');
    assert.equal(h.processId, process.pid);
    assert.equal(typeof h.uptime, 'number');
    assert.equal(typeof h.memory.rssMb, 'number');
    assert.deepEqual(Object.keys(h.connections).sort(), [
      'sessionsWithViewers',
      'sshChannels',
      'sshConnections',
      'websockets',
    ]);
    assert.deepEqual(h.dependencies.database, { kind: 'sqlite', state: 'connected' });
    assert.deepEqual(h.dependencies.coordination, { kind: 'memory', state: 'in-process' });
  });

  test('readiness is 200 while the store answers and 503 when it does not', async () => {
    const ok = await gw.app.inject({ method: 'GET', url: '/api/ready' });
    assert.equal(ok.statusCode, 200);
    assert.deepEqual(ok.json(), { ready: true, draining: false, checks: { database: true } });
    storeUp = false;
    try {
      const down = await gw.app.inject({ method: 'GET', url: '/api/ready' });
      assert.equal(down.statusCode, 503);
      assert.equal(down.json().ready, false);
      const health = await gw.app.inject({ method: 'GET', url: '/api/health' });
      assert.equal(health.statusCode, 503);
      assert.equal(health.json().status, 'unhealthy');
    } finally {
      storeUp = true;
    }
  });

  test('security headers are set on API answers', async () => {
    const res = await gw.app.inject({ method: 'GET', url: '/api/health' });
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.match(String(res.headers['content-security-policy']), /default-src 'none'/);
    assert.ok(res.headers['x-frame-options']);
  });
});

// Issue 14.15: a load balancer polling /api/ready every 2 s, and every scrape, wrote two info lines.
describe('request logging', () => {
  type Line = { level: number; msg: string; req?: { url?: string }; res?: { statusCode?: number } };
  const parse = (lines: string[]) => lines.map((l) => JSON.parse(l) as Line);
  const requests = (lines: Line[]) =>
    lines.filter((l) => l.msg === 'incoming request' || l.msg === 'request completed');

  async function probeAndCall(gw: TestGateway): Promise<void> {
    for (const url of ['/api/health', '/api/ready', '/api/ready?from=lb']) {
      assert.equal((await gw.app.inject({ method: 'GET', url })).statusCode, 200, url);
    }
    const metrics = await gw.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: 'Bearer metrics-token-for-tests' },
    });
    assert.equal(metrics.statusCode, 200);
    assert.equal((await gw.app.inject({ method: 'GET', url: '/api/auth/me' })).statusCode, 401);
  }

  test('health, readiness and metrics requests are logged at debug; every other request at info', async () => {
    const { logger, lines } = captureLogger('debug');
    const gw = await buildTestGateway({ METRICS_TOKEN: 'metrics-token-for-tests' }, { logger });
    try {
      await probeAndCall(gw);
    } finally {
      await gw.cleanup();
    }
    const logged = requests(parse(lines));
    const byLevel = (level: number) => logged.filter((l) => l.level === level).map((l) => l.msg);
    // 4 probes × (incoming + completed) at debug (20); the one API call's two lines at info (30).
    assert.deepEqual(byLevel(20), Array(4).fill(['incoming request', 'request completed']).flat());
    assert.deepEqual(byLevel(30), ['incoming request', 'request completed']);
    const infoIncoming = logged.find((l) => l.level === 30 && l.msg === 'incoming request');
    assert.equal(infoIncoming?.req?.url, '/api/auth/me');
  });

  test('at LOG_LEVEL=info a probe writes no line at all', async () => {
    const { logger, lines } = captureLogger('info');
    const gw = await buildTestGateway({ METRICS_TOKEN: 'metrics-token-for-tests' }, { logger });
    try {
      await probeAndCall(gw);
    } finally {
      await gw.cleanup();
    }
    const logged = requests(parse(lines));
    assert.deepEqual(
      logged.map((l) => [l.msg, l.req?.url ?? l.res?.statusCode]),
      [
        ['incoming request', '/api/auth/me'],
        ['request completed', 401],
      ],
    );
  });
});

void describe('readiness and Redis', () => {
  test('not ready once Redis has failed its check for longer than the retry budget; ready again when it answers', async () => {
    const clock = new ManualClock(1_000_000);
    let redisUp = false;
    const coordinator = {
      ping: () => (redisUp ? Promise.resolve() : Promise.reject(new Error('timeout'))),
    };
    const app = fastify();
    registerHealthRoutes(app, {
      store: { ping: () => Promise.resolve(), dialect: 'postgres' },
      coordinator,
      coordinationKind: 'redis',
      // No peers to ask: every outage past the grace counts as this node's alone.
      coordinationWatch: new CoordinationWatch(
        { coordinator, nodes: null, clock, logger: captureLogger().logger },
        { nodeId: 'n', graceMs: 5_000, beatMs: 5_000 },
      ),
      nodeId: 'n',
      role: 'all',
      isDraining: () => false,
      counts: () => ({}),
    });
    const ready = async () => {
      const res = await app.inject({ method: 'GET', url: '/api/ready' });
      return { status: res.statusCode, body: res.json<{ checks: Record<string, boolean> }>() };
    };
    // A failover blip shorter than the budget (requests wait it out) keeps the node in the balancer.
    assert.deepEqual(await ready(), {
      status: 200,
      body: { ready: true, draining: false, checks: { database: true, coordination: true } },
    });
    clock.advance(4_000);
    assert.equal((await ready()).status, 200);
    // Cut off for longer (a partition, an outage): out of the balancer.
    clock.advance(2_000);
    assert.deepEqual(await ready(), {
      status: 503,
      body: {
        ready: false,
        draining: false,
        checks: { database: true, coordination: false },
        coordinationOutage: 'local',
      },
    });
    redisUp = true;
    assert.equal((await ready()).status, 200);
    // A new failure starts a new grace period.
    redisUp = false;
    clock.advance(60_000);
    assert.equal((await ready()).status, 200);
    await app.close();
  });
});
