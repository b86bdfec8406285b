// The SSH pool: one SSH connection per login identity per process, shared by every channel (exec,
// direct-tcpip, streamlocal) to it. It owns dialing (bounded handshakes per instance, retries of dropped
// handshakes), host key checking, the channel cap per connection, keepalive and closing idle connections.
//
// Numbers behind the defaults (docs/DESIGN.md): OpenSSH sshd is one thread per connection and collapsed at
// ~700 channels on one connection, hence the channel cap; the default MaxStartups 10:30:100 dropped 91 of 200
// connections in a burst of 50 concurrent handshakes, hence the handshake limit and retries; without
// TCP_NODELAY an SSH hop showed p90 44 ms round trips (Nagle + delayed ACK).
import { createHash, randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Socket as NetSocket } from 'node:net';
import ssh2 from 'ssh2';
import type {
  Client as Ssh2Client,
  ClientChannel,
  ConnectConfig,
  SFTPWrapper,
  ParsedKey,
  PasswordAuthMethod,
  PublicKeyAuthMethod,
} from 'ssh2';
import { AppError } from '../errors/errors.js';
import { systemClock, type Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import { fingerprintOf, sameFingerprint } from './host-key.js';
import {
  HandshakeFailure,
  channelFailed,
  classifyHandshakeError,
  closedBeforeReady,
  isConnectionLost,
} from './ssh-errors.js';
import type {
  ExecOptions,
  ExecResult,
  PoolStats,
  SshAuth,
  SshPoolOptions,
  SshTarget,
  StreamOptions,
} from './ssh.types.js';
import { openWithStreamWindow, streamWindowFor } from './stream-window.js';
import { coalesceWrites } from './coalesce-writes.js';

const { Client, utils } = ssh2;

export type {
  SshAuth,
  SshTarget,
  SshPoolOptions,
  ExecOptions,
  ExecResult,
  PoolStats,
  StreamOptions,
} from './ssh.types.js';
export { fingerprintOf } from './host-key.js';

interface Connection {
  readonly id: number;
  readonly identity: string;
  readonly targetKey: string;
  readonly host: string;
  readonly port: number;
  client: Ssh2Client | null;
  state: 'dialing' | 'ready' | 'closed';
  /** Settles when the handshake is done; rejects with an AppError. */
  ready: Promise<void>;
  /** Channels open or being opened on this connection. */
  slots: number;
  idleSince: number | null;
  fingerprint: string | null;
  /** Settles once sshd has turned Nagle off on its side (see `lowDelay`); null until asked. */
  lowDelay: Promise<void> | null;
}

interface TargetState {
  handshakes: number;
  waiters: Set<() => void>;
}

/**
 * A credential ready for ssh2. A private key is parsed (and decrypted) once per dial and handed over parsed:
 * decrypting an OpenSSH key runs bcrypt synchronously, and ssh2 would otherwise do it a second time.
 */
type Credential = { password: string } | { privateKey: ParsedKey };

const DEFAULT_MAX_OUTPUT = 1024 * 1024;
const DEFAULT_STREAM_WINDOW = 512 * 1024;
const DEFAULT_STREAM_BUFFER = 64 * 1024;
const CLOSE_GRACE_MS = 2_000;
/** How long a stream waits for the no-op session that makes sshd set TCP_NODELAY (see `lowDelay`). */
const LOW_DELAY_WAIT_MS = 5_000;

export interface SshPoolEvents {
  /** A connection finished its handshake and login. */
  'connection-ready': [info: { id: number; host: string; port: number; fingerprint: string }];
  /** A pooled connection is gone (idle close, peer closed, keepalive timeout, pool closed). */
  'connection-closed': [info: { id: number; host: string; port: number }];
}

export class SshPool extends EventEmitter<SshPoolEvents> {
  private readonly opts: Required<Omit<SshPoolOptions, 'clock' | 'logger'>>;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly byIdentity = new Map<string, Connection[]>();
  private readonly targets = new Map<string, TargetState>();
  /** Every ssh2 client not yet closed, dialing or ready: what `close()` must end. */
  private readonly liveClients = new Set<Ssh2Client>();
  private readonly sweepTimer: NodeJS.Timeout;
  private nextId = 1;
  private closed = false;
  private warnedStreamWindow = false;

  constructor(options: SshPoolOptions) {
    super();
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    this.opts = {
      maxChannelsPerConnection: options.maxChannelsPerConnection,
      keepaliveIntervalMs: options.keepaliveIntervalMs,
      keepaliveCountMax: options.keepaliveCountMax,
      maxHandshakesPerTarget: options.maxHandshakesPerTarget,
      idleCloseMs: options.idleCloseMs,
      readyTimeoutMs: options.readyTimeoutMs,
      execTimeoutMs: options.execTimeoutMs,
      handshakeRetries: options.handshakeRetries ?? 3,
      retryBaseDelayMs: options.retryBaseDelayMs ?? 250,
      maxQueuedPerTarget: options.maxQueuedPerTarget ?? 256,
      maxOutputBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT,
      streamWindowBytes: options.streamWindowBytes ?? DEFAULT_STREAM_WINDOW,
      streamBufferBytes: options.streamBufferBytes ?? DEFAULT_STREAM_BUFFER,
    };
    const sweepEvery = Math.max(100, Math.min(Math.floor(this.opts.idleCloseMs / 2), 10_000));
    this.sweepTimer = setInterval(() => this.closeIdle(), sweepEvery);
    this.sweepTimer.unref();
  }

  /** Runs a command; stdin (optional) is written then ended. Rejects with AppError on SSH problems/timeouts. */
  async exec(target: SshTarget, command: string, options: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? this.opts.execTimeoutMs;
    const maxOutput = options.maxOutputBytes ?? this.opts.maxOutputBytes;
    const { channel, conn } = await this.openChannel(target, (client, cb) => client.exec(command, cb));
    conn.lowDelay ??= Promise.resolve();
    const fingerprint = conn.fingerprint ?? '';
    return new Promise<ExecResult>((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outBytes = 0;
      let errBytes = 0;
      let truncated = false;
      let code: number | null = null;
      let signal: string | null = null;
      let exited = false;
      let settled = false;
      const timer = setTimeout(() => {
        finish(
          new AppError('SSH_TIMEOUT', { message: 'The command on the instance did not finish in time' }),
        );
        channel.close();
      }, timeoutMs);
      const finish = (error: AppError | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else
          resolve({
            code,
            signal,
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(err).toString('utf8'),
            truncated,
            hostKeyFingerprint: fingerprint,
          });
      };
      const collect = (chunks: Buffer[], used: number, chunk: Buffer): number => {
        if (truncated) return used;
        const room = maxOutput - used;
        if (chunk.length > room) {
          chunks.push(chunk.subarray(0, room));
          truncated = true;
          // Stop the flow: the rest would only be dropped, and a runaway command should not cost more.
          channel.close();
          return maxOutput;
        }
        chunks.push(chunk);
        return used + chunk.length;
      };
      channel.on('data', (chunk: Buffer) => {
        outBytes = collect(out, outBytes, chunk);
      });
      channel.stderr.on('data', (chunk: Buffer) => {
        errBytes = collect(err, errBytes, chunk);
      });
      channel.on('exit', (exitCode: number | null, exitSignal?: string) => {
        exited = true;
        code = typeof exitCode === 'number' ? exitCode : null;
        signal = typeof exitSignal === 'string' ? exitSignal : null;
      });
      channel.on('close', () => {
        if (!exited && !truncated && conn.state === 'closed') {
          finish(
            new AppError('SSH_UNREACHABLE', { message: 'The SSH connection was lost during the command' }),
          );
        } else {
          finish(null);
        }
      });
      if (options.stdin !== undefined) channel.end(options.stdin);
      else channel.end();
    });
  }

  /** OpenSSH streamlocal forward (ssh2 `openssh_forwardOutStreamLocal`) to a Unix socket on the instance. */
  async openUnixStream(
    target: SshTarget,
    socketPath: string,
    stream: StreamOptions = {},
  ): Promise<{ channel: ClientChannel; hostKeyFingerprint: string }> {
    const { channel, conn } = await this.openChannel(
      target,
      (client, cb) =>
        this.openStream(client, stream, cb, (opened) =>
          client.openssh_forwardOutStreamLocal(socketPath, opened),
        ),
      true,
    );
    return { channel, hostKeyFingerprint: conn.fingerprint ?? '' };
  }

  /** direct-tcpip (ssh2 `forwardOut`) to host:port as seen from the instance. */
  async openTcpStream(
    target: SshTarget,
    host: string,
    port: number,
    stream: StreamOptions = {},
  ): Promise<{ channel: ClientChannel; hostKeyFingerprint: string }> {
    const { channel, conn } = await this.openChannel(
      target,
      (client, cb) =>
        this.openStream(client, stream, cb, (opened) =>
          client.forwardOut('127.0.0.1', 0, host, port, opened),
        ),
      true,
    );
    return { channel, hostKeyFingerprint: conn.fingerprint ?? '' };
  }

  /**
   * An SFTP session (the `sftp` subsystem, never a shell) on the pooled connection: it holds a channel slot
   * until it closes (`sftp.end()`). An instance without the subsystem answers SFTP_UNAVAILABLE.
   */
  async openSftp(target: SshTarget): Promise<{ sftp: SFTPWrapper; hostKeyFingerprint: string }> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.acquire(target);
      try {
        const sftp = await new Promise<SFTPWrapper>((resolve, reject) => {
          try {
            conn.client!.sftp((err, s) => (err ? reject(err) : resolve(s)));
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        });
        conn.lowDelay ??= Promise.resolve();
        let released = false;
        sftp.once('close', () => {
          if (released) return;
          released = true;
          this.release(conn);
        });
        sftp.on('error', (e: Error) =>
          this.logger.debug({ connection: conn.id, err: e.message }, 'SFTP session error'),
        );
        return { sftp, hostKeyFingerprint: conn.fingerprint ?? '' };
      } catch (err) {
        this.release(conn);
        if (isConnectionLost(err) && attempt === 0 && !this.closed) {
          this.drop(conn);
          continue;
        }
        // The subsystem was refused, or the server ended it at once (a missing sftp-server binary).
        const message = err instanceof Error ? err.message : '';
        if (/subsystem|SFTP session/.test(message)) throw new AppError('SFTP_UNAVAILABLE', { cause: err });
        throw channelFailed(err);
      }
    }
  }

  /**
   * Opens a byte-stream channel with the configured receive window, or the smaller one a budgeted
   * reader gets (see stream-window.ts).
   */
  private openStream(
    client: Ssh2Client,
    stream: StreamOptions,
    cb: (err: Error | undefined, channel: ClientChannel) => void,
    open: (cb: (err: Error | undefined, channel: ClientChannel) => void) => void,
  ): void {
    const { windowBytes: window, bufferBytes: buffer } = streamWindowFor(stream.budgetKbps ?? 0, {
      windowBytes: this.opts.streamWindowBytes,
      bufferBytes: this.opts.streamBufferBytes,
    });
    if (window > 0 && openWithStreamWindow(client, window, buffer, open, cb)) return;
    if (window > 0 && !this.warnedStreamWindow) {
      this.warnedStreamWindow = true;
      this.logger.warn("this ssh2 version cannot take a smaller stream window: using ssh2's 2 MiB");
    }
    open(cb);
  }

  stats(): PoolStats {
    let connections = 0;
    let channels = 0;
    for (const list of this.byIdentity.values()) {
      for (const c of list) {
        if (c.state === 'closed') continue;
        connections++;
        channels += c.slots;
      }
    }
    let handshakesInFlight = 0;
    for (const t of this.targets.values()) handshakesInFlight += t.handshakes;
    return { connections, channels, handshakesInFlight };
  }

  /** Closes connections that have had no channel for `idleCloseMs`. Runs on a timer; returns how many. */
  closeIdle(): number {
    const now = this.clock.now();
    let count = 0;
    for (const list of this.byIdentity.values()) {
      for (const c of [...list]) {
        if (
          c.state === 'ready' &&
          c.slots === 0 &&
          c.idleSince !== null &&
          now - c.idleSince >= this.opts.idleCloseMs
        ) {
          this.logger.debug({ connection: c.id }, 'closing idle SSH connection');
          this.drop(c);
          c.client?.end();
          count++;
        }
      }
    }
    return count;
  }

  /** Ends every connection; calls after this reject with SHUTTING_DOWN. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const t of this.targets.values()) for (const wake of t.waiters) wake();
    for (const list of [...this.byIdentity.values()]) for (const c of [...list]) this.drop(c);
    await Promise.all([...this.liveClients].map((client) => endClient(client)));
  }

  // ---- channels ----

  /**
   * Takes a channel slot on a connection for `target` and opens a channel with `open`. A connection that
   * turns out to be dead (closed under us between the pool's bookkeeping and the request) is dropped and
   * the channel tried once more on a fresh connection. A byte stream (`stream`) first makes sure sshd
   * sends small packets at once on that connection (`lowDelay`).
   */
  private async openChannel(
    target: SshTarget,
    open: (client: Ssh2Client, cb: (err: Error | undefined, channel: ClientChannel) => void) => void,
    stream = false,
  ): Promise<{ channel: ClientChannel; conn: Connection }> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.acquire(target);
      try {
        if (stream) await this.lowDelay(conn);
        const channel = await new Promise<ClientChannel>((resolve, reject) => {
          try {
            open(conn.client!, (err, ch) => (err ? reject(err) : resolve(ch)));
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)));
          }
        });
        // ssh2 emits 'close' only after the readable side has been read to its end, so a caller that
        // closes a channel and stops reading would hold its slot forever: closing drains the rest.
        const closeChannel = channel.close.bind(channel);
        channel.close = (): ClientChannel => {
          closeChannel();
          channel.resume();
          channel.stderr.resume();
          return channel;
        };
        let released = false;
        channel.once('close', () => {
          if (released) return;
          released = true;
          this.release(conn);
        });
        // A channel error must never crash the process; whoever uses the channel sees it as well.
        channel.on('error', (e: Error) =>
          this.logger.debug({ connection: conn.id, err: e.message }, 'SSH channel error'),
        );
        return { channel, conn };
      } catch (err) {
        this.release(conn);
        if (isConnectionLost(err) && attempt === 0 && !this.closed) {
          this.drop(conn);
          continue;
        }
        throw channelFailed(err);
      }
    }
  }

  /**
   * OpenSSH's sshd turns Nagle's algorithm off on its side of a connection only when the connection runs
   * its first session (`ssh_packet_set_interactive`, at an exec, a shell or a subsystem); forwards never
   * do. A connection that carried only desktop streams — a viewer served by a gateway process other than
   * the one that started its desktop, or one dialed anew after the idle close — kept Nagle there, and
   * every small update sent behind streamed data waited for the gateway's delayed ACK: measured, a round
   * trip beside a stream took 18.3 ms (p50) against 0.24 ms once a session had run (docs/benchmarks.md
   * §12). So before the first stream on a connection that has run no session, a no-op command runs;
   * sshd answers its request after setting TCP_NODELAY, and the stream waits for that answer only. The
   * command's session is not counted against the channel cap: it ends by itself at once.
   */
  private lowDelay(conn: Connection): Promise<void> {
    if (conn.lowDelay) return conn.lowDelay;
    const client = conn.client;
    if (!client) return Promise.resolve();
    conn.lowDelay = new Promise<void>((resolve) => {
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        // Streams still work with Nagle on; they are only slower. Never retried on this connection.
        if (err)
          this.logger.debug(
            { connection: conn.id, err: err.message },
            'no-op session for TCP_NODELAY failed',
          );
        resolve();
      };
      const timer = setTimeout(() => finish(new Error('no answer in time')), LOW_DELAY_WAIT_MS);
      timer.unref();
      try {
        client.exec('true', (err, channel) => {
          if (err) return finish(err);
          channel.on('error', () => undefined);
          channel.resume();
          channel.stderr.resume();
          channel.end();
          finish();
        });
      } catch (e) {
        finish(e instanceof Error ? e : new Error(String(e)));
      }
    });
    return conn.lowDelay;
  }

  private release(conn: Connection): void {
    conn.slots = Math.max(0, conn.slots - 1);
    if (conn.slots === 0) conn.idleSince = this.clock.now();
  }

  // ---- connections ----

  private async acquire(target: SshTarget): Promise<Connection> {
    const identity = identityOf(target);
    const targetKey = `${target.host}\0${target.port}`;
    for (;;) {
      if (this.closed) throw new AppError('SHUTTING_DOWN');
      const open = (this.byIdentity.get(identity) ?? []).find(
        (c) => c.state !== 'closed' && c.slots < this.opts.maxChannelsPerConnection,
      );
      if (open) return this.take(open, target.hostKeyFingerprint);
      const t = this.targetState(targetKey);
      if (t.handshakes < this.opts.maxHandshakesPerTarget) {
        return this.take(this.dial(target, identity, targetKey, t));
      }
      await this.waitForHandshakeSlot(t);
    }
  }

  /**
   * Takes a slot once the connection is up. A connection shared across a host-key pin (dialed before
   * the key was pinned, on first use) is only handed out if the key it saw is the pinned one.
   */
  private async take(conn: Connection, pinned: string | null = null): Promise<Connection> {
    conn.slots++;
    conn.idleSince = null;
    try {
      await conn.ready;
    } catch (e) {
      conn.slots--;
      throw e;
    }
    if (conn.state === 'closed') {
      conn.slots--;
      throw new AppError('SSH_UNREACHABLE', { message: 'The SSH connection closed' });
    }
    if (pinned !== null && !sameFingerprint(conn.fingerprint ?? '', pinned)) {
      this.release(conn);
      throw new AppError('HOST_KEY_MISMATCH', { details: { expected: pinned, actual: conn.fingerprint } });
    }
    return conn;
  }

  private targetState(key: string): TargetState {
    let t = this.targets.get(key);
    if (!t) {
      t = { handshakes: 0, waiters: new Set() };
      this.targets.set(key, t);
    }
    return t;
  }

  private waitForHandshakeSlot(t: TargetState): Promise<void> {
    if (t.waiters.size >= this.opts.maxQueuedPerTarget) {
      return Promise.reject(
        new AppError('SSH_TIMEOUT', {
          message: 'Too many SSH logins to this instance are waiting; retry later',
        }),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        t.waiters.delete(wake);
        reject(
          new AppError('SSH_TIMEOUT', { message: 'Waited too long for an SSH login slot to this instance' }),
        );
      }, this.opts.readyTimeoutMs);
      const wake = (): void => {
        clearTimeout(timer);
        t.waiters.delete(wake);
        resolve();
      };
      t.waiters.add(wake);
    });
  }

  private dial(target: SshTarget, identity: string, targetKey: string, t: TargetState): Connection {
    const conn: Connection = {
      id: this.nextId++,
      identity,
      targetKey,
      host: target.host,
      port: target.port,
      client: null,
      state: 'dialing',
      ready: Promise.resolve(),
      slots: 0,
      idleSince: null,
      fingerprint: null,
      lowDelay: null,
    };
    const list = this.byIdentity.get(identity) ?? [];
    list.push(conn);
    this.byIdentity.set(identity, list);
    t.handshakes++;
    const log = { connection: conn.id, host: target.host, port: target.port, username: target.username };
    conn.ready = (async () => {
      try {
        // Only when dialing: callers sharing an open connection never pay for parsing the key again.
        const credential = parseCredential(target.auth);
        for (let attempt = 0; ; attempt++) {
          try {
            await this.connectOnce(conn, target, credential);
            if (this.closed) {
              conn.client?.end();
              throw new AppError('SHUTTING_DOWN');
            }
            conn.state = 'ready';
            conn.idleSince = this.clock.now();
            this.logger.debug({ ...log, fingerprint: conn.fingerprint, attempt }, 'SSH connection ready');
            this.emit('connection-ready', {
              id: conn.id,
              host: conn.host,
              port: conn.port,
              fingerprint: conn.fingerprint ?? '',
            });
            return;
          } catch (e) {
            if (!(e instanceof HandshakeFailure)) throw e;
            if (!e.retriable || attempt >= this.opts.handshakeRetries || this.closed) throw e.error;
            const delay = this.opts.retryBaseDelayMs * 2 ** attempt * (0.5 + randomInt(1000) / 1000);
            this.logger.debug(
              { ...log, attempt, delay: Math.round(delay) },
              'SSH handshake dropped; retrying',
            );
            await new Promise((r) => setTimeout(r, delay).unref());
          }
        }
      } catch (e) {
        this.drop(conn);
        const err = e instanceof AppError ? e : new AppError('SSH_PROTOCOL_ERROR', { cause: e });
        this.logger.info({ ...log, code: err.code }, 'SSH login failed');
        throw err;
      } finally {
        t.handshakes--;
        for (const wake of [...t.waiters]) wake();
      }
    })();
    // Callers await `ready`; this keeps a failure nobody waits for from becoming an unhandled rejection.
    conn.ready.catch(() => undefined);
    return conn;
  }

  /** One TCP connect + SSH handshake + login; rejects with a HandshakeFailure. */
  private connectOnce(conn: Connection, target: SshTarget, credential: Credential): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const client = new Client();
      conn.client = client;
      this.liveClients.add(client);
      let observed: string | null = null;
      let mismatch = false;
      let settled = false;
      /** Logged in: a close from now on ends the connection (before, it ends only this attempt). */
      let loggedIn = false;
      const settle = (failure: HandshakeFailure | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(guard);
        if (failure) {
          client.destroy();
          reject(failure);
        } else {
          resolve();
        }
      };
      // ssh2's readyTimeout covers connect + handshake + auth; this outer guard only catches a stuck
      // client (e.g. an exception path that emits nothing) so no caller ever hangs.
      const guard = setTimeout(
        () => settle(new HandshakeFailure(new AppError('SSH_TIMEOUT'), false)),
        this.opts.readyTimeoutMs + 1_000,
      );
      client.on('ready', () => {
        client.setNoDelay(true);
        conn.fingerprint = observed;
        loggedIn = true;
        settle(null);
      });
      client.on('error', (err: Error) => {
        if (!settled) {
          if (mismatch) {
            settle(
              new HandshakeFailure(
                new AppError('HOST_KEY_MISMATCH', {
                  details: { expected: target.hostKeyFingerprint, actual: observed },
                  cause: err,
                }),
                false,
              ),
            );
          } else {
            settle(classifyHandshakeError(err));
          }
          return;
        }
        // After ready: keepalive timeouts, resets. 'close' follows and drops the connection.
        if (conn.client === client && conn.state === 'ready') {
          this.logger.info({ connection: conn.id, err: err.message }, 'SSH connection error');
        }
      });
      client.on('close', () => {
        this.liveClients.delete(client);
        if (!settled) settle(closedBeforeReady());
        else if (loggedIn && conn.client === client) this.drop(conn);
      });
      // The auth handler takes an already parsed key; `privateKey` would only take text and parse it again.
      const method: PasswordAuthMethod | PublicKeyAuthMethod =
        'password' in credential
          ? { type: 'password', username: target.username, password: credential.password }
          : { type: 'publickey', username: target.username, key: credential.privateKey };
      const config: ConnectConfig = {
        host: target.host,
        port: target.port,
        username: target.username,
        readyTimeout: this.opts.readyTimeoutMs,
        keepaliveInterval: this.opts.keepaliveIntervalMs,
        keepaliveCountMax: this.opts.keepaliveCountMax,
        tryKeyboard: false,
        hostVerifier: (key: Buffer): boolean => {
          observed = fingerprintOf(key);
          if (target.hostKeyFingerprint !== null && !sameFingerprint(target.hostKeyFingerprint, observed)) {
            mismatch = true;
            return false;
          }
          return true;
        },
        authHandler: [method],
      };
      try {
        client.connect(config);
        // Set before the socket connects; Node applies it once the handle exists.
        client.setNoDelay(true);
        const sock = (client as unknown as { _sock?: unknown })._sock;
        if (sock instanceof NetSocket) coalesceWrites(sock);
      } catch (err) {
        settle(new HandshakeFailure(new AppError('SSH_PROTOCOL_ERROR', { cause: err }), false));
      }
    });
  }

  /** Forgets a connection (it is closed or closing); its channels end with it. */
  private drop(conn: Connection): void {
    if (conn.state === 'ready')
      this.emit('connection-closed', { id: conn.id, host: conn.host, port: conn.port });
    conn.state = 'closed';
    const list = this.byIdentity.get(conn.identity);
    if (!list) return;
    const i = list.indexOf(conn);
    if (i !== -1) list.splice(i, 1);
    if (list.length === 0) this.byIdentity.delete(conn.identity);
    const t = this.targets.get(conn.targetKey);
    if (t && t.handshakes === 0 && t.waiters.size === 0 && !this.hasTarget(conn.targetKey)) {
      this.targets.delete(conn.targetKey);
    }
  }

  private hasTarget(targetKey: string): boolean {
    for (const list of this.byIdentity.values()) if (list.some((c) => c.targetKey === targetKey)) return true;
    return false;
  }
}

/** Checks the credential before any network traffic: a bad key or passphrase is the caller's input error. */
function parseCredential(auth: SshAuth): Credential {
  switch (auth.type) {
    case 'password':
      return { password: auth.password };
    case 'privateKey': {
      const parsed: unknown = utils.parseKey(auth.privateKey, auth.passphrase);
      const key: unknown = Array.isArray(parsed) ? (parsed as unknown[])[0] : parsed;
      if (key === undefined || key instanceof Error || (key as ParsedKey).getPrivatePEM() === null) {
        throw new AppError('INVALID_PRIVATE_KEY');
      }
      return { privateKey: key as ParsedKey };
    }
  }
}

/**
 * Who we log in as, where and with which credential; the secret only as a hash. The pinned host key
 * is not part of it: pinning a key on first use must not open a second connection (take() checks the
 * key a shared connection saw against the pin).
 */
function identityOf(target: SshTarget): string {
  const h = createHash('sha256');
  const secret =
    target.auth.type === 'password'
      ? ['password', target.auth.password]
      : ['privateKey', target.auth.privateKey, target.auth.passphrase ?? ''];
  h.update(JSON.stringify([target.host, target.port, target.username, ...secret]));
  return h.digest('base64url');
}

function endClient(client: Ssh2Client): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      client.destroy();
      resolve();
    }, CLOSE_GRACE_MS);
    timer.unref();
    client.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      client.end();
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}
