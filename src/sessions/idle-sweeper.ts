// Every CLEANUP_INTERVAL_MS, ends sessions nobody has viewed for SESSION_TIMEOUT_MINUTES (the
// decision and the cluster-safety live in SessionService.sweepIdle; this only schedules it).
import type { Logger } from '../observability/logger.js';
import type { ActivityBuffer } from './activity-buffer.js';
import type { SessionService } from './session.service.js';

export class IdleSweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;

  constructor(
    private readonly sessions: Pick<SessionService, 'sweepIdle'>,
    private readonly activity: Pick<ActivityBuffer, 'snapshot'>,
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  /** One sweep; overlapping calls share the sweep in progress. */
  runOnce(): Promise<number> {
    this.running ??= this.sessions
      .sweepIdle(this.activity.snapshot())
      .then((n) => {
        if (n > 0) this.logger.info({ ended: n }, 'idle sessions ended');
        return n;
      })
      .catch((e: unknown) => {
        this.logger.warn({ err: e }, 'idle sweep failed; will retry next interval');
        return 0;
      })
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  start(): void {
    this.timer = setInterval(() => void this.runOnce(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
