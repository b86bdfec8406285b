// What every stack under test looks like to the harness, and the pieces they share: the simulator
// process, forked node children, waiting for a port, and the process groups charged for CPU and memory.
import { fork, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { StackTarget } from '../load/load-plan.js';
import type { DesktopLink } from '../lib/options.js';
import { descendantsOf, type ProcessGroup } from '../lib/proc-stats.js';
import { stopChild, trackChild } from '../lib/process-registry.js';
import type { ProfileName } from '../sim/traffic-profile.js';

export type StackName = 'direct' | 'diy' | 'bare' | 'clouddesk';

export interface RunningStack {
  name: StackName;
  target: StackTarget;
  /** The processes charged as this stack's gateway (empty for the direct floor). */
  gateway: ProcessGroup;
  /** The sshd processes serving this stack, reported apart from the gateway. */
  sshd: ProcessGroup | null;
  /** Other instance-side processes (the desktops and their scripts), when the stack starts any. */
  desktops?: ProcessGroup;
  /** In plain words: which processes `gateway` and `sshd` count. */
  accounting: string;
  /** The gateway's own event-loop figures (from its /metrics), when it has them. */
  gatewayMetrics?(): Promise<GatewayMetrics | null>;
  /** With --control-process: the control-plane process's figures (the gateway's are the relay's). */
  controlMetrics?(): Promise<GatewayMetrics | null>;
  /** A URL answered by the gateway's event loop, probed to see its responsiveness from outside. */
  probeUrl?: string;
  stop(): Promise<void>;
}

export interface GatewayMetrics {
  eventLoopLagP99Ms: number | null;
  eventLoopLagMaxMs: number | null;
  raw: Record<string, number>;
}

export interface SimulatorHandle {
  child: ChildProcess;
  tcpPort: number;
  controlPort: number;
  /** Where the fake Xvnc hands its listening socket to the simulator (simulator-main.ts), or null: socat. */
  handoffPath: string | null;
  group: ProcessGroup;
  stats(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

export const benchDir = fileURLToPath(new URL('..', import.meta.url));
export const repoDir = fileURLToPath(new URL('../..', import.meta.url));

/** Forks a TypeScript module of the harness with tsx, IPC attached, tracked for cleanup. */
export function forkTs(modulePath: string, args: string[], extraExecArgv: string[] = []): ChildProcess {
  const child = fork(modulePath, args, {
    execArgv: ['--import', 'tsx', ...extraExecArgv],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return trackChild(child);
}

/** The next IPC message of `type` from a child (bounded by `timeoutMs`). */
export function nextMessage<T>(
  child: ChildProcess,
  match: (m: unknown) => m is T,
  timeoutMs: number,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no answer from pid ${child.pid} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (m: unknown) => {
      if (!match(m)) return;
      cleanup();
      resolve(m);
    };
    const onExit = (code: number | null, sig: string | null) => {
      cleanup();
      reject(new Error(`pid ${child.pid} exited (${code ?? sig}) before answering`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

export async function startSimulator(
  profile: ProfileName,
  seed: number,
  link: DesktopLink = 'socat',
): Promise<SimulatorHandle> {
  const child = forkTs(`${benchDir}sim/simulator-main.ts`, [profile, String(seed), link]);
  const ready = await nextMessage(
    child,
    (m): m is { type: 'ready'; tcpPort: number; controlPort: number; handoffPath: string | null } =>
      typeof m === 'object' && m !== null && (m as { type?: string }).type === 'ready',
    30_000,
  );
  return {
    child,
    tcpPort: ready.tcpPort,
    controlPort: ready.controlPort,
    handoffPath: ready.handoffPath,
    group: { name: 'simulator', pids: () => (child.pid ? [child.pid] : []) },
    stats: async () => {
      if (child.exitCode !== null || !child.connected) return {};
      const reply = nextMessage(
        child,
        (m): m is { type: 'stats'; stats: Record<string, number> } =>
          typeof m === 'object' && m !== null && (m as { type?: string }).type === 'stats',
        10_000,
      );
      child.send({ type: 'stats' });
      return (await reply).stats;
    },
    stop: () => stopChild(child),
  };
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port (bounded). */
export async function waitForPort(port: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; Date.now() < deadline && attempt < 10_000; attempt++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

export function groupOf(name: string, roots: () => (number | undefined)[]): ProcessGroup {
  return {
    name,
    pids: () => {
      const out: number[] = [];
      for (const r of roots()) {
        if (r === undefined) continue;
        out.push(r, ...descendantsOf(r));
      }
      return out;
    },
  };
}
