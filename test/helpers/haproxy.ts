// Test fixture: Debian's HAProxy on a free loopback port in front of N gateway ports, configured as
// deploy/haproxy.cfg is (round-robin, WebSocket-friendly timeouts, health check on /api/ready,
// redispatch on a dead backend) but with fast checks so failover tests finish quickly. Runs in the
// foreground (-db) as our child and is stopped by its PID.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port.js';

const execFileP = promisify(execFile);
const HAPROXY = '/usr/sbin/haproxy';

export interface HaproxyOptions {
  /** Gateway ports (on 127.0.0.1 unless `backendHosts` says otherwise). */
  backends: number[];
  /** Each backend's address, by index (default 127.0.0.1), e.g. a test namespace's end of a veth link. */
  backendHosts?: string[];
  /** Health check path; default /api/ready. */
  healthPath?: string;
  /** Health check interval; default 300 ms (production: 2 s, see deploy/haproxy.cfg). */
  checkIntervalMs?: number;
  /** Idle timeout of an upgraded WebSocket; default 1 h (longer than the 30 s heartbeat). */
  tunnelTimeout?: string;
}

export interface HaproxyFixture {
  port: number;
  url: string;
  pid: number;
  configPath: string;
  /** Server states as HAProxy sees them ('UP', 'DOWN', …), by backend port. Read from the stats socket. */
  serverStates(): Promise<Map<number, string>>;
  stop(): Promise<void>;
}

export function haproxyConfig(opts: HaproxyOptions & { port: number; statsSocket: string }): string {
  const inter = opts.checkIntervalMs ?? 300;
  const servers = opts.backends
    .map(
      (p, i) =>
        `    server gw${i + 1} ${opts.backendHosts?.[i] ?? '127.0.0.1'}:${p} check inter ${inter}ms fall 2 rise 1`,
    )
    .join('\n');
  return `global
    maxconn 4096
    stats socket ${opts.statsSocket} mode 600 level admin

defaults
    mode http
    option http-server-close
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel ${opts.tunnelTimeout ?? '1h'}
    timeout http-keep-alive 5s

frontend clouddesk
    bind 127.0.0.1:${opts.port}
    http-request set-header X-Forwarded-For %[src]
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk GET ${opts.healthPath ?? '/api/ready'}
    http-check expect status 200
${servers}
`;
}

async function waitForPort(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`haproxy exited (${child.exitCode ?? child.signalCode}): ${stderr()}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`haproxy did not listen on ${port}: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function startHaproxy(opts: HaproxyOptions): Promise<HaproxyFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'cd-haproxy-'));
  const configPath = join(dir, 'haproxy.cfg');
  const statsSocket = join(dir, 'stats.sock');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    await writeFile(configPath, haproxyConfig({ ...opts, port, statsSocket }));
    await execFileP(HAPROXY, ['-c', '-q', '-f', configPath]);
    const child = spawn(HAPROXY, ['-db', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    try {
      await waitForPort(port, child, () => stderr);
    } catch (e) {
      child.kill('SIGKILL');
      // Lost the port to someone else between probe and bind: try another.
      if (attempt < 4 && /Address already in use|cannot bind/i.test(stderr)) continue;
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    const stop = async (): Promise<void> => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM'); // hard stop: drop connections now, as a crashed balancer would not
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    };
    return {
      port,
      url: `http://127.0.0.1:${port}`,
      pid: child.pid ?? 0,
      configPath,
      serverStates: () => readServerStates(statsSocket, opts.backends),
      stop,
    };
  }
}

/** `show servers state` over the admin socket → backend port → 'UP' | 'DOWN' | 'MAINT' | … */
async function readServerStates(socketPath: string, ports: number[]): Promise<Map<number, string>> {
  const text = await new Promise<string>((resolve, reject) => {
    const s = createConnection(socketPath);
    let out = '';
    s.on('connect', () => s.end('show stat\n'));
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
  // CSV: # pxname,svname,...,status(18th column)...; server rows are named gw1..gwN in port order.
  const lines = text.split('\n');
  const header = (lines[0] ?? '').replace(/^# /, '').split(',');
  const statusCol = header.indexOf('status');
  const states = new Map<number, string>();
  for (const line of lines.slice(1)) {
    const cols = line.split(',');
    const m = /^gw(\d+)$/.exec(cols[1] ?? '');
    if (cols[0] !== 'gateways' || !m) continue;
    const port = ports[Number(m[1]) - 1];
    if (port !== undefined) states.set(port, cols[statusCol] ?? '');
  }
  return states;
}
