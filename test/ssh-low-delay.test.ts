// sshd turns Nagle's algorithm off on its side of a connection only at the connection's first session (an
// exec, a shell, a subsystem), never for forwards: a connection that only streams a desktop would send
// every small update late (bench/micro/ssh-low-delay.ts). The pool makes sure it is off before a stream.
// Read on sshd's own socket (test/helpers/peer-socket.ts), against a real OpenSSH sshd.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2, { type ClientChannel } from 'ssh2';
import { createLogger } from '../src/observability/logger.js';
import { SshPool, type SshTarget } from '../src/ssh/ssh-pool.js';
import { testPoolOptions } from './helpers/builders.js';
import { ownPortsTo, peerNoDelay } from './helpers/peer-socket.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';

let sshd: SshdFixture;
let dir: string;
let socketPath: string;
let echo: Server;

before(async () => {
  sshd = await startSshd({ users: 1 });
  dir = mkdtempSync(join(tmpdir(), 'clouddesk-lowdelay-'));
  chmodSync(dir, 0o755);
  socketPath = join(dir, 'echo.sock');
  echo = createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(socketPath, resolve));
  chmodSync(socketPath, 0o777);
});

after(async () => {
  await new Promise<void>((resolve) => echo.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
  await sshd.stop();
});

function target(): SshTarget {
  return {
    host: sshd.host,
    port: sshd.port,
    username: sshd.users[0]!.username,
    auth: { type: 'password', password: sshd.users[0]!.password },
    hostKeyFingerprint: null,
  };
}

async function roundTrip(channel: ClientChannel): Promise<void> {
  channel.write('ping');
  const [data] = (await once(channel, 'data')) as [Buffer];
  assert.equal(data.toString(), 'ping');
}

/** Runs `use`, then names the one connection to sshd it opened from this process. */
async function newConnection(use: () => Promise<void>): Promise<number> {
  const before = ownPortsTo(sshd.port);
  await use();
  const opened = [...ownPortsTo(sshd.port)].filter((p) => !before.has(p));
  assert.equal(opened.length, 1, 'one new connection to sshd');
  return opened[0]!;
}

void describe('SSH connections that only stream', () => {
  void it('sshd keeps Nagle on for a connection that has run no session (what the pool works around)', async () => {
    const user = sshd.users[0]!;
    const client = new ssh2.Client();
    try {
      const port = await newConnection(async () => {
        await new Promise<void>((resolve, reject) => {
          client.once('ready', resolve).once('error', reject);
          client.connect({
            host: sshd.host,
            port: sshd.port,
            username: user.username,
            password: user.password,
          });
        });
        const channel = await new Promise<ClientChannel>((resolve, reject) =>
          client.openssh_forwardOutStreamLocal(socketPath, (err, ch) => (err ? reject(err) : resolve(ch))),
        );
        await roundTrip(channel);
      });
      assert.equal(peerNoDelay(sshd.port, port), false);
      await new Promise<void>((resolve, reject) =>
        client.exec('true', (err, ch) => {
          if (err) return reject(err);
          ch.resume();
          ch.once('close', () => resolve());
        }),
      );
      assert.equal(peerNoDelay(sshd.port, port), true, 'an exec turned it off');
    } finally {
      client.end();
    }
  });

  for (const kind of ['unix', 'tcp'] as const) {
    void it(`the pool's first stream (${kind}) on a new connection finds TCP_NODELAY set on sshd's side`, async () => {
      const pool = new SshPool(testPoolOptions(createLogger({ level: 'warn', name: 'ssh-low-delay-test' })));
      try {
        let channels: ClientChannel[] = [];
        const port = await newConnection(async () => {
          // Two streams at once share the connection and its one no-op session.
          channels = await Promise.all(
            [0, 1].map(async () =>
              kind === 'unix'
                ? (await pool.openUnixStream(target(), socketPath)).channel
                : (await pool.openTcpStream(target(), '127.0.0.1', sshd.port)).channel,
            ),
          );
        });
        assert.equal(peerNoDelay(sshd.port, port), true);
        assert.deepEqual(pool.stats(), { connections: 1, channels: 2, handshakesInFlight: 0 });
        if (kind === 'unix') for (const c of channels) await roundTrip(c);
        for (const c of channels) c.close();
      } finally {
        await pool.close();
      }
    });
  }
});
