// Starting the gateway process: one human line on stderr once it listens (the address to open, where
// the data lives, which coordination), while stdout stays pure JSON log lines (issue 14.14).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config/config.js';
import { openUrl, readyLine, startGateway } from '../src/main.js';
import { createLogger } from '../src/observability/logger.js';
import { captureLogger, testConfig } from './helpers/builders.js';
import { TEST_SECRETS } from './helpers/test-secrets.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');

test('the address to open: a wildcard listen address becomes localhost, IPv6 gets brackets', () => {
  assert.equal(openUrl('0.0.0.0', 3000), 'http://localhost:3000/');
  assert.equal(openUrl('::', 8080), 'http://localhost:8080/');
  assert.equal(openUrl('127.0.0.1', 3000), 'http://127.0.0.1:3000/');
  assert.equal(openUrl('::1', 3000), 'http://[::1]:3000/');
  assert.equal(openUrl('desk.example.com', 443), 'http://desk.example.com:443/');
});

test('the ready line names the store and coordination without their credentials', () => {
  const config = loadConfig({
    ...TEST_SECRETS,
    HOST: '0.0.0.0',
    DATABASE_URL: 'postgres://clouddesk:s3cret-pw@db.internal:5432/clouddesk',
    REDIS_URL: 'redis://:r3dis-pw@cache.internal:6379/2',
  });
  const line = readyLine(config, 3000);
  assert.equal(
    line,
    'CloudDesk is ready: open http://localhost:3000/ · data: PostgreSQL at db.internal:5432/clouddesk · coordination: Redis at cache.internal:6379/2',
  );
  assert.doesNotMatch(line, /s3cret|r3dis/);
});

test('the process prints one ready line on stderr with its real port, and only JSON on stdout', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'clouddesk-startup-'));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: REPO,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      NODE_ENV: 'test',
      PORT: '0', // the line must show the port the OS gave, not 0
      HOST: '127.0.0.1',
      DATA_DIR: dataDir,
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  const exited = once(child, 'exit');
  try {
    const ready = await new Promise<string>((resolvePromise, reject) => {
      child.stderr.setEncoding('utf8').on('data', (s: string) => {
        stderr += s;
        const line = stderr.split('\n').find((l) => l.startsWith('CloudDesk is ready'));
        if (line) resolvePromise(line);
      });
      child.once('exit', (code) => reject(new Error(`gateway exited (${code}):\n${stderr}\n${stdout}`)));
    });
    const m =
      /^CloudDesk is ready: open (http:\/\/127\.0\.0\.1:(\d+)\/) · data: (.+) \(embedded SQLite\) · coordination: in-process \(single node\)$/.exec(
        ready,
      );
    assert.ok(m, ready);
    assert.notEqual(m[2], '0');
    assert.equal(m[3], dataDir);
    const res = await fetch(`${m[1]}api/ready`);
    assert.equal(res.status, 200);
  } finally {
    child.kill('SIGTERM');
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
  assert.deepEqual(
    stderr
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => l.slice(0, 18)),
    ['CloudDesk is ready'],
    'one line on stderr, and nothing else there',
  );
  const lines = stdout.split('\n').filter((l) => l !== '');
  assert.ok(lines.length > 0);
  const parsed = lines.map((l) => JSON.parse(l) as { msg: string; port?: number });
  const listening = parsed.find((l) => l.msg === 'CloudDesk gateway listening');
  assert.ok(listening && listening.port !== 0, 'the JSON line carries the real port too');
});

test('the listener keeps HTTP_LISTEN_BACKLOG connections for a busy loop (4096 by default, not Node’s 511)', async () => {
  assert.equal(loadConfig({ ...TEST_SECRETS }).http.listenBacklog, 4096);
  assert.throws(() => loadConfig({ ...TEST_SECRETS, HTTP_LISTEN_BACKLOG: '0' }), /HTTP_LISTEN_BACKLOG/);
  // The kernel caps a listen backlog at net.core.somaxconn: ask for less than that, and more than 511.
  const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
  const asked = Math.min(1500, somaxconn);
  const { config, cleanup } = testConfig({
    HOST: '127.0.0.1',
    PORT: '0',
    HTTP_LISTEN_BACKLOG: String(asked),
  });
  const gateway = await startGateway(config, captureLogger('silent').logger);
  try {
    const port = (gateway.app.server.address() as AddressInfo).port;
    // `ss` reports a listening socket's backlog as its Send-Q (the third column).
    const out = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' }).trim();
    const [state, , backlog] = out.split(/\s+/);
    assert.equal(state, 'LISTEN', out);
    assert.equal(Number(backlog), asked, out);
  } finally {
    await gateway.shutdown('test');
    cleanup();
  }
});

test('a drain serves the API through SHUTDOWN_READY_GRACE_MS while not ready, then answers what still arrives with SHUTTING_DOWN', async () => {
  const { config, cleanup } = testConfig({ HOST: '127.0.0.1', PORT: '0', SHUTDOWN_READY_GRACE_MS: '4000' });
  // The log says when each step begins; the test waits for those lines, not for time.
  const logged = new Map<string, () => void>();
  const logLine = (msg: string) => new Promise<void>((r) => logged.set(msg, r));
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const { msg } = JSON.parse(chunk.toString('utf8')) as { msg: string };
      logged.get(msg)?.();
      cb();
    },
  });
  let graceAsked: (ms: number) => void = () => {};
  const graceStarted = new Promise<number>((r) => (graceAsked = r));
  let endGrace: () => void = () => {};
  const gateway = await startGateway(config, createLogger({ level: 'info' }, sink), {
    readyGrace: (ms) => {
      graceAsked(ms);
      return new Promise<void>((r) => (endGrace = r));
    },
  });
  const base = `http://127.0.0.1:${(gateway.app.server.address() as AddressInfo).port}`;
  let socket: ReturnType<typeof connect> | null = null;
  try {
    const reg = await fetch(`${base}/api/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'drain@example.com', password: 'correct horse battery' }),
    });
    assert.equal(reg.status, 201);
    const { accessToken } = ((await reg.json()) as { data: { accessToken: string } }).data;

    const stopped = gateway.shutdown('test');
    assert.equal(await graceStarted, 4000);
    // The grace: the balancer sees not ready, and what it still sends here is served as usual.
    const ready = await fetch(`${base}/api/ready`);
    assert.equal(ready.status, 503);
    assert.equal(((await ready.json()) as { draining: boolean }).draining, true);
    const list = await fetch(`${base}/api/instances`, {
      headers: { authorization: `Bearer ${accessToken}` },
    });
    assert.equal(list.status, 200);
    // A viewer is refused so that it connects to another gateway (its ticket is not spent).
    const upgrade = await rawExchange(
      base,
      'GET /vnc?ticket=x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    assert.match(upgrade, /^HTTP\/1\.1 503 /);
    assert.match(upgrade, /"code":"SHUTTING_DOWN"/);
    assert.match(upgrade, /\r\nRetry-After: 1\r\n/i);

    // A client whose request is under way when HTTP closes (half its headers sent): the server keeps
    // that connection, and the request is answered with the coded 503, not Fastify's bare one.
    socket = connect(Number(new URL(base).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write('GET /api/instances HTTP/1.1\r\nHost: t\r\n');
    const closingHttp = logLine('shutting down: closing HTTP');
    endGrace();
    await closingHttp;
    let answer = '';
    socket.setEncoding('utf8').on('data', (d: string) => (answer += d));
    const ended = once(socket, 'end');
    socket.write(`Authorization: Bearer ${accessToken}\r\nConnection: keep-alive\r\n\r\n`);
    await ended;
    const [head = '', body = ''] = answer.split('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 503 /);
    assert.match(head, /\r\nconnection: close/i);
    assert.match(head, /\r\nretry-after: 1/i);
    assert.equal((JSON.parse(body) as { error: { code: string } }).error.code, 'SHUTTING_DOWN');
    await stopped;
  } finally {
    socket?.destroy();
    endGrace();
    await gateway.shutdown('test over'); // the same drain, when the test got that far
    cleanup();
  }
});

/** Writes `request` on a fresh connection and returns everything the server sent until it closed. */
async function rawExchange(base: string, request: string): Promise<string> {
  const socket = connect(Number(new URL(base).port), '127.0.0.1');
  let answer = '';
  socket.setEncoding('utf8').on('data', (d: string) => (answer += d));
  const ended = once(socket, 'close');
  socket.write(request);
  await ended;
  return answer;
}
