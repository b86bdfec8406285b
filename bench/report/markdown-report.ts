// The markdown form of a result: the machine, one row per step, CloudDesk ÷ peer ratios at equal load,
// and the issue's targets with what was reached. Numbers only from the JSON beside it.
import { Histogram, type LatencySummary } from '../lib/histogram.js';
import type { BenchResult, StepResult } from './result.js';

const KB = 1024;
const MB = 1024 * 1024;

export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined) return '–';
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function pct(v: number | null | undefined, digits = 2): string {
  return v === null || v === undefined ? '–' : `${(v * 100).toFixed(digits)} %`;
}

function bytes(v: number | null | undefined): string {
  if (v === null || v === undefined) return '–';
  const a = Math.abs(v);
  if (a >= MB) return `${(v / MB).toFixed(1)} MB`;
  if (a >= KB) return `${(v / KB).toFixed(0)} KB`;
  return `${v.toFixed(0)} B`;
}

/** Per-session memory: a negative growth means GC freed more than the sessions took (noise at low counts). */
function perSession(v: number | null | undefined): string {
  if (v !== null && v !== undefined && v < 0) return 'below noise';
  return bytes(v);
}

function num(v: number | null | undefined, digits = 2): string {
  return v === null || v === undefined ? '–' : v.toFixed(digits);
}

function trio(l: LatencySummary): string {
  return `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}`;
}

function ratio(a: number | null | undefined, b: number | null | undefined): string {
  if (a === null || a === undefined || b === null || b === undefined || b <= 0 || a < 0) return '–';
  return `${(a / b).toFixed(2)}×`;
}

const STACK: Record<string, string> = {
  direct: 'direct (floor)',
  diy: 'websockify + ssh -L',
  bare: 'bare ws → ssh2 prototype',
  clouddesk: 'CloudDesk',
};

export function stepTable(steps: StepResult[]): string {
  const head =
    '| stack | users | streaming | errors | WS ok | setup p50/p95/p99 ms | echo RTT p50/p95/p99 ms | added p99 ms | Mbit/s | gw cores | gw CPU·s/GB | sshd CPU·s/GB | gw RSS/session | stalled RSS/session | gw loop lag p99 ms | bytes exact |\n' +
    '|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|';
  const rows = steps.map((s) =>
    [
      STACK[s.stack] ?? s.stack,
      s.users,
      `${s.sessions.liveAtWindowEnd}/${s.sessions.attempted}`,
      pct(s.errorRate),
      pct(s.wsSuccessRate, 1),
      trio(s.setupMs),
      trio(s.rttMs),
      ms(s.addedRttMs?.p99),
      num(s.window.mbitPerSecond, 1),
      s.stack === 'direct' ? '–' : num(s.cpu.gatewayCores),
      num(s.cpu.gatewaySecondsPerGB),
      num(s.cpu.sshdSecondsPerGB),
      perSession(s.memory.perSessionBytes),
      perSession(s.memory.stalled?.perStalledSessionBytes),
      ms(s.eventLoop.gatewayLagP99Ms),
      `${s.bytes.exact}/${s.bytes.live}`,
    ].join(' | '),
  );
  return [head, ...rows.map((r) => `| ${r} |`)].join('\n');
}

function ratioTable(steps: StepResult[]): string {
  const cd = steps.filter((s) => s.stack === 'clouddesk');
  const lines: string[] = [];
  for (const c of cd) {
    for (const peerName of ['diy', 'bare', 'direct'] as const) {
      const p = steps.find((s) => s.stack === peerName && s.users === c.users);
      if (!p) continue;
      lines.push(
        `| ${c.users} | ${STACK[peerName]} | ${ratio(c.rttMs.p50, p.rttMs.p50)} | ${ratio(c.rttMs.p99, p.rttMs.p99)} | ${ratio(
          c.setupMs.p95,
          p.setupMs.p95,
        )} | ${peerName === 'direct' ? '–' : ratio(c.cpu.gatewaySecondsPerGB, p.cpu.gatewaySecondsPerGB)} | ${
          peerName === 'direct' ? '–' : ratio(c.memory.perSessionBytes, p.memory.perSessionBytes)
        } | ${ratio(c.window.mbitPerSecond, p.window.mbitPerSecond)} |`,
      );
    }
  }
  if (lines.length === 0) return '';
  return [
    '| users | peer | RTT p50 | RTT p99 | setup p95 | gw CPU·s/GB | gw RSS/session | throughput |',
    '|---:|---|---:|---:|---:|---:|---:|---:|',
    ...lines,
  ].join('\n');
}

/** A core this busy over the window had no room left. */
const SATURATED = 0.95;

/** "CPU 1 (98 %)" for every core that was saturated in the step's window. */
export function saturatedCores(s: StepResult): string[] {
  return (s.cores ?? [])
    .filter((c) => c.busy >= SATURATED)
    .map((c) => `CPU ${c.cpu} (${(c.busy * 100).toFixed(0)} %)`);
}

/** Who ran on each core in the window: the groups the harness knows, in cores (CPU·s ÷ window). */
function coreTable(steps: StepResult[]): string {
  const rows: string[] = [];
  for (const s of steps) {
    if (!s.cores || s.cores.length === 0 || s.window.seconds <= 0) continue;
    const w = s.window.seconds;
    const groups: [string, number | null | undefined][] = [
      ['gateway', s.stack === 'direct' ? null : s.cpu.gatewaySeconds],
      ['sshd', s.cpu.sshdSeconds],
      ['desktops', s.cpu.desktopsSeconds],
      ['simulator', s.cpu.simulatorSeconds],
      ['load generator', s.cpu.loadGeneratorSeconds],
      ['harness', s.cpu.harnessSeconds],
    ];
    const known = groups.filter((g): g is [string, number] => typeof g[1] === 'number' && g[1] > 0);
    const pin = s.pinning ?? null;
    for (const c of s.cores) {
      let on: [string, number][];
      if (pin) {
        const onGatewayCpu = (name: string) => name === 'gateway';
        on = known.filter(([name]) => (c.cpu === pin.gatewayCpu ? onGatewayCpu(name) : !onGatewayCpu(name)));
        if (c.cpu !== pin.gatewayCpu && c.cpu !== pin.restCpu) on = [];
      } else {
        on = c === s.cores[0] ? known : [];
      }
      const charged = on.reduce((x, [, v]) => x + v, 0) / w;
      const rest = c.busy - charged;
      const who = on.map(([name, v]) => `${name} ${num(v / w)}`);
      if (pin && (c.cpu === pin.gatewayCpu || c.cpu === pin.restCpu))
        who.push(`not charged to these ${num(Math.max(0, rest))}`);
      rows.push(
        `| ${STACK[s.stack] ?? s.stack} | ${s.users} | ${c.cpu}${pin ? (c.cpu === pin.gatewayCpu ? ' (gateway)' : c.cpu === pin.restCpu ? ' (rest)' : '') : ''} | ` +
          `${c.busy >= SATURATED ? '**' : ''}${pct(c.busy, 0)}${c.busy >= SATURATED ? '**' : ''} | ` +
          `${pct(c.user, 0)} / ${pct(c.system, 0)} / ${pct(c.softirq, 0)} / ${pct(c.steal, 0)} | ` +
          `${pin ? who.join(', ') : c === s.cores[0] ? `(not pinned: both cores) ${who.join(', ')}` : ''} |`,
      );
    }
  }
  if (rows.length === 0) return '';
  return [
    '| stack | users | CPU | busy | user / system / softirq / steal | on it, in cores (CPU·s ÷ window) |',
    '|---|---:|---|---:|---|---|',
    ...rows,
  ].join('\n');
}

export interface TargetCheck {
  target: string;
  measured: string;
  met: boolean | null;
}

/** The issue's targets, checked against whatever steps of this result apply to them. */
export function checkTargets(result: BenchResult): TargetCheck[] {
  const out: TargetCheck[] = [];
  const cd = result.steps.filter((s) => s.stack === 'clouddesk');
  for (const s of cd) {
    const tag = `${s.users} × ${s.profile}`;
    if (s.profile === 'office') {
      const added = s.addedRttMs?.p99 ?? null;
      out.push({
        target: `${tag}: p99 added latency ≤ 20 ms`,
        measured: added === null ? 'no floor at this load' : `${ms(added)} ms`,
        met: added === null ? null : added <= 20,
      });
    }
    out.push(
      { target: `${tag}: errors < 0.1 %`, measured: pct(s.errorRate), met: s.errorRate < 0.001 },
      {
        target: `${tag}: WebSocket success > 99 %`,
        measured: pct(s.wsSuccessRate, 1),
        met: s.wsSuccessRate > 0.99,
      },
      {
        target: `${tag}: setup p95 < 5 s`,
        measured: `${ms(s.setupMs.p95)} ms`,
        met: s.setupMs.p95 === null ? null : s.setupMs.p95 < 5000,
      },
    );
    if (s.profile === 'idle' || s.profile === 'still') {
      // 2000+ (the first target), or every user of a larger run (issue 9's 10,000).
      const wanted = Math.max(2000, s.users);
      out.push({
        target: `${tag}: ${wanted === 2000 ? '2000+' : wanted} idle sessions in one gateway process`,
        measured: `${s.sessions.liveAtWindowEnd} streaming, ${s.memory.gatewayProcesses} process(es)`,
        met: s.sessions.liveAtWindowEnd >= wanted && s.memory.gatewayProcesses === 1,
      });
      out.push({
        target: `${tag}: RSS ≤ 100 KB per idle session`,
        measured: bytes(s.memory.perSessionBytes),
        met: s.memory.perSessionBytes === null ? null : s.memory.perSessionBytes <= 100 * KB,
      });
      if (wanted > 2000)
        out.push({
          target: `${tag}: RSS ≤ 10 KB per idle viewer (issue 9)`,
          measured: bytes(s.memory.perSessionBytes),
          met: s.memory.perSessionBytes === null ? null : s.memory.perSessionBytes <= 10 * KB,
        });
    }
    if (s.memory.stalled) {
      out.push({
        target: `${tag}: RSS ≤ 1 MB per stalled session`,
        measured: `${bytes(s.memory.stalled.perStalledSessionBytes)} (${s.memory.stalled.viewers} stalled ${s.memory.stalled.seconds} s)`,
        met:
          s.memory.stalled.perStalledSessionBytes === null
            ? null
            : s.memory.stalled.perStalledSessionBytes <= MB,
      });
    }
    const diy = result.steps.find((p) => p.stack === 'diy' && p.users === s.users);
    if (diy && s.cpu.gatewaySecondsPerGB !== null && diy.cpu.gatewaySecondsPerGB !== null) {
      const r = s.cpu.gatewaySecondsPerGB / diy.cpu.gatewaySecondsPerGB;
      out.push({
        target: `${tag}: gateway CPU/GB ≤ 0.4× websockify + ssh -L`,
        measured: `${r.toFixed(2)}× (${num(s.cpu.gatewaySecondsPerGB)} vs ${num(diy.cpu.gatewaySecondsPerGB)} CPU·s/GB)`,
        met: r <= 0.4,
      });
    }
    const bare = result.steps.find((p) => p.stack === 'bare' && p.users === s.users);
    if (bare && s.cpu.gatewaySecondsPerGB !== null && bare.cpu.gatewaySecondsPerGB !== null) {
      out.push({
        target: `${tag}: gateway CPU/GB below the bare ws → ssh2 prototype's, this run`,
        measured: `${num(s.cpu.gatewaySecondsPerGB)} vs ${num(bare.cpu.gatewaySecondsPerGB)} CPU·s/GB (${(
          s.cpu.gatewaySecondsPerGB / bare.cpu.gatewaySecondsPerGB
        ).toFixed(2)}×)`,
        met: s.cpu.gatewaySecondsPerGB < bare.cpu.gatewaySecondsPerGB,
      });
    }
    if (s.profile === 'video') {
      const added = s.addedRttMs?.p99 ?? null;
      const limit = s.users >= 200 ? 10 : 5;
      out.push({
        target: `${tag}: added round trip p99 ≤ ${limit} ms`,
        measured: added === null ? 'no floor at this load' : `${ms(added)} ms`,
        met: added === null ? null : added <= limit,
      });
      out.push({
        target: `${tag}: below the prototype's CPU (4.0 CPU·s/GB at 50, 2.5 at 200)`,
        measured: `${num(s.cpu.gatewaySecondsPerGB)} CPU·s/GB`,
        met:
          s.cpu.gatewaySecondsPerGB === null
            ? null
            : s.cpu.gatewaySecondsPerGB < (s.users >= 200 ? 2.5 : 4.0),
      });
    }
    if (s.profile !== 'video' && s.users <= 50) {
      const added = s.addedRttMs?.p99 ?? null;
      out.push({
        target: `${tag}: added round trip p99 ≤ 5 ms at light load`,
        measured: added === null ? 'no floor at this load' : `${ms(added)} ms`,
        met: added === null ? null : added <= 5,
      });
    }
  }
  return out;
}

/** Which cores had no room at the step where find-max stopped. */
function saturation(result: BenchResult, stack: string, users: number | null): string {
  if (users === null) return '';
  const step = result.steps.find((s) => s.stack === stack && s.users === users);
  if (!step?.cores) return '';
  const full = saturatedCores(step);
  const pin = step.pinning;
  const name = (c: string) =>
    pin
      ? c
          .replace(`CPU ${pin.gatewayCpu} `, `CPU ${pin.gatewayCpu} (gateway) `)
          .replace(`CPU ${pin.restCpu} `, `CPU ${pin.restCpu} (rest) `)
      : c;
  return full.length === 0 ? ' (no core saturated)' : ` (saturated: ${full.map(name).join(', ')})`;
}

export function renderMarkdown(result: BenchResult): string {
  const m = result.machine;
  const lines: string[] = [];
  lines.push(`# Benchmark: ${result.label}`, '');
  lines.push(`Command: \`${result.command}\``, '');
  lines.push(
    `Machine: ${m.cores} × ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}, ${m.openssh}, websockify ${m.websockify}; ` +
      `load average before the run ${m.loadAverage.join(' / ')}, other processes used ${m.busyBeforeRunPercent} % of a core just before it ` +
      `(shared machine)${m.schedAutogroup ? '; sched_autogroup on (nice did not shield the run)' : ''}. Commit ${m.gitCommit}. ${result.startedAt} → ${result.finishedAt}.`,
    '',
  );
  lines.push(stepTable(result.steps), '');
  lines.push(
    'Setup = connect call (CloudDesk) or TCP/WebSocket connect (peers) → first framebuffer update. Echo RTT = input marker → its echo on screen, measured in the hold window. ' +
      '"added" = the stack minus the direct floor at the same user count. CPU and memory are sampled from /proc over the hold window. ' +
      '"bytes exact" = sessions whose every byte, both ways, arrived (checked against the simulator\'s own counts).',
    '',
  );
  const ratios = ratioTable(result.steps);
  if (ratios) lines.push('## CloudDesk ÷ peer at the same load', '', ratios, '');
  const cores = coreTable(result.steps);
  if (cores) {
    const pinned = result.steps.find((s) => s.pinning)?.pinning ?? null;
    lines.push(
      '## Cores',
      '',
      pinned
        ? `Pinned (\`--pin\`): the gateway on CPU ${pinned.gatewayCpu}, everything else on CPU ${pinned.restCpu}. ` +
            "Busy = the core's share of the hold window not idle, from /proc/stat: every process on it, the kernel's " +
            'loopback TCP work (softirq) and anything else the shared machine ran there. ' +
            `Affinity as read during the hold: ${Object.entries(
              Object.assign({}, ...result.steps.map((s) => s.pinning?.affinity ?? {})) as Record<
                string,
                string | null
              >,
            )
              .map(([k, v]) => `${k} ${v ?? '–'}`)
              .join(', ')}.`
        : 'Not pinned: every process may run on every core; the groups are listed once.',
      '',
      cores,
      '',
    );
  }
  const targets = checkTargets(result);
  if (targets.length > 0) {
    lines.push('## Targets', '', '| target | measured | met |', '|---|---|---|');
    for (const t of targets)
      lines.push(`| ${t.target} | ${t.measured} | ${t.met === null ? '–' : t.met ? 'yes' : '**no**'} |`);
    lines.push('');
  }
  if (result.findMax.length > 0) {
    lines.push('## --find-max', '');
    for (const f of result.findMax) {
      lines.push(
        `- ${STACK[f.stack] ?? f.stack}: ${f.reached} sessions held with every target met` +
          (f.brokeAt === null
            ? ' (bound reached before anything broke)'
            : `; at ${f.brokeAt}: ${f.brokenTargets.join(', ')}`) +
          saturation(result, f.stack, f.brokeAt),
      );
    }
    lines.push('');
  }
  lines.push('## Details', '');
  for (const s of result.steps) {
    const extra: string[] = [];
    extra.push(`accounting: ${s.accounting}`);
    extra.push(
      `CPU in the ${s.window.seconds.toFixed(0)} s window: gateway ${num(s.cpu.gatewaySeconds)} s, sshd ${num(s.cpu.sshdSeconds)} s, simulator ${num(
        s.cpu.simulatorSeconds,
      )} s, load generator ${num(s.cpu.loadGeneratorSeconds)} s (its event-loop p99 ${ms(s.eventLoop.loadGeneratorLagP99Ms)} ms)`,
    );
    extra.push(
      `gateway RSS ${bytes(s.memory.gatewayRssBeforeBytes)} before → ${bytes(s.memory.gatewayRssHoldBytes)} holding (peak ${bytes(
        s.memory.gatewayRssPeakBytes,
      )}); sshd RSS ${bytes(s.memory.sshdRssHoldBytes)}`,
    );
    if (s.eventLoop.probeMs)
      extra.push(`/api/health from outside during the hold: ${trio(s.eventLoop.probeMs)} ms`);
    if (Object.keys(s.httpMs).length > 0) {
      extra.push(
        `API p50/p95/p99/max ms (each try): ${Object.entries(s.httpMs)
          .map(([k, v]) => `${k} ${trio(v)} / ${ms(v.max)}`)
          .join('; ')}; HTTP errors ${pct(s.httpErrorRate)}`,
      );
    }
    if (Object.keys(s.errors).length > 0) extra.push(`errors: ${JSON.stringify(s.errors)}`);
    if (Object.keys(s.closeCodes).length > 0)
      extra.push(`unexpected closes: ${JSON.stringify(s.closeCodes)}`);
    if (s.memory.stalled) {
      extra.push(
        `stalled: ${s.memory.stalled.viewers} viewers for ${s.memory.stalled.seconds} s, RSS ${bytes(s.memory.stalled.rssBeforeBytes)} → peak ${bytes(
          s.memory.stalled.rssPeakBytes,
        )}, ${s.memory.stalled.closedWhileStalled} closed by the stack while stalled`,
      );
    }
    if (s.bytes.firstMismatch) extra.push(`first byte mismatch: ${s.bytes.firstMismatch}`);
    if (s.simulator.updatesDropped)
      extra.push(`simulator dropped ${s.simulator.updatesDropped} updates (viewer not draining)`);
    if (s.simulator.updatesLate)
      extra.push(`simulator skipped ${s.simulator.updatesLate} update slots (its own event loop ran late)`);
    const cp = s.controlPlane;
    if (cp) {
      const rate = (k: string) => `${num((cp.started[k] ?? 0) / Math.max(cp.seconds, 1e-9), 1)}/s`;
      extra.push(
        `control-plane load (--mixed) over ${num(cp.seconds, 0)} s: sign-ins ${rate('login')} (${cp.ok.login ?? 0} ok), ` +
          `connects ${rate('connect')} (${cp.ok.connect ?? 0} ok, ${cp.ok.disconnect ?? 0} disconnected), ${cp.skipped} skipped; ` +
          `p50/p95/p99 ms: ${Object.entries(cp.ms)
            .map(([k, h]) => `${k} ${trio(Histogram.from(h).summary())}`)
            .join('; ')}` +
          (Object.keys(cp.errors).length > 0 ? `; errors ${JSON.stringify(cp.errors)}` : ''),
      );
    }
    for (const n of s.notes) extra.push(n);
    if (s.cpuProfiles.length > 0) extra.push(`CPU profiles: ${s.cpuProfiles.join(', ')}`);
    lines.push(`- **${STACK[s.stack] ?? s.stack}, ${s.users} users**`, ...extra.map((e) => `  - ${e}`));
    for (const lt of s.longTasks) {
      lines.push(
        '',
        `  Event-loop long tasks (> ${lt.overMs} ms) during the ${num(lt.windowSeconds, 0)} s hold, \`${lt.profile}\` (busy ${num(lt.busySeconds, 1)} s of it):`,
        '',
        '  | what it spent most time in | how often | p50 ms | p99 ms | max ms | total ms | most often in |',
        '  |---|---:|---:|---:|---:|---:|---|',
        ...lt.summary.map(
          (x) =>
            `  | ${x.kind} | ${x.count} | ${num(x.p50Ms, 1)} | ${num(x.p99Ms, 1)} | ${num(x.maxMs, 1)} | ${num(x.totalMs, 0)} | \`${x.topWhere}\` |`,
        ),
        '',
        `  Time inside those tasks by category: ${lt.timeByCategoryMs
          .slice(0, 12)
          .map(([k, v]) => `${k} ${num(v, 0)} ms`)
          .join(', ')}.`,
        '',
      );
    }
  }
  lines.push('');
  return lines.join('\n');
}
