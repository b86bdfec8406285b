// Usage: bytes each way and viewer-seconds, added as deltas to each session's totals and to the daily
// table (per user, instance and UTC day) in one transaction per activity flush.
import { sql, type Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database } from './schema.js';
import type { StoreRetry } from './store-retry.js';
import { pages } from './pages.js';

export interface UsageDelta {
  bytesToViewer: number;
  bytesFromViewer: number;
  viewerSeconds: number;
}

/** Usage of one session on one UTC day, not yet written. */
export interface UsageEntry extends UsageDelta {
  sessionId: string;
  userId: string;
  instanceId: string;
  /** YYYY-MM-DD, UTC. */
  day: string;
}

export interface DailyUsageRow extends UsageDelta {
  day: string;
  instanceId: string;
  /** Null once the instance was deleted (its usage stays). */
  instanceName: string | null;
}

export class UsageRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  /**
   * Adds every entry to its session's totals and to its user's day, in one transaction. It adds, so
   * it is a plain write: retried only when it certainly never ran. A batch that fails in doubt goes
   * back to the activity buffer and is written with the next one (so a commit whose answer was lost
   * is counted twice: at most one flush interval of usage, only across a failover).
   */
  async addMany(entries: readonly UsageEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.retry.run('write', () => this.addBatch(entries));
  }

  private async addBatch(entries: readonly UsageEntry[]): Promise<void> {
    // One row per (user, day, instance): PostgreSQL refuses an upsert that touches a row twice.
    const daily = new Map<string, UsageEntry>();
    for (const e of entries) {
      const key = `${e.userId} ${e.day} ${e.instanceId}`;
      const held = daily.get(key);
      if (!held) daily.set(key, { ...e });
      else {
        held.bytesToViewer += e.bytesToViewer;
        held.bytesFromViewer += e.bytesFromViewer;
        held.viewerSeconds += e.viewerSeconds;
      }
    }
    // One row per session for its totals (a session may have entries for two days): an UPDATE … FROM
    // applies only one of several matching rows.
    const perSession = new Map<string, UsageDelta>();
    for (const e of entries) {
      const held = perSession.get(e.sessionId);
      if (!held) perSession.set(e.sessionId, { ...e });
      else {
        held.bytesToViewer += e.bytesToViewer;
        held.bytesFromViewer += e.bytesFromViewer;
        held.viewerSeconds += e.viewerSeconds;
      }
    }
    const totals = [...perSession];
    await this.db.transaction().execute(async (trx) => {
      // One statement per page of sessions, not one per session: at 10,000 viewers the per-session
      // statements (built, prepared and run one by one, all on the event loop) took ~5 s every flush.
      for (const page of pages(totals)) {
        const values = sql.join(
          page.map(
            ([id, d]) =>
              sql`(${id}, CAST(${d.bytesToViewer} AS BIGINT), CAST(${d.bytesFromViewer} AS BIGINT), CAST(${d.viewerSeconds} AS DOUBLE PRECISION))`,
          ),
        );
        await sql`WITH v(id, bt, bf, vs) AS (VALUES ${values})
          UPDATE sessions SET bytes_to_viewer = bytes_to_viewer + v.bt,
            bytes_from_viewer = bytes_from_viewer + v.bf, viewer_seconds = viewer_seconds + v.vs
          FROM v WHERE sessions.id = v.id`.execute(trx);
      }
      // A user deleted meanwhile has nobody to bill: their usage goes with them (and must not make the
      // batch fail on the foreign key for ever).
      const userIds = [...new Set(entries.map((e) => e.userId))];
      const existing = new Set<string>();
      for (const page of pages(userIds)) {
        for (const r of await trx.selectFrom('users').select('id').where('id', 'in', page).execute()) {
          existing.add(r.id);
        }
      }
      const rows = [...daily.values()]
        .filter((e) => existing.has(e.userId))
        .map((e) => ({
          user_id: e.userId,
          day: e.day,
          instance_id: e.instanceId,
          bytes_to_viewer: e.bytesToViewer,
          bytes_from_viewer: e.bytesFromViewer,
          viewer_seconds: e.viewerSeconds,
        }));
      for (const page of pages(rows)) {
        await trx
          .insertInto('usage_daily')
          .values(page)
          .onConflict((oc) =>
            oc.columns(['user_id', 'day', 'instance_id']).doUpdateSet((eb) => ({
              bytes_to_viewer: eb('usage_daily.bytes_to_viewer', '+', eb.ref('excluded.bytes_to_viewer')),
              bytes_from_viewer: eb(
                'usage_daily.bytes_from_viewer',
                '+',
                eb.ref('excluded.bytes_from_viewer'),
              ),
              viewer_seconds: eb('usage_daily.viewer_seconds', '+', eb.ref('excluded.viewer_seconds')),
            })),
          )
          .execute();
      }
    });
  }

  /** A user's usage per day and instance, `from`…`to` inclusive (YYYY-MM-DD), oldest first. */
  async listDaily(userId: string, from: string, to: string): Promise<DailyUsageRow[]> {
    const rows = await this.retry.run('read', () => this.dailyRows(userId, from, to));
    return rows.map((r) => ({
      day: r.day,
      instanceId: r.instance_id,
      instanceName: r.instance_name,
      bytesToViewer: Number(r.bytes_to_viewer),
      bytesFromViewer: Number(r.bytes_from_viewer),
      viewerSeconds: Number(r.viewer_seconds),
    }));
  }

  private dailyRows(userId: string, from: string, to: string) {
    return this.db
      .selectFrom('usage_daily as u')
      .leftJoin('instances as i', 'i.id', 'u.instance_id')
      .select([
        'u.day',
        'u.instance_id',
        'i.name as instance_name',
        'u.bytes_to_viewer',
        'u.bytes_from_viewer',
        'u.viewer_seconds',
      ])
      .where('u.user_id', '=', userId)
      .where('u.day', '>=', from)
      .where('u.day', '<=', to)
      .orderBy('u.day')
      .orderBy('u.instance_id')
      .execute();
  }
}
