// The gateway plugin that serves the built web client: cache headers, CSP on the page, the SPA
// fallback, and the API-only mode when the client was not built. Driven with inject() against a
// small fake build, so it runs without `npm --prefix web run build`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { registerErrorHandling } from '../../src/http/error-handler.js';
import { contentSecurityPolicy, registerWebClient } from '../../src/http/web-client.js';

interface Line {
  level: 'info' | 'warn';
  msg: string;
}

function recordingLogger(lines: Line[]) {
  return {
    info: (_o: object, msg: string) => lines.push({ level: 'info', msg }),
    warn: (_o: object, msg: string) => lines.push({ level: 'warn', msg }),
  };
}

async function buildApp(publicDir: string, lines: Line[]): Promise<FastifyInstance> {
  const app = Fastify();
  registerErrorHandling(app);
  app.get('/api/instances', () => ({ data: [] }));
  await registerWebClient(app, { publicDir, logger: recordingLogger(lines) });
  await app.ready();
  return app;
}

let dist: string;
let app: FastifyInstance;
const lines: Line[] = [];

before(async () => {
  dist = await mkdtemp(join(tmpdir(), 'clouddesk-web-dist-'));
  await mkdir(join(dist, 'assets'));
  await writeFile(
    join(dist, 'index.html'),
    '<!doctype html><title>CloudDesk</title><script type="module" src="/assets/index-abc123.js"></script>',
  );
  await writeFile(join(dist, 'assets', 'index-abc123.js'), 'console.log(1)');
  await writeFile(join(dist, 'favicon.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
  app = await buildApp(dist, lines);
});

after(async () => {
  await app.close();
  await rm(dist, { recursive: true, force: true });
});

void test('the page is served at / with no-cache and a strict CSP that allows same-origin WebSockets', async () => {
  const res = await app.inject({ method: 'GET', url: '/', headers: { host: 'desk.example:8443' } });
  assert.equal(res.statusCode, 200);
  assert.match(res.headers['content-type'] as string, /text\/html/);
  assert.equal(res.headers['cache-control'], 'no-cache');
  const csp = res.headers['content-security-policy'] as string;
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.match(csp, /connect-src 'self' ws:\/\/desk\.example:8443 wss:\/\/desk\.example:8443/);
  assert.match(csp, /frame-ancestors 'none'/);
});

void test('hashed assets are cached for a year as immutable', async () => {
  const res = await app.inject({ method: 'GET', url: '/assets/index-abc123.js' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.match(res.headers['content-type'] as string, /javascript/);
});

void test('other top-level files are revalidated', async () => {
  const res = await app.inject({ method: 'GET', url: '/favicon.svg' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['cache-control'], 'no-cache');
});

void test('client routes fall back to the page so a reload of /desktop/<id> works', async () => {
  for (const url of ['/instances', '/desktop/abc-123', '/sessions?x=1', '/index.html']) {
    const res = await app.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 200, url);
    assert.match(res.body, /<title>CloudDesk<\/title>/, url);
    assert.ok(res.headers['content-security-policy'], url);
  }
});

void test('unknown API routes, /vnc and missing files stay JSON 404s, never the page', async () => {
  for (const url of [
    '/api/nope',
    '/api',
    '/vnc',
    '/vnc?ticket=x',
    '/assets/missing-1234.js',
    '/robots.txt',
  ]) {
    const res = await app.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 404, url);
    assert.equal(res.json<{ error: { code: string } }>().error.code, 'ROUTE_NOT_FOUND', url);
  }
  const api = await app.inject({ method: 'GET', url: '/api/instances' });
  assert.deepEqual(api.json(), { data: [] });
});

void test('files added after start (a rebuild while running) are served; paths cannot leave the folder', async () => {
  await writeFile(join(dist, 'assets', 'index-new999.js'), 'console.log(2)');
  const fresh = await app.inject({ method: 'GET', url: '/assets/index-new999.js' });
  assert.equal(fresh.statusCode, 200);
  assert.equal(fresh.headers['cache-control'], 'public, max-age=31536000, immutable');
  await writeFile(join(dist, '.env'), 'SECRET=1');
  for (const url of ['/.env', '/assets/..%2f.env', '/%2e%2e/%2e%2e/etc/hosts.txt', '/assets/..\\.env']) {
    const res = await app.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 404, url);
    assert.doesNotMatch(res.body, /SECRET|localhost/, url);
  }
  // Without a file extension it is a client route: the page, never a file from elsewhere.
  const page = await app.inject({ method: 'GET', url: '/%2e%2e/%2e%2e/etc/passwd' });
  assert.match(page.body, /<title>CloudDesk<\/title>/);
});

void test('a Host header that is not a plain host name is not echoed into the policy', () => {
  assert.equal(contentSecurityPolicy('evil.example; script-src *').includes('evil'), false);
  assert.match(contentSecurityPolicy('[::1]:3000'), /ws:\/\/\[::1\]:3000/);
});

void test('without a build the gateway logs one clear line and serves the API only', async () => {
  const empty = await mkdtemp(join(tmpdir(), 'clouddesk-web-missing-'));
  const missingLines: Line[] = [];
  const apiOnly = await buildApp(empty, missingLines);
  try {
    const warnings = missingLines.filter((l) => l.level === 'warn');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!.msg, /web client not built; serving the API only/);
    const root = await apiOnly.inject({ method: 'GET', url: '/' });
    assert.equal(root.statusCode, 404);
    const api = await apiOnly.inject({ method: 'GET', url: '/api/instances' });
    assert.equal(api.statusCode, 200);
  } finally {
    await apiOnly.close();
    await rm(empty, { recursive: true, force: true });
  }
});
