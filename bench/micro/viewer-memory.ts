// Memory per idle viewer (issue 9, docs/benchmarks.md §3b), measured on the gateway's real code paths: this
// process is the gateway (src/main.ts's startGateway, embedded SQLite, in-process coordination, the
// bench's settings), in front of a real OpenSSH sshd whose desktops are the bench's fake Xvnc and desktop
// simulator (the `still` profile: one 500-byte update every 10 s). The viewers are in a child process
// (viewer-memory-clients.ts): ticket → WebSocket upgrade → SSH streamlocal channel → relay + RFB parser,
// RFB handshake and noVNC's update requests, then left idle.
//
// At each step (viewers in total) the heap is collected (--expose-gc, several passes) and read:
// heapUsed, external, arrayBuffers, RSS. The per-viewer figure is the slope between the first and the
// last step, so what happens once (code compiled, pools made) is not charged to viewers. Heap snapshots
// at two steps are summed by constructor and diffed per viewer added: where the bytes go.
//
//   npm run bench:viewer-memory -- [--viewers 100,1000,3000] [--sessions 30] [--snapshots 100,1000]
//                                  [--gateway-env K=V ...] [--label NAME] [--keep-snapshots DIR]
//                                  [--source built|tsx] [--dist DIR]
// --source built (the default) runs dist/ (or --dist DIR): `npx tsc -p tsconfig.build.json` first.
// With --label, bench/results/NAME.json and NAME.md are written. Not a test.
import { fork } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import type * as ConfigModule from '../../src/config/config.js';
import type * as LoggerModule from '../../src/observability/logger.js';
import type * as MainModule from '../../src/main.js';
import type { Gateway } from '../../src/app.js';
import { TEST_SECRETS } from '../../test/helpers/test-secrets.js';
import { startSimulator, nextMessage, repoDir } from '../stacks/stack.js';
import { DISPLAY_MAX, DISPLAY_MIN, startBenchInstances } from '../stacks/clouddesk-stack.js';
import { onCleanup, stopChild, stopEverything, trackChild } from '../lib/process-registry.js';
import { diffHeapSummaries, summarizeHeapSnapshot, type HeapDiffRow } from '../lib/heap-snapshot.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc (npm run bench:viewer-memory)');

function parseArgs(argv: string[]) {
  const list = (v: string) => v.split(',').map((x) => Number(x.trim()));
  const o = {
    viewers: [100, 1000, 3000],
    sessions: 30,
    snapshots: [100, 1000],
    gatewayEnv: {} as Record<string, string>,
    label: null as string | null,
    keepSnapshots: null as string | null,
    settleMs: 3000,
    /** 'built': the gateway from dist/ (tsc's output, as `npm start` runs it); 'tsx': from src/ through tsx. */
    source: 'built' as 'built' | 'tsx',
    /** Where the built gateway is (another build, for an A/B within one sitting). */
    dist: join(repoDir, 'dist'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1] ?? '';
    if (a === '--viewers') o.viewers = list(v);
    else if (a === '--sessions') o.sessions = Number(v);
    else if (a === '--snapshots') o.snapshots = v === 'none' ? [] : list(v);
    else if (a === '--label') o.label = v;
    else if (a === '--keep-snapshots') o.keepSnapshots = v;
    else if (a === '--settle-ms') o.settleMs = Number(v);
    else if (a === '--dist') o.dist = v.startsWith('/') ? v : join(process.cwd(), v);
    else if (a === '--source') {
      if (v !== 'built' && v !== 'tsx') throw new Error('--source is built or tsx');
      o.source = v;
    } else if (a === '--gateway-env') {
      const eq = v.indexOf('=');
      if (eq < 1) throw new Error(`--gateway-env wants KEY=VALUE, got ${v}`);
      o.gatewayEnv[v.slice(0, eq)] = v.slice(eq + 1);
    } else throw new Error(`unknown option ${a}`);
    i++;
  }
  const bad = [...o.viewers, ...o.snapshots].some((n) => !Number.isInteger(n) || n < 0);
  if (bad || o.viewers.length < 2 || !(o.sessions >= 1))
    throw new Error('bad --viewers/--snapshots/--sessions');
  for (const s of o.snapshots)
    if (!o.viewers.includes(s)) throw new Error(`--snapshots ${s} is not one of --viewers`);
  o.viewers.sort((a, b) => a - b);
  return o;
}

interface Reading {
  viewers: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  rss: number;
  /** Viewers the gateway counts (its own view, checked against what the clients opened). */
  gatewayViewers: number;
}

const opts = parseArgs(process.argv.slice(2));
const startedAt = new Date();

async function collect(): Promise<void> {
  // Several passes with turns of the loop between them: weak callbacks and finalizers run in between.
  for (let i = 0; i < 4; i++) {
    gc!();
    await new Promise((r) => setImmediate(r));
  }
}

async function api<T>(
  gw: Gateway,
  method: 'GET' | 'POST',
  url: string,
  payload?: object,
  token?: string,
): Promise<{ status: number; body: T; retryAfter: number | null }> {
  for (let attempt = 0; ; attempt++) {
    const res = await gw.app.inject({
      method,
      url,
      ...(payload ? { payload } : {}),
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    // A start queue that is full answers OVERLOADED with Retry-After: come back then, as the client does.
    if (res.statusCode === 503 && attempt < 30) {
      const s = Number(res.headers['retry-after'] ?? 1);
      await new Promise((r) => setTimeout(r, Math.max(200, s * 1000)));
      continue;
    }
    return { status: res.statusCode, body: res.json<T>(), retryAfter: null };
  }
}

let sim: Awaited<ReturnType<typeof startSimulator>> | null = null;

/**
 * The gateway's modules, from dist/ or src/. Which matters: tsx compiles with esbuild's keepNames, which
 * names every arrow function by defineProperty, and that puts each one's properties in a dictionary of
 * its own — ~256 bytes per closure, a few KB per viewer that `npm start` (tsc's output) does not have.
 */
async function gatewayModules(): Promise<{
  loadConfig: typeof ConfigModule.loadConfig;
  createLogger: typeof LoggerModule.createLogger;
  startGateway: typeof MainModule.startGateway;
}> {
  const root = opts.source === 'built' ? join(opts.dist, 'src') : join(repoDir, 'src');
  const ext = opts.source === 'built' ? 'js' : 'ts';
  const main = join(root, `main.${ext}`);
  if (!existsSync(main)) throw new Error(`${main} is missing: npm run build (or --source tsx)`);
  const config = (await import(join(root, 'config', `config.${ext}`))) as typeof ConfigModule;
  const logger = (await import(join(root, 'observability', `logger.${ext}`))) as typeof LoggerModule;
  const entry = (await import(main)) as typeof MainModule;
  return {
    loadConfig: config.loadConfig,
    createLogger: logger.createLogger,
    startGateway: entry.startGateway,
  };
}

async function main(): Promise<void> {
  const { loadConfig, createLogger, startGateway } = await gatewayModules();
  sim = await startSimulator('still', 1);
  const instances = await startBenchInstances(sim, 1);
  onCleanup('instances', () => instances.stop());
  const sshd = instances.sshds[0]!.fixture;
  const dataDir = await mkdtemp(join(tmpdir(), 'clouddesk-viewer-memory-'));
  onCleanup('gateway data dir', () => rm(dataDir, { recursive: true, force: true }));
  // As the bench's gateway runs (bench/stacks/clouddesk-stack.ts), on a port of its own.
  const config = loadConfig({
    NODE_ENV: 'production',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    INSTANCE_ALLOWED_CIDRS: '127.0.0.0/8',
    RATE_LIMIT_MAX_REQUESTS: '10000000',
    WS_MAX_CONNECTS_PER_MINUTE: '1000000',
    AUTH_MAX_ATTEMPTS_PER_IP: '10000000',
    AUTH_MAX_FAILURES_PER_IP: '1000000',
    VNC_DISPLAY_MIN: String(DISPLAY_MIN),
    VNC_DISPLAY_MAX: String(DISPLAY_MAX),
    DESKTOP_TRANSPORT: 'unix',
    SESSION_MAX_KBPS: '0',
    SHUTDOWN_READY_GRACE_MS: '0',
    ...TEST_SECRETS,
    ...opts.gatewayEnv,
  });
  const logger = createLogger({ level: config.log.level }, process.stderr);
  const gw = await startGateway(config, logger);
  const stopGateway = onCleanup('gateway', () => gw.shutdown('bench done'));
  const base = `127.0.0.1:${(gw.app.server.address() as AddressInfo).port}`;
  const origin = `http://${base}`;

  // One account, instance and desktop per session; the viewers are spread over them evenly. At most 16
  // set up at once: a thousand sign-ups at once would only queue for the hash slot and the start queue.
  const sessions: { id: string; token: string }[] = [];
  const t0 = performance.now();
  let nextSetup = 0;
  await Promise.all(
    Array.from({ length: Math.min(16, opts.sessions) }, async () => {
      for (let i = nextSetup++; i < opts.sessions; i = nextSetup++) await setUp(i);
    }),
  );
  async function setUp(i: number): Promise<void> {
    const reg = await api<{ data: { accessToken: string } }>(gw, 'POST', '/api/auth/register', {
      email: `viewer-memory-${i}@example.com`,
      password: 'correct horse battery staple',
    });
    if (reg.status !== 201) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.body)}`);
    const token = reg.body.data.accessToken;
    const user = sshd.users[0]!;
    const inst = await api<{ data: { id: string } }>(
      gw,
      'POST',
      '/api/instances',
      {
        name: `memory ${i}`,
        host: sshd.host,
        port: sshd.port,
        username: user.username,
        auth: { type: 'privateKey', privateKey: user.privateKey },
        hostKeyFingerprint: sshd.hostKeyFingerprint,
      },
      token,
    );
    if (inst.status !== 201) throw new Error(`instance: ${inst.status} ${JSON.stringify(inst.body)}`);
    const conn = await api<{ data: { sessionId: string } }>(
      gw,
      'POST',
      '/api/sessions/connect',
      { instanceId: inst.body.data.id, desktopEnvironment: 'openbox' },
      token,
    );
    if (conn.status !== 201) throw new Error(`connect: ${conn.status} ${JSON.stringify(conn.body)}`);
    sessions.push({ id: conn.body.data.sessionId, token });
  }
  console.error(`${opts.sessions} desktops started in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const clients = trackChild(
    fork(fileURLToPath(new URL('./viewer-memory-clients.ts', import.meta.url)), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const stopClients = onCleanup('viewer clients', () => stopChild(clients));
  const isType =
    <T>(type: string) =>
    (m: unknown): m is T =>
      typeof m === 'object' && m !== null && (m as { type?: string }).type === type;
  await nextMessage(clients, isType('ready'), 30_000);

  const snapshotDir = opts.keepSnapshots ?? (await mkdtemp(join(tmpdir(), 'clouddesk-heap-')));
  if (opts.keepSnapshots) await mkdir(opts.keepSnapshots, { recursive: true });
  else onCleanup('heap snapshots', () => rm(snapshotDir, { recursive: true, force: true }));
  const snapshots = new Map<number, string>();
  const readings: Reading[] = [];
  let opened = 0;
  let failed = 0;
  let nextSession = 0;
  const failures: Record<string, number> = {};
  for (const target of opts.viewers) {
    const t1 = performance.now();
    while (opened < target) {
      // Tickets live 30 s: issue them a batch at a time, just before the batch is opened.
      const batch = Math.min(200, target - opened);
      const urls: string[] = [];
      for (let i = 0; i < batch; i++) {
        const s = sessions[nextSession++ % sessions.length]!;
        const t = await api<{ data: { websocketUrl: string } }>(
          gw,
          'POST',
          `/api/sessions/${s.id}/ticket`,
          undefined,
          s.token,
        );
        if (t.status !== 200) throw new Error(`ticket: ${t.status} ${JSON.stringify(t.body)}`);
        urls.push(`ws://${base}${t.body.data.websocketUrl}`);
      }
      const done = nextMessage<{
        ok: number;
        failed: number;
        failures: Record<string, number>;
      }>(clients, isType('opened'), 180_000);
      clients.send({ type: 'open', urls, origin });
      const r = await done;
      opened += r.ok;
      failed += r.failed;
      Object.assign(failures, r.failures);
      if (r.failed > 0 && r.ok === 0) throw new Error(`no viewer opened: ${JSON.stringify(r.failures)}`);
    }
    // Let the last viewers' first updates and lease writes settle, then read.
    await new Promise((r) => setTimeout(r, opts.settleMs));
    await collect();
    const m = process.memoryUsage();
    const reading: Reading = {
      viewers: opened,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
      rss: m.rss,
      gatewayViewers: gw.vnc.viewerCount,
    };
    readings.push(reading);
    console.error(
      `${opened} viewers (gateway: ${reading.gatewayViewers}) opened in ${((performance.now() - t1) / 1000).toFixed(1)} s: ` +
        `heap ${mb(m.heapUsed)} external ${mb(m.external)} (arrayBuffers ${mb(m.arrayBuffers)}) rss ${mb(m.rss)}`,
    );
    if (opts.snapshots.includes(target)) {
      const file = join(snapshotDir, `viewers-${target}.heapsnapshot`);
      writeHeapSnapshot(file);
      snapshots.set(target, file);
    }
  }

  clients.send({ type: 'stop' });
  await stopClients();
  await stopGateway();

  const first = readings[0]!;
  const last = readings.at(-1)!;
  const n = last.viewers - first.viewers;
  const per = (k: keyof Reading) => (last[k] - first[k]) / n;
  const perViewer = {
    heapUsed: per('heapUsed'),
    external: per('external'),
    arrayBuffers: per('arrayBuffers'),
    heapPlusExternal: per('heapUsed') + per('external'),
    rss: per('rss'),
  };
  let breakdown: { from: number; to: number; rows: HeapDiffRow[] } | null = null;
  if (snapshots.size >= 2) {
    const [from, to] = [...snapshots.keys()].sort((a, b) => a - b) as [number, number];
    const a = summarizeHeapSnapshot(snapshots.get(from)!);
    const b = summarizeHeapSnapshot(snapshots.get(to)!);
    const fromViewers = readings.find((r) => r.viewers >= from)!.viewers;
    const toViewers = readings.find((r) => r.viewers >= to)!.viewers;
    breakdown = {
      from: fromViewers,
      to: toViewers,
      rows: diffHeapSummaries(a, b, toViewers - fromViewers),
    };
  }

  const report = markdown(readings, perViewer, breakdown, failed, failures);
  console.log(report);
  if (opts.label) {
    const out = join(repoDir, 'bench', 'results', opts.label);
    const result = {
      startedAt: startedAt.toISOString(),
      command: `npm run bench:viewer-memory -- ${process.argv.slice(2).join(' ')}`,
      sessions: opts.sessions,
      source: opts.source,
      readings,
      perViewer,
      breakdown,
      failed,
      failures,
    };
    await writeFile(`${out}.json`, `${JSON.stringify(result, null, 2)}\n`);
    await writeFile(`${out}.md`, report);
    console.error(`wrote ${out}.json and ${out}.md`);
  }
}

function mb(b: number): string {
  return `${(b / 1048576).toFixed(1)} MB`;
}

function kb(b: number): string {
  return `${(b / 1024).toFixed(2)} KB`;
}

function markdown(
  readings: Reading[],
  perViewer: Record<string, number>,
  breakdown: { from: number; to: number; rows: HeapDiffRow[] } | null,
  failed: number,
  failures: Record<string, number>,
): string {
  const lines = [
    `# Memory per idle viewer (${startedAt.toISOString()})`,
    '',
    `\`npm run bench:viewer-memory -- ${process.argv.slice(2).join(' ')}\` — gateway from ${opts.source === 'built' ? 'dist/ (tsc)' : 'src/ through tsx'}, ${opts.sessions} sessions, viewers spread evenly; ` +
      `${failed} viewers failed to open${failed > 0 ? ` (${JSON.stringify(failures)})` : ''}.`,
    '',
    '| viewers | heap used | external | of which array buffers | RSS |',
    '|---:|---:|---:|---:|---:|',
    ...readings.map(
      (r) =>
        `| ${r.viewers} | ${mb(r.heapUsed)} | ${mb(r.external)} | ${mb(r.arrayBuffers)} | ${mb(r.rss)} |`,
    ),
    '',
    `Per viewer (slope ${readings[0]!.viewers} → ${readings.at(-1)!.viewers}): heap ${kb(perViewer.heapUsed!)}, ` +
      `external ${kb(perViewer.external!)} (array buffers ${kb(perViewer.arrayBuffers!)}), ` +
      `**heap + external ${kb(perViewer.heapPlusExternal!)}**, RSS ${kb(perViewer.rss!)}.`,
  ];
  if (breakdown) {
    lines.push(
      '',
      `Heap snapshot diff ${breakdown.from} → ${breakdown.to} viewers, self size per viewer added (largest first):`,
      '',
      '| what | objects per viewer | bytes per viewer |',
      '|---|---:|---:|',
      ...breakdown.rows
        .slice(0, 40)
        .map(
          (r) => `| ${r.key.replace(/\|/g, '\\|')} | ${r.countPer.toFixed(2)} | ${r.bytesPer.toFixed(0)} |`,
        ),
      '',
      `Sum of all rows: ${breakdown.rows.reduce((s, r) => s + r.bytesPer, 0).toFixed(0)} bytes per viewer.`,
    );
  }
  return `${lines.join('\n')}\n`;
}

void main()
  .then(
    () => 0,
    (e: unknown) => {
      console.error(e);
      return 1;
    },
  )
  .then(async (code) => {
    await stopEverything();
    await sim?.stop();
    process.exit(code);
  });
