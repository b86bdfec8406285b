// The mixed run's control-plane load (`--mixed`, issue 9): while the streams are held, a steady rate of
// sign-ins (argon2, the session store, JWTs) and of connects (a desktop started over SSH, its session
// written, then disconnected, which stops it in the background) goes to the same gateway, open loop:
// a call is started on schedule whether or not the last one answered, as independent users would.
// Its own process, forked by the harness (IPC), so its work never runs on a viewer's event loop.
import { Histogram } from '../lib/histogram.js';
import type { BenchInstance, ErrorCounts } from './load-plan.js';
import type { HistogramJson } from '../lib/histogram.js';

export interface ControlLoadPlan {
  baseUrl: string;
  instances: BenchInstance[];
  desktopEnvironment: string;
  password: string;
  runId: string;
  /** Accounts signed in round robin. */
  signInAccounts: number;
  /** Accounts with an instance, each used by at most one connect at a time. */
  connectAccounts: number;
}

export type ControlLoadCommand =
  | { cmd: 'prepare'; plan: ControlLoadPlan }
  | { cmd: 'start'; loginsPerSecond: number; connectsPerSecond: number }
  | { cmd: 'stop' };

export interface ControlLoadReport {
  seconds: number;
  /** Calls started and answered with success, per kind. */
  started: Record<string, number>;
  ok: Record<string, number>;
  /** Connects not started because every connect account was busy (the gateway answered too slowly). */
  skipped: number;
  errors: ErrorCounts;
  ms: Record<string, HistogramJson>;
}

export type ControlLoadReply =
  | { reply: 'prepare'; prepared: number }
  | { reply: 'start' }
  | { reply: 'stop'; report: ControlLoadReport }
  | { reply: 'error'; message: string };

const HTTP_TIMEOUT_MS = 60_000;
/** Calls in flight past which a new one is counted as skipped, so a stuck gateway is not flooded. */
const MAX_IN_FLIGHT = 400;

let plan: ControlLoadPlan | null = null;
const signIn: string[] = [];
const connectors: { email: string; token: string; instanceId: string; busy: boolean }[] = [];
const ms: Record<string, Histogram> = {};
const started: Record<string, number> = {};
const ok: Record<string, number> = {};
const errors: ErrorCounts = {};
let skipped = 0;
let inFlight = 0;
let timers: NodeJS.Timeout[] = [];
let startedAt = 0;
let running = false;

class CallError extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

async function call<T>(name: string, method: string, path: string, body: unknown, token: string | null) {
  const t0 = performance.now();
  try {
    const res = await fetch(plan!.baseUrl + path, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
    const text = await res.text();
    if (running) (ms[name] ??= new Histogram()).record(performance.now() - t0);
    if (!res.ok) {
      let code = `HTTP_${res.status}`;
      try {
        code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? code;
      } catch {
        // not JSON
      }
      throw new CallError(code);
    }
    return text === '' ? (undefined as T) : (JSON.parse(text) as { data: T }).data;
  } catch (e) {
    if (e instanceof CallError) throw e;
    throw new CallError(e instanceof Error && e.name === 'TimeoutError' ? 'HTTP_TIMEOUT' : 'HTTP_NETWORK');
  }
}

function count(into: Record<string, number>, key: string): void {
  into[key] = (into[key] ?? 0) + 1;
}

async function prepare(p: ControlLoadPlan): Promise<number> {
  plan = p;
  let prepared = 0;
  const jobs: (() => Promise<void>)[] = [];
  for (let i = 0; i < p.signInAccounts; i++) {
    const email = `bench-${p.runId}-signin-${i}@bench.invalid`;
    jobs.push(async () => {
      await call('register', 'POST', '/api/auth/register', { email, password: p.password }, null);
      signIn.push(email);
      prepared++;
    });
  }
  for (let i = 0; i < p.connectAccounts; i++) {
    const email = `bench-${p.runId}-connect-${i}@bench.invalid`;
    const instance = p.instances[i % p.instances.length]!;
    jobs.push(async () => {
      const reg = await call<{ accessToken: string }>(
        'register',
        'POST',
        '/api/auth/register',
        { email, password: p.password },
        null,
      );
      const inst = await call<{ id: string }>(
        'add-instance',
        'POST',
        '/api/instances',
        {
          name: `bench-connect-${i}`,
          host: instance.host,
          port: instance.port,
          username: instance.username,
          auth: { type: 'privateKey', privateKey: instance.privateKey },
          hostKeyFingerprint: instance.hostKeyFingerprint,
        },
        reg.accessToken,
      );
      connectors.push({ email, token: reg.accessToken, instanceId: inst.id, busy: false });
      prepared++;
    });
  }
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      try {
        await job();
      } catch (e) {
        count(errors, `prepare:${e instanceof CallError ? e.code : 'UNKNOWN'}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return prepared;
}

let nextSignIn = 0;
function oneSignIn(): void {
  if (signIn.length === 0) return;
  if (inFlight >= MAX_IN_FLIGHT) {
    skipped++;
    return;
  }
  const email = signIn[nextSignIn++ % signIn.length]!;
  count(started, 'login');
  inFlight++;
  call('login', 'POST', '/api/auth/login', { email, password: plan!.password }, null)
    .then(() => count(ok, 'login'))
    .catch((e: unknown) => count(errors, `login:${e instanceof CallError ? e.code : 'UNKNOWN'}`))
    .finally(() => inFlight--);
}

function oneConnect(): void {
  const c = connectors.find((x) => !x.busy);
  if (!c || inFlight >= MAX_IN_FLIGHT) {
    skipped++;
    return;
  }
  c.busy = true;
  inFlight++;
  count(started, 'connect');
  void (async () => {
    try {
      const s = await call<{ sessionId: string }>(
        'connect',
        'POST',
        '/api/sessions/connect',
        { instanceId: c.instanceId, desktopEnvironment: plan!.desktopEnvironment },
        c.token,
      );
      count(ok, 'connect');
      await call('disconnect', 'POST', `/api/sessions/disconnect/${s.sessionId}`, undefined, c.token);
      count(ok, 'disconnect');
    } catch (e) {
      count(errors, `connect:${e instanceof CallError ? e.code : 'UNKNOWN'}`);
    } finally {
      c.busy = false;
      inFlight--;
    }
  })();
}

function every(perSecond: number, fn: () => void): void {
  if (perSecond <= 0) return;
  // Spread over the second, not in bursts: one call per 1/rate s.
  timers.push(setInterval(fn, 1000 / perSecond));
}

function start(loginsPerSecond: number, connectsPerSecond: number): void {
  startedAt = performance.now();
  running = true;
  every(loginsPerSecond, oneSignIn);
  every(connectsPerSecond, oneConnect);
}

async function stop(): Promise<ControlLoadReport> {
  for (const t of timers) clearInterval(t);
  timers = [];
  const seconds = (performance.now() - startedAt) / 1000;
  // Let the calls already started answer (bounded), so their latency and errors count.
  const deadline = Date.now() + HTTP_TIMEOUT_MS;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  running = false;
  return {
    seconds,
    started: { ...started },
    ok: { ...ok },
    skipped,
    errors: { ...errors },
    ms: Object.fromEntries(Object.entries(ms).map(([k, h]) => [k, h.toJSON()])),
  };
}

async function handle(m: ControlLoadCommand): Promise<ControlLoadReply> {
  switch (m.cmd) {
    case 'prepare':
      return { reply: 'prepare', prepared: await prepare(m.plan) };
    case 'start':
      start(m.loginsPerSecond, m.connectsPerSecond);
      return { reply: 'start' };
    case 'stop':
      return { reply: 'stop', report: await stop() };
  }
}

process.on('message', (m: ControlLoadCommand) => {
  handle(m).then(
    (r) => process.send?.(r),
    (e: unknown) =>
      process.send?.({ reply: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
process.on('disconnect', () => process.exit(0));
