// Rate limits and sign-in lockout, run against both stores: process memory (time moved with mocked
// Date/timers, as rate-limiter-flexible reads Date.now itself) and Redis (the machine's Redis, a unique
// key prefix per run; two coordinators on it are two gateway nodes). Then: Redis down → every check but
// the API limit (counted in process meanwhile) fails closed with COORDINATION_UNAVAILABLE and recovers;
// the Fastify helper's headers on a real app.
import { after, afterEach, before, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import Fastify from 'fastify';
import type { Config } from '../src/config/config.js';
import { MemoryCoordinator } from '../src/coordination/memory-coordinator.js';
import { RedisCoordinator } from '../src/coordination/redis-coordinator.js';
import {
  createRateLimits,
  enforceApiRateLimit,
  ipKey,
  RateLimits,
  type LimitName,
} from '../src/coordination/rate-limits.js';
import { AppError, isPeerGoneError, PeerGoneError } from '../src/errors/errors.js';
import { registerErrorHandling } from '../src/http/error-handler.js';
import { systemClock } from '../src/lib/clock.js';
import { createLogger } from '../src/observability/logger.js';
import { startRedisServer, type RedisServerFixture } from './helpers/redis-server.js';

const SHARED_REDIS_URL = 'redis://127.0.0.1:6379';
const logger = createLogger({ level: 'silent' });

const defaults: Config['rateLimit'] = {
  windowMs: 900_000,
  maxRequests: 1000,
  authFailuresPerAccountIp: 5,
  authFailuresPerIp: 10,
  authWindowMs: 900_000,
  authBlockMs: 900_000,
  authAttemptsPerIp: 600,
  wsConnectsPerMinute: 10,
};

function rejectedWith(code: string, check?: (e: AppError) => void) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof AppError, `expected an AppError, got ${String(e)}`);
    assert.equal(e.code, code);
    check?.(e);
    return true;
  };
}

const limited = rejectedWith('RATE_LIMITED', (e) => {
  const ms = e.details?.retryAfterMs;
  assert.ok(typeof ms === 'number' && ms > 0, 'retryAfterMs in details');
  assert.equal(e.details?.retryAfterSeconds, Math.ceil(ms / 1000));
});

/** Fresh names per test so tests on the shared Redis never see each other's counters. */
function uniq(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}

interface Store {
  /** Rate limits as seen from `n` gateway nodes sharing one store. */
  limits(n: number, overrides?: Partial<Config['rateLimit']>, rejected?: LimitName[]): Promise<RateLimits[]>;
  close(): Promise<void>;
}

function memoryStore(): Store {
  return {
    limits(n, overrides = {}, rejected) {
      const one = createRateLimits(
        { rateLimit: { ...defaults, ...overrides } },
        new MemoryCoordinator(systemClock),
        {
          onRejected: (name) => rejected?.push(name),
        },
      );
      return Promise.resolve(Array.from({ length: n }, () => one));
    },
    close: () => Promise.resolve(),
  };
}

function redisStore(): Store {
  const prefix = `cd:test:${randomBytes(6).toString('hex')}:`;
  const open: RedisCoordinator[] = [];
  return {
    async limits(n, overrides = {}, rejected) {
      const made: RateLimits[] = [];
      for (let i = 0; i < n; i++) {
        const c = new RedisCoordinator({
          url: SHARED_REDIS_URL,
          clock: systemClock,
          logger,
          keyPrefix: prefix,
        });
        open.push(c);
        // The limiters reject while their connection is not ready (by design): wait for it.
        assert.equal(await c.waitUntilReady(10_000), true);
        made.push(
          createRateLimits({ rateLimit: { ...defaults, ...overrides } }, c, {
            onRejected: (name) => rejected?.push(name),
          }),
        );
      }
      return made;
    },
    async close() {
      const cleaner = open[0];
      if (cleaner) {
        let cursor = '0';
        do {
          const [next, keys] = await cleaner.client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
          if (keys.length > 0) await cleaner.client.del(...keys);
          cursor = next;
        } while (cursor !== '0');
      }
      await Promise.all(open.map((c) => c.close()));
    },
  };
}

function suite(name: string, makeStore: () => Store): void {
  void describe(`rate limits: ${name}`, () => {
    let store: Store;
    before(() => {
      store = makeStore();
    });
    after(() => store.close());

    const make = (n: number, overrides?: Partial<Config['rateLimit']>, rejected?: LimitName[]) =>
      store.limits(n, overrides, rejected);

    void it('5 failed sign-ins lock that account+IP pair only, on every node', async () => {
      const rejected: LimitName[] = [];
      const [a, b] = await make(2, {}, rejected);
      const email = `${uniq('victim')}@example.com`;
      for (let i = 0; i < 4; i++) {
        await a!.beforeSignIn(email, '203.0.113.7');
        await (i % 2 ? a! : b!).signInFailed(email, '203.0.113.7');
      }
      await b!.beforeSignIn(email, '203.0.113.7'); // 4 failures: still allowed
      await a!.signInFailed(email, '203.0.113.7');
      await assert.rejects(b!.beforeSignIn(email, '203.0.113.7'), limited);
      await assert.rejects(
        a!.beforeSignIn(email.toUpperCase(), '203.0.113.7'),
        limited,
        'email case does not matter',
      );
      assert.deepEqual(rejected, ['sign-in-pair', 'sign-in-pair']);

      // The owner signing in from elsewhere is not locked out; other accounts from that IP neither.
      await a!.beforeSignIn(email, '198.51.100.20');
      await b!.beforeSignIn(`${uniq('other')}@example.com`, '203.0.113.7');
    });

    void it('a successful sign-in clears the pair but not the IP tally', async () => {
      const [a] = await make(1, { authFailuresPerIp: 7 });
      const email = `${uniq('user')}@example.com`;
      const ip = '192.0.2.77';
      for (let i = 0; i < 4; i++) await a!.signInFailed(email, ip);
      await a!.signInSucceeded(email, ip);
      for (let i = 0; i < 3; i++) await a!.signInFailed(email, ip);
      await a!.beforeSignIn(email, ip); // pair: 3 since the success; IP: 7, not more than 7
      await a!.signInFailed(email, ip); // pair: 4; IP: 8
      await assert.rejects(
        a!.beforeSignIn(email, ip),
        rejectedWith('RATE_LIMITED', (e) => assert.match(e.message, /from this address/)),
      );
    });

    void it('more than 10 failures from one IP across accounts block that IP', async () => {
      const [a, b] = await make(2);
      const ip = '2001:db8:aa:bb::1';
      for (let i = 0; i < 10; i++) await (i % 2 ? a! : b!).signInFailed(`${uniq('acct')}@example.com`, ip);
      await a!.beforeSignIn(`${uniq('fresh')}@example.com`, ip); // exactly 10: allowed
      await b!.signInFailed(`${uniq('acct')}@example.com`, ip);
      await assert.rejects(a!.beforeSignIn(`${uniq('fresh')}@example.com`, ip), limited);
      // The same /64 is the same client; another /64 is not.
      await assert.rejects(
        b!.beforeSignIn(`${uniq('fresh')}@example.com`, '2001:db8:aa:bb:ffff::9'),
        limited,
      );
      await b!.beforeSignIn(`${uniq('fresh')}@example.com`, '2001:db8:aa:bc::1');
      // Refresh and registration are not blocked by failed sign-ins (one NAT address, many users).
      await a!.attempt(ip);
    });

    void it('auth attempts per IP are capped over sign-in, refresh and registration', async () => {
      const rejected: LimitName[] = [];
      const [a, b] = await make(2, { authAttemptsPerIp: 3 }, rejected);
      const ip = '192.0.2.250';
      await a!.attempt(ip);
      await b!.beforeSignIn(`${uniq('u')}@example.com`, ip);
      await a!.attempt(ip);
      await assert.rejects(b!.attempt(ip), limited);
      await assert.rejects(a!.beforeSignIn(`${uniq('u')}@example.com`, ip), limited);
      await a!.attempt('192.0.2.251');
      assert.deepEqual(rejected, ['auth-attempts', 'auth-attempts']);
    });

    void it('API requests per user: remaining counts down, then 429, other users unaffected', async () => {
      const [a, b] = await make(2, { maxRequests: 3 });
      const user = uniq('user');
      const first = await a!.consumeApi(user);
      assert.equal(first.limit, 3);
      assert.equal(first.remaining, 2);
      assert.ok(first.resetMs > 0 && first.resetMs <= defaults.windowMs);
      assert.equal((await b!.consumeApi(user)).remaining, 1);
      assert.equal((await a!.consumeApi(user)).remaining, 0);
      await assert.rejects(b!.consumeApi(user), limited);
      assert.equal((await a!.consumeApi(uniq('other'))).remaining, 2);
    });

    void it('new WebSockets per user per minute', async () => {
      const [a, b] = await make(2, { wsConnectsPerMinute: 2 });
      const user = uniq('user');
      await a!.consumeWsConnect(user);
      await b!.consumeWsConnect(user);
      await assert.rejects(a!.consumeWsConnect(user), limited);
      await b!.consumeWsConnect(uniq('other'));
    });
  });
}

suite('memory', memoryStore);
suite('redis', redisStore);

void describe('rate limits: windows and blocks end (memory, mocked time)', () => {
  afterEach(() => mock.timers.reset());

  void it('a pair block lifts after AUTH_BLOCK_MS; an API window resets', async () => {
    mock.timers.enable({ apis: ['Date', 'setTimeout'], now: Date.UTC(2026, 0, 1) });
    const limits = createRateLimits(
      { rateLimit: { ...defaults, maxRequests: 1, authBlockMs: 600_000 } },
      new MemoryCoordinator(systemClock),
    );
    for (let i = 0; i < 5; i++) await limits.signInFailed('a@example.com', '192.0.2.1');
    await assert.rejects(
      limits.beforeSignIn('a@example.com', '192.0.2.1'),
      rejectedWith('RATE_LIMITED', (e) => assert.equal(e.details?.retryAfterMs, 600_000)),
    );
    mock.timers.tick(599_000);
    await assert.rejects(limits.beforeSignIn('a@example.com', '192.0.2.1'), limited);
    mock.timers.tick(1_001);
    await limits.beforeSignIn('a@example.com', '192.0.2.1');

    await limits.consumeApi('u1');
    await assert.rejects(limits.consumeApi('u1'), limited);
    mock.timers.tick(defaults.windowMs + 1);
    assert.equal((await limits.consumeApi('u1')).remaining, 0);
  });
});

void describe('rate limits: Redis down', () => {
  let server: RedisServerFixture;
  let coordinator: RedisCoordinator;
  before(async () => {
    server = await startRedisServer();
    coordinator = new RedisCoordinator({
      url: server.url,
      clock: systemClock,
      logger,
      maxReconnectDelayMs: 200,
      commandTimeoutMs: 120_000,
    });
  });
  after(async () => {
    await coordinator.close();
    await server.dispose();
  });

  void it(
    'fails closed with COORDINATION_UNAVAILABLE (the API limit counts in process), then works again by itself',
    { timeout: 60_000 },
    async () => {
      const limits = createRateLimits({ rateLimit: defaults }, coordinator);
      assert.equal(await coordinator.waitUntilReady(10_000), true);
      await limits.consumeApi('u1');

      await server.stop();
      while (coordinator.state() !== 'down') await new Promise((r) => setTimeout(r, 20));
      const unavailable = rejectedWith('COORDINATION_UNAVAILABLE');
      // The API flood limit counts in this process meanwhile (calls that need no Redis keep working).
      assert.equal((await limits.consumeApi('u1')).remaining, defaults.maxRequests - 1);
      await assert.rejects(limits.consumeWsConnect('u1'), unavailable);
      await assert.rejects(limits.attempt('192.0.2.1'), unavailable);
      await assert.rejects(limits.beforeSignIn('a@example.com', '192.0.2.1'), unavailable);
      await assert.rejects(limits.signInFailed('a@example.com', '192.0.2.1'), unavailable);
      await assert.rejects(limits.signInSucceeded('a@example.com', '192.0.2.1'), unavailable);

      await server.start();
      assert.equal(await coordinator.waitUntilReady(20_000), true);
      assert.equal(
        (await limits.consumeApi('u1')).remaining,
        defaults.maxRequests - 1,
        'a fresh server: count restarts',
      );
    },
  );
});

void describe('rate-limit HTTP headers', () => {
  void it('sets RateLimit-* on answers and Retry-After on the 429', async () => {
    const limits = new RateLimits({ ...defaults, maxRequests: 2 }, { kind: 'memory' });
    const app = Fastify();
    after(() => app.close());
    registerErrorHandling(app);
    app.get('/api/thing', async (request, reply) => {
      await enforceApiRateLimit(limits, String(request.headers['x-user']), reply);
      return { data: 'ok' };
    });
    const get = () => app.inject({ method: 'GET', url: '/api/thing', headers: { 'x-user': 'u1' } });
    const first = await get();
    assert.equal(first.statusCode, 200);
    assert.equal(first.headers['ratelimit-limit'], '2');
    assert.equal(first.headers['ratelimit-remaining'], '1');
    assert.equal(first.headers['ratelimit-reset'], String(defaults.windowMs / 1000));
    assert.equal((await get()).headers['ratelimit-remaining'], '0');
    const over = await get();
    assert.equal(over.statusCode, 429);
    assert.equal(over.json<{ error: { code: string } }>().error.code, 'RATE_LIMITED');
    assert.equal(over.headers['ratelimit-remaining'], '0');
    assert.ok(Number(over.headers['retry-after']) > 0);
    assert.equal(over.headers['retry-after'], over.headers['ratelimit-reset']);
  });
});

void describe('ipKey', () => {
  void it('keys IPv4 as is, IPv6 per /64, IPv4-mapped as IPv4', () => {
    assert.equal(ipKey('192.0.2.1'), '192.0.2.1');
    assert.equal(ipKey('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(ipKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(ipKey('2001:0DB8:0000:0000:ffff::1'), '2001:db8:0:0::/64');
    assert.equal(ipKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(ipKey('::1'), '0:0:0:0::/64');
    assert.equal(ipKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  });

  void it('refuses a missing address (the client is gone) as a peer-gone error, not a TypeError', () => {
    for (const gone of [undefined, '']) {
      assert.throws(
        () => ipKey(gone),
        (e: unknown) => e instanceof PeerGoneError && isPeerGoneError(e),
      );
    }
  });
});
