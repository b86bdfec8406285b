// Desktop starts that race with other starters on the same instance account (issue 14 pts 1 and 5), against
// a real sshd, real TigerVNC and openbox: two gateways that share nothing (each its own SSH pool and no
// common reservation) starting on one small display range at once, a fake `Xvnc` that only sleeps while a
// real one starts on the same display, a fake that listens but never speaks RFB (the start timeout is the
// whole bound), and back-to-back connects on a one-display range.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../src/observability/logger.js';
import { AppError } from '../src/errors/errors.js';
import { SshPool, type SshTarget } from '../src/ssh/ssh-pool.js';
import {
  DesktopService,
  desktopMarker,
  type DesktopHandle,
  type DesktopServiceDeps,
  type DesktopServiceOptions,
} from '../src/desktop/desktop.service.js';
import { isProcessAlive, processesWithEnv, startSshd, type SshdFixture } from './helpers/sshd.js';
import { rejectsWith } from './helpers/assertions.js';
import { testPoolOptions } from './helpers/builders.js';

const T = { timeout: 240_000 };
const logger = createLogger({ level: 'silent' });

let sshd: SshdFixture;
let target: SshTarget;
let uid: number;
let fakeDir: string;
const pools: SshPool[] = [];
const started: Array<{ service: DesktopService; handle: DesktopHandle }> = [];

/** Answers the probe like TigerVNC 1.12 (version, -rfbunixpath in its help), then only sleeps. */
const SLEEPING_XVNC = `#!/bin/sh
case "$*" in
  *-version*) echo "Xvnc TigerVNC 1.12.0 - built Jan 1 2024"; exit 0 ;;
  *-help*) echo "-rfbunixpath path"; exit 0 ;;
esac
exec sleep 600
`;

/**
 * Looks like a working Xvnc to the instance script — its own X lock, the X socket and the RFB Unix socket,
 * listening — but never sends the RFB banner.
 */
const SILENT_XVNC = `#!/usr/bin/python3
import os, socket, sys, time
args = sys.argv[1:]
if any(a.startswith('-version') for a in args):
    print('Xvnc TigerVNC 1.12.0 - built Jan 1 2024'); sys.exit(0)
if any(a.startswith('-help') for a in args):
    print('-rfbunixpath path'); sys.exit(0)
n = args[0][1:]
with open('/tmp/.X%s-lock' % n, 'w') as f:
    f.write('%10d\\n' % os.getpid())
x = socket.socket(socket.AF_UNIX); x.bind('/tmp/.X11-unix/X' + n); x.listen(5)
r = socket.socket(socket.AF_UNIX); r.bind(args[args.index('-rfbunixpath') + 1]); r.listen(5)
held = []
while True:
    held.append(r.accept()[0])
`;

before(async () => {
  sshd = await startSshd({ usernames: ['cdtestrace'] });
  uid = sshd.users[0]!.uid;
  target = {
    host: sshd.host,
    port: sshd.port,
    username: sshd.users[0]!.username,
    auth: { type: 'privateKey', privateKey: sshd.users[0]!.privateKey },
    hostKeyFingerprint: sshd.hostKeyFingerprint,
  };
  // Readable to the test user: the instance script runs the fake from here.
  fakeDir = mkdtempSync(join(tmpdir(), 'clouddesk-fake-xvnc-'));
  chmodSync(fakeDir, 0o755);
});

after(async () => {
  for (const { service, handle } of started) await service.stop(target, handle).catch(() => undefined);
  for (const pool of pools) await pool.close();
  await sshd?.stop();
  if (fakeDir) rmSync(fakeDir, { recursive: true, force: true });
});

function newPool(): SshPool {
  const pool = new SshPool(testPoolOptions(logger, { readyTimeoutMs: 30_000, execTimeoutMs: 60_000 }));
  pools.push(pool);
  return pool;
}

/** A gateway of its own: its own SSH pool and (unless given) no reservation shared with anyone. */
function gateway(
  options: Partial<DesktopServiceOptions>,
  reserveDisplay?: DesktopServiceDeps['reserveDisplay'],
): DesktopService {
  return new DesktopService({
    pool: newPool(),
    logger,
    ...(reserveDisplay ? { reserveDisplay } : {}),
    options: {
      displayMin: 80,
      displayMax: 82,
      transport: 'unix',
      startTimeoutMs: 60_000,
      geometry: '800x600',
      ...options,
    },
  });
}

/** A folder holding only a fake Xvnc with that script, for the service's vncSearchPath. */
function fakeXvnc(name: string, script: string): string {
  const dir = join(fakeDir, name);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  writeFileSync(join(dir, 'Xvnc'), script, { mode: 0o755 });
  return dir;
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function statusUid(pid: number): number | null {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Uid:'));
    return line ? Number(line.split(/\s+/)[1]) : null;
  } catch {
    return null;
  }
}

/** Live processes of the test user with that command name (zombies excluded). */
function processesNamed(names: string[]): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((p) => statusUid(p) === uid && names.includes(comm(p)) && isProcessAlive(p));
}

function lockPid(display: number): number | null {
  try {
    return Number(readFileSync(`/tmp/.X${display}-lock`, 'utf8').trim());
  } catch {
    return null;
  }
}

/** Bounded wait for a condition about processes on the instance (there is no event for a process ending). */
async function waitFor(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitForAsync(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function free(from: number, to: number): void {
  for (let n = from; n <= to; n++) {
    if (existsSync(`/tmp/.X${n}-lock`) || existsSync(`/tmp/.X11-unix/X${n}`))
      throw new Error(`display ${n} is in use on this machine; the test needs ${from}-${to}`);
  }
}

void describe('desktop starts racing on one instance account', () => {
  void it(
    'two gateways sharing nothing, 3 connects each on 3 displays: each started desktop is its own',
    T,
    async () => {
      free(80, 82);
      for (let round = 1; round <= 2; round++) {
        const a = gateway({});
        const b = gateway({});
        const results = await Promise.allSettled(
          [a, a, a, b, b, b].map(async (service) => ({
            service,
            ...(await service.start(target, 'openbox')),
          })),
        );
        const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        for (const { service, handle } of ok) started.push({ service, handle });
        const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
        for (const e of failed) {
          assert.ok(e instanceof AppError, String(e));
          assert.equal(e.code, 'NO_FREE_DISPLAY', `round ${round}: ${e.code} ${e.message}`);
          assert.equal(e.status, 503);
        }
        const displays = ok.map((s) => s.handle.display).sort();
        assert.deepEqual(displays, [80, 81, 82], `round ${round}: one desktop per display`);
        assert.equal(new Set(ok.map((s) => s.handle.pid)).size, 3, 'three different Xvnc');
        for (const { handle } of ok) {
          assert.ok(isProcessAlive(handle.pid));
          assert.equal(comm(handle.pid), 'Xvnc');
          assert.equal(lockPid(handle.display), handle.pid, 'the X lock names this session’s Xvnc');
          assert.ok(
            handle.transport === 'unix' &&
              handle.socketPath.endsWith(`/${handle.display}-${handle.pid}.sock`),
          );
          // Ready means the X server is ours; its desktop environment starts beside it, a moment later.
          await waitForAsync('openbox in this desktop', async () =>
            (await processesWithEnv(desktopMarker(handle))).some((p) => comm(p) === 'openbox'),
          );
        }
        // Each session's disconnect ends its own desktop; nothing of any start is left.
        for (const { service, handle } of ok) {
          await service.stop(target, handle);
          started.splice(
            started.findIndex((s) => s.handle === handle),
            1,
          );
          assert.equal(isProcessAlive(handle.pid), false);
        }
        await waitFor(
          'no Xvnc or openbox of the user',
          () => processesNamed(['Xvnc', 'openbox']).length === 0,
        );
        free(80, 82);
      }
    },
  );

  void it(
    'a fake Xvnc that only sleeps never gets a desktop, even beside a real one starting there',
    T,
    async () => {
      free(83, 83);
      const dir = fakeXvnc('sleeping', SLEEPING_XVNC);
      const real = gateway({ displayMin: 83, displayMax: 83 });
      const fake = gateway({ displayMin: 83, displayMax: 83, vncSearchPath: dir, startTimeoutMs: 8_000 });
      const [r, f] = await Promise.allSettled([real.start(target, 'openbox'), fake.start(target, 'openbox')]);
      assert.equal(r.status, 'fulfilled', r.status === 'rejected' ? String(r.reason) : '');
      const handle = r.value.handle;
      started.push({ service: real, handle });
      assert.equal(f.status, 'rejected');
      const code = (f.reason as AppError).code;
      assert.ok(['NO_FREE_DISPLAY', 'DESKTOP_START_FAILED'].includes(code), code);
      assert.equal(lockPid(83), handle.pid);
      // The fake's start stopped what it started.
      await waitFor('the fake Xvnc to be stopped', () => processesNamed(['sleep']).length === 0);

      // Alone, too: it never looks ready, and its start cleans up after the timeout.
      await real.stop(target, handle);
      started.pop();
      await rejectsWith(fake.start(target, 'openbox'), 'DESKTOP_START_FAILED');
      await waitFor('the fake Xvnc to be stopped', () => processesNamed(['sleep', 'openbox']).length === 0);
      assert.equal(existsSync('/tmp/.X83-lock'), false);
    },
  );

  void it('DESKTOP_START_TIMEOUT_MS bounds the whole start, the RFB banner wait included', T, async () => {
    free(84, 84);
    const dir = fakeXvnc('silent', SILENT_XVNC);
    const timeoutMs = 3_000;
    const service = gateway({
      displayMin: 84,
      displayMax: 84,
      vncSearchPath: dir,
      startTimeoutMs: timeoutMs,
    });
    const t0 = performance.now();
    await rejectsWith(service.start(target, 'openbox'), 'DESKTOP_START_FAILED');
    const elapsed = performance.now() - t0;
    // Before, each banner read had 5 s of its own on top of the start timeout.
    assert.ok(elapsed < timeoutMs + 1_000, `failed after ${Math.round(elapsed)} ms`);
    await waitFor('the silent Xvnc to be stopped', () => processesNamed(['Xvnc', 'openbox']).length === 0);
    await waitFor('its X lock to go', () => !existsSync('/tmp/.X84-lock'));
  });

  void it(
    'back-to-back connects on a one-display range: the reservation ends with the start',
    T,
    async () => {
      free(85, 85);
      const held = new Set<string>();
      const reserve: DesktopServiceDeps['reserveDisplay'] = (t, display) => {
        const key = `${t.host}:${t.port}:${display}`;
        if (held.has(key)) return Promise.resolve(null);
        held.add(key);
        return Promise.resolve(() => {
          held.delete(key);
          return Promise.resolve();
        });
      };
      const service = gateway({ displayMin: 85, displayMax: 85 }, reserve);
      for (let i = 0; i < 3; i++) {
        const { handle } = await service.start(target, 'openbox');
        assert.equal(held.size, 0, 'no reservation outlives the start');
        await service.stop(target, handle);
      }
    },
  );
});
