// Test fixture: the PostgreSQL HA stack of docs/operations.md on loopback, from Debian's packages —
// one etcd (the DCS), two Patroni nodes managing PostgreSQL 15 (a primary and a synchronous standby,
// synchronous_mode on, primary_start_timeout 0 so a crashed primary fails over instead of restarting),
// and HAProxy in TCP mode sending connections to whichever node answers Patroni's `GET /primary` with
// 200 (deploy/haproxy-postgres.cfg, with faster checks). Every port is free and on 127.0.0.1, every
// file in one temp folder; Patroni runs as the postgres user (PostgreSQL refuses root). Each process is
// our child and is stopped by its PID; the postmasters Patroni starts are found by their
// postmaster.pid files and stopped by PID too.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port.js';
import { stopChild } from './child-process.js';

const execFileP = promisify(execFile);
const PG_BIN = '/usr/lib/postgresql/15/bin';
const SCOPE = 'clouddesk-test';
const START_BOUND_MS = 120_000;

/** The DCS timings the test runs with: the ones docs/operations.md recommends. */
export const PATRONI_TIMINGS = { ttl: 20, loop_wait: 2, retry_timeout: 5 } as const;

export interface PatroniNode {
  name: string;
  pgPort: number;
  restPort: number;
  dataDir: string;
  /** The running postmaster's PID (from postmaster.pid), or null. */
  postmasterPid(): Promise<number | null>;
}

export interface ClusterMember {
  name: string;
  role: string;
  state: string;
  timeline?: number;
  lag?: number | string;
}

export interface PatroniCluster {
  nodes: PatroniNode[];
  /** HAProxy in front: postgres://postgres@127.0.0.1:<port>/<database> goes to the primary. */
  url: string;
  haproxyPort: number;
  database: string;
  /** Members as Patroni's REST API lists them (`GET /cluster` on any node that answers). */
  members(): Promise<ClusterMember[]>;
  /** The node Patroni calls leader, once one is running. */
  primary(): Promise<PatroniNode>;
  /** Resolves when there is a running leader and a streaming synchronous standby. */
  waitHealthy(boundMs?: number): Promise<void>;
  /** Patroni's and etcd's output so far (for a failing test's message). */
  logs(): string;
  stop(): Promise<void>;
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const { stdout: u } = await execFileP('id', ['-u', 'postgres']);
  const { stdout: g } = await execFileP('id', ['-g', 'postgres']);
  return { uid: Number(u.trim()), gid: Number(g.trim()) };
}

async function getJson(url: string): Promise<unknown> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return res.json();
}

async function until<T>(what: string, boundMs: number, probe: () => Promise<T | null>, log: () => string) {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${log().slice(-6000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function patroniConfig(o: {
  name: string;
  dir: string;
  pgPort: number;
  restPort: number;
  etcdPort: number;
}): unknown {
  // JSON is YAML: Patroni reads this file as its configuration.
  return {
    scope: SCOPE,
    name: o.name,
    log: { level: 'INFO' },
    restapi: { listen: `127.0.0.1:${o.restPort}`, connect_address: `127.0.0.1:${o.restPort}` },
    etcd3: { hosts: [`127.0.0.1:${o.etcdPort}`] },
    bootstrap: {
      dcs: {
        ...PATRONI_TIMINGS,
        maximum_lag_on_failover: 1048576,
        synchronous_mode: true,
        primary_start_timeout: 0,
        postgresql: {
          use_pg_rewind: true,
          use_slots: true,
          parameters: {
            wal_level: 'replica',
            hot_standby: 'on',
            max_wal_senders: 5,
            max_replication_slots: 5,
          },
        },
      },
      initdb: [{ encoding: 'UTF8' }, { locale: 'C.UTF-8' }, 'data-checksums'],
    },
    postgresql: {
      listen: `127.0.0.1:${o.pgPort}`,
      connect_address: `127.0.0.1:${o.pgPort}`,
      data_dir: join(o.dir, 'data'),
      bin_dir: PG_BIN,
      pgpass: join(o.dir, 'pgpass'),
      // Loopback only, trust: a test machine. docs/operations.md has the production pg_hba (scram).
      pg_hba: [
        'local all all trust',
        'host all all 127.0.0.1/32 trust',
        'host replication all 127.0.0.1/32 trust',
      ],
      authentication: {
        superuser: { username: 'postgres' },
        replication: { username: 'postgres' },
        rewind: { username: 'postgres' },
      },
      parameters: { unix_socket_directories: o.dir, max_connections: 100 },
    },
    tags: { nofailover: false, noloadbalance: false, clonefrom: false, nosync: false },
  };
}

function haproxyConfig(port: number, nodes: { name: string; pgPort: number; restPort: number }[]): string {
  return `global
    maxconn 1000

defaults
    mode tcp
    retries 2
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 2s

listen postgres_primary
    bind 127.0.0.1:${port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
${nodes.map((n) => `    server ${n.name} 127.0.0.1:${n.pgPort} check port ${n.restPort}`).join('\n')}
`;
}

export async function startPatroniCluster(options: { database?: string } = {}): Promise<PatroniCluster> {
  const database = options.database ?? 'clouddesk';
  const ids = await postgresIds();
  const root = await mkdtemp(join(tmpdir(), 'cd-patroni-'));
  await chown(root, ids.uid, ids.gid);
  const children: { name: string; child: ChildProcess }[] = [];
  let output = '';
  const capture = (name: string, child: ChildProcess) => {
    const keep = (d: Buffer) => (output = (output + `[${name}] ${d.toString()}`).slice(-200_000));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    children.push({ name, child });
  };
  const logs = () => output;

  const nodes: PatroniNode[] = [];
  const stop = async () => {
    // HAProxy first, then the replica-less way down: Patroni stops its PostgreSQL (fast) on SIGTERM.
    for (const { child } of [...children].reverse()) await stopChild(child, 'SIGTERM', 'SIGKILL', 20_000);
    // A postmaster left behind by a Patroni that had to be killed: stop it by its PID.
    for (const n of nodes) {
      const pid = await n.postmasterPid();
      if (pid !== null) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await rm(root, { recursive: true, force: true });
  };

  try {
    // etcd: one member is enough for a test (production: three, docs/operations.md).
    const etcdPort = await freePort();
    const peerPort = await freePort();
    const etcdDir = join(root, 'etcd');
    const etcd = spawn(
      '/usr/bin/etcd',
      [
        '--name',
        'etcd1',
        '--data-dir',
        etcdDir,
        '--listen-client-urls',
        `http://127.0.0.1:${etcdPort}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${etcdPort}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${peerPort}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${peerPort}`,
        '--initial-cluster',
        `etcd1=http://127.0.0.1:${peerPort}`,
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    capture('etcd', etcd);
    await until(
      'etcd',
      30_000,
      async () => ((await fetch(`http://127.0.0.1:${etcdPort}/health`)).ok ? true : null),
      logs,
    );

    const specs = [];
    for (const name of ['pg1', 'pg2']) {
      const dir = join(root, name);
      await mkdir(dir, { mode: 0o700 });
      await chown(dir, ids.uid, ids.gid);
      specs.push({ name, dir, pgPort: await freePort(), restPort: await freePort() });
    }
    for (const [i, s] of specs.entries()) {
      const configPath = join(s.dir, 'patroni.yml');
      await writeFile(configPath, JSON.stringify(patroniConfig({ ...s, etcdPort }), null, 2));
      await chown(configPath, ids.uid, ids.gid);
      const child = spawn('/usr/bin/patroni', [configPath], {
        uid: ids.uid,
        gid: ids.gid,
        cwd: s.dir,
        env: { PATH: '/usr/bin:/bin', HOME: s.dir, LANG: 'C.UTF-8' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      capture(s.name, child);
      const dataDir = join(s.dir, 'data');
      nodes.push({
        name: s.name,
        pgPort: s.pgPort,
        restPort: s.restPort,
        dataDir,
        async postmasterPid() {
          const text = await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
          const pid = Number(text.split('\n')[0]);
          if (!Number.isInteger(pid) || pid <= 0) return null;
          try {
            process.kill(pid, 0);
            return pid;
          } catch {
            return null;
          }
        },
      });
      // The first node bootstraps the cluster alone; the second then clones it with pg_basebackup.
      if (i === 0) {
        await until(
          'the first node to lead',
          START_BOUND_MS,
          async () => {
            const res = await fetch(`http://127.0.0.1:${s.restPort}/primary`);
            return res.status === 200 ? true : null;
          },
          logs,
        );
      }
    }

    const haproxyPort = await freePort();
    const haproxyDir = join(root, 'haproxy');
    await mkdir(haproxyDir);
    const haproxyPath = join(haproxyDir, 'haproxy.cfg');
    await writeFile(haproxyPath, haproxyConfig(haproxyPort, specs));
    await execFileP('/usr/sbin/haproxy', ['-c', '-q', '-f', haproxyPath]);
    const haproxy = spawn('/usr/sbin/haproxy', ['-db', '-f', haproxyPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    capture('haproxy', haproxy);

    const members = async (): Promise<ClusterMember[]> => {
      for (const n of nodes) {
        try {
          const body = (await getJson(`http://127.0.0.1:${n.restPort}/cluster`)) as {
            members?: ClusterMember[];
          };
          if (Array.isArray(body.members)) return body.members;
        } catch {
          // this node's REST API is down: ask the next
        }
      }
      return [];
    };
    const primary = async () => {
      const leader = await until(
        'a running leader',
        START_BOUND_MS,
        async () => {
          const m = (await members()).find((x) => x.role === 'leader' && x.state === 'running');
          return m ?? null;
        },
        logs,
      );
      return nodes.find((n) => n.name === leader.name)!;
    };
    const waitHealthy = async (boundMs = START_BOUND_MS) => {
      await until(
        'a leader and a streaming synchronous standby',
        boundMs,
        async () => {
          const m = await members();
          const ok =
            m.some((x) => x.role === 'leader' && x.state === 'running') &&
            m.some((x) => x.role === 'sync_standby' && (x.state === 'streaming' || x.state === 'running'));
          return ok ? true : null;
        },
        logs,
      );
    };
    await waitHealthy();

    const leader = await primary();
    await execFileP(`${PG_BIN}/createdb`, [
      '-h',
      '127.0.0.1',
      '-p',
      String(leader.pgPort),
      '-U',
      'postgres',
      database,
    ]);
    const url = `postgres://postgres@127.0.0.1:${haproxyPort}/${database}`;
    await until(
      'HAProxy to reach the primary',
      30_000,
      async () => {
        await execFileP(`${PG_BIN}/pg_isready`, [
          '-q',
          '-h',
          '127.0.0.1',
          '-p',
          String(haproxyPort),
          '-t',
          '1',
        ]);
        return true;
      },
      logs,
    );

    return { nodes, url, haproxyPort, database, members, primary, waitHealthy, logs, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
