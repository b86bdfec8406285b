// Users and their refresh tokens.
import { sql, type Insertable, type Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database, InvitesTable, RefreshTokensTable, UserRole, UsersTable } from './schema.js';
import type { StoreRetry } from './store-retry.js';
import { pages } from './pages.js';

export type UserRow = UsersTable;
export type RefreshTokenRow = RefreshTokensTable;
export type InviteRow = InvitesTable;
/** A new account: role defaults to 'user', the account starts enabled and never signed in. */
export type NewUserRow = Omit<UserRow, 'role' | 'disabled_at' | 'last_sign_in_at' | 'signed_out_at'> &
  Partial<UserRow>;

export interface UserListFilter {
  /** Part of the email, case-insensitive. */
  q?: string;
  role?: UserRole;
  disabled?: boolean;
  /** Rows after this (created_at, id) in ascending order. */
  after?: { createdAt: number; id: string };
  limit: number;
}

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
  create(user: NewUserRow): Promise<boolean> {
    return this.retry.run('idempotent', async () => {
      const result = await this.db
        .insertInto('users')
        .values({ role: 'user', disabled_at: null, last_sign_in_at: null, signed_out_at: null, ...user })
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

  /** Every refresh token revoked, and the time kept on the user (a node that missed the pub/sub command catches up). */
  async revokeAllForUser(userId: string, now: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .updateTable('refresh_tokens')
        .set({ revoked_at: now })
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .execute(),
    );
    await this.retry.run('idempotent', () =>
      this.db.updateTable('users').set({ signed_out_at: now }).where('id', '=', userId).execute(),
    );
  }

  /**
   * Of these users, the time before which their viewers must be closed: Infinity for a disabled or
   * deleted account, the last sign-out everywhere otherwise; users with neither are left out.
   * Bounded statements (500 ids each), however many users a node holds viewers of.
   */
  async listClosedBefore(ids: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const page of pages(ids)) {
      const rows = await this.retry.run('read', () =>
        this.db
          .selectFrom('users')
          .select(['id', 'disabled_at', 'signed_out_at'])
          .where('id', 'in', page)
          .execute(),
      );
      const found = new Set<string>();
      for (const r of rows) {
        found.add(r.id);
        if (r.disabled_at !== null) out.set(r.id, Infinity);
        else if (r.signed_out_at !== null) out.set(r.id, Number(r.signed_out_at));
      }
      for (const id of page) if (!found.has(id)) out.set(id, Infinity);
    }
    return out;
  }

  async deleteExpiredRefreshTokens(now: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db.deleteFrom('refresh_tokens').where('expires_at', '<', now).execute(),
    );
  }

  /**
   * Makes `id` the admin when it is the oldest account and there is no admin yet (the first account
   * of an empty install). One statement, so two registrations racing cannot both become admin.
   */
  async promoteIfFirst(id: string): Promise<boolean> {
    const result = await this.retry.run('idempotent', () =>
      this.db
        .updateTable('users')
        .set({ role: 'admin' })
        .where('id', '=', id)
        .where(
          'id',
          '=',
          this.db.selectFrom('users').select('id').orderBy('created_at').orderBy('id').limit(1),
        )
        .where((eb) =>
          eb.not(eb.exists(eb.selectFrom('users as a').select('a.id').where('a.role', '=', 'admin'))),
        )
        .executeTakeFirst(),
    );
    if (Number(result.numUpdatedRows) === 1) return true;
    // Run again after its answer was lost, it finds its own promotion.
    return (await this.findById(id))?.role === 'admin';
  }

  async setLastSignIn(id: string, at: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db.updateTable('users').set({ last_sign_in_at: at }).where('id', '=', id).execute(),
    );
  }

  async setRole(id: string, role: UserRole): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db.updateTable('users').set({ role }).where('id', '=', id).execute(),
    );
  }

  async setDisabled(id: string, disabledAt: number | null): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db.updateTable('users').set({ disabled_at: disabledAt }).where('id', '=', id).execute(),
    );
  }

  /** Enabled admins, optionally leaving one account out (the one about to be demoted or disabled). */
  async countActiveAdmins(except?: string): Promise<number> {
    let q = this.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('role', '=', 'admin')
      .where('disabled_at', 'is', null);
    if (except !== undefined) q = q.where('id', '<>', except);
    const row = await this.retry.run('read', () => q.executeTakeFirstOrThrow());
    return Number(row.n);
  }

  list(filter: UserListFilter): Promise<UserRow[]> {
    let q = this.db.selectFrom('users').selectAll();
    if (filter.q) {
      const pattern = `%${filter.q.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      q = q.where(sql<boolean>`email like ${pattern} escape '\\'`);
    }
    if (filter.role) q = q.where('role', '=', filter.role);
    if (filter.disabled !== undefined) q = q.where('disabled_at', filter.disabled ? 'is not' : 'is', null);
    const after = filter.after;
    if (after) {
      q = q.where((eb) =>
        eb.or([
          eb('created_at', '>', after.createdAt),
          eb.and([eb('created_at', '=', after.createdAt), eb('id', '>', after.id)]),
        ]),
      );
    }
    const query = q.orderBy('created_at').orderBy('id').limit(filter.limit);
    return this.retry.run('read', () => query.execute());
  }

  async addInvite(row: InviteRow): Promise<void> {
    // Idempotent: a fresh random id.
    await this.retry.run('idempotent', () =>
      this.db
        .insertInto('invites')
        .values(row)
        .onConflict((oc) => oc.column('id').doNothing())
        .execute(),
    );
  }

  /**
   * Uses an invite once: true when this call consumed it (known, unused, unexpired, and for this
   * email if it names one). Not retried when in doubt: a second run would find it used.
   */
  async consumeInvite(tokenHash: string, email: string, userId: string, now: number): Promise<boolean> {
    const result = await this.retry.run('write', () =>
      this.db
        .updateTable('invites')
        .set({ used_at: now, used_by: userId })
        .where('token_hash', '=', tokenHash)
        .where('used_at', 'is', null)
        .where('expires_at', '>', now)
        .where((eb) => eb.or([eb('email', 'is', null), eb('email', '=', email)]))
        .executeTakeFirst(),
    );
    return Number(result.numUpdatedRows) === 1;
  }

  async deleteUser(id: string): Promise<void> {
    await this.retry.run('idempotent', () => this.db.deleteFrom('users').where('id', '=', id).execute());
  }
}
