// `clouddesk backup` and `clouddesk restore` for both stores:
// - embedded SQLite: SQLite's online backup API (better-sqlite3 `backup()`), a consistent copy taken
//   page by page while the gateway keeps reading and writing; restore copies it back the same way;
// - PostgreSQL: `pg_dump --format=custom` (one consistent snapshot, online) and `pg_restore` into an
//   empty database in one transaction.
// A restore first proves that the configured ENCRYPTION_KEY (and ENCRYPTION_PREVIOUS_KEYS) opens every
// stored credential of the backup; if any does not open, it refuses and changes nothing.
import { execFile } from 'node:child_process';
import { existsSync, renameSync } from 'node:fs';
import { promisify } from 'node:util';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import type { Config } from '../config/config.js';
import { SecretBox } from '../crypto/secret-box.js';
import { sealContext } from '../instances/instance.service.js';
import { sqliteFile } from '../store/database.js';
import { migrations } from '../store/migrations.js';

const execFileP = promisify(execFile);

/** A failure the operator can act on: the CLI prints its message and exits 1. */
export class BackupError extends Error {
  constructor(
    readonly code:
      | 'BACKUP_TARGET_EXISTS'
      | 'BACKUP_SOURCE_MISSING'
      | 'BACKUP_FILE_INVALID'
      | 'BACKUP_TOO_NEW'
      | 'RESTORE_WRONG_KEY'
      | 'RESTORE_TARGET_NOT_EMPTY'
      | 'PG_TOOL_FAILED',
    message: string,
  ) {
    super(message);
    this.name = 'BackupError';
  }
}

/** One sealed value found in a backup, and the AEAD context it was sealed under. */
export interface SealedCredential {
  what: string;
  context: string;
  keyId: string;
  ciphertext: string;
}

export interface BackupSummary {
  users: number;
  instances: number;
  sessions: number;
  credentials: number;
}

/** Refuses unless every credential opens with the configured keys. */
export function assertCredentialsOpen(config: Config, credentials: readonly SealedCredential[]): void {
  const box = new SecretBox(config.secrets.encryption.currentKeyId, config.secrets.encryption.keys);
  const failed: SealedCredential[] = [];
  for (const c of credentials) {
    try {
      box.open({ keyId: c.keyId, ciphertext: c.ciphertext }, c.context);
    } catch {
      failed.push(c);
    }
  }
  if (failed.length === 0) return;
  const ids = [...new Set(failed.map((f) => f.keyId))].join(', ');
  throw new BackupError(
    'RESTORE_WRONG_KEY',
    `restore refused: the configured ENCRYPTION_KEY does not open ${failed.length} of ${credentials.length} ` +
      `stored credentials (sealed under key id ${ids}; e.g. ${failed[0]!.what}). Set ENCRYPTION_KEY and ` +
      `ENCRYPTION_KEY_ID (and ENCRYPTION_PREVIOUS_KEYS) to the keys of the install that was backed up. ` +
      `Nothing was restored.`,
  );
}

interface CredentialRows {
  instances: { id: string; secret_key_id: string; secret_ciphertext: string }[];
  sessions: { id: string; vnc_password_key_id: string | null; vnc_password_ciphertext: string | null }[];
}

function credentialsOf(rows: CredentialRows): SealedCredential[] {
  const out: SealedCredential[] = rows.instances.map((r) => ({
    what: `instance ${r.id}`,
    context: sealContext(r.id),
    keyId: r.secret_key_id,
    ciphertext: r.secret_ciphertext,
  }));
  for (const s of rows.sessions) {
    if (s.vnc_password_ciphertext === null || s.vnc_password_key_id === null) continue;
    out.push({
      what: `session ${s.id} (VNC password)`,
      context: `session:${s.id}`,
      keyId: s.vnc_password_key_id,
      ciphertext: s.vnc_password_ciphertext,
    });
  }
  return out;
}

function assertKnownMigrations(applied: readonly string[]): void {
  const unknown = applied.filter((name) => !(name in migrations));
  if (unknown.length > 0) {
    throw new BackupError(
      'BACKUP_TOO_NEW',
      `restore refused: the backup has migrations this CloudDesk does not know (${unknown.join(', ')}); ` +
        'restore it with the version that made it, or a newer one. Nothing was restored.',
    );
  }
}

// ---- embedded SQLite ----------------------------------------------------------------------------

function openSqliteBackup(file: string): BetterSqlite3.Database {
  if (!existsSync(file)) throw new BackupError('BACKUP_SOURCE_MISSING', `no such backup file: ${file}`);
  let db: BetterSqlite3.Database;
  try {
    db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
    const check = db.pragma('integrity_check', { simple: true });
    if (check !== 'ok') throw new Error(String(check));
    db.prepare('select count(*) from kysely_migration').get();
  } catch (e) {
    throw new BackupError(
      'BACKUP_FILE_INVALID',
      `${file} is not a CloudDesk SQLite backup (${e instanceof Error ? e.message : String(e)})`,
    );
  }
  return db;
}

function summarizeSqlite(db: BetterSqlite3.Database): BackupSummary & { creds: SealedCredential[] } {
  const count = (table: string) =>
    (db.prepare(`select count(*) as n from ${table}`).get() as { n: number }).n;
  const creds = credentialsOf({
    instances: db
      .prepare('select id, secret_key_id, secret_ciphertext from instances')
      .all() as CredentialRows['instances'],
    sessions: db
      .prepare('select id, vnc_password_key_id, vnc_password_ciphertext from sessions')
      .all() as CredentialRows['sessions'],
  });
  return {
    users: count('users'),
    instances: count('instances'),
    sessions: count('sessions'),
    credentials: creds.length,
    creds,
  };
}

/** Online, consistent copy of the embedded database into `out` (which must not exist). */
export async function backupSqlite(dataDir: string, out: string): Promise<BackupSummary> {
  const source = sqliteFile(dataDir);
  if (!existsSync(source))
    throw new BackupError('BACKUP_SOURCE_MISSING', `no embedded database at ${source}`);
  if (existsSync(out)) throw new BackupError('BACKUP_TARGET_EXISTS', `${out} exists; choose another --out`);
  // A connection of our own: the backup API copies pages in steps and restarts a step when the
  // gateway writes meanwhile, so the copy is one consistent state (WAL mode lets both run).
  const db = new BetterSqlite3(source, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    await db.backup(out);
  } finally {
    db.close();
  }
  const copy = openSqliteBackup(out);
  try {
    const { creds: _creds, ...summary } = summarizeSqlite(copy);
    return summary;
  } finally {
    copy.close();
  }
}

/**
 * Restores an embedded-database backup into `dataDir`. Refuses a file that is not a CloudDesk
 * backup, one made by a newer version, one whose credentials the configured key does not open, and
 * an existing database unless `force` (the old one is then kept beside it, renamed).
 */
export async function restoreSqlite(
  config: Config,
  file: string,
  options: { force?: boolean; now?: () => number } = {},
): Promise<BackupSummary & { keptAs: string | null }> {
  const backup = openSqliteBackup(file);
  let summary: ReturnType<typeof summarizeSqlite>;
  try {
    const applied = (backup.prepare('select name from kysely_migration').all() as { name: string }[]).map(
      (r) => r.name,
    );
    assertKnownMigrations(applied);
    summary = summarizeSqlite(backup);
    assertCredentialsOpen(config, summary.creds);
  } catch (e) {
    backup.close();
    throw e;
  }
  const target = sqliteFile(config.dataDir);
  let keptAs: string | null = null;
  if (existsSync(target)) {
    if (!options.force) {
      backup.close();
      throw new BackupError(
        'RESTORE_TARGET_NOT_EMPTY',
        `restore refused: ${target} exists. Stop the gateway, then run restore with --force to replace it ` +
          '(the current database is kept beside it, renamed).',
      );
    }
    keptAs = `${target}.before-restore-${new Date(options.now?.() ?? Date.now()).toISOString().replace(/[:.]/g, '-')}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(target + suffix)) renameSync(target + suffix, keptAs + suffix);
    }
  }
  try {
    await backup.backup(target);
  } finally {
    backup.close();
  }
  const { creds: _creds, ...counts } = summary;
  return { ...counts, keptAs };
}

// ---- PostgreSQL ---------------------------------------------------------------------------------

/** libpq environment for a postgres:// URL, so no password appears on a command line. */
function libpqEnv(url: string): { env: NodeJS.ProcessEnv; dbname: string } {
  const u = new URL(url);
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  u.password = '';
  return { env, dbname: u.toString() };
}

async function runPgTool(tool: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  try {
    const { stdout } = await execFileP(tool, args, { env, maxBuffer: 512 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message?: string };
    throw new BackupError('PG_TOOL_FAILED', `${tool} failed: ${(err.stderr ?? err.message ?? '').trim()}`);
  }
}

/** `pg_dump --format=custom` of DATABASE_URL into `out` (which must not exist). */
export async function backupPostgres(databaseUrl: string, out: string): Promise<void> {
  if (existsSync(out)) throw new BackupError('BACKUP_TARGET_EXISTS', `${out} exists; choose another --out`);
  const { env, dbname } = libpqEnv(databaseUrl);
  await runPgTool('pg_dump', ['--format=custom', '--no-owner', '--file', out, '--dbname', dbname], env);
}

/** Rows of one table's data in a custom-format dump, from `pg_restore --data-only --table` (COPY text). */
async function dumpedRows(file: string, table: string): Promise<Record<string, string | null>[]> {
  const text = await runPgTool('pg_restore', ['--data-only', '--table', table, '--file', '-', file], {
    PATH: process.env.PATH,
  });
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`COPY public.${table} (`));
  if (start < 0) return [];
  const columns = /\(([^)]*)\)/
    .exec(lines[start]!)![1]!
    .split(',')
    .map((c) => c.trim().replace(/^"|"$/g, ''));
  const rows: Record<string, string | null>[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line === '\\.') break;
    const values = line.split('\t');
    rows.push(Object.fromEntries(columns.map((c, i) => [c, unescapeCopy(values[i] ?? '\\N')])));
  }
  return rows;
}

function unescapeCopy(v: string): string | null {
  if (v === '\\N') return null;
  return v.replace(/\\(.)/g, (_, c: string) => ({ t: '\t', n: '\n', r: '\r', '\\': '\\' })[c] ?? c);
}

/**
 * Restores a `clouddesk backup` dump into DATABASE_URL, which must be an empty database (createdb it).
 * Checked first: it reads as a dump, its migrations are known, the configured key opens every credential.
 */
export async function restorePostgres(config: Config, file: string): Promise<BackupSummary> {
  if (!existsSync(file)) throw new BackupError('BACKUP_SOURCE_MISSING', `no such backup file: ${file}`);
  const databaseUrl = config.databaseUrl!;
  let migrationRows: Record<string, string | null>[];
  try {
    migrationRows = await dumpedRows(file, 'kysely_migration');
  } catch (e) {
    throw new BackupError(
      'BACKUP_FILE_INVALID',
      `${file} is not a CloudDesk PostgreSQL dump (${e instanceof Error ? e.message : String(e)})`,
    );
  }
  if (migrationRows.length === 0) {
    throw new BackupError(
      'BACKUP_FILE_INVALID',
      `${file} is not a CloudDesk PostgreSQL dump (no migrations)`,
    );
  }
  assertKnownMigrations(migrationRows.map((r) => r.name ?? ''));
  const instances = (await dumpedRows(file, 'instances')) as unknown as CredentialRows['instances'];
  const sessions = (await dumpedRows(file, 'sessions')) as unknown as CredentialRows['sessions'];
  const users = await dumpedRows(file, 'users');
  const creds = credentialsOf({ instances, sessions });
  assertCredentialsOpen(config, creds);

  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>(
      "select count(*) as n from pg_tables where schemaname = 'public'",
    );
    if (Number(rows[0]?.n ?? 0) > 0) {
      throw new BackupError(
        'RESTORE_TARGET_NOT_EMPTY',
        'restore refused: the database DATABASE_URL names already has tables; restore into an empty ' +
          'database (createdb a new one and point DATABASE_URL at it). Nothing was restored.',
      );
    }
  } finally {
    await client.end();
  }
  const { env, dbname } = libpqEnv(databaseUrl);
  await runPgTool(
    'pg_restore',
    ['--no-owner', '--exit-on-error', '--single-transaction', '--dbname', dbname, file],
    env,
  );
  return {
    users: users.length,
    instances: instances.length,
    sessions: sessions.length,
    credentials: creds.length,
  };
}
