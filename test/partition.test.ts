// Network partitions (issue 11): one gateway process runs in a network namespace of its own with two
// veth links to the host: a "store" link over which it reaches Redis and PostgreSQL, and a "data" link
// over which viewers reach it and it reaches the instance's sshd. A second gateway on the host shares
// the same Redis and PostgreSQL. The test cuts only the store link (packets dropped both ways, no
// resets: test/helpers/netns.ts) while the cut-off gateway's viewers stream the benchmark's simulated
// desktop, then heals it.
//
//            host                                       namespace
//   redis-server (127.0.0.1, store.host) ─┐
//   PostgreSQL via forwarder (store.host) ┼── store link ── gateway B (data.ns:port)
//   gateway A (127.0.0.1)                 │                   │
//   sshd via forwarder (data.host) ───────┴── data link ──────┘ ← viewers (this process)
//
// The rest of the cluster is gateway A, and an in-process gateway built on the same Redis and
// PostgreSQL with an injected clock, whose idle sweep stands for what any node's sweeper decides at a
// given time (lease lapsed or not, idle timeout passed or not) without waiting for it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Redis } from 'ioredis';
import { WebSocket } from 'ws';
import { buildApp, type Gateway } from '../src/app.js';
import { loadConfig } from '../src/config/config.js';
import { ManualClock } from '../src/lib/clock.js';
import { createLogger } from '../src/observability/logger.js';
import { BenchViewer, type BarrierResult } from '../bench/load/bench-viewer.js';
import { freePort } from './helpers/free-port.js';
import { startGatewayProcess, type GatewayProcess } from './helpers/gateway-process.js';
import {
  createNetns,
  listNetns,
  startTcpForwarder,
  type NetnsFixture,
  type TcpForwarder,
} from './helpers/netns.js';
import { createTestDatabase } from './helpers/postgres-database.js';
import { spawnRedisServer } from './helpers/redis-server.js';
import { stopChild } from './helpers/child-process.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { TEST_SECRETS } from './helpers/test-secrets.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
/** Each call's retry bound on the cut-off gateway (REDIS_RETRY_MS, DATABASE_RETRY_MS). */
const RETRY_MS = 2_000;
/** What a request may take past the retry bound: one attempt's own timeout (Redis: command timeout +
 * replica wait + margin; PostgreSQL: the pool's connect timeout) and scheduling on a loaded machine. */
const ATTEMPT_SLACK_MS = 4_000;
/** The long cut's length: past 51 s a stalled connection's retransmissions are 51 s apart (Linux: 0.2 s,
 * doubling), so a connection that had a command or a statement in flight from the start of the cut
 * retransmits next about 100 s into it, ~45 s after this heal. */
const LONG_CUT_MS = 55_000;
/** What the gateway may take after that heal to be ready and serve again (it dials new connections,
 * whose SYNs get through at once; the reconnect backoff and connect timeouts are a few seconds): well
 * short of those ~45 s, with room for a loaded machine. */
const HEAL_BOUND_MS = 20_000;
/** The viewer lease's life (src/relay/vnc-gateway.ts: renewed every 15 s, lives three renewals). */
const LEASE_MS = 45_000;
const USERS = ['cdtestpt1', 'cdtestpt2', 'cdtestpt3'];

interface ApiAnswer {
  status: number;
  body: { data?: unknown; error?: { code: string; message: string } };
  ms: number;
}

function apiClient(base: string) {
  return async (
    method: string,
    path: string,
    options: { token?: string; body?: unknown } = {},
  ): Promise<ApiAnswer> => {
    const started = Date.now();
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      },
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    let body: ApiAnswer['body'] = {};
    try {
      body = JSON.parse(text) as ApiAnswer['body'];
    } catch {
      // not JSON
    }
    return { status: res.status, body, ms: Date.now() - started };
  };
}

async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A viewer of the simulated desktop over CloudDesk's WebSocket, with the simulator's byte check. */
class Viewer {
  readonly rfb: BenchViewer;
  closeCode: number | null = null;
  closeReason: string | null = null;
  protocolError: string | null = null;
  private barrier: Promise<BarrierResult>;
  private onBarrier: (r: BarrierResult) => void = () => undefined;
  private readonly firstUpdate: Promise<void>;

  private constructor(readonly ws: WebSocket) {
    let first: () => void = () => undefined;
    this.firstUpdate = new Promise((r) => (first = r));
    this.barrier = new Promise((r) => (this.onBarrier = r));
    this.rfb = new BenchViewer({
      onFirstUpdate: () => first(),
      onEcho: () => undefined,
      onBarrier: (r) => this.onBarrier(r),
      onProtocolError: (reason) => (this.protocolError = reason),
    });
    this.rfb.attach({
      send: (b) => ws.send(b),
      pause: () => ws.pause(),
      resume: () => ws.resume(),
      close: () => ws.close(1000),
    });
    ws.on('message', (data: Buffer) => this.rfb.onData(data));
    ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
    });
  }

  /** Opens the WebSocket; rejects with `status` set when the upgrade is refused. */
  static async open(url: string, origin: string): Promise<Viewer> {
    const ws = new WebSocket(url, ['binary'], { perMessageDeflate: false, headers: { Origin: origin } });
    ws.binaryType = 'nodebuffer';
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () =>
          reject(
            Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), {
              status: res.statusCode,
              body,
            }),
          ),
        );
      });
      ws.once('error', reject);
    });
    const v = new Viewer(ws);
    await Promise.race([
      v.firstUpdate,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no first update within 30 s')), 30_000)),
    ]);
    return v;
  }

  get bytes(): number {
    return this.rfb.bytesIn;
  }

  /** Stops the simulated stream and compares both sides' byte counts. */
  async check(): Promise<BarrierResult> {
    this.rfb.sendBarrier();
    return Promise.race([
      this.barrier,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error('no barrier answer within 30 s')), 30_000),
      ),
    ]);
  }

  close(): void {
    this.ws.close(1000);
  }
}

void describe(
  'a gateway cut off from Redis and PostgreSQL while its viewers stream',
  { timeout: 600_000 },
  () => {
    let ns: NetnsFixture;
    let sim: ChildProcess;
    let fakeBin: string;
    let sshd: SshdFixture;
    let sshFwd: TcpForwarder;
    let pgFwd: TcpForwarder;
    let redis: ChildProcess;
    let redisDir: string;
    let redisPort: number;
    let db: { url: string; drop(): Promise<void> };
    let gwA: GatewayProcess;
    let gwB: GatewayProcess;
    let pgc: pg.Client;
    let redisc: Redis;
    const viewers: Viewer[] = [];
    // Shared across the two steps, in order.
    let token = '';
    const instanceIds: string[] = [];
    let s1 = '';
    let display1 = 0;

    before(async () => {
      ns = await createNetns(['store', 'data']);
      const store = ns.link('store');
      const data = ns.link('data');

      // The simulated desktop: the fake Xvnc on the sshd user's PATH asks the simulator for a desktop.
      sim = fork(join(REPO, 'bench/sim/simulator-main.ts'), ['office', '7'], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      });
      const [ready] = (await once(sim, 'message')) as [{ type: string; tcpPort: number }];
      assert.equal(ready.type, 'ready');
      fakeBin = await mkdtemp(join(tmpdir(), 'cd-partition-bin-'));
      await cp(join(REPO, 'bench/sim/fake-bin'), fakeBin, { recursive: true });
      await chmod(fakeBin, 0o755);
      sshd = await startSshd({
        usernames: USERS,
        extraConfig: [
          `SetEnv PATH=${fakeBin}:/usr/local/bin:/usr/bin:/bin CLOUDDESK_BENCH_SIM=127.0.0.1:${ready.tcpPort}`,
        ],
      });
      sshFwd = await startTcpForwarder(data.hostAddress, { host: '127.0.0.1', port: sshd.port });

      redisDir = await mkdtemp(join(tmpdir(), 'cd-partition-redis-'));
      redisPort = await freePort();
      redis = await spawnRedisServer(redisPort, redisDir, [
        '--bind',
        '127.0.0.1',
        store.hostAddress,
        '--protected-mode',
        'no',
      ]);
      db = await createTestDatabase();
      pgFwd = await startTcpForwarder(store.hostAddress, { host: '127.0.0.1', port: 5432 });

      const env = {
        ...TEST_SECRETS,
        REGISTRATION: 'open',
        // The instance is the data link's host end: an address of the host's own interfaces, allowed
        // exactly (a /32 overrides the own-address refusal).
        INSTANCE_ALLOWED_CIDRS: `${data.hostAddress}/32`,
        DESKTOP_TRANSPORT: 'unix',
        // Far from the displays the real-Xvnc tests (:1–:10) and the benchmark (1000–30000) use.
        VNC_DISPLAY_MIN: '40100',
        VNC_DISPLAY_MAX: '40140',
        WS_MAX_CONNECTS_PER_MINUTE: '1000',
        REDIS_RETRY_MS: String(RETRY_MS),
        DATABASE_RETRY_MS: String(RETRY_MS),
      };
      gwA = await startGatewayProcess({
        env: {
          ...env,
          REDIS_URL: `redis://127.0.0.1:${redisPort}`,
          DATABASE_URL: db.url,
          NODE_ID: 'gateway-a',
        },
      });
      gwB = await startGatewayProcess({
        host: data.nsAddress,
        commandPrefix: ns.execPrefix(),
        env: {
          ...env,
          REDIS_URL: `redis://${store.hostAddress}:${redisPort}`,
          // Named, so the test can tell its PostgreSQL connections (they come through the forwarder).
          DATABASE_URL: `${db.url.replace('127.0.0.1:5432', `${store.hostAddress}:${pgFwd.port}`)}?application_name=gateway-b`,
          NODE_ID: 'gateway-b',
        },
      });
      pgc = new pg.Client({ connectionString: db.url });
      await pgc.connect();
      redisc = new Redis({ host: '127.0.0.1', port: redisPort, lazyConnect: true });
      await redisc.connect();
    });

    after(async () => {
      for (const v of viewers) v.ws.terminate();
      await ns
        ?.link('store')
        .heal()
        .catch(() => undefined);
      await Promise.all([gwA?.stop(), gwB?.stop()]);
      await pgc?.end().catch(() => undefined);
      redisc?.disconnect();
      await Promise.all([sshFwd?.close(), pgFwd?.close()]);
      await sshd?.stop();
      await stopChild(sim ?? null, 'SIGTERM', 'SIGKILL', 5_000);
      await stopChild(redis ?? null, 'SIGTERM', 'SIGKILL', 5_000);
      await db?.drop();
      await ns?.dispose();
      await Promise.all(
        [fakeBin, redisDir].filter(Boolean).map((d) => rm(d, { recursive: true, force: true })),
      );
      assert.ok(!(await listNetns()).includes(ns.name), 'the namespace is gone');
    });

    /** A new account's access token (a guest-to-be), registered on A. */
    async function registerGuest(email: string): Promise<string> {
      const reg = await apiClient(gwA.url)('POST', '/api/auth/register', {
        body: { email, password: 'correct horse battery staple' },
      });
      assert.equal(reg.status, 201, JSON.stringify(reg.body));
      return (reg.body.data as { accessToken: string }).accessToken;
    }

    /** The guest joins the share on B and watches there. */
    async function joinOnB(shareToken: string, guestToken: string): Promise<Viewer> {
      const joined = await apiClient(gwB.url)('POST', `/api/shares/${shareToken}/ticket`, {
        token: guestToken,
      });
      assert.equal(joined.status, 200, JSON.stringify(joined.body));
      const path = (joined.body.data as { websocketUrl: string }).websocketUrl;
      const viewer = await Viewer.open(wsUrl(gwB, path), gwB.url);
      viewers.push(viewer);
      return viewer;
    }

    /** The owner watches s1 on B too. */
    async function ownerViewerOnB(): Promise<Viewer> {
      const B = apiClient(gwB.url);
      const ownerViewer = await Viewer.open(
        wsUrl(
          gwB,
          ((await B('POST', `/api/sessions/${s1}/ticket`, { token })).body.data as { websocketUrl: string })
            .websocketUrl,
        ),
        gwB.url,
      );
      viewers.push(ownerViewer);
      return ownerViewer;
    }

    /**
     * Cuts B off from the store, runs `commands` (the rest of the cluster, published while B cannot hear
     * them), waits until every viewer in `all` has streamed on through the cut with nothing closed, then
     * heals; resolves with the time of the heal.
     */
    async function whileBIsCutOff(all: Viewer[], commands: () => Promise<void>): Promise<number> {
      const store = ns.link('store');
      await store.cut();
      await commands();
      const atCut = all.map((v) => v.bytes);
      await waitFor(
        'B streams on through the cut',
        () => all.every((v, i) => v.bytes - atCut[i]! > 200_000),
        60_000,
      );
      for (const v of all) assert.equal(v.closeCode, null, 'nothing closed behind the cut');
      await store.heal();
      return Date.now();
    }

    /** The rest of the cluster at a time of the test's choosing: a gateway on the same Redis and PG. */
    async function restOfCluster(
      clock: ManualClock,
      options: { canStopDesktops?: boolean } = {},
    ): Promise<Gateway> {
      const config = loadConfig({
        ...TEST_SECRETS,
        DATA_DIR: redisDir,
        REDIS_URL: `redis://127.0.0.1:${redisPort}`,
        DATABASE_URL: db.url,
        INSTANCE_ALLOWED_CIDRS: `${ns.link('data').hostAddress}/32`,
        DESKTOP_TRANSPORT: 'unix',
        NODE_ID: 'rest-of-cluster',
      });
      return buildApp(config, {
        logger: createLogger({ level: 'silent' }),
        clock,
        // The instance out of this node's reach too: its desktop stop fails (and stays due, retried).
        ...(options.canStopDesktops === false
          ? {
              wrapDesktops: (real) => ({
                start: real.start.bind(real),
                isAlive: real.isAlive.bind(real),
                stop: () => Promise.reject(new Error('the instance is out of reach')),
              }),
            }
          : {}),
      });
    }

    const wsUrl = (g: GatewayProcess, path: string) => `${g.url.replace(/^http/, 'ws')}${path}`;
    const sessionRow = async (id: string) =>
      (
        await pgc.query<{
          status: string;
          display: number | null;
          last_activity_at: string;
          end_reason: string | null;
        }>('select status, display, last_activity_at, end_reason from sessions where id = $1', [id])
      ).rows[0];
    const leaseExpiries = async (sessionId: string) =>
      (await redisc.zrange(`cd:viewers:{${sessionId}}`, 0, -1, 'WITHSCORES'))
        .filter((_, i) => i % 2 === 1)
        .map(Number);

    void it('its viewers stream on; it refuses connects (503, bounded) and is not ready; the rest ends nothing, reuses no display, takes no used ticket; all converges after healing', async (t) => {
      const A = apiClient(gwA.url);
      const B = apiClient(gwB.url);
      const reg = await A('POST', '/api/auth/register', {
        body: { email: `pt-${Date.now()}@example.com`, password: 'correct horse battery staple' },
      });
      assert.equal(reg.status, 201, JSON.stringify(reg.body));
      token = (reg.body.data as { accessToken: string }).accessToken;
      for (const [i, u] of sshd.users.entries()) {
        const res = await A('POST', '/api/instances', {
          token,
          body: {
            name: `desk ${i}`,
            host: ns.link('data').hostAddress,
            port: sshFwd.port,
            username: u.username,
            auth: { type: 'privateKey', privateKey: u.privateKey },
          },
        });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        instanceIds.push((res.body.data as { id: string }).id);
      }
      const c1 = await B('POST', '/api/sessions/connect', {
        token,
        body: { instanceId: instanceIds[0], desktopEnvironment: 'openbox' },
      });
      assert.equal(c1.status, 201, JSON.stringify(c1.body));
      ({ sessionId: s1, display: display1 } = c1.body.data as { sessionId: string; display: number });

      // Three viewers on B; the first one's ticket is then a consumed one.
      const ticketOn = async (api: ReturnType<typeof apiClient>) => {
        const res = await api('POST', `/api/sessions/${s1}/ticket`, { token });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return (res.body.data as { websocketUrl: string }).websocketUrl;
      };
      const consumed = (c1.body.data as { websocketUrl: string }).websocketUrl;
      viewers.push(await Viewer.open(wsUrl(gwB, consumed), gwB.url));
      viewers.push(await Viewer.open(wsUrl(gwB, await ticketOn(B)), gwB.url));
      viewers.push(await Viewer.open(wsUrl(gwB, await ticketOn(B)), gwB.url));
      // A ticket issued before the cut and not used yet.
      const unused = await ticketOn(A);
      await waitFor('every viewer streaming', () => viewers.every((v) => v.bytes > 200_000), 30_000);

      const store = ns.link('store');
      await store.cut();
      const cutAt = Date.now();
      const atCut = viewers.map((v) => v.bytes);

      // It is taken out of the balancer: /api/ready answers 503, in bounded time.
      const readyOut = await waitFor(
        '/api/ready 503 on the cut-off gateway',
        async () => (await B('GET', '/api/ready')).status === 503,
        RETRY_MS + ATTEMPT_SLACK_MS,
      );

      // It refuses new connects with a stable code, and no request hangs past the retry bound.
      const refusals = await Promise.all([
        B('POST', '/api/sessions/connect', {
          token,
          body: { instanceId: instanceIds[2], desktopEnvironment: 'openbox' },
        }),
        B('POST', `/api/sessions/${s1}/ticket`, { token }),
        B('GET', '/api/sessions/active', { token }),
        B('POST', '/api/auth/login', { body: { email: 'nobody@example.com', password: 'whatever it is' } }),
      ]);
      for (const r of refusals) {
        assert.equal(r.status, 503, JSON.stringify(r.body));
        assert.ok(
          ['COORDINATION_UNAVAILABLE', 'STORE_UNAVAILABLE'].includes(r.body.error?.code ?? ''),
          JSON.stringify(r.body),
        );
      }
      const slowest = Math.max(...refusals.map((r) => r.ms));
      // A WebSocket with a valid ticket is refused too (the ticket cannot be redeemed), and stays valid.
      const wsStarted = Date.now();
      await assert.rejects(
        Viewer.open(wsUrl(gwB, unused), gwB.url),
        (e: Error & { status?: number; body?: string }) => {
          assert.equal(e.status, 503, e.message);
          assert.match(e.body ?? '', /COORDINATION_UNAVAILABLE/);
          return true;
        },
      );
      const wsMs = Date.now() - wsStarted;
      assert.ok(
        Math.max(slowest, wsMs) <= RETRY_MS + ATTEMPT_SLACK_MS,
        `refusals answered within the retry bound (slowest ${slowest} ms, WebSocket ${wsMs} ms)`,
      );

      // The rest of the cluster: a used ticket is refused, an unused one works once.
      await assert.rejects(
        Viewer.open(wsUrl(gwA, consumed), gwA.url),
        (e: Error & { status?: number }) => e.status === 401,
      );
      const onA = await Viewer.open(wsUrl(gwA, unused), gwA.url);
      await assert.rejects(
        Viewer.open(wsUrl(gwA, unused), gwA.url),
        (e: Error & { status?: number }) => e.status === 401,
      );
      onA.close();

      // It hands out another display on the same machine, never the one the cut-off gateway's desktop has.
      const c2 = await A('POST', '/api/sessions/connect', {
        token,
        body: { instanceId: instanceIds[1], desktopEnvironment: 'openbox' },
      });
      assert.equal(c2.status, 201, JSON.stringify(c2.body));
      const display2 = (c2.body.data as { display: number }).display;
      assert.notEqual(display2, display1, 'the same display is not handed out twice');

      // It does not end the session while the leases written before the cut live, whatever its last
      // recorded activity says: the sweep of a node whose clock is just short of the earliest lease's end,
      // with the last activity pushed back past the idle timeout.
      const expiries = await leaseExpiries(s1);
      assert.equal(expiries.length, 3, 'three leases');
      await pgc.query(`update sessions set last_activity_at = $2 where id = $1`, [
        s1,
        Date.now() - 3_600_000,
      ]);
      const clock = new ManualClock(Math.min(...expiries) - 1_000);
      const rest = await restOfCluster(clock);
      try {
        await rest.sweeper.runOnce();
        assert.equal((await sessionRow(s1))?.status, 'active', 'a session with live leases is not ended');
      } finally {
        await rest.shutdown('test');
      }

      // Its viewers kept streaming the whole time; one of them leaves while the link is cut.
      await waitFor(
        'bytes flowing on every viewer during the partition',
        () => viewers.every((v, i) => v.bytes - atCut[i]! > 1_000_000),
        60_000,
      );
      const leaving = viewers.pop()!;
      const leftCheck = await leaving.check();
      leaving.close();
      const cutMs = Date.now() - cutAt;
      for (const v of viewers) assert.equal(v.closeCode, null, 'the viewer is still open');

      await store.heal();
      const healedAt = Date.now();
      // Which dependency comes back when (TCP retransmission backoff decides how soon a stalled
      // connection notices the heal).
      const back = { database: -1, coordination: -1 };
      const readyBack = await waitFor(
        '/api/ready 200 again',
        async () => {
          const ready = (await B('GET', '/api/ready')).status === 200;
          const h = await B('GET', '/api/health');
          const deps = (h.body as unknown as { dependencies?: Record<string, { state: string }> })
            .dependencies;
          if (back.database < 0 && deps?.database?.state === 'connected')
            back.database = Date.now() - healedAt;
          if (back.coordination < 0 && deps?.coordination?.state === 'connected')
            back.coordination = Date.now() - healedAt;
          return ready;
        },
        60_000,
      );
      // Convergence, without a restart: the viewer count is the two still watching (the lease of the one
      // that left is removed, not left to lapse), the leases are renewed after the heal, buffered activity
      // reaches the database, and both gateways list the same live sessions.
      const countBack = await waitFor(
        'viewer count 2 on both gateways',
        async () => {
          for (const api of [A, B]) {
            const res = await api('GET', '/api/sessions/active', { token });
            if (res.status !== 200) return false;
            const s = (res.body.data as { id: string; viewers: number }[]).find((x) => x.id === s1);
            if (s?.viewers !== 2) return false;
          }
          return true;
        },
        LEASE_MS,
      );
      const leasesBack = await waitFor(
        'leases renewed after the heal',
        async () => {
          const e = await leaseExpiries(s1);
          return e.length === 2 && e.every((x) => x > healedAt + LEASE_MS - 15_000);
        },
        30_000,
      );
      const activityBack = await waitFor(
        'buffered activity written',
        async () => Number((await sessionRow(s1))?.last_activity_at) > healedAt - 60_000,
        30_000,
      );
      const listA = await A('GET', '/api/sessions/active', { token });
      const listB = await B('GET', '/api/sessions/active', { token });
      const ids = (r: ApiAnswer) => (r.body.data as { id: string }[]).map((s) => s.id).sort();
      assert.deepEqual(ids(listB), ids(listA));
      assert.deepEqual(ids(listA), [s1, (c2.body.data as { sessionId: string }).sessionId].sort());
      // It takes connects again.
      const again = await Viewer.open(wsUrl(gwB, await ticketOn(B)), gwB.url);
      again.close();

      // Byte-exact: every viewer that streamed across the partition got exactly what the desktop sent.
      for (const r of [leftCheck, ...(await Promise.all(viewers.map((v) => v.check())))]) {
        assert.equal(r.clientReceived, r.serverSent, 'every byte the desktop sent arrived, in order');
        assert.equal(r.serverReceived, r.clientSent, 'every byte the viewer sent arrived');
      }
      for (const v of viewers) assert.equal(v.protocolError, null);
      t.diagnostic(
        `cut ${cutMs} ms; ready 503 after ${readyOut} ms; refusals ${refusals.map((r) => `${r.status} ${r.body.error?.code} ${r.ms} ms`).join(', ')}; ` +
          `WebSocket refused in ${wsMs} ms; display ${display1} (B) vs ${display2} (A); ` +
          `after heal: ready in ${readyBack} ms (database ${back.database} ms, Redis ${back.coordination} ms), count in ${countBack} ms, leases +${leasesBack} ms, activity +${activityBack} ms; ` +
          `bytes during the cut: ${viewers.map((v, i) => v.bytes - atCut[i]!).join(', ')}`,
      );
    });

    void it('a sign-out everywhere and a share revoke made while it is cut off close its guests after the heal (4001, 4002), the owner streams on', async (t) => {
      assert.ok(s1, 'the first step ran');
      const A = apiClient(gwA.url);
      // Two signed-in guests, each through their own share of the session, watching on B.
      const guests: { token: string; shareId: string; viewer: Viewer }[] = [];
      for (const i of [1, 2]) {
        const guestToken = await registerGuest(`pt-guest${i}-${Date.now()}@example.com`);
        const share = await A('POST', `/api/sessions/${s1}/shares`, { token, body: { mode: 'view' } });
        assert.equal(share.status, 201, JSON.stringify(share.body));
        const { id: shareId, url } = share.body.data as { id: string; url: string };
        const shareToken = url.slice(url.indexOf('#') + 1);
        const viewer = await joinOnB(shareToken, guestToken);
        guests.push({ token: guestToken, shareId, viewer });
      }
      const ownerViewer = await ownerViewerOnB();
      const all = [...guests.map((g) => g.viewer), ownerViewer];
      await waitFor('the guests and the owner streaming', () => all.every((v) => v.bytes > 200_000), 30_000);

      const healedAt = await whileBIsCutOff(all, async () => {
        // The rest of the cluster: the first guest signs out everywhere, the owner revokes the second
        // share. Both commands are published while B cannot hear them.
        const out = await A('POST', '/api/auth/logout-all', { token: guests[0]!.token });
        assert.equal(out.status, 204, JSON.stringify(out.body));
        const revoked = await A('DELETE', `/api/shares/${guests[1]!.shareId}`, { token });
        assert.ok(revoked.status === 204 || revoked.status === 200, JSON.stringify(revoked.body));
      });
      // Its lease renewal reads the accounts and shares behind its viewers and closes what the lost
      // commands would have closed, with their codes; the owner's viewer is left alone.
      const closedAfter = await waitFor(
        'both guests closed',
        () => guests.every((g) => g.viewer.closeCode !== null),
        60_000,
      );
      assert.deepEqual(
        guests.map((g) => g.viewer.closeCode),
        [4001, 4002],
      );
      assert.equal(ownerViewer.closeCode, null);
      const r = await ownerViewer.check();
      assert.equal(r.clientReceived, r.serverSent);
      t.diagnostic(
        `after heal: guests closed (4001, 4002) in ${closedAfter} ms (${Date.now() - healedAt} ms)`,
      );
    });

    void it('a guest removed by the owner while it is cut off is closed after the heal (4002 removed by the owner); another guest and the owner stream on', async (t) => {
      assert.ok(s1, 'the first step ran');
      const A = apiClient(gwA.url);
      // Two signed-in guests through one share of the session, watching on B.
      const share = await A('POST', `/api/sessions/${s1}/shares`, { token, body: { mode: 'view' } });
      assert.equal(share.status, 201, JSON.stringify(share.body));
      const { id: shareId, url } = share.body.data as { id: string; url: string };
      const shareToken = url.slice(url.indexOf('#') + 1);
      const guests: Viewer[] = [];
      for (const i of [1, 2]) {
        const guestToken = await registerGuest(`pt-removed${i}-${Date.now()}@example.com`);
        guests.push(await joinOnB(shareToken, guestToken));
      }
      const ownerViewer = await ownerViewerOnB();
      const all = [...guests, ownerViewer];
      await waitFor('the guests and the owner streaming', () => all.every((v) => v.bytes > 200_000), 30_000);
      // The owner's list of who watches through the share (the guests' leases, written by B).
      const guestIds = async () => {
        const list = await A('GET', `/api/sessions/${s1}/shares`, { token });
        assert.equal(list.status, 200, JSON.stringify(list.body));
        const row = (list.body.data as { id: string; guests: { viewerId: string }[] }[]).find(
          (r) => r.id === shareId,
        );
        return row?.guests.map((g) => g.viewerId) ?? [];
      };
      await waitFor('both guests listed', async () => (await guestIds()).length === 2, 30_000);
      const [first] = await guestIds();

      const healedAt = await whileBIsCutOff(all, async () => {
        // The rest of the cluster: the owner removes one guest. The command is published while B cannot
        // hear it; the removal is stored.
        const removed = await A('DELETE', `/api/sessions/${s1}/guests/${first}`, { token });
        assert.equal(removed.status, 204, JSON.stringify(removed.body));
      });
      // Its lease renewal reads the removed guests among its viewers and closes the one the lost command
      // named, with the live path's code and reason; the other guest and the owner are left alone.
      const closedAfter = await waitFor(
        'a guest closed',
        () => guests.some((g) => g.closeCode !== null),
        60_000,
      );
      const gone = guests.filter((g) => g.closeCode !== null);
      assert.equal(gone.length, 1, 'only one guest closed');
      assert.equal(gone[0]!.closeCode, 4002);
      assert.equal(gone[0]!.closeReason, 'removed by the owner');
      // The lease renewal after it still leaves the other two open (and the removed guest's lease goes).
      await waitFor('only the other guest listed', async () => (await guestIds()).length === 1, 45_000);
      const kept = guests.find((g) => g.closeCode === null)!;
      const atListed = kept.bytes;
      await waitFor('the other guest still streaming', () => kept.bytes - atListed > 200_000, 30_000);
      assert.equal(kept.closeCode, null);
      assert.equal(ownerViewer.closeCode, null);
      const r = await ownerViewer.check();
      assert.equal(r.clientReceived, r.serverSent);
      t.diagnostic(
        `after heal: the removed guest closed (4002 removed by the owner) in ${closedAfter} ms (${Date.now() - healedAt} ms)`,
      );
    });

    void it('a partition that outlasts the lease and the idle timeout (injected clock): the rest ends the session; its viewers behind the cut stream on until the heal, then are closed, and all converges', async (t) => {
      assert.ok(s1, 'the first step ran');
      const A = apiClient(gwA.url);
      const B = apiClient(gwB.url);
      const ticket = async () => {
        const res = await B('POST', `/api/sessions/${s1}/ticket`, { token });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return (res.body.data as { websocketUrl: string }).websocketUrl;
      };
      const behind = [await Viewer.open(wsUrl(gwB, await ticket()), gwB.url)];
      behind.push(await Viewer.open(wsUrl(gwB, await ticket()), gwB.url));
      viewers.push(...behind);
      await waitFor('the viewers streaming', () => behind.every((v) => v.bytes > 200_000), 30_000);

      const store = ns.link('store');
      await store.cut();
      const cutAt = Date.now();
      // What any other node decides once the partition has lasted past every lease and the idle
      // timeout (SESSION_TIMEOUT_MINUTES, 30 by default) since the last activity the store heard of.
      const clock = new ManualClock(Date.now() + 30 * 60_000 + LEASE_MS + 60_000);
      const rest = await restOfCluster(clock, { canStopDesktops: false });
      try {
        assert.ok((await rest.sweeper.runOnce()) >= 1, 'the sweep ended the session');
        const row = await sessionRow(s1);
        assert.equal(row?.status, 'ended');
        assert.equal(row?.end_reason, 'idle-timeout');
      } finally {
        await rest.shutdown('test');
      }
      // The end command it published is lost for the cut-off gateway (pub/sub keeps nothing), and the
      // desktop could not be stopped: its viewers stream on, as long as the partition lasts.
      const atEnd = behind.map((v) => v.bytes);
      await waitFor(
        'bytes still flowing after the session ended elsewhere',
        () => behind.every((v, i) => v.bytes - atEnd[i]! > 500_000),
        60_000,
      );
      for (const v of behind) assert.equal(v.closeCode, null);
      const cutMs = Date.now() - cutAt;

      await store.heal();
      const healedAt = Date.now();
      const readyBack = await waitFor(
        '/api/ready 200 again',
        async () => (await B('GET', '/api/ready')).status === 200,
        60_000,
      );
      // The cut-off gateway converges: its lease renewal finds the session ended and closes its viewers
      // (4000, as the lost command would have), their leases go, and both gateways list the same
      // sessions, without the ended one.
      const closedAfter = await waitFor(
        'every viewer of the ended session closed',
        () => behind.every((v) => v.closeCode !== null),
        45_000,
      );
      assert.deepEqual(
        behind.map((v) => v.closeCode),
        [4000, 4000],
      );
      const leasesGone = await waitFor(
        'no lease left for the ended session',
        async () => (await leaseExpiries(s1)).length === 0,
        LEASE_MS,
      );
      const listA = await A('GET', '/api/sessions/active', { token });
      const listB = await B('GET', '/api/sessions/active', { token });
      const ids = (r: ApiAnswer) => (r.body.data as { id: string }[]).map((s) => s.id).sort();
      assert.equal(listB.status, 200);
      assert.deepEqual(ids(listB), ids(listA));
      assert.ok(!ids(listA).includes(s1), 'the ended session is not listed');
      const late = await B('POST', `/api/sessions/${s1}/ticket`, { token });
      assert.equal(late.status, 410, JSON.stringify(late.body));
      assert.equal(late.body.error?.code, 'SESSION_ENDED');
      // And it takes a new connect on the same instance.
      const fresh = await B('POST', '/api/sessions/connect', {
        token,
        body: { instanceId: instanceIds[0], desktopEnvironment: 'openbox' },
      });
      assert.equal(fresh.status, 201, JSON.stringify(fresh.body));
      const v = await Viewer.open(
        wsUrl(gwB, (fresh.body.data as { websocketUrl: string }).websocketUrl),
        gwB.url,
      );
      const r = await v.check();
      assert.equal(r.clientReceived, r.serverSent);
      v.close();
      t.diagnostic(
        `cut ${cutMs} ms; after heal: ready in ${readyBack} ms, viewers closed (4000) +${closedAfter} ms after that, ` +
          `leases gone +${leasesGone} ms after that (${Date.now() - healedAt} ms in all)`,
      );
    });

    void it("a cut longer than TCP's backoff makes slow: the stalled connections are replaced, so after the heal it is ready and signs in at once, on new Redis and PostgreSQL connections", async (t) => {
      const A = apiClient(gwA.url);
      const B = apiClient(gwB.url);
      const email = `pt-long-${Date.now()}@example.com`;
      const password = 'correct horse battery staple';
      const reg = await A('POST', '/api/auth/register', { body: { email, password } });
      assert.equal(reg.status, 201, JSON.stringify(reg.body));
      const store = ns.link('store');
      // B's Redis connections (CLIENT LIST: it reaches Redis from the namespace's address), by name.
      const redisOfB = async () =>
        ((await redisc.call('CLIENT', 'LIST')) as string)
          .split('\n')
          .map((line) =>
            Object.fromEntries(
              line
                .trim()
                .split(' ')
                .map((kv) => kv.split('=', 2) as [string, string]),
            ),
          )
          .filter((c) => c.addr?.startsWith(`${store.nsAddress}:`))
          .map((c) => ({ id: Number(c.id), name: c.name ?? '', sub: Number(c.sub) }));
      const pgOfB = async () =>
        (
          await pgc.query<{ pid: number }>(
            `select pid from pg_stat_activity where application_name = 'gateway-b'`,
          )
        ).rows.map((r) => r.pid);
      assert.equal((await B('GET', '/api/ready')).status, 200);
      const redisBefore = await redisOfB();
      const lastIdBefore = Math.max(...redisBefore.map((c) => c.id));
      // Connections B dropped in the earlier cuts may still be listed (the server has not heard yet).
      assert.deepEqual([...new Set(redisBefore.map((c) => c.name))].sort(), ['clouddesk', 'clouddesk-sub']);
      const pgBefore = await pgOfB();
      assert.ok(pgBefore.length > 0, 'B has PostgreSQL connections');

      await store.cut();
      const cutAt = Date.now();
      // Requests that stall on B's connections, so they hold unacknowledged bytes: the readiness checks
      // (Redis PING, SELECT 1) and a sign-in. The cut then lasts on (that is what the case is about);
      // B answers 503 all along.
      await waitFor(
        '/api/ready 503 on the cut-off gateway',
        async () => (await B('GET', '/api/ready')).status === 503,
        RETRY_MS + ATTEMPT_SLACK_MS,
      );
      const refused = await B('POST', '/api/auth/login', { body: { email, password } });
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      await waitFor(
        `the cut to last ${LONG_CUT_MS} ms`,
        async () => {
          const r = await B('GET', '/api/ready');
          assert.equal(r.status, 503, 'not ready while cut off');
          return Date.now() - cutAt >= LONG_CUT_MS;
        },
        LONG_CUT_MS + 30_000,
      );

      await store.heal();
      const healedAt = Date.now();
      const readyIn = await waitFor(
        '/api/ready 200 soon after the heal',
        async () => (await B('GET', '/api/ready')).status === 200,
        HEAL_BOUND_MS,
      );
      const signIn = await B('POST', '/api/auth/login', { body: { email, password } });
      assert.equal(signIn.status, 200, JSON.stringify(signIn.body));
      const servedIn = Date.now() - healedAt;
      // Both Redis connections are new ones (ids only grow), the subscriber subscribed again; the old
      // ones may still be listed until their retransmission reaches the server after the heal. The
      // sign-in does not wait for the subscriber (its PING notices the stall), so it is waited for here,
      // within the same bound.
      let redisAfter = await redisOfB();
      let fresh = redisAfter.filter((c) => c.id > lastIdBefore);
      await waitFor(
        'both Redis connections dialed again, the subscriber subscribed',
        async () => {
          redisAfter = await redisOfB();
          fresh = redisAfter.filter((c) => c.id > lastIdBefore);
          return fresh.some((c) => c.name === 'clouddesk-sub' && c.sub === 1) && fresh.length >= 2;
        },
        HEAL_BOUND_MS,
      ).catch(() => undefined);
      assert.deepEqual(
        fresh.map((c) => c.name).sort(),
        ['clouddesk', 'clouddesk-sub'],
        JSON.stringify(redisAfter),
      );
      assert.equal(fresh.find((c) => c.name === 'clouddesk-sub')?.sub, 1, 'subscribed again');
      // And PostgreSQL: B signs in on a backend it dialed after the cut began.
      const pgAfter = await pgOfB();
      assert.ok(
        pgAfter.some((pid) => !pgBefore.includes(pid)),
        `a new PostgreSQL connection (before ${pgBefore.join(',')}, after ${pgAfter.join(',')})`,
      );
      t.diagnostic(
        `cut ${Date.now() - cutAt - servedIn} ms; after heal: ready in ${readyIn} ms, signed in at ${servedIn} ms; ` +
          `Redis ids ${redisBefore.map((c) => `${c.name}=${c.id}`).join(',')} -> ${fresh.map((c) => `${c.name}=${c.id}`).join(',')}; ` +
          `PostgreSQL pids ${pgBefore.join(',')} -> ${pgAfter.join(',')}`,
      );
    });
  },
);
