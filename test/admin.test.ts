// Roles, the admin API, invites and the audit trail over HTTP (inject), on embedded SQLite and on
// PostgreSQL: the first account becomes admin, admin routes refuse everyone else with 403
// FORBIDDEN, the last-admin guard, disabling (tokens revoked, sign-in refused), closed registration
// with single-use expiring invites, audit filters and cursors, a user's own trail, retention with the
// injected clock, and a store outage the audit buffer rides out.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { ManualClock } from '../src/lib/clock.js';
import { AuditLog } from '../src/audit/audit-log.js';
import { AuditRepository, type AuditRow } from '../src/store/audit.repository.js';
import { cleanDetails } from '../src/audit/audit-events.js';
import { buildTestGateway, captureLogger, newUser, type TestGateway } from './helpers/builders.js';
import { createTestDatabase } from './helpers/postgres-database.js';

type Auth = { authorization: string };

const dialects: { name: string; env(): Promise<{ env: Record<string, string>; drop(): Promise<void> }> }[] = [
  { name: 'sqlite', env: () => Promise.resolve({ env: {}, drop: () => Promise.resolve() }) },
  {
    name: 'postgres',
    async env() {
      const db = await createTestDatabase();
      return { env: { DATABASE_URL: db.url }, drop: () => db.drop() };
    },
  },
];

function errorCode(res: LightMyRequestResponse): string | undefined {
  return res.json<{ error?: { code: string } }>().error?.code;
}

for (const dialect of dialects) {
  describe(`admin API and audit (${dialect.name})`, () => {
    let gw: TestGateway;
    let drop: () => Promise<void>;
    const clock = new ManualClock(Date.now());
    let admin: Awaited<ReturnType<typeof newUser>>;

    const call = (method: 'GET' | 'POST' | 'PATCH', url: string, auth: Auth, payload?: object) =>
      gw.app.inject({ method, url, headers: auth, ...(payload === undefined ? {} : { payload }) });
    const audit = async (query: string, auth: Auth = admin.auth) => {
      await gw.audit.flush();
      const res = await call('GET', `/api/admin/audit?${query}`, auth);
      assert.equal(res.statusCode, 200, res.body);
      return res.json<{
        data: {
          items: {
            type: string;
            actor: string;
            ip: string | null;
            targetId: string | null;
            details: Record<string, unknown>;
          }[];
          nextCursor: string | null;
        };
      }>().data;
    };

    before(async () => {
      const db = await dialect.env();
      drop = db.drop;
      // No REDIS_URL: a single node, so the first account becomes admin.
      gw = await buildTestGateway(db.env, { clock });
      admin = await newUser(gw);
    });
    after(async () => {
      await gw?.cleanup();
      await drop?.();
    });

    test('the first account of an empty install is its admin, and the log says so', async () => {
      const me = await call('GET', '/api/auth/me', admin.auth);
      assert.equal(me.json().data.role, 'admin');
      assert.ok(gw.logLines.some((l) => l.includes('the first account of this install was made its admin')));
      const second = await newUser(gw);
      assert.equal((await call('GET', '/api/auth/me', second.auth)).json().data.role, 'user');
    });

    test('every admin route answers 403 FORBIDDEN to a normal user and 401 to nobody', async () => {
      const user = await newUser(gw);
      const id = '00000000-0000-4000-8000-000000000000';
      const routes: ['GET' | 'POST' | 'PATCH', string, object?][] = [
        ['GET', '/api/admin/users'],
        ['PATCH', `/api/admin/users/${user.id}`, { role: 'admin' }],
        ['GET', '/api/admin/sessions'],
        ['POST', `/api/admin/sessions/${id}/end`],
        ['POST', '/api/admin/invites', {}],
        ['GET', '/api/admin/audit'],
      ];
      for (const [method, url, payload] of routes) {
        const res = await call(method, url, user.auth, payload);
        assert.equal(res.statusCode, 403, `${method} ${url}`);
        assert.equal(errorCode(res), 'FORBIDDEN');
        const anonymous = await gw.app.inject({ method, url, ...(payload === undefined ? {} : { payload }) });
        assert.equal(anonymous.statusCode, 401, `${method} ${url} without a token`);
      }
      assert.equal((await call('GET', '/api/auth/me', user.auth)).json().data.role, 'user');
    });

    test('users: search by email, cursor pages, live session counts', async () => {
      const tag = `page${Date.now()}`;
      const made = [];
      for (let i = 0; i < 5; i++) {
        clock.advance(1);
        made.push(await newUser(gw, { email: `${tag}-${i}@example.com` }));
      }
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const query: string = `q=${tag}&limit=2${cursor ? `&cursor=${cursor}` : ''}`;
        const res = await call('GET', `/api/admin/users?${query}`, admin.auth);
        assert.equal(res.statusCode, 200, res.body);
        const body = res.json<{
          data: {
            items: {
              id: string;
              email: string;
              liveSessions: number;
              role: string;
              disabled: boolean;
              lastSignInAt: string | null;
              createdAt: string;
            }[];
            nextCursor: string | null;
          };
        }>().data;
        assert.ok(body.items.length <= 2);
        for (const u of body.items) {
          assert.ok(u.email.startsWith(tag));
          assert.equal(u.liveSessions, 0);
          assert.equal(u.role, 'user');
          assert.equal(u.disabled, false);
          assert.equal(typeof u.createdAt, 'string');
          seen.push(u.id);
        }
        cursor = body.nextCursor;
      } while (cursor);
      assert.deepEqual(
        seen,
        made.map((u) => u.id),
        'every match once, oldest first',
      );
      assert.equal(
        errorCode(await call('GET', '/api/admin/users?cursor=bm9wZQ', admin.auth)),
        'CURSOR_INVALID',
      );
      assert.equal(
        (await call('GET', '/api/admin/users?limit=0', admin.auth)).statusCode,
        400,
        'a limit out of range is refused',
      );
      // Filters by role and by disabled.
      const admins = (await call('GET', '/api/admin/users?role=admin', admin.auth)).json().data.items;
      assert.deepEqual(
        admins.map((u: { id: string }) => u.id),
        [admin.id],
      );
    });

    test('the last admin can be neither demoted nor disabled; a second admin can be', async () => {
      const res = await call('PATCH', `/api/admin/users/${admin.id}`, admin.auth, { role: 'user' });
      assert.equal(res.statusCode, 409);
      assert.equal(errorCode(res), 'LAST_ADMIN');
      assert.equal(
        errorCode(await call('PATCH', `/api/admin/users/${admin.id}`, admin.auth, { disabled: true })),
        'LAST_ADMIN',
      );
      const other = await newUser(gw);
      const promoted = await call('PATCH', `/api/admin/users/${other.id}`, admin.auth, { role: 'admin' });
      assert.equal(promoted.statusCode, 200, promoted.body);
      assert.equal(promoted.json().data.role, 'admin');
      // The promoted admin reaches admin routes at once (the role is read from the store).
      assert.equal((await call('GET', '/api/admin/users', other.auth)).statusCode, 200);
      const demoted = await call('PATCH', `/api/admin/users/${other.id}`, admin.auth, { role: 'user' });
      assert.equal(demoted.json().data.role, 'user');
      assert.equal(errorCode(await call('GET', '/api/admin/users', other.auth)), 'FORBIDDEN');
      assert.equal((await call('PATCH', `/api/admin/users/${other.id}`, admin.auth, {})).statusCode, 400);
      assert.equal(
        errorCode(
          await call('PATCH', '/api/admin/users/00000000-0000-4000-8000-000000000000', admin.auth, {
            role: 'user',
          }),
        ),
        'USER_NOT_FOUND',
      );
      const events = await audit(`type=user.role-changed&target=${other.id}`);
      assert.deepEqual(
        events.items.map((e) => [e.actor, e.details.from, e.details.to]),
        [
          [admin.id, 'admin', 'user'],
          [admin.id, 'user', 'admin'],
        ],
      );
    });

    test('disabling revokes refresh tokens, refuses access tokens and sign-in; enabling restores sign-in', async () => {
      const user = await newUser(gw);
      const res = await call('PATCH', `/api/admin/users/${user.id}`, admin.auth, { disabled: true });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.json().data.disabled, true);
      const api = await call('GET', '/api/instances', user.auth);
      assert.equal(api.statusCode, 403);
      assert.equal(errorCode(api), 'ACCOUNT_DISABLED');
      const refresh = await gw.app.inject({
        method: 'POST',
        url: '/api/auth/refresh',
        payload: { refreshToken: user.refreshToken },
      });
      assert.equal(refresh.statusCode, 401, 'the refresh token was revoked');
      const login = () =>
        gw.app.inject({
          method: 'POST',
          url: '/api/auth/login',
          payload: { email: user.email, password: user.password },
        });
      assert.equal(errorCode(await login()), 'ACCOUNT_DISABLED');
      await call('PATCH', `/api/admin/users/${user.id}`, admin.auth, { disabled: false });
      const again = await login();
      assert.equal(again.statusCode, 200, again.body);
      const listed = await call('GET', `/api/admin/users?q=${encodeURIComponent(user.email)}`, admin.auth);
      assert.notEqual(listed.json().data.items[0].lastSignInAt, null);
      const events = await audit(`target=${user.id}`);
      const types = events.items.map((e) => e.type);
      for (const t of [
        'user.disabled',
        'user.enabled',
        'auth.sign-in-failed',
        'auth.sign-in',
        'auth.register',
      ])
        assert.ok(types.includes(t), `${t} in ${types.join(', ')}`);
      const failed = events.items.find((e) => e.type === 'auth.sign-in-failed');
      assert.equal(failed?.details.reason, 'ACCOUNT_DISABLED');
    });

    test('audit: sign-ins with their IP and reason, filters, cursor pages, and a user sees only their own', async () => {
      const user = await newUser(gw);
      await gw.app.inject({
        method: 'POST',
        url: '/api/auth/login',
        payload: { email: user.email, password: 'not the password' },
        remoteAddress: '198.51.100.7',
      });
      await gw.app.inject({
        method: 'POST',
        url: '/api/auth/login',
        payload: { email: user.email, password: user.password },
        remoteAddress: '198.51.100.8',
      });
      const created = await call('POST', '/api/instances', user.auth, {
        name: 'box',
        host: '127.0.0.1',
        port: 22,
        username: 'ubuntu',
        auth: { type: 'password', password: 'hunter2-secret' },
      });
      assert.equal(created.statusCode, 201, created.body);
      const instanceId = created.json().data.id as string;
      await call('PATCH', `/api/instances/${instanceId}`, user.auth, {
        name: 'box 2',
        auth: { type: 'password', password: 'another-secret' },
      });

      const mine = await (async () => {
        await gw.audit.flush();
        const res = await call('GET', '/api/audit/me', user.auth);
        assert.equal(res.statusCode, 200, res.body);
        return res.json().data.items as {
          type: string;
          ip: string | null;
          details: Record<string, unknown>;
          targetId: string;
        }[];
      })();
      assert.deepEqual(
        mine.map((e) => e.type),
        ['instance.changed', 'instance.created', 'auth.sign-in', 'auth.sign-in-failed', 'auth.register'],
      );
      assert.equal(mine[2]!.ip, '198.51.100.8');
      assert.equal(mine[3]!.ip, '198.51.100.7');
      assert.equal(mine[3]!.details.reason, 'INVALID_CREDENTIALS');
      assert.deepEqual(mine[0]!.details, { fields: ['name', 'auth'], authType: 'password' });
      assert.equal(mine[1]!.targetId, instanceId);
      assert.ok(!JSON.stringify(mine).includes('secret'), 'no password in the trail');
      // Another user's trail is not theirs.
      const other = await newUser(gw);
      await gw.audit.flush();
      const theirs = (await call('GET', '/api/audit/me', other.auth)).json().data.items as { type: string }[];
      assert.deepEqual(
        theirs.map((e) => e.type),
        ['auth.register'],
      );

      // Admin filters: actor, type, time range, and cursor pages that meet without overlap.
      const byActor = await audit(`actor=${user.id}&type=instance.created`);
      assert.equal(byActor.items.length, 1);
      const from = new Date(clock.now() - 1000).toISOString();
      const to = new Date(clock.now() + 1000).toISOString();
      const first = await audit(`target=${user.id}&limit=2&from=${from}&to=${to}`);
      assert.equal(first.items.length, 2);
      assert.ok(first.nextCursor);
      const rest = await audit(`target=${user.id}&limit=50&cursor=${first.nextCursor}`);
      assert.deepEqual(
        [...first.items, ...rest.items].map((e) => e.type),
        mine.map((e) => e.type),
      );
      const late = await audit(`target=${user.id}&from=${new Date(clock.now() + 60_000).toISOString()}`);
      assert.equal(late.items.length, 0);
      const bad = await call('GET', `/api/admin/audit?from=${to}&to=${from}`, admin.auth);
      assert.equal(errorCode(bad), 'AUDIT_RANGE_INVALID');
      assert.equal((await call('GET', '/api/admin/audit?type=no.such', admin.auth)).statusCode, 400);
    });

    test('every audit event is also a structured log line', async () => {
      const before = gw.logLines.length;
      await newUser(gw);
      const line = gw.logLines
        .slice(before)
        .map((l) => JSON.parse(l) as { msg: string; audit?: { type: string; actor: string } })
        .find((l) => l.msg === 'audit event');
      assert.equal(line?.audit?.type, 'auth.register');
    });

    test('retention: AUDIT_RETENTION_DAYS (90) of rows are kept, older ones swept by one node', async () => {
      const user = await newUser(gw);
      await gw.audit.flush();
      const repo = new AuditRepository(gw.store);
      const rowsOf = () => repo.list({ target: user.id, limit: 10 });
      clock.advance(89 * 86_400_000);
      assert.equal(await gw.auditRetention.runOnce(), 0);
      assert.ok((await rowsOf()).length > 0);
      clock.advance(2 * 86_400_000);
      const swept = await gw.auditRetention.runOnce();
      assert.ok(swept !== null && swept > 0);
      assert.equal((await rowsOf()).length, 0);
      // While another node holds the sweep lock this one does nothing.
      const lock = await gw.coordinator.tryLock('audit-retention', 60_000);
      assert.ok(lock);
      assert.equal(await gw.auditRetention.runOnce(), null);
      await gw.coordinator.unlock(lock);
    });

    test('a store outage: events wait in the buffer, bounded and counted, and are written once it is back', async () => {
      const repo = new AuditRepository(gw.store);
      let down = true;
      const outage = () => Object.assign(new Error('connect ECONNREFUSED (test)'), { code: 'ECONNREFUSED' });
      const flaky = {
        appendMany: (rows: readonly AuditRow[]) => (down ? Promise.reject(outage()) : repo.appendMany(rows)),
      };
      const { logger, lines } = captureLogger();
      let dropped = 0;
      const log = new AuditLog(
        { repo: flaky, clock, logger },
        { nodeId: 'outage', maxEntries: 3, onDropped: (d) => (dropped += d.count) },
      );
      const target = crypto.randomUUID();
      for (let i = 0; i < 2; i++)
        log.record('session.started', { actor: 'system', targetId: target, details: { i } });
      await log.flush();
      assert.equal(log.pending, 2, 'kept for the next flush');
      assert.equal(log.waitingForStore, true);
      for (let i = 2; i < 5; i++)
        log.record('session.started', { actor: 'system', targetId: target, details: { i } });
      assert.equal(log.pending, 3, 'bounded');
      assert.equal(dropped, 2, 'the overflow is counted');
      assert.equal(log.dropped, 2);
      assert.ok(
        lines.some((l) => l.includes('audit events dropped')),
        'and logged',
      );
      down = false;
      await log.flush();
      assert.equal(log.pending, 0);
      const rows = await repo.list({ target, limit: 10 });
      assert.deepEqual(
        rows.map((r) => (JSON.parse(r.details) as { i: number }).i),
        [2, 1, 0],
        'what was held is written, in order',
      );
      assert.ok(rows.every((r) => r.node_id === 'outage'));
    });
  });
}

describe('closed registration and invites', () => {
  const clock = new ManualClock(Date.now());

  test('REGISTRATION=closed: sign-up needs an invite, which works once, for its email, until it expires', async () => {
    // The admin is made as `clouddesk admin create` makes one (closed: nobody can sign up first).
    const closed = await buildTestGateway({ REGISTRATION: 'closed' }, { clock });
    try {
      const registration = await closed.app.inject({ method: 'GET', url: '/api/auth/registration' });
      assert.deepEqual(registration.json(), { data: { mode: 'closed' } });
      const refused = await closed.app.inject({
        method: 'POST',
        url: '/api/auth/register',
        payload: { email: 'walk-in@example.com', password: 'correct horse battery staple' },
      });
      assert.equal(refused.statusCode, 403);
      assert.equal(errorCode(refused), 'REGISTRATION_CLOSED');

      const row = await closed.auth.createAccount(
        'boss@example.com',
        'correct horse battery staple',
        'admin',
      );
      const boss = await closed.app.inject({
        method: 'POST',
        url: '/api/auth/login',
        payload: { email: row.email, password: 'correct horse battery staple' },
      });
      const bossAuth = { authorization: `Bearer ${boss.json().data.accessToken as string}` };
      const invite = await closed.app.inject({
        method: 'POST',
        url: '/api/admin/invites',
        headers: bossAuth,
        payload: { email: 'Invited@Example.com', expiresInHours: 2 },
      });
      assert.equal(invite.statusCode, 201, invite.body);
      const { token, url, email } = invite.json().data as { token: string; url: string; email: string };
      assert.equal(email, 'invited@example.com');
      assert.ok(url.includes(token));
      const stored = await closed.store.db.selectFrom('invites').selectAll().execute();
      assert.ok(!JSON.stringify(stored).includes(token), 'only a hash of the token is stored');

      const register = (e: string, inviteToken: string) =>
        closed.app.inject({
          method: 'POST',
          url: '/api/auth/register',
          payload: { email: e, password: 'correct horse battery staple', inviteToken },
        });
      assert.equal(errorCode(await register('someone-else@example.com', token)), 'INVITE_INVALID');
      const ok = await register('invited@example.com', token);
      assert.equal(ok.statusCode, 201, ok.body);
      assert.equal(ok.json().data.user.role, 'user');
      assert.equal(errorCode(await register('invited2@example.com', token)), 'INVITE_INVALID', 'single use');

      const open = await closed.app.inject({
        method: 'POST',
        url: '/api/admin/invites',
        headers: bossAuth,
        payload: { expiresInHours: 1 },
      });
      const later = open.json().data.token as string;
      clock.advance(61 * 60_000);
      assert.equal(errorCode(await register('late@example.com', later)), 'INVITE_INVALID', 'expired');
      assert.equal(
        (await closed.app.inject({ method: 'GET', url: '/api/auth/me', headers: bossAuth })).statusCode,
        401,
        'the clock moved past the access token too',
      );
    } finally {
      await closed.cleanup();
    }
  });
});

describe('audit details', () => {
  test('credential-looking fields and token-like values never reach a row', () => {
    const clean = cleanDetails({
      password: 'p',
      newPassword: 'p',
      passphrase: 'p',
      privateKey: 'k',
      accessToken: 't',
      ticket: 't',
      secret: 's',
      key: 'k',
      jwt: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abc',
      pem: '-----BEGIN OPENSSH PRIVATE KEY-----',
      long: 'A'.repeat(43),
      fields: ['name', 'auth'],
      host: '203.0.113.1',
      fingerprint: 'SHA256:' + 'a'.repeat(43),
    });
    assert.deepEqual(clean, {
      fields: ['name', 'auth'],
      host: '203.0.113.1',
      fingerprint: 'SHA256:' + 'a'.repeat(43),
    });
  });
});
