// The SSH pool against a real OpenSSH sshd (test/helpers/sshd.ts): logins, host key pinning, channel caps,
// idle close, shared handshakes, retries of dropped handshakes, dead connections — and against tiny hostile
// TCP servers on loopback for the failures a real sshd will not produce on demand.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ManualClock } from '../src/lib/clock.js';
import { createLogger } from '../src/observability/logger.js';
import { SshPool, fingerprintOf, type SshPoolOptions, type SshTarget } from '../src/ssh/ssh-pool.js';
import { freePort } from './helpers/free-port.js';
import { startSshd, type SshdFixture, type SshdTestUser } from './helpers/sshd.js';
import { rejectsWith } from './helpers/assertions.js';
import { testPoolOptions } from './helpers/builders.js';

let sshd: SshdFixture;
let user: SshdTestUser;
const logLines: string[] = [];
const logger = createLogger(
  { level: 'trace', name: 'ssh-pool-test' },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString('utf8'));
      cb();
    },
  }),
);
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  sshd = await startSshd({ users: 1 });
  user = sshd.users[0]!;
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await sshd?.stop();
});

function newPool(overrides: Partial<SshPoolOptions> = {}): SshPool {
  const pool = new SshPool(testPoolOptions(logger, { retryBaseDelayMs: 10, ...overrides }));
  cleanups.push(() => pool.close());
  return pool;
}

function passwordTarget(overrides: Partial<SshTarget> = {}): SshTarget {
  return {
    host: sshd.host,
    port: sshd.port,
    username: user.username,
    auth: { type: 'password', password: user.password },
    hostKeyFingerprint: null,
    ...overrides,
  };
}

/** A loopback TCP forwarder in front of sshd that counts connections and can drop, cut or freeze them. */
class CountingProxy {
  accepted = 0;
  /** Accepted connections to close at once before any byte (what sshd does past MaxStartups). */
  dropNext = 0;
  readonly onAccept: Array<() => void> = [];
  private readonly pairs = new Set<[Socket, Socket]>();
  private server: Server | null = null;
  port = 0;

  async start(targetPort: number): Promise<this> {
    this.server = createServer((client) => {
      this.accepted++;
      for (const f of this.onAccept) f();
      client.on('error', () => undefined);
      if (this.dropNext > 0) {
        this.dropNext--;
        client.destroy();
        return;
      }
      const upstream = createConnectionTo(targetPort);
      const pair: [Socket, Socket] = [client, upstream];
      this.pairs.add(pair);
      client.pipe(upstream).pipe(client);
      const forget = (): void => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', forget);
      upstream.on('close', forget);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    cleanups.push(() => this.stop());
    return this;
  }

  /** Cuts every forwarded connection (a dead network path). */
  cutAll(): void {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
  }

  /** Stops forwarding but keeps the sockets open (a silent peer: only keepalive notices). */
  freezeAll(): void {
    for (const [a, b] of this.pairs) {
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
    }
  }

  async stop(): Promise<void> {
    this.cutAll();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = null;
  }
}

function createConnectionTo(port: number): Socket {
  const s = createConnection({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  return s;
}

/** A fake "SSH server" for one test: `onConnection` decides how it misbehaves. */
async function hostileServer(onConnection: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as { port: number }).port;
}

void describe('SshPool: logins', () => {
  void it('logs in with a password, runs a command and reports the host key it saw', async () => {
    const pool = newPool();
    const result = await pool.exec(passwordTarget(), 'id -un; echo to-stderr >&2; exit 3');
    assert.equal(result.stdout.trim(), user.username);
    assert.equal(result.stderr.trim(), 'to-stderr');
    assert.equal(result.code, 3);
    assert.equal(result.signal, null);
    assert.equal(result.truncated, false);
    assert.equal(result.hostKeyFingerprint, sshd.hostKeyFingerprint);
  });

  void it('logs in with a private key and with a passphrase-protected key', async () => {
    const pool = newPool();
    const plain = await pool.exec(
      passwordTarget({ auth: { type: 'privateKey', privateKey: user.privateKey } }),
      'id -un',
    );
    assert.equal(plain.stdout.trim(), user.username);
    const encrypted = await pool.exec(
      passwordTarget({
        auth: { type: 'privateKey', privateKey: user.encryptedPrivateKey, passphrase: user.passphrase },
      }),
      'id -un',
    );
    assert.equal(encrypted.stdout.trim(), user.username);
  });

  void it('writes stdin to the command and closes it', async () => {
    const pool = newPool();
    const result = await pool.exec(passwordTarget(), 'cat; echo " done"', { stdin: 'hello from stdin' });
    assert.equal(result.stdout, 'hello from stdin done\n');
  });

  void it('refuses a wrong password with SSH_AUTH_FAILED, without retrying', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool();
    await rejectsWith(
      pool.exec(
        passwordTarget({ port: proxy.port, auth: { type: 'password', password: 'wrong-password' } }),
        'true',
      ),
      'SSH_AUTH_FAILED',
    );
    assert.equal(proxy.accepted, 1);
    assert.equal(pool.stats().connections, 0);
  });

  void it('rejects an unreadable key or a wrong passphrase with INVALID_PRIVATE_KEY before dialing', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool();
    const at = { port: proxy.port };
    await rejectsWith(
      pool.exec(passwordTarget({ ...at, auth: { type: 'privateKey', privateKey: 'not a key' } }), 'true'),
      'INVALID_PRIVATE_KEY',
    );
    await rejectsWith(
      pool.exec(
        passwordTarget({
          ...at,
          auth: { type: 'privateKey', privateKey: user.encryptedPrivateKey, passphrase: 'wrong passphrase' },
        }),
        'true',
      ),
      'INVALID_PRIVATE_KEY',
    );
    await rejectsWith(
      pool.exec(
        passwordTarget({ ...at, auth: { type: 'privateKey', privateKey: user.encryptedPrivateKey } }),
        'true',
      ),
      'INVALID_PRIVATE_KEY',
    );
    assert.equal(proxy.accepted, 0);
  });

  void it('never writes a password, key or passphrase to the log', async () => {
    const pool = newPool();
    await pool.exec(passwordTarget(), 'true');
    await pool.exec(
      passwordTarget({
        auth: { type: 'privateKey', privateKey: user.encryptedPrivateKey, passphrase: user.passphrase },
      }),
      'true',
    );
    await rejectsWith(
      pool.exec(passwordTarget({ auth: { type: 'password', password: 'wrong-Pa55word-xyz' } }), 'true'),
      'SSH_AUTH_FAILED',
    );
    const text = logLines.join('');
    assert.ok(text.length > 0, 'the pool logs something');
    const keyBody = user.privateKey.split('\n')[1]!;
    for (const secret of [user.password, user.passphrase, 'wrong-Pa55word-xyz', keyBody]) {
      assert.ok(!text.includes(secret), 'a secret reached the log');
    }
  });
});

void describe('SshPool: host keys', () => {
  void it('computes fingerprints exactly as ssh-keygen prints them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'clouddesk-fp-'));
    try {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'k')]);
      const blob = Buffer.from(readFileSync(join(dir, 'k.pub'), 'utf8').split(' ')[1]!, 'base64');
      const printed = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'k.pub')], {
        encoding: 'utf8',
      }).split(' ')[1];
      assert.equal(fingerprintOf(blob), printed);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('accepts the pinned host key and refuses another with HOST_KEY_MISMATCH (never retried)', async () => {
    const pool = newPool();
    const ok = await pool.exec(passwordTarget({ hostKeyFingerprint: sshd.hostKeyFingerprint }), 'true');
    assert.equal(ok.code, 0);

    const proxy = await new CountingProxy().start(sshd.port);
    const pinned = 'SHA256:' + 'A'.repeat(43);
    const err = await rejectsWith(
      pool.exec(passwordTarget({ port: proxy.port, hostKeyFingerprint: pinned }), 'true'),
      'HOST_KEY_MISMATCH',
    );
    assert.deepEqual(err.details, { expected: pinned, actual: sshd.hostKeyFingerprint });
    assert.equal(proxy.accepted, 1);
  });

  void it('after pinning on first use the same connection is reused; a wrong pin on it is refused', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool();
    const first = await pool.exec(passwordTarget({ port: proxy.port, hostKeyFingerprint: null }), 'true');
    const pinned = await pool.exec(
      passwordTarget({ port: proxy.port, hostKeyFingerprint: first.hostKeyFingerprint }),
      'true',
    );
    assert.equal(pinned.code, 0);
    assert.equal(proxy.accepted, 1);
    const wrong = 'SHA256:' + 'B'.repeat(43);
    await rejectsWith(
      pool.exec(passwordTarget({ port: proxy.port, hostKeyFingerprint: wrong }), 'true'),
      'HOST_KEY_MISMATCH',
    );
  });
});

void describe('SshPool: sharing and limits', () => {
  void it('shares one connection (and one handshake) between concurrent callers', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool();
    const target = passwordTarget({ port: proxy.port });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => pool.exec(target, `echo ${i}`)));
    assert.deepEqual(
      results.map((r) => r.stdout.trim()),
      ['0', '1', '2', '3', '4', '5', '6', '7'],
    );
    assert.equal(proxy.accepted, 1);
    assert.equal(pool.stats().connections, 1);
    assert.equal(pool.stats().channels, 0);
  });

  void it('opens another connection when one carries maxChannelsPerConnection channels, and reuses freed slots', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool({ maxChannelsPerConnection: 2 });
    const target = passwordTarget({ port: proxy.port });
    // direct-tcpip channels to sshd's own port stay open until we close them.
    const streams = [];
    for (let i = 0; i < 3; i++) streams.push(await pool.openTcpStream(target, '127.0.0.1', sshd.port));
    assert.deepEqual(pool.stats(), { connections: 2, channels: 3, handshakesInFlight: 0 });
    assert.equal(proxy.accepted, 2);

    // Nobody reads these channels: closing one must still free its slot.
    const first = streams[0]!.channel;
    const firstClosed = once(first, 'close');
    first.close();
    await firstClosed;
    assert.equal(pool.stats().channels, 2);
    streams.push(await pool.openTcpStream(target, '127.0.0.1', sshd.port));
    assert.deepEqual(pool.stats(), { connections: 2, channels: 3, handshakesInFlight: 0 });
    assert.equal(proxy.accepted, 2, 'the freed slot was reused');
    for (const s of streams.slice(1)) s.channel.close();
  });

  void it('keeps at most maxHandshakesPerTarget handshakes in flight; the others queue and succeed', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool({ maxHandshakesPerTarget: 2 });
    const seen: number[] = [];
    proxy.onAccept.push(() => seen.push(pool.stats().handshakesInFlight));
    const keyAuth = { type: 'privateKey' as const, privateKey: user.privateKey };
    const encAuth = {
      type: 'privateKey' as const,
      privateKey: user.encryptedPrivateKey,
      passphrase: user.passphrase,
    };
    // Three login identities to one host:port, each used unpinned and pinned (a pin learnt on first
    // use does not need a new connection): three connections.
    const targets = [null, sshd.hostKeyFingerprint].flatMap((fp) =>
      [passwordTarget().auth, keyAuth, encAuth].map((auth) =>
        passwordTarget({ port: proxy.port, auth, hostKeyFingerprint: fp }),
      ),
    );
    const results = await Promise.all(targets.map((t) => pool.exec(t, 'echo ok')));
    assert.ok(results.every((r) => r.stdout === 'ok\n'));
    assert.equal(proxy.accepted, 3);
    assert.equal(pool.stats().connections, 3);
    assert.ok(Math.max(...seen) <= 2, `handshakes in flight went to ${Math.max(...seen)}`);
  });

  void it('refuses callers past the bounded handshake queue', async () => {
    const silent = await hostileServer(() => undefined);
    const pool = newPool({ maxHandshakesPerTarget: 1, maxQueuedPerTarget: 1, readyTimeoutMs: 2_000 });
    const target = (password: string): SshTarget =>
      passwordTarget({ port: silent, auth: { type: 'password', password } });
    const first = pool.exec(target('a'), 'true');
    const second = pool.exec(target('b'), 'true');
    const third = rejectsWith(pool.exec(target('c'), 'true'), 'SSH_TIMEOUT');
    await third;
    assert.equal(pool.stats().handshakesInFlight, 1);
    await Promise.all([rejectsWith(first, 'SSH_TIMEOUT'), rejectsWith(second, 'SSH_TIMEOUT')]);
  });

  void it('retries a handshake the server dropped, a bounded number of times', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool({ handshakeRetries: 3 });
    proxy.dropNext = 2;
    const result = await pool.exec(passwordTarget({ port: proxy.port }), 'echo ok');
    assert.equal(result.stdout, 'ok\n');
    assert.equal(proxy.accepted, 3);
    // The attempt that got through is the pooled connection: the next command shares it.
    assert.equal((await pool.exec(passwordTarget({ port: proxy.port }), 'echo again')).stdout, 'again\n');
    assert.equal(proxy.accepted, 3);

    const stingy = newPool({ handshakeRetries: 1 });
    proxy.accepted = 0;
    proxy.dropNext = 5;
    await rejectsWith(
      stingy.exec(passwordTarget({ port: proxy.port, auth: { type: 'password', password: 'x' } }), 'true'),
      'SSH_PROTOCOL_ERROR',
    );
    assert.equal(proxy.accepted, 2);
  });
});

void describe('SshPool: connection lifecycle', () => {
  void it('closes a connection that has had no channel for idleCloseMs (injected clock)', async () => {
    const clock = new ManualClock();
    const pool = newPool({ idleCloseMs: 60_000, clock });
    await pool.exec(passwordTarget(), 'true');
    assert.equal(pool.stats().connections, 1);
    clock.advance(59_999);
    assert.equal(pool.closeIdle(), 0);
    assert.equal(pool.stats().connections, 1);
    clock.advance(1);
    assert.equal(pool.closeIdle(), 1);
    assert.equal(pool.stats().connections, 0);
    // The next call dials anew.
    assert.equal((await pool.exec(passwordTarget(), 'echo again')).stdout, 'again\n');
  });

  void it('does not close a connection that still carries a channel', async () => {
    const clock = new ManualClock();
    const pool = newPool({ idleCloseMs: 1_000, clock });
    const { channel } = await pool.openTcpStream(passwordTarget(), '127.0.0.1', sshd.port);
    clock.advance(10_000);
    assert.equal(pool.closeIdle(), 0);
    const closed = once(channel, 'close');
    channel.close();
    await closed;
    clock.advance(999);
    assert.equal(pool.closeIdle(), 0);
    clock.advance(1);
    assert.equal(pool.closeIdle(), 1);
  });

  void it('drops a connection whose network path died, and dials anew on the next call', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool();
    const target = passwordTarget({ port: proxy.port });
    await pool.exec(target, 'true');
    const closed = once(pool, 'connection-closed');
    proxy.cutAll();
    await closed;
    assert.equal(pool.stats().connections, 0);
    assert.equal((await pool.exec(target, 'echo back')).stdout, 'back\n');
    assert.equal(proxy.accepted, 2);
  });

  void it('notices a silent peer by keepalive and drops the connection', async () => {
    const proxy = await new CountingProxy().start(sshd.port);
    const pool = newPool({ keepaliveIntervalMs: 200, keepaliveCountMax: 2 });
    await pool.exec(passwordTarget({ port: proxy.port }), 'true');
    const closed = once(pool, 'connection-closed');
    proxy.freezeAll();
    await closed;
    assert.equal(pool.stats().connections, 0);
  });

  void it('close() ends every connection and later calls answer SHUTTING_DOWN', async () => {
    const pool = newPool();
    await pool.exec(passwordTarget(), 'true');
    await pool.close();
    assert.equal(pool.stats().connections, 0);
    await rejectsWith(pool.exec(passwordTarget(), 'true'), 'SHUTTING_DOWN');
  });
});

void describe('SshPool: exec bounds', () => {
  void it('bounds collected output at maxOutputBytes and says so', async () => {
    const pool = newPool();
    const result = await pool.exec(passwordTarget(), "head -c 1000000 /dev/zero | tr '\\0' a", {
      maxOutputBytes: 1000,
    });
    assert.equal(result.stdout.length, 1000);
    assert.equal(result.truncated, true);
  });

  void it('gives up on a command that runs past its timeout with SSH_TIMEOUT', async () => {
    const pool = newPool();
    await rejectsWith(pool.exec(passwordTarget(), 'sleep 60', { timeoutMs: 300 }), 'SSH_TIMEOUT');
    assert.equal(pool.stats().connections, 1, 'the connection itself stays usable');
    assert.equal((await pool.exec(passwordTarget(), 'echo fine')).stdout, 'fine\n');
  });
});

void describe('SshPool: streams', () => {
  void it('forwards to a Unix socket on the instance (streamlocal)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clouddesk-unix-'));
    chmodSync(dir, 0o755);
    const socketPath = join(dir, 'echo.sock');
    const server = createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    chmodSync(socketPath, 0o777);
    cleanups.push(
      () =>
        new Promise<void>((resolve) =>
          server.close(() => {
            rmSync(dir, { recursive: true, force: true });
            resolve();
          }),
        ),
    );
    const pool = newPool();
    const { channel, hostKeyFingerprint } = await pool.openUnixStream(passwordTarget(), socketPath);
    assert.equal(hostKeyFingerprint, sshd.hostKeyFingerprint);
    channel.write('ping');
    const [data] = (await once(channel, 'data')) as [Buffer];
    assert.equal(data.toString(), 'ping');
    channel.close();
    await rejectsWith(pool.openUnixStream(passwordTarget(), join(dir, 'missing.sock')), 'SSH_CHANNEL_FAILED');
  });

  void it('forwards to a TCP port as seen from the instance (direct-tcpip)', async () => {
    const server = createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const pool = newPool();
    const port = (server.address() as { port: number }).port;
    const { channel } = await pool.openTcpStream(passwordTarget(), '127.0.0.1', port);
    channel.write('pong');
    const [data] = (await once(channel, 'data')) as [Buffer];
    assert.equal(data.toString(), 'pong');
    channel.close();
    await rejectsWith(
      pool.openTcpStream(passwordTarget(), '127.0.0.1', await freePort()),
      'SSH_CHANNEL_FAILED',
    );
  });

  // What a viewer that stops reading costs the gateway: the instance keeps sending until the SSH window is
  // used up. With ssh2's own 2 MiB window (topped up while the paused channel buffers below 2 MiB) that is
  // megabytes; with the pool's stream window it is at most the window plus the channel's buffer.
  // A stream read under a viewer's budget gets a window of ~¼ s of it (here 2 Mbit/s: the 64 KiB floor)
  // and a quarter of that as its buffer, so little is queued behind a budget pause.
  for (const [label, windowBytes, stream, bound] of [
    ['a 256 KiB stream window', 256 * 1024, {}, 256 * 1024 + 64 * 1024],
    ["ssh2's default (stream window 0)", 0, {}, null],
    ['a 2 Mbit/s budget under the 512 KiB default', 512 * 1024, { budgetKbps: 2000 }, 64 * 1024 + 16 * 1024],
  ] as const) {
    void it(`a paused stream holds a bounded amount with ${label}, and loses nothing when resumed`, async () => {
      const total = 8 * 1024 * 1024;
      const payload = Buffer.alloc(total);
      for (let i = 0; i < total; i += 4) payload.writeUInt32BE(i, i);
      const server = createServer((s) => s.end(payload));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
      const pool = newPool({ streamWindowBytes: windowBytes });
      const port = (server.address() as { port: number }).port;
      const { channel } = await pool.openTcpStream(passwordTarget(), '127.0.0.1', port, stream);
      channel.pause();
      // Nothing signals "the instance stopped sending"; wait until the buffered amount has not moved for a
      // while (bounded), then read it.
      let last = -1;
      for (let still = 0, polls = 0; still < 5 && polls < 200; polls++) {
        await new Promise((r) => setTimeout(r, 50));
        still = channel.readableLength === last ? still + 1 : 0;
        last = channel.readableLength;
      }
      assert.ok(last > 0, 'the instance sent something');
      if (bound === null) assert.ok(last > 2 * 1024 * 1024, `ssh2's default held ${last} bytes`);
      else assert.ok(last <= bound, `held ${last} bytes, bound ${bound}`);
      const chunks: Buffer[] = [];
      channel.on('data', (c: Buffer) => chunks.push(c));
      channel.resume();
      await once(channel, 'end');
      assert.ok(Buffer.concat(chunks).equals(payload), 'every byte arrived, in order');
      channel.close();
    });
  }
});

void describe('SshPool: unreachable and hostile servers', () => {
  const quick = { readyTimeoutMs: 1_500, handshakeRetries: 1 };

  void it('nothing listening → SSH_UNREACHABLE', async () => {
    const pool = newPool(quick);
    await rejectsWith(pool.exec(passwordTarget({ port: await freePort() }), 'true'), 'SSH_UNREACHABLE');
  });

  void it('a server that is not SSH (HTTP answer) → SSH_PROTOCOL_ERROR', async () => {
    const port = await hostileServer((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    await rejectsWith(newPool(quick).exec(passwordTarget({ port }), 'true'), 'SSH_PROTOCOL_ERROR');
  });

  void it('a wrong SSH version banner → SSH_PROTOCOL_ERROR', async () => {
    const port = await hostileServer((s) => s.write('SSH-1.5-AncientServer\r\n'));
    await rejectsWith(newPool(quick).exec(passwordTarget({ port }), 'true'), 'SSH_PROTOCOL_ERROR');
  });

  void it('an endless banner line → SSH_PROTOCOL_ERROR, not unbounded memory', async () => {
    const port = await hostileServer((s) => s.write(Buffer.alloc(256 * 1024, 0x41)));
    await rejectsWith(newPool(quick).exec(passwordTarget({ port }), 'true'), 'SSH_PROTOCOL_ERROR');
  });

  void it('garbage after a valid banner → SSH_PROTOCOL_ERROR', async () => {
    const port = await hostileServer((s) => {
      s.write('SSH-2.0-Evil\r\n');
      s.write(Buffer.alloc(64 * 1024, 0xff));
    });
    await rejectsWith(newPool(quick).exec(passwordTarget({ port }), 'true'), 'SSH_PROTOCOL_ERROR');
  });

  void it('accepts then closes → SSH_PROTOCOL_ERROR after bounded retries', async () => {
    let accepted = 0;
    const port = await hostileServer((s) => {
      accepted++;
      s.destroy();
    });
    await rejectsWith(newPool(quick).exec(passwordTarget({ port }), 'true'), 'SSH_PROTOCOL_ERROR');
    assert.equal(accepted, 2);
  });

  void it('never answers → SSH_TIMEOUT within readyTimeoutMs', async () => {
    const port = await hostileServer(() => undefined);
    await rejectsWith(newPool(quick).exec(passwordTarget({ port }), 'true'), 'SSH_TIMEOUT');
  });
});
