// Stops the desktops of ended sessions in the background (issue 9): a disconnect answers as soon as the
// session is ended, and the stop script (a second or more on the instance) runs here, at most
// `concurrency` at once, retried with exponential backoff when it fails.
//
// Nothing is lost when this process cannot finish a stop: ending a session writes `stop_due_at` in the
// same update (SessionRepository.markEnded), a failed try moves it on by the backoff, and only a stop
// that succeeded (or was given up) clears it. Every gateway's idle sweep (CLEANUP_INTERVAL_MS) runs
// `sweep()`, which takes up every stop that is due — one this process left behind when it died or
// drained, or one beyond its in-memory backlog. A try whose bookkeeping fails (the store or the lock
// service away: the session could not be read, or its next due time not written) is tried again here
// after a short backoff of its own, so a stop that fell into an outage runs within seconds of the store's
// return, not at the next sweep minutes later. A cluster-wide lock per session makes exactly one node
// run each try.
import { isAppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { Coordinator } from '../coordination/coordinator.js';
import type { SessionRepository, SessionRow } from '../store/session.repository.js';

/** `instance_deleted`: the instance went while the try ran; its delete runs that stop itself. */
export type StopOutcome = 'stopped' | 'retry' | 'gave_up' | 'instance_deleted';

export interface DesktopStopperOptions {
  /** Stops running at once in this process. */
  concurrency: number;
  /** Tries before a stop is given up (logged as an error for the operator). Default 8. */
  maxAttempts?: number;
  /** Backoff after the first failed try, doubled after each further one. Default 1000 ms. */
  baseBackoffMs?: number;
  /** Longest backoff. Default 300000 ms. */
  maxBackoffMs?: number;
  /** Stops waiting in memory at most; more stay in the database for the sweep. Default 10000. */
  backlog?: number;
  /** How long one try holds the session's stop lock. Default 120000 ms (the stop script has 30 s). */
  lockTtlMs?: number;
  /**
   * Longest wait before a try whose bookkeeping failed (store or lock service away) is made again, from
   * `baseBackoffMs` doubled per such failure in a row. Default 10000 ms: an outage costs at most this
   * much after its end. These retries are not counted as attempts (the stop itself did not fail).
   */
  maxStoreRetryMs?: number;
}

export interface DesktopStopperDeps {
  sessions: Pick<SessionRepository, 'findById' | 'listStopsDue' | 'setStopDue'>;
  coordinator: Pick<Coordinator, 'tryLock' | 'unlock'>;
  clock: Clock;
  logger: Logger;
  /** Stops that session's desktop on its instance (throws when it could not). */
  stop(row: SessionRow): Promise<void>;
  /** Each try's outcome (metrics, tests). */
  onOutcome?(outcome: StopOutcome, sessionId: string): void;
}

export class DesktopStopper {
  private readonly queue: string[] = [];
  /** Sessions queued, running or waiting for a retry timer in this process. */
  private readonly known = new Set<string>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  /** Tries in a row whose bookkeeping failed, by session (their backoff). */
  private readonly storeFailures = new Map<string, number>();
  private readonly runningJobs = new Set<Promise<void>>();
  private closed = false;
  private readonly maxAttempts: number;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly backlog: number;
  private readonly lockTtlMs: number;
  private readonly maxStoreRetryMs: number;

  constructor(
    private readonly deps: DesktopStopperDeps,
    private readonly options: DesktopStopperOptions,
  ) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new Error('DesktopStopper concurrency must be a whole number >= 1');
    }
    this.maxAttempts = options.maxAttempts ?? 8;
    this.baseBackoffMs = options.baseBackoffMs ?? 1_000;
    this.maxBackoffMs = options.maxBackoffMs ?? 300_000;
    this.backlog = options.backlog ?? 10_000;
    this.lockTtlMs = options.lockTtlMs ?? 120_000;
    this.maxStoreRetryMs = options.maxStoreRetryMs ?? 10_000;
  }

  /** Stops waiting to run or running in this process (the pending-stops gauge). */
  get pending(): number {
    return this.queue.length + this.runningJobs.size;
  }

  /** Stop that session's desktop soon (its `stop_due_at` is already written). */
  enqueue(sessionId: string): void {
    if (this.closed || this.known.has(sessionId)) return;
    // Beyond the backlog the row stays due in the database and a sweep picks it up.
    if (this.queue.length >= this.backlog) return;
    this.known.add(sessionId);
    this.queue.push(sessionId);
    this.pump();
  }

  /** Takes up every stop due by now that this process is not already handling; the count taken. */
  async sweep(limit = 200): Promise<number> {
    if (this.closed) return 0;
    let taken = 0;
    for (const row of await this.deps.sessions.listStopsDue(this.deps.clock.now(), limit)) {
      if (this.known.has(row.id)) continue;
      this.enqueue(row.id);
      taken++;
    }
    return taken;
  }

  /**
   * Runs that session's pending stop now, once, on the caller's request (not retried, no outcome
   * counted): an instance delete, after which no row is left for a retry or a sweep. Takes the session's
   * stop lock when it can, so no background try starts meanwhile; when a try holds it (here or on
   * another gateway), or the lock cannot be asked, stops anyway: that try may find the instance gone, and
   * a second stop of one desktop is harmless (the stop script acts only on processes carrying that
   * desktop's display-and-PID marker, and answers stopped when none is left). Throws what the stop threw.
   */
  async runNow(row: SessionRow): Promise<void> {
    const key = `desktop-stop:${row.id}`;
    const lock = await this.deps.coordinator.tryLock(key, this.lockTtlMs).catch(() => null);
    try {
      await this.deps.stop(row);
      await this.deps.sessions.setStopDue(row.id, null, row.stop_attempts);
    } finally {
      if (lock) await this.deps.coordinator.unlock(lock).catch(() => undefined);
    }
  }

  /** Resolves when nothing is queued or running here (retries waiting for their timer do not count). */
  async settled(): Promise<void> {
    while (this.runningJobs.size > 0) await Promise.race(this.runningJobs);
  }

  /**
   * No new stops; retry timers cleared; waits up to `graceMs` for the running ones. Whatever did not
   * finish stays due in the database for another gateway's sweep.
   */
  async close(graceMs: number): Promise<void> {
    this.closed = true;
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
    this.storeFailures.clear();
    this.queue.length = 0;
    if (this.runningJobs.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.runningJobs]),
      new Promise<void>((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
  }

  private pump(): void {
    while (!this.closed && this.runningJobs.size < this.options.concurrency && this.queue.length > 0) {
      const id = this.queue.shift()!;
      const job = this.runOnce(id)
        .then(
          () => void this.storeFailures.delete(id),
          (e: unknown) => {
            // Only the bookkeeping can fail here (the store, the lock service): the row stays due in the
            // database, and this process tries again soon (a sweep would also find it, minutes later).
            const failures = (this.storeFailures.get(id) ?? 0) + 1;
            this.storeFailures.set(id, failures);
            const retryInMs = Math.min(this.maxStoreRetryMs, this.baseBackoffMs * 2 ** (failures - 1));
            this.deps.logger.warn(
              { err: e, sessionId: id, retryInMs },
              'desktop stop bookkeeping failed; will try again',
            );
            this.retryLater(id, retryInMs);
          },
        )
        .finally(() => {
          this.runningJobs.delete(job);
          if (!this.retryTimers.has(id)) this.known.delete(id);
          this.pump();
        });
      this.runningJobs.add(job);
    }
  }

  private async runOnce(sessionId: string): Promise<void> {
    const lock = await this.deps.coordinator.tryLock(`desktop-stop:${sessionId}`, this.lockTtlMs);
    // Another gateway is on it; if its try fails it writes the next due time and a sweep comes back.
    if (!lock) return;
    try {
      const row = await this.deps.sessions.findById(sessionId);
      if (row?.stop_due_at === null || row?.stop_due_at === undefined) return;
      try {
        await this.deps.stop(row);
      } catch (e) {
        // The stop could not read its instance: the store's outage, not this stop's failure.
        if (isAppError(e) && e.code === 'STORE_UNAVAILABLE') throw e;
        await this.failed(row, e);
        return;
      }
      await this.deps.sessions.setStopDue(row.id, null, row.stop_attempts);
      this.deps.onOutcome?.('stopped', row.id);
    } finally {
      await this.deps.coordinator.unlock(lock).catch(() => undefined);
    }
  }

  private async failed(row: SessionRow, e: unknown): Promise<void> {
    const attempts = row.stop_attempts + 1;
    if (isAppError(e) && e.code === 'INSTANCE_NOT_FOUND') {
      // The instance was deleted after this try read the session (the row goes with it). Not this try's
      // failure: the delete ran every pending stop of the instance on its request, this one included,
      // before the rows went (SessionService.deleteInstance), and logged it if it could not.
      await this.deps.sessions.setStopDue(row.id, null, attempts);
      this.deps.logger.info(
        { sessionId: row.id, instanceId: row.instance_id, display: row.display },
        'the instance of an ended session was deleted while its background desktop stop ran; the delete stopped that desktop itself',
      );
      this.deps.onOutcome?.('instance_deleted', row.id);
      return;
    }
    if (attempts >= this.maxAttempts) {
      await this.deps.sessions.setStopDue(row.id, null, attempts);
      this.deps.logger.error(
        { err: e, sessionId: row.id, display: row.display, attempts },
        'gave up stopping the desktop of an ended session; it may still run on the instance',
      );
      this.deps.onOutcome?.('gave_up', row.id);
      return;
    }
    const backoff = Math.min(this.maxBackoffMs, this.baseBackoffMs * 2 ** (attempts - 1));
    await this.deps.sessions.setStopDue(row.id, this.deps.clock.now() + backoff, attempts);
    this.deps.logger.warn(
      { err: e, sessionId: row.id, display: row.display, attempts, retryInMs: backoff },
      'could not stop the desktop of an ended session; will retry',
    );
    this.deps.onOutcome?.('retry', row.id);
    this.retryLater(row.id, backoff);
  }

  /** Queues that session's stop again after `ms` (it stays known here meanwhile). */
  private retryLater(sessionId: string, ms: number): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.retryTimers.delete(sessionId);
      this.known.delete(sessionId);
      this.enqueue(sessionId);
    }, ms);
    timer.unref();
    this.retryTimers.set(sessionId, timer);
  }
}
