// AUDIT_RETENTION_DAYS: every CLEANUP_INTERVAL_MS one node (whichever takes the cluster lock) deletes
// audit rows older than the retention, read from the injected clock.
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { Coordinator } from '../coordination/coordinator.js';
import type { AuditRepository } from '../store/audit.repository.js';

const LOCK_KEY = 'audit-retention';
const LOCK_TTL_MS = 60_000;

export class AuditRetention {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number | null> | null = null;

  constructor(
    private readonly deps: {
      repo: Pick<AuditRepository, 'deleteOlderThan'>;
      coordinator: Pick<Coordinator, 'tryLock' | 'unlock'>;
      clock: Clock;
      logger: Logger;
    },
    private readonly options: { retentionDays: number; intervalMs: number },
  ) {}

  /** One sweep: rows deleted, or null when another node holds the lock (it is sweeping). */
  runOnce(): Promise<number | null> {
    this.running ??= this.sweep()
      .catch((e: unknown) => {
        this.deps.logger.warn({ err: e }, 'audit retention sweep failed; will retry next interval');
        return 0;
      })
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  private async sweep(): Promise<number | null> {
    const lock = await this.deps.coordinator.tryLock(LOCK_KEY, LOCK_TTL_MS);
    if (!lock) return null;
    try {
      const cutoff = this.deps.clock.now() - this.options.retentionDays * 86_400_000;
      const deleted = await this.deps.repo.deleteOlderThan(cutoff);
      if (deleted > 0) this.deps.logger.info({ deleted, cutoff }, 'audit events past retention deleted');
      return deleted;
    } finally {
      await this.deps.coordinator.unlock(lock);
    }
  }

  start(): void {
    this.timer = setInterval(() => void this.runOnce(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
