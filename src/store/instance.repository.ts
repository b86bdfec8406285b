// Registered instances. Every query is scoped to the owning user: another user's instance is simply
// not found.
import type { Kysely, Updateable } from 'kysely';
import type { Database, InstancesTable } from './schema.js';

export type InstanceRow = InstancesTable;

export class InstanceRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async create(row: InstanceRow): Promise<void> {
    await this.db.insertInto('instances').values(row).execute();
  }

  listByUser(userId: string): Promise<InstanceRow[]> {
    return this.db
      .selectFrom('instances')
      .selectAll()
      .where('user_id', '=', userId)
      .orderBy('created_at', 'asc')
      .orderBy('id')
      .execute();
  }

  findOwned(userId: string, id: string): Promise<InstanceRow | undefined> {
    return this.db
      .selectFrom('instances')
      .selectAll()
      .where('id', '=', id)
      .where('user_id', '=', userId)
      .executeTakeFirst();
  }

  async update(userId: string, id: string, patch: Updateable<InstancesTable>): Promise<boolean> {
    const result = await this.db
      .updateTable('instances')
      .set(patch)
      .where('id', '=', id)
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  /** Pins a host key only if none is pinned yet (two first connects cannot both pin). */
  async pinHostKey(id: string, fingerprint: string, now: number): Promise<void> {
    await this.db
      .updateTable('instances')
      .set({ host_key_fingerprint: fingerprint, updated_at: now })
      .where('id', '=', id)
      .where('host_key_fingerprint', 'is', null)
      .execute();
  }

  async delete(userId: string, id: string): Promise<boolean> {
    const result = await this.db
      .deleteFrom('instances')
      .where('id', '=', id)
      .where('user_id', '=', userId)
      .executeTakeFirst();
    return Number(result.numDeletedRows) === 1;
  }
}
