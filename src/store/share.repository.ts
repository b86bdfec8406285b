// Session shares: created by a session's owner, looked up by the hash of their token, spent (single use)
// and revoked with conditional updates, so two gateways racing on one share agree on who won.
import type { Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database, SharesTable } from './schema.js';
import type { StoreRetry } from './store-retry.js';
import { pages } from './pages.js';

export type ShareRow = SharesTable;

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
}
