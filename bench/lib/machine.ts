// The machine facts recorded with every result: what it ran on, and how busy the (shared) machine
// already was, so a reader can tell noise from a regression.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import type { MachineFacts } from '../report/result.js';

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  // `ssh -V` answers on stderr
  return (r.stdout?.trim() || r.stderr?.trim() || 'unknown').split('\n')[0]!;
}

function cpuTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'latin1').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Machine-wide CPU use over `ms`, in % of one core. */
async function busyPercent(ms: number): Promise<number> {
  const a = cpuTicks();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuTicks();
  const total = b.total - a.total;
  return total > 0 ? Math.round(((b.busy - a.busy) / total) * cpus().length * 1000) / 10 : 0;
}

/** kernel.sched_autogroup_enabled (null where the kernel has no such knob). */
export function schedAutogroup(): boolean | null {
  try {
    return readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'latin1').trim() === '1';
  } catch {
    return null;
  }
}

export async function machineFacts(): Promise<MachineFacts> {
  const sshVersion = run('ssh', ['-V']);
  const websockify = run('dpkg-query', ['-W', '-f', '${Version}', 'websockify']);
  const autogroup = schedAutogroup();
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    openssh: sshVersion.split(',')[0] ?? sshVersion,
    websockify,
    loadAverage: loadavg().map((x) => Math.round(x * 100) / 100) as [number, number, number],
    busyBeforeRunPercent: await busyPercent(2000),
    ...(autogroup === null ? {} : { schedAutogroup: autogroup }),
    date: new Date().toISOString(),
    gitCommit: run('git', ['rev-parse', '--short', 'HEAD']),
  };
}
