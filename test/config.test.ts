import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
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
    startQueueWaitMs: 5_000,
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
  assert.throws(() => loadConfig({ ...TEST_SECRETS, WORKERS: '2' }), /needs REDIS_URL/);
  assert.equal(
    loadConfig({ ...TEST_SECRETS, WORKERS: '2', REDIS_URL: 'redis://127.0.0.1:6379' }).cluster.workers,
    2,
  );
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
    sessionMaxKbps: 0,
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
