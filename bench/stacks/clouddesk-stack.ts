// CloudDesk under test: the gateway started as a child process (`node --import tsx src/main.ts`, or
// `--workers N` through its own cluster mode), in front of the benchmark's sshd. The sshd's test user
// gets a PATH that starts with bench/sim/fake-bin, so when the gateway starts a desktop over SSH it
// finds the fake `Xvnc` there: that asks the simulator for a desktop on the Unix socket the gateway
// chose and lives until it is killed. Everything else — sign-in, SSH pool, desktop detection and
// start, streamlocal forwarding, the relay — is the real gateway.
//
// Charged as its gateway: the gateway process and all its descendants (cluster workers). The sshd
// listener and its per-connection processes are reported apart, as for the do-it-yourself peer.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, lstat, mkdtemp, readFile, readdir, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/helpers/free-port.js';
import { isProcessAlive, processesWithEnv, terminate } from '../../test/helpers/sshd.js';
import { gatewayPrefix, type PinPlan } from '../lib/pinning.js';
import { processesOfUsers } from '../lib/proc-stats.js';
import { onCleanup, stopChild, trackChild } from '../lib/process-registry.js';
import { startBenchSshd, type BenchSshd } from './bench-sshd.js';
import {
  benchDir,
  groupOf,
  repoDir,
  type GatewayMetrics,
  type RunningStack,
  type SimulatorHandle,
} from './stack.js';

export interface ClouddeskOptions {
  workers: number;
  /** sshd "instances", each on its own port with its own test user. */
  instances: number;
  store: 'sqlite' | 'postgres';
  redis: boolean;
  cpuProf: string | null;
  /** Extra gateway environment (operator overrides, e.g. RELAY_STALL_TIMEOUT_MS). */
  env: Record<string, string>;
  /** `--pin`: the gateway starts on its own CPU (everything else inherits the harness's). */
  pin: PinPlan | null;
  /** `--control-process`: a second gateway process for the control-plane load (target.controlBaseUrl). */
  controlProcess: boolean;
  /** `--roles`: an api process (GATEWAY_ROLE=api, target.baseUrl) and a relay (target.viewerBaseUrl). */
  roles: boolean;
}

const READY_TIMEOUT_MS = 60_000;
/**
 * Displays far above the :1–:10 the test suite's real Xvnc uses, so the two never collide; room for
 * 10,000 desktops and more (all instances share this machine's display numbers).
 */
export const DISPLAY_MIN = 1000;
export const DISPLAY_MAX = 30_000;

export interface BenchInstances {
  sshds: BenchSshd[];
  /** The instances' OS users (the fake desktops run as them). */
  uids: number[];
  /** The environment marker every process of this run's desktops carries. */
  marker: string;
  /** Ends this run's fake desktops, then the sshds and the fake Xvnc folder. */
  stop(): Promise<void>;
}

/**
 * `count` benchmark instances whose desktops are the simulator's: each its own sshd and OS user, with
 * bench/sim/fake-bin first on its PATH (also bench/micro/viewer-memory.ts).
 */
export async function startBenchInstances(sim: SimulatorHandle, count: number): Promise<BenchInstances> {
  // The harness ends the fake desktops of this run itself, by this marker.
  const marker = `CLOUDDESK_BENCH_RUN=${randomBytes(6).toString('hex')}`;
  // The sshd test user must be able to run the fakes, wherever this checkout lives (a clone under a
  // 0700 folder, as mktemp makes, is out of its reach): run them from a copy in a 0755 folder.
  const fakeBin = await mkdtemp(join(tmpdir(), 'clouddesk-bench-bin-'));
  const removeFakeBin = onCleanup('fake Xvnc folder', () => rm(fakeBin, { recursive: true, force: true }));
  await cp(join(benchDir, 'sim', 'fake-bin'), fakeBin, { recursive: true });
  await chmod(fakeBin, 0o755);
  // Several instances stand for several machines as far as the gateway can tell: each its own sshd (its
  // own host key and port) and its own OS user, so each has its own SSH connections, runtime folder and
  // processes. (They still share this machine's X display numbers; starts find free ones as they would
  // on a machine shared with other users.)
  const handoff = sim.handoffPath === null ? '' : ` CLOUDDESK_BENCH_SIM_HANDOFF=${sim.handoffPath}`;
  const setEnv = `SetEnv PATH=${fakeBin}:/usr/local/bin:/usr/bin:/bin CLOUDDESK_BENCH_SIM=127.0.0.1:${sim.tcpPort}${handoff} ${marker}`;
  const sshds: BenchSshd[] = [];
  const stopSshds = async () => {
    for (const s of sshds.splice(0)) await s.stop();
  };
  try {
    for (let i = 1; i <= count; i++)
      sshds.push(await startBenchSshd([setEnv], i === 1 ? 'cdtest1' : `cdtestbench${i}`));
  } catch (e) {
    await stopSshds();
    await removeFakeBin();
    throw e;
  }
  const uids = sshds.map((s) => s.fixture.users[0]!.uid);
  const endDesktops = onCleanup('fake desktops', async () => {
    await terminate(await processesWithEnv(marker, uids));
    await removeDeadDisplays(uids);
  });
  return {
    sshds: [...sshds],
    uids,
    marker,
    stop: async () => {
      await endDesktops();
      await stopSshds();
      await removeFakeBin();
    },
  };
}

export async function clouddeskStack(sim: SimulatorHandle, opts: ClouddeskOptions): Promise<RunningStack> {
  const instances = await startBenchInstances(sim, opts.instances);
  const { sshds, uids, marker } = instances;
  const stopSshds = () => instances.stop();

  const external = await externalStores(opts);
  const metricsToken = randomBytes(24).toString('base64url');
  const giveUp = async (e: unknown, started: BenchGateway[]): Promise<never> => {
    for (const g of started) await g.stop();
    await external.stop();
    await stopSshds();
    throw e;
  };
  // --roles: the api process first, then the relay (GATEWAY_ROLE), which takes viewers from its origin.
  const api = opts.roles
    ? await startBenchGateway(opts, { ...external.env, GATEWAY_ROLE: 'api' }, metricsToken, null).catch(
        (e: unknown) => giveUp(e, []),
      )
    : null;
  const relayEnv: Record<string, string> =
    api === null ? {} : { GATEWAY_ROLE: 'relay', CORS_ORIGIN: api.baseUrl };
  const relay = await startBenchGateway(
    opts,
    { ...external.env, ...relayEnv },
    metricsToken,
    opts.cpuProf,
  ).catch((e: unknown) => giveUp(e, api === null ? [] : [api]));
  // --control-process: the control-plane load's own process, beside the relay on the gateway's CPU.
  const control =
    api ??
    (opts.controlProcess
      ? await startBenchGateway(opts, external.env, metricsToken, null).catch((e: unknown) =>
          giveUp(e, [relay]),
        )
      : null);
  const gateway = relay.child;
  const gatewayPids = () =>
    [gateway.pid, control?.child.pid].filter((pid): pid is number => pid !== undefined);

  return {
    name: 'clouddesk',
    target: {
      kind: 'clouddesk',
      ...(api === null
        ? { baseUrl: relay.baseUrl, ...(control === null ? {} : { controlBaseUrl: control.baseUrl }) }
        : { baseUrl: api.baseUrl, viewerBaseUrl: relay.baseUrl }),
      desktopEnvironment: 'openbox',
      instances: sshds.map(({ fixture }) => ({
        host: '127.0.0.1',
        port: fixture.port,
        username: fixture.users[0]!.username,
        privateKey: fixture.users[0]!.privateKey,
        hostKeyFingerprint: fixture.hostKeyFingerprint,
      })),
    },
    // One process has no descendants to look for: the harness samples it every second, and walking all
    // of /proc (thousands of desktop processes at 1000 users) each time cost the rest core more than it.
    gateway:
      opts.workers > 1 ? groupOf('gateway', () => [gateway.pid]) : { name: 'gateway', pids: gatewayPids },
    sshd: groupOf('sshd', () => sshds.map((s) => s.listenerPid)),
    // The instance side beside sshd: this run's desktops (the fake Xvnc and what it runs, by the run's marker).
    desktops: { name: 'desktops', pids: () => processesOfUsers(uids, marker, ['sshd']) },
    accounting: `gateway = the CloudDesk process${opts.workers > 1 ? ` and its ${opts.workers} cluster workers` : ''}${api !== null ? ' as a relay process and an api process (--roles)' : control === null ? '' : ' and the control-plane process beside it (--control-process)'}; sshd = ${opts.instances > 1 ? `the ${opts.instances} instances' sshd listeners and their` : 'the sshd listener and its'} per-connection processes; desktops = ${sim.handoffPath === null ? 'fake Xvnc → socat per viewer → simulator' : 'fake Xvnc, its RFB socket handed to the simulator (no relay between)'}`,
    probeUrl: `${relay.baseUrl}/api/health`,
    gatewayMetrics: () => scrapeMetrics(relay.metricsUrl, metricsToken),
    ...(control === null ? {} : { controlMetrics: () => scrapeMetrics(control.metricsUrl, metricsToken) }),
    stop: async () => {
      // SIGTERM = the gateway's ordered shutdown (which ends its viewers); the profile, if asked for,
      // is written on that exit.
      await Promise.all([relay.stop(), control?.stop()]);
      await external.stop();
      await instances.stop();
    },
  };
}

interface BenchGateway {
  child: ChildProcess;
  baseUrl: string;
  metricsUrl: string;
  /** Its ordered shutdown, then its data folder removed. */
  stop(): Promise<void>;
}

/** One CloudDesk process of the stack, with its own data folder and ports, ready to serve. */
async function startBenchGateway(
  opts: ClouddeskOptions,
  externalEnv: Record<string, string>,
  metricsToken: string,
  cpuProf: string | null,
): Promise<BenchGateway> {
  const dataDir = await mkdtemp(join(tmpdir(), 'clouddesk-bench-data-'));
  const removeData = onCleanup('gateway data dir', () => rm(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  // Metrics on their own port: under --workers N only the primary's listener there sees every worker.
  const metricsPort = await freePort();
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    NODE_ENV: 'production',
    PORT: String(port),
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    INSTANCE_ALLOWED_CIDRS: '127.0.0.0/8',
    CORS_ORIGIN: `http://127.0.0.1:${port}`,
    // Every virtual user is its own account with one session: the per-user limit stays at its default.
    // Limits meant for one abusive client are raised: all the load comes from one address.
    RATE_LIMIT_MAX_REQUESTS: '10000000',
    WS_MAX_CONNECTS_PER_MINUTE: '1000000',
    AUTH_MAX_ATTEMPTS_PER_IP: '10000000',
    AUTH_MAX_FAILURES_PER_IP: '1000000',
    VNC_DISPLAY_MIN: String(DISPLAY_MIN),
    VNC_DISPLAY_MAX: String(DISPLAY_MAX),
    DESKTOP_TRANSPORT: 'unix',
    METRICS_TOKEN: metricsToken,
    METRICS_PORT: String(metricsPort),
    WORKERS: String(opts.workers),
    // The relay's own capacity is measured: no downstream budget unless a run asks for one
    // (`--gateway-env SESSION_MAX_KBPS=…`); the shipped budget's effect is bench:bandwidth's.
    SESSION_MAX_KBPS: '0',
    ...externalEnv,
    ...opts.env,
  };
  const built = join(repoDir, 'dist', 'src', 'main.js');
  const useBuilt = process.env.CLOUDDESK_BENCH_BUILT === '1' && existsSync(built);
  const nodeArgs = [
    ...(cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : []),
    ...(useBuilt ? [built] : ['--import', 'tsx', join(repoDir, 'src', 'main.ts')]),
  ];
  // With --pin, `taskset -c <cpu> node …`: taskset execs node, so the PID is the gateway's.
  const [command, ...prefixArgs] = [...gatewayPrefix(opts.pin), process.execPath];
  const child = trackChild(
    spawn(command, [...prefixArgs, ...nodeArgs], {
      cwd: repoDir,
      env,
      stdio: ['ignore', 'inherit', 'inherit'],
    }),
  );
  const baseUrl = `http://127.0.0.1:${port}`;
  try {
    await waitForReady(baseUrl, () => child.exitCode);
  } catch (e) {
    await stopChild(child);
    await removeData();
    throw e;
  }
  return {
    child,
    baseUrl,
    metricsUrl: `http://127.0.0.1:${metricsPort}`,
    stop: async () => {
      await stopChild(child, 30_000);
      await removeData();
    },
  };
}

/**
 * The X locks and sockets the run's desktops left (those the harness ended rather than the gateway's
 * stop script): another OS user's lock blocks that display for every other user, so thousands left
 * behind by one run would narrow the next run's displays. Only files of the run's users, in the
 * harness's display range, whose lock names no live process.
 */
async function removeDeadDisplays(uids: number[]): Promise<void> {
  for (const name of await readdir('/tmp')) {
    const m = /^\.X(\d+)-lock$/.exec(name);
    const n = m ? Number(m[1]) : NaN;
    if (!(n >= DISPLAY_MIN && n <= DISPLAY_MAX)) continue;
    const lock = join('/tmp', name);
    try {
      if (!uids.includes((await lstat(lock)).uid)) continue;
      const pid = Number((await readFile(lock, 'latin1')).trim());
      if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid)) continue;
      const socket = `/tmp/.X11-unix/X${n}`;
      const st = await lstat(socket).catch(() => null);
      if (st !== null && uids.includes(st.uid)) await unlink(socket).catch(() => undefined);
      await unlink(lock);
    } catch {
      // gone meanwhile
    }
  }
}

async function waitForReady(baseUrl: string, exitCode: () => number | null): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (let attempt = 0; Date.now() < deadline && attempt < 1000; attempt++) {
    if (exitCode() !== null) throw new Error(`the gateway exited (${exitCode()}) before it was ready`);
    try {
      const res = await fetch(`${baseUrl}/api/ready`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the gateway at ${baseUrl} was not ready within ${READY_TIMEOUT_MS} ms`);
}

/** The gateway's Prometheus text → the few numbers the report uses. */
export async function scrapeMetrics(baseUrl: string, token: string): Promise<GatewayMetrics | null> {
  try {
    const res = await fetch(`${baseUrl}/metrics`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) return null;
    const raw: Record<string, number> = {};
    for (const line of (await res.text()).split('\n')) {
      if (line.startsWith('#') || line.trim() === '') continue;
      const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const name = m[1]!;
      const labels = (m[2] ?? '').replace(/,?(worker|node)="[^"]*"/g, '').replace(/^\{,?/, '{');
      const key = labels === '{}' || labels === '{' ? name : `${name}${labels}`;
      // Summed over workers (max for lag, which does not add up).
      const v = Number(m[3]);
      if (!Number.isFinite(v)) continue;
      raw[key] = key.includes('event_loop_lag') ? Math.max(raw[key] ?? 0, v) : (raw[key] ?? 0) + v;
    }
    const lag = (stat: string) => {
      const v = raw[`clouddesk_event_loop_lag_seconds{stat="${stat}"}`];
      // The gateway reports the lag beyond monitorEventLoopDelay's 10 ms sampling interval already.
      return v === undefined ? null : v * 1000;
    };
    return { eventLoopLagP99Ms: lag('p99'), eventLoopLagMaxMs: lag('max'), raw };
  } catch {
    return null;
  }
}

interface ExternalStores {
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** A fresh PostgreSQL database and/or a private redis-server for `--store postgres` / `--redis`. */
async function externalStores(opts: ClouddeskOptions): Promise<ExternalStores> {
  const env: Record<string, string> = {};
  const stops: (() => Promise<void>)[] = [];
  if (opts.store === 'postgres') {
    const pg = (await import('pg')).default;
    const admin = process.env.CLOUDDESK_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
    const name = `clouddesk_bench_${randomBytes(4).toString('hex')}`;
    const client = new pg.Client({ connectionString: admin });
    await client.connect();
    await client.query(`CREATE DATABASE ${name}`);
    await client.end();
    const url = new URL(admin);
    url.pathname = `/${name}`;
    env.DATABASE_URL = url.toString();
    // Several processes share the database: secrets must be given, not generated per data folder.
    env.JWT_ACCESS_SECRET = randomBytes(32).toString('base64url');
    env.JWT_REFRESH_SECRET = randomBytes(32).toString('base64url');
    env.ENCRYPTION_KEY = randomBytes(32).toString('hex');
    const drop = onCleanup('bench database', async () => {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    });
    stops.push(drop);
  }
  if (opts.redis) {
    const { startRedisServer } = await import('../../test/helpers/redis-server.js');
    const redis = await startRedisServer();
    env.REDIS_URL = redis.url;
    // The load generator signs its users up: with Redis the default is invite-only.
    env.REGISTRATION = 'open';
    stops.push(onCleanup('bench redis', () => redis.dispose()));
  }
  return {
    env,
    stop: async () => {
      for (const s of stops.reverse()) await s();
    },
  };
}
