// Test fixtures for Redis that fails over, on free loopback ports, no persistence, stopped by PID:
//   - Sentinel: one primary, one replica and three redis-sentinel processes (quorum 2,
//     down-after 1 s), as the plan's managed Redis with Sentinel;
//   - Cluster: three primaries and three replicas (cluster-node-timeout 1 s), made with
//     `redis-cli --cluster create`.
// `killPrimary()` SIGKILLs the current primary; the waits poll the servers' own view (SENTINEL,
// CLUSTER INFO), bounded, so a failover that never happens fails the test instead of hanging it.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort } from './free-port.js';
import { stopChild } from './child-process.js';
import { spawnRedisServer, waitForPong } from './redis-server.js';

const HOST = '127.0.0.1';
const WAIT_BOUND_MS = 30_000;
// A replica's first sync starts at once instead of after Redis' default 5 s (it waits for more
// replicas to share one diskless transfer). A replica that never synced cannot be promoted.
const FAST_SYNC = ['--repl-diskless-sync-delay', '0'];

export interface Endpoint {
  host: typeof HOST;
  port: number;
}

async function waitUntil(
  what: string,
  condition: () => Promise<boolean>,
  boundMs = WAIT_BOUND_MS,
  state: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    if (await condition().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} ${state()}`);
    await sleep(50);
  }
}

/** One short-lived connection for a fixture's question to a server. */
async function ask<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  r.on('error', () => undefined);
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();
}

class ServerSet {
  readonly children = new Map<number, ChildProcess>();
  constructor(readonly dir: string) {}

  async start(port: number, args: readonly string[]): Promise<void> {
    const dir = join(this.dir, String(port));
    await mkdir(dir, { recursive: true });
    this.children.set(port, await spawnRedisServer(port, dir, args));
  }

  async kill(port: number): Promise<void> {
    const child = this.children.get(port);
    if (!child) throw new Error(`no server on ${port}`);
    this.children.delete(port);
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }

  async stopAll(): Promise<void> {
    const all = [...this.children.values()];
    this.children.clear();
    await Promise.all(all.map((c) => stopChild(c, 'SIGTERM', 'SIGKILL', 5_000)));
  }
}

export interface RedisSentinelFixture {
  masterName: string;
  sentinels: Endpoint[];
  /** For REDIS_SENTINELS. */
  sentinelsEnv: string;
  /** The data servers' ports (primary first at the start). */
  dataPorts: number[];
  /** The primary the sentinels name now. */
  primaryPort(): Promise<number>;
  /** SIGKILLs the current primary by PID; resolves with its port once the process is gone. */
  killPrimary(): Promise<number>;
  /** Resolves with the new primary's port once the sentinels have promoted one other than `oldPort`. */
  waitForNewPrimary(oldPort: number): Promise<number>;
  /** Starts a killed server again as a replica of the current primary (as a supervisor would). */
  restart(port: number): Promise<void>;
  dispose(): Promise<void>;
}

export async function startRedisSentinelSet(): Promise<RedisSentinelFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'cd-redis-sentinel-'));
  const servers = new ServerSet(dir);
  const sentinelChildren: ChildProcess[] = [];
  const masterName = 'cdtest';
  const dispose = async () => {
    await Promise.all(sentinelChildren.map((c) => stopChild(c, 'SIGTERM', 'SIGKILL', 5_000)));
    await servers.stopAll();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const primary = await freePort();
    await servers.start(primary, FAST_SYNC);
    const replica = await freePort();
    await servers.start(replica, ['--replicaof', HOST, String(primary), ...FAST_SYNC]);
    await waitUntil('the replica in sync', () =>
      ask(replica, async (r) => infoField(await r.info('replication'), 'master_link_status') === 'up'),
    );

    const sentinels: Endpoint[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const conf = join(dir, `sentinel-${port}.conf`);
      // Sentinel rewrites its config file as it learns: each needs its own, writable.
      await writeFile(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          `dir ${dir}`,
          'loglevel warning',
          `sentinel monitor ${masterName} ${HOST} ${primary} 2`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 10000`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      );
      const child = spawn('redis-sentinel', [conf], { stdio: ['ignore', 'ignore', 'pipe'] });
      child.stderr?.resume();
      sentinelChildren.push(child);
      await waitForPong(port, child);
      sentinels.push({ host: HOST, port });
    }
    // A failover needs the sentinels to know each other (hello messages every 2 s) and the replica.
    let seen = '';
    await waitUntil(
      'sentinels that know each other and the replica',
      async () => {
        const views = await Promise.all(
          sentinels.map((s) =>
            ask(s.port, async (r) => {
              const peers = (await r.call('SENTINEL', 'SENTINELS', masterName)) as unknown[];
              const replicas = (await r.call('SENTINEL', 'REPLICAS', masterName)) as string[][];
              const flags = replicas.map((e) => e[e.indexOf('flags') + 1] ?? '?');
              return { peers: peers.length, flags };
            }),
          ),
        );
        seen = JSON.stringify(views);
        return views.every((v) => v.peers === 2 && v.flags.length === 1 && v.flags[0] === 'slave');
      },
      WAIT_BOUND_MS,
      () => seen,
    );

    const primaryPort = () =>
      ask(sentinels[0]!.port, async (r) => {
        const addr = (await r.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as [string, string];
        return Number(addr[1]);
      });

    return {
      masterName,
      sentinels,
      sentinelsEnv: sentinels.map((s) => `${s.host}:${s.port}`).join(','),
      dataPorts: [primary, replica],
      primaryPort,
      async killPrimary() {
        const port = await primaryPort();
        await servers.kill(port);
        return port;
      },
      async waitForNewPrimary(oldPort) {
        let now = oldPort;
        await waitUntil('a new primary', async () => {
          now = await primaryPort();
          if (now === oldPort) return false;
          return ask(now, async (r) => ((await r.call('ROLE')) as string[])[0] === 'master');
        });
        return now;
      },
      async restart(port) {
        const current = await primaryPort();
        await servers.start(port, ['--replicaof', HOST, String(current), ...FAST_SYNC]);
      },
      dispose,
    };
  } catch (e) {
    await dispose();
    throw e;
  }
}

export interface RedisClusterFixture {
  nodes: Endpoint[];
  /** For REDIS_CLUSTER_NODES. */
  nodesEnv: string;
  /** Ports of the primaries now. */
  primaries(): Promise<number[]>;
  /** SIGKILLs the primary on `port` (default: the first primary) by PID; resolves with its port. */
  killPrimary(port?: number): Promise<number>;
  /** Resolves once a replica took over every slot of the killed primary and the cluster is ok. */
  waitForFailover(killedPort: number): Promise<void>;
  /** Starts a killed node again (it rejoins from its nodes.conf as a replica). */
  restart(port: number): Promise<void>;
  dispose(): Promise<void>;
}

/** A free port whose cluster bus port (+10000) is free too. */
async function freeClusterPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10_000 > 65_535) continue;
    const busFree = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen({ host: HOST, port: port + 10_000, exclusive: true }, () =>
        server.close(() => resolve(true)),
      );
    });
    if (busFree) return port;
  }
}

export async function startRedisCluster(): Promise<RedisClusterFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'cd-redis-cluster-'));
  const servers = new ServerSet(dir);
  const dispose = async () => {
    await servers.stopAll();
    await rm(dir, { recursive: true, force: true });
  };
  const args = [
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    'nodes.conf',
    '--cluster-node-timeout',
    '1000',
  ];
  try {
    const ports: number[] = [];
    for (let i = 0; i < 6; i++) {
      const port = await freeClusterPort();
      await servers.start(port, args);
      ports.push(port);
    }
    const create = spawn(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...ports.map((p) => `${HOST}:${p}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    create.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    create.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = (await once(create, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`redis-cli --cluster create failed (${code}): ${out.slice(-2000)}`);

    const clusterOk = async (port: number) =>
      ask(
        port,
        async (r) => infoField((await r.call('CLUSTER', 'INFO')) as string, 'cluster_state') === 'ok',
      );
    const nodesView = (port: number) =>
      ask(port, async (r) =>
        ((await r.call('CLUSTER', 'NODES')) as string)
          .trim()
          .split('\n')
          .map((line) => {
            const f = line.split(' ');
            return { port: Number(/:(\d+)@/.exec(f[1] ?? '')?.[1]), flags: f[2] ?? '', link: f[7] ?? '' };
          }),
      );
    await waitUntil('all six nodes agree the cluster is ok', async () => {
      for (const p of ports) {
        if (!(await clusterOk(p))) return false;
        const view = await nodesView(p);
        const healthy = view.filter((n) => n.link === 'connected' && !/fail/.test(n.flags));
        if (healthy.length !== 6) return false;
        if (view.filter((n) => /master/.test(n.flags)).length !== 3) return false;
      }
      // Every replica has its primary's data (else it could not take over).
      for (const p of ports) {
        const info = await ask(p, (r) => r.info('replication'));
        if (infoField(info, 'role') === 'slave' && infoField(info, 'master_link_status') !== 'up')
          return false;
      }
      return true;
    });

    const primaries = async () => {
      const live = [...servers.children.keys()];
      for (const p of live) {
        try {
          const view = await nodesView(p);
          return view.filter((n) => /master/.test(n.flags) && !/fail/.test(n.flags)).map((n) => n.port);
        } catch {
          // ask another node
        }
      }
      throw new Error('no live cluster node');
    };

    return {
      nodes: ports.map((port) => ({ host: HOST, port })),
      nodesEnv: ports.map((p) => `${HOST}:${p}`).join(','),
      primaries,
      async killPrimary(port) {
        const target = port ?? (await primaries())[0]!;
        await servers.kill(target);
        return target;
      },
      async waitForFailover(killedPort) {
        await waitUntil('a replica promoted and the cluster ok', async () => {
          const live = [...servers.children.keys()];
          for (const p of live) if (!(await clusterOk(p))) return false;
          const ps = await primaries();
          return ps.length === 3 && !ps.includes(killedPort);
        });
      },
      async restart(port) {
        await servers.start(port, args);
      },
      dispose,
    };
  } catch (e) {
    await dispose();
    throw e;
  }
}
