// Redis that fails over, with real servers on free loopback ports: one primary + one replica + three
// sentinels, and a three-primary + three-replica Redis Cluster (test/helpers/redis-ha.ts).
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config/config.js';
import { createCoordinator } from '../src/coordination/create-coordinator.js';
import { RedisCoordinator } from '../src/coordination/redis-coordinator.js';
import { systemClock } from '../src/lib/clock.js';
import { createLogger } from '../src/observability/logger.js';
import { freePort } from './helpers/free-port.js';
import { spawnRedisServer } from './helpers/redis-server.js';
import type { RedisSettings } from '../src/config/config.js';
import type { Coordinator, LockHandle } from '../src/coordination/coordinator.js';
import { AppError } from '../src/errors/errors.js';
import { commandInbox, contractSuite, redisHarness, waitFor } from './helpers/coordination-contract.js';
import { startGatewayProcess, type GatewayProcess } from './helpers/gateway-process.js';
import { createTestDatabase } from './helpers/postgres-database.js';
import { RfbTestClient } from './helpers/rfb-client.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { TEST_SECRETS } from './helpers/test-secrets.js';
import {
  startRedisCluster,
  startRedisSentinelSet,
  type RedisClusterFixture,
  type RedisSentinelFixture,
} from './helpers/redis-ha.js';

let sentinel: RedisSentinelFixture | undefined;
let cluster: RedisClusterFixture | undefined;

const sentinelSettings = (f: RedisSentinelFixture): RedisSettings => ({
  mode: 'sentinel',
  sentinels: f.sentinels,
  name: f.masterName,
  sentinelPassword: null,
  username: null,
  password: null,
  tls: null,
});
const clusterSettings = (f: RedisClusterFixture): RedisSettings => ({
  mode: 'cluster',
  nodes: f.nodes,
  username: null,
  password: null,
  tls: null,
});

void describe('Redis through Sentinel and on a Cluster', { timeout: 120_000 }, () => {
  before(async () => {
    [sentinel, cluster] = await Promise.all([startRedisSentinelSet(), startRedisCluster()]);
  });
  after(async () => {
    await Promise.all([sentinel?.dispose(), cluster?.dispose()]);
  });

  contractSuite('redis through sentinel', () => redisHarness(sentinelSettings(sentinel!)));
  contractSuite('redis cluster', () => redisHarness(clusterSettings(cluster!)));

  void it('Sentinel: SIGKILL the primary mid-traffic — a blip, not an outage', async (t) => {
    await coordinatorFailover(t, sentinelSettings(sentinel!), async () => {
      const killed = await sentinel!.killPrimary();
      return { healed: sentinel!.waitForNewPrimary(killed).then(() => undefined) };
    });
  });

  void it('Cluster: SIGKILL a primary mid-traffic — a blip, not an outage', async (t) => {
    await coordinatorFailover(t, clusterSettings(cluster!), async () => {
      const killed = await cluster!.killPrimary();
      return { healed: cluster!.waitForFailover(killed) };
    });
  });
});

const RETRY_BUDGET_MS = 8_000;

/**
 * Two coordinators (two gateway nodes) under a steady stream of ticket issues and redemptions; the
 * primary is SIGKILLed. Checks what docs/coordination.md promises: calls in flight wait and succeed
 * (or, past the budget, fail with COORDINATION_UNAVAILABLE, never anything else), a redeemed ticket
 * stays redeemed, a granted lock stays granted to its owner only, pub/sub comes back.
 */
async function coordinatorFailover(
  t: TestContext,
  settings: RedisSettings,
  kill: () => Promise<{ healed: Promise<void> }>,
): Promise<void> {
  const h = redisHarness(settings, { retryBudgetMs: RETRY_BUDGET_MS, commandTimeoutMs: 1_000 });
  try {
    const [a, b] = (await h.nodes(2)) as [Coordinator, Coordinator];
    const claims = (i: number) => ({ userId: 'u', sessionId: `s${i}` });
    const tickets = await Promise.all(Array.from({ length: 40 }, (_, i) => a.issueTicket(claims(i), 60_000)));
    const redeemed = tickets.slice(0, 20);
    for (const [i, ticket] of redeemed.entries()) assert.deepEqual(await b.redeemTicket(ticket), claims(i));
    const lockKey = `display:${randomBytes(4).toString('hex')}`;
    const lock = (await a.tryLock(lockKey, 60_000)) as LockHandle;
    assert.ok(lock);

    // Steady traffic on both nodes: issue on one, redeem on the other.
    let stop = false;
    let killedAt = 0;
    const failures: { code: string; ms: number; why: string }[] = [];
    const lost: number[] = [];
    let okAfterKill = 0;
    let firstOkAfterKill = 0;
    let slowest = 0;
    const loop = async (from: Coordinator, to: Coordinator) => {
      for (let i = 0; !stop; i++) {
        const started = Date.now();
        try {
          const ticket = await from.issueTicket(claims(i), 60_000);
          const got = await to.redeemTicket(ticket);
          if (got === null) {
            // Lost in the failover (acknowledged by a primary that died before any replica had
            // it): refused, which costs a viewer a fresh ticket; never accepted twice.
            lost.push(Date.now() - started);
            continue;
          }
          assert.deepEqual(got, claims(i));
          slowest = Math.max(slowest, Date.now() - started);
          if (killedAt > 0 && started > killedAt) {
            okAfterKill++;
            if (firstOkAfterKill === 0) firstOkAfterKill = Date.now();
          }
        } catch (e) {
          const cause = e instanceof AppError && e.cause instanceof Error ? `: ${e.cause.message}` : '';
          failures.push({
            code: e instanceof AppError ? e.code : String(e),
            ms: Date.now() - started,
            why: `${e instanceof AppError ? e.code : String(e)}${cause}`,
          });
        }
      }
    };
    const loops = [loop(a, b), loop(b, a)];
    await waitFor('traffic flowing', () => slowest > 0);

    const { healed } = await kill();
    killedAt = Date.now();
    await healed;
    const healedAt = Date.now();
    await waitFor('traffic again after the kill', () => okAfterKill >= 20, 20_000).catch((e: Error) => {
      throw new Error(`${e.message}; failures: ${failures.map((f) => f.why).join(', ')}`);
    });
    stop = true;
    await Promise.all(loops);
    t.diagnostic(
      `failover done ${healedAt - killedAt} ms after the kill; first call started after the kill answered ` +
        `${firstOkAfterKill - killedAt} ms after it; slowest call ${slowest} ms; ` +
        `${failures.length} calls failed (${failures.map((f) => `${f.why} after ${f.ms} ms`).join(', ')}); ` +
        `${lost.length} tickets lost`,
    );
    for (const f of failures) {
      assert.equal(f.code, 'COORDINATION_UNAVAILABLE', 'a failed call fails with the stable code only');
      assert.ok(f.ms <= RETRY_BUDGET_MS + 2_500, `and within its retry budget (${f.ms} ms)`);
    }
    assert.ok(firstOkAfterKill - killedAt < 10_000, 'calls succeed again within 10 s of the kill');

    // Single use survives: nothing redeemed before the kill works again, on either node.
    for (const ticket of redeemed) {
      assert.equal(await a.redeemTicket(ticket), null);
      assert.equal(await b.redeemTicket(ticket), null);
    }
    // The others: at most one of two racing nodes gets each (a ticket may be lost, never doubled).
    for (const ticket of tickets.slice(20)) {
      const got = await Promise.all([a.redeemTicket(ticket), b.redeemTicket(ticket)]);
      assert.ok(got.filter((g) => g !== null).length <= 1);
    }

    // The lock survived with its owner check: not granted again, not released by a wrong token.
    assert.equal(await b.tryLock(lockKey, 60_000), null, 'the granted lock survived the failover');
    await b.unlock({ key: lockKey, token: 'not-the-owner', fence: 0 });
    assert.equal(await b.tryLock(lockKey, 60_000), null);
    await a.unlock(lock);
    const next = await b.tryLock(lockKey, 60_000);
    assert.ok(next && next.fence > lock.fence, 'released by its owner; the next grant is fenced higher');
    await b.unlock(next);

    // Subscriptions come back: a command published now reaches both nodes.
    const inboxA = commandInbox(a);
    const inboxB = commandInbox(b);
    const sent = Date.now();
    await waitFor(
      'a command heard on both nodes after the failover',
      async () => {
        await a.publish({ type: 'end-session', sessionId: 's-after', reason: 'test' });
        await new Promise((r) => setTimeout(r, 50));
        return inboxA.received.length > 0 && inboxB.received.length > 0;
      },
      10_000,
    );
    t.diagnostic(
      `pub/sub heard on both nodes ${Date.now() - killedAt} ms after the kill (${Date.now() - sent} ms after traffic resumed)`,
    );
  } finally {
    await h.close();
  }
}

// Gateways on Redis through Sentinel, as in production: two gateway processes (src/main.ts) on a
// throwaway PostgreSQL database, sshd + TigerVNC desktops, viewers streaming; the Redis primary is
// SIGKILLed while connects (ticket + WebSocket) and sign-ins keep arriving.
void describe(
  'gateways on Sentinel: SIGKILL the Redis primary while viewers stream',
  { timeout: 180_000 },
  () => {
    let redis: RedisSentinelFixture;
    let db: { url: string; drop(): Promise<void> };
    let sshd: SshdFixture;
    const gateways: GatewayProcess[] = [];
    const viewers: RfbTestClient[] = [];

    before(async () => {
      [redis, db, sshd] = await Promise.all([
        startRedisSentinelSet(),
        createTestDatabase(),
        startSshd({ usernames: ['cdtestrf1', 'cdtestrf2', 'cdtestrf3'] }),
      ]);
      const env = {
        ...TEST_SECRETS,
        DATABASE_URL: db.url,
        REDIS_SENTINELS: redis.sentinelsEnv,
        REDIS_SENTINEL_NAME: redis.masterName,
        REGISTRATION: 'open',
        MAX_SESSIONS_PER_USER: '2',
        WS_MAX_CONNECTS_PER_MINUTE: '1000',
      };
      // The first process migrates the fresh database alone; then the second joins.
      gateways.push(await startGatewayProcess({ env }));
      gateways.push(await startGatewayProcess({ env }));
    });
    after(async () => {
      for (const v of viewers) v.close();
      await Promise.all(gateways.map((g) => g.stop()));
      await Promise.all([redis?.dispose(), sshd?.stop()]);
      await db?.drop();
    });

    void it('no stream dropped; connects and sign-ins back within 10 s; no ticket twice; the limit holds', async (t) => {
      const [g1, g2] = gateways as [GatewayProcess, GatewayProcess];
      const api = (g: GatewayProcess) => apiClient(g.url);
      const email = `rf-${Date.now()}@example.com`;
      const password = 'correct horse battery staple';
      const reg = await api(g1)('POST', '/api/auth/register', { body: { email, password } });
      assert.equal(reg.status, 201, JSON.stringify(reg.body));
      const token = (reg.body.data as { accessToken: string }).accessToken;
      const instanceIds: string[] = [];
      for (const [i, u] of sshd.users.entries()) {
        const res = await api(g1)('POST', '/api/instances', {
          token,
          body: {
            name: `desk ${i}`,
            host: sshd.host,
            port: sshd.port,
            username: u.username,
            auth: { type: 'privateKey', privateKey: u.privateKey },
          },
        });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        instanceIds.push((res.body.data as { id: string }).id);
      }
      const sessionIds: string[] = [];
      for (const [i, instanceId] of instanceIds.slice(0, 2).entries()) {
        const res = await api(gateways[i % 2]!)('POST', '/api/sessions/connect', {
          token,
          body: { instanceId, desktopEnvironment: 'openbox' },
        });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        sessionIds.push((res.body.data as { sessionId: string }).sessionId);
      }

      const usedTickets: { url: string; gateway: GatewayProcess }[] = [];
      /** Ticket from one gateway, WebSocket to the other, RFB handshake and a first frame. */
      const connectViewer = async (i: number): Promise<RfbTestClient> => {
        const from = gateways[i % 2]!;
        const to = gateways[(i + 1) % 2]!;
        const res = await api(from)('POST', `/api/sessions/${sessionIds[i % 2]!}/ticket`, { token });
        if (res.status !== 200) throw new Error(`ticket: ${res.status} ${res.body.error?.code ?? ''}`);
        const url = `${to.url.replace(/^http/, 'ws')}${(res.body.data as { websocketUrl: string }).websocketUrl}`;
        const client = await RfbTestClient.open(url, { origin: to.url });
        usedTickets.push({ url, gateway: to });
        await client.handshake();
        client.requestUpdate(false);
        assert.ok((await client.readFramebufferUpdate()).rects >= 1);
        return client;
      };
      for (let i = 0; i < 8; i++) viewers.push(await connectViewer(i));

      // Connects and sign-ins keep arriving, on both gateways, before, during and after the kill.
      let stop = false;
      let killedAt = 0;
      const firstOk = { connect: 0, signIn: 0 };
      const failures: string[] = [];
      const loop = async (kind: 'connect' | 'signIn', once: (i: number) => Promise<void>) => {
        for (let i = 0; !stop; i++) {
          const started = Date.now();
          try {
            // Bounded, so one connect stuck on a loaded machine does not stop the arrivals.
            await Promise.race([
              once(i),
              sleep(15_000).then(() => {
                throw new Error('no answer within 15 s');
              }),
            ]);
            if (killedAt > 0 && started > killedAt && firstOk[kind] === 0) firstOk[kind] = Date.now();
          } catch (e) {
            failures.push(`${kind} +${killedAt ? Date.now() - killedAt : 0} ms: ${(e as Error).message}`);
            await sleep(100);
          }
        }
      };
      const loops = [
        loop('connect', async (i) => (await connectViewer(i)).close()),
        loop('signIn', async (i) => {
          const res = await api(gateways[i % 2]!)('POST', '/api/auth/login', { body: { email, password } });
          if (res.status !== 200) throw new Error(`sign-in: ${res.status} ${res.body.error?.code ?? ''}`);
        }),
      ];
      await waitFor('traffic flowing', () => usedTickets.length > 10, 30_000);

      const killed = await redis.killPrimary();
      killedAt = Date.now();
      // The per-user limit during the blip: two sessions live, so a third is refused on both gateways.
      const third = await Promise.all(
        gateways.map((g) =>
          api(g)('POST', '/api/sessions/connect', {
            token,
            body: { instanceId: instanceIds[2], desktopEnvironment: 'openbox' },
          }),
        ),
      );
      await redis.waitForNewPrimary(killed);
      const failoverMs = Date.now() - killedAt;
      await waitFor(
        'connects and sign-ins after the kill',
        () => firstOk.connect > 0 && firstOk.signIn > 0,
        30_000,
      ).catch((e: Error) => {
        throw new Error(
          `${e.message} (${JSON.stringify(firstOk)}); failures: ${failures.slice(-20).join('; ')}`,
        );
      });
      stop = true;
      await Promise.all(loops);
      const connectMs = firstOk.connect - killedAt;
      const signInMs = firstOk.signIn - killedAt;
      t.diagnostic(
        `Sentinel promoted the replica ${failoverMs} ms after the kill; first connect started after the kill ` +
          `done at +${connectMs} ms, first sign-in at +${signInMs} ms; ${failures.length} calls failed: ${failures.join('; ')}`,
      );
      assert.ok(connectMs < 10_000, `connects work again within 10 s (${connectMs} ms)`);
      assert.ok(signInMs < 10_000, `sign-ins work again within 10 s (${signInMs} ms)`);

      for (const res of third) {
        assert.ok(
          res.status === 429 || res.status === 503,
          `a third session is refused (${res.status} ${JSON.stringify(res.body)})`,
        );
        if (res.status === 429) assert.equal(res.body.error?.code, 'SESSION_LIMIT_REACHED');
      }
      const after = await api(g2)('POST', '/api/sessions/connect', {
        token,
        body: { instanceId: instanceIds[2], desktopEnvironment: 'openbox' },
      });
      assert.equal(after.status, 429, JSON.stringify(after.body));
      assert.equal(after.body.error?.code, 'SESSION_LIMIT_REACHED');
      const live = await api(g1)('GET', '/api/sessions/active', { token });
      assert.equal((live.body.data as unknown[]).length, 2, 'still two live sessions');

      // No open stream dropped: every viewer opened before the kill still answers a full update.
      for (const v of viewers) {
        assert.equal(v.closeCode, null, 'the viewer was not closed');
        v.requestUpdate(false);
        assert.ok((await v.readFramebufferUpdate()).rects >= 1);
      }

      // No ticket works twice: every ticket used before, during or after the kill is refused now.
      for (const { url, gateway } of usedTickets) {
        await assert.rejects(
          RfbTestClient.open(url, { origin: gateway.url }),
          (e: Error & { status?: number }) => e.status !== undefined && e.status !== 101,
          'a used ticket is refused',
        );
      }
      t.diagnostic(`${usedTickets.length} used tickets all refused afterwards`);
    });
  },
);

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

interface ApiAnswer {
  status: number;
  body: { data?: unknown; error?: { code: string; message: string } };
}

function apiClient(base: string) {
  return async (
    method: string,
    path: string,
    options: { token?: string; body?: unknown } = {},
  ): Promise<ApiAnswer> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      },
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    });
    const text = await res.text();
    let body: ApiAnswer['body'] = {};
    try {
      body = JSON.parse(text) as ApiAnswer['body'];
    } catch {
      // not JSON
    }
    return { status: res.status, body };
  };
}

void describe('rediss:// with REDIS_TLS_CA_FILE', () => {
  let dir: string;
  let server: ChildProcess | undefined;
  let tlsPort: number;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cd-redis-tls-'));
    const sh = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    // A private CA and a server certificate for 127.0.0.1 signed by it.
    sh([
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '1',
      '-subj',
      '/CN=clouddesk test CA',
    ]);
    sh([
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'srv.key',
      '-out',
      'srv.csr',
      '-subj',
      '/CN=127.0.0.1',
    ]);
    await writeFile(join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\n');
    sh([
      'x509',
      '-req',
      '-in',
      'srv.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'srv.pem',
      '-days',
      '1',
      '-extfile',
      'ext',
    ]);
    tlsPort = await freePort();
    // The plain port only answers the fixture's readiness PING; clients use the TLS port.
    server = await spawnRedisServer(await freePort(), dir, [
      '--tls-port',
      String(tlsPort),
      '--tls-cert-file',
      join(dir, 'srv.pem'),
      '--tls-key-file',
      join(dir, 'srv.key'),
      '--tls-ca-cert-file',
      join(dir, 'ca.pem'),
      '--tls-auth-clients',
      'no',
    ]);
  });
  after(async () => {
    if (server && server.exitCode === null && server.signalCode === null) {
      const exited = once(server, 'exit');
      server.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });

  void it('connects with the CA file, and refuses a server it cannot verify without it', async () => {
    const url = `rediss://127.0.0.1:${tlsPort}`;
    const withCa = createCoordinator(
      loadConfig({ ...TEST_SECRETS, DATA_DIR: dir, REDIS_URL: url, REDIS_TLS_CA_FILE: join(dir, 'ca.pem') }),
      { clock: systemClock, logger: createLogger({ level: 'silent' }) },
    ) as RedisCoordinator;
    try {
      assert.equal(await withCa.waitUntilReady(10_000), true);
      const ticket = await withCa.issueTicket({ userId: 'u', sessionId: 's' }, 30_000);
      assert.deepEqual(await withCa.redeemTicket(ticket), { userId: 'u', sessionId: 's' });
    } finally {
      await withCa.close();
    }
    const withoutCa = createCoordinator(
      loadConfig({ ...TEST_SECRETS, DATA_DIR: dir, REDIS_URL: url, REDIS_RETRY_MS: '0' }),
      { clock: systemClock, logger: createLogger({ level: 'silent' }) },
    ) as RedisCoordinator;
    try {
      assert.equal(
        await withoutCa.waitUntilReady(1_500),
        false,
        'a certificate from an unknown CA is refused',
      );
      await assert.rejects(
        withoutCa.ping(),
        (e: unknown) => e instanceof AppError && e.code === 'COORDINATION_UNAVAILABLE',
      );
    } finally {
      await withoutCa.close();
    }
  });
});
