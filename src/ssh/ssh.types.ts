// The shapes the rest of the gateway uses to talk about an SSH login: who, where, with what credential and
// which host key we expect.
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';

export type SshAuth =
  { type: 'password'; password: string } | { type: 'privateKey'; privateKey: string; passphrase?: string };

export interface SshTarget {
  host: string;
  port: number;
  username: string;
  auth: SshAuth;
  /** Pinned 'SHA256:…' fingerprint, or null to accept and report the first one seen (trust on first use). */
  hostKeyFingerprint: string | null;
}

export interface SshPoolOptions {
  /** Channels one pooled connection carries before the next channel goes on another connection. */
  maxChannelsPerConnection: number;
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  /** SSH handshakes in flight at once to one host:port; more callers queue. */
  maxHandshakesPerTarget: number;
  /** A connection with no channel for this long is closed. */
  idleCloseMs: number;
  /** Bound on TCP connect + SSH handshake + authentication, per attempt. */
  readyTimeoutMs: number;
  /** Default bound on one `exec` (from channel request to exit). */
  execTimeoutMs: number;
  logger: Logger;
  clock?: Clock;
  /** Retries of a handshake the server dropped (reset/closed: sshd MaxStartups). Default 3. */
  handshakeRetries?: number;
  /** First retry delay; doubles each retry, with ±50% jitter. Default 250 ms. */
  retryBaseDelayMs?: number;
  /** Callers allowed to wait for a handshake slot per target before new ones are refused. Default 256. */
  maxQueuedPerTarget?: number;
  /** Default bound on collected stdout (and, separately, stderr) of `exec`. Default 1 MiB. */
  maxOutputBytes?: number;
  /**
   * Receive window of the byte-stream channels (a viewer's desktop stream), in bytes: with a viewer that
   * stops reading, at most this much more arrives. 0 keeps ssh2's 2 MiB. Default 512 KiB (stream-window.ts).
   */
  streamWindowBytes?: number;
  /** Buffered bytes at which a paused stream channel stops granting window. Default 64 KiB. */
  streamBufferBytes?: number;
}

/** How a byte-stream channel will be read. */
export interface StreamOptions {
  /** The reader takes at most this many kbit/s (a viewer's budget): the channel gets a window to match. */
  budgetKbps?: number;
}

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  stdin?: string;
  timeoutMs?: number;
  maxOutputBytes?: number;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** True when output passed `maxOutputBytes`: the channel was closed and the rest dropped. */
  truncated: boolean;
  hostKeyFingerprint: string;
}

export interface PoolStats {
  connections: number;
  channels: number;
  handshakesInFlight: number;
}
