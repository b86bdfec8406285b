// Bad input on every route: a 4xx with a stable code, and nothing already stored is lost.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { buildTestGateway, newUser, type TestGateway } from './helpers/builders.js';

describe('bad input', () => {
  let gw: TestGateway;
  let alice: Awaited<ReturnType<typeof newUser>>;
  let bob: Awaited<ReturnType<typeof newUser>>;
  let aliceInstanceId: string;
  const validInstance = {
    name: 'box',
    host: '127.0.0.1',
    port: 2222,
    username: 'ubuntu',
    auth: { type: 'password', password: 'pw' },
  };

  before(async () => {
    gw = await buildTestGateway();
    alice = await newUser(gw);
    bob = await newUser(gw);
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/instances',
      headers: alice.auth,
      payload: validInstance,
    });
    assert.equal(res.statusCode, 201);
    aliceInstanceId = res.json().data.id;
  });
  after(() => gw.cleanup());

  const expectError = async (
    req: {
      method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
      url: string;
      payload?: unknown;
      body?: string;
      headers?: Record<string, string>;
    },
    status: number,
    code: string,
  ) => {
    const res = await gw.app.inject(req as never);
    assert.equal(res.statusCode, status, `${req.method} ${req.url} ${res.body}`);
    const body = res.json();
    assert.equal(body.error.code, code, `${req.method} ${req.url}`);
    assert.equal(typeof body.error.message, 'string');
  };

  test('malformed JSON, wrong media type and over-large bodies', async () => {
    await expectError(
      {
        method: 'POST',
        url: '/api/auth/login',
        body: '{"email":',
        headers: { 'content-type': 'application/json' },
      },
      400,
      'MALFORMED_JSON',
    );
    await expectError(
      {
        method: 'POST',
        url: '/api/auth/login',
        body: 'email=a',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      },
      415,
      'UNSUPPORTED_MEDIA_TYPE',
    );
    await expectError(
      {
        method: 'POST',
        url: '/api/auth/register',
        payload: { email: 'a@example.com', password: 'x'.repeat(200_000) },
      },
      413,
      'PAYLOAD_TOO_LARGE',
    );
  });

  test('auth routes: missing fields, wrong types, unknown fields, over-long or malformed values', async () => {
    for (const payload of [
      {},
      { email: 'a@example.com' },
      { email: 42, password: 'long enough' },
      { email: 'not-an-email', password: 'long enough' },
      { email: 'a@example.com', password: 'long enough', admin: true },
      { email: `${'a'.repeat(300)}@example.com`, password: 'long enough' },
      { email: 'a@example.com', password: 'short' },
    ]) {
      await expectError({ method: 'POST', url: '/api/auth/register', payload }, 400, 'VALIDATION_FAILED');
    }
    await expectError(
      { method: 'POST', url: '/api/auth/login', payload: { email: 'a@example.com' } },
      400,
      'VALIDATION_FAILED',
    );
    await expectError(
      { method: 'POST', url: '/api/auth/refresh', payload: { refreshToken: 7 } },
      400,
      'VALIDATION_FAILED',
    );
    await expectError(
      { method: 'POST', url: '/api/auth/refresh', payload: { refreshToken: 'garbage' } },
      401,
      'INVALID_TOKEN',
    );
    await expectError({ method: 'POST', url: '/api/auth/refresh', payload: {} }, 401, 'UNAUTHENTICATED');
    await expectError(
      { method: 'POST', url: '/api/auth/logout', payload: { refreshToken: 'x', extra: 1 } },
      400,
      'VALIDATION_FAILED',
    );
  });

  test('instance routes', async () => {
    const h = alice.auth;
    for (const payload of [
      { ...validInstance, port: 0 },
      { ...validInstance, port: '22' },
      { ...validInstance, host: 'bad host; rm -rf /' },
      { ...validInstance, username: '-oProxyCommand=evil' },
      { ...validInstance, auth: { type: 'password' } },
      { ...validInstance, auth: { type: 'telepathy' } },
      { ...validInstance, auth: { type: 'password', password: 'pw', extra: 1 } },
      { ...validInstance, hostKeyFingerprint: 'MD5:aa:bb' },
      { ...validInstance, name: 'n'.repeat(101) },
      { ...validInstance, owner: 'someone' },
    ]) {
      await expectError(
        { method: 'POST', url: '/api/instances', headers: h, payload },
        400,
        'VALIDATION_FAILED',
      );
    }
    await expectError(
      {
        method: 'POST',
        url: '/api/instances',
        headers: h,
        payload: { ...validInstance, auth: { type: 'privateKey', privateKey: 'not a key' } },
      },
      422,
      'INVALID_PRIVATE_KEY',
    );
    for (const method of ['GET', 'PATCH', 'DELETE'] as const) {
      await expectError(
        {
          method,
          url: '/api/instances/not-a-uuid',
          headers: h,
          ...(method === 'PATCH' ? { payload: {} } : {}),
        },
        400,
        'VALIDATION_FAILED',
      );
    }
    await expectError(
      { method: 'POST', url: '/api/instances/123/test', headers: h },
      400,
      'VALIDATION_FAILED',
    );
    await expectError(
      { method: 'PATCH', url: `/api/instances/${aliceInstanceId}`, headers: h, payload: { port: -1 } },
      400,
      'VALIDATION_FAILED',
    );
    await expectError(
      { method: 'GET', url: '/api/instances', headers: { authorization: 'Basic xyz' } },
      401,
      'INVALID_TOKEN',
    );
  });

  test("someone else's instance or session is 404, whatever the method", async () => {
    const b = bob.auth;
    await expectError(
      { method: 'GET', url: `/api/instances/${aliceInstanceId}`, headers: b },
      404,
      'INSTANCE_NOT_FOUND',
    );
    await expectError(
      { method: 'PATCH', url: `/api/instances/${aliceInstanceId}`, headers: b, payload: { name: 'mine' } },
      404,
      'INSTANCE_NOT_FOUND',
    );
    await expectError(
      { method: 'DELETE', url: `/api/instances/${aliceInstanceId}`, headers: b },
      404,
      'INSTANCE_NOT_FOUND',
    );
    await expectError(
      { method: 'POST', url: `/api/instances/${aliceInstanceId}/test`, headers: b },
      404,
      'INSTANCE_NOT_FOUND',
    );
    await expectError(
      {
        method: 'POST',
        url: '/api/sessions/connect',
        headers: b,
        payload: { instanceId: aliceInstanceId, desktopEnvironment: 'openbox' },
      },
      404,
      'INSTANCE_NOT_FOUND',
    );
    const list = await gw.app.inject({ method: 'GET', url: '/api/instances', headers: b });
    assert.deepEqual(list.json(), { data: [] });
  });

  test('session routes', async () => {
    const h = alice.auth;
    for (const payload of [
      {},
      { instanceId: 'x', desktopEnvironment: 'openbox' },
      { instanceId: aliceInstanceId, desktopEnvironment: 'd'.repeat(33) },
      { instanceId: aliceInstanceId, desktopEnvironment: 'openbox', display: 3 },
    ]) {
      await expectError(
        { method: 'POST', url: '/api/sessions/connect', headers: h, payload },
        400,
        'VALIDATION_FAILED',
      );
    }
    await expectError(
      {
        method: 'POST',
        url: '/api/sessions/connect',
        headers: h,
        payload: { instanceId: aliceInstanceId, desktopEnvironment: 'kde; reboot' },
      },
      400,
      'DESKTOP_ENVIRONMENT_UNKNOWN',
    );
    const missing = '00000000-0000-4000-8000-000000000000';
    await expectError(
      { method: 'GET', url: `/api/sessions/${missing}`, headers: h },
      404,
      'SESSION_NOT_FOUND',
    );
    await expectError(
      { method: 'POST', url: `/api/sessions/${missing}/ticket`, headers: h },
      404,
      'SESSION_NOT_FOUND',
    );
    await expectError(
      { method: 'POST', url: `/api/sessions/disconnect/${missing}`, headers: h },
      404,
      'SESSION_NOT_FOUND',
    );
    await expectError({ method: 'GET', url: '/api/sessions/nope', headers: h }, 400, 'VALIDATION_FAILED');
    await expectError({ method: 'GET', url: '/api/nothing-here', headers: h }, 404, 'ROUTE_NOT_FOUND');
  });

  test('after all of that, what was stored is intact', async () => {
    const res = await gw.app.inject({
      method: 'GET',
      url: `/api/instances/${aliceInstanceId}`,
      headers: alice.auth,
    });
    assert.equal(res.statusCode, 200);
    const inst = res.json().data;
    assert.equal(inst.name, 'box');
    assert.equal(inst.port, 2222);
    assert.deepEqual(inst.auth, { type: 'password' });
  });
});
