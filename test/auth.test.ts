import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { LightMyRequestResponse } from 'fastify';
import { ManualClock } from '../src/lib/clock.js';
import { buildTestGateway, newUser, type TestGateway } from './helpers/builders.js';
import { createTestDatabase } from './helpers/postgres-database.js';

const REUSE_GRACE_MS = 10_000; // REFRESH_REUSE_GRACE_MS's default

function refresh(gw: TestGateway, refreshToken: string): Promise<LightMyRequestResponse> {
  return gw.app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refreshToken } });
}

/** Refreshes and returns the new refresh token, failing the test unless the refresh worked. */
async function rotate(gw: TestGateway, refreshToken: string): Promise<string> {
  const res = await refresh(gw, refreshToken);
  assert.equal(res.statusCode, 200, res.body);
  return res.json<{ data: { refreshToken: string } }>().data.refreshToken;
}

function assertRefused(res: LightMyRequestResponse, code: string, why: string): void {
  assert.equal(res.statusCode, 401, why);
  assert.equal(res.json<{ error: { code: string } }>().error.code, code, why);
}

describe('auth API', () => {
  let gw: TestGateway;
  const clock = new ManualClock(Date.now());

  before(async () => {
    gw = await buildTestGateway({}, { clock });
  });
  after(() => gw.cleanup());

  test('register answers 201 with the user and both tokens, and sets an httpOnly refresh cookie', async () => {
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/register',
      payload: { email: 'Ada@Example.com', password: 'analytical engine' },
    });
    assert.equal(res.statusCode, 201);
    const body = res.json().data;
    assert.equal(body.user.email, 'ada@example.com');
    assert.equal(typeof body.user.id, 'string');
    assert.equal(typeof body.accessToken, 'string');
    assert.equal(typeof body.refreshToken, 'string');
    const cookie = String(res.headers['set-cookie']);
    assert.match(cookie, /cd_refresh=/);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.match(cookie, /Path=\/api\/auth/);
    const row = await gw.store.db
      .selectFrom('users')
      .selectAll()
      .where('email', '=', 'ada@example.com')
      .executeTakeFirstOrThrow();
    assert.match(row.password_hash, /^\$argon2id\$/);
    assert.ok(!row.password_hash.includes('analytical'));
  });

  test('a taken email is 409 EMAIL_TAKEN', async () => {
    const u = await newUser(gw);
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/register',
      payload: { email: u.email, password: 'something else' },
    });
    assert.equal(res.statusCode, 409);
    assert.equal(res.json().error.code, 'EMAIL_TAKEN');
  });

  test('wrong password and unknown email get the same 401 INVALID_CREDENTIALS', async () => {
    const u = await newUser(gw);
    const wrong = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/login',
      payload: { email: u.email, password: 'nope nope' },
    });
    const unknown = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/login',
      payload: { email: 'nobody@example.com', password: 'nope nope' },
    });
    assert.equal(wrong.statusCode, 401);
    assert.equal(unknown.statusCode, 401);
    assert.deepEqual(wrong.json(), unknown.json());
    assert.equal(wrong.json().error.code, 'INVALID_CREDENTIALS');
    const ok = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/login',
      payload: { email: u.email.toUpperCase(), password: u.password },
    });
    assert.equal(ok.statusCode, 200);
    assert.equal(ok.json().data.user.id, u.id);
  });

  test('refresh rotates; presenting a used token after the grace window revokes the whole family', async () => {
    const u = await newUser(gw);
    const first = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      payload: { refreshToken: u.refreshToken },
    });
    assert.equal(first.statusCode, 200);
    const rotated = first.json().data.refreshToken as string;
    assert.notEqual(rotated, u.refreshToken);
    clock.advance(REUSE_GRACE_MS);
    const reuse = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      payload: { refreshToken: u.refreshToken },
    });
    assert.equal(reuse.statusCode, 401);
    assert.equal(reuse.json().error.code, 'REFRESH_TOKEN_REUSED');
    const afterTheft = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      payload: { refreshToken: rotated },
    });
    assert.equal(afterTheft.statusCode, 401, 'the thief and the owner both lose this sign-in');
  });

  test('refresh works from the cookie alone; logout revokes it and clears the cookie', async () => {
    const u = await newUser(gw);
    const viaCookie = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      payload: {},
      cookies: { cd_refresh: u.refreshToken },
    });
    assert.equal(viaCookie.statusCode, 200);
    const token = viaCookie.json().data.refreshToken as string;
    const out = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/logout',
      payload: {},
      cookies: { cd_refresh: token },
    });
    assert.equal(out.statusCode, 204);
    assert.match(String(out.headers['set-cookie']), /cd_refresh=;/);
    const again = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      payload: { refreshToken: token },
    });
    assert.equal(again.statusCode, 401);
  });

  test('me needs a valid access token; an expired one says TOKEN_EXPIRED', async () => {
    const u = await newUser(gw);
    const me = await gw.app.inject({ method: 'GET', url: '/api/auth/me', headers: u.auth });
    assert.deepEqual(me.json(), { data: { id: u.id, email: u.email, role: 'user' } });
    const none = await gw.app.inject({ method: 'GET', url: '/api/auth/me' });
    assert.equal(none.json().error.code, 'UNAUTHENTICATED');
    const garbage = await gw.app.inject({
      method: 'GET',
      url: '/api/auth/me',
      headers: { authorization: 'Bearer abc.def.ghi' },
    });
    assert.equal(garbage.json().error.code, 'INVALID_TOKEN');
    const refreshAsAccess = await gw.app.inject({
      method: 'GET',
      url: '/api/auth/me',
      headers: { authorization: `Bearer ${u.refreshToken}` },
    });
    assert.equal(refreshAsAccess.statusCode, 401, 'a refresh token is not an access token');
    clock.advance(16 * 60_000);
    const expired = await gw.app.inject({ method: 'GET', url: '/api/auth/me', headers: u.auth });
    assert.equal(expired.statusCode, 401);
    assert.equal(expired.json().error.code, 'TOKEN_EXPIRED');
  });
});

// Issue 14.3: the web client refreshes and signs out with the cookie alone (no body, no content-type),
// and a cookie-authenticated call must come from an allowed Origin.
describe('refresh and logout from the cookie alone, and the Origin check', () => {
  let gw: TestGateway;
  const host = 'desk.example.com:3000';

  before(async () => {
    gw = await buildTestGateway({ CORS_ORIGIN: 'https://app.example.com,https://*.corp.example' });
  });
  after(() => gw.cleanup());

  /** A POST with the cookie and nothing else: no body, no content-type. */
  const withCookie = (url: string, token: string, headers: Record<string, string> = {}) =>
    gw.app.inject({ method: 'POST', url, cookies: { cd_refresh: token }, headers: { host, ...headers } });

  const stillValid = async (token: string) => {
    const res = await refresh(gw, token);
    assert.equal(res.statusCode, 200, `the token was lost: ${res.body}`);
  };

  test('refresh with only the cookie, no body and no content-type, rotates and sets the new cookie', async () => {
    const u = await newUser(gw);
    const res = await withCookie('/api/auth/refresh', u.refreshToken, { origin: `http://${host}` });
    assert.equal(res.statusCode, 200, res.body);
    const fresh = res.json<{ data: { refreshToken: string; accessToken: string } }>().data;
    assert.match(String(res.headers['set-cookie']), new RegExp(`cd_refresh=${fresh.refreshToken};`));
    const me = await gw.app.inject({
      method: 'GET',
      url: '/api/auth/me',
      headers: { authorization: `Bearer ${fresh.accessToken}` },
    });
    assert.equal(me.statusCode, 200);
  });

  test('logout with only the cookie revokes it and clears the cookie', async () => {
    const u = await newUser(gw);
    const res = await withCookie('/api/auth/logout', u.refreshToken, { origin: `http://${host}` });
    assert.equal(res.statusCode, 204, res.body);
    assert.match(String(res.headers['set-cookie']), /cd_refresh=;/);
    assert.equal((await refresh(gw, u.refreshToken)).statusCode, 401);
  });

  test('no cookie and no body answers 401 UNAUTHENTICATED, not a validation error', async () => {
    const res = await gw.app.inject({ method: 'POST', url: '/api/auth/refresh' });
    assert.equal(res.statusCode, 401);
    assert.equal(res.json().error.code, 'UNAUTHENTICATED');
  });

  test('the cookie is accepted from the same origin and from CORS_ORIGIN entries', async () => {
    for (const origin of [`http://${host}`, 'https://app.example.com', 'https://eu.corp.example']) {
      const u = await newUser(gw);
      const res = await withCookie('/api/auth/refresh', u.refreshToken, { origin });
      assert.equal(res.statusCode, 200, `${origin}: ${res.body}`);
      const out = await withCookie('/api/auth/logout', res.json().data.refreshToken as string, { origin });
      assert.equal(out.statusCode, 204, origin);
    }
  });

  test('the cookie from any other Origin is refused with 403 FORBIDDEN_ORIGIN, and the token is not used up', async () => {
    for (const origin of [
      'https://evil.example',
      'http://desk.example.com:3001',
      'https://app.example.com.evil.example',
      'https://corp.example', // the pattern covers subdomains only
      'null', // sandboxed frames, opaque redirects
      'not a url',
    ]) {
      const u = await newUser(gw);
      for (const url of ['/api/auth/refresh', '/api/auth/logout']) {
        const res = await withCookie(url, u.refreshToken, { origin });
        assert.equal(res.statusCode, 403, `${url} from ${origin}`);
        assert.equal(res.json().error.code, 'FORBIDDEN_ORIGIN');
        assert.equal(res.headers['set-cookie'], undefined, 'the cookie is left alone');
      }
      await stillValid(u.refreshToken);
    }
  });

  test('non-browser clients: no Origin works with a body token, and with the cookie', async () => {
    const u = await newUser(gw);
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      headers: { host },
      payload: { refreshToken: u.refreshToken },
    });
    assert.equal(res.statusCode, 200, res.body);
    const viaCookie = await withCookie('/api/auth/refresh', res.json().data.refreshToken as string);
    assert.equal(viaCookie.statusCode, 200, viaCookie.body);
    const out = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/logout',
      headers: { host },
      payload: { refreshToken: viaCookie.json().data.refreshToken as string },
    });
    assert.equal(out.statusCode, 204);
  });
});

describe('REFRESH_REUSE_GRACE_MS=0', () => {
  test('turns the grace window off: a used token presented at once revokes the family', async () => {
    const gw = await buildTestGateway({ REFRESH_REUSE_GRACE_MS: '0' }, { clock: new ManualClock() });
    after(() => gw.cleanup());
    const u = await newUser(gw);
    const rotated = await rotate(gw, u.refreshToken);
    assertRefused(await refresh(gw, u.refreshToken), 'REFRESH_TOKEN_REUSED', 'no grace at all');
    assertRefused(await refresh(gw, rotated), 'INVALID_TOKEN', 'the family is gone');
  });
});

// A page closed (or a network drop) mid-refresh: the gateway rotated, the client never got the answer
// and presents the old token on its next load. Both store dialects, since the parent link is new.
for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`refresh reuse grace window (${dialect})`, () => {
    let gw: TestGateway;
    const clock = new ManualClock();

    before(async () => {
      if (dialect === 'sqlite') {
        gw = await buildTestGateway({}, { clock });
        return;
      }
      const db = await createTestDatabase();
      try {
        gw = await buildTestGateway({ DATABASE_URL: db.url }, { clock });
      } catch (e) {
        await db.drop();
        throw e;
      }
      const cleanup = gw.cleanup.bind(gw);
      gw.cleanup = async () => {
        await cleanup();
        await db.drop();
      };
    });
    after(() => gw?.cleanup());

    test('within the window the old token rotates again; the successor it replaced, if it shows up after all, ends the sign-in', async () => {
      const u = await newUser(gw);
      const lost = await rotate(gw, u.refreshToken); // the answer that never arrived
      clock.advance(REUSE_GRACE_MS - 1);
      const retried = await refresh(gw, u.refreshToken);
      assert.equal(retried.statusCode, 200, retried.body);
      const { accessToken, refreshToken: fresh } = retried.json<{
        data: { accessToken: string; refreshToken: string };
      }>().data;
      assert.notEqual(fresh, lost);
      const me = await gw.app.inject({
        method: 'GET',
        url: '/api/auth/me',
        headers: { authorization: `Bearer ${accessToken}` },
      });
      assert.equal(me.json<{ data: { id: string } }>().data.id, u.id);
      // The sign-in lives on in the fresh token, which rotates as usual.
      const next = await rotate(gw, fresh);
      const latest = await rotate(gw, next);
      // The "lost" successor was received by someone after all: whoever presented the old token again was
      // someone else (a copied token). That is reuse: the whole sign-in ends.
      assertRefused(await refresh(gw, lost), 'REFRESH_TOKEN_REUSED', 'the replaced successor showed up');
      assertRefused(await refresh(gw, latest), 'INVALID_TOKEN', 'the family is revoked');
    });

    test('a second lost answer within the same window is forgiven too, superseding the first retry', async () => {
      const u = await newUser(gw);
      await rotate(gw, u.refreshToken);
      clock.advance(1000);
      const firstRetry = await rotate(gw, u.refreshToken);
      clock.advance(1000);
      const secondRetry = await rotate(gw, u.refreshToken);
      const live = await rotate(gw, secondRetry);
      assertRefused(await refresh(gw, firstRetry), 'REFRESH_TOKEN_REUSED', 'replaced by the second retry');
      assertRefused(await refresh(gw, live), 'INVALID_TOKEN', 'the family is revoked');
    });

    test('after the window, presenting the old token revokes the family', async () => {
      const u = await newUser(gw);
      const successor = await rotate(gw, u.refreshToken);
      clock.advance(REUSE_GRACE_MS);
      assertRefused(await refresh(gw, u.refreshToken), 'REFRESH_TOKEN_REUSED', 'outside the window');
      assertRefused(await refresh(gw, successor), 'INVALID_TOKEN', 'the whole family is revoked');
    });

    test('an older ancestor revokes the family even within the window', async () => {
      const u = await newUser(gw);
      const second = await rotate(gw, u.refreshToken);
      const live = await rotate(gw, second);
      assertRefused(await refresh(gw, u.refreshToken), 'REFRESH_TOKEN_REUSED', "not the live token's parent");
      assertRefused(await refresh(gw, live), 'INVALID_TOKEN', 'the whole family is revoked');
      assertRefused(await refresh(gw, second), 'INVALID_TOKEN', 'its parent too');
    });
  });
}
