// All configuration: every environment variable is read here, once, validated, defaulted and turned
// into one frozen typed object. Every bad value is reported together (ConfigError). Nothing else in
// the code reads process.env.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, existsSync, chmodSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import type { SshPoolOptions } from '../ssh/ssh.types.js';
import { isCidr } from '../instances/address-guard.js';
import type { TrustProxy } from '../http/client-address.js';

export type DesktopTransport = 'auto' | 'unix' | 'tcp';
export type DesktopWallpaper = 'plain' | 'keep';

export interface RedisEndpoint {
  host: string;
  port: number;
}

/** TLS towards Redis (rediss://): the CA file's PEM text, or null for the system's CAs. */
export interface RedisTls {
  ca: string | null;
}

/** How to reach Redis: one server (REDIS_URL), through Sentinel, or a Redis Cluster. */
export type RedisSettings =
  | { mode: 'standalone'; url: string; tls: RedisTls | null }
  | {
      mode: 'sentinel';
      sentinels: RedisEndpoint[];
      name: string;
      sentinelPassword: string | null;
      /** REDIS_SENTINEL_NAT_MAP: an address the sentinels announce → the address this gateway reaches it at. */
      natMap?: Record<string, RedisEndpoint>;
      username: string | null;
      password: string | null;
      tls: RedisTls | null;
    }
  | {
      mode: 'cluster';
      nodes: RedisEndpoint[];
      username: string | null;
      password: string | null;
      tls: RedisTls | null;
    };

export interface OidcSettings {
  issuer: string;
  clientId: string;
  /** null: a public client (PKCE only). */
  clientSecret: string | null;
  scopes: string[];
  /** Email domains allowed to sign in (lower case); empty = any. */
  allowedDomains: string[];
  /** Members of any of these groups are admins, others users; empty = roles are not mapped. */
  adminGroups: string[];
  groupsClaim: string;
  /** What the sign-in button says: "Sign in with <name>". */
  name: string;
  /** The callback URL registered at the provider; null = this request's origin + /api/auth/oidc/callback. */
  redirectUri: string | null;
}

export interface Config {
  env: string;
  http: {
    host: string;
    port: number;
    /** TRUST_PROXY: false, true (every hop) or the proxies' addresses (see http/client-address.ts). */
    trustProxy: TrustProxy;
    bodyLimitBytes: number;
    publicDir: string | null;
    /** API_DOCS: the OpenAPI document at /api/openapi.json and the reference page at /api/docs. */
    apiDocs: boolean;
    /**
     * HTTP_LISTEN_BACKLOG: connections the kernel holds for the listener until the loop accepts them
     * (capped by net.core.somaxconn). Node's 511 filled in a burst of viewers while the loop was busy,
     * and connects beyond it waited for SYN retransmits (1 s, 3 s, 7 s …) and timed out.
     */
    listenBacklog: number;
  };
  dataDir: string;
  databaseUrl: string | null;
  /** How long a request retries a safe statement across a database failover before 503 (0 = never). */
  databaseRetryMs: number;
  /** Redis for coordination across processes; null = in-process (a single node). */
  redis: RedisSettings | null;
  /** How long a coordination call keeps retrying through a Redis failover (0 = fail at once). */
  redisRetryMs: number;
  secrets: {
    jwtAccessSecret: string;
    jwtRefreshSecret: string;
    /** The key new ciphertexts are sealed with, and older keys still accepted for reading. */
    encryption: { currentKeyId: string; keys: ReadonlyMap<string, Buffer> };
    generated: boolean;
  };
  auth: {
    accessTtlSeconds: number;
    refreshTtlSeconds: number;
    /** How long after its rotation a refresh token may rotate again (its answer was lost); 0 = never. */
    refreshReuseGraceMs: number;
    /** REGISTRATION: `open` (anyone signs up) or `closed` (only with an admin's invite). */
    registration: 'open' | 'closed';
    /** The first account of an empty install becomes admin (single node only: no REDIS_URL). */
    firstUserBecomesAdmin: boolean;
    /** AUTH_LOCAL: password sign-in and registration; off leaves only OIDC. */
    local: boolean;
    /** AUTH_REQUIRE_2FA: every local account must turn TOTP on before it gets a token. */
    require2fa: boolean;
  };
  /** Company sign-in (OIDC_ISSUER set), or null. */
  oidc: OidcSettings | null;
  audit: { retentionDays: number };
  shares: {
    /** SHARE_MAX_MINUTES: the longest a share may last. */
    maxMinutes: number;
    /** SHARE_GUESTS: guests must be signed in, or anyone with the link may join under a display name. */
    guests: 'signed-in' | 'anyone';
  };
  sessions: {
    /** SESSION_MAX_VIEWERS: viewers of one session across the cluster; guests are refused past it. */
    maxViewers: number;
    maxPerUser: number;
    idleTimeoutMs: number;
    cleanupIntervalMs: number;
    ticketTtlMs: number;
    activityFlushMs: number;
  };
  instances: {
    allowedCidrs: string[];
    deniedCidrs: string[];
    /** Also refuse private and other non-public ranges (for fleets with public addresses only). */
    denyPrivate: boolean;
  };
  ssh: Required<
    Pick<
      SshPoolOptions,
      | 'maxChannelsPerConnection'
      | 'keepaliveIntervalMs'
      | 'keepaliveCountMax'
      | 'maxHandshakesPerTarget'
      | 'idleCloseMs'
      | 'readyTimeoutMs'
      | 'execTimeoutMs'
      | 'streamWindowBytes'
    >
  >;
  desktop: {
    displayMin: number;
    displayMax: number;
    transport: DesktopTransport;
    startTimeoutMs: number;
    geometry: string;
    /** Xvnc's -FrameRate: updates per second it sends at most (TigerVNC's own default is 60). */
    maxFps: number;
    /** 'plain': a solid background in CloudDesk's xfce sessions; 'keep': the user's own wallpaper. */
    wallpaper: DesktopWallpaper;
  };
  /**
   * Admission control for desktop starts and the background stop (sessions/start-queue.ts,
   * sessions/desktop-stopper.ts). Every bound is per gateway process.
   */
  admission: {
    /** Desktop starts running at once in this process. */
    startsInFlight: number;
    /** Of those, at most this many on one instance (host and SSH port). */
    startsInFlightPerInstance: number;
    /** Connects waiting for a start slot; past this they are answered 503 OVERLOADED at once. */
    startQueue: number;
    /** Bound on a connect's answer, line and start: past it (or expected past it) 503 OVERLOADED. */
    startQueueWaitMs: number;
    /** Desktop stops (after a disconnect or the idle timeout) running at once in this process. */
    stopsInFlight: number;
  };
  /**
   * What every viewer gets at attach (rfb/viewer-policy.ts): quality bounds and a compression floor applied
   * to SetEncodings, a desktop→viewer budget (0 = none) and a ceiling for SetDesktopSize.
   */
  caps: {
    quality: { min: number; max: number };
    compressionMin: number;
    sessionMaxKbps: number;
    maxGeometry: { width: number; height: number };
  };
  relay: {
    maxPayloadBytes: number;
    pingIntervalMs: number;
    missedPongsAllowed: number;
    highWaterBytes: number;
    stallTimeoutMs: number;
    preOpenBufferBytes: number;
  };
  files: {
    /** Largest file one upload or download may move. */
    maxBytes: number;
    /** Uploads and downloads one user may have in flight at once (per gateway process). */
    transfersPerUser: number;
    /** Bytes of SFTP requests an upload or download keeps waiting for the instance (the per-transfer bound). */
    windowBytes: number;
    /** How long a download link (GET …/files/content?token=) stays valid. */
    downloadLinkTtlMs: number;
  };
  cors: { origins: string[] };
  rateLimit: {
    windowMs: number;
    maxRequests: number;
    authFailuresPerAccountIp: number;
    authFailuresPerIp: number;
    authWindowMs: number;
    authBlockMs: number;
    authAttemptsPerIp: number;
    wsConnectsPerMinute: number;
  };
  metrics: { token: string | null; port: number | null };
  log: { level: string };
  /** LOOP_LONG_TASK_MS: attribute event-loop stretches longer than this (0 = off; observability/long-tasks.ts). */
  loopLongTaskMs: number;
  shutdown: {
    /** SHUTDOWN_TIMEOUT_MS: SIGTERM to exit, everything included (the force-exit deadline). */
    timeoutMs: number;
    /**
     * SHUTDOWN_READY_GRACE_MS: the first part of timeoutMs, spent not ready (/api/ready 503) but still
     * serving the API, until the balancer's health checks have taken this gateway out (issue 11).
     */
    readyGraceMs: number;
  };
  cluster: { workers: number; nodeId: string };
  /**
   * GATEWAY_ROLE: what this process serves. `all` (the default): everything. `api`: the API, the web
   * client and desktop control, no viewer WebSockets. `relay`: viewer WebSockets (`/vnc`) and the
   * health checks only, so no sign-in, connect or JSON body ever runs on a relay's event loop; the
   * load balancer sends `/vnc` to relays and the rest to api processes (deploy/haproxy.cfg). Roles other
   * than `all` share state, so they need PostgreSQL and Redis.
   */
  role: GatewayRole;
  /**
   * GC_HEAP_GROWING_PERCENT: how far V8 lets the old generation grow past what survived the last full
   * collection before it starts the next one (0 = V8's own choice). See lib/heap-growth.ts.
   */
  heapGrowingPercent: number;
}

export type GatewayRole = 'all' | 'api' | 'relay';

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

/**
 * The downstream budget per viewer a gateway ships with, in kbit/s (issue 13, docs/bandwidth.md). Bursts
 * (scrolling, dragging, video) are almost all of a desktop's bytes and are what a budget bounds; typing
 * and small updates pass at once on the bucket's burst allowance. At 1.5 Mbit/s the office minute stays
 * under 400 kbit/s however fast the desktop can draw, since the bursts are ~20 % of it.
 */
export const DEFAULT_SESSION_MAX_KBPS = 1500;
/** See lib/heap-growth.ts: at 200 × 5 Mbit/s, 100 still left 4 full collections in 30 s and 200 none but the one forced. */
export const DEFAULT_HEAP_GROWING_PERCENT = 200;

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `15m`, `7d`, `30s`, `500ms` or a plain number of seconds → milliseconds. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * durationUnits[m[2] ?? 's']!;
}

class Reader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env) {}

  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  string(name: string, def: string): string {
    return this.raw(name) ?? def;
  }

  optional(name: string): string | null {
    return this.raw(name) ?? null;
  }

  int(name: string, def: number, min: number, max: number): number {
    const v = this.raw(name);
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      this.problems.push(`${name}=${v} must be a whole number from ${min} to ${max}`);
      return def;
    }
    return n;
  }

  duration(name: string, def: string): number {
    const v = this.raw(name) ?? def;
    const ms = parseDuration(v);
    if (ms === null || ms <= 0) {
      this.problems.push(`${name}=${v} must be a duration like 15m, 7d, 30s or 500ms`);
      return parseDuration(def)!;
    }
    return ms;
  }

  oneOf<T extends string>(name: string, def: T, allowed: readonly T[]): T {
    const v = this.raw(name);
    if (v === undefined) return def;
    if (!(allowed as readonly string[]).includes(v)) {
      this.problems.push(`${name}=${v} must be one of ${allowed.join(', ')}`);
      return def;
    }
    return v as T;
  }

  bool(name: string, def: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined) return def;
    if (['1', 'true', 'yes', 'on'].includes(v.toLowerCase())) return true;
    if (['0', 'false', 'no', 'off'].includes(v.toLowerCase())) return false;
    this.problems.push(`${name}=${v} must be true or false`);
    return def;
  }

  list(name: string, def: string[] = []): string[] {
    const v = this.raw(name);
    if (v === undefined) return def;
    return v
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
  }
}

function decodeKey(text: string): Buffer | null {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  const b = Buffer.from(text, 'base64');
  return b.length === 32 ? b : null;
}

interface StoredSecrets {
  jwtAccessSecret: string;
  jwtRefreshSecret: string;
  encryptionKey: string;
}

/**
 * Secrets the operator did not set are generated once and kept in `<dataDir>/secrets.json` (mode
 * 0600), so a single node works with no setup and survives restarts.
 */
function loadOrCreateSecrets(dataDir: string): StoredSecrets {
  const file = join(dataDir, 'secrets.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as StoredSecrets;
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const secrets: StoredSecrets = {
    jwtAccessSecret: randomBytes(32).toString('base64url'),
    jwtRefreshSecret: randomBytes(32).toString('base64url'),
    encryptionKey: randomBytes(32).toString('hex'),
  };
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  chmodSync(file, 0o600);
  return secrets;
}

export function loadConfig(env: Env = process.env): Config {
  // Validate everything first with stand-in secrets, so a bad configuration writes nothing to disk;
  // only a valid one generates (or reads) the data folder's secrets.
  parseConfig(env, () => placeholderSecrets);
  return parseConfig(env, loadOrCreateSecrets);
}

const placeholderSecrets: StoredSecrets = {
  jwtAccessSecret: 'x'.repeat(43),
  jwtRefreshSecret: 'x'.repeat(43),
  encryptionKey: '0'.repeat(64),
};

function parseConfig(env: Env, obtainSecrets: (dataDir: string) => StoredSecrets): Config {
  const r = new Reader(env);
  const dataDir = resolve(r.string('DATA_DIR', './data'));
  const databaseUrl = r.optional('DATABASE_URL');
  const redis = parseRedis(r);
  const shutdownTimeoutMs = r.int('SHUTDOWN_TIMEOUT_MS', 10_000, 100, 600_000);
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    r.problems.push('DATABASE_URL must be a postgres:// or postgresql:// URL');
  }

  // Secrets: from the environment, or generated into the data folder on a single node. A shared
  // database means several processes must agree on them, so there they must be set explicitly.
  const envAccess = r.optional('JWT_ACCESS_SECRET');
  const envRefresh = r.optional('JWT_REFRESH_SECRET');
  const envKey = r.optional('ENCRYPTION_KEY');
  const missing = [
    envAccess ? null : 'JWT_ACCESS_SECRET',
    envRefresh ? null : 'JWT_REFRESH_SECRET',
    envKey ? null : 'ENCRYPTION_KEY',
  ].filter((x): x is string => x !== null);
  let generated = false;
  let stored: StoredSecrets | null = null;
  if (missing.length > 0) {
    if (databaseUrl !== null) {
      r.problems.push(
        `${missing.join(', ')} must be set when DATABASE_URL is set (every gateway process must share them)`,
      );
    } else {
      stored = obtainSecrets(dataDir);
      generated = true;
    }
  }
  for (const [name, value] of [
    ['JWT_ACCESS_SECRET', envAccess],
    ['JWT_REFRESH_SECRET', envRefresh],
  ] as const) {
    if (value !== null && value.length < 32) r.problems.push(`${name} must be at least 32 characters`);
  }
  const keyText = envKey ?? stored?.encryptionKey ?? '';
  const currentKey = decodeKey(keyText);
  if (keyText !== '' && currentKey === null) {
    r.problems.push('ENCRYPTION_KEY must be 32 bytes as 64 hex characters or base64');
  }
  const currentKeyId = r.string('ENCRYPTION_KEY_ID', 'k1');
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(currentKeyId))
    r.problems.push('ENCRYPTION_KEY_ID must be 1-32 of [A-Za-z0-9_-]');
  const keys = new Map<string, Buffer>();
  // ENCRYPTION_PREVIOUS_KEYS=id:key,id:key — older keys kept for reading while rows are re-sealed.
  for (const entry of r.list('ENCRYPTION_PREVIOUS_KEYS')) {
    const [id, key] = entry.split(':');
    const decoded = key ? decodeKey(key) : null;
    if (!id || !decoded) r.problems.push(`ENCRYPTION_PREVIOUS_KEYS entry "${id ?? ''}:…" must be id:key`);
    else keys.set(id, decoded);
  }
  if (currentKey) keys.set(currentKeyId, currentKey);

  // Up to 65535 - 5900, the highest display whose VNC port (5900 + N, TCP transport) exists.
  const displayMin = r.int('VNC_DISPLAY_MIN', 1, 1, 59_635);
  const displayMax = r.int('VNC_DISPLAY_MAX', 10, 1, 59_635);
  if (displayMax < displayMin) r.problems.push('VNC_DISPLAY_MAX must not be below VNC_DISPLAY_MIN');

  const allowedCidrs = r.list('INSTANCE_ALLOWED_CIDRS');
  const deniedCidrs = r.list('INSTANCE_DENIED_CIDRS');
  for (const c of [...allowedCidrs, ...deniedCidrs]) {
    if (!isCidr(c)) r.problems.push(`"${c}" is not a CIDR block like 10.0.0.0/8 or fd00::/8`);
  }

  const geometry = r.string('DESKTOP_GEOMETRY', '1280x800');
  if (!/^\d{3,4}x\d{3,4}$/.test(geometry)) r.problems.push('DESKTOP_GEOMETRY must look like 1280x800');
  const maxGeometryText = r.string('DESKTOP_MAX_GEOMETRY', '1920x1080');
  const maxGeometry = parseGeometry(maxGeometryText);
  if (!maxGeometry) r.problems.push('DESKTOP_MAX_GEOMETRY must look like 1920x1080');
  const startGeometry = parseGeometry(geometry);
  if (maxGeometry && startGeometry) {
    if (startGeometry.width > maxGeometry.width || startGeometry.height > maxGeometry.height)
      r.problems.push(`DESKTOP_GEOMETRY ${geometry} must fit within DESKTOP_MAX_GEOMETRY ${maxGeometryText}`);
  }

  const qualityMin = r.int('QUALITY_MIN', 0, 0, 9);
  const qualityMax = r.int('QUALITY_MAX', 8, 0, 9);
  if (qualityMax < qualityMin) r.problems.push('QUALITY_MAX must not be below QUALITY_MIN');
  const sessionMaxKbps = r.int('SESSION_MAX_KBPS', DEFAULT_SESSION_MAX_KBPS, 0, 10_000_000);
  if (sessionMaxKbps > 0 && sessionMaxKbps < 100)
    r.problems.push('SESSION_MAX_KBPS must be 0 (no budget) or at least 100');

  const metricsPortRaw = r.raw('METRICS_PORT');
  const sessionTimeoutMinutes = r.int('SESSION_TIMEOUT_MINUTES', 30, 1, 7 * 24 * 60);

  const config: Config = {
    env: r.string('NODE_ENV', 'development'),
    http: {
      host: r.string('HOST', '0.0.0.0'),
      port: r.int('PORT', 3000, 0, 65535),
      trustProxy: readTrustProxy(r),
      bodyLimitBytes: r.int('HTTP_BODY_LIMIT_BYTES', 64 * 1024, 1024, 10 * 1024 * 1024),
      publicDir: r.optional('PUBLIC_DIR'),
      apiDocs: r.oneOf<'on' | 'off'>('API_DOCS', 'on', ['on', 'off']) === 'on',
      listenBacklog: r.int('HTTP_LISTEN_BACKLOG', 4096, 1, 1_000_000),
    },
    dataDir,
    databaseUrl,
    databaseRetryMs: r.int('DATABASE_RETRY_MS', 5000, 0, 60_000),
    redis,
    redisRetryMs: r.int('REDIS_RETRY_MS', 5000, 0, 60_000),
    secrets: {
      jwtAccessSecret: envAccess ?? stored?.jwtAccessSecret ?? '',
      jwtRefreshSecret: envRefresh ?? stored?.jwtRefreshSecret ?? '',
      encryption: { currentKeyId, keys },
      generated,
    },
    auth: {
      accessTtlSeconds: r.duration('JWT_ACCESS_EXPIRY', '15m') / 1000,
      refreshTtlSeconds: r.duration('JWT_REFRESH_EXPIRY', '7d') / 1000,
      refreshReuseGraceMs: r.int('REFRESH_REUSE_GRACE_MS', 10_000, 0, 600_000),
      // A cluster has no "first visitor": its admins are made with `clouddesk admin create`.
      registration: r.oneOf<'open' | 'closed'>('REGISTRATION', redis === null ? 'open' : 'closed', [
        'open',
        'closed',
      ]),
      firstUserBecomesAdmin: redis === null,
      local: r.oneOf<'enabled' | 'disabled'>('AUTH_LOCAL', 'enabled', ['enabled', 'disabled']) === 'enabled',
      require2fa: r.bool('AUTH_REQUIRE_2FA', false),
    },
    oidc: parseOidc(r),
    audit: { retentionDays: r.int('AUDIT_RETENTION_DAYS', 90, 1, 3650) },
    shares: {
      maxMinutes: r.int('SHARE_MAX_MINUTES', 1440, 1, 525_600),
      guests: r.oneOf<'signed-in' | 'anyone'>('SHARE_GUESTS', 'signed-in', ['signed-in', 'anyone']),
    },
    sessions: {
      maxViewers: r.int('SESSION_MAX_VIEWERS', 10, 1, 1000),
      maxPerUser: r.int('MAX_SESSIONS_PER_USER', 5, 1, 1000),
      idleTimeoutMs: sessionTimeoutMinutes * 60_000,
      cleanupIntervalMs: r.int('CLEANUP_INTERVAL_MS', 300_000, 100, 86_400_000),
      ticketTtlMs: r.int('TICKET_TTL_MS', 30_000, 1000, 600_000),
      activityFlushMs: r.int('ACTIVITY_FLUSH_MS', 5_000, 100, 600_000),
    },
    instances: { allowedCidrs, deniedCidrs, denyPrivate: r.bool('INSTANCE_DENY_PRIVATE', false) },
    ssh: {
      maxChannelsPerConnection: r.int('SSH_MAX_CHANNELS_PER_CONNECTION', 64, 1, 1000),
      keepaliveIntervalMs: r.int('SSH_KEEPALIVE_INTERVAL_MS', 10_000, 100, 600_000),
      keepaliveCountMax: r.int('SSH_KEEPALIVE_COUNT_MAX', 3, 1, 100),
      maxHandshakesPerTarget: r.int('SSH_MAX_HANDSHAKES_PER_INSTANCE', 4, 1, 100),
      idleCloseMs: r.int('SSH_IDLE_CLOSE_MS', 60_000, 100, 86_400_000),
      readyTimeoutMs: r.int('SSH_READY_TIMEOUT_MS', 20_000, 100, 600_000),
      execTimeoutMs: r.int('SSH_EXEC_TIMEOUT_MS', 30_000, 100, 600_000),
      streamWindowBytes: r.int('SSH_STREAM_WINDOW_BYTES', 512 * 1024, 0, 2 * 1024 * 1024),
    },
    desktop: {
      displayMin,
      displayMax,
      transport: r.oneOf<DesktopTransport>('DESKTOP_TRANSPORT', 'auto', ['auto', 'unix', 'tcp']),
      startTimeoutMs: r.int('DESKTOP_START_TIMEOUT_MS', 20_000, 1000, 600_000),
      geometry,
      maxFps: r.int('DESKTOP_MAX_FPS', 30, 1, 120),
      wallpaper: r.oneOf<DesktopWallpaper>('DESKTOP_WALLPAPER', 'plain', ['plain', 'keep']),
    },
    admission: {
      startsInFlight: r.int('DESKTOP_STARTS_IN_FLIGHT', 8, 1, 1000),
      startsInFlightPerInstance: r.int('DESKTOP_STARTS_IN_FLIGHT_PER_INSTANCE', 4, 1, 1000),
      startQueue: r.int('DESKTOP_START_QUEUE', 32, 0, 100_000),
      startQueueWaitMs: r.int('DESKTOP_START_QUEUE_WAIT_MS', 4_500, 1_000, 600_000),
      stopsInFlight: r.int('DESKTOP_STOPS_IN_FLIGHT', 4, 1, 1000),
    },
    caps: {
      quality: { min: qualityMin, max: qualityMax },
      compressionMin: r.int('COMPRESSION_MIN', 2, 0, 9),
      sessionMaxKbps,
      maxGeometry: maxGeometry ?? { width: 1920, height: 1080 },
    },
    relay: {
      maxPayloadBytes: r.int('WS_MAX_PAYLOAD_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
      pingIntervalMs: r.int('WS_PING_INTERVAL_MS', 30_000, 100, 600_000),
      missedPongsAllowed: r.int('WS_MISSED_PONGS', 2, 1, 10),
      highWaterBytes: r.int('RELAY_HIGH_WATER_BYTES', 256 * 1024, 16 * 1024, 64 * 1024 * 1024),
      stallTimeoutMs: r.int('RELAY_STALL_TIMEOUT_MS', 30_000, 100, 600_000),
      preOpenBufferBytes: r.int('RELAY_PRE_OPEN_BUFFER_BYTES', 64 * 1024, 1024, 16 * 1024 * 1024),
    },
    files: {
      maxBytes: r.int('FILE_TRANSFER_MAX_BYTES', 2 * 1024 ** 3, 1, Number.MAX_SAFE_INTEGER),
      transfersPerUser: r.int('FILE_TRANSFERS_PER_USER', 4, 1, 1000),
      windowBytes: r.int('FILE_TRANSFER_WINDOW_BYTES', 256 * 1024, 32 * 1024, 16 * 1024 * 1024),
      downloadLinkTtlMs: r.duration('FILE_DOWNLOAD_LINK_TTL', '5m'),
    },
    cors: { origins: r.list('CORS_ORIGIN') },
    rateLimit: {
      windowMs: r.int('RATE_LIMIT_WINDOW_MS', 900_000, 1000, 86_400_000),
      maxRequests: r.int('RATE_LIMIT_MAX_REQUESTS', 1000, 1, 10_000_000),
      authFailuresPerAccountIp: r.int('AUTH_MAX_FAILURES_PER_ACCOUNT_IP', 5, 1, 1_000_000),
      authFailuresPerIp: r.int('AUTH_MAX_FAILURES_PER_IP', 10, 1, 1_000_000),
      authWindowMs: r.int('AUTH_WINDOW_MS', 900_000, 1000, 86_400_000),
      authBlockMs: r.int('AUTH_BLOCK_MS', 900_000, 1000, 86_400_000),
      authAttemptsPerIp: r.int('AUTH_MAX_ATTEMPTS_PER_IP', 600, 1, 10_000_000),
      wsConnectsPerMinute: r.int('WS_MAX_CONNECTS_PER_MINUTE', 10, 1, 1_000_000),
    },
    metrics: {
      token: r.optional('METRICS_TOKEN'),
      port: metricsPortRaw === undefined ? null : r.int('METRICS_PORT', 9464, 0, 65535),
    },
    log: {
      level: r.oneOf('LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    },
    loopLongTaskMs: r.int('LOOP_LONG_TASK_MS', 0, 0, 60_000),
    shutdown: {
      timeoutMs: shutdownTimeoutMs,
      readyGraceMs: readShutdownReadyGrace(r, shutdownTimeoutMs, redis),
    },
    cluster: {
      workers: r.int('WORKERS', 1, 0, 256),
      nodeId: r.string('NODE_ID', `${process.pid}-${randomBytes(3).toString('hex')}`),
    },
    role: r.oneOf('GATEWAY_ROLE', 'all', ['all', 'api', 'relay']),
    heapGrowingPercent: r.int('GC_HEAP_GROWING_PERCENT', DEFAULT_HEAP_GROWING_PERCENT, 0, 1000),
  };

  // Worker processes share tickets, limits and viewer leases only through Redis: in-process
  // coordination per worker would refuse a ticket issued by a sibling.
  if (config.cluster.workers !== 1 && redis === null) {
    r.problems.push(
      'WORKERS (--workers) other than 1 needs Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES): worker processes coordinate through Redis',
    );
  }
  // A ticket issued by an api process is redeemed by a relay, and a relay's viewers are ended by an api
  // process's disconnect: only a shared database and Redis carry that between them.
  if (config.role !== 'all' && (databaseUrl === null || redis === null)) {
    r.problems.push(
      `GATEWAY_ROLE=${config.role} needs DATABASE_URL and Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES): api and relay processes share sessions, tickets and viewers through them`,
    );
  }
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return deepFreeze(config);
}

/** What a drain keeps, after the ready grace, for closing viewers and HTTP and the stores. */
export const SHUTDOWN_AFTER_GRACE_MS = 2_000;

/**
 * SHUTDOWN_READY_GRACE_MS. The balancer keeps sending to a gateway until its checks of /api/ready have
 * failed `fall` times, `inter` apart: 2 × 2 s with deploy/haproxy.cfg, plus a check in flight → 5 s by
 * default. Without Redis the gateway is the only node (embedded or single-process): no balancer has
 * another one to send to, so no grace. The grace is part of SHUTDOWN_TIMEOUT_MS and leaves
 * SHUTDOWN_AFTER_GRACE_MS of it for the rest; a default never breaks that rule, a value set does not
 * pass.
 */
function readShutdownReadyGrace(r: Reader, timeoutMs: number, redis: RedisSettings | null): number {
  const fits = Math.max(0, timeoutMs - SHUTDOWN_AFTER_GRACE_MS);
  const graceMs = r.int('SHUTDOWN_READY_GRACE_MS', redis === null ? 0 : Math.min(5_000, fits), 0, 600_000);
  if (graceMs > fits) {
    r.problems.push(
      `SHUTDOWN_READY_GRACE_MS=${graceMs} must leave ${SHUTDOWN_AFTER_GRACE_MS} ms of SHUTDOWN_TIMEOUT_MS=${timeoutMs} for closing viewers and connections (at most ${fits})`,
    );
  }
  return graceMs;
}

/** `host:port`, or `redis://host:port` / `rediss://host:port` (all entries of a list share the scheme). */
function parseEndpoints(
  r: Reader,
  name: string,
  defaultPort: number,
): { endpoints: RedisEndpoint[]; tls: boolean } {
  const entries = r.list(name);
  const endpoints: RedisEndpoint[] = [];
  const schemes = new Set<string>();
  for (const entry of entries) {
    const m = /^(?:(rediss?):\/\/)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?\/?$/.exec(entry);
    const port = m?.[3] === undefined ? defaultPort : Number(m[3]);
    if (!m || port < 1 || port > 65535) {
      r.problems.push(`${name}: "${entry}" must be host:port (optionally redis:// or rediss://)`);
      continue;
    }
    schemes.add(m[1] ?? 'redis');
    endpoints.push({ host: m[2]!.replace(/^\[(.*)\]$/, '$1'), port });
  }
  if (schemes.size > 1) r.problems.push(`${name}: use one scheme for every entry (redis:// or rediss://)`);
  return { endpoints, tls: schemes.has('rediss') };
}

/**
 * REDIS_SENTINEL_NAT_MAP=`host:port=host:port,…`: the addresses the sentinels announce (of themselves and
 * of the data servers), each mapped to the address this gateway reaches it at (NAT, port forwarding).
 */
function parseNatMap(r: Reader): Record<string, RedisEndpoint> {
  const map: Record<string, RedisEndpoint> = {};
  const endpoint = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
  for (const entry of r.list('REDIS_SENTINEL_NAT_MAP')) {
    const [from, to, ...rest] = entry.split('=');
    const f = endpoint.exec(from ?? '');
    const t = endpoint.exec(to ?? '');
    const ok = (m: RegExpExecArray | null) => m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
    if (rest.length > 0 || !ok(f) || !ok(t)) {
      r.problems.push(`REDIS_SENTINEL_NAT_MAP: "${entry}" must be host:port=host:port`);
      continue;
    }
    map[`${f![1]!.replace(/^\[(.*)\]$/, '$1')}:${f![2]}`] = {
      host: t![1]!.replace(/^\[(.*)\]$/, '$1'),
      port: Number(t![2]),
    };
  }
  return map;
}

/**
 * TRUST_PROXY: true/false as before, or the balancers' addresses (comma list of IPs, CIDRs, `loopback`,
 * `linklocal`, `uniquelocal`), as Fastify's trustProxy takes them: then an X-Forwarded-For hop is
 * believed only when it comes from one of them, so a client cannot put its own address in front.
 */
function readTrustProxy(r: Reader): TrustProxy {
  const v = r.raw('TRUST_PROXY');
  if (v === undefined || /^(true|false|1|0|yes|no|on|off)$/i.test(v)) return r.bool('TRUST_PROXY', false);
  const proxies = r.list('TRUST_PROXY');
  // proxy-addr alone would take "2" as 0.0.0.2: an address here is written out in full (what Node's
  // isIP and isCidr take, proxy-addr takes too).
  const named = ['loopback', 'linklocal', 'uniquelocal'];
  const bad = proxies.find((p) => !named.includes(p) && isIP(p) === 0 && !isCidr(p));
  if (bad !== undefined) {
    r.problems.push(
      `TRUST_PROXY: "${bad}" must be true, false, or a list of IPs, CIDRs, loopback, linklocal or uniquelocal`,
    );
    return false;
  }
  return proxies;
}

function readCaFile(r: Reader): string | null {
  const file = r.optional('REDIS_TLS_CA_FILE');
  if (file === null) return null;
  try {
    const pem = readFileSync(file, 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
      r.problems.push(`REDIS_TLS_CA_FILE=${file} holds no PEM certificate`);
      return null;
    }
    return pem;
  } catch (e) {
    r.problems.push(`REDIS_TLS_CA_FILE=${file} cannot be read (${(e as Error).message})`);
    return null;
  }
}

/** REDIS_URL, REDIS_SENTINELS (+ REDIS_SENTINEL_NAME) or REDIS_CLUSTER_NODES: at most one of them. */
function parseRedis(r: Reader): RedisSettings | null {
  const url = r.optional('REDIS_URL');
  const sentinels = r.optional('REDIS_SENTINELS');
  const clusterNodes = r.optional('REDIS_CLUSTER_NODES');
  const chosen = [
    url && 'REDIS_URL',
    sentinels && 'REDIS_SENTINELS',
    clusterNodes && 'REDIS_CLUSTER_NODES',
  ].filter((x): x is string => typeof x === 'string');
  const ca = readCaFile(r);
  if (chosen.length > 1) {
    r.problems.push(`set only one of ${chosen.join(', ')}: they are alternative ways to reach Redis`);
    return null;
  }
  const username = r.optional('REDIS_USERNAME');
  const password = r.optional('REDIS_PASSWORD');
  if (url !== null) {
    if (!/^rediss?:\/\//.test(url)) {
      r.problems.push('REDIS_URL must be a redis:// or rediss:// URL');
      return null;
    }
    if ((username ?? password) !== null) {
      r.problems.push(
        'REDIS_USERNAME/REDIS_PASSWORD go with REDIS_SENTINELS or REDIS_CLUSTER_NODES; put them in REDIS_URL',
      );
    }
    const tls = url.startsWith('rediss://');
    if (ca !== null && !tls) r.problems.push('REDIS_TLS_CA_FILE needs a rediss:// REDIS_URL');
    return { mode: 'standalone', url, tls: tls ? { ca } : null };
  }
  if (sentinels !== null) {
    const { endpoints, tls } = parseEndpoints(r, 'REDIS_SENTINELS', 26379);
    const name = r.optional('REDIS_SENTINEL_NAME');
    if (name === null)
      r.problems.push('REDIS_SENTINELS needs REDIS_SENTINEL_NAME (the monitored master name)');
    if (endpoints.length === 0) r.problems.push('REDIS_SENTINELS lists no sentinel');
    if (ca !== null && !tls) r.problems.push('REDIS_TLS_CA_FILE needs rediss:// entries in REDIS_SENTINELS');
    return {
      mode: 'sentinel',
      sentinels: endpoints,
      name: name ?? '',
      sentinelPassword: r.optional('REDIS_SENTINEL_PASSWORD'),
      natMap: parseNatMap(r),
      username,
      password,
      tls: tls ? { ca } : null,
    };
  }
  if (
    r.optional('REDIS_SENTINEL_NAME') !== null ||
    r.optional('REDIS_SENTINEL_PASSWORD') !== null ||
    r.optional('REDIS_SENTINEL_NAT_MAP') !== null
  ) {
    r.problems.push(
      'REDIS_SENTINEL_NAME/REDIS_SENTINEL_PASSWORD/REDIS_SENTINEL_NAT_MAP need REDIS_SENTINELS',
    );
  }
  if (clusterNodes !== null) {
    const { endpoints, tls } = parseEndpoints(r, 'REDIS_CLUSTER_NODES', 6379);
    if (endpoints.length === 0) r.problems.push('REDIS_CLUSTER_NODES lists no node');
    if (ca !== null && !tls)
      r.problems.push('REDIS_TLS_CA_FILE needs rediss:// entries in REDIS_CLUSTER_NODES');
    return { mode: 'cluster', nodes: endpoints, username, password, tls: tls ? { ca } : null };
  }
  if (ca !== null) r.problems.push('REDIS_TLS_CA_FILE is set but no Redis is configured');
  if ((username ?? password) !== null)
    r.problems.push('REDIS_USERNAME/REDIS_PASSWORD are set but no Redis is configured');
  return null;
}

function parseOidc(r: Reader): OidcSettings | null {
  const issuer = r.optional('OIDC_ISSUER');
  const names = [
    'OIDC_CLIENT_ID',
    'OIDC_CLIENT_SECRET',
    'OIDC_SCOPES',
    'OIDC_ALLOWED_DOMAINS',
    'OIDC_ADMIN_GROUPS',
    'OIDC_GROUPS_CLAIM',
    'OIDC_NAME',
    'OIDC_REDIRECT_URI',
  ];
  if (issuer === null) {
    const stray = names.filter((n) => r.raw(n) !== undefined);
    if (stray.length > 0) r.problems.push(`${stray.join(', ')} need OIDC_ISSUER`);
    if (r.raw('AUTH_LOCAL') === 'disabled')
      r.problems.push('AUTH_LOCAL=disabled needs OIDC_ISSUER (else nobody can sign in)');
    return null;
  }
  let issuerUrl: URL | null = null;
  try {
    issuerUrl = new URL(issuer);
  } catch {
    r.problems.push(`OIDC_ISSUER=${issuer} must be a URL`);
  }
  if (issuerUrl && issuerUrl.protocol !== 'https:' && !isLoopbackHost(issuerUrl.hostname))
    r.problems.push('OIDC_ISSUER must be https:// (http only on loopback)');
  const clientId = r.optional('OIDC_CLIENT_ID');
  if (clientId === null) r.problems.push('OIDC_CLIENT_ID must be set with OIDC_ISSUER');
  const scopes = r.list('OIDC_SCOPES', ['openid', 'email', 'profile']).flatMap((s) => s.split(/\s+/));
  if (!scopes.includes('openid')) r.problems.push('OIDC_SCOPES must include openid');
  const allowedDomains = r.list('OIDC_ALLOWED_DOMAINS').map((d) => d.toLowerCase().replace(/^@/, ''));
  for (const d of allowedDomains)
    if (!/^[a-z0-9.-]+\.[a-z0-9-]+$/.test(d)) r.problems.push(`OIDC_ALLOWED_DOMAINS: "${d}" is not a domain`);
  const redirectUri = r.optional('OIDC_REDIRECT_URI');
  if (redirectUri !== null && !/^https?:\/\/[^/]+\/api\/auth\/oidc\/callback$/.test(redirectUri))
    r.problems.push('OIDC_REDIRECT_URI must be http(s)://<host>/api/auth/oidc/callback');
  return {
    issuer,
    clientId: clientId ?? '',
    clientSecret: r.optional('OIDC_CLIENT_SECRET'),
    scopes,
    allowedDomains,
    adminGroups: r.list('OIDC_ADMIN_GROUPS'),
    groupsClaim: r.string('OIDC_GROUPS_CLAIM', 'groups'),
    name: r.string('OIDC_NAME', issuerUrl?.hostname ?? 'your company'),
    redirectUri,
  };
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function parseGeometry(text: string): { width: number; height: number } | null {
  const m = /^(\d{3,5})x(\d{3,5})$/.exec(text);
  if (!m) return null;
  const width = Number(m[1]);
  const height = Number(m[2]);
  // RFB sizes are 16-bit.
  return width <= 65535 && height <= 65535 ? { width, height } : null;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !(o instanceof Map) && !Buffer.isBuffer(o)) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
