// The audit sink every service calls: `record(type, event)` stamps the time, node, actor and source
// IP, writes the event as a structured log line at once, and queues the row. Rows are written in
// batches off the request's path by a write-behind buffer (store/write-behind.ts, the rule session
// activity follows), never awaited by a request or the relay: a store outage is waited out with the
// rows held in memory, in order; past the memory bound, or for a batch the store keeps refusing, rows
// are dropped, counted in clouddesk_buffer_dropped_total{buffer="audit"} and logged — never silently
// (and each is in the log lines already).
import { randomBytes } from 'node:crypto';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { AuditRepository, AuditRow } from '../store/audit.repository.js';
import { WriteBehindBuffer, type WriteBehindOptions } from '../store/write-behind.js';
import { cleanDetails, type AuditEvent, type AuditEventType } from './audit-events.js';
import { currentRequestContext } from './request-context.js';

/** What services depend on: one method. */
export interface AuditSink {
  record(type: AuditEventType, event?: AuditEvent): void;
}

export const noAudit: AuditSink = { record: () => undefined };

export interface AuditLogOptions extends Pick<WriteBehindOptions<AuditRow>, 'maxEntries' | 'onDropped'> {
  nodeId: string;
}

const SYSTEM = 'system';

export class AuditLog implements AuditSink {
  private readonly buffer: WriteBehindBuffer<AuditRow>;
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;
  private droppedTotal = 0;

  constructor(
    private readonly deps: {
      repo: Pick<AuditRepository, 'appendMany'>;
      clock: Clock;
      logger: Logger;
    },
    private readonly options: AuditLogOptions,
  ) {
    this.buffer = new WriteBehindBuffer<AuditRow>({
      name: 'audit',
      key: (row) => row.id,
      write: (batch) => deps.repo.appendMany(batch),
      logger: deps.logger,
      maxEntries: options.maxEntries ?? 50_000,
      onDropped: (drop) => {
        this.droppedTotal += drop.count;
        options.onDropped?.(drop);
        // One line for the first loss and then every thousandth, not one per row of a long outage.
        const before = this.droppedTotal - drop.count;
        const crossed = Math.floor(before / 1000) !== Math.floor(this.droppedTotal / 1000);
        if (drop.reason === 'refused' || before === 0 || crossed) {
          deps.logger.error(
            { buffer: 'audit', reason: drop.reason, droppedTotal: this.droppedTotal },
            'audit events dropped (they are in the log lines)',
          );
        }
      },
    });
  }

  record(type: AuditEventType, event: AuditEvent = {}): void {
    const context = currentRequestContext();
    const at = this.deps.clock.now();
    const actor = event.actor ?? context?.userId ?? SYSTEM;
    const row: AuditRow = {
      id: this.nextId(at),
      at,
      actor,
      ip: event.ip !== undefined ? event.ip : (context?.ip ?? null),
      node_id: this.options.nodeId,
      type,
      subject_user_id:
        event.subjectUserId !== undefined ? event.subjectUserId : actor === SYSTEM ? null : actor,
      target_id: event.targetId ?? null,
      details: JSON.stringify(cleanDetails(event.details)),
    };
    this.deps.logger.info(
      {
        audit: {
          type,
          actor: row.actor,
          ip: row.ip,
          subjectUserId: row.subject_user_id,
          targetId: row.target_id,
          details: JSON.parse(row.details) as unknown,
        },
      },
      'audit event',
    );
    this.buffer.add(row);
  }

  /**
   * Ids sort as recorded: the time, a per-process sequence, then randomness (rows of one millisecond
   * keep their order in the newest-first listing and its cursor).
   */
  private nextId(at: number): string {
    this.seq = (this.seq + 1) % 0x1000000;
    return `${at.toString(16).padStart(12, '0')}-${this.seq.toString(16).padStart(6, '0')}-${randomBytes(6).toString('hex')}`;
  }

  /** Rows recorded but not yet written. */
  get pending(): number {
    return this.buffer.size;
  }

  /** Rows dropped so far (memory bound, or refused by the store). */
  get dropped(): number {
    return this.droppedTotal;
  }

  /** True while the store is down and rows are held for it. */
  get waitingForStore(): boolean {
    return this.buffer.waitingForStore;
  }

  /** Writes what is held (never rejects: a failed batch is kept, or dropped and counted). */
  flush(): Promise<void> {
    return this.buffer.flush();
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
  }

  /** Stops the timer and writes what is left. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }
}
