// One measured step: a fresh simulator and stack, N virtual users ramped in, held and measured, then
// (optionally) some viewers stalled, then a byte-exact barrier, then everything closed and stopped.
// The harness drives the load generators phase by phase (load-plan.ts) and samples the stack's
// processes from /proc at the edges of the hold window, so CPU and memory are the stack's alone.
import type { ChildProcess } from 'node:child_process';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import {
  busyMs,
  findLongTasks,
  longTaskTimeByCategory,
  summarizeLongTasks,
  type CpuProfile,
} from '../../src/observability/long-tasks.js';
import type { ControlLoadCommand, ControlLoadReply, ControlLoadReport } from '../load/control-load.js';
import { Histogram, type HistogramJson } from './histogram.js';
import { affinityOf, coreUseBetween, readTicks } from './pinning.js';
import { cpuBetween, sampleGroup, type GroupSample, type ProcessGroup } from './proc-stats.js';
import { stopChild } from './process-registry.js';
import type { BenchOptions } from './options.js';
import type {
  BarrierReport,
  CloseReport,
  ErrorCounts,
  StallReport,
  WindowReport,
  WorkerCommand,
  WorkerPlan,
  WorkerReply,
} from '../load/load-plan.js';
import type { StepResult } from '../report/result.js';
import { clouddeskStack } from '../stacks/clouddesk-stack.js';
import { directStack } from '../stacks/direct-stack.js';
import { bareStack } from '../stacks/bare-stack.js';
import { diyStack } from '../stacks/diy-stack.js';
import {
  benchDir,
  repoDir,
  forkTs,
  nextMessage,
  startSimulator,
  type GatewayMetrics,
  type RunningStack,
  type StackName,
} from '../stacks/stack.js';

const PASSWORD = 'bench-password-123456';
const GB = 1e9;

type Log = (line: string) => void;

function isReply<K extends WorkerReply['reply']>(kind: K) {
  return (m: unknown): m is Extract<WorkerReply, { reply: K }> | Extract<WorkerReply, { reply: 'error' }> =>
    typeof m === 'object' &&
    m !== null &&
    ((m as { reply?: string }).reply === kind || (m as { reply?: string }).reply === 'error');
}

/** Sends a command to every load worker and collects their answers (bounded). */
async function all<K extends WorkerReply['reply']>(
  workers: ChildProcess[],
  command: WorkerCommand | ((i: number) => WorkerCommand),
  kind: K,
  timeoutMs: number,
): Promise<Extract<WorkerReply, { reply: K }>[]> {
  const answers = workers.map((w) => nextMessage(w, isReply(kind), timeoutMs));
  workers.forEach((w, i) => w.send(typeof command === 'function' ? command(i) : command));
  const replies = await Promise.all(answers);
  for (const r of replies as WorkerReply[])
    if (r.reply === 'error') throw new Error(`load worker failed: ${r.message}`);
  return replies as Extract<WorkerReply, { reply: K }>[];
}

function isControlReply<K extends ControlLoadReply['reply']>(kind: K) {
  return (m: unknown): m is Extract<ControlLoadReply, { reply: K | 'error' }> =>
    typeof m === 'object' &&
    m !== null &&
    ((m as { reply?: string }).reply === kind || (m as { reply?: string }).reply === 'error');
}

function mergeCounts(into: ErrorCounts, from: ErrorCounts): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

function mergeHist(list: HistogramJson[]): Histogram {
  const h = new Histogram();
  for (const j of list) h.merge(j);
  return h;
}

async function probeLoop(url: string, stopAt: () => boolean): Promise<Histogram> {
  const h = new Histogram();
  for (let i = 0; !stopAt() && i < 100_000; i++) {
    const t = performance.now();
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      await res.arrayBuffer();
      h.record(performance.now() - t);
    } catch {
      // a failed probe shows up as a gap; errors are counted by the load generators
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return h;
}

/** Samples RSS of a group every second until stopped; returns the peak. */
function peakRss(group: ProcessGroup): { stop(): number } {
  let peak = sampleGroup(group).rss;
  const timer = setInterval(() => {
    peak = Math.max(peak, sampleGroup(group).rss);
  }, 1000);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, sampleGroup(group).rss);
    },
  };
}

/** The hold window on the monotonic clock V8's CPU profiles use (µs), for the long-task analysis. */
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

export async function runStep(
  stackName: StackName,
  users: number,
  o: BenchOptions,
  log: Log,
): Promise<StepResult> {
  const hold: Hold = { fromUs: 0, toUs: 0, profDir: null };
  const result = await measureStep(stackName, users, o, log, hold);
  // The gateway writes its profile as it exits, so it is read once the stack has stopped.
  if (hold.profDir !== null) {
    const dir = hold.profDir;
    result.cpuProfiles = (await readdir(dir))
      .filter((f) => f.endsWith('.cpuprofile'))
      .map((f) => join(dir, f));
    if (stackName === 'clouddesk') result.longTasks = await longTasksOf(result.cpuProfiles, o, hold);
  }
  return result;
}

interface Hold {
  fromUs: number;
  toUs: number;
  profDir: string | null;
}

async function longTasksOf(files: string[], o: BenchOptions, hold: Hold): Promise<StepResult['longTasks']> {
  const out: StepResult['longTasks'] = [];
  for (const file of [...files].sort()) {
    try {
      const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
      const tasks = findLongTasks(profile, { overMs: o.longTaskMs, fromUs: hold.fromUs, toUs: hold.toUs });
      const busy = busyMs(profile, hold.fromUs, hold.toUs);
      if (busy === 0) continue; // a thread with nothing to do in the hold (tsx's loader thread)
      out.push({
        profile: relative(repoDir, file),
        overMs: o.longTaskMs,
        windowSeconds: (hold.toUs - hold.fromUs) / 1e6,
        busySeconds: busy / 1000,
        summary: summarizeLongTasks(tasks),
        timeByCategoryMs: longTaskTimeByCategory(tasks),
      });
    } catch {
      // a profile cut short (the process was killed): nothing to read
    }
  }
  return out;
}

async function measureStep(
  stackName: StackName,
  users: number,
  o: BenchOptions,
  log: Log,
  hold: Hold,
): Promise<StepResult> {
  const notes: string[] = [];
  const sim = await startSimulator(o.profile, o.seed, o.desktopLink);
  let stack: RunningStack | null = null;
  const workers: ChildProcess[] = [];
  let control: ChildProcess | null = null;
  const profDir = o.cpuProf ? resolve(o.outDir, 'profiles', `${stackName}-${users}-${Date.now()}`) : null;
  hold.profDir = profDir;
  try {
    if (profDir) await mkdir(profDir, { recursive: true });
    switch (stackName) {
      case 'direct':
        stack = directStack(sim);
        break;
      case 'diy':
        stack = await diyStack(sim, o.pin);
        break;
      case 'bare':
        stack = await bareStack(sim, o.pin);
        break;
      case 'clouddesk':
        stack = await clouddeskStack(sim, {
          workers: o.workers,
          instances: o.instances,
          store: o.store,
          redis: o.redis,
          cpuProf: profDir,
          // K users of one account hold K sessions: the per-user limit (default 5) must let them.
          env: {
            ...(o.sessionsPerAccount > 5 ? { MAX_SESSIONS_PER_USER: String(o.sessionsPerAccount) } : {}),
            ...o.gatewayEnv,
          },
          pin: o.pin,
          controlProcess: o.controlProcess,
          roles: o.roles,
        });
        break;
    }
    log(`  ${stackName}: stack up (${stack.accounting})`);

    // Load generators, each with its share of users (user i goes to worker i mod n; with several users
    // per account, the account's users go to one worker together, account a to worker a mod n).
    const perAccount = stackName === 'clouddesk' ? o.sessionsPerAccount : 1;
    const accountOf = (i: number) => Math.floor(i / perAccount);
    const n = Math.min(o.loadWorkers, Math.ceil(users / perAccount));
    if (perAccount > 1)
      notes.push(
        `${perAccount} users per account: each account signs in once and its users (tabs) share that sign-in; each user has its own instance, session and desktop`,
      );
    const stallEvery = o.stall > 0 ? users / Math.min(o.stall, users) : 0;
    const runId = Date.now().toString(36);
    const loadProf = o.loadCpuProf
      ? resolve(o.outDir, 'profiles', `load-${stackName}-${users}-${Date.now()}`)
      : null;
    if (loadProf) await mkdir(loadProf, { recursive: true });
    for (let w = 0; w < n; w++)
      workers.push(
        forkTs(
          `${benchDir}load/load-worker.ts`,
          [],
          loadProf ? ['--cpu-prof', `--cpu-prof-dir=${loadProf}`] : [],
        ),
      );
    const plans: WorkerPlan[] = workers.map((_, w) => ({
      target: stack!.target,
      users: Array.from({ length: users }, (_, i) => i)
        .filter((i) => accountOf(i) % n === w)
        .map((i) => ({
          index: i,
          email: `bench-${runId}-${accountOf(i)}@bench.invalid`,
          stall: stallEvery > 0 && Math.floor(i % stallEvery) === 0 && i / stallEvery < o.stall,
        })),
      totalUsers: users,
      password: PASSWORD,
      rampMs: o.rampSeconds * 1000,
      echoIntervalMs: o.echoIntervalMs,
      setupTimeoutMs: o.setupTimeoutSeconds * 1000,
    }));
    // --mixed: the control-plane load's own process and accounts, made before the measured part.
    const target = stack.target;
    const controlReady =
      o.mixed && target.kind === 'clouddesk'
        ? (async () => {
            control = forkTs(`${benchDir}load/control-load.ts`, []);
            const c = control;
            const answer = nextMessage(c, isControlReply('prepare'), 600_000);
            c.send({
              cmd: 'prepare',
              plan: {
                baseUrl: target.controlBaseUrl ?? target.baseUrl,
                instances: target.instances,
                desktopEnvironment: target.desktopEnvironment,
                password: PASSWORD,
                runId,
                signInAccounts: 40,
                connectAccounts: 40,
              },
            } satisfies ControlLoadCommand);
            const r = await answer;
            if (r.reply === 'error') throw new Error(`control load failed: ${r.message}`);
            if (r.prepared < 80)
              notes.push(`control load: only ${r.prepared} of 80 accounts could be prepared`);
          })()
        : Promise.resolve();
    const prepared = await all(workers, (i) => ({ cmd: 'prepare', plan: plans[i]! }), 'prepare', 600_000);
    await controlReady;
    const preparedCount = prepared.reduce((a, r) => a + r.prepared, 0);
    if (preparedCount < users) notes.push(`only ${preparedCount} of ${users} users could be prepared`);

    // Memory before any session: the baseline per-session RSS is measured against.
    const rssBefore = sampleGroup(stack.gateway).rss;
    log(`  ${stackName}: ${users} users ramping over ${o.rampSeconds}s`);
    const rampTimeout = o.rampSeconds * 1000 + o.setupTimeoutSeconds * 1000 + 120_000;
    const ramped = await all(workers, { cmd: 'ramp', startAt: Date.now() + 500 }, 'ramp', rampTimeout);
    const ramp = ramped.map((r) => r.report);
    const ready = ramp.reduce((a, r) => a + r.ready, 0);
    log(`  ${stackName}: ${ready}/${users} sessions streaming; holding ${o.holdSeconds}s`);

    // The hold window: CPU, bytes, latency and memory of the steady state.
    // Also resets the gateway's per-scrape event-loop figures.
    const metricsBefore = (await stack.gatewayMetrics?.()) ?? null;
    await stack.controlMetrics?.();
    const groups = { gateway: stack.gateway, sshd: stack.sshd, sim: sim.group };
    const loadGroup: ProcessGroup = { name: 'load', pids: () => workers.map((w) => w.pid ?? 0) };
    const harnessGroup: ProcessGroup = { name: 'harness', pids: () => [process.pid] };
    const desktops = stack.desktops ?? null;
    await all(workers, { cmd: 'window-start' }, 'window-start', 30_000);
    if (control !== null && o.mixed) {
      const c: ChildProcess = control;
      const answer = nextMessage(c, isControlReply('start'), 30_000);
      c.send({ cmd: 'start', ...o.mixed } satisfies ControlLoadCommand);
      await answer;
    }
    hold.fromUs = monotonicUs();
    const ticksA = readTicks();
    const a: Record<string, GroupSample | null> = {
      gateway: sampleGroup(groups.gateway),
      sshd: groups.sshd ? sampleGroup(groups.sshd) : null,
      sim: sampleGroup(groups.sim),
      load: sampleGroup(loadGroup),
      desktops: desktops ? sampleGroup(desktops) : null,
      harness: sampleGroup(harnessGroup),
    };
    const peak = peakRss(stack.gateway);
    let holding = true;
    const probe = stack.probeUrl ? probeLoop(stack.probeUrl, () => !holding) : null;
    await new Promise((r) => setTimeout(r, o.holdSeconds * 1000));
    holding = false;
    hold.toUs = monotonicUs();
    const b: Record<string, GroupSample | null> = {
      gateway: sampleGroup(groups.gateway),
      sshd: groups.sshd ? sampleGroup(groups.sshd) : null,
      sim: sampleGroup(groups.sim),
      load: sampleGroup(loadGroup),
      desktops: desktops ? sampleGroup(desktops) : null,
      harness: sampleGroup(harnessGroup),
    };
    const ticksB = readTicks();
    // Where each group ran (its main thread's affinity), read while everything is up.
    const firstPid = (g: ProcessGroup | null) => (g ? (g.pids()[0] ?? null) : null);
    const affinity: Record<string, string | null> = {};
    for (const [name, g] of [
      ['gateway', groups.gateway],
      ['sshd', groups.sshd],
      ['simulator', groups.sim],
      ['load', loadGroup],
      ['desktops', desktops],
      ['harness', harnessGroup],
    ] as const) {
      const pid = firstPid(g);
      if (pid !== null) affinity[name] = affinityOf(pid);
    }
    const windows = (await all(workers, { cmd: 'window-end' }, 'window-end', 30_000)).map((r) => r.report);
    let controlPlane: ControlLoadReport | null = null;
    if (control !== null) {
      const c: ChildProcess = control;
      const answer = nextMessage(c, isControlReply('stop'), 90_000);
      c.send({ cmd: 'stop' } satisfies ControlLoadCommand);
      const r = await answer;
      if (r.reply === 'error') throw new Error(`control load failed: ${r.message}`);
      if (r.reply === 'stop') controlPlane = r.report;
    }
    const rssPeak = peak.stop();
    const metrics: GatewayMetrics | null = (await stack.gatewayMetrics?.()) ?? null;
    if (metricsBefore && metrics)
      notes.push(`gateway garbage collection in the hold: ${gcInHold(metricsBefore, metrics)}`);
    const controlMetrics = (await stack.controlMetrics?.()) ?? null;
    if (controlMetrics)
      notes.push(
        `${o.roles ? 'api process (--roles)' : 'control process (--control-process)'}: event-loop lag p99 ${controlMetrics.eventLoopLagP99Ms?.toFixed(1) ?? '–'} ms, max ${controlMetrics.eventLoopLagMaxMs?.toFixed(1) ?? '–'} ms in the hold; the gateway's loop lag is the relay process's alone`,
      );
    const probeHist = probe ? await probe : null;

    // Stalled viewers: they stop reading; what does that cost the gateway while they stay stalled?
    let stalled: StepResult['memory']['stalled'] = null;
    if (o.stall > 0) {
      const before = sampleGroup(stack.gateway).rss;
      const stalledCount = (await all(workers, { cmd: 'stall' }, 'stall', 30_000)).reduce(
        (x, r) => x + r.stalled,
        0,
      );
      log(`  ${stackName}: ${stalledCount} viewers stalled for ${o.stallSeconds}s`);
      const stallPeak = peakRss(stack.gateway);
      await new Promise((r) => setTimeout(r, o.stallSeconds * 1000));
      const peakBytes = stallPeak.stop();
      const un: StallReport[] = (await all(workers, { cmd: 'unstall' }, 'unstall', 30_000)).map(
        (r) => r.report,
      );
      stalled = {
        viewers: stalledCount,
        seconds: o.stallSeconds,
        rssBeforeBytes: before,
        rssPeakBytes: peakBytes,
        perStalledSessionBytes: stalledCount > 0 ? Math.max(0, peakBytes - before) / stalledCount : null,
        closedWhileStalled: un.reduce((x, r) => x + r.closedWhileStalled, 0),
      };
    }

    const barriers: BarrierReport[] = (
      await all(workers, { cmd: 'barrier', timeoutMs: 60_000 }, 'barrier', 90_000)
    ).map((r) => r.report);
    const closes: CloseReport[] = (await all(workers, { cmd: 'close' }, 'close', 600_000)).map(
      (r) => r.report,
    );
    const simStats = await sim.stats();

    const windowMs = windows.reduce((x, w) => Math.max(x, w.ms), 0);
    const seconds = windowMs / 1000;
    const toViewers = windows.reduce((x, w) => x + w.bytesIn, 0);
    const fromViewers = windows.reduce((x, w) => x + w.bytesOut, 0);
    const relayed = toViewers + fromViewers;
    const live = windows.reduce((x, w) => x + w.live, 0);
    const cpu = (k: string) => {
      const s0 = a[k];
      const s1 = b[k];
      return s0 && s1 ? cpuBetween(s0, s1) : null;
    };
    const gatewaySeconds = cpu('gateway') ?? 0;
    const sshdSeconds = cpu('sshd');

    const bytes: BarrierReport = barriers.reduce(
      (x, r) => ({
        live: x.live + r.live,
        exact: x.exact + r.exact,
        mismatched: x.mismatched + r.mismatched,
        timedOut: x.timedOut + r.timedOut,
        bytesIn: x.bytesIn + r.bytesIn,
        bytesOut: x.bytesOut + r.bytesOut,
        serverSent: x.serverSent + r.serverSent,
        firstMismatch: x.firstMismatch ?? r.firstMismatch,
      }),
      {
        live: 0,
        exact: 0,
        mismatched: 0,
        timedOut: 0,
        bytesIn: 0,
        bytesOut: 0,
        serverSent: 0,
        firstMismatch: null,
      },
    );

    // A worker's error counters are cumulative: its close report holds the whole run's.
    const closeCodes: ErrorCounts = {};
    const finalErrors: ErrorCounts = {};
    for (const c of closes) mergeCounts(closeCodes, c.closeCodes);
    for (const c of closes) mergeCounts(finalErrors, c.errors);

    const attempted = ramp.reduce((x, r) => x + r.attempted, 0);
    const failed = ramp.reduce((x, r) => x + r.failed, 0);
    const dropped = closes.reduce((x, c) => x + c.droppedDuringRun, 0);
    const disconnectErrors = Object.entries(finalErrors)
      .filter(([k]) => k.startsWith('disconnect:'))
      .reduce((x, [, v]) => x + v, 0);
    const stalledClosed = stalled?.closedWhileStalled ?? 0;
    const errorCount =
      failed + Math.max(0, dropped - stalledClosed) + bytes.mismatched + bytes.timedOut + disconnectErrors;
    const wsAttempts = ramp.reduce((x, r) => x + r.wsAttempts, 0);
    const httpRequests = closes.reduce((x, c) => x + c.httpRequests, 0);
    const httpErrors = closes.reduce((x, c) => x + c.httpErrors, 0);
    const httpNames = new Set(closes.flatMap((c) => Object.keys(c.http)));
    const loadSeconds = closes.reduce((x, c) => x + c.cpuSeconds, 0);

    const profiles_ = profDir ? (await readdir(profDir)).map((f) => join(profDir, f)) : [];
    const result: StepResult = {
      stack: stackName,
      users,
      profile: o.profile,
      rampSeconds: o.rampSeconds,
      holdSeconds: o.holdSeconds,
      accounting: stack.accounting,
      sessions: { attempted, ready, failed, liveAtWindowEnd: live, droppedDuringRun: dropped },
      errorRate: attempted > 0 ? errorCount / attempted : 0,
      wsSuccessRate: wsAttempts > 0 ? ready / wsAttempts : attempted > 0 ? ready / attempted : 0,
      errors: finalErrors,
      closeCodes,
      setupMs: mergeHist(ramp.map((r) => r.setup)).summary(),
      rttMs: mergeHist(windows.map((w: WindowReport) => w.rtt)).summary(),
      addedRttMs: null,
      httpMs: Object.fromEntries(
        [...httpNames].map((k) => [
          k,
          mergeHist(closes.flatMap((c) => (c.http[k] ? [c.http[k]] : []))).summary(),
        ]),
      ),
      httpErrorRate: httpRequests > 0 ? httpErrors / httpRequests : null,
      window: {
        seconds,
        bytesToViewers: toViewers,
        bytesFromViewers: fromViewers,
        mbitPerSecond: seconds > 0 ? (relayed * 8) / seconds / 1e6 : 0,
        perSessionKbitPerSecond: seconds > 0 && live > 0 ? (toViewers * 8) / seconds / 1e3 / live : 0,
        echoes: windows.reduce((x, w) => x + w.echoes, 0),
        lostMarkers: windows.reduce((x, w) => x + w.lostMarkers, 0),
      },
      cpu: {
        gatewaySeconds,
        gatewayCores: seconds > 0 ? gatewaySeconds / seconds : 0,
        gatewaySecondsPerGB: stackName === 'direct' || relayed === 0 ? null : gatewaySeconds / (relayed / GB),
        sshdSeconds,
        sshdSecondsPerGB: sshdSeconds === null || relayed === 0 ? null : sshdSeconds / (relayed / GB),
        simulatorSeconds: cpu('sim') ?? 0,
        loadGeneratorSeconds: cpu('load') ?? loadSeconds,
        loadGeneratorCores: seconds > 0 ? (cpu('load') ?? 0) / seconds : 0,
        desktopsSeconds: cpu('desktops'),
        harnessSeconds: cpu('harness') ?? 0,
      },
      cores: coreUseBetween(ticksA, ticksB),
      pinning: o.pin ? { ...o.pin, affinity } : null,
      memory: {
        gatewayRssBeforeBytes: rssBefore,
        gatewayRssHoldBytes: b.gateway!.rss,
        gatewayRssPeakBytes: rssPeak,
        perSessionBytes: stackName === 'direct' || live === 0 ? null : (b.gateway!.rss - rssBefore) / live,
        sshdRssHoldBytes: b.sshd?.rss ?? null,
        gatewayProcesses: b.gateway!.processes,
        stalled,
      },
      eventLoop: {
        gatewayLagP99Ms: metrics?.eventLoopLagP99Ms ?? null,
        gatewayLagMaxMs: metrics?.eventLoopLagMaxMs ?? null,
        probeMs: probeHist ? probeHist.summary() : null,
        loadGeneratorLagP99Ms: closes.reduce<number | null>(
          (x, c) => (c.eventLoopDelayP99Ms === null ? x : Math.max(x ?? 0, c.eventLoopDelayP99Ms)),
          null,
        ),
      },
      bytes,
      simulator: simStats,
      gatewayCounters: metrics
        ? Object.fromEntries(
            Object.entries(metrics.raw).filter(([k]) =>
              /^clouddesk_(relay_bytes_total|ssh_connections|ssh_channels|viewers_live|sessions_active)/.test(
                k,
              ),
            ),
          )
        : null,
      cpuProfiles: profiles_,
      controlPlane,
      longTasks: [],
      notes,
    };
    return result;
  } finally {
    for (const w of workers) await stopChild(w, 2_000);
    if (control) await stopChild(control, 2_000);
    if (stack) await stack.stop();
    await sim.stop();
  }
}

/** The gateway's collections between two scrapes, by kind (prom-client's nodejs_gc_duration_seconds). */
function gcInHold(before: GatewayMetrics, after: GatewayMetrics): string {
  const kinds = ['minor', 'major', 'incremental', 'weakcb'];
  const parts = kinds.flatMap((kind) => {
    const at = (m: GatewayMetrics, part: 'count' | 'sum') =>
      m.raw[`nodejs_gc_duration_seconds_${part}{kind="${kind}"}`] ?? 0;
    const count = at(after, 'count') - at(before, 'count');
    const ms = (at(after, 'sum') - at(before, 'sum')) * 1000;
    return count > 0 ? [`${kind} ${count} (${ms.toFixed(0)} ms, ${(ms / count).toFixed(1)} ms each)`] : [];
  });
  return parts.length > 0 ? parts.join(', ') : 'none recorded';
}
