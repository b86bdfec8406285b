// The soak's clients, all through HAProxy as a browser would be: viewers that stream from the desktop
// simulator and reconnect the way the web client does (a fresh ticket for the same session after a
// reconnectable close), and API workers that sign up, sign in, add instances, connect and disconnect in
// a loop. Every answer is counted by status; every 5xx is kept with its route, code and time; every
// write answered 2xx goes into the client-side log that is checked row by row at the end.
import WebSocket from 'ws';
import { BenchViewer, type BarrierResult } from '../load/bench-viewer.js';

export interface ApiAnswer<T = unknown> {
  status: number;
  code: string | null;
  data: T;
}

export interface FiveXx {
  atMs: number;
  route: string;
  status: number;
  code: string;
  /** The answer's error message (a 500's names its request id: bench/soak/gateway-errors.ts). */
  message?: string;
}

export type WriteKind = 'user' | 'instance' | 'session' | 'end';
export interface AckedWrite {
  kind: WriteKind;
  id: string;
  /** user → email; instance → its user's id; session → its instance's id. */
  detail: string;
  atMs: number;
}

export interface Instance {
  host: string;
  port: number;
  username: string;
  privateKey: string;
  hostKeyFingerprint: string;
}

const HTTP_TIMEOUT_MS = 30_000;
const DESKTOP = 'openbox';
const RECONNECT_CODES = new Set([4010, 4011, 4012, 4013, 1011, 1001, 1006, 1005]);

/**
 * Whose answer an error without a catalogue code is: HAProxy's own page (no gateway UP: 503; a gateway
 * that died mid-answer: 502), a closing gateway's Fastify (`return503OnClosing`: `{"error":"Service
 * Unavailable",…}`), or something else (`HTTP_<status>`).
 */
export function uncodedAnswer(status: number, body: string): string {
  if (
    /^<html>/i.test(body.trimStart()) &&
    /\b(No server is available|Bad Gateway|Gateway Time-out)\b/i.test(body)
  )
    return `HAPROXY_${status}`;
  if (status === 503 && /^\{"error":"Service Unavailable"/.test(body)) return 'GATEWAY_CLOSING';
  return `HTTP_${status}`;
}

/** Counters and logs shared by every client of one soak run. */
export class Traffic {
  readonly statuses: Record<string, number> = {};
  readonly fiveXx: FiveXx[] = [];
  readonly writes: AckedWrite[] = [];
  readonly networkErrors: Record<string, number> = {};
  requests = 0;
  constructor(
    readonly baseUrl: string,
    readonly t0: number,
  ) {}

  now(): number {
    return Date.now() - this.t0;
  }

  ack(kind: WriteKind, id: string, detail: string): void {
    this.writes.push({ kind, id, detail, atMs: this.now() });
  }

  /** One API call; network failures answer status 0 with the error code. */
  async api<T>(
    route: string,
    method: string,
    path: string,
    body?: unknown,
    token?: string | null,
    baseUrl = this.baseUrl,
  ): Promise<ApiAnswer<T>> {
    this.requests++;
    try {
      const res = await fetch(baseUrl + path, {
        method,
        headers: {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
      });
      const text = await res.text();
      let parsed: { data?: T; error?: { code?: string; message?: string } } = {};
      try {
        parsed = text === '' ? {} : (JSON.parse(text) as typeof parsed);
      } catch {
        // not JSON (HAProxy's own 503 page, say)
      }
      const code = parsed.error?.code ?? (res.ok ? null : uncodedAnswer(res.status, text));
      this.statuses[res.status] = (this.statuses[res.status] ?? 0) + 1;
      if (res.status >= 500)
        this.fiveXx.push({
          atMs: this.now(),
          route,
          status: res.status,
          code: code ?? '',
          ...(parsed.error?.message === undefined ? {} : { message: parsed.error.message }),
        });
      return { status: res.status, code, data: parsed.data as T };
    } catch (e) {
      const cause = e instanceof Error ? (e.cause as { code?: string } | undefined) : undefined;
      const code =
        e instanceof Error && e.name === 'TimeoutError'
          ? 'HTTP_TIMEOUT'
          : `NETWORK_${cause?.code ?? 'ERROR'}`;
      this.networkErrors[code] = (this.networkErrors[code] ?? 0) + 1;
      return { status: 0, code, data: undefined as T };
    }
  }
}

export interface StreamRecord {
  openedAtMs: number;
  firstUpdateAtMs: number | null;
  closedAtMs: number | null;
  closeCode: number | null;
  bytesIn: number;
  /** RFB parse failures (bytes missing, out of order or corrupt) and echo sequence faults. */
  faults: string[];
  barrier: BarrierResult | null;
}

export interface Outage {
  viewer: number;
  fromMs: number;
  toMs: number | null;
  closeCode: number | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One person watching one desktop for the whole soak, reconnecting whenever it is cut. */
export class SoakViewer {
  token: string | null = null;
  instanceId: string | null = null;
  sessionId: string | null = null;
  readonly streams: StreamRecord[] = [];
  readonly outages: Outage[] = [];
  /** Sessions that had to be connected again because the old one was gone (should never happen). */
  sessionsLost = 0;
  private ws: WebSocket | null = null;
  private viewer: BenchViewer | null = null;
  private current: StreamRecord | null = null;
  private stopping = false;
  private markerTimer: NodeJS.Timeout | null = null;
  private lastEchoSeq = 0;
  private reconnecting: Promise<void> | null = null;

  constructor(
    readonly index: number,
    readonly email: string,
    readonly password: string,
    private readonly traffic: Traffic,
    private readonly onEvent: (e: { kind: 'drop' | 'back'; viewer: number; atMs: number }) => void,
  ) {}

  get streaming(): boolean {
    return this.current !== null && this.current.firstUpdateAtMs !== null && this.current.closedAtMs === null;
  }

  private async signIn(): Promise<boolean> {
    const r = await this.traffic.api<{ accessToken: string }>('login', 'POST', '/api/auth/login', {
      email: this.email,
      password: this.password,
    });
    if (r.status !== 200) return false;
    this.token = r.data.accessToken;
    return true;
  }

  /** Signs up, adds the instance and connects; resolves at the first screen update. */
  async start(instance: Instance): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (attempt > 20) throw new Error(`viewer ${this.index} could not start`);
      if (this.token === null) {
        const reg = await this.traffic.api<{ user: { id: string }; accessToken: string }>(
          'register',
          'POST',
          '/api/auth/register',
          { email: this.email, password: this.password },
        );
        if (reg.status === 201) {
          this.token = reg.data.accessToken;
          this.traffic.ack('user', reg.data.user.id, this.email);
        } else if (reg.status === 409) {
          // Signed up by an earlier try whose answer was lost.
          await this.signIn();
        }
        if (this.token === null) {
          await sleep(1000);
          continue;
        }
      }
      if (this.instanceId === null) {
        const inst = await this.traffic.api<{ id: string; userId?: string }>(
          'add-instance',
          'POST',
          '/api/instances',
          {
            name: `soak-${this.index}`,
            host: instance.host,
            port: instance.port,
            username: instance.username,
            auth: { type: 'privateKey', privateKey: instance.privateKey },
            hostKeyFingerprint: instance.hostKeyFingerprint,
          },
          this.token,
        );
        if (inst.status !== 201) {
          await sleep(1000);
          continue;
        }
        this.instanceId = inst.data.id;
        this.traffic.ack('instance', inst.data.id, `owner:${this.email}`);
      }
      const url = await this.connectSession();
      if (url === null) {
        await sleep(1000);
        continue;
      }
      if (await this.open(url)) return;
      await sleep(1000);
    }
  }

  private async connectSession(): Promise<string | null> {
    const c = await this.traffic.api<{ sessionId: string; websocketUrl: string }>(
      'connect',
      'POST',
      '/api/sessions/connect',
      { instanceId: this.instanceId, desktopEnvironment: DESKTOP },
      this.token,
    );
    if (c.status === 401) await this.signIn();
    if (c.status !== 201 && c.status !== 200) return null;
    if (this.sessionId !== null && this.sessionId !== c.data.sessionId) this.sessionsLost++;
    if (this.sessionId !== c.data.sessionId) this.traffic.ack('session', c.data.sessionId, this.instanceId!);
    this.sessionId = c.data.sessionId;
    return c.data.websocketUrl;
  }

  /** Opens one stream; resolves true at its first update, false if it failed before one. */
  private open(path: string): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const rec: StreamRecord = {
        openedAtMs: this.traffic.now(),
        firstUpdateAtMs: null,
        closedAtMs: null,
        closeCode: null,
        bytesIn: 0,
        faults: [],
        barrier: null,
      };
      this.current = rec;
      this.lastEchoSeq = 0;
      let settled = false;
      const settle = (ok: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(ok);
      };
      const timer = setTimeout(() => {
        rec.faults.push('no first update within 30 s');
        ws.terminate();
        settle(false);
      }, 30_000);
      const viewer = new BenchViewer({
        onFirstUpdate: () => {
          rec.firstUpdateAtMs = this.traffic.now();
          this.streams.push(rec);
          settle(true);
        },
        onEcho: () => undefined,
        onEchoSeq: (seq) => {
          // Echoes come back in the order the markers went out, one for each: 1, 2, 3, …
          if (seq !== this.lastEchoSeq + 1 && viewer.lostMarkers === 0)
            rec.faults.push(`echo ${seq} after ${this.lastEchoSeq}`);
          this.lastEchoSeq = seq;
        },
        onBarrier: (b) => {
          rec.barrier = b;
        },
        onProtocolError: (reason) => {
          rec.faults.push(`RFB: ${reason}`);
          ws.close(1000);
        },
      });
      this.viewer = viewer;
      const ws = new WebSocket(this.traffic.baseUrl.replace(/^http/, 'ws') + path, ['binary'], {
        perMessageDeflate: false,
        handshakeTimeout: 15_000,
        headers: { Origin: this.traffic.baseUrl },
      });
      this.ws = ws;
      ws.binaryType = 'nodebuffer';
      viewer.attach({
        send: (b) => {
          if (ws.readyState === WebSocket.OPEN) ws.send(b);
        },
        pause: () => ws.pause(),
        resume: () => ws.resume(),
        close: () => ws.close(1000),
      });
      ws.on('message', (data: Buffer) => {
        rec.bytesIn += data.length;
        viewer.onData(data);
      });
      ws.on('unexpected-response', (_req, res) => {
        rec.faults.push(`upgrade answered ${res.statusCode}`);
        res.resume();
        ws.terminate();
      });
      ws.on('error', () => undefined);
      ws.on('close', (code) => {
        rec.closedAtMs = this.traffic.now();
        rec.closeCode = code;
        const wasStreaming = rec.firstUpdateAtMs !== null;
        settle(false);
        if (this.current === rec && wasStreaming && !this.stopping) {
          this.onEvent({ kind: 'drop', viewer: this.index, atMs: rec.closedAtMs });
          this.outages.push({ viewer: this.index, fromMs: rec.closedAtMs, toMs: null, closeCode: code });
          this.reconnecting = this.reconnect(code);
        }
      });
      if (this.markerTimer === null) {
        // One input marker a second, offset per viewer; each must be echoed, in order.
        this.markerTimer = setInterval(() => {
          if (this.streaming && this.current?.barrier === null) this.viewer?.sendMarker();
        }, 1000);
      }
    });
  }

  private async reconnect(code: number): Promise<void> {
    const outage = this.outages[this.outages.length - 1]!;
    let delay = 250;
    for (;;) {
      if (this.stopping) return;
      await sleep(delay);
      delay = Math.min(delay * 2, 2000);
      if (this.stopping) return;
      let path: string | null = null;
      if (RECONNECT_CODES.has(code) || code === 4000) {
        const t = await this.traffic.api<{ websocketUrl: string }>(
          'ticket',
          'POST',
          `/api/sessions/${this.sessionId}/ticket`,
          undefined,
          this.token,
        );
        if (t.status === 200) path = t.data.websocketUrl;
        else if (t.status === 401) await this.signIn();
        else if (t.status === 410 || t.status === 404) path = await this.connectSession();
      } else {
        path = await this.connectSession();
      }
      if (path === null) continue;
      if (this.stopping) return;
      if (await this.open(path)) {
        outage.toMs = this.traffic.now();
        this.onEvent({ kind: 'back', viewer: this.index, atMs: outage.toMs });
        return;
      }
      code = this.current?.closeCode ?? 1006;
    }
  }

  /** The byte-exact barrier on the live stream: resolves once the simulator's counts are in (bounded). */
  async barrier(timeoutMs: number): Promise<StreamRecord | null> {
    const rec = this.current;
    if (!this.streaming || rec === null) return null;
    this.viewer!.sendBarrier();
    const deadline = Date.now() + timeoutMs;
    while (rec.barrier === null && rec.closedAtMs === null && Date.now() < deadline) await sleep(50);
    return rec;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.markerTimer) clearInterval(this.markerTimer);
    this.ws?.close(1000);
    await this.reconnecting;
  }

  /**
   * Ends the session at the end of the run. The access token signed in at the start has expired in a
   * long run (15 min): a 401 signs in again and tries once more (the 30-minute run's 60 × 401).
   */
  async disconnect(): Promise<void> {
    if (this.sessionId === null) return;
    const end = () =>
      this.traffic.api(
        'disconnect',
        'POST',
        `/api/sessions/disconnect/${this.sessionId}`,
        undefined,
        this.token,
      );
    if ((await end()).status === 401 && (await this.signIn())) await end();
  }
}

/** One API worker: sign up → add an instance → connect → watch a few seconds → disconnect → sign in again. */
export async function apiWorker(
  index: number,
  traffic: Traffic,
  instance: Instance,
  password: string,
  stopped: () => boolean,
  stats: { loops: number; abandoned: number },
): Promise<void> {
  let n = 0;
  const retrying = async <T>(route: string, call: () => Promise<ApiAnswer<T>>, ok: number[]) => {
    for (let attempt = 0; attempt < 10 && !stopped(); attempt++) {
      const r = await call();
      if (ok.includes(r.status)) return r;
      // 503 (in doubt, or no store), 502/504 from the balancer, network: try again; anything else: give up.
      if (r.status !== 0 && r.status < 500 && r.status !== 429) return null;
      await sleep(1000);
    }
    return null;
  };
  while (!stopped()) {
    n++;
    const email = `soak-api-${index}-${n}-${Date.now().toString(36)}@example.test`;
    const reg = await traffic.api<{ user: { id: string }; accessToken: string }>(
      'register',
      'POST',
      '/api/auth/register',
      { email, password },
    );
    if (reg.status !== 201) {
      stats.abandoned++;
      await sleep(1000);
      continue;
    }
    traffic.ack('user', reg.data.user.id, email);
    let token = reg.data.accessToken;
    const inst = await traffic.api<{ id: string }>(
      'add-instance',
      'POST',
      '/api/instances',
      {
        name: `soak-api-${index}-${n}`,
        host: instance.host,
        port: instance.port,
        username: instance.username,
        auth: { type: 'privateKey', privateKey: instance.privateKey },
        hostKeyFingerprint: instance.hostKeyFingerprint,
      },
      token,
    );
    if (inst.status !== 201) {
      stats.abandoned++;
      continue;
    }
    traffic.ack('instance', inst.data.id, `owner:${email}`);
    const conn = await retrying(
      'connect',
      () =>
        traffic.api<{ sessionId: string; websocketUrl: string }>(
          'connect',
          'POST',
          '/api/sessions/connect',
          { instanceId: inst.data.id, desktopEnvironment: DESKTOP },
          token,
        ),
      [200, 201],
    );
    if (conn === null) {
      stats.abandoned++;
      continue;
    }
    traffic.ack('session', conn.data.sessionId, inst.data.id);
    // A short look at the desktop (to its first update), then away.
    await new Promise<void>((resolve) => {
      const ws = new WebSocket(traffic.baseUrl.replace(/^http/, 'ws') + conn.data.websocketUrl, ['binary'], {
        perMessageDeflate: false,
        handshakeTimeout: 15_000,
        headers: { Origin: traffic.baseUrl },
      });
      const done = () => {
        clearTimeout(timer);
        ws.terminate();
        resolve();
      };
      const timer = setTimeout(done, 15_000);
      const v = new BenchViewer({
        onFirstUpdate: () => setTimeout(done, 2000),
        onEcho: () => undefined,
        onBarrier: () => undefined,
        onProtocolError: done,
      });
      v.attach({
        send: (b) => ws.readyState === WebSocket.OPEN && ws.send(b),
        pause() {},
        resume() {},
        close: done,
      });
      ws.on('message', (d: Buffer) => v.onData(d));
      ws.on('error', () => undefined);
      ws.on('close', done);
    });
    const login = await retrying(
      'login',
      () => traffic.api<{ accessToken: string }>('login', 'POST', '/api/auth/login', { email, password }),
      [200],
    );
    if (login) token = login.data.accessToken;
    const end = await retrying(
      'disconnect',
      () =>
        traffic.api(
          'disconnect',
          'POST',
          `/api/sessions/disconnect/${conn.data.sessionId}`,
          undefined,
          token,
        ),
      [200, 204, 410],
    );
    // 410: already ended — by this very call answered 503 before (in doubt) and now done: counted as acked.
    if (end !== null) traffic.ack('end', conn.data.sessionId, inst.data.id);
    else stats.abandoned++;
    stats.loops++;
  }
}
