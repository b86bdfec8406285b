// The audit trail's rows: appended in batches, read newest first with a (at, id) cursor, and deleted
// only by the retention sweep.
import type { Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { AuditEventsTable, Database } from './schema.js';
import type { StoreRetry } from './store-retry.js';

export type AuditRow = AuditEventsTable;

export interface AuditFilter {
  actor?: string;
  type?: string;
  /** Matches the target id or the subject user. */
  target?: string;
  subjectUserId?: string;
  from?: number;
  to?: number;
  /** Rows before this (at, id), newest first. */
  before?: { at: number; id: string };
  limit: number;
}

export class AuditRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  /**
   * One transaction for a batch, so a batch is written whole or not at all (and retried whole).
   * Idempotent: ids are fixed per row, and a row already there is this batch's own.
   */
  async appendMany(rows: readonly AuditRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.retry.run('idempotent', () =>
      this.db.transaction().execute(async (trx) => {
        // Chunks keep each statement well under SQLite's and PostgreSQL's bound-parameter limits.
        for (let i = 0; i < rows.length; i += 200) {
          await trx
            .insertInto('audit_events')
            .values(rows.slice(i, i + 200))
            .onConflict((oc) => oc.column('id').doNothing())
            .execute();
        }
      }),
    );
  }

  list(filter: AuditFilter): Promise<AuditRow[]> {
    let q = this.db.selectFrom('audit_events').selectAll();
    if (filter.actor !== undefined) q = q.where('actor', '=', filter.actor);
    if (filter.type !== undefined) q = q.where('type', '=', filter.type);
    const target = filter.target;
    if (target !== undefined)
      q = q.where((eb) => eb.or([eb('target_id', '=', target), eb('subject_user_id', '=', target)]));
    if (filter.subjectUserId !== undefined) q = q.where('subject_user_id', '=', filter.subjectUserId);
    if (filter.from !== undefined) q = q.where('at', '>=', filter.from);
    if (filter.to !== undefined) q = q.where('at', '<', filter.to);
    const before = filter.before;
    if (before) {
      q = q.where((eb) =>
        eb.or([eb('at', '<', before.at), eb.and([eb('at', '=', before.at), eb('id', '<', before.id)])]),
      );
    }
    const query = q.orderBy('at', 'desc').orderBy('id', 'desc').limit(filter.limit);
    return this.retry.run('read', () => query.execute());
  }

  /** Deletes rows older than `before`; returns how many. */
  async deleteOlderThan(before: number): Promise<number> {
    const result = await this.retry.run('idempotent', () =>
      this.db.deleteFrom('audit_events').where('at', '<', before).executeTakeFirst(),
    );
    return Number(result.numDeletedRows);
  }
}
