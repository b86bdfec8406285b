// Users and their refresh tokens.
import type { Insertable, Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database, RefreshTokensTable, UsersTable } from './schema.js';
import type { StoreRetry } from './store-retry.js';

export type UserRow = UsersTable;
export type RefreshTokenRow = RefreshTokensTable;

export class UserRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  /**
   * False when the email is taken. Idempotent: run again after its answer was lost, it finds its own
   * row (same id) and answers true again.
   */
  create(user: UserRow): Promise<boolean> {
    return this.retry.run('idempotent', async () => {
      const result = await this.db
        .insertInto('users')
        .values(user)
        .onConflict((oc) => oc.column('email').doNothing())
        .executeTakeFirst();
      if (Number(result.numInsertedOrUpdatedRows ?? 0) === 1) return true;
      const holder = await this.db
        .selectFrom('users')
        .select('id')
        .where('email', '=', user.email)
        .executeTakeFirst();
      return holder?.id === user.id;
    });
  }

  findByEmail(email: string): Promise<UserRow | undefined> {
    return this.retry.run('read', () =>
      this.db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirst(),
    );
  }

  findById(id: string): Promise<UserRow | undefined> {
    return this.retry.run('read', () =>
      this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst(),
    );
  }

  /** Nullable columns (parent_id, used_at, revoked_at) may be left out: they start null. */
  async addRefreshToken(row: Insertable<RefreshTokensTable>): Promise<void> {
    // Idempotent: the id is fresh and random, so a row already holding it is this insert's own.
    await this.retry.run('idempotent', () =>
      this.db
        .insertInto('refresh_tokens')
        .values(row)
        .onConflict((oc) => oc.column('id').doNothing())
        .execute(),
    );
  }

  findRefreshToken(id: string): Promise<RefreshTokenRow | undefined> {
    return this.retry.run('read', () =>
      this.db.selectFrom('refresh_tokens').selectAll().where('id', '=', id).executeTakeFirst(),
    );
  }

  /**
   * Marks a token used; false when it was already used or revoked (a concurrent refresh won). Not
   * retried when in doubt: a second run would answer false and look like reuse.
   */
  markRefreshTokenUsed(id: string, now: number): Promise<boolean> {
    return this.retry.run('write', () => this.markUsed(id, now));
  }

  private async markUsed(id: string, now: number): Promise<boolean> {
    const result = await this.db
      .updateTable('refresh_tokens')
      .set({ used_at: now })
      .where('id', '=', id)
      .where('used_at', 'is', null)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  /** The unused, unrevoked, unexpired token issued in exchange for `parentId`, if there is one. */
  findLiveSuccessor(parentId: string, now: number): Promise<RefreshTokenRow | undefined> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('refresh_tokens')
        .selectAll()
        .where('parent_id', '=', parentId)
        .where('used_at', 'is', null)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .executeTakeFirst(),
    );
  }

  /** True while some token of the family can still be used (the sign-in has not been ended). */
  async familyIsLive(familyId: string, now: number): Promise<boolean> {
    const row = await this.retry.run('read', () =>
      this.db
        .selectFrom('refresh_tokens')
        .select('id')
        .where('family_id', '=', familyId)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .limit(1)
        .executeTakeFirst(),
    );
    return row !== undefined;
  }

  /**
   * Revokes one token that was never used; false when it was used or revoked meanwhile (its holder
   * refreshed with it first, or the family was ended). Not retried when in doubt, as above.
   */
  async revokeUnusedRefreshToken(id: string, now: number): Promise<boolean> {
    const result = await this.retry.run('write', () =>
      this.db
        .updateTable('refresh_tokens')
        .set({ revoked_at: now })
        .where('id', '=', id)
        .where('used_at', 'is', null)
        .where('revoked_at', 'is', null)
        .executeTakeFirst(),
    );
    return Number(result.numUpdatedRows) === 1;
  }

  async revokeFamily(familyId: string, now: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .updateTable('refresh_tokens')
        .set({ revoked_at: now })
        .where('family_id', '=', familyId)
        .where('revoked_at', 'is', null)
        .execute(),
    );
  }

  async revokeAllForUser(userId: string, now: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .updateTable('refresh_tokens')
        .set({ revoked_at: now })
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .execute(),
    );
  }

  async deleteExpiredRefreshTokens(now: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db.deleteFrom('refresh_tokens').where('expires_at', '<', now).execute(),
    );
  }
}
