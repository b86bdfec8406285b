// Session shares: created by a session's owner, looked up by the hash of their token, spent (single use)
// and revoked with conditional updates, so two gateways racing on one share agree on who won.
import type { Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database, RemovedGuestsTable, SharesTable } from './schema.js';
import type { StoreRetry } from './store-retry.js';
import { pages } from './pages.js';

export type ShareRow = SharesTable;
export type RemovedGuestRow = RemovedGuestsTable;

export class ShareRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  async create(row: ShareRow): Promise<void> {
    // Idempotent: the id and token are fresh and random, so a row already holding the id is this insert's.
    await this.retry.run('idempotent', () =>
      this.db
        .insertInto('shares')
        .values(row)
        .onConflict((oc) => oc.column('id').doNothing())
        .execute(),
    );
  }

  findById(id: string): Promise<ShareRow | undefined> {
    return this.retry.run('read', () =>
      this.db.selectFrom('shares').selectAll().where('id', '=', id).executeTakeFirst(),
    );
  }

  findByTokenHash(tokenHash: string): Promise<ShareRow | undefined> {
    return this.retry.run('read', () =>
      this.db.selectFrom('shares').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst(),
    );
  }

  listBySession(sessionId: string): Promise<ShareRow[]> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('shares')
        .selectAll()
        .where('session_id', '=', sessionId)
        .orderBy('created_at', 'desc')
        .orderBy('id', 'desc')
        .limit(200)
        .execute(),
    );
  }

  /**
   * Records an exchange for a ticket. For a single-use share only the first one counts: false when it
   * was already spent (or revoked meanwhile). A plain write: retried only when it certainly never ran,
   * since a lost answer would otherwise spend the share for nobody.
   */
  async markUsed(id: string, singleUse: boolean, now: number): Promise<boolean> {
    if (!singleUse) {
      await this.retry.run('idempotent', () =>
        this.db
          .updateTable('shares')
          .set({ used_at: now })
          .where('id', '=', id)
          .where('used_at', 'is', null)
          .execute(),
      );
      return true;
    }
    const result = await this.retry.run('write', () =>
      this.db
        .updateTable('shares')
        .set({ used_at: now })
        .where('id', '=', id)
        .where('used_at', 'is', null)
        .where('revoked_at', 'is', null)
        .executeTakeFirst(),
    );
    return Number(result.numUpdatedRows) === 1;
  }

  /** Of these share ids, those revoked or gone. Bounded statements (500 ids each). */
  async listRevokedAmong(ids: readonly string[]): Promise<string[]> {
    const standing = new Set<string>();
    for (const page of pages(ids)) {
      const rows = await this.retry.run('read', () =>
        this.db
          .selectFrom('shares')
          .select('id')
          .where('id', 'in', page)
          .where('revoked_at', 'is', null)
          .execute(),
      );
      for (const r of rows) standing.add(r.id);
    }
    return ids.filter((id) => !standing.has(id));
  }

  /** False when it was revoked already. Idempotent: a second run finds it revoked. */
  async revoke(id: string, now: number): Promise<boolean> {
    const result = await this.retry.run('idempotent', () =>
      this.db
        .updateTable('shares')
        .set({ revoked_at: now })
        .where('id', '=', id)
        .where('revoked_at', 'is', null)
        .executeTakeFirst(),
    );
    return Number(result.numUpdatedRows) === 1;
  }

  /**
   * Records that the owner removed a guest, for a node that missed the command on pub/sub. Idempotent:
   * a viewer id is random per connection, so a row already holding it is this removal's. Rows past
   * their share's expiry are pruned in the same call (they can match no open viewer any more).
   */
  async recordGuestRemoved(row: RemovedGuestRow): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .insertInto('removed_guests')
        .values(row)
        .onConflict((oc) => oc.column('viewer_id').doNothing())
        .execute(),
    );
    await this.pruneRemovedGuests(row.removed_at);
  }

  /** Of these viewer ids, those removed by the owner: viewer id → session id. Bounded statements (500 ids each). */
  async listRemovedGuestsAmong(viewerIds: readonly string[]): Promise<Map<string, string>> {
    const removed = new Map<string, string>();
    for (const page of pages(viewerIds)) {
      const rows = await this.retry.run('read', () =>
        this.db
          .selectFrom('removed_guests')
          .select(['viewer_id', 'session_id'])
          .where('viewer_id', 'in', page)
          .execute(),
      );
      for (const r of rows) removed.set(r.viewer_id, r.session_id);
    }
    return removed;
  }

  /** Forgets removals whose share expired before `now`. */
  async pruneRemovedGuests(now: number): Promise<number> {
    const result = await this.retry.run('idempotent', () =>
      this.db.deleteFrom('removed_guests').where('expires_at', '<', now).executeTakeFirst(),
    );
    return Number(result.numDeletedRows);
  }
}
