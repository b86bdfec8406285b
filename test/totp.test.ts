// Two-factor sign-in (TOTP) through the HTTP API, with the injected clock moving through the
// 30-second windows: set-up with a QR code and one confirming code, recovery codes shown once and
// stored hashed, the secret sealed at rest, sign-in answering MFA_REQUIRED and no token until the
// code, a code refused the second time within its window, challenges that expire and allow a few
// mistakes, codes under the sign-in rate limit, an admin's reset, and AUTH_REQUIRE_2FA's enrolment.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Secret, TOTP } from 'otpauth';
import { ManualClock } from '../src/lib/clock.js';
import { buildTestGateway, newUser, type TestGateway } from './helpers/builders.js';

type Json = Record<string, unknown>;

function codeAt(secret: string, at: number): string {
  return new TOTP({ secret: Secret.fromBase32(secret), period: 30, digits: 6, algorithm: 'SHA1' }).generate({
    timestamp: at,
  });
}

describe('TOTP two-factor sign-in', () => {
  const clock = new ManualClock(Date.UTC(2026, 11, 2, 6, 0, 0));
  let gw: TestGateway;
  let admin: Awaited<ReturnType<typeof newUser>>;

  before(async () => {
    gw = await buildTestGateway({ AUTH_MAX_FAILURES_PER_ACCOUNT_IP: '4' }, { clock });
    admin = await newUser(gw); // the first account of a single node: the admin
  });
  after(() => gw.cleanup());

  const post = (url: string, payload: object, headers: Record<string, string> = {}) =>
    gw.app.inject({ method: 'POST', url, payload, headers });
  const codeOf = (r: { json<T>(): T }) => r.json<{ error?: { code: string } }>().error?.code;

  async function enrolled() {
    const user = await newUser(gw);
    const setup = await post('/api/auth/2fa/setup', {}, user.auth);
    assert.equal(setup.statusCode, 200, setup.body);
    const enrolment = setup.json<{ data: { secret: string; otpauthUrl: string; qrSvg: string } }>().data;
    const confirm = await post(
      '/api/auth/2fa/confirm',
      { code: codeAt(enrolment.secret, clock.now()) },
      user.auth,
    );
    assert.equal(confirm.statusCode, 200, confirm.body);
    const { recoveryCodes } = confirm.json<{ data: { recoveryCodes: string[] } }>().data;
    return { user, enrolment, recoveryCodes };
  }

  async function passwordStep(user: { email: string; password: string }): Promise<string> {
    const r = await post('/api/auth/login', { email: user.email, password: user.password });
    assert.equal(r.statusCode, 401, r.body);
    const body = r.json<{ error: { code: string; details: { challenge: string } }; data?: Json }>();
    assert.equal(body.error.code, 'MFA_REQUIRED');
    assert.equal(body.data, undefined, 'no token before the code');
    assert.equal(r.headers['set-cookie'], undefined, 'no refresh cookie before the code');
    return body.error.details.challenge;
  }

  test('set-up gives a QR code and otpauth URL; a wrong first code is refused; ten recovery codes once', async () => {
    const user = await newUser(gw);
    const setup = await post('/api/auth/2fa/setup', {}, user.auth);
    const e = setup.json<{ data: { secret: string; otpauthUrl: string; qrSvg: string } }>().data;
    const url = new URL(e.otpauthUrl);
    assert.equal(url.protocol, 'otpauth:');
    assert.equal(url.host, 'totp');
    assert.equal(url.searchParams.get('secret'), e.secret);
    assert.equal(url.searchParams.get('issuer'), 'CloudDesk');
    assert.match(e.qrSvg, /^<svg[^>]*>.*<\/svg>\s*$/s);
    const wrong = await post(
      '/api/auth/2fa/confirm',
      { code: codeAt(e.secret, clock.now() - 120_000) },
      user.auth,
    );
    assert.equal(codeOf(wrong), 'MFA_CODE_INVALID');
    const status = await gw.app.inject({ url: '/api/auth/2fa', headers: user.auth });
    assert.deepEqual(status.json<{ data: Json }>().data, { enabled: false, recoveryCodesLeft: 0 });
    const ok = await post('/api/auth/2fa/confirm', { code: codeAt(e.secret, clock.now()) }, user.auth);
    const codes = ok.json<{ data: { recoveryCodes: string[] } }>().data.recoveryCodes;
    assert.equal(codes.length, 10);
    assert.equal(new Set(codes).size, 10);
    for (const c of codes) assert.match(c, /^[0-9a-z]{5}-[0-9a-z]{5}$/);
    const again = await post('/api/auth/2fa/setup', {}, user.auth);
    assert.equal(codeOf(again), 'MFA_ALREADY_ENABLED');

    // At rest: the secret sealed, the recovery codes as hashes only.
    const row = await gw.store.db
      .selectFrom('user_totp')
      .selectAll()
      .where('user_id', '=', user.id)
      .executeTakeFirstOrThrow();
    assert.ok(!row.secret_ciphertext.includes(e.secret));
    const hashes = await gw.store.db
      .selectFrom('totp_recovery_codes')
      .selectAll()
      .where('user_id', '=', user.id)
      .execute();
    assert.equal(hashes.length, 10);
    for (const h of hashes) assert.ok(!codes.includes(h.code_hash) && /^[0-9a-f]{64}$/.test(h.code_hash));
  });

  test('sign-in needs the code; a code already used in its window is refused; the next window works', async () => {
    const { user, enrolment } = await enrolled();
    const challenge = await passwordStep(user);
    // The code that confirmed the set-up is spent for its window.
    const reused = await post('/api/auth/2fa/verify', {
      challenge,
      code: codeAt(enrolment.secret, clock.now()),
    });
    assert.equal(codeOf(reused), 'MFA_CODE_INVALID');
    clock.advance(30_000);
    const ok = await post('/api/auth/2fa/verify', { challenge, code: codeAt(enrolment.secret, clock.now()) });
    assert.equal(ok.statusCode, 200, ok.body);
    const tokens = ok.json<{ data: { accessToken: string; user: { id: string } } }>().data;
    assert.equal(tokens.user.id, user.id);
    assert.ok(String(ok.headers['set-cookie']).includes('cd_refresh='));
    const me = await gw.app.inject({
      url: '/api/auth/me',
      headers: { authorization: `Bearer ${tokens.accessToken}` },
    });
    assert.equal(me.statusCode, 200);
    // The challenge was used.
    clock.advance(30_000);
    const twice = await post('/api/auth/2fa/verify', {
      challenge,
      code: codeAt(enrolment.secret, clock.now()),
    });
    assert.equal(codeOf(twice), 'MFA_CHALLENGE_INVALID');
    // A code from the window before the last accepted one is refused too.
    const c2 = await passwordStep(user);
    const old = await post('/api/auth/2fa/verify', {
      challenge: c2,
      code: codeAt(enrolment.secret, clock.now() - 60_000),
    });
    assert.equal(codeOf(old), 'MFA_CODE_INVALID');
  });

  test('a recovery code signs in once', async () => {
    const { user, recoveryCodes } = await enrolled();
    const code = recoveryCodes[3]!;
    const ok = await post('/api/auth/2fa/verify', {
      challenge: await passwordStep(user),
      code: code.toUpperCase(),
    });
    assert.equal(ok.statusCode, 200, ok.body);
    const again = await post('/api/auth/2fa/verify', { challenge: await passwordStep(user), code });
    assert.equal(codeOf(again), 'MFA_CODE_INVALID');
    const token = ok.json<{ data: { accessToken: string } }>().data.accessToken;
    const status = await gw.app.inject({
      url: '/api/auth/2fa',
      headers: { authorization: `Bearer ${token}` },
    });
    assert.deepEqual(status.json<{ data: Json }>().data, { enabled: true, recoveryCodesLeft: 9 });
  });

  test('the second step expires', async () => {
    const { user, enrolment } = await enrolled();
    const challenge = await passwordStep(user);
    clock.advance(5 * 60_000 + 1);
    const late = await post('/api/auth/2fa/verify', {
      challenge,
      code: codeAt(enrolment.secret, clock.now()),
    });
    assert.equal(codeOf(late), 'MFA_CHALLENGE_INVALID');
  });

  test('wrong codes count against the sign-in rate limit, and are in the audit trail', async () => {
    const { user, enrolment } = await enrolled();
    clock.advance(30_000);
    const challenge = await passwordStep(user);
    for (let i = 0; i < 4; i++) {
      const wrong = await post('/api/auth/2fa/verify', { challenge, code: '000000' });
      assert.equal(codeOf(wrong), 'MFA_CODE_INVALID');
    }
    const right = await post('/api/auth/2fa/verify', {
      challenge,
      code: codeAt(enrolment.secret, clock.now()),
    });
    assert.equal(right.statusCode, 429);
    assert.equal(codeOf(right), 'RATE_LIMITED');
    await gw.audit.flush();
    const failed = await gw.store.db
      .selectFrom('audit_events')
      .selectAll()
      .where('type', '=', 'auth.sign-in-failed')
      .where('subject_user_id', '=', user.id)
      .execute();
    assert.equal(failed.filter((f) => f.details.includes('MFA_CODE_INVALID')).length, 4);
  });

  test('an admin resets a user’s 2FA; the user turns it off with a code', async () => {
    const { user } = await enrolled();
    const notAdmin = await post(`/api/admin/users/${user.id}/2fa/reset`, {}, user.auth);
    assert.equal(notAdmin.statusCode, 403);
    const reset = await post(`/api/admin/users/${user.id}/2fa/reset`, {}, admin.auth);
    assert.equal(reset.statusCode, 204);
    const login = await post('/api/auth/login', { email: user.email, password: user.password });
    assert.equal(login.statusCode, 200, 'password alone again');

    const other = await enrolled();
    clock.advance(30_000);
    const off = await post('/api/auth/2fa/disable', { code: '123456' }, other.user.auth);
    assert.equal(codeOf(off), 'MFA_CODE_INVALID');
    const offOk = await post(
      '/api/auth/2fa/disable',
      { code: codeAt(other.enrolment.secret, clock.now()) },
      other.user.auth,
    );
    assert.equal(offOk.statusCode, 204);
    await gw.audit.flush();
    const types = (
      await gw.store.db
        .selectFrom('audit_events')
        .select('type')
        .where('target_id', 'in', [user.id, other.user.id])
        .execute()
    ).map((r) => r.type);
    for (const t of ['mfa.enabled', 'mfa.reset', 'mfa.disabled']) assert.ok(types.includes(t), t);
  });
});

describe('AUTH_REQUIRE_2FA=true', () => {
  test('an account without TOTP gets no token: it enrols with the challenge, and the code signs it in', async () => {
    const clock = new ManualClock(Date.UTC(2026, 11, 2, 6, 0, 0));
    const gw = await buildTestGateway({ AUTH_REQUIRE_2FA: 'true' }, { clock });
    try {
      const creds = { email: 'new@example.com', password: 'correct horse battery staple' };
      const reg = await gw.app.inject({ method: 'POST', url: '/api/auth/register', payload: creds });
      assert.equal(reg.statusCode, 403, reg.body);
      const refused = reg.json<{ error: { code: string; details: { challenge: string } } }>().error;
      assert.equal(refused.code, 'MFA_ENROLMENT_REQUIRED');
      const login = await gw.app.inject({ method: 'POST', url: '/api/auth/login', payload: creds });
      const { challenge } = login.json<{ error: { details: { challenge: string } } }>().error.details;
      const enrol = await gw.app.inject({
        method: 'POST',
        url: '/api/auth/2fa/enrol',
        payload: { challenge },
      });
      assert.equal(enrol.statusCode, 200, enrol.body);
      const { secret } = enrol.json<{ data: { secret: string } }>().data;
      const verify = await gw.app.inject({
        method: 'POST',
        url: '/api/auth/2fa/verify',
        payload: { challenge, code: codeAt(secret, clock.now()) },
      });
      assert.equal(verify.statusCode, 200, verify.body);
      const body = verify.json<{ data: { accessToken: string; recoveryCodes: string[] } }>().data;
      assert.ok(body.accessToken);
      assert.equal(body.recoveryCodes.length, 10);
      // From now on the password step asks for the code.
      const next = await gw.app.inject({ method: 'POST', url: '/api/auth/login', payload: creds });
      assert.equal(next.json<{ error: { code: string } }>().error.code, 'MFA_REQUIRED');
    } finally {
      await gw.cleanup();
    }
  });
});
