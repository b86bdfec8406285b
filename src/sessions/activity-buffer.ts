// Session activity (viewer attach/detach, bytes moving) is noted in memory and written in one batch
// every few seconds — never one database write per heartbeat or per chunk.
import type { Logger } from '../observability/logger.js';
import type { SessionRepository } from '../store/session.repository.js';

export class ActivityBuffer {
  private pending = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly sessions: Pick<SessionRepository, 'touchMany'>,
    private readonly logger: Logger,
  ) {}

  touch(sessionId: string, at: number): void {
    if ((this.pending.get(sessionId) ?? 0) < at) this.pending.set(sessionId, at);
  }

  /** What is noted but not yet written (the idle sweeper counts it too). */
  snapshot(): ReadonlyMap<string, number> {
    return this.pending;
  }

  async flush(): Promise<void> {
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
