// The operating-system limits a large run needs, checked (and, where it is the harness's own, raised)
// before anything starts, so a run of 10,000 viewers fails at once with what to change instead of
// with EMFILE or EAGAIN half-way through its ramp.
//
// - Open files: every process the harness starts inherits its RLIMIT_NOFILE (the gateway, the
//   simulator, the load generators, the sshd listeners and, through sshd, the desktops). The harness
//   raises its own (soft and hard) to OPEN_FILES, or the kernel's ceiling fs.nr_open if lower, with
//   prlimit(1) before it starts any of them, where it may (root with CAP_SYS_RESOURCE; the build
//   machine's container has a hard limit of 20,000 that even root cannot raise). Then it checks that
//   the limit in force is enough: about one descriptor per viewer in the gateway, the simulator and a
//   load generator's share (the socat link keeps the simulator at one per viewer; the hand-off holds
//   each desktop's listener too, and run.ts uses it only where that fits: fitsHandoff).
// - Processes: every simulated desktop is up to three processes on this machine (the Xvnc stand-in —
//   a `sleep` holding the RFB listener it handed to the simulator, or with --desktop-link socat a socat
//   listening there plus the socat serving its one viewer — and the window-manager stand-in), and each
//   counts against kernel.pid_max (threads too). That one is machine-wide, so the harness does not
//   change it: it refuses the run and says which sysctl to raise.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** Enough for 10,000 viewers with room to spare in every process (the simulator needs the most). */
export const OPEN_FILES = 262_144;

/** Descriptors a process keeps beside its viewers' (listeners, pipes, its own files), for the checks below. */
const OPEN_FILES_MARGIN = 1000;

/** PIDs a simulated desktop holds while it is viewed, plus one for its start script's moment. */
export const PIDS_PER_DESKTOP = 4;

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'latin1').trim());
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

function openFileLimit(): { soft: number; hard: number } | null {
  try {
    const line = readFileSync('/proc/self/limits', 'latin1')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const f = line?.trim().split(/\s+/) ?? [];
    return { soft: Number(f[3]), hard: Number(f[4]) };
  } catch {
    return null;
  }
}

/**
 * Raises this process's open-file limit (soft and hard) to OPEN_FILES when it may (root with
 * CAP_SYS_RESOURCE; a container without it keeps its hard limit); answers the limit now in force.
 */
export function raiseOpenFileLimit(): { limit: number; note: string | null } {
  const ceiling = Math.min(OPEN_FILES, readNumber('/proc/sys/fs/nr_open') ?? OPEN_FILES);
  const now = openFileLimit();
  if (now !== null && now.soft >= ceiling) return { limit: now.soft, note: null };
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${ceiling}:${ceiling}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 10_000,
    });
    return { limit: openFileLimit()?.soft ?? ceiling, note: null };
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim();
    return {
      limit: now?.soft ?? 0,
      note: `could not raise the open-file limit to ${ceiling} (${stderr || (e instanceof Error ? e.message : String(e))}); staying at ${now?.soft ?? 'unknown'}`,
    };
  }
}

/**
 * Refuses a run that would run out of descriptors half-way: the gateway holds one per viewer (its
 * WebSocket; the SSH channels share pooled connections), the simulator one per viewer, and each load
 * generator one per viewer of its share.
 */
export function checkOpenFiles(
  users: number,
  gatewayProcesses: number,
  loadWorkers: number,
  limit: number,
): void {
  const needs: [string, number][] = [
    ['a gateway process', Math.ceil(users / gatewayProcesses) + OPEN_FILES_MARGIN],
    ['the desktop simulator', users + OPEN_FILES_MARGIN],
    ['a load generator', Math.ceil(users / loadWorkers) + OPEN_FILES_MARGIN],
  ];
  const short = needs.filter(([, n]) => n > limit);
  if (short.length > 0)
    throw new Error(
      `the open-file limit is ${limit}, but ${short.map(([who, n]) => `${who} needs about ${n}`).join(', ')}: raise it (ulimit -n, or LimitNOFILE / --ulimit nofile where the benchmark runs), or use more --load-workers`,
    );
}

/** Whether the simulator can hold, for every desktop, its handed-over listener beside its viewer. */
export function fitsHandoff(desktops: number, limit: number): boolean {
  return desktops * 2 + OPEN_FILES_MARGIN <= limit;
}

function threadsNow(): number {
  let n = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      n += readdirSync(`/proc/${name}/task`).length;
    } catch {
      // gone
    }
  }
  return n;
}

/**
 * Refuses a run whose desktops cannot all exist at once under kernel.pid_max (32,768 on many kernels,
 * where 10,000 simulated desktops need about 40,000 PIDs), with the sysctl to raise.
 */
export function checkPidRoom(desktops: number): void {
  const pidMax = readNumber('/proc/sys/kernel/pid_max');
  if (pidMax === null) return;
  const needed = threadsNow() + desktops * PIDS_PER_DESKTOP + 1000;
  if (needed > pidMax)
    throw new Error(
      `kernel.pid_max is ${pidMax}, but ${desktops} simulated desktops (${PIDS_PER_DESKTOP} PIDs each) next to what already runs need about ${needed}: raise it first, e.g. sysctl -w kernel.pid_max=4194304 (the limit is machine-wide, so the benchmark does not change it itself)`,
    );
}
