// `npm run bench -- [options]`: the CloudDesk benchmark harness (issue 4). Runs the plan's scenario
// (sign in → list instances → connect → hold the WebSocket → disconnect) for N virtual users against
// CloudDesk and, with --compare, the same traffic against the direct floor and websockify + ssh -L;
// writes a markdown table, JSON and an SVG chart under bench/results/. Everything it starts is
// stopped by PID, also on Ctrl-C (lib/process-registry.ts). See docs/benchmarks.md.
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { checkOpenFiles, checkPidRoom, fitsHandoff, raiseOpenFileLimit } from './lib/limits.js';
import { machineFacts } from './lib/machine.js';
import { parseOptions, usage, type BenchOptions } from './lib/options.js';
import { checkPinnable, pinHarness, pinPostgres } from './lib/pinning.js';
import { stopEverything } from './lib/process-registry.js';
import { runStep } from './lib/step-runner.js';
import { renderMarkdown, stepTable } from './report/markdown-report.js';
import type { BenchResult, StepResult } from './report/result.js';
import { renderChart } from './report/svg-chart.js';
import { repoDir, type StackName } from './stacks/stack.js';

const log = (line: string) => process.stderr.write(`${line}\n`);

function addFloor(steps: StepResult[]): void {
  for (const s of steps) {
    const floor = steps.find((f) => f.stack === 'direct' && f.users === s.users);
    if (!floor || s.stack === 'direct') continue;
    const d = (a: number | null, b: number | null) => (a === null || b === null ? null : a - b);
    s.addedRttMs = {
      p50: d(s.rttMs.p50, floor.rttMs.p50),
      p95: d(s.rttMs.p95, floor.rttMs.p95),
      p99: d(s.rttMs.p99, floor.rttMs.p99),
    };
  }
}

/** The issue's scenario targets for one step (find-max stops at the first count that breaks one). */
function brokenTargets(s: StepResult): string[] {
  const out: string[] = [];
  if (s.errorRate >= 0.001) out.push(`errors ${(s.errorRate * 100).toFixed(2)} % ≥ 0.1 %`);
  if (s.wsSuccessRate <= 0.99) out.push(`WebSocket success ${(s.wsSuccessRate * 100).toFixed(1)} % ≤ 99 %`);
  if (s.setupMs.p95 !== null && s.setupMs.p95 >= 5000)
    out.push(`setup p95 ${s.setupMs.p95.toFixed(0)} ms ≥ 5 s`);
  const added = s.addedRttMs?.p99 ?? null;
  if (added !== null && added > 20) out.push(`added p99 ${added.toFixed(1)} ms > 20 ms`);
  return out;
}

function labelOf(o: BenchOptions): string {
  if (o.label) return o.label;
  const stacks = o.stacks.length === 4 ? 'compare' : o.stacks.join('+');
  const users = o.findMax ? `findmax${o.users[0]}-${o.maxUsers}` : o.users.join('+');
  return `${o.profile}-${users}-${stacks}${o.pin ? '-pinned' : ''}${o.workers > 1 ? `-w${o.workers}` : ''}${o.store === 'postgres' ? '-pg' : ''}${o.redis ? '-redis' : ''}`;
}

async function main(): Promise<void> {
  let o: BenchOptions;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (e) {
    log(e instanceof Error ? e.message : String(e));
    process.exitCode = 2;
    return;
  }
  if (o.help) {
    process.stdout.write(usage);
    return;
  }
  if (process.getuid?.() !== 0)
    throw new Error('the benchmark runs a real sshd with test users: run it as root');
  // Before any child starts: they all inherit the open-file limit.
  const openFiles = raiseOpenFileLimit();
  if (openFiles.note) log(`bench: ${openFiles.note}`);
  const mostUsers = o.findMax ? o.maxUsers : Math.max(...o.users);
  checkOpenFiles(mostUsers, o.workers, o.loadWorkers, openFiles.limit);
  if (o.desktopLink === 'handoff' && !fitsHandoff(mostUsers, openFiles.limit)) {
    log(
      `bench: ${mostUsers} desktops' listeners and viewers do not fit the simulator's ${openFiles.limit} open files: desktops are joined to it by socat (--desktop-link socat)`,
    );
    o.desktopLink = 'socat';
  }
  if (o.stacks.includes('clouddesk')) checkPidRoom(mostUsers);
  o.outDir = resolve(repoDir, o.outDir);
  await mkdir(o.outDir, { recursive: true });
  const label = labelOf(o);
  if (o.pin) {
    // Before anything is started: every child inherits the harness's CPU, the gateway alone gets its own.
    checkPinnable(o.pin);
    pinHarness(o.pin);
    const moved = o.store === 'postgres' ? pinPostgres(o.pin) : 0;
    log(
      `bench: pinned: gateway on CPU ${o.pin.gatewayCpu}, everything else on CPU ${o.pin.restCpu}` +
        (moved > 0 ? ` (${moved} PostgreSQL processes moved there for the run)` : ''),
    );
  }
  const startedAt = new Date().toISOString();
  log(`bench ${label}: reading machine facts…`);
  const machine = await machineFacts();
  log(
    `bench: ${machine.cores} × ${machine.cpuModel}; other load before the run: ${machine.busyBeforeRunPercent} % of a core; open files ${openFiles.limit} per process`,
  );

  if (machine.schedAutogroup) {
    log(
      'bench: warning: kernel.sched_autogroup_enabled=1 — every session gets an equal share of a core whatever ' +
        'its nice value, so other work on this machine (even at nice 19) takes CPU from the run; ' +
        '`sysctl -w kernel.sched_autogroup_enabled=0` makes nice mean what it says',
    );
  }

  const steps: StepResult[] = [];
  const findMax: BenchResult['findMax'] = [];
  const runAt = async (users: number, stacks: StackName[]) => {
    const done: StepResult[] = [];
    for (const stack of stacks) {
      log(`bench: ${stack} × ${users} users, ${o.profile}`);
      const r = await runStep(stack, users, o, log);
      steps.push(r);
      done.push(r);
      addFloor(steps);
    }
    log(stepTable(done));
    return done;
  };

  if (o.findMax) {
    const deadline = Date.now() + o.findMaxSeconds * 1000;
    const measured = o.stacks.filter((s) => s !== 'direct');
    const withFloor = o.stacks.includes('direct');
    for (const stack of measured) {
      let users = o.users[0]!;
      let reached = 0;
      let brokeAt: number | null = null;
      let broken: string[] = [];
      for (let i = 0; i < 30 && users <= o.maxUsers && Date.now() < deadline; i++) {
        const done = await runAt(users, withFloor ? ['direct', stack] : [stack]);
        const mine = done.find((d) => d.stack === stack)!;
        broken = brokenTargets(mine);
        if (broken.length > 0) {
          brokeAt = users;
          break;
        }
        reached = mine.sessions.liveAtWindowEnd;
        users = Math.round(users * 1.5);
      }
      findMax.push({ stack, reached, brokeAt, brokenTargets: broken });
    }
  } else {
    for (const users of o.users) await runAt(users, o.stacks);
  }

  const result: BenchResult = {
    label,
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    options: { ...o, outDir: relative(repoDir, o.outDir) || '.' },
    machine,
    startedAt,
    finishedAt: new Date().toISOString(),
    steps,
    findMax,
  };
  const base = join(o.outDir, label);
  await writeFile(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(`${base}.md`, renderMarkdown(result));
  await writeFile(`${base}.svg`, renderChart(result));
  process.stdout.write(renderMarkdown(result));
  log(`bench: wrote ${relative(process.cwd(), base)}.{json,md,svg}`);
}

main()
  .catch((e: unknown) => {
    log(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  })
  .finally(() => {
    void stopEverything().then(() => process.exit());
  });
