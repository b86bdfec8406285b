// Cluster coordination over Redis (ioredis): connect tickets, locks, viewer leases and cross-node
// commands shared by every gateway process. Same contract as the in-process implementation
// (test/coordination.test.ts runs both).
//
// Failure stance: Redis being down must never hang a request. The command connection has no offline
// queue and no per-request retries, so every call while Redis is unreachable rejects at once with
// COORDINATION_UNAVAILABLE; a command timeout covers a Redis that accepts but does not answer. Both
// connections reconnect on their own with capped, jittered backoff, and the subscriber re-subscribes
// after a reconnect (ioredis autoResubscribe), so the service recovers without a restart.
//
// Keys (all under `keyPrefix`, default `cd:`, and all expiring):
//   ticket:<ticket>      claims JSON, PX ttl, redeemed with GETDEL (single use)
//   lock:<key>           owner token, SET NX PX, released by compare-and-delete
//   viewers:<sessionId>  sorted set viewerId → lease expiry (injected clock), key PEXPIREs with the last lease
//   commands             pub/sub channel for ClusterCommand JSON
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Redis, type RedisOptions } from 'ioredis';
import { AppError, isAppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { ClusterCommand, Coordinator, LockHandle, TicketClaims, ViewerLease } from './coordinator.js';
import { withLockPolling } from './memory-coordinator.js';

export interface RedisCoordinatorOptions {
  url: string;
  clock: Clock;
  logger: Logger;
  /** Namespace of every key and channel. Tests use a unique one per run. Default `cd:`. */
  keyPrefix?: string;
  /** A command unanswered this long fails with COORDINATION_UNAVAILABLE. Default 2000. */
  commandTimeoutMs?: number;
  /** Upper bound of the reconnect backoff. Default 2000. */
  maxReconnectDelayMs?: number;
  /** TCP connect timeout. Default 3000. */
  connectTimeoutMs?: number;
}

// Compare-and-delete: only the holder of the token may release the lock (a lock that expired and
// was taken by another node must not be released by the first holder finishing late).
const UNLOCK_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

// Add or renew a lease, drop lapsed ones and keep the key alive as long as its longest lease (plus a
// margin) so an abandoned session's set disappears by itself. ARGV: viewerId, now, expiresAt.
const PUT_VIEWER_SCRIPT = `
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  local ttl = math.ceil(tonumber(last[2]) - tonumber(ARGV[2]))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl + 1000) end
end
return 1`;

const TICKET_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;

interface ScriptedRedis extends Redis {
  cdUnlock(key: string, token: string): Promise<number>;
  cdPutViewer(key: string, viewerId: string, now: string, expiresAt: string): Promise<number>;
}

/** Parses a command from the channel; anything malformed is ignored (the channel is not trusted input). */
export function parseClusterCommand(text: string): ClusterCommand | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.type === 'end-session' && typeof v.sessionId === 'string' && typeof v.reason === 'string') {
    return { type: 'end-session', sessionId: v.sessionId, reason: v.reason };
  }
  if (v.type === 'sign-out-user' && typeof v.userId === 'string') {
    return { type: 'sign-out-user', userId: v.userId };
  }
  return null;
}

function parseClaims(text: string | null): TicketClaims | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    if (typeof v.userId === 'string' && typeof v.sessionId === 'string') {
      return { userId: v.userId, sessionId: v.sessionId };
    }
  } catch {
    // fall through: treat a corrupt entry as an unknown ticket
  }
  return null;
}

export class RedisCoordinator implements Coordinator {
  private readonly redis: ScriptedRedis;
  private readonly subscriber: Redis;
  private readonly prefix: string;
  private readonly channel: string;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly handlers: ((command: ClusterCommand) => void)[] = [];
  private wasDown = false;
  private closed = false;
  private subscribed: Promise<boolean>;

  constructor(options: RedisCoordinatorOptions) {
    this.clock = options.clock;
    this.logger = options.logger;
    this.prefix = options.keyPrefix ?? 'cd:';
    this.channel = `${this.prefix}commands`;
    const maxDelay = options.maxReconnectDelayMs ?? 2000;
    const base: RedisOptions = {
      connectTimeout: options.connectTimeoutMs ?? 3000,
      // Exponential from 50 ms, capped, with jitter so a fleet does not reconnect in lockstep.
      retryStrategy: (times: number) =>
        Math.round(Math.min(50 * 2 ** Math.min(times, 16), maxDelay) * (0.5 + Math.random() / 2)),
      lazyConnect: false,
    };
    this.redis = new Redis(options.url, {
      ...base,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 2000,
      connectionName: 'clouddesk',
    }) as ScriptedRedis;
    this.redis.defineCommand('cdUnlock', { numberOfKeys: 1, lua: UNLOCK_SCRIPT });
    this.redis.defineCommand('cdPutViewer', { numberOfKeys: 1, lua: PUT_VIEWER_SCRIPT });

    // The subscriber keeps its (tiny) offline queue so the SUBSCRIBE sent before the first connect
    // is not lost; ioredis re-subscribes by itself after every reconnect.
    this.subscriber = new Redis(options.url, {
      ...base,
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      autoResubscribe: true,
      connectionName: 'clouddesk-sub',
    });
    this.subscriber.on('message', (channel: string, message: string) => this.deliver(channel, message));
    this.subscribed = this.subscriber.subscribe(this.channel).then(
      () => true,
      (e: unknown) => {
        if (!this.closed) this.logger.warn({ err: e }, 'redis subscribe failed; retried on reconnect');
        return false;
      },
    );

    for (const [name, client] of [
      ['commands', this.redis],
      ['subscriber', this.subscriber],
    ] as const) {
      // Without an 'error' listener ioredis errors would crash the process; log state changes only,
      // not every failed reconnect attempt.
      client.on('error', (err: Error) => {
        if (this.closed || this.wasDown) return;
        this.wasDown = true;
        this.logger.warn(
          { err, connection: name },
          'redis unreachable; coordination calls fail until it returns',
        );
      });
      client.on('ready', () => {
        if (this.wasDown && this.state() === 'up') {
          this.wasDown = false;
          this.logger.info({ connection: name }, 'redis reachable again');
        }
      });
    }
  }

  /** The namespace of this coordinator's keys, for rate limiters that share the connection. */
  get keyPrefix(): string {
    return this.prefix;
  }

  /** The command connection, for rate limiters that share it (rate-limits.ts). */
  get client(): Redis {
    return this.redis;
  }

  /**
   * Resolves true once both connections are ready and the command channel is subscribed, false if
   * that takes longer than timeoutMs. Optional: calls made before then fail fast instead of waiting.
   */
  async waitUntilReady(timeoutMs: number): Promise<boolean> {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), timeoutMs);
    timer.unref();
    try {
      for (const client of [this.redis, this.subscriber]) {
        if (client.status !== 'ready') await once(client, 'ready', { signal: ac.signal });
      }
      const aborted = once(ac.signal, 'abort').then(() => false);
      return await Promise.race([this.subscribed, aborted]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  private key(kind: string, id: string): string {
    return `${this.prefix}${kind}:${id}`;
  }

  /** Every Redis failure (down, timeout, connection lost mid-call) becomes one clear 503. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new AppError('COORDINATION_UNAVAILABLE', { message: 'Coordination is closed' });
    try {
      return await fn();
    } catch (e) {
      if (isAppError(e)) throw e;
      throw new AppError('COORDINATION_UNAVAILABLE', { cause: e });
    }
  }

  private deliver(channel: string, message: string): void {
    if (channel !== this.channel) return;
    const command = parseClusterCommand(message);
    if (!command) {
      this.logger.warn({ channel }, 'ignored a malformed cluster command');
      return;
    }
    for (const handler of this.handlers) {
      try {
        handler(command);
      } catch (err) {
        this.logger.error({ err, command: command.type }, 'cluster command handler failed');
      }
    }
  }

  issueTicket(claims: TicketClaims, ttlMs: number): Promise<string> {
    return this.call(async () => {
      const ticket = randomBytes(24).toString('base64url');
      const value = JSON.stringify({ userId: claims.userId, sessionId: claims.sessionId });
      await this.redis.set(this.key('ticket', ticket), value, 'PX', Math.max(1, Math.round(ttlMs)));
      return ticket;
    });
  }

  redeemTicket(ticket: string): Promise<TicketClaims | null> {
    if (!TICKET_PATTERN.test(ticket)) return Promise.resolve(null);
    return this.call(async () => parseClaims(await this.redis.getdel(this.key('ticket', ticket))));
  }

  tryLock(key: string, ttlMs: number): Promise<LockHandle | null> {
    return this.call(async () => {
      const token = randomBytes(12).toString('base64url');
      const ok = await this.redis.set(
        this.key('lock', key),
        token,
        'PX',
        Math.max(1, Math.round(ttlMs)),
        'NX',
      );
      return ok === 'OK' ? { key, token } : null;
    });
  }

  unlock(handle: LockHandle): Promise<void> {
    return this.call(async () => {
      await this.redis.cdUnlock(this.key('lock', handle.key), handle.token);
    });
  }

  withLock<T>(key: string, ttlMs: number, waitMs: number, fn: () => Promise<T>): Promise<T> {
    return withLockPolling(this, key, ttlMs, waitMs, fn);
  }

  putViewer(lease: ViewerLease, ttlMs: number): Promise<void> {
    return this.call(async () => {
      const now = this.clock.now();
      await this.redis.cdPutViewer(
        this.key('viewers', lease.sessionId),
        lease.viewerId,
        String(now),
        String(now + ttlMs),
      );
    });
  }

  removeViewer(sessionId: string, viewerId: string): Promise<void> {
    return this.call(async () => {
      await this.redis.zrem(this.key('viewers', sessionId), viewerId);
    });
  }

  countViewers(sessionIds: readonly string[]): Promise<Map<string, number>> {
    return this.call(async () => {
      const counts = new Map<string, number>();
      if (sessionIds.length === 0) return counts;
      const now = this.clock.now();
      const pipeline = this.redis.pipeline();
      // '(' makes the bound exclusive: a lease expiring exactly now no longer counts (as in memory).
      for (const id of sessionIds) pipeline.zcount(this.key('viewers', id), `(${now}`, '+inf');
      const results = (await pipeline.exec()) ?? [];
      sessionIds.forEach((id, i) => {
        const [err, n] = results[i] ?? [new Error('missing pipeline reply'), 0];
        if (err) throw err;
        counts.set(id, Number(n));
      });
      return counts;
    });
  }

  publish(command: ClusterCommand): Promise<void> {
    return this.call(async () => {
      await this.redis.publish(this.channel, JSON.stringify(command));
    });
  }

  onCommand(handler: (command: ClusterCommand) => void): void {
    this.handlers.push(handler);
  }

  ping(): Promise<void> {
    return this.call(async () => {
      await this.redis.ping();
    });
  }

  state(): 'up' | 'down' {
    return this.redis.status === 'ready' && this.subscriber.status === 'ready' ? 'up' : 'down';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.handlers.length = 0;
    await Promise.all(
      [this.redis, this.subscriber].map(async (client) => {
        if (client.status !== 'ready') {
          client.disconnect();
          return;
        }
        try {
          await client.quit();
        } catch {
          client.disconnect();
        }
      }),
    );
  }
}
