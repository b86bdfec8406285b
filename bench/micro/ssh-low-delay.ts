// Micro-benchmark: what a small message costs on an SSH connection that also carries a stream, against a
// real OpenSSH sshd. A Unix-socket server on the instance streams 16 KiB every 5 ms (~26 Mbit/s) to one
// channel and echoes another; the round trip of a 1-byte echo is timed on the second channel, the way a
// desktop's small updates share a pooled connection with its streamed ones. Three ways, rounds alternating:
//   - ssh2, streams only: a connection that never ran a session (sshd leaves Nagle on: see ssh-pool.ts);
//   - ssh2, after one exec: sshd turned Nagle off at that session;
//   - the pool (SshPool.openUnixStream), streams only: what the gateway does.
// Run (root: the sshd fixture adds its test user):
//   node --import tsx bench/micro/ssh-low-delay.ts [--pings N] [--rounds R]
// Not a test: it prints numbers for docs/benchmarks.md.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2, { type ClientChannel } from 'ssh2';
import { createLogger } from '../../src/observability/logger.js';
import { SshPool } from '../../src/ssh/ssh-pool.js';
import { testPoolOptions } from '../../test/helpers/builders.js';
import { startSshd } from '../../test/helpers/sshd.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const PINGS = arg('--pings', 300);
const ROUNDS = arg('--rounds', 3);

const dir = mkdtempSync(join(tmpdir(), 'clouddesk-lowdelay-'));
chmodSync(dir, 0o755);
const socketPath = join(dir, 'desktop.sock');
const server = createServer((c) => {
  c.on('error', () => undefined);
  c.once('data', (first) => {
    if (first[0] === 0x42 /* B: stream */) {
      const chunk = Buffer.alloc(16 * 1024, 7);
      const timer = setInterval(() => c.write(chunk), 5);
      c.on('close', () => clearInterval(timer));
      c.resume();
    } else {
      c.on('data', (d) => c.write(d));
    }
  });
});
await new Promise<void>((resolve) => server.listen(socketPath, resolve));
chmodSync(socketPath, 0o777);
const sshd = await startSshd({ users: 1 });
const user = sshd.users[0]!;

/** Opens the stream and the echo channel with `open`, then times PINGS round trips on the echo one. */
async function measure(open: () => Promise<ClientChannel>): Promise<number[]> {
  const stream = await open();
  stream.write('B');
  stream.resume();
  const echo = await open();
  echo.write('E');
  await new Promise((r) => setTimeout(r, 300));
  const rtts: number[] = [];
  for (let i = 0; i < PINGS; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      echo.once('data', () => resolve());
      echo.write('x');
    });
    rtts.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 7));
  }
  stream.close();
  echo.close();
  return rtts.sort((a, b) => a - b);
}

async function rawSsh2(execFirst: boolean): Promise<number[]> {
  const client = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve).once('error', reject);
    client.connect({
      host: sshd.host,
      port: sshd.port,
      username: user.username,
      privateKey: user.privateKey,
    });
  });
  client.setNoDelay(true);
  if (execFirst) {
    await new Promise<void>((resolve, reject) =>
      client.exec('true', (err, ch) => {
        if (err) return reject(err);
        ch.resume();
        ch.once('close', () => resolve());
      }),
    );
  }
  try {
    return await measure(
      () =>
        new Promise<ClientChannel>((resolve, reject) =>
          client.openssh_forwardOutStreamLocal(socketPath, (err, ch) => (err ? reject(err) : resolve(ch))),
        ),
    );
  } finally {
    client.end();
  }
}

async function pool(): Promise<number[]> {
  const p = new SshPool(testPoolOptions(createLogger({ level: 'warn', name: 'ssh-low-delay' })));
  const target = {
    host: sshd.host,
    port: sshd.port,
    username: user.username,
    auth: { type: 'privateKey' as const, privateKey: user.privateKey },
    hostKeyFingerprint: null,
  };
  try {
    return await measure(async () => (await p.openUnixStream(target, socketPath)).channel);
  } finally {
    await p.close();
  }
}

const ways: Array<[string, () => Promise<number[]>]> = [
  ['ssh2, streams only', () => rawSsh2(false)],
  ['ssh2, after one exec', () => rawSsh2(true)],
  ['the pool, streams only', pool],
];
const q = (r: number[], p: number): string => r[Math.min(r.length - 1, Math.floor(p * r.length))]!.toFixed(2);
console.log(`| round | connection | round trip p50 / p90 / p99 / max ms (${PINGS} pings) |`);
console.log('|---:|---|---|');
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, run] of ways) {
      const r = await run();
      console.log(`| ${round} | ${name} | ${q(r, 0.5)} / ${q(r, 0.9)} / ${q(r, 0.99)} / ${q(r, 1)} |`);
    }
  }
} finally {
  await sshd.stop();
  server.close();
  rmSync(dir, { recursive: true, force: true });
}
