// The desktop service against a real OpenSSH sshd (test/helpers/sshd.ts) and real TigerVNC, openbox and
// xfce on this machine: probe, start over the Unix socket and over VncAuth TCP, speak RFB through the SSH
// channel, two desktops at once, stop leaving nothing behind, and the error cases.
//
// "VNC server missing" is shown with the service's `vncSearchPath` option pointed at a folder without Xvnc.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { createLogger } from '../src/observability/logger.js';
import { SshPool, type SshTarget } from '../src/ssh/ssh-pool.js';
import {
  DesktopService,
  desktopMarker,
  type DesktopHandle,
  type DesktopServiceOptions,
} from '../src/desktop/desktop.service.js';
import { remoteCommand } from '../src/desktop/remote-script.js';
import { isProcessAlive, processesWithEnv, startSshd, type SshdFixture } from './helpers/sshd.js';
import { rejectsWith } from './helpers/assertions.js';

const GEOMETRY = '1024x768';
const T = { timeout: 180_000 };

let sshd: SshdFixture;
let pool: SshPool;
let target: SshTarget;
const logger = createLogger({ level: 'silent' });
const started: Array<{ service: DesktopService; handle: DesktopHandle }> = [];

before(async () => {
  // A test user of its own: other test files start desktops for cdtest1/cdtest2, and stop() leaves per-user
  // agents (gpg-agent) alone while another desktop of the same user runs.
  sshd = await startSshd({ usernames: ['cdtestdesk'] });
  const user = sshd.users[0]!;
  pool = new SshPool({
    maxChannelsPerConnection: 64,
    keepaliveIntervalMs: 10_000,
    keepaliveCountMax: 3,
    maxHandshakesPerTarget: 4,
    idleCloseMs: 60_000,
    readyTimeoutMs: 30_000,
    execTimeoutMs: 60_000,
    logger,
  });
  target = {
    host: sshd.host,
    port: sshd.port,
    username: user.username,
    auth: { type: 'privateKey', privateKey: user.privateKey },
    hostKeyFingerprint: sshd.hostKeyFingerprint,
  };
});

after(async () => {
  for (const { service, handle } of started) await service.stop(target, handle).catch(() => undefined);
  await pool?.close();
  await sshd?.stop();
});

function newService(overrides: Partial<DesktopServiceOptions> = {}): DesktopService {
  return new DesktopService({
    pool,
    logger,
    options: {
      displayMin: 30,
      displayMax: 69,
      transport: 'auto',
      startTimeoutMs: 60_000,
      geometry: GEOMETRY,
      ...overrides,
    },
  });
}

async function start(service: DesktopService, de: 'openbox' | 'xfce'): Promise<DesktopHandle> {
  const { handle, hostKeyFingerprint } = await service.start(target, de);
  started.push({ service, handle });
  assert.equal(hostKeyFingerprint, sshd.hostKeyFingerprint);
  return handle;
}

/** Reads exact byte counts from a stream (the test's RFB client). */
class Reader {
  private buffered = Buffer.alloc(0);
  private waiting: (() => void) | null = null;
  private ended = false;
  constructor(private readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.waiting?.();
    });
    const end = (): void => {
      this.ended = true;
      this.waiting?.();
    };
    stream.on('end', end);
    stream.on('close', end);
    stream.resume();
  }
  async read(n: number): Promise<Buffer> {
    while (this.buffered.length < n) {
      if (this.ended) throw new Error(`stream ended with ${this.buffered.length}/${n} bytes`);
      await new Promise<void>((resolve) => (this.waiting = resolve));
      this.waiting = null;
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }
}

/** ClientInit (shared) → ServerInit; returns the framebuffer size and desktop name. */
async function clientInit(
  stream: Duplex,
  reader: Reader,
): Promise<{ width: number; height: number; name: string }> {
  stream.write(Buffer.from([1]));
  const head = await reader.read(24);
  const nameLength = head.readUInt32BE(20);
  const name = (await reader.read(nameLength)).toString('utf8');
  return { width: head.readUInt16BE(0), height: head.readUInt16BE(2), name };
}

/** Every process still carrying the desktop's marker, and whether its Xvnc lives. */
async function leftovers(handle: DesktopHandle): Promise<{ marked: number[]; xvncAlive: boolean }> {
  return {
    marked: (await processesWithEnv(desktopMarker(handle))).filter(isProcessAlive),
    xvncAlive: isProcessAlive(handle.pid),
  };
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** PIDs of the key agents a user runs. */
async function agentsOf(uid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if ((await stat(`/proc/${name}`)).uid !== uid) continue;
      if (['ssh-agent', 'gpg-agent'].includes(comm(Number(name)))) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

/** Waits (bounded) for a condition about processes on the instance; there is no event to wait on. */
async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The environment a program in that desktop sees (from its xfce4-session or openbox). */
async function desktopEnv(handle: DesktopHandle, from: string): Promise<Record<string, string>> {
  const pid = (await leftovers(handle)).marked.find((p) => comm(p) === from);
  assert.ok(pid, `${from} runs in the desktop`);
  const env: Record<string, string> = {};
  for (const entry of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/** Runs a program as the test user inside the desktop's X and D-Bus session; its output, or '' if it failed. */
function inDesktop(env: Record<string, string>, argv: string[]): string {
  const pass = ['DISPLAY', 'XAUTHORITY', 'DBUS_SESSION_BUS_ADDRESS'].map((k) => `${k}=${env[k] ?? ''}`);
  try {
    return execFileSync('runuser', ['-u', sshd.users[0]!.username, '--', 'env', ...pass, ...argv], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      cwd: '/',
      timeout: 30_000,
    }).trim();
  } catch {
    return '';
  }
}

/** The owner of the compositing-manager selection _NET_WM_CM_S0 (0: no compositor), through libX11. */
const COMPOSITOR_OWNER_PY = `
import ctypes
x = ctypes.cdll.LoadLibrary("libX11.so.6")
x.XOpenDisplay.restype = ctypes.c_void_p
x.XOpenDisplay.argtypes = [ctypes.c_char_p]
x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
x.XInternAtom.restype = ctypes.c_ulong
x.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
x.XGetSelectionOwner.restype = ctypes.c_ulong
d = x.XOpenDisplay(None)
if not d: raise SystemExit(1)
print(x.XGetSelectionOwner(d, x.XInternAtom(d, b"_NET_WM_CM_S0", 0)))
`;

/** The root window's colour at (x, y) as #rrggbb, read from the X server (what the viewer is sent). */
function rootPixel(env: Record<string, string>, x: number, y: number): string {
  const out = inDesktop(env, ['import', '-window', 'root', '-crop', `1x1+${x}+${y}`, 'txt:-']);
  // "0,0: (…)  #… srgb(46,52,64)": the 8-bit channels, whatever ImageMagick's quantum depth.
  const m = /srgba?\((\d+),(\d+),(\d+)/.exec(out);
  return m
    ? `#${m
        .slice(1, 4)
        .map((v) => Number(v).toString(16).padStart(2, '0'))
        .join('')}`
    : '';
}

/** The CloudDesk plain background (remote-script.ts PLAIN_BACKGROUND). */
const PLAIN = '#2e3440';

/**
 * Saved xfce settings of a user who likes compositing and the default wallpaper, as xfconf writes them:
 * a CloudDesk session must not change them.
 */
function writeUserXfceSettings(): Record<string, string> {
  const user = sshd.users[0]!;
  const dir = `${user.home}/.config/xfce4/xfconf/xfce-perchannel-xml`;
  mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {
    'xfwm4.xml': `<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfwm4" version="1.0">
  <property name="general" type="empty">
    <property name="use_compositing" type="bool" value="true"/>
  </property>
</channel>
`,
    'xfce4-desktop.xml': `<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-desktop" version="1.0">
  <property name="backdrop" type="empty">
    <property name="screen0" type="empty">
      <property name="monitorVNC-0" type="empty">
        <property name="workspace0" type="empty">
          <property name="color-style" type="int" value="0"/>
          <property name="image-style" type="int" value="5"/>
          <property name="last-image" type="string" value="/usr/share/backgrounds/xfce/xfce-shapes.svg"/>
        </property>
      </property>
    </property>
  </property>
</channel>
`,
  };
  for (let d = dir; d.length > user.home.length; d = d.slice(0, d.lastIndexOf('/')))
    chownSync(d, user.uid, user.uid);
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(`${dir}/${name}`, text);
    chownSync(`${dir}/${name}`, user.uid, user.uid);
  }
  return Object.fromEntries(Object.keys(files).map((name) => [name, `${dir}/${name}`]));
}

/** A display in [from, to] that nothing on this machine uses right now. */
function unusedDisplay(from: number, to: number): number {
  for (let n = from; n <= to; n++) {
    if (!existsSync(`/tmp/.X${n}-lock`) && !existsSync(`/tmp/.X11-unix/X${n}`)) return n;
  }
  throw new Error('no unused display for the test');
}

void describe('DesktopService', () => {
  void it('probe reports TigerVNC with Unix socket support, openbox and xfce', T, async () => {
    const probe = await newService().probe(target);
    assert.ok(probe.vncServer, 'a VNC server was found');
    assert.equal(probe.vncServer.kind, 'tigervnc');
    assert.match(probe.vncServer.version ?? '', /^1\.\d+/);
    assert.equal(probe.vncServer.unixSocket, true);
    assert.ok(probe.desktopEnvironments.includes('openbox'));
    assert.ok(probe.desktopEnvironments.includes('xfce'));
    assert.equal(probe.hostKeyFingerprint, sshd.hostKeyFingerprint);
  });

  void it('starts openbox on a private Unix socket and speaks RFB through the SSH channel', T, async () => {
    const service = newService();
    const handle = await start(service, 'openbox');
    assert.equal(handle.transport, 'unix');
    if (handle.transport !== 'unix') return;
    // Only the instance user can reach the desktop: a 0600 socket in a 0700 folder of theirs.
    const uid = sshd.users[0]!.uid;
    const socketStat = statSync(handle.socketPath);
    assert.equal(socketStat.mode & 0o777, 0o600);
    assert.equal(socketStat.uid, uid);
    const dirStat = statSync(handle.socketPath.slice(0, handle.socketPath.lastIndexOf('/')));
    assert.equal(dirStat.mode & 0o777, 0o700);
    assert.equal(dirStat.uid, uid);

    const { stream, preauthenticated } = await service.openStream(target, handle);
    assert.equal(preauthenticated, false);
    const reader = new Reader(stream);
    assert.equal((await reader.read(12)).toString('latin1'), 'RFB 003.008\n');
    stream.write('RFB 003.008\n');
    const count = (await reader.read(1))[0]!;
    const types = [...(await reader.read(count))];
    assert.ok(types.includes(1), `security types ${types.join(',')} include None`);
    stream.write(Buffer.from([1]));
    assert.equal((await reader.read(4)).readUInt32BE(0), 0, 'SecurityResult OK');
    const init = await clientInit(stream, reader);
    assert.deepEqual([init.width, init.height], [1024, 768]);
    // A full, non-incremental FramebufferUpdateRequest is answered with a FramebufferUpdate (type 0).
    const request = Buffer.alloc(10);
    request.writeUInt8(3, 0);
    request.writeUInt8(0, 1);
    request.writeUInt16BE(init.width, 6);
    request.writeUInt16BE(init.height, 8);
    stream.write(request);
    assert.equal((await reader.read(1))[0], 0, 'FramebufferUpdate');
    stream.destroy();
    await service.stop(target, handle);
  });

  void it('gives two concurrent starts two different displays; both run; stop ends each', T, async () => {
    const service = newService();
    const [a, b] = await Promise.all([start(service, 'openbox'), start(service, 'openbox')]);
    assert.notEqual(a.display, b.display);
    assert.equal(await service.isAlive(target, a), true);
    assert.equal(await service.isAlive(target, b), true);
    await service.stop(target, a);
    assert.equal(await service.isAlive(target, a), false);
    assert.equal(await service.isAlive(target, b), true);
    await service.stop(target, b);
    assert.equal(await service.isAlive(target, b), false);
  });

  void it('stop leaves no process of the desktop, even one that left its process group', T, async () => {
    const service = newService();
    const handle = await start(service, 'openbox');
    // What gpg-agent or ssh-agent do: daemonize into a session of their own, keeping the environment.
    await pool.exec(target, `${desktopMarker(handle)} setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!`);
    await waitFor('the escaped daemon', async () =>
      (await leftovers(handle)).marked.some((p) => comm(p) === 'sleep'),
    );
    const before = await leftovers(handle);
    assert.ok(before.xvncAlive);
    assert.ok(
      before.marked.some((p) => comm(p) === 'openbox'),
      'openbox carries the marker',
    );

    await service.stop(target, handle);
    assert.deepEqual(await leftovers(handle), { marked: [], xvncAlive: false });
    if (handle.transport === 'unix') assert.equal(existsSync(handle.socketPath), false);
    assert.equal(existsSync(`/tmp/.X${handle.display}-lock`), false);
  });

  void it('stops xfce with its dbus session and everything it spawned', T, async () => {
    const service = newService();
    const handle = await start(service, 'xfce');
    await waitFor('xfce4-session and dbus-daemon', async () => {
      const names = (await leftovers(handle)).marked.map(comm);
      return names.includes('xfce4-session') && names.includes('dbus-daemon');
    });
    const running = (await leftovers(handle)).marked;
    assert.ok(running.length >= 3);
    // xfce starts ssh-agent and gpg-agent, which make themselves non-dumpable: the marker in their
    // environment cannot be read, not by the instance user nor by the scan here. They must go too.
    const uid = sshd.users[0]!.uid;
    await waitFor('ssh-agent and gpg-agent', async () => (await agentsOf(uid)).length >= 2);
    const agents = await agentsOf(uid);
    assert.deepEqual(agents.map(comm).sort(), ['gpg-agent', 'ssh-agent']);
    // A session that is slow to end (as a loaded machine makes xfce): one of its processes ignores TERM,
    // so the stop runs for seconds before it KILLs it. The agents are still the desktop's.
    await pool.exec(
      target,
      `${desktopMarker(handle)} setsid sh -c 'trap "" TERM; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &`,
    );
    await waitFor('the slow process', async () =>
      (await leftovers(handle)).marked.some((p) => comm(p) === 'sh'),
    );

    await service.stop(target, handle);
    const left = await leftovers(handle);
    assert.deepEqual(
      left.marked.map((p) => `${p} ${comm(p)}`),
      [],
    );
    assert.equal(left.xvncAlive, false);
    assert.deepEqual(running.filter(isProcessAlive), []);
    assert.deepEqual(agents.filter(isProcessAlive), []);
  });

  void it(
    'xfce for CloudDesk: no compositor, a plain background, Xvnc -FrameRate; the saved settings untouched',
    T,
    async () => {
      const saved = writeUserXfceSettings();
      const service = newService({ maxFps: 24 });
      const handle = await start(service, 'xfce');
      const argv = readFileSync(`/proc/${handle.pid}/cmdline`, 'latin1').split('\0');
      assert.equal(argv[argv.indexOf('-FrameRate') + 1], '24');
      await waitFor('xfwm4', async () => (await leftovers(handle)).marked.map(comm).includes('xfwm4'));
      const xfwm4 = (await leftovers(handle)).marked.find((p) => comm(p) === 'xfwm4')!;
      assert.ok(readFileSync(`/proc/${xfwm4}/cmdline`, 'latin1').split('\0').includes('--compositor=off'));
      const env = await desktopEnv(handle, 'xfce4-session');
      // No compositor runs: nobody holds the compositing manager selection (xfwm4 holds it when on).
      await waitFor('the window manager to settle', () =>
        Promise.resolve(inDesktop(env, ['python3', '-c', COMPOSITOR_OWNER_PY]) === '0'),
      );
      // The plain colour on the root window (the middle of the screen, away from the panel), and no
      // xfdesktop painting a wallpaper over it.
      await waitFor('the plain background', () => Promise.resolve(rootPixel(env, 700, 400) === PLAIN));
      assert.equal((await leftovers(handle)).marked.map(comm).includes('xfdesktop'), false);
      await service.stop(target, handle);
      assert.match(readFileSync(saved['xfwm4.xml']!, 'utf8'), /"use_compositing" type="bool" value="true"/);
      assert.match(readFileSync(saved['xfce4-desktop.xml']!, 'utf8'), /"image-style" type="int" value="5"/);
    },
  );

  void it(
    'xfce with DESKTOP_WALLPAPER=keep shows the user’s own wallpaper, still without a compositor',
    T,
    async () => {
      writeUserXfceSettings();
      const service = newService({ wallpaper: 'keep' });
      const handle = await start(service, 'xfce');
      const argv = readFileSync(`/proc/${handle.pid}/cmdline`, 'latin1').split('\0');
      assert.equal(argv[argv.indexOf('-FrameRate') + 1], '30', 'the default DESKTOP_MAX_FPS');
      await waitFor('xfdesktop', async () =>
        (await leftovers(handle)).marked.map(comm).includes('xfdesktop'),
      );
      const env = await desktopEnv(handle, 'xfce4-session');
      await waitFor('no compositor', () =>
        Promise.resolve(inDesktop(env, ['python3', '-c', COMPOSITOR_OWNER_PY]) === '0'),
      );
      // The wallpaper is painted: neither Xvnc's black root nor the plain colour.
      await waitFor('the wallpaper', () => {
        const px = rootPixel(env, 700, 400);
        return Promise.resolve(px !== '' && px !== '#000000' && px !== PLAIN);
      });
      await service.stop(target, handle);
    },
  );

  void it('openbox opens with an xterm, not a black screen', T, async () => {
    const service = newService();
    const handle = await start(service, 'openbox');
    await waitFor('an xterm in the desktop', async () =>
      (await leftovers(handle)).marked.map(comm).includes('xterm'),
    );
    await service.stop(target, handle);
    assert.deepEqual(await leftovers(handle), { marked: [], xvncAlive: false });
  });

  void it(
    'tcp transport: the gateway answers the VNC password and hands over a preauthenticated stream',
    T,
    async () => {
      const service = newService({ transport: 'tcp' });
      const handle = await start(service, 'openbox');
      assert.equal(handle.transport, 'tcp');
      if (handle.transport !== 'tcp') return;
      assert.equal(handle.port, 5900 + handle.display);
      assert.match(handle.vncPassword, /^[A-Za-z0-9]{8}$/);
      // The password is in no process's argv on the instance.
      const argv = readFileSync(`/proc/${handle.pid}/cmdline`, 'latin1');
      assert.ok(argv.includes('Xvnc') && !argv.includes(handle.vncPassword));

      const { stream, preauthenticated, serverVersion } = await service.openStream(target, handle);
      assert.equal(preauthenticated, true);
      assert.equal(serverVersion, 'RFB 003.008\n');
      const init = await clientInit(stream, new Reader(stream));
      assert.deepEqual([init.width, init.height], [1024, 768]);
      stream.destroy();

      await rejectsWith(
        service.openStream(target, { ...handle, vncPassword: 'Wrong123' }),
        'VNC_PROTOCOL_ERROR',
      );
      await service.stop(target, handle);
      assert.deepEqual(await leftovers(handle), { marked: [], xvncAlive: false });
    },
  );

  void it('moves on to the next display when Xvnc dies at start (its port is taken)', T, async () => {
    const busy = unusedDisplay(60, 69);
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(5900 + busy, '127.0.0.1', resolve));
    try {
      const service = newService({ transport: 'tcp', displayMin: busy, displayMax: 69 });
      const handle = await start(service, 'openbox');
      assert.notEqual(handle.display, busy);
      await service.stop(target, handle);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  void it('answers NO_FREE_DISPLAY when every display in range is taken', T, async () => {
    const service = newService();
    const handle = await start(service, 'openbox');
    const narrow = newService({ displayMin: handle.display, displayMax: handle.display });
    await rejectsWith(narrow.start(target, 'openbox'), 'NO_FREE_DISPLAY');
    await service.stop(target, handle);
  });

  void it('isAlive is false once Xvnc is gone, and stop still cleans up the rest', T, async () => {
    const service = newService();
    const handle = await start(service, 'openbox');
    process.kill(handle.pid, 'SIGKILL');
    await waitFor('Xvnc to die', () => Promise.resolve(!isProcessAlive(handle.pid)));
    assert.equal(await service.isAlive(target, handle), false);
    await service.stop(target, handle);
    assert.deepEqual(await leftovers(handle), { marked: [], xvncAlive: false });
  });

  void it('refuses an unknown desktop environment', T, async () => {
    await rejectsWith(newService().start(target, 'kde' as never), 'DESKTOP_ENVIRONMENT_UNKNOWN');
  });

  void it('refuses an allow-listed desktop environment that is not installed', T, async (t) => {
    if (existsSync('/usr/bin/mate-session')) return t.skip('MATE is installed here');
    await rejectsWith(newService().start(target, 'mate'), 'DESKTOP_ENVIRONMENT_MISSING');
  });

  void it('reports no VNC server and refuses to start when Xvnc cannot be found', T, async () => {
    const service = newService({ vncSearchPath: '/nonexistent/bin' });
    assert.equal((await service.probe(target)).vncServer, null);
    await rejectsWith(service.start(target, 'openbox'), 'VNC_SERVER_MISSING');
  });

  void it('never lets a value from a stored handle reach the shell unchecked', T, async () => {
    const service = newService();
    const hostile = {
      display: 1,
      transport: 'unix',
      socketPath: '/tmp/x.sock; touch /tmp/pwned',
      pid: 2,
    } as const;
    await rejectsWith(service.stop(target, hostile), 'VALIDATION_FAILED');
    await rejectsWith(service.isAlive(target, { ...hostile, display: -1 }), 'VALIDATION_FAILED');
    assert.throws(() => remoteCommand('stop', ['1; reboot']), /unsafe remote argument/);
    assert.equal(existsSync('/tmp/pwned'), false);
  });
});
