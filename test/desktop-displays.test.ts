// How a start picks its display, which is what keeps a start cheap on an instance that already runs many
// desktops: the instance script lists at most a few free displays, looking from a given one and wrapping
// around (run here with the machine's own /bin/sh, as root, on displays 9100–9109 of this machine), and the
// desktop service asks again elsewhere when every display it was given is taken meanwhile (with a scripted
// SSH pool: a real instance cannot be made to race on cue).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { createLogger } from '../src/observability/logger.js';
import { DesktopService } from '../src/desktop/desktop.service.js';
import { parseRemoteOutput, remoteCommand, remoteStdin } from '../src/desktop/remote-script.js';
import type { ExecResult, SshTarget } from '../src/ssh/ssh-pool.js';
import type { ClientChannel } from 'ssh2';

const FIRST = 9100;
const LAST = 9109;
/** `nobody`: a lock or socket of another user on the instance. */
const OTHER_UID = 65534;

function lockPath(n: number): string {
  return `/tmp/.X${n}-lock`;
}

function writeLock(n: number, pid: number): void {
  writeFileSync(lockPath(n), `${String(pid).padStart(10)}\n`);
}

/** Runs one subcommand of the instance script locally, as the gateway would over SSH. */
function runScript(args: (string | number)[]): Promise<{ code: number; out: Map<string, string[]> }> {
  const command = remoteCommand('probe', args);
  return new Promise((resolve, reject) => {
    const child = execFile('/bin/sh', ['-c', command], (err, stdout) => {
      const code = err === null ? 0 : err.code;
      if (typeof code !== 'number') reject(new Error('the script did not run', { cause: err }));
      else resolve({ code, out: parseRemoteOutput(stdout) });
    });
    child.stdin!.end(remoteStdin(null));
  });
}

async function deadPid(): Promise<number> {
  const child = spawn('/bin/true');
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

void describe('free displays on the instance (probe script)', () => {
  before(async () => {
    for (let n = FIRST; n <= LAST; n++) {
      if (existsSync(lockPath(n)) || existsSync(`/tmp/.X11-unix/X${n}`))
        throw new Error(`display ${n} is in use on this machine; the test needs ${FIRST}-${LAST}`);
    }
    writeLock(FIRST + 1, process.pid); // a live X server of ours
    writeLock(FIRST + 2, await deadPid()); // our stale lock: free again
    writeLock(FIRST + 3, await deadPid()); // someone else's lock, even a stale one: theirs
    chownSync(lockPath(FIRST + 3), OTHER_UID, OTHER_UID);
    mkdirSync('/tmp/.X11-unix', { recursive: true, mode: 0o1777 });
    writeFileSync(`/tmp/.X11-unix/X${FIRST + 4}`, ''); // someone else's X socket in the way
    chownSync(`/tmp/.X11-unix/X${FIRST + 4}`, OTHER_UID, OTHER_UID);
  });

  after(() => {
    for (const n of [1, 2, 3]) rmSync(lockPath(FIRST + n), { force: true });
    rmSync(`/tmp/.X11-unix/X${FIRST + 4}`, { force: true });
  });

  void it('lists free displays from the given one, skipping taken ones, at most the limit', async () => {
    const { code, out } = await runScript([FIRST, LAST, '-', FIRST + 3, 3]);
    assert.equal(code, 0);
    assert.deepEqual(out.get('free'), ['9105', '9106', '9107']);
  });

  void it('wraps around to the start of the range, and takes a stale lock of ours as free', async () => {
    const { out } = await runScript([FIRST, LAST, '-', FIRST + 8, 5]);
    assert.deepEqual(out.get('free'), ['9108', '9109', '9100', '9102', '9105']);
  });

  void it('looks at each display once when fewer than the limit are free', async () => {
    const { out } = await runScript([FIRST, LAST, '-', FIRST, 50]);
    assert.deepEqual(out.get('free'), ['9100', '9102', '9105', '9106', '9107', '9108', '9109']);
  });

  void it('starts from the bottom when the starting display is outside the range', async () => {
    const { out } = await runScript([FIRST, LAST, '-', LAST + 5, 2]);
    assert.deepEqual(out.get('free'), ['9100', '9102']);
  });

  void it('refuses arguments that are not small whole numbers', async () => {
    for (const bad of [
      [FIRST, LAST, '-', 'x', 3] as const,
      [FIRST, LAST, '-', FIRST, 12345678901] as const,
    ]) {
      const { code, out } = await runScript([...bad]);
      assert.equal(code, 14);
      assert.deepEqual(out.get('error'), ['bad-arguments']);
    }
  });
});

void describe('DesktopService display choice (scripted instance)', () => {
  const target: SshTarget = {
    host: '127.0.0.1',
    port: 22,
    username: 'someone',
    auth: { type: 'password', password: 'x' },
    hostKeyFingerprint: null,
  };
  const ok = (stdout: string): ExecResult => ({
    code: 0,
    signal: null,
    stdout,
    stderr: '',
    truncated: false,
    hostKeyFingerprint: 'SHA256:test',
  });

  /** An instance whose displays 1..200 are free; each probe lists `limit` of them from `from`. */
  function scriptedPool() {
    const probes: { from: number; limit: number }[] = [];
    const startedOn: number[] = [];
    const pool = {
      exec: (_t: SshTarget, command: string): Promise<ExecResult> => {
        const words = command.split(' ').slice(3); // after 'sh -s --'
        if (words[0] === 'probe') {
          const [min, max, , from, limit] = words.slice(1).map(Number) as [
            number,
            number,
            number,
            number,
            number,
          ];
          probes.push({ from, limit });
          const free: string[] = [];
          for (let i = 0, n = from; i <= max - min && free.length < limit; i++, n = n < max ? n + 1 : min)
            free.push(`free=${n}`);
          return Promise.resolve(
            ok(['xvnc=tigervnc', 'unix=1', 'de=openbox', 'setsid=1', ...free].join('\n')),
          );
        }
        if (words[0] === 'start') {
          const display = Number(words[1]);
          startedOn.push(display);
          return Promise.resolve(
            ok(`ok=1\npid=4242\ndisplay=${display}\nsocket=/tmp/clouddesk-1/${display}.sock`),
          );
        }
        throw new Error(`unexpected command ${command}`);
      },
      openUnixStream: () => {
        const channel = new PassThrough() as unknown as ClientChannel;
        (channel as unknown as { close: () => void }).close = () => channel.destroy();
        channel.write('RFB 003.008\n');
        return Promise.resolve({ channel, hostKeyFingerprint: 'SHA256:test' });
      },
      openTcpStream: () => Promise.reject(new Error('not used')),
    };
    return { pool, probes, startedOn };
  }

  void it('asks again from elsewhere when every listed display is being started by another gateway', async () => {
    const { pool, probes, startedOn } = scriptedPool();
    const taken = new Set<number>();
    const service = new DesktopService({
      pool,
      logger: createLogger({ level: 'silent' }),
      options: {
        displayMin: 1,
        displayMax: 200,
        transport: 'unix',
        startTimeoutMs: 10_000,
        geometry: '1024x768',
      },
      // The first inspection's displays are all reserved elsewhere in the cluster.
      reserveDisplay: (_t, display) => {
        if (probes.length === 1) taken.add(display);
        if (taken.has(display)) return Promise.resolve(null);
        return Promise.resolve(() => Promise.resolve());
      },
    });
    const { handle } = await service.start(target, 'openbox');
    assert.ok(probes.length >= 2, 'another inspection');
    assert.equal(taken.size, probes[0]!.limit, 'every display of the first list was tried');
    assert.ok(
      probes.every((p) => p.limit < 200),
      'an inspection never lists the whole range',
    );
    assert.deepEqual(startedOn, [handle.display]);
    assert.ok(!taken.has(handle.display));
  });

  void it('lists the whole range, lowest first, when it is small', async () => {
    const { pool, probes } = scriptedPool();
    const service = new DesktopService({
      pool,
      logger: createLogger({ level: 'silent' }),
      options: {
        displayMin: 5,
        displayMax: 12,
        transport: 'unix',
        startTimeoutMs: 10_000,
        geometry: '1024x768',
      },
    });
    const { handle } = await service.start(target, 'openbox');
    assert.deepEqual(probes, [{ from: 5, limit: probes[0]!.limit }]);
    assert.ok(probes[0]!.limit >= 8);
    assert.equal(handle.display, 5);
  });
});
