// Cluster coordination over Redis (ioredis): connect tickets, locks, viewer leases and cross-node
// commands shared by every gateway process. Same contract as the in-process implementation
// (test/coordination.test.ts runs both, and the Redis one against a single server, Sentinel and a
// Redis Cluster). Three ways to reach Redis (config: RedisSettings): one server (REDIS_URL,
// rediss:// for TLS), a primary found through Sentinel, or a Redis Cluster.
//
// Failure stance: Redis being down must never hang a request, and a failover must be a blip. The
// command connection has no offline queue; a call that fails for a reason a failover explains
// (connection lost or refused, CLUSTERDOWN, READONLY, TRYAGAIN, LOADING, MASTERDOWN, a timeout) is
// retried with a short backoff until `retryBudgetMs` has passed since it started, then fails with
// COORDINATION_UNAVAILABLE. Every command is safe to retry (see each method). Both connections
// reconnect by themselves with capped, jittered backoff (Sentinel: ioredis asks the sentinels for
// the current primary and listens for +switch-master; Cluster: ioredis refreshes the slot map), and
// the subscriber subscribes again after every reconnect.
//
// A connection that stalls is dropped, not waited out (issue 11): in a partition (packets dropped, no
// reset) the bytes of a command sit unacknowledged and TCP retransmits them with exponential backoff
// (up to 2 min apart in Linux), so after the heal the old connection would notice only at its next
// retransmission. With ioredis' `socketTimeout`, a connection that has a command in flight and has
// received nothing for one attempt's timeout is destroyed and a fresh one is dialed, whose SYN gets
// through as soon as the link does. The subscriber, which otherwise only listens, sends a PING as
// often, so a stalled subscriber connection is found and replaced (and subscribes again) the same way.
// (On a Redis Cluster ioredis keeps the subscriber connection to itself: only its command connections
// are covered.)
//
// Writes whose loss in a failover would matter (a redeemed ticket, a granted lock) wait for one
// replica to acknowledge them (WAIT) when the primary has replicas: Redis replication is
// asynchronous, and a replica promoted before it saw a GETDEL would accept the ticket again.
// docs/coordination.md states each guarantee under failover.
//
// Keys (all under `keyPrefix`, default `cd:`, all expiring). The part in braces is the hash tag:
// on a Redis Cluster only it picks the slot, so keys one script touches together share it, and no
// command spans two slots.
//   ticket:{<ticket>}        claims JSON, PX ttl, redeemed with GETDEL (single use)
//   once:<kind>:{<id>}       an OIDC sign-in's state or a second sign-in step, PX ttl, taken with GETDEL
//   lock:{<key>}             "<fence>:<nonce>", SET PX by script; released by compare-and-delete
//   fence:{<key>}            the key's fencing counter (INCR), in the same slot as its lock
//   viewers:{<sessionId>}    sorted set viewerId → lease expiry (injected clock), PEXPIREs with the last lease
//   viewer-nodes:{<sessionId>}  hash viewerId → node id beside it (JSON {node, shareId, name} for a share's
//                            guest), same slot and expiry (the admin's list, the owner's guests)
//   commands                 pub/sub channel for ClusterCommand JSON (on a cluster PUBLISH reaches every node)
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisSettings } from '../config/config.js';
import { AppError, isAppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type {
  ClusterCommand,
  Coordinator,
  GuestClaims,
  LockHandle,
  OnceKind,
  TicketClaims,
  ViewerLease,
} from './coordinator.js';
import { withLockPolling } from './memory-coordinator.js';

// ioredis listens for a connecting socket's errors with `once` (the connector's and its own): a TLS
// handshake refused over its certificate can raise one more error than that (the peer's alert after our
// refusal), which would then be an uncaught exception that ends the gateway. TLS connections therefore
// go through a connector that keeps one more listener on every socket it makes; ioredis still sees the
// errors it listens for and reconnects as before. (ioredis exports no StandaloneConnector: its own file.)
const requireCjs = createRequire(import.meta.url);
type ConnectorClass = NonNullable<RedisOptions['Connector']>;
type NetStream = Awaited<ReturnType<InstanceType<ConnectorClass>['connect']>>;
type ErrorEmitter = Parameters<InstanceType<ConnectorClass>['connect']>[0];
const StandaloneConnector = (
  requireCjs('ioredis/built/connectors/StandaloneConnector.js') as {
    default: new (options: unknown) => { connect(emit: ErrorEmitter): Promise<NetStream> };
  }
).default;
class ErrorSafeStandaloneConnector extends StandaloneConnector {
  override async connect(emit: ErrorEmitter): Promise<NetStream> {
    const stream = await super.connect(emit);
    stream.on('error', () => undefined);
    return stream;
  }
}
const ErrorSafeConnector = ErrorSafeStandaloneConnector as unknown as ConnectorClass;

export interface RedisCoordinatorOptions {
  /** How to reach Redis. `url` is short for `{ mode: 'standalone', url }`. */
  connection?: RedisSettings;
  url?: string;
  clock: Clock;
  logger: Logger;
  /** Namespace of every key and channel. Tests use a unique one per run. Default `cd:`. */
  keyPrefix?: string;
  /** A command unanswered this long fails (and may be retried within the budget). Default 2000. */
  commandTimeoutMs?: number;
  /** How long a call keeps retrying through a failover before COORDINATION_UNAVAILABLE. Default 5000; 0 = no retry. */
  retryBudgetMs?: number;
  /** How long a ticket redemption or lock grant waits for a replica's acknowledgement. Default 500. */
  replicaAckTimeoutMs?: number;
  /** Upper bound of the reconnect backoff. Default 2000. */
  maxReconnectDelayMs?: number;
  /** TCP connect timeout. Default 3000. */
  connectTimeoutMs?: number;
}

type Client = Redis | Cluster;

// Takes the lock, or confirms it to the holder of the same nonce (a retried call whose first answer
// was lost must not find "its own" lock held by someone else). A new grant takes the next fencing
// number from the counter beside it (same hash tag, same slot). KEYS: lock, fence. ARGV: nonce, ttl,
// fence counter ttl. Returns the lock's value "<fence>:<nonce>", or false when someone else holds it.
const LOCK_SCRIPT = `
local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, ':', 1, true)
  if sep and string.sub(held, sep + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return held
  end
  return false
end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local value = fence .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value`;

// Compare-and-delete: only the holder of the token may release the lock (a lock that expired and
// was taken by another node must not be released by the first holder finishing late).
const UNLOCK_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

// Compare-and-extend: only the holder of the token may renew the lock. ARGV: token, ttl.
const EXTEND_LOCK_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

// Add or renew a lease, drop lapsed ones and keep the key alive as long as its longest lease (plus a
// margin) so an abandoned session's set disappears by itself; the node of each viewer sits in a hash
// beside it with the same expiry (entries of lapsed leases go with them). KEYS: set, hash (one slot).
// ARGV: viewerId, now, expiresAt, nodeId.
const PUT_VIEWER_SCRIPT = `
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  local ttl = math.ceil(tonumber(last[2]) - tonumber(ARGV[2]))
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl + 1000)
    redis.call('PEXPIRE', KEYS[2], ttl + 1000)
  end
end
return 1`;

// SESSION_MAX_VIEWERS, exact: the same lease write, only when the session's set (after dropping lapsed
// leases) has fewer than ARGV[5] members or already holds this viewer. One script on one slot, so the
// check and the add are one step for every node. KEYS and ARGV[1..4] as PUT_VIEWER_SCRIPT.
const ADD_VIEWER_WITHIN_SCRIPT = `
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local ttl = math.ceil(tonumber(last[2]) - tonumber(ARGV[2]))
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl + 1000)
  redis.call('PEXPIRE', KEYS[2], ttl + 1000)
end
return 1`;

const TICKET_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
/** A fencing counter outlives any lock of its key by far; it only has to grow while holders overlap. */
const FENCE_TTL_MS = 24 * 3600_000;

interface Scripts {
  cdLock(
    lockKey: string,
    fenceKey: string,
    nonce: string,
    ttlMs: string,
    fenceTtlMs: string,
  ): Promise<string | null>;
  cdUnlock(key: string, token: string): Promise<number>;
  cdExtendLock(key: string, token: string, ttlMs: string): Promise<number>;
  cdPutViewer(
    key: string,
    nodesKey: string,
    viewerId: string,
    now: string,
    expiresAt: string,
    nodeId: string,
  ): Promise<number>;
  cdAddViewerWithin(
    key: string,
    nodesKey: string,
    viewerId: string,
    now: string,
    expiresAt: string,
    nodeId: string,
    max: string,
  ): Promise<number>;
}
type ScriptedClient = Client & Scripts;

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
  if (v.type === 'revoke-share' && typeof v.shareId === 'string') {
    return { type: 'revoke-share', shareId: v.shareId };
  }
  if (v.type === 'end-guest' && typeof v.sessionId === 'string' && typeof v.viewerId === 'string') {
    return { type: 'end-guest', sessionId: v.sessionId, viewerId: v.viewerId };
  }
  return null;
}

function parseGuest(v: unknown): GuestClaims | undefined | null {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null) return null;
  const g = v as Record<string, unknown>;
  if (
    typeof g.shareId !== 'string' ||
    (g.mode !== 'view' && g.mode !== 'control') ||
    (g.userId !== null && typeof g.userId !== 'string') ||
    typeof g.name !== 'string' ||
    typeof g.expiresAt !== 'number'
  )
    return null;
  return { shareId: g.shareId, mode: g.mode, userId: g.userId, name: g.name, expiresAt: g.expiresAt };
}

/** The viewer-nodes hash holds the node id, or for a guest JSON with the node and who they are. */
function encodeLeaseNode(lease: ViewerLease): string {
  return lease.guest ? JSON.stringify({ node: lease.nodeId, ...lease.guest }) : lease.nodeId;
}

function decodeLeaseNode(sessionId: string, viewerId: string, value: string | undefined): ViewerLease {
  if (value?.startsWith('{')) {
    try {
      const v = JSON.parse(value) as Record<string, unknown>;
      if (typeof v.node === 'string' && typeof v.shareId === 'string' && typeof v.name === 'string') {
        return { sessionId, viewerId, nodeId: v.node, guest: { shareId: v.shareId, name: v.name } };
      }
    } catch {
      // fall through: a corrupt entry names no node
    }
    return { sessionId, viewerId, nodeId: 'unknown' };
  }
  return { sessionId, viewerId, nodeId: value ?? 'unknown' };
}

function parseClaims(text: string | null): TicketClaims | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    const guest = parseGuest(v.guest);
    if (typeof v.userId === 'string' && typeof v.sessionId === 'string' && guest !== null) {
      return guest
        ? { userId: v.userId, sessionId: v.sessionId, guest }
        : { userId: v.userId, sessionId: v.sessionId };
    }
  } catch {
    // fall through: treat a corrupt entry as an unknown ticket
  }
  return null;
}

// Reply errors a failover explains; anything else from Redis (WRONGTYPE, a script error) is a bug
// and is not retried.
const TRANSIENT_REPLY = /^(CLUSTERDOWN|TRYAGAIN|READONLY|LOADING|MASTERDOWN|NOREPLICAS|MOVED|ASK)\b/;

/** Whether an error from ioredis is one a failover or a reconnect explains (worth a retry). */
export function isTransientRedisError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === 'ReplyError') return TRANSIENT_REPLY.test(e.message);
  // Connection closed / refused / reset, "Stream isn't writeable", command timed out,
  // MaxRetriesPerRequestError, "Cluster isn't ready", "Failed to refresh slots cache", and the
  // rate limiter's "Redis connection is not ready": all the connection's state, not the command's.
  return true;
}

function tlsOptions(tls: { ca: string | null } | null): RedisOptions['tls'] {
  if (tls === null) return undefined;
  return tls.ca === null ? {} : { ca: tls.ca };
}

/** The `Scripts` a client gets from defineCommand. */
function defineScripts(client: Client): ScriptedClient {
  client.defineCommand('cdLock', { numberOfKeys: 2, lua: LOCK_SCRIPT });
  client.defineCommand('cdUnlock', { numberOfKeys: 1, lua: UNLOCK_SCRIPT });
  client.defineCommand('cdExtendLock', { numberOfKeys: 1, lua: EXTEND_LOCK_SCRIPT });
  client.defineCommand('cdPutViewer', { numberOfKeys: 2, lua: PUT_VIEWER_SCRIPT });
  client.defineCommand('cdAddViewerWithin', { numberOfKeys: 2, lua: ADD_VIEWER_WITHIN_SCRIPT });
  return client as ScriptedClient;
}

/** Redacts credentials for logs. */
export function describeConnection(c: RedisSettings): string {
  if (c.mode === 'standalone') {
    try {
      const u = new URL(c.url);
      return `${u.protocol}//${u.host}`;
    } catch {
      return 'redis';
    }
  }
  const list = (c.mode === 'sentinel' ? c.sentinels : c.nodes).map((e) => `${e.host}:${e.port}`).join(',');
  return c.mode === 'sentinel' ? `sentinel ${c.name} via ${list}` : `cluster ${list}`;
}

export class RedisCoordinator implements Coordinator {
  private readonly redis: ScriptedClient;
  private readonly subscriber: Client;
  private readonly connection: RedisSettings;
  private readonly prefix: string;
  private readonly channel: string;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly retryBudgetMs: number;
  private readonly replicaAckTimeoutMs: number;
  private readonly attemptTimeoutMs: number;
  private readonly handlers: ((command: ClusterCommand) => void)[] = [];
  private wasDown = false;
  private closed = false;
  private readonly subscriberPing: NodeJS.Timeout | undefined;
  private subscribed: Promise<boolean>;

  constructor(options: RedisCoordinatorOptions) {
    this.clock = options.clock;
    this.logger = options.logger;
    this.prefix = options.keyPrefix ?? 'cd:';
    this.channel = `${this.prefix}commands`;
    this.retryBudgetMs = options.retryBudgetMs ?? 5000;
    this.replicaAckTimeoutMs = options.replicaAckTimeoutMs ?? 500;
    const connection: RedisSettings | null =
      options.connection ??
      (options.url !== undefined
        ? {
            mode: 'standalone',
            url: options.url,
            tls: options.url.startsWith('rediss://') ? { ca: null } : null,
          }
        : null);
    if (connection === null) throw new Error('RedisCoordinator needs connection or url');
    this.connection = connection;

    const maxDelay = options.maxReconnectDelayMs ?? 2000;
    // Exponential from 50 ms, capped, with jitter so a fleet does not reconnect in lockstep.
    const backoff = (times: number) =>
      Math.round(Math.min(50 * 2 ** Math.min(times, 16), maxDelay) * (0.5 + Math.random() / 2));
    const commandTimeout = options.commandTimeoutMs ?? 2000;
    // A ticket or lock call is a write, then maybe a WAIT for a replica: two round trips.
    this.attemptTimeoutMs = commandTimeout + this.replicaAckTimeoutMs + 500;
    const connectTimeout = options.connectTimeoutMs ?? 3000;
    // A connection silent this long with a command in flight is dropped and dialed again: the longest
    // a healthy answer takes is one attempt (a write and a WAIT for a replica).
    const socketTimeout = this.attemptTimeoutMs;

    this.redis = defineScripts(
      this.makeClient(connection, {
        backoff,
        connectTimeout,
        commandTimeout,
        socketTimeout,
        name: 'clouddesk',
        subscriber: false,
      }),
    );
    // The subscriber keeps its (tiny) offline queue so the SUBSCRIBE sent before the first connect
    // is not lost; ioredis re-subscribes by itself after every reconnect (on a cluster, on another
    // node when its node goes away).
    this.subscriber = this.makeClient(connection, {
      backoff,
      connectTimeout,
      commandTimeout: undefined,
      socketTimeout,
      name: 'clouddesk-sub',
      subscriber: true,
    });
    // Only when connected: a PING queued offline would pile up during an outage.
    const sub = this.subscriber;
    if (sub instanceof Redis) {
      this.subscriberPing = setInterval(() => {
        if (sub.status === 'ready') sub.ping().catch(() => undefined);
      }, socketTimeout);
      this.subscriberPing.unref();
    }
    (this.subscriber as Redis).on('message', (channel: string, message: string) =>
      this.deliver(channel, message),
    );
    this.subscribed = this.subscriber.subscribe(this.channel).then(
      () => true,
      (e: unknown) => {
        if (!this.closed) this.logger.warn({ err: e }, 'redis subscribe failed; retried on reconnect');
        return false;
      },
    );

    for (const [name, client] of [
      ['commands', this.redis as Client as Redis],
      ['subscriber', this.subscriber as Redis],
    ] as const) {
      // Without an 'error' listener ioredis errors would crash the process; log state changes only,
      // not every failed reconnect attempt.
      client.on('error', (err: Error) => {
        if (this.closed || this.wasDown) return;
        this.wasDown = true;
        this.logger.warn(
          { err, connection: name, redis: describeConnection(this.connection) },
          'redis unreachable; coordination calls retry, then fail until it returns',
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

  private makeClient(
    c: RedisSettings,
    o: {
      backoff: (times: number) => number;
      connectTimeout: number;
      commandTimeout: number | undefined;
      socketTimeout: number;
      name: string;
      subscriber: boolean;
    },
  ): Client {
    const perConnection: RedisOptions = {
      connectTimeout: o.connectTimeout,
      socketTimeout: o.socketTimeout,
      connectionName: o.name,
      ...(o.commandTimeout !== undefined ? { commandTimeout: o.commandTimeout } : {}),
      ...(o.subscriber ? { autoResubscribe: true } : {}),
    };
    const queueing: RedisOptions = o.subscriber
      ? { enableOfflineQueue: true, maxRetriesPerRequest: null }
      : { enableOfflineQueue: false, maxRetriesPerRequest: 0 };
    if (c.mode === 'standalone') {
      return new Redis(c.url, {
        ...perConnection,
        ...queueing,
        retryStrategy: o.backoff,
        lazyConnect: false,
        ...(c.tls ? { tls: tlsOptions(c.tls), Connector: ErrorSafeConnector } : {}),
      });
    }
    if (c.mode === 'sentinel') {
      return new Redis({
        ...perConnection,
        ...queueing,
        sentinels: c.sentinels.map((e) => ({ host: e.host, port: e.port })),
        name: c.name,
        role: 'master',
        ...(c.sentinelPassword !== null ? { sentinelPassword: c.sentinelPassword } : {}),
        ...(c.natMap && Object.keys(c.natMap).length > 0 ? { natMap: c.natMap } : {}),
        ...(c.username !== null ? { username: c.username } : {}),
        ...(c.password !== null ? { password: c.password } : {}),
        ...(c.tls
          ? { tls: tlsOptions(c.tls), sentinelTLS: tlsOptions(c.tls), enableTLSForSentinelMode: true }
          : {}),
        retryStrategy: o.backoff,
        sentinelRetryStrategy: o.backoff,
        sentinelReconnectStrategy: o.backoff,
        // Subscribe to the sentinels' +switch-master: reconnect to the new primary as soon as it
        // is elected instead of on the next backoff step.
        failoverDetector: true,
        lazyConnect: false,
      });
    }
    const cluster: ClusterOptions = {
      redisOptions: {
        ...perConnection,
        ...(c.username !== null ? { username: c.username } : {}),
        ...(c.password !== null ? { password: c.password } : {}),
        ...(c.tls ? { tls: tlsOptions(c.tls), Connector: ErrorSafeConnector } : {}),
      },
      enableOfflineQueue: o.subscriber,
      maxRedirections: 16,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100,
      retryDelayOnMoved: 0,
      clusterRetryStrategy: o.backoff,
      scaleReads: 'master',
      slotsRefreshTimeout: 2000,
      lazyConnect: false,
      // Host names in the slot map stay as given (TLS certificates name them).
      ...(c.tls ? { dnsLookup: (address, callback) => callback(null, address) } : {}),
    };
    return new Cluster(
      c.nodes.map((e) => ({ host: e.host, port: e.port })),
      cluster,
    );
  }

  /** The namespace of this coordinator's keys, for rate limiters that share the connection. */
  get keyPrefix(): string {
    return this.prefix;
  }

  /** The command connection, for rate limiters that share it (rate-limits.ts). */
  get client(): Client {
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

  /** `<prefix><kind>:{<id>}`: the id is the hash tag (the slot on a Redis Cluster). */
  private key(kind: string, id: string): string {
    return `${this.prefix}${kind}:{${id}}`;
  }

  /**
   * Runs fn, retrying what a failover explains until the budget is spent; every failure then
   * becomes one clear 503. Callers pass only commands that are safe to run twice.
   */
  retrying<T>(fn: () => Promise<T>): Promise<T> {
    return this.call(fn);
  }

  private async call<T>(fn: () => Promise<T>, budgetMs = this.retryBudgetMs): Promise<T> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new AppError('COORDINATION_UNAVAILABLE', { message: 'Coordination is closed' });
      try {
        return await this.bounded(fn);
      } catch (e) {
        // AppErrors and non-errors (a rate limiter's RateLimiterRes) are answers, not failures.
        if (isAppError(e) || !(e instanceof Error)) throw e;
        const delay = Math.min(50 * 2 ** attempt, 500);
        if (!isTransientRedisError(e) || Date.now() - started + delay > budgetMs) {
          // Retry-After: a failover this call did not outlast may take about one more budget.
          throw new AppError('COORDINATION_UNAVAILABLE', {
            cause: e,
            details: { retryAfterSeconds: Math.max(1, Math.ceil(this.retryBudgetMs / 1000)) },
          });
        }
        // A pipeline that met a moved slot does not make ioredis refresh its slot map by itself.
        if (this.redis instanceof Cluster && /^(MOVED|ASK|CLUSTERDOWN)\b/.test(e.message)) {
          this.redis.refreshSlotsCache(() => undefined);
        }
        await this.settle(delay);
      }
    }
  }

  /**
   * One attempt, bounded: ioredis times out single commands, but a pipeline queued on a cluster node
   * that died mid-failover can wait for good. Past the command timeout (plus a margin) the attempt
   * counts as failed; a late answer is ignored (every command here is safe to have run anyway).
   */
  private async bounded<T>(fn: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer from Redis within ${this.attemptTimeoutMs} ms`)),
        this.attemptTimeoutMs,
      );
    });
    const attempt = fn();
    attempt.catch(() => undefined);
    try {
      return await Promise.race([attempt, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits up to `ms`, less if the command connection becomes ready again meanwhile. */
  private async settle(ms: number): Promise<void> {
    if (this.redis.status === 'ready') {
      await sleep(ms);
      return;
    }
    const ac = new AbortController();
    try {
      await Promise.race([
        sleep(ms, undefined, { signal: ac.signal }),
        once(this.redis, 'ready', { signal: ac.signal }),
      ]);
    } catch {
      // aborted: the other one won
    } finally {
      ac.abort();
    }
  }

  /**
   * After a write whose loss in a failover would matter: waits until one replica has it, when the
   * primary has replicas. 'lagging' means replicas exist and none acknowledged within the timeout.
   * The ROLE in the same pipeline as the write goes to the key's primary (the same node on a cluster).
   */
  private async afterWrite<T>(
    write: (p: ReturnType<Client['pipeline']>) => unknown,
    key: string,
  ): Promise<{ result: T; replicated: 'confirmed' | 'no-replica' | 'lagging' }> {
    const pipeline = this.redis.pipeline();
    write(pipeline);
    pipeline.role();
    const replies = (await pipeline.exec()) ?? [];
    const [writeErr, result] = replies[0] ?? [new Error('missing pipeline reply'), null];
    if (writeErr) throw writeErr;
    const [roleErr, role] = replies[1] ?? [null, null];
    // ROLE refused (a managed Redis may rename it) or odd: nothing to wait for.
    const replicas =
      !roleErr && Array.isArray(role) && role[0] === 'master' && Array.isArray(role[2]) ? role[2].length : 0;
    if (replicas === 0) return { result: result as T, replicated: 'no-replica' };
    const wait = this.redis.pipeline();
    wait.exists(key); // routes the WAIT to the key's node on a cluster
    wait.call('WAIT', '1', String(this.replicaAckTimeoutMs));
    const acks = (await wait.exec()) ?? [];
    const [waitErr, acked] = acks[1] ?? [new Error('missing pipeline reply'), 0];
    if (waitErr) throw waitErr;
    return { result: result as T, replicated: Number(acked) >= 1 ? 'confirmed' : 'lagging' };
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

  // Retry: SET of a fresh random key with the same value is idempotent. Waiting for a replica keeps
  // a ticket handed out just before a failover usable after it (a replica that lags only costs the
  // viewer a fresh ticket, so the ticket is handed out either way).
  issueTicket(claims: TicketClaims, ttlMs: number): Promise<string> {
    const ticket = randomBytes(24).toString('base64url');
    const key = this.key('ticket', ticket);
    const value = JSON.stringify({ userId: claims.userId, sessionId: claims.sessionId, guest: claims.guest });
    return this.call(async () => {
      await this.afterWrite((p) => p.set(key, value, 'PX', Math.max(1, Math.round(ttlMs))), key);
      return ticket;
    });
  }

  // Retry: a GETDEL that ran but whose answer was lost makes the retry find nothing (null): the
  // ticket is refused, never accepted twice. The redemption counts only once a replica has the
  // deletion; a primary whose replicas lag answers 503 and the ticket is spent.
  redeemTicket(ticket: string): Promise<TicketClaims | null> {
    if (!TICKET_PATTERN.test(ticket)) return Promise.resolve(null);
    const key = this.key('ticket', ticket);
    return this.call(async () => {
      const { result, replicated } = await this.afterWrite<string | null>((p) => p.getdel(key), key);
      const claims = parseClaims(result);
      if (claims !== null && replicated === 'lagging') {
        throw new AppError('COORDINATION_UNAVAILABLE', {
          message: 'No Redis replica confirmed the ticket was used; get a fresh ticket',
        });
      }
      return claims;
    });
  }

  // Retry: SET of the same key and value is idempotent.
  putOnce(kind: OnceKind, id: string, value: string, ttlMs: number): Promise<void> {
    const key = this.key(`once:${kind}`, id);
    return this.call(async () => {
      await this.redis.set(key, value, 'PX', Math.max(1, Math.round(ttlMs)));
    });
  }

  // As redeemTicket: a lost GETDEL answer makes the retry find nothing, so a value is never taken twice,
  // and the taking counts only once a replica has the deletion.
  takeOnce(kind: OnceKind, id: string): Promise<string | null> {
    if (!TICKET_PATTERN.test(id)) return Promise.resolve(null);
    const key = this.key(`once:${kind}`, id);
    return this.call(async () => {
      const { result, replicated } = await this.afterWrite<string | null>((p) => p.getdel(key), key);
      if (result !== null && replicated === 'lagging') {
        throw new AppError('COORDINATION_UNAVAILABLE', {
          message: 'No Redis replica confirmed the sign-in step was used; sign in again',
        });
      }
      return result;
    });
  }

  // Retry: the script confirms a lock to the nonce that took it, so a retried grant is not refused
  // by its own first attempt.
  tryLock(key: string, ttlMs: number): Promise<LockHandle | null> {
    const nonce = randomBytes(12).toString('base64url');
    const lockKey = this.key('lock', key);
    const fenceKey = this.key('fence', key);
    return this.call(async () => {
      const { result } = await this.afterWrite<string | null>(
        (p) =>
          (p as unknown as Scripts).cdLock(
            lockKey,
            fenceKey,
            nonce,
            String(Math.max(1, Math.round(ttlMs))),
            String(FENCE_TTL_MS),
          ),
        lockKey,
      );
      if (result === null) return null;
      return { key, token: result, fence: Number(result.slice(0, result.indexOf(':'))) };
    });
  }

  // Retry: compare-and-delete is idempotent.
  unlock(handle: LockHandle): Promise<void> {
    return this.call(async () => {
      await this.redis.cdUnlock(this.key('lock', handle.key), handle.token);
    });
  }

  // Retry: extending twice is extending.
  extendLock(handle: LockHandle, ttlMs: number): Promise<boolean> {
    return this.call(async () => {
      const extended = await this.redis.cdExtendLock(
        this.key('lock', handle.key),
        handle.token,
        String(Math.max(1, Math.round(ttlMs))),
      );
      return extended === 1;
    });
  }

  withLock<T>(key: string, ttlMs: number, waitMs: number, fn: () => Promise<T>): Promise<T> {
    return withLockPolling(this, key, ttlMs, waitMs, fn);
  }

  // Retry: renewing a lease twice is renewing it.
  putViewer(lease: ViewerLease, ttlMs: number): Promise<void> {
    return this.call(async () => {
      const now = this.clock.now();
      await this.redis.cdPutViewer(
        this.key('viewers', lease.sessionId),
        this.key('viewer-nodes', lease.sessionId),
        lease.viewerId,
        String(now),
        String(now + ttlMs),
        encodeLeaseNode(lease),
      );
    });
  }

  // Retry: a retried add of a viewer that was added holds its lease already, and renews.
  addViewerWithin(lease: ViewerLease, ttlMs: number, max: number): Promise<boolean> {
    return this.call(async () => {
      const now = this.clock.now();
      const added = await this.redis.cdAddViewerWithin(
        this.key('viewers', lease.sessionId),
        this.key('viewer-nodes', lease.sessionId),
        lease.viewerId,
        String(now),
        String(now + ttlMs),
        encodeLeaseNode(lease),
        String(max),
      );
      return added === 1;
    });
  }

  removeViewer(sessionId: string, viewerId: string): Promise<void> {
    return this.call(async () => {
      await this.redis.zrem(this.key('viewers', sessionId), viewerId);
      await this.redis.hdel(this.key('viewer-nodes', sessionId), viewerId);
    });
  }

  // Per session: the live ids (ZRANGEBYSCORE) and their nodes (HGETALL), both in the session's slot.
  listViewers(sessionIds: readonly string[]): Promise<Map<string, ViewerLease[]>> {
    return this.call(async () => {
      const out = new Map<string, ViewerLease[]>();
      const now = this.clock.now();
      const results = await Promise.all(
        sessionIds.map(async (sessionId) => {
          const [ids, nodes] = await Promise.all([
            this.redis.zrangebyscore(this.key('viewers', sessionId), `(${now}`, '+inf'),
            this.redis.hgetall(this.key('viewer-nodes', sessionId)),
          ]);
          return ids.map((viewerId) => decodeLeaseNode(sessionId, viewerId, nodes[viewerId]));
        }),
      );
      sessionIds.forEach((id, i) => out.set(id, results[i]!));
      return out;
    });
  }

  // One ZCOUNT per session, each in its own slot: no command spans slots (ioredis pipelines them
  // per connection on a single server).
  countViewers(sessionIds: readonly string[]): Promise<Map<string, number>> {
    return this.call(async () => {
      const counts = new Map<string, number>();
      if (sessionIds.length === 0) return counts;
      const now = this.clock.now();
      // '(' makes the bound exclusive: a lease expiring exactly now no longer counts (as in memory).
      const results = await Promise.all(
        sessionIds.map((id) => this.redis.zcount(this.key('viewers', id), `(${now}`, '+inf')),
      );
      sessionIds.forEach((id, i) => counts.set(id, Number(results[i])));
      return counts;
    });
  }

  // Retry: a command delivered twice is acted on twice, and both commands are idempotent (ending an
  // ended session, signing out a signed-out user).
  publish(command: ClusterCommand): Promise<void> {
    return this.call(async () => {
      await this.redis.publish(this.channel, JSON.stringify(command));
    });
  }

  onCommand(handler: (command: ClusterCommand) => void): void {
    this.handlers.push(handler);
  }

  // No retry: health checks want the state now.
  ping(): Promise<void> {
    return this.call(async () => {
      if (this.redis instanceof Cluster) {
        // Every primary must answer: a cluster with one shard down cannot serve every key.
        await Promise.all(this.redis.nodes('master').map((n) => n.ping()));
        if (this.redis.nodes('master').length === 0) throw new Error('no cluster primary known');
      } else {
        await this.redis.ping();
      }
    }, 0);
  }

  state(): 'up' | 'down' {
    return this.redis.status === 'ready' && this.subscriber.status === 'ready' ? 'up' : 'down';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.subscriberPing);
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
          // disconnected below either way
        }
        // Also ends what quit leaves behind: the sentinel connections of the failover detector.
        client.disconnect();
      }),
    );
  }
}
