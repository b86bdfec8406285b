// Company sign-in against a real OpenID provider (oidc-provider on a loopback port, its own RSA key,
// discovery), walked without a browser by a client with a cookie jar, through two gateways on one
// PostgreSQL database and one Redis: a sign-in started on gateway A finishes on gateway B (state,
// nonce and PKCE verifier live in the coordinator). Accounts are made just in time, linked to an
// existing account only on a verified email, refused outside OIDC_ALLOWED_DOMAINS, and made admin by
// the groups claim; a replayed state, a wrong nonce and an ID token signed by another key are refused,
// and every outcome is in the audit trail.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { systemClock } from '../src/lib/clock.js';
import { createLogger } from '../src/observability/logger.js';
import { RedisCoordinator } from '../src/coordination/redis-coordinator.js';
import { freePort } from './helpers/free-port.js';
import { buildTestGateway, newUser, type TestGateway } from './helpers/builders.js';
import { createTestDatabase } from './helpers/postgres-database.js';
import { startOidcProvider, type OidcProviderFixture } from './helpers/oidc-provider.js';

const REDIS_URL = 'redis://127.0.0.1:6379';

/** Cookies per host:port (enough for loopback servers; paths are not told apart). */
class CookieJar {
  private readonly jars = new Map<string, Map<string, string>>();

  header(url: URL): string {
    return [...(this.jars.get(url.host) ?? new Map<string, string>())]
      .map(([k, v]) => `${k}=${v}`)
      .join('; ');
  }

  take(url: URL, res: Response): void {
    let jar = this.jars.get(url.host);
    if (!jar) this.jars.set(url.host, (jar = new Map()));
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      if (value === '' || /max-age=0|expires=thu, 01 jan 1970/i.test(line)) jar.delete(name);
      else jar.set(name, value);
    }
  }

  get(host: string, name: string): string | undefined {
    return this.jars.get(host)?.get(name);
  }
}

/** One request, redirects not followed, cookies kept. */
async function go(jar: CookieJar, url: URL, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const cookie = jar.header(url);
  if (cookie) headers.set('cookie', cookie);
  const res = await fetch(url, { ...init, headers, redirect: 'manual' });
  jar.take(url, res);
  return res;
}

function location(res: Response, base: URL): URL {
  const to = res.headers.get('location');
  assert.ok(to, `expected a redirect, got ${res.status}: ${res.statusText}`);
  return new URL(to, base);
}

describe('company sign-in (OIDC) across two gateways', () => {
  let idp: OidcProviderFixture;
  let db: { url: string; drop(): Promise<void> };
  let a: TestGateway & { base: string };
  let b: TestGateway & { base: string };
  const gateways: (TestGateway & { base: string })[] = [];
  const prefix = `cd-test-oidc-${randomBytes(4).toString('hex')}:`;

  before(async () => {
    db = await createTestDatabase();
    const ports = [await freePort(), await freePort()];
    idp = await startOidcProvider({
      redirectUris: ports.map((p) => `http://127.0.0.1:${p}/api/auth/oidc/callback`),
      accounts: {
        alice: { email: 'Alice@Example.com', email_verified: true, name: 'Alice', groups: ['cd-admins'] },
        bob: { email: 'bob@example.com', email_verified: true, groups: ['staff'] },
        eve: { email: 'eve@elsewhere.org', email_verified: true },
        carol: { email: 'carol@example.com', email_verified: false },
        dave: { email: 'dave@example.com', email_verified: true },
      },
    });
    for (const [i, node] of ['gw-a', 'gw-b'].entries()) {
      const coordinator = new RedisCoordinator({
        url: REDIS_URL,
        clock: systemClock,
        logger: createLogger({ level: 'silent' }),
        keyPrefix: prefix,
      });
      const gw = await buildTestGateway(
        {
          DATABASE_URL: db.url,
          REDIS_URL,
          NODE_ID: node,
          REGISTRATION: 'open',
          OIDC_ISSUER: idp.issuer,
          OIDC_CLIENT_ID: idp.clientId,
          OIDC_CLIENT_SECRET: idp.clientSecret,
          OIDC_SCOPES: 'openid email profile groups',
          OIDC_ALLOWED_DOMAINS: 'example.com',
          OIDC_ADMIN_GROUPS: 'cd-admins',
          OIDC_NAME: 'Example SSO',
        },
        { coordinator },
      );
      gw.start();
      // On the port the provider has as this gateway's callback.
      await gw.app.listen({ host: '127.0.0.1', port: ports[i]! });
      gateways.push(Object.assign(gw, { base: `127.0.0.1:${ports[i]!}` }));
    }
    [a, b] = gateways as [typeof a, typeof b];
  });
  after(async () => {
    for (const g of gateways) await g.cleanup();
    await idp?.stop();
    await db?.drop();
  });

  /**
   * The browser's walk: start on `startOn`, sign in at the provider as `account`, and deliver the
   * provider's callback to `finishOn` (a balancer may pick any node). `tamper` may change the
   * authorization URL before the browser follows it.
   */
  async function signIn(
    account: string,
    opts: { startOn?: { base: string }; finishOn?: { base: string }; tamper?: (u: URL) => void } = {},
  ) {
    const jar = new CookieJar();
    const start = new URL(`http://${(opts.startOn ?? a).base}/api/auth/oidc/start`);
    let res = await go(jar, start);
    assert.equal(res.status, 302);
    let url = location(res, start);
    assert.equal(url.origin, idp.issuer);
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
    assert.ok(url.searchParams.get('state') && url.searchParams.get('nonce'));
    opts.tamper?.(url);
    for (let hops = 0; hops < 10; hops++) {
      res = await go(jar, url);
      if (res.status === 200 && /\/interaction\//.test(url.pathname)) {
        res = await go(jar, new URL(`${url.pathname}/login`, url), {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ login: account }).toString(),
        });
      }
      url = location(res, url);
      if (url.pathname === '/api/auth/oidc/callback') break;
    }
    assert.equal(url.pathname, '/api/auth/oidc/callback');
    const finishBase = (opts.finishOn ?? a).base;
    const callback = new URL(`http://${finishBase}${url.pathname}${url.search}`);
    // The balancer hands the callback to `finishOn`: carry the start node's cookies over.
    const startHost = new URL(`http://${(opts.startOn ?? a).base}`).host;
    const state = jar.get(startHost, 'cd_oidc');
    const headers: Record<string, string> = state ? { cookie: `cd_oidc=${state}` } : {};
    const done = await fetch(callback, { headers, redirect: 'manual' });
    const to = location(done, callback);
    const refresh = done.headers
      .getSetCookie()
      .find((c) => c.startsWith('cd_refresh='))
      ?.split(';')[0];
    return { to, refresh, callback, state, jar };
  }

  async function me(refreshCookie: string, gw: TestGateway = b) {
    const r = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      headers: { cookie: refreshCookie },
    });
    assert.equal(r.statusCode, 200, r.body);
    const token = r.json<{ data: { accessToken: string } }>().data.accessToken;
    const m = await gw.app.inject({ url: '/api/auth/me', headers: { authorization: `Bearer ${token}` } });
    return m.json<{ data: { id: string; email: string; role: string } }>().data;
  }

  async function trail(type: string) {
    await a.audit.flush();
    await b.audit.flush();
    const rows = await a.store.db.selectFrom('audit_events').selectAll().where('type', '=', type).execute();
    return rows.map((r) => ({ ...r, details: JSON.parse(r.details) as Record<string, unknown> }));
  }

  test('the sign-in page learns what to offer', async () => {
    const r = await a.app.inject({ url: '/api/auth/methods' });
    assert.deepEqual(r.json<{ data: unknown }>().data, {
      local: true,
      oidc: { name: 'Example SSO' },
      registration: 'open',
    });
  });

  test('a sign-in started on gateway A finishes on gateway B: a new account, made admin by its group', async () => {
    const { to, refresh } = await signIn('alice', { startOn: a, finishOn: b });
    assert.equal(to.pathname + to.search, '/instances?signedIn=oidc');
    assert.ok(refresh, 'the refresh cookie is set');
    const user = await me(refresh, b);
    assert.equal(user.email, 'alice@example.com');
    assert.equal(user.role, 'admin');
  });

  test('the second sign-in of an identity lands on the same account; a lost group demotes', async () => {
    const first = await signIn('bob');
    const u1 = await me(first.refresh!);
    assert.equal(u1.role, 'user');
    idp.accounts.get('bob')!.groups = ['cd-admins'];
    const u2 = await me((await signIn('bob', { finishOn: b })).refresh!);
    assert.equal(u2.id, u1.id);
    assert.equal(u2.role, 'admin');
    idp.accounts.get('bob')!.groups = [];
    assert.equal((await me((await signIn('bob')).refresh!)).role, 'user');
  });

  test('an existing local account is linked on a verified email, never on an unverified one', async () => {
    const local = await newUser(a, { email: 'dave@example.com' });
    const dave = await me((await signIn('dave')).refresh!);
    assert.equal(dave.id, local.id);
    await newUser(a, { email: 'carol@example.com' });
    const carol = await signIn('carol');
    assert.equal(carol.to.search, '?signInError=OIDC_EMAIL_UNVERIFIED');
    assert.equal(carol.refresh, undefined);
  });

  test('an email outside OIDC_ALLOWED_DOMAINS is refused, and no account is made', async () => {
    const eve = await signIn('eve');
    assert.equal(eve.to.pathname + eve.to.search, '/sign-in?signInError=OIDC_DOMAIN_FORBIDDEN');
    assert.equal(eve.refresh, undefined);
    const login = await a.app.inject({
      method: 'POST',
      url: '/api/auth/login',
      payload: { email: 'eve@elsewhere.org', password: 'anything at all' },
    });
    assert.equal(login.statusCode, 401);
  });

  test('a replayed callback, or one without the browser that started it, is refused', async () => {
    const ok = await signIn('bob');
    assert.ok(ok.refresh);
    const replay = await fetch(ok.callback, {
      headers: { cookie: `cd_oidc=${ok.state}` },
      redirect: 'manual',
    });
    assert.equal(location(replay, ok.callback).search, '?signInError=OIDC_STATE_INVALID');
    assert.equal(replay.headers.getSetCookie().filter((c) => c.startsWith('cd_refresh=')).length, 0);

    // Someone else's callback URL (their state) opened in a victim's browser: no matching cookie.
    const jar = new CookieJar();
    const start = new URL(`http://${a.base}/api/auth/oidc/start`);
    const authUrl = location(await go(jar, start), start);
    const forged = new URL(
      `http://${a.base}/api/auth/oidc/callback?code=x&state=${authUrl.searchParams.get('state')}`,
    );
    const res = await fetch(forged, { redirect: 'manual' });
    assert.equal(location(res, forged).search, '?signInError=OIDC_STATE_INVALID');
  });

  test('an ID token with another nonce is refused', async () => {
    const r = await signIn('bob', { tamper: (u) => u.searchParams.set('nonce', 'not-the-one-we-sent') });
    assert.equal(r.to.search, '?signInError=OIDC_TOKEN_INVALID');
    assert.equal(r.refresh, undefined);
  });

  test('an ID token signed by a key the provider never published is refused', async () => {
    idp.forgeNextIdToken();
    const r = await signIn('bob', { finishOn: b });
    assert.equal(r.to.search, '?signInError=OIDC_TOKEN_INVALID');
    assert.equal(r.refresh, undefined);
  });

  test('sign-ins and their refusals are in the audit trail', async () => {
    const ok = await trail('auth.sign-in');
    assert.ok(ok.some((e) => e.details.method === 'oidc' && e.details.email === 'alice@example.com'));
    const refused = await trail('auth.sign-in-failed');
    const reasons = refused.filter((e) => e.details.method === 'oidc').map((e) => e.details.reason);
    for (const reason of [
      'OIDC_DOMAIN_FORBIDDEN',
      'OIDC_EMAIL_UNVERIFIED',
      'OIDC_STATE_INVALID',
      'OIDC_TOKEN_INVALID',
    ])
      assert.ok(reasons.includes(reason), `${reason} in ${reasons.join(',')}`);
    const linked = await trail('identity.linked');
    assert.ok(linked.some((e) => e.details.email === 'dave@example.com'));
  });
});

describe('AUTH_LOCAL=disabled', () => {
  test('password registration and sign-in answer LOCAL_AUTH_DISABLED; the page offers only the company', async () => {
    const gw = await buildTestGateway({
      AUTH_LOCAL: 'disabled',
      OIDC_ISSUER: 'http://127.0.0.1:9/never-asked',
      OIDC_CLIENT_ID: 'clouddesk',
    });
    try {
      const creds = { email: 'someone@example.com', password: 'correct horse battery staple' };
      for (const url of ['/api/auth/register', '/api/auth/login']) {
        const r = await gw.app.inject({ method: 'POST', url, payload: creds });
        assert.equal(r.statusCode, 403);
        assert.equal(r.json<{ error: { code: string } }>().error.code, 'LOCAL_AUTH_DISABLED');
      }
      const methods = await gw.app.inject({ url: '/api/auth/methods' });
      assert.deepEqual(methods.json<{ data: { local: boolean; oidc: unknown } }>().data.local, false);
      // A provider that cannot be reached: the sign-in page gets a code, not a hang or a 500.
      const start = await gw.app.inject({ url: '/api/auth/oidc/start' });
      assert.equal(start.statusCode, 302);
      assert.equal(start.headers.location, '/sign-in?signInError=OIDC_PROVIDER_UNAVAILABLE');
    } finally {
      await gw.cleanup();
    }
  });
});
