// Registered instances. Every query is scoped to the owning user: another user's instance is simply
// not found.
import type { Kysely, Updateable } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database, InstancesTable } from './schema.js';
import type { StoreRetry } from './store-retry.js';

export type InstanceRow = InstancesTable;

export class InstanceRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  async create(row: InstanceRow): Promise<void> {
    // Idempotent: the id is fresh and random, so a row already holding it is this insert's own.
    await this.retry.run('idempotent', () =>
      this.db
        .insertInto('instances')
        .values(row)
        .onConflict((oc) => oc.column('id').doNothing())
        .execute(),
    );
  }

  listByUser(userId: string): Promise<InstanceRow[]> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('instances')
        .selectAll()
        .where('user_id', '=', userId)
        .orderBy('created_at', 'asc')
        .orderBy('id')
        .execute(),
    );
  }

  findOwned(userId: string, id: string): Promise<InstanceRow | undefined> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('instances')
        .selectAll()
        .where('id', '=', id)
        .where('user_id', '=', userId)
        .executeTakeFirst(),
    );
  }

  /** Sets values (never adds to them), so running it twice answers the same: idempotent. */
  async update(userId: string, id: string, patch: Updateable<InstancesTable>): Promise<boolean> {
    const result = await this.retry.run('idempotent', () =>
      this.db
        .updateTable('instances')
        .set(patch)
        .where('id', '=', id)
        .where('user_id', '=', userId)
        .executeTakeFirst(),
    );
    return Number(result.numUpdatedRows) === 1;
  }

  /** Pins a host key only if none is pinned yet (two first connects cannot both pin). */
  async pinHostKey(id: string, fingerprint: string, now: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .updateTable('instances')
        .set({ host_key_fingerprint: fingerprint, updated_at: now })
        .where('id', '=', id)
        .where('host_key_fingerprint', 'is', null)
        .execute(),
    );
  }

  /** Not retried when in doubt: a second run would answer "not found" for a delete that worked. */
  async delete(userId: string, id: string): Promise<boolean> {
    const result = await this.retry.run('write', () =>
      this.db.deleteFrom('instances').where('id', '=', id).where('user_id', '=', userId).executeTakeFirst(),
    );
    return Number(result.numDeletedRows) === 1;
  }
}
