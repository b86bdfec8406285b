// Test fixture: a real OpenSSH sshd on loopback with its own host key and config, and real local test
// users (cdtest1, cdtest2, …) that can log in with a password, a plain ed25519 key or a passphrase-protected
// key. Needs root (sshd, useradd, chpasswd). Every process a login of this sshd starts carries
// CLOUDDESK_SSHD_FIXTURE=<id> in its environment (sshd `SetEnv`), which is how `stop()` finds and ends
// what the tests left behind (desktops started with setsid, daemonized agents) without touching the
// test users' processes belonging to other, concurrently running fixtures.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdtemp, mkdir, writeFile, readFile, readdir, rm, chmod, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port.js';

const execFileP = promisify(execFile);

export interface SshdTestUser {
  username: string;
  uid: number;
  password: string;
  /** Unencrypted ed25519 key, OpenSSH format. */
  privateKey: string;
  /** The same kind of key, encrypted with `passphrase` (OpenSSH format, bcrypt KDF). */
  encryptedPrivateKey: string;
  passphrase: string;
  home: string;
}

export interface SshdFixture {
  host: '127.0.0.1';
  port: number;
  /** 'SHA256:…' exactly as `ssh-keygen -l` prints it. */
  hostKeyFingerprint: string;
  users: SshdTestUser[];
  /** sshd's own log (LogLevel VERBOSE). */
  logPath: string;
  /** The environment marker every session of this sshd carries, e.g. 'CLOUDDESK_SSHD_FIXTURE=ab12…'. */
  envMarker: string;
  stop(): Promise<void>;
}

export interface StartSshdOptions {
  /** How many test users (cdtest1…cdtestN). Default 1. */
  users?: number;
  /**
   * Test users by name instead (each must start with `cdtest`), for a test that must not share its user
   * with other test files — e.g. one that counts the user's processes.
   */
  usernames?: string[];
  /** sshd MaxStartups, default '100:30:200' (the OpenSSH default 10:30:100 drops bursts of handshakes). */
  maxStartups?: string;
  /**
   * Extra sshd_config lines. They come first, so they win over our defaults (sshd keeps the first value).
   * `SetEnv` lines before any `Match` are merged with the fixture's marker into one `SetEnv` line.
   */
  extraConfig?: string[];
  /** false: no `Subsystem sftp` line at all (an instance without SFTP). Default: internal-sftp. */
  sftp?: boolean;
}

const SSHD = '/usr/sbin/sshd';
const USER_LOCK = '/tmp/clouddesk-test-users.lock';
const READY_TIMEOUT_MS = 30_000;

// Creates the user once and keeps its password in a root-only file, so fixtures started concurrently
// (other test files, other engineers' runs) agree on it instead of resetting it under each other. A
// password must be set: with UsePAM no, sshd refuses even key logins for a locked ('!') account.
const ENSURE_USER_SCRIPT = `
set -eu
u="$1"
state=/var/lib/clouddesk-test
mkdir -p "$state"; chmod 700 "$state"
id -u "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"
pwfile="$state/$u.password"
status=$(passwd -S "$u" | cut -d' ' -f2)
if [ ! -s "$pwfile" ] || [ "$status" != P ]; then
  pw=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
  printf '%s:%s\\n' "$u" "$pw" | chpasswd
  (umask 077; printf '%s' "$pw" > "$pwfile")
fi
printf 'uid=%s\\n' "$(id -u "$u")"
printf 'home=%s\\n' "$(getent passwd "$u" | cut -d: -f6)"
printf 'password=%s\\n' "$(cat "$pwfile")"
`;

async function ensureUser(username: string): Promise<{ uid: number; home: string; password: string }> {
  const { stdout } = await execFileP('flock', [
    USER_LOCK,
    'sh',
    '-c',
    ENSURE_USER_SCRIPT,
    'ensure-user',
    username,
  ]);
  const fields = new Map(
    stdout
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)] as const),
  );
  const uid = Number(fields.get('uid'));
  const home = fields.get('home') ?? '';
  const password = fields.get('password') ?? '';
  if (!Number.isInteger(uid) || home === '' || password === '')
    throw new Error(`could not set up ${username}`);
  return { uid, home, password };
}

async function sshKeygen(
  path: string,
  passphrase: string,
  comment: string,
): Promise<{ priv: string; pub: string }> {
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', comment, '-f', path]);
  return { priv: await readFile(path, 'utf8'), pub: await readFile(`${path}.pub`, 'utf8') };
}

function fingerprintOfPublicKeyLine(line: string): string {
  const blob = Buffer.from(line.trim().split(/\s+/)[1] ?? '', 'base64');
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** PIDs of live processes (any owner, or only `uids` when given) whose environment holds `entry` exactly. */
export async function processesWithEnv(entry: string, uids?: number[]): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (uids !== undefined) {
        const st = await stat(`/proc/${name}`);
        if (!uids.includes(st.uid)) continue;
      }
      const environ = await readFile(`/proc/${name}/environ`, 'latin1');
      if (environ.split('\0').includes(entry)) found.push(Number(name));
    } catch {
      // gone while we looked, or not ours to read
    }
  }
  return found;
}

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie still answers kill(0); it is dead for our purposes.
  try {
    const st = readProcStat(pid);
    return st !== null && st.state !== 'Z';
  } catch {
    return false;
  }
}

function readProcStat(pid: number): { state: string; ppid: number } | null {
  // Synchronous is fine in a test helper: /proc reads never block.
  const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return rest.length > 1 ? { state: rest[0]!, ppid: Number(rest[1]) } : null;
}

async function descendantsOf(root: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const text = await readFile(`/proc/${name}/stat`, 'latin1');
      const ppid = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

/** TERM, wait (bounded) for the processes to go, then KILL what is left. */
export async function terminate(pids: number[], graceMs = 5_000): Promise<void> {
  signal(pids, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  let alive = pids.filter(isProcessAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    alive = alive.filter(isProcessAlive);
  }
  signal(alive, 'SIGKILL');
}

const SET_ENV_LINE = /^\s*SetEnv\s+(.*)$/i;

/** `NAME=value` entries of a `SetEnv` argument list, quotes kept as written (`FOO="a b"`, `"FOO=a b"`). */
function setEnvEntries(args: string): string[] {
  return args.match(/(?:"[^"]*"|[^\s"])+/g) ?? [];
}

function setEnvName(entry: string): string {
  const plain = entry.replace(/"/g, '');
  return plain.slice(0, plain.indexOf('=') === -1 ? plain.length : plain.indexOf('='));
}

/**
 * One `SetEnv` line with the marker and every entry of the callers' global `SetEnv` lines: sshd keeps
 * only the first `SetEnv` line it reads, so a second line (ours or theirs) would be silently dropped.
 * For the same name the caller's first value wins, as sshd would have it; the marker's name is ours.
 */
function mergedSetEnv(marker: string, callerLines: string[]): string {
  const markerName = setEnvName(marker);
  const byName = new Map<string, string>();
  for (const line of callerLines) {
    for (const entry of setEnvEntries(SET_ENV_LINE.exec(line)?.[1] ?? '')) {
      const name = setEnvName(entry);
      if (name === markerName) throw new Error(`extraConfig must not set ${markerName}: stop() relies on it`);
      if (!byName.has(name)) byName.set(name, entry);
    }
  }
  return ['SetEnv', marker, ...byName.values()].join(' ');
}

function buildConfig(
  dir: string,
  port: number,
  users: string[],
  marker: string,
  opts: StartSshdOptions,
): string {
  const extra = opts.extraConfig ?? [];
  const matchAt = extra.findIndex((l) => /^\s*Match\s/i.test(l));
  const global = matchAt === -1 ? extra : extra.slice(0, matchAt);
  const before = global.filter((l) => !SET_ENV_LINE.test(l));
  const setEnv = mergedSetEnv(
    marker,
    global.filter((l) => SET_ENV_LINE.test(l)),
  );
  const after = matchAt === -1 ? [] : extra.slice(matchAt);
  return [
    ...before,
    setEnv,
    `ListenAddress 127.0.0.1:${port}`,
    `HostKey ${join(dir, 'ssh_host_ed25519_key')}`,
    'PidFile none',
    'UsePAM no',
    'PasswordAuthentication yes',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    `AuthorizedKeysFile ${join(dir, 'authorized_keys', '%u')}`,
    'StrictModes no',
    'PermitRootLogin no',
    `AllowUsers ${users.join(' ')}`,
    'AllowStreamLocalForwarding yes',
    'AllowTcpForwarding yes',
    'X11Forwarding no',
    'PrintMotd no',
    'UseDNS no',
    `MaxStartups ${opts.maxStartups ?? '100:30:200'}`,
    'MaxSessions 100',
    'MaxAuthTries 6',
    'LogLevel VERBOSE',
    ...(opts.sftp === false ? [] : ['Subsystem sftp internal-sftp']),
    ...after,
    '',
  ].join('\n');
}

interface Running {
  child: ChildProcess;
  port: number;
  exited: Promise<void>;
}

async function launch(
  dir: string,
  logPath: string,
  users: string[],
  marker: string,
  opts: StartSshdOptions,
): Promise<Running> {
  const port = await freePort();
  const configPath = join(dir, 'sshd_config');
  await writeFile(configPath, buildConfig(dir, port, users, marker, opts), { mode: 0o600 });
  const log = createWriteStream(logPath, { flags: 'a' });
  const child = spawn(SSHD, ['-D', '-e', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let seen = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sshd did not start listening within ${READY_TIMEOUT_MS} ms:\n${seen}`));
    }, READY_TIMEOUT_MS);
    child.stderr.on('data', (chunk: Buffer) => {
      log.write(chunk);
      if (seen.length < 64 * 1024) seen += chunk.toString('utf8');
      if (seen.includes(`Server listening on 127.0.0.1 port ${port}`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`sshd exited (${code ?? sig}) before listening:\n${seen}`));
    });
  });
  child.stderr.on('end', () => log.end());
  return { child, port, exited };
}

export async function startSshd(opts: StartSshdOptions = {}): Promise<SshdFixture> {
  if (process.getuid?.() !== 0) throw new Error('the sshd fixture needs root');
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  // sshd reads authorized_keys as the logging-in user, so the folder must be traversable by them.
  const dir = await mkdtemp(join(tmpdir(), 'clouddesk-sshd-'));
  await chmod(dir, 0o755);
  const keysDir = join(dir, 'authorized_keys');
  await mkdir(keysDir, { mode: 0o755 });
  const id = randomBytes(8).toString('hex');
  const marker = `CLOUDDESK_SSHD_FIXTURE=${id}`;
  const logPath = join(dir, 'sshd.log');

  const hostKeyPath = join(dir, 'ssh_host_ed25519_key');
  const hostKey = await sshKeygen(hostKeyPath, '', 'clouddesk-test-host');
  const hostKeyFingerprint = fingerprintOfPublicKeyLine(hostKey.pub);

  const users: SshdTestUser[] = [];
  const usernames = opts.usernames ?? Array.from({ length: opts.users ?? 1 }, (_, i) => `cdtest${i + 1}`);
  for (const username of usernames) {
    if (!/^cdtest[a-z0-9]{1,20}$/.test(username))
      throw new Error(`test user names start with cdtest: ${username}`);
    const account = await ensureUser(username);
    const passphrase = randomBytes(12).toString('base64url');
    const plain = await sshKeygen(join(dir, `${username}_ed25519`), '', `${username}@clouddesk-test`);
    const encrypted = await sshKeygen(
      join(dir, `${username}_ed25519_enc`),
      passphrase,
      `${username}@clouddesk-test`,
    );
    await writeFile(join(keysDir, username), plain.pub + encrypted.pub, { mode: 0o644 });
    users.push({
      username,
      uid: account.uid,
      password: account.password,
      privateKey: plain.priv,
      encryptedPrivateKey: encrypted.priv,
      passphrase,
      home: account.home,
    });
  }

  let running: Running | null = null;
  let lastError: unknown = null;
  // Another process can take the free port before sshd binds it: try a few ports.
  for (let attempt = 0; attempt < 5 && running === null; attempt++) {
    try {
      running = await launch(
        dir,
        logPath,
        users.map((u) => u.username),
        marker,
        opts,
      );
    } catch (e) {
      lastError = e;
      if (!String(e).includes('Address already in use')) break;
    }
  }
  if (running === null) {
    await rm(dir, { recursive: true, force: true });
    throw lastError instanceof Error ? lastError : new Error(String(lastError));
  }
  const { child, port, exited } = running;
  const uids = users.map((u) => u.uid);

  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      const listenerPid = child.pid!;
      // Per-connection sshd processes outlive the listener: end them too.
      const sessionProcesses = await descendantsOf(listenerPid);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await terminate(sessionProcesses);
      // Whatever a login started and detached (Xvnc, desktops, dbus, agents) carries our marker.
      await terminate(await processesWithEnv(marker, uids));
      await removeStaleXLocks(uids);
      await rm(dir, { recursive: true, force: true });
    })());

  return { host: '127.0.0.1', port, hostKeyFingerprint, users, logPath, envMarker: marker, stop };
}

/** X lock files and sockets a killed Xvnc of a test user left behind (their PID is dead). */
async function removeStaleXLocks(uids: number[]): Promise<void> {
  let names: string[];
  try {
    names = await readdir('/tmp');
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^\.X(\d+)-lock$/.exec(name);
    if (!m) continue;
    const lockPath = join('/tmp', name);
    try {
      const st = await stat(lockPath);
      if (!uids.includes(st.uid)) continue;
      const pid = Number((await readFile(lockPath, 'latin1')).trim());
      if (Number.isInteger(pid) && pid > 0 && isProcessAlive(pid)) continue;
      await unlink(lockPath);
      const socketPath = `/tmp/.X11-unix/X${m[1]}`;
      if (existsSync(socketPath) && uids.includes((await stat(socketPath)).uid)) await unlink(socketPath);
    } catch {
      // raced with its owner
    }
  }
}
