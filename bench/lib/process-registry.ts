// Everything the harness starts, and how it is stopped: by PID, TERM then KILL after a grace period,
// on normal completion, on SIGINT/SIGTERM (Ctrl-C) and, as a last resort, synchronously on 'exit'.
// Cleanups that are not processes (an sshd fixture's stop(), temp folders) register here too and
// run newest first, so a stack is taken down in the reverse order it was built.
import type { ChildProcess } from 'node:child_process';

type Cleanup = () => Promise<void> | void;

const children = new Set<ChildProcess>();
/** Processes started by code we do not own (the sshd fixture): KILLed by PID on a hard exit. */
const foreignPids = new Set<number>();
const cleanups: { name: string; fn: Cleanup }[] = [];
let installed = false;
let stopping: Promise<void> | null = null;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** TERM, wait up to `graceMs` for the child to exit, then KILL. */
export async function stopChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  children.delete(child);
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), graceMs);
  });
  const late = await Promise.race([exited.then(() => false), timedOut]);
  clearTimeout(timer);
  if (late && alive(child.pid)) {
    child.kill('SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2_000))]);
  }
}

export function trackChild(child: ChildProcess): ChildProcess {
  install();
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** A process started by someone else on our behalf, to KILL if the harness exits without cleaning up. */
export function trackPid(pid: number): () => void {
  install();
  foreignPids.add(pid);
  return () => foreignPids.delete(pid);
}

/** Registers a cleanup; returns a function that runs it now (once) and unregisters it. */
export function onCleanup(name: string, fn: Cleanup): () => Promise<void> {
  install();
  const entry = { name, fn };
  cleanups.push(entry);
  let ran = false;
  return async () => {
    if (ran) return;
    ran = true;
    const i = cleanups.indexOf(entry);
    if (i !== -1) cleanups.splice(i, 1);
    await fn();
  };
}

/** Runs every registered cleanup (newest first) and stops every tracked child. */
export function stopEverything(): Promise<void> {
  stopping ??= (async () => {
    while (cleanups.length > 0) {
      const { name, fn } = cleanups.pop()!;
      try {
        await fn();
      } catch (e) {
        process.stderr.write(`bench: cleanup ${name} failed: ${String(e)}\n`);
      }
    }
    await Promise.all([...children].map((c) => stopChild(c)));
  })();
  return stopping;
}

function install(): void {
  if (installed) return;
  installed = true;
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`\nbench: ${signal}: stopping everything the harness started…\n`);
    const force = setTimeout(() => process.exit(130), 20_000);
    force.unref();
    void stopEverything().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Last resort when the process exits without the async path: no waiting possible here, so KILL.
  process.on('exit', () => {
    for (const c of children) {
      if (c.pid !== undefined && c.exitCode === null) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    for (const pid of foreignPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}
