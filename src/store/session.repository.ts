// Desktop sessions: who, which instance, where the desktop runs on it, and when it was last used.
import { sql, type Kysely, type Updateable } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database, SessionsTable } from './schema.js';
import type { StoreRetry } from './store-retry.js';
import { pages } from './pages.js';

/** Sessions per activity update statement (2 parameters each: far inside either database's limit). */
export type SessionRow = SessionsTable;

export class SessionRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  async create(row: SessionRow): Promise<void> {
    // Idempotent: the id is fresh and random, so a row already holding it is this insert's own. A
    // conflict on another constraint (one live session per instance) still fails.
    await this.retry.run('idempotent', () =>
      this.db
        .insertInto('sessions')
        .values(row)
        .onConflict((oc) => oc.column('id').doNothing())
        .execute(),
    );
  }

  /**
   * Inserts the session only while the user has fewer than `max` live sessions, serialised per user
   * by the database itself (the transaction locks the user's row first), so the limit holds even if
   * the cluster lock in front of it was granted twice across a Redis failover. Idempotent: a retry
   * whose first attempt committed finds its own row and answers true.
   */
  async createWithinLimit(row: SessionRow, max: number): Promise<boolean> {
    return this.retry.run('idempotent', () =>
      this.db.transaction().execute(async (trx) => {
        await trx
          .updateTable('users')
          .set((eb) => ({ id: eb.ref('id') }))
          .where('id', '=', row.user_id)
          .execute();
        const own = await trx.selectFrom('sessions').select('id').where('id', '=', row.id).executeTakeFirst();
        if (own) return true;
        const live = await trx
          .selectFrom('sessions')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('user_id', '=', row.user_id)
          .where('status', '<>', 'ended')
          .executeTakeFirstOrThrow();
        if (Number(live.n) >= max) return false;
        await trx.insertInto('sessions').values(row).execute();
        return true;
      }),
    );
  }

  findById(id: string): Promise<SessionRow | undefined> {
    return this.retry.run('read', () =>
      this.db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst(),
    );
  }

  findOwned(userId: string, id: string): Promise<SessionRow | undefined> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .selectAll()
        .where('id', '=', id)
        .where('user_id', '=', userId)
        .executeTakeFirst(),
    );
  }

  findLive(userId: string, instanceId: string): Promise<SessionRow | undefined> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .selectAll()
        .where('user_id', '=', userId)
        .where('instance_id', '=', instanceId)
        .where('status', '<>', 'ended')
        .executeTakeFirst(),
    );
  }

  async countLive(userId: string): Promise<number> {
    const row = await this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('user_id', '=', userId)
        .where('status', '<>', 'ended')
        .executeTakeFirstOrThrow(),
    );
    return Number(row.n);
  }

  /** Sessions not ended, cluster-wide (the capacity gauge). */
  async countAllLive(): Promise<number> {
    const row = await this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('status', '<>', 'ended')
        .executeTakeFirstOrThrow(),
    );
    return Number(row.n);
  }

  listLiveByUser(userId: string): Promise<(SessionRow & { instance_name: string })[]> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .innerJoin('instances', 'instances.id', 'sessions.instance_id')
        .selectAll('sessions')
        .select('instances.name as instance_name')
        .where('sessions.user_id', '=', userId)
        .where('sessions.status', '<>', 'ended')
        .orderBy('sessions.created_at', 'asc')
        .execute(),
    );
  }

  /** Active sessions whose last activity is older than `before`: candidates for the idle sweeper. */
  listIdleCandidates(before: number, limit: number): Promise<SessionRow[]> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .selectAll()
        .where('status', '=', 'active')
        .where('last_activity_at', '<', before)
        .orderBy('last_activity_at', 'asc')
        .limit(limit)
        .execute(),
    );
  }

  /** Of these ids, those whose session is ended or no longer exists. */
  async listEndedAmong(ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const live = new Set<string>();
    // Bounded statements, however many sessions a node holds viewers of.
    for (const page of pages(ids)) {
      const rows = await this.retry.run('read', () =>
        this.db
          .selectFrom('sessions')
          .select('id')
          .where('id', 'in', page)
          .where('status', '<>', 'ended')
          .execute(),
      );
      for (const r of rows) live.add(r.id);
    }
    return ids.filter((id) => !live.has(id));
  }

  /** Sessions stuck in 'starting' (their gateway died mid-start). */
  listStaleStarting(before: number, limit: number): Promise<SessionRow[]> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .selectAll()
        .where('status', '=', 'starting')
        .where('created_at', '<', before)
        .limit(limit)
        .execute(),
    );
  }

  /** Sets values (never adds to them): idempotent. */
  async update(id: string, patch: Updateable<SessionsTable>): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db.updateTable('sessions').set(patch).where('id', '=', id).execute(),
    );
  }

  /**
   * Ends a session unless it already ended; true when this call ended it. Not retried when in doubt:
   * a second run would answer false for an end that worked. With `stopDesktop` its desktop is due to be
   * stopped from `now` on (desktop-stopper.ts), in the same write; with `'if-started'` only when the row
   * has a desktop as this write finds it (a session read while 'starting', whose start may have recorded
   * its desktop since).
   */
  async markEnded(
    id: string,
    reason: string,
    now: number,
    stopDesktop: boolean | 'if-started' = false,
  ): Promise<boolean> {
    const started = sql<boolean>`display IS NOT NULL`;
    const stop =
      stopDesktop === true
        ? { stop_due_at: now, stop_attempts: 0 }
        : stopDesktop === 'if-started'
          ? {
              stop_due_at: sql<
                number | null
              >`CASE WHEN ${started} THEN CAST(${now} AS BIGINT) ELSE stop_due_at END`,
              stop_attempts: sql<number>`CASE WHEN ${started} THEN 0 ELSE stop_attempts END`,
            }
          : {};
    const result = await this.retry.run('write', () =>
      this.db
        .updateTable('sessions')
        .set({ status: 'ended', ended_at: now, end_reason: reason, ...stop })
        .where('id', '=', id)
        .where('status', '<>', 'ended')
        .executeTakeFirst(),
    );
    return Number(result.numUpdatedRows) === 1;
  }

  /**
   * A start finished: the session becomes active with its desktop, unless it was ended meanwhile (false;
   * nothing written). Not retried when in doubt, like markEnded.
   */
  async activate(id: string, patch: Updateable<SessionsTable>): Promise<boolean> {
    const result = await this.retry.run('write', () =>
      this.db
        .updateTable('sessions')
        .set({ ...patch, status: 'active' })
        .where('id', '=', id)
        .where('status', '=', 'starting')
        .executeTakeFirst(),
    );
    return Number(result.numUpdatedRows) === 1;
  }

  /** Ended sessions whose desktop stop is due by `now` (oldest first). */
  listStopsDue(now: number, limit: number): Promise<SessionRow[]> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .selectAll()
        .where('stop_due_at', 'is not', null)
        .where('stop_due_at', '<=', now)
        .orderBy('stop_due_at', 'asc')
        .limit(limit)
        .execute(),
    );
  }

  /**
   * That instance's sessions whose desktop stop is still pending, due now or later (a retry's backoff):
   * the stops an instance delete must run before the rows go with the instance.
   */
  listStopsPendingForInstance(instanceId: string, limit: number): Promise<SessionRow[]> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .selectAll()
        .where('instance_id', '=', instanceId)
        .where('stop_due_at', 'is not', null)
        .orderBy('stop_due_at', 'asc')
        .limit(limit)
        .execute(),
    );
  }

  /** Records the outcome of a stop try: `due` null = done (stopped, or given up). Sets values: idempotent. */
  async setStopDue(id: string, due: number | null, attempts: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .updateTable('sessions')
        .set({ stop_due_at: due, stop_attempts: attempts })
        .where('id', '=', id)
        .execute(),
    );
  }

  /**
   * One write for a batch of activity timestamps (never moves a timestamp backwards, so running the
   * transaction twice is harmless: idempotent).
   */
  async touchMany(entries: ReadonlyMap<string, number>): Promise<void> {
    if (entries.size === 0) return;
    const all = [...entries];
    // One statement per page of sessions, not one per session: at 10,000 viewers the per-session
    // statements (built, prepared and run one by one, all on the event loop) took ~3 s every flush.
    await this.retry.run('idempotent', () =>
      this.db.transaction().execute(async (trx) => {
        for (const page of pages(all)) {
          const values = sql.join(page.map(([id, at]) => sql`(${id}, CAST(${at} AS BIGINT))`));
          await sql`WITH v(id, at) AS (VALUES ${values})
            UPDATE sessions SET last_activity_at = v.at FROM v
            WHERE sessions.id = v.id AND sessions.last_activity_at < v.at`.execute(trx);
        }
      }),
    );
  }

  /** Live sessions cluster-wide, oldest first, with their owner and instance (admin list). */
  listLive(filter: {
    userId?: string;
    instanceId?: string;
    after?: { createdAt: number; id: string };
    limit: number;
  }): Promise<(SessionRow & { user_email: string; instance_name: string; instance_host: string })[]> {
    let q = this.db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .innerJoin('instances', 'instances.id', 'sessions.instance_id')
      .selectAll('sessions')
      .select([
        'users.email as user_email',
        'instances.name as instance_name',
        'instances.host as instance_host',
      ])
      .where('sessions.status', '<>', 'ended');
    if (filter.userId !== undefined) q = q.where('sessions.user_id', '=', filter.userId);
    if (filter.instanceId !== undefined) q = q.where('sessions.instance_id', '=', filter.instanceId);
    const after = filter.after;
    if (after) {
      q = q.where((eb) =>
        eb.or([
          eb('sessions.created_at', '>', after.createdAt),
          eb.and([eb('sessions.created_at', '=', after.createdAt), eb('sessions.id', '>', after.id)]),
        ]),
      );
    }
    const query = q.orderBy('sessions.created_at').orderBy('sessions.id').limit(filter.limit);
    return this.retry.run('read', () => query.execute());
  }

  /** Live sessions per user, for a page of users. */
  async countLiveByUsers(userIds: readonly string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    if (userIds.length === 0) return counts;
    const rows = await this.retry.run('read', () =>
      this.db
        .selectFrom('sessions')
        .select(['user_id', (eb) => eb.fn.countAll<number>().as('n')])
        .where('user_id', 'in', userIds)
        .where('status', '<>', 'ended')
        .groupBy('user_id')
        .execute(),
    );
    for (const r of rows) counts.set(r.user_id, Number(r.n));
    return counts;
  }

  /** A user's ended sessions, newest end first (connection history). */
  listEndedByUser(
    userId: string,
    before: { endedAt: number; id: string } | undefined,
    limit: number,
  ): Promise<(SessionRow & { instance_name: string | null })[]> {
    let q = this.db
      .selectFrom('sessions')
      .leftJoin('instances', 'instances.id', 'sessions.instance_id')
      .selectAll('sessions')
      .select('instances.name as instance_name')
      .where('sessions.user_id', '=', userId)
      .where('sessions.status', '=', 'ended');
    if (before) {
      q = q.where((eb) =>
        eb.or([
          eb('sessions.ended_at', '<', before.endedAt),
          eb.and([eb('sessions.ended_at', '=', before.endedAt), eb('sessions.id', '<', before.id)]),
        ]),
      );
    }
    const query = q.orderBy('sessions.ended_at', 'desc').orderBy('sessions.id', 'desc').limit(limit);
    return this.retry.run('read', () => query.execute());
  }
}
