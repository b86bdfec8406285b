// Session activity (viewer attach/detach, bytes moving) and usage (bytes each way, seconds a viewer was
// attached) are noted in memory and written in one batch every few seconds — never one database write
// per heartbeat or per chunk. Usage is kept as deltas and added in SQL, so several gateway processes
// writing the same session add up; a batch that could not be written is merged back and retried with
// the next one, and the last flush at shutdown (after the viewers were closed) writes what is left.
import type { Logger } from '../observability/logger.js';
import type { SessionRepository } from '../store/session.repository.js';
import type { UsageDelta, UsageEntry, UsageRepository } from '../store/usage.repository.js';

export interface UsageOwner {
  sessionId: string;
  userId: string;
  instanceId: string;
}

export class ActivityBuffer {
  private pending = new Map<string, number>();
  private usage = new Map<string, UsageEntry>();
  private readonly samplers: (() => void)[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** Flushes run one after another, so a batch merged back after a failure is in the next one. */
  private inFlight: Promise<void> = Promise.resolve();

  constructor(
    private readonly sessions: Pick<SessionRepository, 'touchMany'>,
    private readonly usageStore: Pick<UsageRepository, 'addMany'>,
    private readonly logger: Logger,
  ) {}

  touch(sessionId: string, at: number): void {
    if ((this.pending.get(sessionId) ?? 0) < at) this.pending.set(sessionId, at);
  }

  /** Adds usage measured up to `at`; it is written to the UTC day of `at`. */
  addUsage(owner: UsageOwner, delta: UsageDelta, at: number): void {
    if (delta.bytesToViewer === 0 && delta.bytesFromViewer === 0 && delta.viewerSeconds === 0) return;
    this.mergeUsage({ ...owner, day: utcDay(at), ...delta });
  }

  /** `sample` runs at the start of every flush, to hand over what live viewers used since the last one. */
  addSampler(sample: () => void): void {
    this.samplers.push(sample);
  }

  /** What is noted but not yet written (the idle sweeper counts it too). */
  snapshot(): ReadonlyMap<string, number> {
    return this.pending;
  }

  /** Usage noted but not yet written. */
  pendingUsage(): readonly UsageEntry[] {
    return [...this.usage.values()];
  }

  flush(): Promise<void> {
    const run = this.inFlight.then(() => {
      for (const sample of this.samplers) sample();
      return Promise.all([this.flushTouches(), this.flushUsage()]).then(() => undefined);
    });
    this.inFlight = run.catch(() => undefined);
    return run;
  }

  private async flushTouches(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    try {
      await this.sessions.touchMany(batch);
    } catch (e) {
      // Keep what could not be written for the next round (the store may be briefly down).
      for (const [id, at] of batch) this.touch(id, at);
      this.logger.warn({ err: e }, 'could not write session activity; will retry');
    }
  }

  private async flushUsage(): Promise<void> {
    if (this.usage.size === 0) return;
    const batch = [...this.usage.values()];
    this.usage = new Map();
    try {
      await this.usageStore.addMany(batch);
    } catch (e) {
      for (const entry of batch) this.mergeUsage(entry);
      this.logger.warn({ err: e, entries: batch.length }, 'could not write session usage; will retry');
    }
  }

  private mergeUsage(entry: UsageEntry): void {
    const key = `${entry.sessionId} ${entry.day}`;
    const held = this.usage.get(key);
    if (!held) {
      this.usage.set(key, { ...entry });
      return;
    }
    held.bytesToViewer += entry.bytesToViewer;
    held.bytesFromViewer += entry.bytesFromViewer;
    held.viewerSeconds += entry.viewerSeconds;
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
