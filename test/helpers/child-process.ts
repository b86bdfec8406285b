// Stopping a server a test helper started: a gentle signal, a hard one after a grace period.
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';

export async function stopChild(
  child: ChildProcess | null,
  gentle: NodeJS.Signals,
  hard: NodeJS.Signals,
  graceMs: number,
): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(gentle);
  const timer = setTimeout(() => child.kill(hard), graceMs);
  await exited;
  clearTimeout(timer);
}
