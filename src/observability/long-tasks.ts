// What kept the event loop busy (issue 9, "the relay never waits behind the control plane"). The relay
// shares its loop with every login, connect, SQLite call and JSON body: when a viewer's bytes wait, this
// module says behind what. It reads a V8 CPU profile (the gateway's own `--cpu-prof` file, or a window
// the gateway sampled of itself, LOOP_LONG_TASK_MS): a *long task* is a run of consecutive busy samples
// (anything but `(idle)`) longer than a threshold, i.e. a stretch in which the loop could not serve a
// socket. Each sample is put in one category by its innermost recognised frame (SQLite, argon2, JSON,
// the desktop scripts, ssh2, ws…); a task is named by the category it spent most time in and by the
// innermost gateway function (`src/…`) seen most often in it (the route or service that ran).
//
// Sampling in-process (LongTaskMonitor) uses the inspector's profiler in windows: it costs one stop and
// start per window (serialising the window's profile on the main thread, itself reported as a task),
// so it is off unless asked for.
import { Session } from 'node:inspector';

/** The parts of a V8 `.cpuprofile` this module reads. Times are microseconds. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber?: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface LongTask {
  /** Start, microseconds on the profile's (monotonic) clock. */
  startUs: number;
  ms: number;
  /** The category the task spent most time in. */
  kind: string;
  /** The innermost gateway function (file:function) seen most often in the task, or '-'. */
  where: string;
  /** Milliseconds per category, largest first. */
  parts: [string, number][];
}

export interface LongTaskSummary {
  kind: string;
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  totalMs: number;
  /** The `where` seen most often among these tasks, with its count. */
  topWhere: string;
}

export interface LongTaskOptions {
  /** A task is long past this many milliseconds. */
  overMs: number;
  /** Only tasks that start within [fromUs, toUs) on the profile's clock (e.g. a benchmark's hold). */
  fromUs?: number;
  toUs?: number;
}

interface Frame {
  functionName: string;
  url: string;
}

// Innermost match wins; the order only matters for frames that would match twice.
const RULES: [string, (f: Frame) => boolean][] = [
  ['sqlite', (f) => f.url.includes('/better-sqlite3/') || /kysely\/.*sqlite/.test(f.url)],
  ['argon2', (f) => f.url.includes('/argon2')],
  // JSON.parse/stringify are builtins V8 does not sample as frames of their own: their time shows in
  // the caller, so JSON is only seen where a library does it (request bodies, serialisers).
  [
    'json',
    (f) => /\/node_modules\/(secure-json-parse|fast-json-stringify|safe-stable-stringify)\//.test(f.url),
  ],
  [
    'socket writes',
    (f) => f.url === '' && /^(writev|writeBuffer|write\w*String|writeGeneric)$/.test(f.functionName),
  ],
  ['desktop scripts', (f) => /\/src\/desktop\//.test(f.url)],
  ['ssh2', (f) => f.url.includes('/node_modules/ssh2/')],
  ['ws', (f) => f.url.includes('/node_modules/ws/')],
  ['relay', (f) => /\/src\/(relay|rfb)\//.test(f.url)],
  ['ssh pool', (f) => /\/src\/ssh\//.test(f.url)],
  ['logging', (f) => /\/node_modules\/(pino|thread-stream|sonic-boom)/.test(f.url)],
  ['jwt', (f) => f.url.includes('/node_modules/jose/')],
  ['long-task profiler', (f) => f.url.includes('/src/observability/long-tasks.')],
  ['metrics', (f) => f.url.includes('/node_modules/prom-client/') || f.url.includes('/src/observability/')],
  ['kysely', (f) => f.url.includes('/node_modules/kysely/')],
  ['pg', (f) => /\/node_modules\/(pg|pg-protocol|pg-pool)\//.test(f.url)],
  ['redis', (f) => f.url.includes('/node_modules/ioredis/')],
  ['fastify', (f) => /\/node_modules\/(fastify|@fastify|find-my-way|avvio|light-my-request|ajv)/.test(f.url)],
  [
    'module loading',
    (f) => /\/node_modules\/(tsx|esbuild)\//.test(f.url) || f.url.startsWith('node:internal/modules'),
  ],
  ['gc', (f) => f.functionName === '(garbage collector)'],
];

function gatewayFunction(f: Frame): string | null {
  const m = /\/src\/(.+?\.[jt]s)$/.exec(f.url);
  if (!m || m[1]!.startsWith('observability/')) return null;
  return `${m[1]}:${f.functionName || '(anonymous)'}`;
}

function categoryOf(stack: Frame[]): string {
  for (const f of stack) for (const [name, test] of RULES) if (test(f)) return name;
  for (const f of stack) {
    const m = /\/src\/([^/]+)\//.exec(f.url);
    if (m) return `src/${m[1]}`;
  }
  const leaf = stack[0];
  if (leaf?.functionName === '(program)') return 'native (program)';
  if (stack.some((f) => f.url.startsWith('node:'))) return 'node internals';
  return 'other';
}

/** The long tasks of one profile, in order. */
export function findLongTasks(profile: CpuProfile, options: LongTaskOptions): LongTask[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Category and gateway function per profile node (many samples share a node).
  const memo = new Map<number, { idle: boolean; category: string; where: string | null }>();
  const describe = (id: number) => {
    let d = memo.get(id);
    if (d) return d;
    const stack: Frame[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at);
      if (n) stack.push(n.callFrame);
    }
    const leaf = stack[0];
    let where: string | null = null;
    for (const f of stack) if ((where = gatewayFunction(f)) !== null) break;
    d = { idle: leaf?.functionName === '(idle)', category: categoryOf(stack), where };
    memo.set(id, d);
    return d;
  };

  const tasks: LongTask[] = [];
  const from = options.fromUs ?? -Infinity;
  const to = options.toUs ?? Infinity;
  let t = profile.startTime;
  let run: { startUs: number; us: number; parts: Map<string, number>; wheres: Map<string, number> } | null =
    null;
  const close = () => {
    if (run && run.us / 1000 > options.overMs && run.startUs >= from && run.startUs < to) {
      const parts = [...run.parts]
        .sort((a, b) => b[1] - a[1])
        .map(([k, us]): [string, number] => [k, us / 1000]);
      const where = [...run.wheres].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '-';
      tasks.push({ startUs: run.startUs, ms: run.us / 1000, kind: parts[0]![0], where, parts });
    }
    run = null;
  };
  const n = profile.samples.length;
  for (let i = 0; i < n; i++) {
    t += profile.timeDeltas[i] ?? 0;
    // A sample stands for the time until the next one.
    const us = i + 1 < n ? (profile.timeDeltas[i + 1] ?? 0) : 0;
    const d = describe(profile.samples[i]!);
    if (d.idle) {
      close();
      continue;
    }
    run ??= { startUs: t, us: 0, parts: new Map(), wheres: new Map() };
    run.us += us;
    run.parts.set(d.category, (run.parts.get(d.category) ?? 0) + us);
    if (d.where !== null) run.wheres.set(d.where, (run.wheres.get(d.where) ?? 0) + us);
  }
  close();
  return tasks;
}

/** Milliseconds of busy (not `(idle)`) samples within [fromUs, toUs) of a profile. */
export function busyMs(profile: CpuProfile, fromUs = -Infinity, toUs = Infinity): number {
  const idle = new Set(profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
  let t = profile.startTime;
  let us = 0;
  const n = profile.samples.length;
  for (let i = 0; i < n; i++) {
    t += profile.timeDeltas[i] ?? 0;
    if (t < fromUs || t >= toUs || idle.has(profile.samples[i]!)) continue;
    us += i + 1 < n ? (profile.timeDeltas[i + 1] ?? 0) : 0;
  }
  return us / 1000;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * Time inside long tasks by category, over all of them (a task under saturation is many callbacks run
 * back to back, so this says what the blocked time was spent on even where no one kind dominates).
 */
export function longTaskTimeByCategory(tasks: LongTask[]): [string, number][] {
  const totals = new Map<string, number>();
  for (const t of tasks) for (const [k, v] of t.parts) totals.set(k, (totals.get(k) ?? 0) + v);
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/** Long tasks grouped by kind, the kinds with the most blocked time first. */
export function summarizeLongTasks(tasks: LongTask[]): LongTaskSummary[] {
  const groups = new Map<string, LongTask[]>();
  for (const task of tasks) {
    const list = groups.get(task.kind) ?? [];
    list.push(task);
    groups.set(task.kind, list);
  }
  return [...groups]
    .map(([kind, list]) => {
      const ms = list.map((x) => x.ms).sort((a, b) => a - b);
      const wheres = new Map<string, number>();
      for (const x of list) wheres.set(x.where, (wheres.get(x.where) ?? 0) + 1);
      const [topWhere, topCount] = [...wheres].sort((a, b) => b[1] - a[1])[0]!;
      return {
        kind,
        count: list.length,
        p50Ms: percentile(ms, 50),
        p99Ms: percentile(ms, 99),
        maxMs: ms[ms.length - 1]!,
        totalMs: ms.reduce((a, b) => a + b, 0),
        topWhere: `${topWhere} (${topCount})`,
      };
    })
    .sort((a, b) => b.totalMs - a.totalMs);
}

export interface LongTaskMonitorOptions {
  overMs: number;
  /** How long each profiled window lasts before it is analysed. */
  windowMs: number;
  /** Sampling interval of the profiler, microseconds (V8's default is 1000). */
  samplingIntervalUs?: number;
  onWindow(tasks: LongTask[]): void;
  onError?(err: unknown): void;
}

/**
 * The gateway profiling itself (LOOP_LONG_TASK_MS): the inspector's sampling profiler in windows of
 * `windowMs`, each analysed for long tasks when it ends. Same-thread inspector calls answer at once.
 */
export class LongTaskMonitor {
  private session: Session | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly options: LongTaskMonitorOptions) {}

  start(): void {
    if (this.session) return;
    const session = new Session();
    session.connect();
    this.session = session;
    session.post('Profiler.enable');
    session.post('Profiler.setSamplingInterval', { interval: this.options.samplingIntervalUs ?? 1000 });
    session.post('Profiler.start');
    this.timer = setInterval(() => this.rotate(), this.options.windowMs);
    this.timer.unref();
  }

  private rotate(): void {
    const session = this.session;
    if (!session) return;
    session.post('Profiler.stop', (err, result) => {
      if (this.session !== session) return;
      session.post('Profiler.start');
      if (err) {
        this.options.onError?.(err);
        return;
      }
      try {
        this.options.onWindow(
          findLongTasks(result.profile as unknown as CpuProfile, { overMs: this.options.overMs }),
        );
      } catch (e) {
        this.options.onError?.(e);
      }
    });
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const session = this.session;
    this.session = null;
    if (!session) return;
    session.post('Profiler.stop', () => session.disconnect());
  }
}
