// Session activity (viewer attach/detach, bytes moving) and usage (bytes each way, seconds a viewer was
// attached) are noted in memory and written in one batch every few seconds — never one database write
// per heartbeat or per chunk. Usage is kept as deltas and added in SQL, so several gateway processes
// writing the same session add up. Both are write-behind buffers (store/write-behind.ts): a batch the
// store could not take is merged back and written once it is back, and the last flush at shutdown
// (after the viewers were closed) writes what is left.
import type { Logger } from '../observability/logger.js';
import { WriteBehindBuffer, type WriteBehindOptions } from '../store/write-behind.js';
import type { SessionRepository } from '../store/session.repository.js';
import type { UsageDelta, UsageEntry, UsageRepository } from '../store/usage.repository.js';

export interface UsageOwner {
  sessionId: string;
  userId: string;
  instanceId: string;
}

export class ActivityBuffer {
  private readonly touches: WriteBehindBuffer<{ sessionId: string; at: number }>;
  private readonly usage: WriteBehindBuffer<UsageEntry>;
  private readonly samplers: (() => void)[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    sessions: Pick<SessionRepository, 'touchMany'>,
    usageStore: Pick<UsageRepository, 'addMany'>,
    logger: Logger,
    options: Pick<WriteBehindOptions<unknown>, 'maxEntries' | 'onDropped'> = {},
  ) {
    this.touches = new WriteBehindBuffer({
      ...options,
      name: 'session activity',
      key: (t) => t.sessionId,
      merge: (held, next) => (next.at > held.at ? next : held),
      write: (batch) => sessions.touchMany(new Map(batch.map((t) => [t.sessionId, t.at]))),
      logger,
    });
    this.usage = new WriteBehindBuffer<UsageEntry>({
      ...options,
      name: 'session usage',
      key: (e) => `${e.sessionId} ${e.day}`,
      merge: (held, next) => ({
        ...held,
        bytesToViewer: held.bytesToViewer + next.bytesToViewer,
        bytesFromViewer: held.bytesFromViewer + next.bytesFromViewer,
        viewerSeconds: held.viewerSeconds + next.viewerSeconds,
      }),
      write: (batch) => usageStore.addMany(batch),
      logger,
    });
  }

  touch(sessionId: string, at: number): void {
    this.touches.add({ sessionId, at });
  }

  /** Adds usage measured up to `at`; it is written to the UTC day of `at`. */
  addUsage(owner: UsageOwner, delta: UsageDelta, at: number): void {
    if (delta.bytesToViewer === 0 && delta.bytesFromViewer === 0 && delta.viewerSeconds === 0) return;
    this.usage.add({ ...owner, day: utcDay(at), ...delta });
  }

  /** `sample` runs at the start of every flush, to hand over what live viewers used since the last one. */
  addSampler(sample: () => void): void {
    this.samplers.push(sample);
  }

  /** What is noted but not yet written (the idle sweeper counts it too). */
  snapshot(): ReadonlyMap<string, number> {
    return new Map(this.touches.pending().map((t) => [t.sessionId, t.at]));
  }

  /** Usage noted but not yet written. */
  pendingUsage(): readonly UsageEntry[] {
    return this.usage.pending();
  }

  /** True while the store is unavailable and rows are held for it. */
  get waitingForStore(): boolean {
    return this.touches.waitingForStore || this.usage.waitingForStore;
  }

  flush(): Promise<void> {
    for (const sample of this.samplers) sample();
    return Promise.all([this.touches.flush(), this.usage.flush()]).then(() => undefined);
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }
}

/** The UTC calendar day of a millisecond timestamp, as YYYY-MM-DD. */
export function utcDay(at: number): string {
  return new Date(at).toISOString().slice(0, 10);
}
