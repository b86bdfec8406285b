// Everything the chaos soak runs against, on loopback: the PostgreSQL HA stack (Patroni + etcd +
// HAProxy, test/helpers/patroni-cluster.ts), Redis under Sentinel (a primary, a replica, three
// sentinels, test/helpers/redis-ha.ts), the benchmark's desktop simulator behind a real OpenSSH sshd
// (its fake Xvnc, bench/sim), three gateway processes (test/helpers/gateway-process.ts) and HAProxy in
// front of them (test/helpers/haproxy.ts).
//
// Each gateway runs in a network namespace of its own (test/helpers/netns.ts) with two veth links to
// the host, as test/partition.test.ts does:
//   - "store": Redis, the sentinels and PostgreSQL's HAProxy, through a forwarder process on the link's
//     host end (bench/soak/forwarder.ts; the servers listen on loopback only). A partition cuts this
//     link (tc blackhole both ways: packets dropped, no reset), and only this link.
//   - "data": HAProxy reaches the gateway at the link's namespace end, and the gateway reaches the
//     instance's sshd through a forwarder on the first namespace's data host address (every namespace
//     has a route to it over its own data link), so every gateway sees the instance at one address.
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { startGatewayProcess, type GatewayProcess } from '../../test/helpers/gateway-process.js';
import { startHaproxy, type HaproxyFixture } from '../../test/helpers/haproxy.js';
import { createNetns, type NetnsFixture, type NetnsLink } from '../../test/helpers/netns.js';
import { startPatroniCluster, type PatroniCluster } from '../../test/helpers/patroni-cluster.js';
import { startRedisSentinelSet, type RedisSentinelFixture } from '../../test/helpers/redis-ha.js';
import { processesWithEnv, startSshd, terminate, type SshdFixture } from '../../test/helpers/sshd.js';
import { BENCH_MAX_STARTUPS } from '../stacks/bench-sshd.js';
import { startSimulator, type SimulatorHandle } from '../stacks/stack.js';
import type { ProfileName } from '../sim/traffic-profile.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const repo = join(here, '..', '..');
const execFileP = promisify(execFile);

export interface Forwarder {
  child: ChildProcess;
  /** upstream port → the forwarder's listening port */
  ports: Record<number, number>;
  stop(): Promise<void>;
}

export interface SoakGateway {
  name: string;
  process: GatewayProcess;
  /** Its own network namespace; `storeLink.cut()` partitions it from Redis and PostgreSQL. */
  netns: NetnsFixture;
  storeLink: NetnsLink;
  /** Down on purpose (killed and not yet restarted). */
  down: boolean;
}

export interface SoakStack {
  pg: PatroniCluster;
  redis: RedisSentinelFixture;
  sim: SimulatorHandle;
  sshd: SshdFixture;
  gateways: SoakGateway[];
  balancer: HaproxyFixture;
  /** HAProxy's URL: what every client uses. */
  url: string;
  instance: { host: string; port: number; username: string; privateKey: string; hostKeyFingerprint: string };
  /** Direct to PostgreSQL's HAProxy (not through a forwarder), for the final row-by-row check. */
  database(): pg.Client;
  stop(): Promise<void>;
}

export interface StackOptions {
  gateways: number;
  profile: ProfileName;
  seed: number;
  sshUser: string;
  log: (line: string) => void;
}

async function startForwarder(listenHost: string, upstreams: number[]): Promise<Forwarder> {
  const child = fork(join(here, 'forwarder.ts'), [listenHost, ...upstreams.map(String)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ports = await new Promise<Record<number, number>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('forwarder did not start within 60 s')), 60_000);
    child.once('message', (m: { type?: string; ports?: Record<number, number> }) => {
      clearTimeout(timer);
      if (m.type === 'ready' && m.ports) resolve(m.ports);
      else reject(new Error('forwarder: unexpected message'));
    });
    child.once('exit', (code) => reject(new Error(`forwarder exited (${code})`)));
  });
  const f: Forwarder = {
    child,
    ports,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
  return f;
}

export async function startSoakStack(o: StackOptions): Promise<SoakStack> {
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const s of stops.splice(0).reverse())
      await s().catch((e: unknown) => o.log(`cleanup: ${String(e)}`));
  };
  try {
    o.log('starting PostgreSQL HA (Patroni + etcd + HAProxy), Redis Sentinel and the desktop simulator');
    const [pgCluster, redis, sim] = await Promise.all([
      startPatroniCluster({ database: 'clouddesk_soak' }),
      startRedisSentinelSet(),
      startSimulator(o.profile, o.seed),
    ]);
    stops.push(
      () => pgCluster.stop(),
      () => redis.dispose(),
      () => sim.stop(),
    );

    // One namespace per gateway, made one after another (each takes the next free 10.213.x.0/24).
    const spaces: NetnsFixture[] = [];
    for (let i = 0; i < o.gateways; i++) {
      const ns = await createNetns(['store', 'data']);
      stops.push(() => ns.dispose());
      spaces.push(ns);
    }
    const instanceHost = spaces[0]!.link('data').hostAddress;
    for (const ns of spaces.slice(1)) {
      const data = ns.link('data');
      await execFileP('ip', ['-n', ns.name, 'route', 'add', `${instanceHost}/32`, 'via', data.hostAddress]);
    }

    // The sshd user runs the fake Xvnc from a copy in a 0755 folder (as bench/stacks/clouddesk-stack.ts).
    const marker = `CLOUDDESK_SOAK_RUN=${randomBytes(6).toString('hex')}`;
    const fakeBin = await mkdtemp(join(tmpdir(), 'clouddesk-soak-bin-'));
    stops.push(() => rm(fakeBin, { recursive: true, force: true }));
    await cp(join(repo, 'bench', 'sim', 'fake-bin'), fakeBin, { recursive: true });
    await chmod(fakeBin, 0o755);
    const sshd = await startSshd({
      usernames: [o.sshUser],
      maxStartups: BENCH_MAX_STARTUPS,
      extraConfig: [
        `SetEnv PATH=${fakeBin}:/usr/local/bin:/usr/bin:/bin CLOUDDESK_BENCH_SIM=127.0.0.1:${sim.tcpPort} ${marker}`,
      ],
    });
    stops.push(() => sshd.stop());
    stops.push(async () => terminate(await processesWithEnv(marker, [sshd.users[0]!.uid])));
    const sshPath = await startForwarder(instanceHost, [sshd.port]);
    stops.push(() => sshPath.stop());

    const secrets = {
      JWT_ACCESS_SECRET: randomBytes(32).toString('base64url'),
      JWT_REFRESH_SECRET: randomBytes(32).toString('base64url'),
      ENCRYPTION_KEY: randomBytes(32).toString('hex'),
    };
    const sentinelPorts = redis.sentinels.map((s) => s.port);
    const upstreams = [...sentinelPorts, ...redis.dataPorts, pgCluster.haproxyPort];
    const startGateway = async (i: number): Promise<SoakGateway> => {
      const netns = spaces[i - 1]!;
      const storeLink = netns.link('store');
      const forwarder = await startForwarder(storeLink.hostAddress, upstreams);
      stops.push(() => forwarder.stop());
      const via = (port: number) => `${storeLink.hostAddress}:${forwarder.ports[port]}`;
      const env = {
        ...secrets,
        DATABASE_URL: `postgres://postgres@${via(pgCluster.haproxyPort)}/${pgCluster.database}`,
        REDIS_SENTINELS: sentinelPorts.map(via).join(','),
        REDIS_SENTINEL_NAME: redis.masterName,
        // What the sentinels announce (their own and the data servers' addresses) → this gateway's path.
        REDIS_SENTINEL_NAT_MAP: [...sentinelPorts, ...redis.dataPorts]
          .map((p) => `127.0.0.1:${p}=${via(p)}`)
          .join(','),
        REGISTRATION: 'open',
        LOG_LEVEL: 'info',
        // The instance is the first namespace's data host address: a host address, allowed exactly.
        INSTANCE_ALLOWED_CIDRS: `${instanceHost}/32`,
        // All the load comes from one address: the limits meant for one abusive client are raised.
        RATE_LIMIT_MAX_REQUESTS: '10000000',
        WS_MAX_CONNECTS_PER_MINUTE: '1000000',
        AUTH_MAX_ATTEMPTS_PER_IP: '10000000',
        AUTH_MAX_FAILURES_PER_IP: '1000000',
        // Apart from the test suite (:1–:10, 40100–40140) and the benchmark (1000–30000).
        VNC_DISPLAY_MIN: '31001',
        VNC_DISPLAY_MAX: '32000',
        DESKTOP_TRANSPORT: 'unix',
        // A drain stays not ready but serving until HAProxy has taken the gateway out: its checks
        // below, 2 falls 1 s apart, each up to 1 s → 3 s; then 5 s for viewers and the rest, as
        // before (the helper SIGKILLs after 15 s).
        SHUTDOWN_READY_GRACE_MS: '3000',
        SHUTDOWN_TIMEOUT_MS: '8000',
      };
      o.log(`starting gateway gw${i}`);
      // A start that misses the helper's ready bound on a loaded machine is tried again, twice.
      const start = () =>
        startGatewayProcess({
          env,
          host: netns.link('data').nsAddress,
          commandPrefix: netns.execPrefix(),
        });
      const proc = await start()
        .catch(() => start())
        .catch(() => start());
      stops.push(() => proc.stop());
      return { name: `gw${i}`, process: proc, netns, storeLink, down: false };
    };
    // The first gateway migrates the fresh database alone; then the others join together.
    const gateways: SoakGateway[] = [await startGateway(1)];
    gateways.push(
      ...(await Promise.all(Array.from({ length: o.gateways - 1 }, (_, i) => startGateway(i + 2)))),
    );
    // Checks every second (each may take up to that long: /api/ready pings PostgreSQL), 2 falls.
    const balancer = await startHaproxy({
      backends: gateways.map((g) => g.process.port),
      backendHosts: gateways.map((g) => g.netns.link('data').nsAddress),
      checkIntervalMs: 1000,
    });
    stops.push(() => balancer.stop());
    const user = sshd.users[0]!;
    return {
      pg: pgCluster,
      redis,
      sim,
      sshd,
      gateways,
      balancer,
      url: balancer.url,
      instance: {
        host: instanceHost,
        port: sshPath.ports[sshd.port]!,
        username: user.username,
        privateKey: user.privateKey,
        hostKeyFingerprint: sshd.hostKeyFingerprint,
      },
      database: () => new pg.Client({ connectionString: pgCluster.url }),
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
