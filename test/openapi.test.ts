// The API described (issue 12): /api/openapi.json is a valid OpenAPI 3.1 document; every route Fastify
// registers under /api is in it with a summary, a tag, its success answer and its error codes (a route
// added without them fails here); the error envelope and the codes are described once; /api/docs
// serves the reference page; API_DOCS=off turns both off; and real answers of the routes match the
// document (every answer this file provokes is checked, against real sshd + TigerVNC for the desktop
// routes).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Fastify, { type InjectOptions } from 'fastify';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Type } from '@sinclair/typebox';
import { AppError, errorCatalogue } from '../src/errors/errors.js';
import { DataOf } from '../src/http/schemas.js';
import { describeApiRoutes, registerApiDocs } from '../src/http/api-docs.js';
import { makeAuthenticate } from '../src/http/authenticate.js';
import { registerErrorHandling } from '../src/http/error-handler.js';
import { buildTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { freePort } from './helpers/free-port.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { startOidcProvider } from './helpers/oidc-provider.js';
import {
  AnswerChecker,
  codesOf,
  operationOf,
  problemsOf,
  recordAnswers,
  registeredRoutes,
  type OpenApiDocument,
} from './helpers/openapi.js';

const isDocsRoute = (url: string) => url === '/api/openapi.json' || url.startsWith('/api/docs');

describe('the OpenAPI document', () => {
  let gw: TestGateway;
  let doc: OpenApiDocument;
  let raw: string;

  before(async () => {
    gw = await buildTestGateway();
    const res = await gw.app.inject({ url: '/api/openapi.json' });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    raw = res.body;
    doc = res.json();
  });
  after(() => gw.cleanup());

  test('is valid OpenAPI 3.1, every $ref resolving', async () => {
    assert.equal(doc.openapi, '3.1.0');
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    assert.equal(validator.version, '3.1');
    assert.deepEqual(result, { valid: true }, JSON.stringify(result.errors, null, 2));
    assert.ok(validator.resolveRefs(), 'the $refs resolve');
  });

  test('is generated once and then served from memory', async () => {
    const again = await gw.app.inject({ url: '/api/openapi.json' });
    assert.equal(again.body, raw);
    assert.equal(again.headers['cache-control'], 'no-cache');
  });

  test('every route Fastify registers under /api is in it, fully described', () => {
    const routes = registeredRoutes(gw.app).filter((r) => r.url.startsWith('/api/') && !isDocsRoute(r.url));
    assert.ok(routes.length >= 29, `found only ${routes.length} routes`);
    assert.ok(routes.some((r) => r.method === 'PATCH' && r.url === '/api/instances/:id'));
    assert.deepEqual(
      routes.flatMap((r) => problemsOf(doc, r)),
      [],
    );
    // And nothing else: the document has no operation Fastify does not serve.
    for (const [path, ops] of Object.entries(doc.paths as Record<string, object>))
      for (const [method, op] of Object.entries(ops))
        assert.ok(
          routes.some((r) => operationOf(doc, r.method, r.url) === op),
          `${method} ${path} is not served`,
        );
  });

  test('a route added without a description, or answering other than described, is caught', async () => {
    const app = Fastify();
    describeApiRoutes(app);
    await registerApiDocs(app);
    registerErrorHandling(app);
    const answers = recordAnswers(app);
    const authenticate = makeAuthenticate({
      verifyAccess: () => Promise.reject(new AppError('TOKEN_EXPIRED')),
      activeUser: () => Promise.reject(new Error('unused')),
    });
    app.get('/api/things', { preHandler: authenticate }, () => ({ data: [] }));
    app.get('/api/things/:id', { schema: { summary: 'One thing', errors: ['NOT_FOUND'] } }, () => ({}));
    app.get(
      '/api/widget',
      {
        schema: {
          summary: 'The widget',
          response: { 200: DataOf(Type.Object({ name: Type.String() }), 'The widget') },
        },
      },
      (request) => {
        if (request.headers['x-fail']) throw new AppError('SESSION_ENDED');
        // Sent as is: the schema describes, it does not filter.
        return { data: { name: 'w', secret: 's' } };
      },
    );
    await app.ready();
    const bare = app.swagger() as OpenApiDocument;
    const problems = registeredRoutes(app)
      .filter((r) => r.url.startsWith('/api/') && !isDocsRoute(r.url))
      .flatMap((r) => problemsOf(bare, r));
    assert.deepEqual(problems.sort(), [
      'GET /api/things/:id: no success answer',
      'GET /api/things: no success answer',
      'GET /api/things: no summary',
    ]);
    // What follows from how it is registered is there without a word from the route.
    const things = operationOf(bare, 'GET', '/api/things');
    assert.deepEqual(things.tags, ['things']);
    assert.deepEqual(things.security, [{ bearerAuth: [] }]);
    assert.deepEqual(codesOf(things.responses['401'])!.sort(), [
      'INVALID_TOKEN',
      'TOKEN_EXPIRED',
      'UNAUTHENTICATED',
    ]);
    assert.deepEqual(codesOf(operationOf(bare, 'GET', '/api/things/:id').responses['404']), ['NOT_FOUND']);

    const widget = await app.inject({ url: '/api/widget' });
    assert.deepEqual(widget.json(), { data: { name: 'w', secret: 's' } });
    await app.inject({ url: '/api/widget', headers: { 'x-fail': '1' } });
    await app.inject({ url: '/api/things', headers: { authorization: 'Bearer a.b.c' } });
    const checker = new AnswerChecker(bare);
    const found = answers.map((a) => checker.check(a));
    assert.match(found[0]!, /^GET \/api\/widget → 200: .*must NOT have additional properties/);
    assert.match(found[1]!, /^GET \/api\/widget → 410: status not documented/);
    assert.equal(found[2], null, 'TOKEN_EXPIRED is documented for the signed-in route');
    await app.close();
  });

  test('the error envelope and the codes are described once and referenced', () => {
    const { ErrorEnvelope, ErrorCode } = doc.components.schemas;
    assert.deepEqual(ErrorEnvelope.required, ['error']);
    assert.equal(ErrorEnvelope.properties.error.properties.code.$ref, '#/components/schemas/ErrorCode');
    assert.deepEqual([...ErrorCode.enum].sort(), Object.keys(errorCatalogue).sort());
    for (const [code, { status }] of Object.entries(errorCatalogue))
      assert.ok(doc.info.description.includes(`| \`${code}\` | ${status} |`), code);
    // Each route's error answers point at the envelope instead of repeating it.
    const connect = operationOf(doc, 'POST', '/api/sessions/connect');
    assert.deepEqual(codesOf(connect.responses['404']), ['INSTANCE_NOT_FOUND']);
    assert.ok(codesOf(connect.responses['503'])!.includes('OVERLOADED'));
    assert.ok(connect.responses['503'].headers['Retry-After']);
    assert.ok(codesOf(connect.responses['502'])!.includes('SSH_UNREACHABLE'));
    assert.ok(!raw.includes('x-response-description'));
  });

  test('security schemes: the bearer access token and the refresh cookie', () => {
    assert.deepEqual(doc.components.securitySchemes.bearerAuth, {
      type: 'http',
      scheme: 'bearer',
      bearerFormat: 'JWT',
      description: doc.components.securitySchemes.bearerAuth.description,
    });
    const cookie = doc.components.securitySchemes.refreshCookie;
    assert.deepEqual([cookie.type, cookie.in, cookie.name], ['apiKey', 'cookie', 'cd_refresh']);
    assert.deepEqual(operationOf(doc, 'GET', '/api/instances').security, [{ bearerAuth: [] }]);
    assert.deepEqual(operationOf(doc, 'POST', '/api/auth/login').security, []);
    const refresh = operationOf(doc, 'POST', '/api/auth/refresh');
    assert.deepEqual(refresh.security, [{ refreshCookie: [] }, {}]);
    assert.equal(refresh.requestBody.required, false, 'no body at all is the cookie-only call');
    assert.ok(codesOf(operationOf(doc, 'GET', '/api/admin/users').responses['403'])!.includes('FORBIDDEN'));
  });

  test('/api/docs is the reference page, from the gateway alone', async () => {
    const page = await gw.app.inject({ url: '/api/docs' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(page.body, /swagger-ui-bundle\.js/);
    const csp = String(page.headers['content-security-policy']);
    assert.match(csp, /script-src 'self';/);
    assert.doesNotMatch(csp, /https:|unsafe/);
    const bundle = await gw.app.inject({ url: '/api/docs/static/swagger-ui-bundle.js' });
    assert.equal(bundle.statusCode, 200);
  });

  test('with company sign-in configured, its routes are described too', async () => {
    const idp = await startOidcProvider({
      redirectUris: ['http://127.0.0.1:1/api/auth/oidc/callback'],
      accounts: {},
    });
    const withOidc = await buildTestGateway({
      OIDC_ISSUER: idp.issuer,
      OIDC_CLIENT_ID: idp.clientId,
      OIDC_CLIENT_SECRET: idp.clientSecret,
    });
    try {
      const oidcDoc = (await withOidc.app.inject({ url: '/api/openapi.json' })).json();
      assert.deepEqual(await new Validator().validate(oidcDoc), { valid: true });
      const routes = registeredRoutes(withOidc.app).filter((r) => r.url.startsWith('/api/auth/oidc/'));
      assert.equal(routes.length, 2);
      assert.deepEqual(
        routes.flatMap((r) => problemsOf(oidcDoc, r)),
        [],
      );
    } finally {
      await withOidc.cleanup();
      await idp.stop();
    }
  });

  test('API_DOCS=off serves neither the document nor the page', async () => {
    const off = await buildTestGateway({ API_DOCS: 'off' });
    try {
      for (const url of ['/api/openapi.json', '/api/docs', '/api/docs/static/index.html']) {
        const res = await off.app.inject({ url });
        assert.equal(res.statusCode, 404, url);
        assert.equal(res.json().error.code, 'ROUTE_NOT_FOUND');
      }
      const health = await off.app.inject({ url: '/api/health' });
      assert.equal(health.statusCode, 200);
    } finally {
      await off.cleanup();
    }
  });
});

describe('real answers match the document', () => {
  let gw: TestGateway;
  let sshd: SshdFixture;
  let checker: AnswerChecker;
  let answers: ReturnType<typeof recordAnswers>;
  let admin: Awaited<ReturnType<typeof newUser>>;
  let user: Awaited<ReturnType<typeof newUser>>;

  before(async () => {
    sshd = await startSshd({ users: 1 });
    gw = await buildTestGateway();
    answers = recordAnswers(gw.app);
    checker = new AnswerChecker((await gw.app.inject({ url: '/api/openapi.json' })).json());
    answers.length = 0;
    admin = await newUser(gw); // the first account of an empty single node is an admin
    user = await newUser(gw);
  });
  after(async () => {
    await gw?.cleanup();
    await sshd?.stop();
  });

  const call = async (
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    as: { auth: { authorization: string } } | null,
    payload?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const options: InjectOptions = { method, url, headers: { ...(as ? as.auth : {}), ...headers } };
    if (typeof payload === 'string') options.body = payload;
    else if (payload !== undefined) options.payload = payload as object;
    const res = await gw.app.inject(options);
    return { status: res.statusCode, body: res.body ? res.json() : null, cookies: res.cookies };
  };
  const checkAll = () => {
    assert.ok(answers.length > 0);
    assert.deepEqual(
      answers.map((a) => checker.check(a)).filter((p) => p !== null),
      [],
    );
  };

  test('auth, instances, usage, audit, admin and health, success and error answers', async () => {
    assert.equal((await call('GET', '/api/auth/registration', null)).status, 200);
    const login = await call('POST', '/api/auth/login', null, { email: user.email, password: user.password });
    assert.equal(login.status, 200);
    assert.equal(
      (await call('POST', '/api/auth/login', null, { email: user.email, password: 'wrong one' })).status,
      401,
    );
    assert.equal(
      (await call('POST', '/api/auth/register', null, { email: user.email, password: 'long enough' })).status,
      409,
    );
    const cookie = login.cookies.find((c) => c.name === 'cd_refresh')!;
    assert.equal(
      (await call('POST', '/api/auth/refresh', null, undefined, { cookie: `cd_refresh=${cookie.value}` }))
        .status,
      200,
    );
    assert.equal((await call('POST', '/api/auth/refresh', null, { refreshToken: 'x.y.z' })).status, 401);
    assert.equal((await call('GET', '/api/auth/me', user)).status, 200);
    assert.equal((await call('GET', '/api/auth/me', null)).status, 401);
    assert.equal(
      (await call('GET', '/api/auth/me', null, undefined, { authorization: 'Bearer a.b.c' })).status,
      401,
    );

    const closedPort = await freePort();
    const box = {
      name: 'box',
      host: '127.0.0.1',
      port: closedPort,
      username: 'ubuntu',
      auth: { type: 'password', password: 'pw' },
    };
    const created = await call('POST', '/api/instances', user, box);
    assert.equal(created.status, 201);
    const id = created.body.data.id as string;
    assert.equal(
      (await call('POST', '/api/instances', user, { ...box, host: '169.254.169.254' })).status,
      422,
    );
    assert.equal((await call('POST', '/api/instances', user, { ...box, extra: 1 })).status, 400);
    assert.equal(
      (await call('POST', '/api/instances', user, '{"name":', { 'content-type': 'application/json' })).status,
      400,
    );
    assert.equal(
      (
        await call('POST', '/api/instances', user, 'name=x', {
          'content-type': 'application/x-www-form-urlencoded',
        })
      ).status,
      415,
    );
    assert.equal((await call('GET', '/api/instances', user)).status, 200);
    assert.equal((await call('GET', `/api/instances/${id}`, user)).status, 200);
    assert.equal((await call('GET', `/api/instances/${id}`, admin)).status, 404);
    assert.equal((await call('GET', '/api/instances/not-an-id', user)).status, 400);
    assert.equal(
      (await call('PATCH', `/api/instances/${id}`, user, { name: 'renamed', hostKeyFingerprint: null }))
        .status,
      200,
    );
    assert.equal((await call('POST', `/api/instances/${id}/test`, user)).status, 502);
    const refused = await call('POST', '/api/sessions/connect', user, {
      instanceId: id,
      desktopEnvironment: 'openbox',
    });
    assert.equal(refused.body.error.code, 'SSH_UNREACHABLE');
    assert.equal(
      (await call('POST', '/api/sessions/connect', user, { instanceId: id, desktopEnvironment: 'cde' }))
        .status,
      400,
    );

    assert.equal((await call('GET', '/api/usage', user)).status, 200);
    assert.equal((await call('GET', '/api/usage?from=2026-01-01&to=2025-01-01', user)).status, 400);
    assert.equal((await call('GET', '/api/sessions/history?cursor=bm90LWEtY3Vyc29y', user)).status, 400);
    assert.equal((await call('GET', '/api/audit/me', user)).status, 200);
    assert.equal((await call('GET', '/api/audit/me?from=yesterday', user)).status, 400);

    assert.equal((await call('GET', '/api/admin/users', user)).status, 403);
    assert.equal((await call('GET', '/api/admin/users?limit=2', admin)).status, 200);
    assert.equal((await call('PATCH', `/api/admin/users/${admin.id}`, admin, { role: 'user' })).status, 409);
    assert.equal(
      (await call('PATCH', `/api/admin/users/${user.id}`, admin, { disabled: false })).status,
      200,
    );
    assert.equal((await call('POST', '/api/admin/invites', admin, { email: 'new@example.com' })).status, 201);
    assert.equal((await call('POST', '/api/admin/invites', admin)).status, 201);
    assert.equal((await call('GET', '/api/admin/audit?limit=5', admin)).status, 200);
    assert.equal((await call('POST', `/api/admin/sessions/${id}/end`, admin)).status, 404);

    assert.equal((await call('GET', '/api/health', null)).status, 200);
    assert.equal((await call('GET', '/api/ready', null)).status, 200);
    assert.equal((await call('DELETE', `/api/instances/${id}`, user)).status, 204);
    assert.equal(
      (await call('POST', '/api/auth/logout', null, { refreshToken: login.body.data.refreshToken })).status,
      204,
    );
    checkAll();
  });

  test('a desktop: test, connect, reuse, ticket, session, live lists, disconnect, history', async () => {
    answers.length = 0;
    const instance = await newInstance(gw, user, { host: sshd.host, port: sshd.port, user: sshd.users[0]! });
    assert.equal((await call('POST', `/api/instances/${instance.id}/test`, user)).status, 200);
    const payload = { instanceId: instance.id, desktopEnvironment: 'openbox' };
    const started = await call('POST', '/api/sessions/connect', user, payload);
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const sessionId = started.body.data.sessionId as string;
    assert.equal((await call('POST', '/api/sessions/connect', user, payload)).status, 200);
    assert.equal((await call('POST', `/api/sessions/${sessionId}/ticket`, user)).status, 200);
    assert.equal((await call('GET', `/api/sessions/${sessionId}`, user)).status, 200);
    assert.equal((await call('GET', `/api/sessions/${sessionId}`, admin)).status, 404);
    const active = await call('GET', '/api/sessions/active', user);
    assert.equal(active.body.data.length, 1);
    const live = await call('GET', `/api/admin/sessions?userId=${user.id}`, admin);
    assert.equal(live.body.data.items.length, 1);
    assert.equal((await call('POST', `/api/sessions/disconnect/${sessionId}`, user)).status, 200);
    assert.equal((await call('POST', `/api/sessions/disconnect/${sessionId}`, user)).status, 410);
    assert.equal((await call('POST', `/api/sessions/${sessionId}/ticket`, user)).status, 410);
    await gw.sessions.stopper.settled();
    await gw.activity.flush();
    const history = await call('GET', '/api/sessions/history?limit=1', user);
    assert.equal(history.body.data.items[0].id, sessionId);
    assert.equal((await call('POST', '/api/auth/logout-all', user)).status, 204);
    checkAll();
  });
});
