// Test fixture: a real CloudDesk gateway process (`node --import tsx src/main.ts`) on a free loopback
// port with its own data folder, for browser and end-to-end tests. `restart()` stops it (gracefully,
// or with SIGKILL to simulate a crash) and starts it again on the same port and data folder, so open
// pages can reconnect to it; `stop()` ends it by PID and removes what it created.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './free-port.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 15_000;

export interface GatewayProcess {
  /** `http://127.0.0.1:<port>` — what a browser opens. */
  url: string;
  port: number;
  dataDir: string;
  /** Everything the process wrote (pino JSON lines on stdout, anything on stderr). */
  logPath: string;
  pid(): number;
  /** Stops the process (SIGTERM: drain, viewers told to reconnect; SIGKILL: a crash) and starts it again. */
  restart(options?: { signal?: 'SIGTERM' | 'SIGKILL' }): Promise<void>;
  stop(): Promise<void>;
  /** The log so far, for a failing test's message. */
  logs(): Promise<string>;
}

export interface StartGatewayOptions {
  /** Extra environment, e.g. { JWT_ACCESS_EXPIRY: '2s' }. */
  env?: Record<string, string>;
  /** Serve this built client (default: the gateway's own default, <repo>/web/dist). */
  publicDir?: string;
  /** Listen on this address instead of 127.0.0.1 (e.g. a test namespace's end of a veth link). */
  host?: string;
  /** Run the process under this command prefix, e.g. `['ip', 'netns', 'exec', name]` (it must exec). */
  commandPrefix?: string[];
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
}

export async function startGatewayProcess(options: StartGatewayOptions = {}): Promise<GatewayProcess> {
  const dataDir = await mkdtemp(join(tmpdir(), 'clouddesk-gw-'));
  const logPath = join(dataDir, 'gateway.log');
  const log = createWriteStream(logPath, { flags: 'a' });
  const port = await freePort();
  const env: Record<string, string> = {
    // Only what a node process needs from ours: no DATABASE_URL / REDIS_URL leaking in from the shell.
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    LANG: process.env.LANG ?? 'C.UTF-8',
    NODE_ENV: 'test',
    PORT: String(port),
    HOST: options.host ?? '127.0.0.1',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'info',
    INSTANCE_ALLOWED_CIDRS: '127.0.0.0/8',
    SHUTDOWN_TIMEOUT_MS: '5000',
    // Not ready but serving for 1 s when drained: the test HAProxy (helpers/haproxy.ts) takes a server
    // out after 2 checks 300 ms apart. A stack with slower checks sets its own.
    SHUTDOWN_READY_GRACE_MS: '1000',
    // Test viewers ask for Raw frames (4 MB for a 1280×800 screen): under the shipped 1.5 Mbit/s budget
    // each would take ~20 s. A test about the budget sets SESSION_MAX_KBPS itself.
    SESSION_MAX_KBPS: '0',
    ...(options.publicDir ? { PUBLIC_DIR: options.publicDir } : {}),
    ...options.env,
  };
  const url = `http://${options.host ?? '127.0.0.1'}:${port}`;
  const prefix = options.commandPrefix ?? [];

  let running: Running | null = await launch(env, url, log, prefix);

  const stopRunning = async (signal: 'SIGTERM' | 'SIGKILL') => {
    const current = running;
    running = null;
    if (!current) return;
    const { child, exited } = current;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const force = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(force);
    }
  };

  let stopped: Promise<void> | null = null;
  return {
    url,
    port,
    dataDir,
    logPath,
    pid: () => running?.child.pid ?? -1,
    async restart({ signal = 'SIGTERM' } = {}) {
      await stopRunning(signal);
      running = await launch(env, url, log, prefix);
    },
    stop: () =>
      (stopped ??= (async () => {
        await stopRunning('SIGTERM');
        await new Promise<void>((r) => log.end(() => r()));
        await rm(dataDir, { recursive: true, force: true });
      })()),
    logs: () => readFile(logPath, 'utf8').catch(() => ''),
  };
}

async function launch(
  env: Record<string, string>,
  url: string,
  log: WriteStream,
  prefix: readonly string[],
): Promise<Running> {
  const argv = [...prefix, process.execPath, '--import', 'tsx', 'src/main.ts'];
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: REPO,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let seen = '';
  const keep = (chunk: Buffer) => {
    log.write(chunk);
    if (seen.length < 256 * 1024) seen += chunk.toString('utf8');
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);

  // Listening is announced in the log; readiness (the store answers) is then confirmed over HTTP.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`gateway did not start within ${READY_TIMEOUT_MS} ms:\n${seen.slice(-4000)}`));
    }, READY_TIMEOUT_MS);
    const onData = () => {
      if (seen.includes('CloudDesk gateway listening')) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code ?? signal}) before listening:\n${seen.slice(-4000)}`));
    };
    child.stdout.on('data', onData);
    child.once('exit', onExit);
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const res = await fetch(`${url}/api/ready`).catch(() => null);
    if (res?.status === 200) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway listens but /api/ready is ${res?.status ?? 'unreachable'}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, exited };
}
