// A load-generator process (forked by the harness, IPC channel required): runs its share of virtual
// users against one stack and answers the harness's phase commands (load-plan.ts). Every stack gets
// the same viewer (bench-viewer.ts) and the same timing; only how the bytes get to the simulator
// differs. Its own CPU time and event-loop delay are reported, so load-generator saturation is not
// mistaken for the stack's latency.
import { Agent, request as httpRequest } from 'node:http';
import { connect as tcpConnect, type Socket } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Histogram } from '../lib/histogram.js';
import { BenchViewer, type BarrierResult } from './bench-viewer.js';
import { LeanWebSocket } from './lean-websocket.js';
import type {
  BarrierReport,
  CloseReport,
  ErrorCounts,
  RampReport,
  StackTarget,
  VirtualUserSpec,
  WindowReport,
  WorkerCommand,
  WorkerPlan,
  WorkerReply,
} from './load-plan.js';
import { BUSY_RETRY_BUDGET_MS } from './load-plan.js';

const HTTP_TIMEOUT_MS = 60_000;
/** A busy gateway (503 OVERLOADED/BUSY) is asked again after its Retry-After (else this) … */
const BUSY_DEFAULT_RETRY_S = 2;
/**
 * … plus up to this share of it at random, so the users it turned away do not come back together, for at
 * most BUSY_RETRY_BUDGET_MS per call.
 */
const BUSY_JITTER = 0.2;
const BUSY_CODES = new Set(['OVERLOADED', 'BUSY']);
const MARKER_TICK_MS = 20;
/**
 * API calls go through node:http with keep-alive connections, as a browser keeps its connections to the
 * gateway open. (They went through fetch: undici's per-request machinery — web streams, abort signals,
 * promise chains — cost this process more CPU and garbage per call than the gateway's answer did, on
 * the same cores as the gateway and sshd. What is sent and timed is the same.)
 */
/*
 * No cap on sockets: each virtual user stands for its own browser, with connections of its own. A shared
 * cap (it was 256) queued one user's call behind other users' slow ones (sign-ins waiting for the hash
 * slot) inside this process, and the wait was timed as the gateway's answer: the 1000-user burst's
 * list-instances p50 was 5.4 s with the gateway's event-loop lag p99 at 11 ms.
 */
const agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024, scheduling: 'lifo' });

type VuState = 'idle' | 'connecting' | 'ready' | 'failed' | 'closed';

interface VirtualUser {
  spec: VirtualUserSpec;
  state: VuState;
  viewer: BenchViewer | null;
  transport: { pause(): void; resume(): void; close(): void } | null;
  token: string | null;
  instanceId: string | null;
  sessionId: string | null;
  nextMarkerAt: number;
  stalled: boolean;
  closedWhileStalled: boolean;
  barrier: BarrierResult | null;
  expectClose: boolean;
}

let plan: WorkerPlan | null = null;
const vus: VirtualUser[] = [];
const setup = new Histogram();
const rtt = new Histogram();
const http: Record<string, Histogram> = {};
const errors: ErrorCounts = {};
const closeCodes: ErrorCounts = {};
let httpRequests = 0;
let httpErrors = 0;
let wsAttempts = 0;
let wsOpened = 0;
let droppedDuringRun = 0;
let windowStart = 0;
let windowBytesIn = 0;
let windowBytesOut = 0;
let windowDropped = 0;
let windowEchoes = 0;
let markerTimer: NodeJS.Timeout | null = null;
interface SignIn {
  accessToken: string;
  refreshToken: string;
}
/**
 * Each account's sign-in, shared by its users (--sessions-per-account). A refresh rotates the refresh
 * token (the old one is then spent), so an account refreshes once for all its users and they share the
 * new pair, as the web client's tabs do through its refresh lock.
 */
const signIns = new Map<string, Promise<SignIn>>();
let closing = false;
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();

function countError(code: string): void {
  errors[code] = (errors[code] ?? 0) + 1;
}

function reply(r: WorkerReply): void {
  process.send?.(r);
}

class HttpError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    /** Seconds from the Retry-After header, when the gateway sent one. */
    readonly retryAfterSeconds: number | null = null,
  ) {
    super(`${status} ${code}`);
  }
}

/**
 * One API call, timed under `name` (each try on its own); answers `data` of `{ data }` or throws HttpError
 * with the API's code. A 503 OVERLOADED/BUSY is tried again after its Retry-After plus 0–20 % jitter, as
 * the web client does (web/src/lib/retry-after.ts), within BUSY_RETRY_BUDGET_MS; each such wait is counted
 * as `busy-retry:<name>:<code>` beside the errors (it is not one: the user is still being served).
 */
async function api<T>(
  name: string,
  baseUrl: string,
  method: string,
  path: string,
  body: unknown,
  token: string | null,
  /** False once the caller no longer wants the answer (its user gave up): no further retry. */
  wanted: () => boolean = () => true,
): Promise<T> {
  const giveUpAt = performance.now() + BUSY_RETRY_BUDGET_MS;
  for (;;) {
    try {
      return await apiOnce<T>(name, baseUrl, method, path, body, token);
    } catch (e) {
      if (!(e instanceof HttpError) || e.status !== 503 || !BUSY_CODES.has(e.code) || closing) throw e;
      const waitMs = (e.retryAfterSeconds ?? BUSY_DEFAULT_RETRY_S) * 1000 * (1 + BUSY_JITTER * Math.random());
      // A user past its setup timeout has left: retrying for it would only start a desktop nobody opens.
      if (performance.now() + waitMs > giveUpAt || !wanted()) throw e;
      countError(`busy-retry:${name}:${e.code}`);
      await new Promise((r) => setTimeout(r, waitMs));
      if (!wanted()) throw e;
    }
  }
}

async function apiOnce<T>(
  name: string,
  baseUrl: string,
  method: string,
  path: string,
  body: unknown,
  token: string | null,
): Promise<T> {
  const started = performance.now();
  httpRequests++;
  const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = {};
  if (payload !== null) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = payload.length;
  }
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let answer: { status: number; text: string; retryAfter: string | undefined };
  try {
    answer = await new Promise((resolve, reject) => {
      const req = httpRequest(baseUrl + path, { method, headers, agent, timeout: HTTP_TIMEOUT_MS }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
            retryAfter: res.headers['retry-after'],
          }),
        );
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })));
      req.on('error', reject);
      req.end(payload ?? undefined);
    });
  } catch (e) {
    httpErrors++;
    const code = (e as NodeJS.ErrnoException).code;
    throw new HttpError(code === 'TIMEOUT' ? 'HTTP_TIMEOUT' : `HTTP_NETWORK${code ? `_${code}` : ''}`, 0);
  }
  (http[name] ??= new Histogram()).record(performance.now() - started);
  const { status, text } = answer;
  if (status < 200 || status >= 300) {
    httpErrors++;
    let code = `HTTP_${status}`;
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? code;
    } catch {
      // not JSON
    }
    const retryAfter = Number(answer.retryAfter);
    throw new HttpError(code, status, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null);
  }
  return text === '' ? (undefined as T) : (JSON.parse(text) as { data: T }).data;
}

/** The account's sign-in: signs in on its first use, once for all the account's users. */
function signInOf(base: string, email: string): Promise<SignIn> {
  let signIn = signIns.get(email);
  if (signIn === undefined) {
    signIn = api<SignIn>('login', base, 'POST', '/api/auth/login', { email, password: plan!.password }, null);
    signIns.set(email, signIn);
  }
  return signIn;
}

/**
 * One API call as the user's account. An access token lives JWT_ACCESS_EXPIRY (15 min by default), less
 * than a long ramp and hold (the 10,000-viewer run's teardown met 5,127 TOKEN_EXPIRED): on TOKEN_EXPIRED
 * the account's sign-in is refreshed (POST /api/auth/refresh with the refresh token, as the web client
 * does) and the call is tried once more with the new access token.
 */
async function authedApi<T>(
  vu: VirtualUser,
  name: string,
  base: string,
  method: string,
  path: string,
  body?: unknown,
  wanted?: () => boolean,
): Promise<T> {
  const signIn = signInOf(base, vu.spec.email);
  vu.token = (await signIn).accessToken;
  try {
    return await api<T>(name, base, method, path, body, vu.token, wanted);
  } catch (e) {
    if (!(e instanceof HttpError) || e.code !== 'TOKEN_EXPIRED') throw e;
    countError(`token-refresh:${name}`);
    vu.token = (await refreshedSignIn(base, vu.spec.email, signIn)).accessToken;
    return await api<T>(name, base, method, path, body, vu.token, wanted);
  }
}

/**
 * The account's sign-in after `expired`: the first of its users to find the access token expired
 * refreshes it, the others (already waiting on the same sign-in) take that refresh's answer.
 */
function refreshedSignIn(base: string, email: string, expired: Promise<SignIn>): Promise<SignIn> {
  const current = signIns.get(email);
  if (current !== undefined && current !== expired) return current;
  const next = expired.then((s) =>
    api<SignIn>('refresh', base, 'POST', '/api/auth/refresh', { refreshToken: s.refreshToken }, null),
  );
  signIns.set(email, next);
  return next;
}

function newUser(spec: VirtualUserSpec): VirtualUser {
  return {
    spec,
    state: 'idle',
    viewer: null,
    transport: null,
    token: null,
    instanceId: null,
    sessionId: null,
    nextMarkerAt: 0,
    stalled: false,
    closedWhileStalled: false,
    barrier: null,
    expectClose: false,
  };
}

async function prepare(p: WorkerPlan): Promise<number> {
  plan = p;
  for (const spec of p.users) vus.push(newUser(spec));
  const t = p.target;
  if (t.kind !== 'clouddesk') return vus.length;
  // Accounts and instances exist before the measured scenario starts, as they would in production.
  let prepared = 0;
  let next = 0;
  // One registration per account, however many of its users are prepared at once.
  const registered = new Map<string, Promise<{ accessToken: string }>>();
  const worker = async () => {
    while (next < vus.length) {
      const vu = vus[next++]!;
      const instance = t.instances[vu.spec.index % t.instances.length]!;
      try {
        let registration = registered.get(vu.spec.email);
        if (registration === undefined) {
          registration = api<{ accessToken: string }>(
            'register',
            t.baseUrl,
            'POST',
            '/api/auth/register',
            { email: vu.spec.email, password: p.password },
            null,
          );
          registered.set(vu.spec.email, registration);
        }
        const reg = await registration;
        const inst = await api<{ id: string }>(
          'add-instance',
          t.baseUrl,
          'POST',
          '/api/instances',
          {
            name: `bench-${vu.spec.index}`,
            host: instance.host,
            port: instance.port,
            username: instance.username,
            auth: { type: 'privateKey', privateKey: instance.privateKey },
            hostKeyFingerprint: instance.hostKeyFingerprint,
          },
          reg.accessToken,
        );
        vu.instanceId = inst.id;
        prepared++;
      } catch (e) {
        countError(`prepare:${e instanceof HttpError ? e.code : 'UNKNOWN'}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  // Preparation is not part of the measured scenario.
  httpRequests = 0;
  httpErrors = 0;
  delete http.register;
  delete http['add-instance'];
  return prepared;
}

function wsUrlOf(baseUrl: string, path: string): string {
  return baseUrl.replace(/^http/, 'ws') + path;
}

function openWebSocket(
  vu: VirtualUser,
  url: string,
  origin: string | null,
  onOpenFailed: (code: string) => void,
): void {
  wsAttempts++;
  const upgradeStarted = performance.now();
  const upgraded = () => (http['ws-upgrade'] ??= new Histogram()).record(performance.now() - upgradeStarted);
  let opened = false;
  const ws = new LeanWebSocket(
    url,
    {
      protocol: 'binary',
      handshakeTimeoutMs: plan!.setupTimeoutMs,
      ...(origin === null ? {} : { origin }),
    },
    {
      onOpen: () => {
        opened = true;
        wsOpened++;
        upgraded();
      },
      onData: (piece) => vu.viewer!.onData(piece),
      onUnexpectedResponse: (status) => {
        upgraded();
        onOpenFailed(`WS_HTTP_${status}`);
      },
      onOpenFailed: (code) => onOpenFailed(`WS_${code}`),
      onClose: (code) => {
        if (opened) onClosed(vu, `ws:${code}`);
      },
    },
  );
  vu.transport = { pause: () => ws.pause(), resume: () => ws.resume(), close: () => ws.close(1000) };
  vu.viewer!.attach({
    send: (b) => ws.send(b),
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    close: () => ws.close(1000),
  });
}

function openTcp(vu: VirtualUser, host: string, port: number, onOpenFailed: (code: string) => void): void {
  const socket: Socket = tcpConnect({ host, port });
  socket.setNoDelay(true);
  let opened = false;
  vu.transport = { pause: () => socket.pause(), resume: () => socket.resume(), close: () => socket.end() };
  vu.viewer!.attach({
    send: (b) => socket.write(b),
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    close: () => socket.end(),
  });
  socket.on('connect', () => {
    opened = true;
  });
  socket.on('data', (b: Buffer) => vu.viewer!.onData(b));
  socket.on('error', (e) => {
    if (!opened) onOpenFailed(`TCP_${(e as NodeJS.ErrnoException).code ?? 'ERROR'}`);
  });
  socket.on('close', () => onClosed(vu, 'tcp:closed'));
}

function onClosed(vu: VirtualUser, how: string): void {
  if (vu.state === 'closed' || vu.state === 'failed') return;
  const wasReady = vu.state === 'ready';
  vu.state = 'closed';
  if (vu.expectClose || closing) return;
  closeCodes[how] = (closeCodes[how] ?? 0) + 1;
  if (vu.stalled) vu.closedWhileStalled = true;
  if (wasReady) {
    droppedDuringRun++;
    windowDropped++;
  }
}

/** Runs one virtual user's scenario up to its first screen update; resolves either way. */
function startUser(vu: VirtualUser, target: StackTarget): Promise<void> {
  return new Promise<void>((resolve) => {
    let settled = false;
    let t0 = performance.now();
    const timer = setTimeout(() => fail('SETUP_TIMEOUT'), plan!.setupTimeoutMs);
    const fail = (code: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      vu.state = 'failed';
      countError(code);
      vu.transport?.close();
      resolve();
    };
    vu.state = 'connecting';
    vu.viewer = new BenchViewer({
      onFirstUpdate: () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        setup.record(performance.now() - t0);
        vu.state = 'ready';
        vu.nextMarkerAt = performance.now() + Math.random() * plan!.echoIntervalMs;
        resolve();
      },
      onEcho: (ms) => {
        rtt.record(ms);
        windowEchoes++;
      },
      onBarrier: (r) => {
        vu.barrier = r;
      },
      onProtocolError: (reason) => {
        countError(`RFB:${reason}`);
        vu.transport?.close();
      },
    });
    switch (target.kind) {
      case 'tcp':
        openTcp(vu, target.host, target.port, fail);
        break;
      case 'websocket':
        openWebSocket(vu, target.url, null, fail);
        break;
      case 'clouddesk':
        void (async () => {
          const base = target.baseUrl;
          try {
            if (vu.instanceId === null) throw new HttpError('NOT_PREPARED', 0);
            const list = await authedApi<{ id: string }[]>(
              vu,
              'list-instances',
              base,
              'GET',
              '/api/instances',
            );
            const instance = list.find((i) => i.id === vu.instanceId) ?? list[0];
            if (!instance) throw new HttpError('NO_INSTANCE', 0);
            // Setup time runs from the connect call to the first screen update.
            t0 = performance.now();
            const session = await authedApi<{ sessionId: string; websocketUrl: string }>(
              vu,
              'connect',
              base,
              'POST',
              '/api/sessions/connect',
              { instanceId: instance.id, desktopEnvironment: target.desktopEnvironment },
              () => !settled,
            );
            vu.sessionId = session.sessionId;
            if (settled) return;
            openWebSocket(vu, wsUrlOf(target.viewerBaseUrl ?? base, session.websocketUrl), base, fail);
          } catch (e) {
            fail(e instanceof HttpError ? e.code : 'UNKNOWN');
          }
        })();
        break;
    }
  });
}

async function ramp(startAt: number): Promise<RampReport> {
  const p = plan!;
  markerTimer = setInterval(sendMarkers, MARKER_TICK_MS);
  const started: Promise<void>[] = [];
  for (const vu of vus) {
    const at = startAt + (p.totalUsers > 1 ? (vu.spec.index * p.rampMs) / (p.totalUsers - 1) : 0);
    const wait = Math.max(0, at - Date.now());
    started.push(new Promise<void>((r) => setTimeout(r, wait)).then(() => startUser(vu, p.target)));
  }
  await Promise.all(started);
  return {
    attempted: vus.length,
    ready: vus.filter((v) => v.state === 'ready').length,
    failed: vus.filter((v) => v.state === 'failed').length,
    wsAttempts,
    wsOpened,
    setup: setup.toJSON(),
    http: Object.fromEntries(Object.entries(http).map(([k, h]) => [k, h.toJSON()])),
    httpRequests,
    httpErrors,
    errors: { ...errors },
  };
}

function sendMarkers(): void {
  const now = performance.now();
  const interval = plan!.echoIntervalMs;
  for (const vu of vus) {
    if (vu.state !== 'ready' || vu.stalled || vu.barrier !== null || now < vu.nextMarkerAt) continue;
    vu.viewer!.sendMarker();
    vu.nextMarkerAt = Math.max(vu.nextMarkerAt + interval, now);
  }
}

function totals(): { bytesIn: number; bytesOut: number; lost: number } {
  let bytesIn = 0;
  let bytesOut = 0;
  let lost = 0;
  for (const vu of vus) {
    if (!vu.viewer) continue;
    bytesIn += vu.viewer.bytesIn;
    bytesOut += vu.viewer.bytesOut;
    lost += vu.viewer.lostMarkers;
  }
  return { bytesIn, bytesOut, lost };
}

let windowLost = 0;
function windowStartCmd(): void {
  rtt.reset();
  const t = totals();
  windowBytesIn = t.bytesIn;
  windowBytesOut = t.bytesOut;
  windowLost = t.lost;
  windowDropped = 0;
  windowEchoes = 0;
  windowStart = performance.now();
}

function windowEndCmd(): WindowReport {
  const t = totals();
  return {
    ms: performance.now() - windowStart,
    bytesIn: t.bytesIn - windowBytesIn,
    bytesOut: t.bytesOut - windowBytesOut,
    rtt: rtt.toJSON(),
    echoes: windowEchoes,
    lostMarkers: t.lost - windowLost,
    live: vus.filter((v) => v.state === 'ready').length,
    dropped: windowDropped,
  };
}

function stall(): number {
  let n = 0;
  for (const vu of vus) {
    if (vu.spec.stall && vu.state === 'ready') {
      vu.stalled = true;
      vu.transport?.pause();
      n++;
    }
  }
  return n;
}

function unstall(): { stalled: number; closedWhileStalled: number; closeCodes: ErrorCounts } {
  let stalled = 0;
  let closed = 0;
  for (const vu of vus) {
    if (!vu.stalled) continue;
    stalled++;
    if (vu.closedWhileStalled) closed++;
    vu.stalled = false;
    vu.transport?.resume();
  }
  return { stalled, closedWhileStalled: closed, closeCodes: { ...closeCodes } };
}

async function barrier(timeoutMs: number): Promise<BarrierReport> {
  const live = vus.filter((v) => v.state === 'ready' && !v.closedWhileStalled);
  for (const vu of live) vu.viewer!.sendBarrier();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && live.some((v) => v.barrier === null && v.state === 'ready')) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const report: BarrierReport = {
    live: live.length,
    exact: 0,
    mismatched: 0,
    timedOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    serverSent: 0,
    firstMismatch: null,
  };
  for (const vu of live) {
    const b = vu.barrier;
    if (b === null) {
      report.timedOut++;
      continue;
    }
    report.bytesIn += b.clientReceived;
    report.bytesOut += b.clientSent;
    report.serverSent += b.serverSent;
    if (b.serverSent === b.clientReceived && b.serverReceived === b.clientSent) report.exact++;
    else {
      report.mismatched++;
      report.firstMismatch ??= `vu ${vu.spec.index}: ${JSON.stringify(b)}`;
    }
  }
  return report;
}

async function close(): Promise<CloseReport> {
  closing = true;
  if (markerTimer) clearInterval(markerTimer);
  const p = plan!;
  const t = p.target;
  for (const vu of vus) {
    vu.expectClose = true;
    vu.transport?.close();
  }
  if (t.kind === 'clouddesk') {
    // The plan's last step: end the session through the API (this also stops the desktop).
    let next = 0;
    const withSession = vus.filter((v) => v.sessionId !== null && v.token !== null);
    const worker = async () => {
      while (next < withSession.length) {
        const vu = withSession[next++]!;
        try {
          await authedApi(vu, 'disconnect', t.baseUrl, 'POST', `/api/sessions/disconnect/${vu.sessionId}`);
        } catch (e) {
          countError(`disconnect:${e instanceof HttpError ? e.code : 'UNKNOWN'}`);
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
  }
  const cpu = process.cpuUsage();
  const all = totals();
  return {
    httpRequests,
    httpErrors,
    http: Object.fromEntries(Object.entries(http).map(([k, h]) => [k, h.toJSON()])),
    errors: { ...errors },
    droppedDuringRun,
    closeCodes: { ...closeCodes },
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    // The histogram's values include its 10 ms sampling interval: the delay is what is beyond it.
    eventLoopDelayP99Ms: loopDelay.count > 0 ? Math.max(0, loopDelay.percentile(99) / 1e6 - 10) : null,
    totalBytesIn: all.bytesIn,
    totalBytesOut: all.bytesOut,
  };
}

async function handle(m: WorkerCommand): Promise<void> {
  switch (m.cmd) {
    case 'prepare':
      return reply({ reply: 'prepare', prepared: await prepare(m.plan), errors: { ...errors } });
    case 'ramp':
      return reply({ reply: 'ramp', report: await ramp(m.startAt) });
    case 'window-start':
      windowStartCmd();
      return reply({ reply: 'window-start' });
    case 'window-end':
      return reply({ reply: 'window-end', report: windowEndCmd() });
    case 'stall':
      return reply({ reply: 'stall', stalled: stall() });
    case 'unstall':
      return reply({ reply: 'unstall', report: unstall() });
    case 'barrier':
      return reply({ reply: 'barrier', report: await barrier(m.timeoutMs) });
    case 'close': {
      const report = await close();
      reply({ reply: 'close', report });
      return;
    }
  }
}

process.on('message', (m: WorkerCommand) => {
  handle(m).catch((e: unknown) =>
    reply({ reply: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) }),
  );
});
// The harness going away closes the IPC channel: do not outlive it. Its SIGTERM (stopChild) ends it the
// same orderly way, so a --cpu-prof profile gets written.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
