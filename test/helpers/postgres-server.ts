// Test fixture: a private PostgreSQL 15 on a free loopback port (initdb into a temp folder as the
// postgres user, trust auth, no entry in /etc/postgresql), for fault tests that stop and start the
// database under a running gateway without touching the machine's shared cluster on 5432. The
// postmaster runs as our direct child (spawned with the postgres uid), so it is stopped by its PID:
// SIGINT = PostgreSQL's "fast" shutdown (open sessions are ended, as when a server goes away).
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port.js';
import { stopChild } from './child-process.js';

const execFileP = promisify(execFile);
const BIN = '/usr/lib/postgresql/15/bin';

export interface PostgresServerFixture {
  host: '127.0.0.1';
  port: number;
  /** postgres://postgres@127.0.0.1:P/<database> */
  url: string;
  database: string;
  pid(): number | null;
  /** Fast shutdown; resolves when the postmaster has exited. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
  /** Stops it and removes the data folder. Safe to call twice. */
  dispose(): Promise<void>;
}

async function postgresIds(): Promise<{ uid: number; gid: number }> {
  const { stdout } = await execFileP('id', ['-u', 'postgres']);
  const { stdout: g } = await execFileP('id', ['-g', 'postgres']);
  return { uid: Number(stdout.trim()), gid: Number(g.trim()) };
}

async function waitReady(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`postgres exited (${child.exitCode ?? child.signalCode}): ${log()}`);
    }
    try {
      await execFileP(`${BIN}/pg_isready`, ['-q', '-h', '127.0.0.1', '-p', String(port), '-t', '1']);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`postgres on ${port} not ready: ${log()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export async function startPostgresServer(
  options: { database?: string } = {},
): Promise<PostgresServerFixture> {
  const database = options.database ?? 'clouddesk';
  const ids = await postgresIds();
  const dir = await mkdtemp(join(tmpdir(), 'cd-pg-'));
  const dataDir = join(dir, 'data');
  await chown(dir, ids.uid, ids.gid);
  try {
    await execFileP(
      `${BIN}/initdb`,
      ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C.UTF-8', '--no-sync'],
      { uid: ids.uid, gid: ids.gid, cwd: dir },
    );
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }

  let child: ChildProcess | null = null;
  let port = 0;
  let log = '';
  const spawnPostmaster = async (): Promise<ChildProcess> => {
    const c = spawn(
      `${BIN}/postgres`,
      [
        '-D',
        dataDir,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${dir}`,
        '-c',
        'fsync=off',
        '-c',
        'max_connections=100',
      ],
      { uid: ids.uid, gid: ids.gid, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    c.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    try {
      await waitReady(port, c, () => log);
    } catch (e) {
      c.kill('SIGKILL');
      throw e;
    }
    return c;
  };

  for (let attempt = 0; child === null; attempt++) {
    port = await freePort();
    try {
      child = await spawnPostmaster();
    } catch (e) {
      if (attempt >= 4 || !/could not bind|already in use/i.test(log)) {
        await rm(dir, { recursive: true, force: true });
        throw e;
      }
    }
  }
  await execFileP(`${BIN}/createdb`, ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', database]);

  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    await stopChild(c, 'SIGINT', 'SIGQUIT', 10_000);
  };

  return {
    host: '127.0.0.1',
    port,
    database,
    url: `postgres://postgres@127.0.0.1:${port}/${database}`,
    pid: () => child?.pid ?? null,
    stop,
    async start() {
      if (child) return;
      for (let attempt = 0; ; attempt++) {
        try {
          child = await spawnPostmaster();
          return;
        } catch (e) {
          if (attempt >= 20) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
