// `--pin`: the gateway on one core, everything else on the other (taskset), so a run shows the
// gateway's own limit rather than the machine's. The harness pins itself (all its threads) to the
// "rest" core before it starts anything, so every process it starts inherits that core: the simulator,
// the load generators, sshd with its per-connection processes and the desktops they start, redis-server.
// The gateway alone is started through `taskset -c <gateway core>` (taskset execs it: same PID, and
// every thread it makes later — libuv's pool, cluster workers — inherits the core). A PostgreSQL
// server (--store postgres) was not started by the harness: its processes are moved to the rest core
// for the run and given their own affinity back afterwards.
//
// Each core's utilisation over the hold window comes from /proc/stat (all processes, the kernel's
// softirq work for loopback TCP included, and whatever else the shared machine runs there), next to
// the CPU of the process groups the harness knows, so a report says whose core ran out.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { onCleanup } from './process-registry.js';

export interface PinPlan {
  gatewayCpu: number;
  restCpu: number;
}

export interface CoreTicks {
  cpu: number;
  user: number;
  system: number;
  softirq: number;
  irq: number;
  idle: number;
  steal: number;
  total: number;
}

export interface CoreUse {
  cpu: number;
  /** Share of the window the core was busy (user + system + irq + softirq + steal), 0–1. */
  busy: number;
  user: number;
  system: number;
  softirq: number;
  /** Time the hypervisor gave this virtual core to someone else. */
  steal: number;
}

/** Checks the machine can be pinned as asked; the error names what is missing. */
export function checkPinnable(plan: PinPlan): void {
  const online = onlineCpus();
  for (const c of [plan.gatewayCpu, plan.restCpu]) {
    if (!online.includes(c)) throw new Error(`--pin: CPU ${c} is not online (online: ${online.join(',')})`);
  }
  if (plan.gatewayCpu === plan.restCpu)
    throw new Error('--pin: the gateway and the rest need two different CPUs');
  try {
    execFileSync('taskset', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('--pin needs taskset (util-linux)');
  }
}

function onlineCpus(): number[] {
  return readTicks().map((t) => t.cpu);
}

/** Moves every thread of `pid` to `cpu` (taskset -a -p). */
export function pinProcess(pid: number, cpu: number): void {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
}

/** The harness and everything it starts from now on go to the rest core. */
export function pinHarness(plan: PinPlan): void {
  pinProcess(process.pid, plan.restCpu);
}

/** The command prefix that starts a process on the gateway core. */
export function gatewayPrefix(plan: PinPlan | null): string[] {
  return plan ? ['taskset', '-c', String(plan.gatewayCpu)] : [];
}

/** The CPUs a process may run on (its main thread), e.g. "1" or "0-1"; null once it is gone. */
export function affinityOf(pid: number): string | null {
  try {
    const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? m[1]! : null;
  } catch {
    return null;
  }
}

/**
 * Moves a running PostgreSQL server's processes to the rest core for this run; their own affinity
 * is given back on cleanup. Returns how many processes were moved.
 */
export function pinPostgres(plan: PinPlan): number {
  const before = new Map<number, string>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/comm`, 'latin1').trim() !== 'postgres') continue;
      const pid = Number(name);
      const a = affinityOf(pid);
      if (a === null) continue;
      pinProcess(pid, plan.restCpu);
      before.set(pid, a);
    } catch {
      // gone while we looked
    }
  }
  onCleanup('PostgreSQL affinity', () => {
    for (const [pid, cpus] of before) {
      try {
        execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
      } catch {
        // the backend ended meanwhile
      }
    }
  });
  return before.size;
}

/** Per-CPU counters from /proc/stat (clock ticks). */
export function readTicks(): CoreTicks[] {
  const out: CoreTicks[] = [];
  for (const line of readFileSync('/proc/stat', 'latin1').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    const f = m[2]!.trim().split(/\s+/).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    out.push({
      cpu: Number(m[1]),
      user: user + nice,
      system,
      softirq,
      irq,
      idle: idle + iowait,
      steal,
      total: user + nice + system + idle + iowait + irq + softirq + steal,
    });
  }
  return out;
}

/** Each core's use between two readings. */
export function coreUseBetween(a: CoreTicks[], b: CoreTicks[]): CoreUse[] {
  const out: CoreUse[] = [];
  for (const t1 of b) {
    const t0 = a.find((t) => t.cpu === t1.cpu);
    if (!t0) continue;
    const total = t1.total - t0.total;
    if (total <= 0) continue;
    const share = (k: keyof CoreTicks) => (t1[k] - t0[k]) / total;
    out.push({
      cpu: t1.cpu,
      busy: 1 - share('idle'),
      user: share('user'),
      system: share('system'),
      softirq: share('softirq') + share('irq'),
      steal: share('steal'),
    });
  }
  return out;
}
