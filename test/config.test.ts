import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseDuration } from '../src/config/config.js';
import { TEST_SECRETS } from './helpers/test-secrets.js';

test('defaults follow the plan: 5 sessions per user, 30 min idle, 5 min sweep, 15m/7d tokens, displays :1-:10', () => {
  const config = loadConfig({ ...TEST_SECRETS, DATA_DIR: '/tmp/unused-clouddesk' });
  assert.equal(config.sessions.maxPerUser, 5);
  assert.equal(config.sessions.idleTimeoutMs, 30 * 60_000);
  assert.equal(config.sessions.cleanupIntervalMs, 300_000);
  assert.equal(config.auth.accessTtlSeconds, 15 * 60);
  assert.equal(config.auth.refreshTtlSeconds, 7 * 86_400);
  assert.equal(config.auth.refreshReuseGraceMs, 10_000);
  assert.equal(config.http.port, 3000);
  assert.equal(config.desktop.displayMin, 1);
  assert.equal(config.desktop.displayMax, 10);
  assert.equal(config.rateLimit.maxRequests, 1000);
  assert.equal(config.rateLimit.windowMs, 900_000);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.sessions));
});

test('admission defaults: 8 starts in flight per process, 4 per instance, a queue of 32 waiting at most 5 s, 4 stops at once', () => {
  const config = loadConfig({ ...TEST_SECRETS, DATA_DIR: '/tmp/unused-clouddesk' });
  assert.deepEqual(config.admission, {
    startsInFlight: 8,
    startsInFlightPerInstance: 4,
    startQueue: 32,
    startQueueWaitMs: 4_500,
    stopsInFlight: 4,
  });
  assert.throws(
    () =>
      loadConfig({
        ...TEST_SECRETS,
        DATA_DIR: '/tmp/unused-clouddesk',
        DESKTOP_STARTS_IN_FLIGHT: '0',
        DESKTOP_STARTS_IN_FLIGHT_PER_INSTANCE: 'many',
        DESKTOP_START_QUEUE: '-1',
        DESKTOP_STOPS_IN_FLIGHT: '0',
      }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const text = e.problems.join('\n');
      for (const name of [
        'DESKTOP_STARTS_IN_FLIGHT',
        'DESKTOP_STARTS_IN_FLIGHT_PER_INSTANCE',
        'DESKTOP_START_QUEUE',
        'DESKTOP_STOPS_IN_FLIGHT',
      ])
        assert.ok(text.includes(name), `${name} in ${text}`);
      return true;
    },
  );
});

test('desktop set-up: 30 updates per second and a plain background by default; bad values refused', () => {
  const config = loadConfig({ ...TEST_SECRETS, DATA_DIR: '/tmp/unused-clouddesk' });
  assert.equal(config.desktop.maxFps, 30);
  assert.equal(config.desktop.wallpaper, 'plain');
  const set = loadConfig({
    ...TEST_SECRETS,
    DATA_DIR: '/tmp/unused-clouddesk',
    DESKTOP_MAX_FPS: '15',
    DESKTOP_WALLPAPER: 'keep',
  });
  assert.equal(set.desktop.maxFps, 15);
  assert.equal(set.desktop.wallpaper, 'keep');
  assert.throws(
    () => loadConfig({ ...TEST_SECRETS, DESKTOP_MAX_FPS: '0', DESKTOP_WALLPAPER: 'beach' }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const text = e.problems.join('\n');
      assert.match(text, /DESKTOP_MAX_FPS/);
      assert.match(text, /DESKTOP_WALLPAPER/);
      return true;
    },
  );
});

test('displays reach :59635 (VNC port 65535 with the TCP transport), enough for 10,000 desktops on one machine; one more is refused', () => {
  const env = { ...TEST_SECRETS, DATA_DIR: '/tmp/unused-clouddesk' };
  const config = loadConfig({ ...env, VNC_DISPLAY_MIN: '1000', VNC_DISPLAY_MAX: '59635' });
  assert.equal(config.desktop.displayMin, 1000);
  assert.equal(config.desktop.displayMax, 59_635);
  assert.throws(
    () => loadConfig({ ...env, VNC_DISPLAY_MAX: '59636' }),
    (e: unknown) => e instanceof ConfigError && e.problems.some((p) => /VNC_DISPLAY_MAX/.test(p)),
  );
});

test('every bad value is reported together', () => {
  assert.throws(
    () =>
      loadConfig({
        ...TEST_SECRETS,
        PORT: 'eighty',
        MAX_SESSIONS_PER_USER: '0',
        JWT_ACCESS_EXPIRY: 'soon',
        VNC_DISPLAY_MIN: '9',
        VNC_DISPLAY_MAX: '3',
        DESKTOP_TRANSPORT: 'carrier-pigeon',
        INSTANCE_ALLOWED_CIDRS: '10.0.0.0',
        ENCRYPTION_KEY: 'short',
        REFRESH_REUSE_GRACE_MS: '-1',
      }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const text = e.problems.join('\n');
      for (const name of [
        'PORT',
        'MAX_SESSIONS_PER_USER',
        'JWT_ACCESS_EXPIRY',
        'VNC_DISPLAY_MAX',
        'DESKTOP_TRANSPORT',
        '10.0.0.0',
        'ENCRYPTION_KEY',
        'REFRESH_REUSE_GRACE_MS',
      ]) {
        assert.match(text, new RegExp(name.replace(/\./g, '\\.')));
      }
      return true;
    },
  );
});

test('with no secrets set, a single node generates them once into the data folder (0600) and reuses them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'clouddesk-config-'));
  try {
    const first = loadConfig({ DATA_DIR: dir });
    assert.equal(first.secrets.generated, true);
    const file = join(dir, 'secrets.json');
    assert.ok(existsSync(file));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const second = loadConfig({ DATA_DIR: dir });
    assert.equal(second.secrets.jwtAccessSecret, first.secrets.jwtAccessSecret);
    assert.deepEqual(second.secrets.encryption.keys.get('k1'), first.secrets.encryption.keys.get('k1'));
    assert.ok(!readFileSync(file, 'utf8').includes(TEST_SECRETS.ENCRYPTION_KEY));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a shared database requires explicit secrets (processes must agree on them)', () => {
  assert.throws(
    () => loadConfig({ DATABASE_URL: 'postgres://db/clouddesk', DATA_DIR: '/tmp/unused-clouddesk' }),
    /JWT_ACCESS_SECRET, JWT_REFRESH_SECRET, ENCRYPTION_KEY must be set when DATABASE_URL is set/,
  );
});

test('previous encryption keys are kept for reading under their ids', () => {
  const old = 'ff'.repeat(32);
  const config = loadConfig({
    ...TEST_SECRETS,
    ENCRYPTION_KEY_ID: 'k2',
    ENCRYPTION_PREVIOUS_KEYS: `k1:${old}`,
  });
  assert.equal(config.secrets.encryption.currentKeyId, 'k2');
  assert.deepEqual([...config.secrets.encryption.keys.keys()].sort(), ['k1', 'k2']);
});

test('durations parse with units', () => {
  assert.equal(parseDuration('15m'), 900_000);
  assert.equal(parseDuration('7d'), 604_800_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('30'), 30_000);
  assert.equal(parseDuration('1 week'), null);
});

test('several workers without Redis are refused (they could not share tickets or limits)', () => {
  assert.throws(
    () => loadConfig({ ...TEST_SECRETS, WORKERS: '2' }),
    /needs Redis \(REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES\)/,
  );
  assert.equal(
    loadConfig({ ...TEST_SECRETS, WORKERS: '2', REDIS_URL: 'redis://127.0.0.1:6379' }).cluster.workers,
    2,
  );
});

test('GATEWAY_ROLE: all by default; api and relay need PostgreSQL and Redis (they share sessions, tickets and viewers); anything else refused', () => {
  assert.equal(loadConfig({ ...TEST_SECRETS }).role, 'all');
  const shared = {
    ...TEST_SECRETS,
    DATABASE_URL: 'postgres://127.0.0.1/test',
    REDIS_URL: 'redis://127.0.0.1:6379',
  };
  for (const role of ['api', 'relay'] as const) {
    assert.equal(loadConfig({ ...shared, GATEWAY_ROLE: role }).role, role);
    assert.throws(
      () => loadConfig({ ...TEST_SECRETS, GATEWAY_ROLE: role, REDIS_URL: 'redis://127.0.0.1:6379' }),
      new RegExp(`GATEWAY_ROLE=${role} needs DATABASE_URL and Redis`),
    );
    assert.throws(
      () => loadConfig({ ...TEST_SECRETS, GATEWAY_ROLE: role, DATABASE_URL: 'postgres://127.0.0.1/test' }),
      new RegExp(`GATEWAY_ROLE=${role} needs DATABASE_URL and Redis`),
    );
  }
  assert.throws(
    () => loadConfig({ ...shared, GATEWAY_ROLE: 'viewer' }),
    /GATEWAY_ROLE=viewer must be one of all, api, relay/,
  );
});

test('drain: 10 s in all; behind a balancer (Redis) the first 5 s not ready but serving, alone none; a grace that does not fit is refused', () => {
  const redis = { ...TEST_SECRETS, REDIS_URL: 'redis://127.0.0.1:6379' };
  assert.deepEqual(loadConfig({ ...TEST_SECRETS }).shutdown, { timeoutMs: 10_000, readyGraceMs: 0 });
  assert.deepEqual(loadConfig(redis).shutdown, { timeoutMs: 10_000, readyGraceMs: 5_000 });
  // A shorter deadline shortens the default grace, so that 2 s stay for closing viewers and HTTP.
  assert.equal(loadConfig({ ...redis, SHUTDOWN_TIMEOUT_MS: '5000' }).shutdown.readyGraceMs, 3_000);
  assert.equal(loadConfig({ ...redis, SHUTDOWN_TIMEOUT_MS: '1500' }).shutdown.readyGraceMs, 0);
  assert.equal(loadConfig({ ...redis, SHUTDOWN_READY_GRACE_MS: '0' }).shutdown.readyGraceMs, 0);
  assert.equal(loadConfig({ ...TEST_SECRETS, SHUTDOWN_READY_GRACE_MS: '3000' }).shutdown.readyGraceMs, 3_000);
  assert.deepEqual(
    loadConfig({ ...redis, SHUTDOWN_TIMEOUT_MS: '30000', SHUTDOWN_READY_GRACE_MS: '28000' }).shutdown,
    { timeoutMs: 30_000, readyGraceMs: 28_000 },
  );
  assert.throws(
    () => loadConfig({ ...redis, SHUTDOWN_READY_GRACE_MS: '9000' }),
    /SHUTDOWN_READY_GRACE_MS=9000 must leave 2000 ms of SHUTDOWN_TIMEOUT_MS=10000 .*at most 8000/,
  );
  assert.throws(() => loadConfig({ ...redis, SHUTDOWN_READY_GRACE_MS: '-1' }), /SHUTDOWN_READY_GRACE_MS=-1/);
});

test('Redis: one server, through Sentinel, or a Cluster; TLS with a CA file; bad combinations listed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cd-config-redis-'));
  try {
    const ca = join(dir, 'ca.pem');
    await writeFile(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    assert.equal(loadConfig({ ...TEST_SECRETS }).redis, null);
    assert.deepEqual(loadConfig({ ...TEST_SECRETS, REDIS_URL: 'redis://h:6379/1' }).redis, {
      mode: 'standalone',
      url: 'redis://h:6379/1',
      tls: null,
    });
    const tls = loadConfig({ ...TEST_SECRETS, REDIS_URL: 'rediss://h:6380', REDIS_TLS_CA_FILE: ca }).redis;
    assert.equal(tls?.mode, 'standalone');
    assert.match(tls.tls?.ca ?? '', /BEGIN CERTIFICATE/);
    assert.deepEqual(
      loadConfig({
        ...TEST_SECRETS,
        REDIS_SENTINELS: 's1:26379, s2, [::1]:26380',
        REDIS_SENTINEL_NAME: 'mymaster',
        REDIS_SENTINEL_PASSWORD: 'sp',
        REDIS_SENTINEL_NAT_MAP: '10.0.0.5:6379=127.0.0.1:16379, [fd00::1]:26379=gw-nat:1',
        REDIS_PASSWORD: 'dp',
      }).redis,
      {
        mode: 'sentinel',
        sentinels: [
          { host: 's1', port: 26379 },
          { host: 's2', port: 26379 },
          { host: '::1', port: 26380 },
        ],
        name: 'mymaster',
        sentinelPassword: 'sp',
        natMap: {
          '10.0.0.5:6379': { host: '127.0.0.1', port: 16379 },
          'fd00::1:26379': { host: 'gw-nat', port: 1 },
        },
        username: null,
        password: 'dp',
        tls: null,
      },
    );
    const cluster = loadConfig({
      ...TEST_SECRETS,
      REDIS_CLUSTER_NODES: 'rediss://n1:7000,rediss://n2:7001',
      REDIS_TLS_CA_FILE: ca,
      REDIS_RETRY_MS: '2000',
    });
    assert.equal(cluster.redis?.mode, 'cluster');
    assert.deepEqual(cluster.redis.nodes, [
      { host: 'n1', port: 7000 },
      { host: 'n2', port: 7001 },
    ]);
    assert.ok(cluster.redis.tls?.ca);
    assert.equal(cluster.redisRetryMs, 2000);
    assert.equal(loadConfig({ ...TEST_SECRETS }).redisRetryMs, 5000);

    const problems = (env: Record<string, string>): string => {
      try {
        loadConfig({ ...TEST_SECRETS, ...env });
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    };
    assert.match(
      problems({ REDIS_URL: 'redis://a', REDIS_CLUSTER_NODES: 'b:1' }),
      /set only one of REDIS_URL, REDIS_CLUSTER_NODES/,
    );
    assert.match(problems({ REDIS_SENTINELS: 's1:26379' }), /needs REDIS_SENTINEL_NAME/);
    assert.match(problems({ REDIS_SENTINEL_NAME: 'm' }), /need REDIS_SENTINELS/);
    assert.match(problems({ REDIS_SENTINEL_NAT_MAP: 'a:1=b:2' }), /need REDIS_SENTINELS/);
    assert.match(
      problems({ REDIS_SENTINELS: 's1', REDIS_SENTINEL_NAME: 'm', REDIS_SENTINEL_NAT_MAP: 'a:1=b' }),
      /REDIS_SENTINEL_NAT_MAP: "a:1=b" must be host:port=host:port/,
    );
    assert.match(problems({ REDIS_CLUSTER_NODES: 'n1:99999' }), /must be host:port/);
    assert.match(problems({ REDIS_CLUSTER_NODES: 'redis://n1:1,rediss://n2:2' }), /one scheme/);
    assert.match(
      problems({ REDIS_URL: 'redis://h', REDIS_TLS_CA_FILE: ca }),
      /needs a rediss:\/\/ REDIS_URL/,
    );
    assert.match(
      problems({ REDIS_URL: 'rediss://h', REDIS_TLS_CA_FILE: join(dir, 'nope.pem') }),
      /cannot be read/,
    );
    assert.match(problems({ REDIS_URL: 'http://h' }), /redis:\/\/ or rediss:\/\//);
    assert.match(problems({ REDIS_PASSWORD: 'x' }), /no Redis is configured/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('REFRESH_REUSE_GRACE_MS=0 turns the refresh grace window off', () => {
  const config = loadConfig({
    ...TEST_SECRETS,
    DATA_DIR: '/tmp/unused-clouddesk',
    REFRESH_REUSE_GRACE_MS: '0',
  });
  assert.equal(config.auth.refreshReuseGraceMs, 0);
});

test('instance address blocks: INSTANCE_DENY_PRIVATE is off by default; a block that is not a CIDR is refused', () => {
  const base = { ...TEST_SECRETS, DATA_DIR: '/tmp/unused-clouddesk' };
  assert.equal(loadConfig(base).instances.denyPrivate, false);
  const strict = loadConfig({
    ...base,
    INSTANCE_DENY_PRIVATE: 'true',
    INSTANCE_ALLOWED_CIDRS: '10.20.0.0/16, fd12:3456::/48',
    INSTANCE_DENIED_CIDRS: '::ffff:192.0.2.0/120',
  });
  assert.deepEqual(strict.instances, {
    allowedCidrs: ['10.20.0.0/16', 'fd12:3456::/48'],
    deniedCidrs: ['::ffff:192.0.2.0/120'],
    denyPrivate: true,
  });
  assert.throws(
    () =>
      loadConfig({
        ...base,
        INSTANCE_DENY_PRIVATE: 'maybe',
        INSTANCE_ALLOWED_CIDRS: '300.0.0.0/8,10.0.0.0/33,10/8,fe80::/129',
      }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      for (const bad of [
        'INSTANCE_DENY_PRIVATE',
        '"300.0.0.0/8"',
        '"10.0.0.0/33"',
        '"10/8"',
        '"fe80::/129"',
      ]) {
        assert.ok(
          e.problems.some((p) => p.includes(bad)),
          bad,
        );
      }
      return true;
    },
  );
});

test('the gateway caps: defaults, and bad values reported together', () => {
  const config = loadConfig({ ...TEST_SECRETS, DATA_DIR: '/tmp/unused-clouddesk' });
  assert.deepEqual(config.caps, {
    quality: { min: 0, max: 8 },
    compressionMin: 2,
    sessionMaxKbps: 1500,
    maxGeometry: { width: 1920, height: 1080 },
  });
  const set = loadConfig({
    ...TEST_SECRETS,
    DATA_DIR: '/tmp/unused-clouddesk',
    QUALITY_MIN: '3',
    QUALITY_MAX: '3',
    COMPRESSION_MIN: '0',
    SESSION_MAX_KBPS: '2000',
    DESKTOP_MAX_GEOMETRY: '2560x1440',
  });
  assert.deepEqual(set.caps, {
    quality: { min: 3, max: 3 },
    compressionMin: 0,
    sessionMaxKbps: 2000,
    maxGeometry: { width: 2560, height: 1440 },
  });
  assert.throws(
    () =>
      loadConfig({
        ...TEST_SECRETS,
        QUALITY_MIN: '7',
        QUALITY_MAX: '4',
        COMPRESSION_MIN: '10',
        SESSION_MAX_KBPS: '50',
        DESKTOP_MAX_GEOMETRY: 'huge',
      }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const text = e.problems.join('\n');
      for (const name of ['QUALITY_MAX', 'COMPRESSION_MIN', 'SESSION_MAX_KBPS', 'DESKTOP_MAX_GEOMETRY'])
        assert.match(text, new RegExp(name));
      return true;
    },
  );
  assert.throws(
    () => loadConfig({ ...TEST_SECRETS, DESKTOP_GEOMETRY: '1920x1200', DESKTOP_MAX_GEOMETRY: '1920x1080' }),
    /must fit within DESKTOP_MAX_GEOMETRY/,
  );
});

test('GC_HEAP_GROWING_PERCENT: 200 unless set, 0 leaves V8 its own, out of range reported', () => {
  const base = { ...TEST_SECRETS, DATA_DIR: '/tmp/unused-clouddesk' };
  assert.equal(loadConfig(base).heapGrowingPercent, 200);
  assert.equal(loadConfig({ ...base, GC_HEAP_GROWING_PERCENT: '0' }).heapGrowingPercent, 0);
  assert.equal(loadConfig({ ...base, GC_HEAP_GROWING_PERCENT: '350' }).heapGrowingPercent, 350);
  for (const bad of ['-1', '1001', '1.5', 'lots'])
    assert.throws(
      () => loadConfig({ ...base, GC_HEAP_GROWING_PERCENT: bad }),
      (e: unknown) => e instanceof ConfigError && /GC_HEAP_GROWING_PERCENT/.test(e.problems.join('\n')),
      bad,
    );
});

test('company sign-in settings: parsed, and the bad ones reported', () => {
  const config = loadConfig({
    ...TEST_SECRETS,
    DATA_DIR: '/tmp/clouddesk-config-test',
    OIDC_ISSUER: 'https://login.example.com/realms/staff',
    OIDC_CLIENT_ID: 'clouddesk',
    OIDC_ALLOWED_DOMAINS: 'Example.com, @corp.example.org',
    OIDC_ADMIN_GROUPS: 'cd-admins',
    AUTH_LOCAL: 'disabled',
  });
  assert.deepEqual(config.oidc?.allowedDomains, ['example.com', 'corp.example.org']);
  assert.deepEqual(config.oidc?.scopes, ['openid', 'email', 'profile']);
  assert.equal(config.oidc?.groupsClaim, 'groups');
  assert.equal(config.oidc?.name, 'login.example.com');
  assert.equal(config.oidc?.clientSecret, null);
  assert.equal(config.auth.local, false);
  assert.equal(loadConfig({ ...TEST_SECRETS, DATA_DIR: '/tmp/clouddesk-config-test' }).oidc, null);
  assert.throws(
    () =>
      loadConfig({
        ...TEST_SECRETS,
        OIDC_ISSUER: 'http://login.example.com',
        OIDC_SCOPES: 'email',
        OIDC_ALLOWED_DOMAINS: 'not a domain',
      }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const text = e.problems.join('\n');
      for (const what of ['OIDC_ISSUER must be https', 'OIDC_CLIENT_ID', 'OIDC_SCOPES', 'not a domain'])
        assert.ok(text.includes(what), `${what} in ${text}`);
      return true;
    },
  );
  assert.throws(
    () => loadConfig({ ...TEST_SECRETS, AUTH_LOCAL: 'disabled', OIDC_CLIENT_ID: 'x' }),
    (e: unknown) =>
      e instanceof ConfigError &&
      e.problems.some((p) => p.includes('AUTH_LOCAL=disabled needs OIDC_ISSUER')) &&
      e.problems.some((p) => p.includes('OIDC_CLIENT_ID need OIDC_ISSUER')),
  );
});

test('TRUST_PROXY: off by default, true/false, or the balancers’ addresses; anything else is refused', () => {
  const trust = (v?: string) =>
    loadConfig({
      ...TEST_SECRETS,
      DATA_DIR: '/tmp/unused-clouddesk',
      ...(v === undefined ? {} : { TRUST_PROXY: v }),
    }).http.trustProxy;
  assert.equal(trust(), false);
  assert.equal(trust('true'), true);
  assert.equal(trust('off'), false);
  assert.deepEqual(trust('loopback, 10.0.0.0/8,fd00::1'), ['loopback', '10.0.0.0/8', 'fd00::1']);
  for (const bad of ['2', 'balancer.internal', '10.0.0.0/33'])
    assert.throws(
      () => trust(bad),
      (e: unknown) =>
        e instanceof ConfigError && e.problems.some((p) => p.startsWith(`TRUST_PROXY: "${bad}" must be`)),
      bad,
    );
});
