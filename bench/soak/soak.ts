// The chaos soak of issue 11: the stack of soak-stack.ts under the traffic of soak-traffic.ts, and at
// random (seeded) intervals one fault at a time — SIGKILL a gateway, SIGTERM (drain) a gateway,
// SIGKILL the Redis primary, SIGKILL the PostgreSQL primary's postmaster, or a short partition of one
// gateway from both stores — each restarted or healed as production would (a supervisor restarts a
// gateway; Sentinel and Patroni bring the old primary back as a replica), each timed to recovery.
// At the end: the byte-exact barrier on every live stream, and every acknowledged write looked up row by
// row in PostgreSQL.
import { Redis } from 'ioredis';
import { seededRandom } from '../sim/traffic-profile.js';
import type { ProfileName } from '../sim/traffic-profile.js';
import { startSoakStack, type SoakGateway, type SoakStack } from './soak-stack.js';
import { SoakViewer, Traffic, apiWorker, type AckedWrite, type FiveXx } from './soak-traffic.js';
import { diagnoseFiveXx, type FiveXxDiagnosis } from './gateway-errors.js';

export const FAULT_KINDS = [
  'gateway-kill',
  'gateway-drain',
  'redis-primary-kill',
  'pg-primary-kill',
  'partition',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface SoakOptions {
  /** Run this long (faults keep coming); ignored with `oneOfEach`. */
  minutes: number;
  seed: number;
  viewers: number;
  apiWorkers: number;
  gateways: number;
  /** Gap between one fault's recovery and the next fault, drawn uniformly (ms). */
  gapMs: [number, number];
  /** The smoke run: each kind once, in a seeded order, then stop. */
  oneOfEach: boolean;
  partitionMs: number;
  profile: ProfileName;
  sshUser: string;
  log: (line: string) => void;
}

export interface FaultRecord {
  kind: FaultKind;
  target: string;
  atMs: number;
  /** When the fault's cause was undone: the gateway ready again, the partition healed, a new primary. */
  undoneAtMs: number | null;
  recoveredAtMs: number | null;
  /** From the fault (a partition: from its healing) to everything serving again (see the report). */
  recoveryMs: number | null;
  viewersDropped: number;
  /** The last dropped viewer streaming again, from the fault. */
  viewersBackMs: number | null;
  notes: string[];
}

export interface SoakResult {
  options: Omit<SoakOptions, 'log'>;
  startedAt: string;
  durationMs: number;
  faults: FaultRecord[];
  viewers: {
    count: number;
    streams: number;
    /** Outages (a stream cut, then back) and the longest. */
    outages: number;
    longestOutageMs: number;
    notBack: { viewer: number; sinceMs: number }[];
    sessionsLost: number;
    /** Streams cut while no gateway was being killed or drained (where none should be). */
    unexpectedDrops: { viewer: number; atMs: number; closeCode: number | null; during: string }[];
    /** Streams with an RFB parse failure or an echo out of order: bytes missing, reordered or corrupt. */
    corruptStreams: { viewer: number; faults: string[] }[];
    barrier: { live: number; exact: number; mismatched: string[]; noAnswer: number };
    bytesIn: number;
  };
  api: {
    requests: number;
    statuses: Record<string, number>;
    networkErrors: Record<string, number>;
    fiveXx: FiveXx[];
    fiveXxByCode: Record<string, number>;
    /** Each 5xx with the gateways' log lines at level ≥ error around it (the logs go with the stack). */
    fiveXxLogs: FiveXxDiagnosis[];
    loops: number;
    abandoned: number;
  };
  probes: { fiveXxByCode: Record<string, number> };
  /** HAProxy's view of the gateways, polled every 500 ms: each change, and time with none UP. */
  balancer: { changes: { atMs: number; gateway: string; state: string }[]; noneUpMs: number };
  writes: { acked: Record<string, number>; missing: AckedWrite[] };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RECOVERY_BOUND_MS = 180_000;

async function until(boundMs: number, probe: () => Promise<boolean>, stepMs = 200): Promise<boolean> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    if (await probe().catch(() => false)) return true;
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const rand = seededRandom(o.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const startedAt = new Date().toISOString();
  const stack = await startSoakStack({
    gateways: o.gateways,
    profile: o.profile,
    seed: o.seed,
    sshUser: o.sshUser,
    log: o.log,
  });
  const t0 = Date.now();
  const traffic = new Traffic(stack.url, t0);
  const probes = new Traffic(stack.url, t0);
  const faults: FaultRecord[] = [];
  const password = 'soak passphrase 0123456789';
  const drops: { viewer: number; atMs: number }[] = [];
  const viewers = Array.from(
    { length: o.viewers },
    (_, i) =>
      new SoakViewer(i, `soak-viewer-${i}-${o.seed}@example.test`, password, traffic, (e) => {
        if (e.kind === 'drop') drops.push({ viewer: e.viewer, atMs: e.atMs });
      }),
  );
  const apiStats = { loops: 0, abandoned: 0 };
  const balancer: SoakResult['balancer'] = { changes: [], noneUpMs: 0 };
  const lastState = new Map<number, string>();
  let monitoring = true;
  const monitor = (async () => {
    while (monitoring) {
      const states = await stack.balancer.serverStates().catch(() => null);
      if (states !== null) {
        for (const g of stack.gateways) {
          const st = states.get(g.process.port) ?? '?';
          if (lastState.get(g.process.port) !== st)
            balancer.changes.push({ atMs: traffic.now(), gateway: g.name, state: st });
          lastState.set(g.process.port, st);
        }
        if (![...states.values()].includes('UP')) balancer.noneUpMs += 500;
      }
      await sleep(500);
    }
  })();
  let stopApi = false;
  let apiRuns: Promise<void>[] = [];
  try {
    o.log(`starting ${o.viewers} viewers`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (next < viewers.length) await viewers[next++]!.start(stack.instance);
      }),
    );
    o.log(`${o.viewers} viewers streaming; ${o.apiWorkers} API workers start`);
    apiRuns = Array.from({ length: o.apiWorkers }, (_, i) =>
      apiWorker(i, traffic, stack.instance, password, () => stopApi, apiStats),
    );

    /** Sign-in and a fresh ticket (Redis) on one gateway directly, not through the balancer. */
    const probe = async (g: SoakGateway): Promise<boolean> => {
      const v = viewers[0]!;
      const login = await probes.api<{ accessToken: string }>(
        'probe-login',
        'POST',
        '/api/auth/login',
        { email: v.email, password },
        null,
        g.process.url,
      );
      if (login.status !== 200) return false;
      const t = await probes.api(
        'probe-ticket',
        'POST',
        `/api/sessions/${v.sessionId}/ticket`,
        undefined,
        login.data.accessToken,
        g.process.url,
      );
      return t.status === 200;
    };
    const allServe = async () => (await Promise.all(stack.gateways.map(probe))).every(Boolean);
    const viewersBackSince = (fromMs: number) =>
      viewers.every((v) => v.outages.every((x) => x.fromMs < fromMs || x.toMs !== null));
    const redisHealthy = async () => {
      const port = await stack.redis.primaryPort();
      const r = new Redis({
        host: '127.0.0.1',
        port,
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      r.on('error', () => undefined);
      try {
        await r.connect();
        const info = await r.info('replication');
        return /^role:master/m.test(info) && /^connected_slaves:[1-9]/m.test(info);
      } finally {
        r.disconnect();
      }
    };
    const healthy = async () => {
      const pgOk = await stack.pg
        .waitHealthy(1000)
        .then(() => true)
        .catch(() => false);
      return pgOk && (await redisHealthy()) && (await allServe());
    };

    const endAt = t0 + o.minutes * 60_000;
    const order = o.oneOfEach ? [...FAULT_KINDS].sort(() => rand() - 0.5) : [];
    for (let i = 0; ; i++) {
      if (o.oneOfEach ? i >= order.length : Date.now() >= endAt) break;
      const gap = o.gapMs[0] + rand() * (o.gapMs[1] - o.gapMs[0]);
      await sleep(gap);
      if (!o.oneOfEach && Date.now() >= endAt) break;
      // A gateway an earlier fault could not start again gets another go before the next fault.
      for (const g of stack.gateways.filter((x) => x.down)) {
        o.log(`starting ${g.name} again (left down by an earlier fault)`);
        if (await restartGateway(g, 'SIGKILL', [])) g.down = false;
      }
      const wasHealthy = await until(RECOVERY_BOUND_MS, healthy, 500);
      const kind = o.oneOfEach ? order[i]! : pick(FAULT_KINDS);
      const rec: FaultRecord = {
        kind,
        target: '',
        atMs: 0,
        undoneAtMs: null,
        recoveredAtMs: null,
        recoveryMs: null,
        viewersDropped: 0,
        viewersBackMs: null,
        notes: wasHealthy ? [] : ['the stack was not fully healthy when this fault began'],
      };
      faults.push(rec);
      const now = () => traffic.now();
      switch (kind) {
        case 'gateway-kill':
        case 'gateway-drain': {
          const g = pick(stack.gateways);
          rec.target = g.name;
          rec.atMs = now();
          o.log(`fault ${i + 1}: ${kind} ${g.name}`);
          g.down = true;
          // A supervisor restarts it at once (the helper waits for the old process to exit first).
          if (!(await restartGateway(g, kind === 'gateway-kill' ? 'SIGKILL' : 'SIGTERM', rec.notes))) {
            // Not started again (a machine too loaded to start one in time): the fault stays not
            // recovered, and the run goes on with the others and still writes its report.
            break;
          }
          g.down = false;
          rec.undoneAtMs = now();
          const ok = await until(RECOVERY_BOUND_MS, async () => {
            const up = (await stack.balancer.serverStates()).get(g.process.port) === 'UP';
            return up && viewersBackSince(rec.atMs) && (await probe(g));
          });
          if (ok) rec.recoveredAtMs = now();
          break;
        }
        case 'redis-primary-kill': {
          rec.atMs = now();
          const old = await stack.redis.killPrimary();
          rec.target = `redis :${old}`;
          o.log(`fault ${i + 1}: ${kind} ${rec.target}`);
          const promoted = await stack.redis.waitForNewPrimary(old).catch(() => null);
          rec.undoneAtMs = now();
          if (promoted === null) rec.notes.push('no new primary within 30 s');
          else rec.notes.push(`promoted :${promoted}`);
          const ok = await until(
            RECOVERY_BOUND_MS,
            async () => viewersBackSince(rec.atMs) && (await allServe()),
          );
          if (ok) rec.recoveredAtMs = now();
          // As a supervisor would: the old primary comes back, as a replica of the new one.
          await stack.redis.restart(old);
          break;
        }
        case 'pg-primary-kill': {
          const primary = await stack.pg.primary();
          const pid = await primary.postmasterPid();
          rec.target = `postgres ${primary.name}`;
          rec.atMs = now();
          o.log(`fault ${i + 1}: ${kind} ${rec.target} (postmaster ${pid})`);
          if (pid !== null) process.kill(pid, 'SIGKILL');
          else rec.notes.push('no postmaster found');
          // Undone: Patroni has a running leader again (the standby promoted, or the old one restarted).
          const leaderBack = until(RECOVERY_BOUND_MS, async () => {
            const leader = (await stack.pg.members()).find(
              (m) => m.role === 'leader' && m.state === 'running',
            );
            if (!leader) return false;
            if (leader.name !== primary.name) return true;
            const pidNow = await primary.postmasterPid();
            return pidNow !== null && pidNow !== pid;
          }).then((ok) => {
            if (ok) rec.undoneAtMs = now();
          });
          const ok = await until(
            RECOVERY_BOUND_MS,
            async () => viewersBackSince(rec.atMs) && (await allServe()),
          );
          if (ok) rec.recoveredAtMs = now();
          await leaderBack;
          const after = await stack.pg.primary().catch(() => null);
          rec.notes.push(
            after === null
              ? 'no leader afterwards'
              : after.name === primary.name
                ? `Patroni restarted ${primary.name} in place`
                : `failed over ${primary.name} → ${after.name}`,
          );
          break;
        }
        case 'partition': {
          const g = pick(stack.gateways);
          rec.target = g.name;
          rec.atMs = now();
          o.log(`fault ${i + 1}: partition ${g.name} from Redis and PostgreSQL for ${o.partitionMs} ms`);
          // Its store link drops every packet both ways; its viewers and its SSH path are on another link.
          await g.storeLink.cut();
          let sawNotReady = false;
          let balancerDown = false;
          const healAt = Date.now() + o.partitionMs;
          while (Date.now() < healAt) {
            const r = await fetch(`${g.process.url}/api/ready`, { signal: AbortSignal.timeout(1000) }).catch(
              () => null,
            );
            if (r === null || r.status !== 200) sawNotReady = true;
            if ((await stack.balancer.serverStates()).get(g.process.port) !== 'UP') balancerDown = true;
            await sleep(250);
          }
          await g.storeLink.heal();
          rec.undoneAtMs = now();
          rec.notes.push(
            `${g.name} /api/ready ${sawNotReady ? 'went not-ready' : 'stayed 200'} during the partition; HAProxy ${balancerDown ? 'took it out' : 'kept it in'}`,
          );
          const ok = await until(
            RECOVERY_BOUND_MS,
            async () => viewersBackSince(rec.atMs) && (await probe(g)),
          );
          if (ok) rec.recoveredAtMs = now();
          break;
        }
      }
      const from = kind === 'partition' ? (rec.undoneAtMs ?? rec.atMs) : rec.atMs;
      rec.recoveryMs = rec.recoveredAtMs === null ? null : rec.recoveredAtMs - from;
      const dropped = viewers.flatMap((v) => v.outages.filter((x) => x.fromMs >= rec.atMs));
      rec.viewersDropped = dropped.length;
      const backs = dropped.map((x) => x.toMs).filter((x): x is number => x !== null);
      rec.viewersBackMs =
        dropped.length === 0 ? 0 : backs.length === dropped.length ? Math.max(...backs) - rec.atMs : null;
      if (rec.recoveredAtMs === null) rec.notes.push(`not recovered within ${RECOVERY_BOUND_MS / 1000} s`);
      o.log(
        `  recovered ${rec.recoveryMs === null ? 'NOT' : `in ${(rec.recoveryMs / 1000).toFixed(1)} s`}; viewers dropped ${rec.viewersDropped}, back after ${rec.viewersBackMs === null ? '—' : `${(rec.viewersBackMs / 1000).toFixed(1)} s`}; ${rec.notes.join('; ')}`,
      );
    }

    // Quiet: the last fault's effects settle, then the API stops and the checks run.
    await sleep(5000);
    stopApi = true;
    await Promise.all(apiRuns);
    const notBack = viewers.flatMap((v) =>
      v.outages.filter((x) => x.toMs === null).map((x) => ({ viewer: v.index, sinceMs: x.fromMs })),
    );
    o.log('barrier: every live stream stops and compares byte counts with the simulator');
    const barrierRecs = await Promise.all(viewers.map((v) => v.barrier(30_000)));
    const barrier = { live: 0, exact: 0, mismatched: [] as string[], noAnswer: 0 };
    for (const [i, r] of barrierRecs.entries()) {
      if (r === null) continue;
      barrier.live++;
      const b = r.barrier;
      if (b === null) barrier.noAnswer++;
      else if (b.serverSent === b.clientReceived && b.serverReceived === b.clientSent) barrier.exact++;
      else barrier.mismatched.push(`viewer ${i}: ${JSON.stringify(b)}`);
    }
    await Promise.all(viewers.map((v) => v.stop()));
    const durationMs = Date.now() - t0;

    // Which fault was under way when each stream was cut.
    const faultAt = (ms: number) =>
      faults.find((f) => ms >= f.atMs && ms <= (f.recoveredAtMs ?? Number.POSITIVE_INFINITY) + 2000);
    const unexpectedDrops = viewers.flatMap((v) =>
      v.outages
        .map((x) => ({ x, f: faultAt(x.fromMs) }))
        .filter(({ f }) => f === undefined || (f.kind !== 'gateway-kill' && f.kind !== 'gateway-drain'))
        .map(({ x, f }) => ({
          viewer: v.index,
          atMs: x.fromMs,
          closeCode: x.closeCode,
          during: f ? `${f.kind} ${f.target}` : 'no fault',
        })),
    );
    const allOutages = viewers.flatMap((v) => v.outages);
    const corruptStreams = viewers
      .map((v) => ({ viewer: v.index, faults: v.streams.flatMap((s) => s.faults) }))
      .filter((x) => x.faults.length > 0);

    o.log('checking every acknowledged write, row by row');
    await until(RECOVERY_BOUND_MS, async () => {
      await stack.pg.waitHealthy(1000);
      return true;
    });
    const missing = await checkWrites(stack, traffic.writes);
    for (const v of viewers) await v.disconnect();

    const byCode = (xs: FiveXx[]) => {
      const m: Record<string, number> = {};
      for (const x of xs) m[`${x.status} ${x.code}`] = (m[`${x.status} ${x.code}`] ?? 0) + 1;
      return m;
    };
    const acked: Record<string, number> = {};
    for (const w of traffic.writes) acked[w.kind] = (acked[w.kind] ?? 0) + 1;
    const gatewayLogs = await Promise.all(
      stack.gateways.map(async (g) => ({ gateway: g.name, text: await g.process.logs() })),
    );
    const fiveXxLogs = diagnoseFiveXx(traffic.fiveXx, gatewayLogs, t0);
    const { log: _log, ...options } = o;
    return {
      options,
      startedAt,
      durationMs,
      faults,
      viewers: {
        count: viewers.length,
        streams: viewers.reduce((n, v) => n + v.streams.length, 0),
        outages: allOutages.length,
        longestOutageMs: Math.max(0, ...allOutages.map((x) => (x.toMs ?? durationMs) - x.fromMs)),
        notBack,
        sessionsLost: viewers.reduce((n, v) => n + v.sessionsLost, 0),
        unexpectedDrops,
        corruptStreams,
        barrier,
        bytesIn: viewers.reduce((n, v) => n + v.streams.reduce((m, s) => m + s.bytesIn, 0), 0),
      },
      api: {
        requests: traffic.requests,
        statuses: traffic.statuses,
        networkErrors: traffic.networkErrors,
        fiveXx: traffic.fiveXx,
        fiveXxByCode: byCode(traffic.fiveXx),
        fiveXxLogs,
        loops: apiStats.loops,
        abandoned: apiStats.abandoned,
      },
      probes: { fiveXxByCode: byCode(probes.fiveXx) },
      balancer,
      writes: { acked, missing },
    };
  } finally {
    monitoring = false;
    await monitor;
    stopApi = true;
    await Promise.allSettled(apiRuns);
    await Promise.allSettled(viewers.map((v) => v.stop()));
    await stack.stop();
  }
}

/**
 * Stops the gateway with `signal` and starts it again on the same port, as a supervisor would; a start
 * that does not get to ready within the helper's bound (a loaded machine) is tried again, twice. False
 * when the third fails too: before, that ended the whole run without a report (load 50, 2026-12-02).
 */
async function restartGateway(
  g: SoakGateway,
  signal: 'SIGKILL' | 'SIGTERM',
  notes: string[],
): Promise<boolean> {
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      await g.process.restart({ signal });
      return true;
    } catch (e) {
      notes.push(
        `restart attempt ${attempt} failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`,
      );
    }
  }
  return false;
}

/** Every write answered 2xx, looked up in PostgreSQL (through its HAProxy, whichever node is primary). */
async function checkWrites(stack: SoakStack, writes: AckedWrite[]): Promise<AckedWrite[]> {
  const db = stack.database();
  await db.connect();
  try {
    const ids = (k: string) => writes.filter((w) => w.kind === k).map((w) => w.id);
    const users = await db.query<{ id: string; email: string }>(
      'select id, email from users where id = any($1)',
      [ids('user')],
    );
    const email = new Map(users.rows.map((r) => [r.id, r.email]));
    const instances = await db.query<{ id: string; user_id: string }>(
      'select id, user_id from instances where id = any($1)',
      [ids('instance')],
    );
    const instanceIds = new Set(instances.rows.map((r) => r.id));
    const sessions = await db.query<{ id: string; instance_id: string; status: string }>(
      'select id, instance_id, status from sessions where id = any($1)',
      [[...ids('session'), ...ids('end')]],
    );
    const session = new Map(sessions.rows.map((r) => [r.id, r]));
    return writes.filter((w) => {
      switch (w.kind) {
        case 'user':
          return email.get(w.id) !== w.detail;
        case 'instance':
          return !instanceIds.has(w.id);
        case 'session':
          return session.get(w.id)?.instance_id !== w.detail;
        case 'end':
          return session.get(w.id)?.status !== 'ended';
      }
      return true;
    });
  } finally {
    await db.end();
  }
}
