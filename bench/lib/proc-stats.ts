// CPU time and resident memory of process sets, read from /proc: how the harness charges each stack for
// what it spent, from outside and without cooperation. CPU is utime + stime of every live process in the
// set (clock ticks → seconds); a process that exits inside a window takes its last ticks with it, which
// is why stacks are measured while their sessions are held open.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';

let clockTicks: number | null = null;

function ticksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

export interface ProcSample {
  pid: number;
  /** Seconds of CPU (user + system) since the process started. */
  cpu: number;
  /** Resident memory in bytes (PSS, see residentBytes). */
  rss: number;
  comm: string;
}

/**
 * Resident memory charged to one process: PSS (proportional set size), so pages shared by forked
 * children (websockify forks one Python process per viewer, sshd one process per connection) are
 * counted once across the group instead of once per process, which RSS would do. For a single node
 * process PSS ≈ RSS. Falls back to VmRSS where smaps_rollup is missing.
 */
function residentBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // fall through
  }
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return m ? Number(m[1]) * 1024 : 0;
}

export function sampleProcess(pid: number): ProcSample | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15, rss (pages) field 24
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    if (fields[0] === 'Z') return null;
    return { pid, cpu: (utime + stime) / ticksPerSecond(), rss: residentBytes(pid), comm };
  } catch {
    return null;
  }
}

/** Every process whose ancestry leads to `root` (not including it). */
export function descendantsOf(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const text = readFileSync(`/proc/${name}/stat`, 'latin1');
      const ppid = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      // gone while we looked
    }
  }
  const out: number[] = [];
  const queue = [root];
  for (let guard = 0; queue.length > 0 && guard < 100_000; guard++) {
    for (const child of children.get(queue.shift()!) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

/**
 * PIDs of the processes owned by one of `uids` whose environment holds `envEntry` (KEY=VALUE), except
 * those whose name is in `exceptComm`.
 */
export function processesOfUsers(uids: number[], envEntry: string, exceptComm: string[] = []): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (!uids.includes(statSync(`/proc/${name}`).uid)) continue;
      if (exceptComm.includes(readFileSync(`/proc/${name}/comm`, 'latin1').trim())) continue;
      if (!readFileSync(`/proc/${name}/environ`, 'latin1').split('\0').includes(envEntry)) continue;
      out.push(Number(name));
    } catch {
      // gone while we looked
    }
  }
  return out;
}

/** PIDs whose command line contains `needle` (used to find a fixture's sshd listener). */
export function pidsWithCmdline(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'latin1').replace(/\0/g, ' ');
      if (cmd.includes(needle)) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

/** A named set of processes whose membership is recomputed at each sample (children come and go). */
export interface ProcessGroup {
  name: string;
  pids(): number[];
}

export interface GroupSample {
  at: number;
  byPid: Map<number, ProcSample>;
  rss: number;
  processes: number;
}

export function sampleGroup(group: ProcessGroup): GroupSample {
  const byPid = new Map<number, ProcSample>();
  let rss = 0;
  for (const pid of new Set(group.pids())) {
    const s = sampleProcess(pid);
    if (s === null) continue;
    byPid.set(pid, s);
    rss += s.rss;
  }
  return { at: Date.now(), byPid, rss, processes: byPid.size };
}

/** CPU seconds the group spent between two samples (processes born in between count from zero). */
export function cpuBetween(a: GroupSample, b: GroupSample): number {
  let total = 0;
  for (const [pid, s] of b.byPid) total += s.cpu - (a.byPid.get(pid)?.cpu ?? 0);
  return Math.max(0, total);
}
