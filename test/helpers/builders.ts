// Builders for test data and test gateways: a config from an env map, a gateway built in-process,
// users and instances made through the public API, SSH pool options.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { loadConfig, type Config } from '../../src/config/config.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import { buildApp, type AppDeps, type Gateway } from '../../src/app.js';
import type { SshPoolOptions } from '../../src/ssh/ssh-pool.js';

import { TEST_SECRETS } from './test-secrets.js';

export { TEST_SECRETS };

export function testConfig(env: Record<string, string> = {}): {
  config: Config;
  dataDir: string;
  cleanup(): void;
} {
  const dataDir = mkdtempSync(join(tmpdir(), 'clouddesk-test-'));
  const config = loadConfig({
    DATA_DIR: dataDir,
    INSTANCE_ALLOWED_CIDRS: '127.0.0.0/8',
    LOG_LEVEL: 'silent',
    // Raw test frames would crawl under the shipped budget; a test about the budget sets it.
    SESSION_MAX_KBPS: '0',
    // No balancer in front of an in-test gateway: shutdown() goes straight to closing (a test about
    // the drain's ready grace sets it).
    SHUTDOWN_READY_GRACE_MS: '0',
    ...TEST_SECRETS,
    ...env,
  });
  return { config, dataDir, cleanup: () => rmSync(dataDir, { recursive: true, force: true }) };
}

/** A logger that keeps every line, so tests can assert what was (not) logged. */
/** An SSH pool's options with the production shape and generous timeouts, for tests and micro-benchmarks. */
export function testPoolOptions(logger: Logger, overrides: Partial<SshPoolOptions> = {}): SshPoolOptions {
  return {
    maxChannelsPerConnection: 64,
    keepaliveIntervalMs: 10_000,
    keepaliveCountMax: 3,
    maxHandshakesPerTarget: 4,
    idleCloseMs: 60_000,
    readyTimeoutMs: 20_000,
    execTimeoutMs: 20_000,
    logger,
    ...overrides,
  };
}

export function captureLogger(level = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { logger: createLogger({ level }, sink), lines };
}

export interface TestGateway extends Gateway {
  cleanup(): Promise<void>;
  logLines: string[];
}

export async function buildTestGateway(
  env: Record<string, string> = {},
  deps: Partial<AppDeps> = {},
): Promise<TestGateway> {
  const { config, cleanup } = testConfig(env);
  const { logger, lines } = captureLogger();
  const gw = await buildApp(config, { logger, ...deps });
  return Object.assign(gw, {
    logLines: lines,
    async cleanup() {
      await gw.shutdown('test done');
      cleanup();
    },
  });
}

/** A test gateway with its timers running, listening on a free loopback port; `base` is host:port. */
export async function listenTestGateway(
  env: Record<string, string> = {},
  deps: Partial<AppDeps> = {},
): Promise<TestGateway & { base: string }> {
  const gw = await buildTestGateway(env, deps);
  gw.start();
  await gw.app.listen({ host: '127.0.0.1', port: 0 });
  return Object.assign(gw, { base: `127.0.0.1:${(gw.app.server.address() as AddressInfo).port}` });
}

let userCounter = 0;

export async function newUser(
  gw: Gateway,
  overrides: { email?: string; password?: string } = {},
): Promise<{
  id: string;
  email: string;
  password: string;
  accessToken: string;
  refreshToken: string;
  auth: { authorization: string };
}> {
  const email = overrides.email ?? `user${++userCounter}-${Date.now()}@example.com`;
  const password = overrides.password ?? 'correct horse battery staple';
  const res = await gw.app.inject({
    method: 'POST',
    url: '/api/auth/register',
    payload: { email, password },
  });
  if (res.statusCode !== 201) throw new Error(`register failed: ${res.statusCode} ${res.body}`);
  const body = res.json<{ data: { user: { id: string }; accessToken: string; refreshToken: string } }>().data;
  return {
    id: body.user.id,
    email,
    password,
    accessToken: body.accessToken,
    refreshToken: body.refreshToken,
    auth: { authorization: `Bearer ${body.accessToken}` },
  };
}

export interface InstanceFixtureUser {
  username: string;
  password: string;
  privateKey: string;
}

export async function newInstance(
  gw: Gateway,
  owner: { auth: { authorization: string } },
  target: { host: string; port: number; user: InstanceFixtureUser },
  overrides: { auth?: 'key' | 'password'; name?: string; hostKeyFingerprint?: string } = {},
): Promise<{ id: string; hostKeyFingerprint: string | null }> {
  const auth =
    overrides.auth === 'password'
      ? { type: 'password', password: target.user.password }
      : { type: 'privateKey', privateKey: target.user.privateKey };
  const res = await gw.app.inject({
    method: 'POST',
    url: '/api/instances',
    headers: owner.auth,
    payload: {
      name: overrides.name ?? 'test instance',
      host: target.host,
      port: target.port,
      username: target.user.username,
      auth,
      ...(overrides.hostKeyFingerprint ? { hostKeyFingerprint: overrides.hostKeyFingerprint } : {}),
    },
  });
  if (res.statusCode !== 201) throw new Error(`instance create failed: ${res.statusCode} ${res.body}`);
  return res.json<{ data: { id: string; hostKeyFingerprint: string | null } }>().data;
}

/** `owner` connects an openbox desktop on a new instance of theirs at `target`: the session and its viewer URL. */
export async function connectNewDesktop(
  gw: Gateway,
  owner: { auth: { authorization: string } },
  target: { host: string; port: number; user: InstanceFixtureUser },
): Promise<{ instanceId: string; sessionId: string; websocketUrl: string }> {
  const instance = await newInstance(gw, owner, target);
  const res = await gw.app.inject({
    method: 'POST',
    url: '/api/sessions/connect',
    headers: owner.auth,
    payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
  });
  if (res.statusCode !== 201) throw new Error(`connect failed: ${res.statusCode} ${res.body}`);
  return {
    instanceId: instance.id,
    ...res.json<{ data: { sessionId: string; websocketUrl: string } }>().data,
  };
}
