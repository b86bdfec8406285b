import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../src/store/database.js';
import { buildTestGateway, type TestGateway } from './helpers/builders.js';

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
