// Starting the gateway process: one human line on stderr once it listens (the address to open, where
// the data lives, which coordination), while stdout stays pure JSON log lines (issue 14.14).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config/config.js';
import { openUrl, readyLine, startGateway } from '../src/main.js';
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
