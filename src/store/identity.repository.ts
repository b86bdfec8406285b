// External identities (OIDC issuer + subject → account) and TOTP secrets with their recovery codes.
import type { Kysely } from 'kysely';
import type { StoreAccess } from './database.js';
import type { Database, UserIdentitiesTable, UserTotpTable } from './schema.js';
import type { StoreRetry } from './store-retry.js';

export type IdentityRow = UserIdentitiesTable;
export type TotpRow = UserTotpTable;

export class IdentityRepository {
  private readonly db: Kysely<Database>;
  private readonly retry: StoreRetry;

  constructor(store: StoreAccess) {
    this.db = store.db;
    this.retry = store.retry;
  }

  findIdentity(issuer: string, subject: string): Promise<IdentityRow | undefined> {
    return this.retry.run('read', () =>
      this.db
        .selectFrom('user_identities')
        .selectAll()
        .where('issuer', '=', issuer)
        .where('subject', '=', subject)
        .executeTakeFirst(),
    );
  }

  /** False when this (issuer, subject) is already linked to another account. Idempotent. */
  linkIdentity(row: IdentityRow): Promise<boolean> {
    return this.retry.run('idempotent', async () => {
      await this.db
        .insertInto('user_identities')
        .values(row)
        .onConflict((oc) => oc.columns(['issuer', 'subject']).doNothing())
        .execute();
      const holder = await this.findIdentityNow(row.issuer, row.subject);
      return holder?.user_id === row.user_id;
    });
  }

  private findIdentityNow(issuer: string, subject: string): Promise<IdentityRow | undefined> {
    return this.db
      .selectFrom('user_identities')
      .selectAll()
      .where('issuer', '=', issuer)
      .where('subject', '=', subject)
      .executeTakeFirst();
  }

  async touchIdentity(issuer: string, subject: string, email: string | null, at: number): Promise<void> {
    await this.retry.run('idempotent', () =>
      this.db
        .updateTable('user_identities')
        .set({ email, last_sign_in_at: at })
        .where('issuer', '=', issuer)
        .where('subject', '=', subject)
        .execute(),
    );
  }

  findTotp(userId: string): Promise<TotpRow | undefined> {
    return this.retry.run('read', () =>
      this.db.selectFrom('user_totp').selectAll().where('user_id', '=', userId).executeTakeFirst(),
    );
  }

  /** A new, unconfirmed secret replaces an unconfirmed one; an enabled one stays (false). */
  putPendingTotp(row: TotpRow): Promise<boolean> {
    return this.retry.run('idempotent', async () => {
      await this.db
        .deleteFrom('user_totp')
        .where('user_id', '=', row.user_id)
        .where('enabled_at', 'is', null)
        .execute();
      await this.db
        .insertInto('user_totp')
        .values(row)
        .onConflict((oc) => oc.column('user_id').doNothing())
        .execute();
      const now = await this.db
        .selectFrom('user_totp')
        .select('secret_ciphertext')
        .where('user_id', '=', row.user_id)
        .executeTakeFirst();
      return now?.secret_ciphertext === row.secret_ciphertext;
    });
  }

  /**
   * Accepts a code's time step only when it is newer than the last one accepted (conditional, so two
   * sign-ins racing with one code cannot both win). Also enables a pending secret when `enableAt` is set.
   */
  acceptStep(userId: string, step: number, enableAt: number | null): Promise<boolean> {
    return this.retry.run('write', async () => {
      let q = this.db
        .updateTable('user_totp')
        .set(enableAt === null ? { last_step: step } : { last_step: step, enabled_at: enableAt })
        .where('user_id', '=', userId)
        .where((eb) => eb.or([eb('last_step', 'is', null), eb('last_step', '<', step)]));
      q = enableAt === null ? q.where('enabled_at', 'is not', null) : q.where('enabled_at', 'is', null);
      const result = await q.executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    });
  }

  /** Turns TOTP off: the secret and every recovery code go. */
  async deleteTotp(userId: string): Promise<boolean> {
    return this.retry.run('idempotent', async () => {
      await this.db.deleteFrom('totp_recovery_codes').where('user_id', '=', userId).execute();
      const result = await this.db.deleteFrom('user_totp').where('user_id', '=', userId).executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    });
  }

  async replaceRecoveryCodes(userId: string, hashes: readonly string[]): Promise<void> {
    await this.retry.run('idempotent', async () => {
      await this.db.transaction().execute(async (tx) => {
        await tx.deleteFrom('totp_recovery_codes').where('user_id', '=', userId).execute();
        await tx
          .insertInto('totp_recovery_codes')
          .values(hashes.map((code_hash) => ({ code_hash, user_id: userId, used_at: null })))
          .execute();
      });
    });
  }

  /** Spends a recovery code once; false when unknown or already used. */
  useRecoveryCode(userId: string, hash: string, at: number): Promise<boolean> {
    return this.retry.run('write', async () => {
      const result = await this.db
        .updateTable('totp_recovery_codes')
        .set({ used_at: at })
        .where('user_id', '=', userId)
        .where('code_hash', '=', hash)
        .where('used_at', 'is', null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    });
  }

  async countRecoveryCodesLeft(userId: string): Promise<number> {
    const row = await this.retry.run('read', () =>
      this.db
        .selectFrom('totp_recovery_codes')
        .select((eb) => eb.fn.countAll<string | number>().as('n'))
        .where('user_id', '=', userId)
        .where('used_at', 'is', null)
        .executeTakeFirstOrThrow(),
    );
    return Number(row.n);
  }
}
