// Rate limits and brute-force protection (plan section 6.2), on rate-limiter-flexible: in process
// memory on a single node, in Redis (shared by every gateway process) when coordination runs on
// Redis — so hitting different processes does not multiply a limit.
//
//   sign-in failures per (account, IP)   AUTH_MAX_FAILURES_PER_ACCOUNT_IP (5) per AUTH_WINDOW_MS (15 min)
//                                        → that pair gets 429 for AUTH_BLOCK_MS. The IP is part of the key,
//                                        so an attacker cannot lock a victim out from everywhere.
//   sign-in failures per IP              more than AUTH_MAX_FAILURES_PER_IP (10) → the IP may not sign in
//                                        for AUTH_BLOCK_MS (the plan's WAF rule). Refresh is not blocked by
//                                        it: an office behind one NAT address must not be signed out.
//   auth attempts per IP                 AUTH_MAX_ATTEMPTS_PER_IP (600) per AUTH_WINDOW_MS over sign-in,
//                                        refresh and registration: generous, against floods only.
//   API requests per user                RATE_LIMIT_MAX_REQUESTS (1000) per RATE_LIMIT_WINDOW_MS (15 min)
//   new WebSockets per user              WS_MAX_CONNECTS_PER_MINUTE (10) per minute
//
// Redis down → the sign-in and WebSocket checks fail closed with COORDINATION_UNAVAILABLE (503): falling
// back to memory would silently turn a cluster-wide limit into a per-process one, and a brute-force
// guard must not loosen. The per-user API limit (a flood guard, 1000 per 15 min) counts in process
// memory meanwhile instead (rate-limiter-flexible's insurance limiter, at once, no retry): with Redis
// down for every node (issue 11) the calls that need no Redis — instance list, session history, usage
// — keep answering, each process allowing up to the limit on its own until Redis is back.
//
// IPv6 clients are limited per /64 (one subscriber usually holds a whole /64); IPv4-mapped IPv6
// addresses count as their IPv4 address. Account keys are hashed so Redis holds no email addresses.
// Time: rate-limiter-flexible reads Date.now() itself (no injected clock); tests mock Date.
import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import type { FastifyReply } from 'fastify';
import type { Cluster, Redis } from 'ioredis';
import {
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
  type RateLimiterAbstract,
} from 'rate-limiter-flexible';
import type { Config } from '../config/config.js';
import { AppError, isAppError, PeerGoneError } from '../errors/errors.js';
import type { SignInGuard } from '../auth/sign-in-guard.js';
import type { Coordinator } from './coordinator.js';
import { RedisCoordinator } from './redis-coordinator.js';

export type LimitName = 'sign-in-pair' | 'sign-in-ip' | 'auth-attempts' | 'api' | 'ws-connect';

export const limitNames: readonly LimitName[] = [
  'sign-in-pair',
  'sign-in-ip',
  'auth-attempts',
  'api',
  'ws-connect',
];

/** What a client may learn about a limit it is under (sent as RateLimit-* headers). */
export interface RateLimitInfo {
  limit: number;
  remaining: number;
  /** Until the current window ends (or a block lifts). */
  resetMs: number;
}

export type RateLimitStore =
  | { kind: 'memory' }
  | {
      kind: 'redis';
      client: Redis | Cluster;
      keyPrefix: string;
      /** Retries what a Redis failover explains, bounded (RedisCoordinator.retrying). */
      retrying?: <T>(fn: () => Promise<T>) => Promise<T>;
    };

export interface RateLimitHooks {
  /** Called once per rejected request, for the rate-limit rejection metric. */
  onRejected?(limit: LimitName): void;
}

function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/**
 * One key per client address: IPv4 as is, IPv6 per /64, IPv4-mapped IPv6 as IPv4. Fastify's
 * `request.ip` is undefined once the client's socket has closed (a sign-in that waited in the hash
 * queue longer than the client did): that request is dropped (PeerGoneError), not answered 500.
 */
export function ipKey(ip: string | undefined): string {
  if (ip === undefined || ip === '') throw new PeerGoneError();
  const bare = ip.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(bare);
  if (mapped) return mapped[1]!;
  if (!isIPv6(bare)) return bare;
  const [head = '', tail = ''] = bare.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (::1.2.3.4) is two groups; for a /64 only the first four groups matter.
  const tailCount = tailGroups.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const groups = bare.includes('::')
    ? [
        ...headGroups,
        ...Array<string>(Math.max(0, 8 - headGroups.length - tailCount)).fill('0'),
        ...tailGroups,
      ]
    : headGroups;
  return `${groups
    .slice(0, 4)
    .map((g) => (g.includes('.') ? g : g.toLowerCase().replace(/^0+(?=.)/, '')))
    .join(':')}::/64`;
}

function accountKey(email: string): string {
  return createHash('sha256').update(email.trim().toLowerCase()).digest('base64url').slice(0, 22);
}

function tooMany(limit: number, msBeforeNext: number, message?: string): AppError {
  const retryAfterMs = Math.max(0, Math.round(msBeforeNext));
  return new AppError('RATE_LIMITED', {
    ...(message ? { message } : {}),
    details: { retryAfterMs, retryAfterSeconds: seconds(retryAfterMs), limit, remaining: 0 },
  });
}

export class RateLimits implements SignInGuard {
  private readonly limiters: Record<LimitName, RateLimiterAbstract>;
  private readonly retrying: (<T>(fn: () => Promise<T>) => Promise<T>) | undefined;

  constructor(
    private readonly config: Config['rateLimit'],
    store: RateLimitStore,
    private readonly hooks: RateLimitHooks = {},
  ) {
    this.retrying = store.kind === 'redis' ? store.retrying : undefined;
    const make = (name: LimitName, points: number, durationMs: number): RateLimiterAbstract => {
      const opts = { points, duration: seconds(durationMs), keyPrefix: `rl:${name}` };
      if (store.kind === 'memory') return new RateLimiterMemory(opts);
      return new RateLimiterRedis({
        ...opts,
        ...(name === 'api' ? { insuranceLimiter: new RateLimiterMemory(opts) } : {}),
        keyPrefix: `${store.keyPrefix}rl:${name}`,
        storeClient: store.client,
        // Not connected → reject at once instead of queueing (the client has no offline queue either).
        rejectIfRedisNotReady: true,
      });
    };
    this.limiters = {
      'sign-in-pair': make('sign-in-pair', config.authFailuresPerAccountIp, config.authWindowMs),
      'sign-in-ip': make('sign-in-ip', config.authFailuresPerIp, config.authWindowMs),
      'auth-attempts': make('auth-attempts', config.authAttemptsPerIp, config.authWindowMs),
      api: make('api', config.maxRequests, config.windowMs),
      'ws-connect': make('ws-connect', config.wsConnectsPerMinute, 60_000),
    };
  }

  /**
   * The store's own failures (Redis down, timed out) become COORDINATION_UNAVAILABLE, after bounded
   * retries through a failover. A retried consume whose first answer was lost counts twice: the
   * error is towards refusing, never towards letting more through.
   */
  private async store<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await (this.retrying ? this.retrying(fn) : fn());
    } catch (e) {
      if (e instanceof RateLimiterRes || isAppError(e)) throw e;
      throw new AppError('COORDINATION_UNAVAILABLE', { cause: e });
    }
  }

  /** Consumes one point; over the limit → RATE_LIMITED with the wait in details. */
  private async consume(name: LimitName, key: string): Promise<RateLimitInfo> {
    const limiter = this.limiters[name];
    try {
      const res = await this.store(() => limiter.consume(key));
      return { limit: limiter.points, remaining: res.remainingPoints, resetMs: res.msBeforeNext };
    } catch (e) {
      if (e instanceof RateLimiterRes) {
        this.hooks.onRejected?.(name);
        throw tooMany(limiter.points, e.msBeforeNext);
      }
      throw e;
    }
  }

  /** Records one failure; returns the count in the window (the limiter's own rejection is expected here). */
  private async recordFailure(name: LimitName, key: string): Promise<number> {
    const limiter = this.limiters[name];
    try {
      return (await this.store(() => limiter.consume(key))).consumedPoints;
    } catch (e) {
      if (e instanceof RateLimiterRes) return e.consumedPoints;
      throw e;
    }
  }

  private async block(name: LimitName, key: string): Promise<void> {
    await this.store(() => this.limiters[name].block(key, seconds(this.config.authBlockMs)));
  }

  /** Any auth attempt from this IP (registration, refresh): a generous per-IP budget. */
  async attempt(ip: string): Promise<void> {
    await this.consume('auth-attempts', ipKey(ip));
  }

  /** Throws RATE_LIMITED when this IP or this account+IP pair is locked out, or the IP floods. */
  async beforeSignIn(email: string, ip: string): Promise<void> {
    const address = ipKey(ip);
    await this.consume('auth-attempts', address);
    const [byIp, byPair] = await this.store(() =>
      Promise.all([
        this.limiters['sign-in-ip'].get(address),
        this.limiters['sign-in-pair'].get(`${accountKey(email)}:${address}`),
      ]),
    );
    if (byIp && byIp.consumedPoints > this.config.authFailuresPerIp) {
      this.hooks.onRejected?.('sign-in-ip');
      throw tooMany(
        this.config.authFailuresPerIp,
        byIp.msBeforeNext,
        'Too many failed sign-ins from this address',
      );
    }
    if (byPair && byPair.consumedPoints >= this.config.authFailuresPerAccountIp) {
      this.hooks.onRejected?.('sign-in-pair');
      throw tooMany(this.config.authFailuresPerAccountIp, byPair.msBeforeNext, 'Too many failed sign-ins');
    }
  }

  async signInFailed(email: string, ip: string): Promise<void> {
    const address = ipKey(ip);
    const pairKey = `${accountKey(email)}:${address}`;
    const [pairFailures, ipFailures] = await Promise.all([
      this.recordFailure('sign-in-pair', pairKey),
      this.recordFailure('sign-in-ip', address),
    ]);
    // A block runs for AUTH_BLOCK_MS from the failure that triggered it, not to the window's end.
    if (pairFailures === this.config.authFailuresPerAccountIp) await this.block('sign-in-pair', pairKey);
    if (ipFailures === this.config.authFailuresPerIp + 1) await this.block('sign-in-ip', address);
  }

  /** Clears the pair's failures. The IP's count stays: one valid account must not reset an attacker's tally. */
  async signInSucceeded(email: string, ip: string): Promise<void> {
    await this.store(() => this.limiters['sign-in-pair'].delete(`${accountKey(email)}:${ipKey(ip)}`));
  }

  /** One authenticated API request by this user. */
  consumeApi(userId: string): Promise<RateLimitInfo> {
    return this.consume('api', userId);
  }

  /** One new WebSocket by this user. */
  async consumeWsConnect(userId: string): Promise<void> {
    await this.consume('ws-connect', userId);
  }
}

/** rate-limiter store for the given coordinator: Redis when coordination runs on Redis, memory otherwise. */
export function createRateLimits(
  config: Pick<Config, 'rateLimit'>,
  coordinator: Coordinator,
  hooks: RateLimitHooks = {},
): RateLimits {
  const store: RateLimitStore =
    coordinator instanceof RedisCoordinator
      ? {
          kind: 'redis',
          client: coordinator.client,
          keyPrefix: coordinator.keyPrefix,
          retrying: (fn) => coordinator.retrying(fn),
        }
      : { kind: 'memory' };
  return new RateLimits(config.rateLimit, store, hooks);
}

/** IETF draft RateLimit headers (as express-rate-limit's `standardHeaders`), seconds for the reset. */
export function rateLimitHeaders(info: RateLimitInfo): Record<string, string> {
  return {
    'RateLimit-Limit': String(info.limit),
    'RateLimit-Remaining': String(Math.max(0, info.remaining)),
    'RateLimit-Reset': String(Math.ceil(Math.max(0, info.resetMs) / 1000)),
  };
}

/** Headers for a RATE_LIMITED error (RateLimit-* and Retry-After), or null for any other error. */
export function rateLimitHeadersOfError(error: unknown): Record<string, string> | null {
  if (!isAppError(error) || error.code !== 'RATE_LIMITED' || !error.details) return null;
  const { limit, retryAfterMs } = error.details;
  if (typeof limit !== 'number' || typeof retryAfterMs !== 'number') return null;
  return {
    ...rateLimitHeaders({ limit, remaining: 0, resetMs: retryAfterMs }),
    'Retry-After': String(seconds(retryAfterMs)),
  };
}

/**
 * The per-user API limit for a route, after authentication: sets RateLimit-* headers on every answer
 * and, over the limit, Retry-After too before throwing RATE_LIMITED (the error mapper sends the 429).
 */
export async function enforceApiRateLimit(
  limits: RateLimits,
  userId: string,
  reply: FastifyReply,
): Promise<void> {
  try {
    const info = await limits.consumeApi(userId);
    void reply.headers(rateLimitHeaders(info));
  } catch (e) {
    const headers = rateLimitHeadersOfError(e);
    if (headers) void reply.headers(headers);
    throw e;
  }
}
