// Test fixture: a private redis-server on a free loopback port, no persistence, that a fault test can
// stop and start again on the same port (to see clients fail fast and recover by themselves) without
// touching the machine's shared Redis on 6379. Stopped by PID only.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { stopChild } from './child-process.js';

export interface RedisServerFixture {
  host: '127.0.0.1';
  port: number;
  url: string;
  /** The server process's id while it runs, else null. */
  pid(): number | null;
  /** SIGTERM and wait for the process to exit (SIGKILL after a grace period). */
  stop(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  start(): Promise<void>;
  /** Stops it and removes its folder. Safe to call twice. */
  dispose(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;

/** Resolves once the server answers PING with +PONG on a raw socket. */
export async function waitForPong(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`redis-server on port ${port} exited (${child.exitCode ?? child.signalCode})`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      let text = '';
      socket.setTimeout(1000, () => socket.destroy());
      socket.on('error', () => resolve(false));
      socket.on('close', () => resolve(text.startsWith('+PONG')));
      socket.on('connect', () => socket.write('PING\r\n'));
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if (text.includes('\r\n')) socket.end();
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A redis-server on `port` (loopback, no persistence, files in `dir`), extra arguments appended. */
export async function spawnRedisServer(
  port: number,
  dir: string,
  extraArgs: readonly string[] = [],
): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--protected-mode',
      'yes',
      '--loglevel',
      'warning',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr?.resume();
  try {
    await waitForPong(port, child);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return child;
}

export async function startRedisServer(): Promise<RedisServerFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'cd-redis-'));
  let port = 0;
  let child: ChildProcess | null = null;
  // The free port can be taken between probe and bind: retry with another one.
  for (let attempt = 0; child === null; attempt++) {
    port = await freePort();
    try {
      child = await spawnRedisServer(port, dir);
    } catch (e) {
      if (attempt >= 4) {
        await rm(dir, { recursive: true, force: true });
        throw e;
      }
    }
  }

  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    await stopChild(c, 'SIGTERM', 'SIGKILL', 5_000);
  };

  return {
    host: '127.0.0.1',
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: () => child?.pid ?? null,
    stop,
    async start() {
      if (child) return;
      // Same port on purpose: clients reconnect to the address they know. Retry briefly in case the
      // old socket is still being torn down.
      for (let attempt = 0; ; attempt++) {
        try {
          child = await spawnRedisServer(port, dir);
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
