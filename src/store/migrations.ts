// Schema migrations, in code, applied in name order at start (Kysely's Migrator takes a lock, so
// several gateway processes starting together do not race). Written in the subset both dialects share.
import { sql, type Kysely, type Migration } from 'kysely';

export const migrations: Record<string, Migration> = {
  '0001_initial': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('email', 'text', (c) => c.notNull().unique())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('refresh_tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('family_id', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .addColumn('revoked_at', 'bigint')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('refresh_tokens_family').on('refresh_tokens').column('family_id').execute();
      await db.schema.createIndex('refresh_tokens_user').on('refresh_tokens').column('user_id').execute();

      await db.schema
        .createTable('instances')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('host', 'text', (c) => c.notNull())
        .addColumn('port', 'integer', (c) => c.notNull())
        .addColumn('username', 'text', (c) => c.notNull())
        .addColumn('auth_type', 'text', (c) => c.notNull())
        .addColumn('secret_ciphertext', 'text', (c) => c.notNull())
        .addColumn('secret_key_id', 'text', (c) => c.notNull())
        .addColumn('host_key_fingerprint', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('instances_user').on('instances').column('user_id').execute();

      await db.schema
        .createTable('sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('instance_id', 'text', (c) => c.notNull().references('instances.id').onDelete('cascade'))
        .addColumn('desktop_environment', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('display', 'integer')
        .addColumn('transport', 'text')
        .addColumn('socket_path', 'text')
        .addColumn('vnc_port', 'integer')
        .addColumn('vnc_password_ciphertext', 'text')
        .addColumn('vnc_password_key_id', 'text')
        .addColumn('desktop_pid', 'integer')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('started_at', 'bigint')
        .addColumn('last_activity_at', 'bigint', (c) => c.notNull())
        .addColumn('ended_at', 'bigint')
        .addColumn('end_reason', 'text')
        .execute();
      await db.schema
        .createIndex('sessions_user_status')
        .on('sessions')
        .columns(['user_id', 'status'])
        .execute();
      await db.schema.createIndex('sessions_status').on('sessions').column('status').execute();
      // At most one live session per user and instance, even with two gateways racing.
      await db.schema
        .createIndex('sessions_one_live_per_instance')
        .on('sessions')
        .columns(['user_id', 'instance_id'])
        .unique()
        .where(sql<boolean>`status <> 'ended'`)
        .execute();
    },
    async down(db: Kysely<unknown>) {
      for (const t of ['sessions', 'instances', 'refresh_tokens', 'users'])
        await db.schema.dropTable(t).execute();
    },
  },
  // Refresh-token rotation links each token to the one it replaced, so a rotation whose answer was
  // lost can be told apart from a replayed older token (auth.service.ts, REFRESH_REUSE_GRACE_MS).
  '0002_refresh_token_parent': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('refresh_tokens').addColumn('parent_id', 'text').execute();
      await db.schema.createIndex('refresh_tokens_parent').on('refresh_tokens').column('parent_id').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('refresh_tokens_parent').execute();
      await db.schema.alterTable('refresh_tokens').dropColumn('parent_id').execute();
    },
  },
  // Usage per session (issue 13): bytes each way and viewer-seconds, added by the activity flush, and
  // the same per user, instance and UTC day for GET /api/usage. The daily rows outlive the instance (no
  // foreign key to it): what was used stays on record after the instance is deleted.
  '0003_session_usage': {
    async up(db: Kysely<unknown>) {
      for (const column of ['bytes_to_viewer', 'bytes_from_viewer']) {
        await db.schema
          .alterTable('sessions')
          .addColumn(column, 'bigint', (c) => c.notNull().defaultTo(0))
          .execute();
      }
      await db.schema
        .alterTable('sessions')
        .addColumn('viewer_seconds', 'double precision', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .createTable('usage_daily')
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('day', 'text', (c) => c.notNull())
        .addColumn('instance_id', 'text', (c) => c.notNull())
        .addColumn('bytes_to_viewer', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('bytes_from_viewer', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('viewer_seconds', 'double precision', (c) => c.notNull().defaultTo(0))
        .addPrimaryKeyConstraint('usage_daily_pk', ['user_id', 'day', 'instance_id'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('usage_daily').execute();
      for (const column of ['viewer_seconds', 'bytes_from_viewer', 'bytes_to_viewer'])
        await db.schema.alterTable('sessions').dropColumn(column).execute();
    },
  },
  // Desktops are stopped in the background after a session ends (issue 9): a session whose desktop still
  // has to be stopped carries when the next try is due and how many failed, so a stop this process could
  // not finish (it died, the instance was down) is picked up again by any gateway's sweeper.
  '0004_session_desktop_stop': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('sessions').addColumn('stop_due_at', 'bigint').execute();
      await db.schema
        .alterTable('sessions')
        .addColumn('stop_attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex('sessions_stop_due').on('sessions').column('stop_due_at').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('sessions_stop_due').execute();
      for (const column of ['stop_attempts', 'stop_due_at'])
        await db.schema.alterTable('sessions').dropColumn(column).execute();
    },
  },
  // Roles, disabled accounts and last sign-in (issue 10), single-use invites for REGISTRATION=closed,
  // and the append-only audit trail. Invites keep only a hash of their token. Audit rows name their
  // subject user without a foreign key: the trail outlives the account.
  '0005_roles_audit': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable('users')
        .addColumn('role', 'text', (c) => c.notNull().defaultTo('user'))
        .execute();
      await db.schema.alterTable('users').addColumn('disabled_at', 'bigint').execute();
      await db.schema.alterTable('users').addColumn('last_sign_in_at', 'bigint').execute();
      await db.schema.createIndex('users_role').on('users').column('role').execute();
      await db.schema.createIndex('users_created').on('users').columns(['created_at', 'id']).execute();

      await db.schema
        .createTable('invites')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('email', 'text')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .addColumn('used_by', 'text')
        .execute();

      await db.schema
        .createTable('audit_events')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('actor', 'text', (c) => c.notNull())
        .addColumn('ip', 'text')
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('subject_user_id', 'text')
        .addColumn('target_id', 'text')
        .addColumn('details', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('audit_at').on('audit_events').columns(['at', 'id']).execute();
      for (const column of ['actor', 'type', 'subject_user_id', 'target_id']) {
        await db.schema
          .createIndex(`audit_${column}_at`)
          .on('audit_events')
          .columns([column, 'at'])
          .execute();
      }
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('audit_events').execute();
      await db.schema.dropTable('invites').execute();
      await db.schema.dropIndex('users_created').execute();
      await db.schema.dropIndex('users_role').execute();
      for (const column of ['last_sign_in_at', 'disabled_at', 'role'])
        await db.schema.alterTable('users').dropColumn(column).execute();
    },
  },
  '0006_identity': {
    async up(db: Kysely<unknown>) {
      // Company sign-in: one row per (issuer, subject) an account signed in with.
      await db.schema
        .createTable('user_identities')
        .addColumn('issuer', 'text', (c) => c.notNull())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('email', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('last_sign_in_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('user_identities_pk', ['issuer', 'subject'])
        .execute();
      await db.schema.createIndex('user_identities_user').on('user_identities').column('user_id').execute();

      // TOTP: the secret sealed by the secret box; enabled once a code confirmed it; the last time step
      // a code was accepted for, so a code is never accepted twice.
      await db.schema
        .createTable('user_totp')
        .addColumn('user_id', 'text', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
        .addColumn('secret_ciphertext', 'text', (c) => c.notNull())
        .addColumn('secret_key_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('enabled_at', 'bigint')
        .addColumn('last_step', 'bigint')
        .execute();
      await db.schema
        .createTable('totp_recovery_codes')
        .addColumn('code_hash', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('used_at', 'bigint')
        .execute();
      await db.schema
        .createIndex('totp_recovery_codes_user')
        .on('totp_recovery_codes')
        .column('user_id')
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('totp_recovery_codes').execute();
      await db.schema.dropTable('user_totp').execute();
      await db.schema.dropTable('user_identities').execute();
    },
  },
  // Session sharing (issue 10): a share lets guests watch (or drive) a live session through an unguessable
  // link; only the token's SHA-256 is kept. A share goes with its session (and the session with its owner).
  '0007_shares': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('shares')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('session_id', 'text', (c) => c.notNull().references('sessions.id').onDelete('cascade'))
        .addColumn('owner_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('mode', 'text', (c) => c.notNull())
        .addColumn('single_use', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .addColumn('revoked_at', 'bigint')
        .execute();
      await db.schema
        .createIndex('shares_session')
        .on('shares')
        .columns(['session_id', 'created_at'])
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('shares').execute();
    },
  },
  // Catching up a sign-out everywhere that a partitioned node missed on pub/sub (issue 11): the time of
  // the user's last one; a node's lease renewal closes the user's viewers that were attached before it.
  '0008_signed_out_at': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('users').addColumn('signed_out_at', 'bigint').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable('users').dropColumn('signed_out_at').execute();
    },
  },
  // Telling a gateway cut off from Redis from a Redis down for everyone (issue 11): each node's row says
  // when it last wrote it and when it last reached Redis (coordination/coordination-watch.ts). A new
  // table only (expand): a gateway of the previous release neither reads nor needs it.
  '0009_gateway_nodes': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('gateway_nodes')
        .addColumn('node_id', 'text', (c) => c.primaryKey())
        .addColumn('seen_at', 'bigint', (c) => c.notNull())
        .addColumn('redis_reached_at', 'bigint')
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('gateway_nodes').execute();
    },
  },
  // Catching up a guest removed by its owner that a partitioned node missed on pub/sub (issue 11): the
  // removal is kept until the guest's share expires (its viewer closes then on its own node anyway), and
  // a node's lease renewal closes the guests it holds that are listed here. A new table only (expand).
  '0010_removed_guests': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('removed_guests')
        .addColumn('viewer_id', 'text', (c) => c.primaryKey())
        .addColumn('session_id', 'text', (c) => c.notNull().references('sessions.id').onDelete('cascade'))
        .addColumn('removed_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('removed_guests_expires')
        .on('removed_guests')
        .column('expires_at')
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('removed_guests').execute();
    },
  },
};
