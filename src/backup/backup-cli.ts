// `clouddesk backup --out FILE` and `clouddesk restore FILE [--force]`: the configured store (the data
// folder's embedded SQLite, or DATABASE_URL's PostgreSQL) to and from one file. Prints one line for
// the operator; a refusal (wrong key, target not empty, not a backup) is a BackupError with its reason.
import type { Config } from '../config/config.js';
import {
  backupPostgres,
  backupSqlite,
  restorePostgres,
  restoreSqlite,
  type BackupSummary,
} from './backup.js';

const counts = (s: BackupSummary) =>
  `${s.users} users, ${s.instances} instances, ${s.sessions} sessions, ${s.credentials} credentials`;

export async function runBackup(config: Config, out: string): Promise<string> {
  if (config.databaseUrl !== null) {
    await backupPostgres(config.databaseUrl, out);
    return `backup written: ${out} (pg_dump custom format; restore with \`clouddesk restore ${out}\` or pg_restore)`;
  }
  const summary = await backupSqlite(config.dataDir, out);
  return `backup written: ${out} (${counts(summary)}; online copy of ${config.dataDir}, SQLite backup API)`;
}

export async function runRestore(config: Config, file: string, force: boolean): Promise<string> {
  if (config.databaseUrl !== null) {
    const summary = await restorePostgres(config, file);
    return `restored ${file} into DATABASE_URL: ${counts(summary)}; every credential opens with the configured key`;
  }
  const { keptAs, ...summary } = await restoreSqlite(config, file, { force });
  return (
    `restored ${file} into ${config.dataDir}: ${counts(summary)}; every credential opens with the configured key` +
    (keptAs ? `; the previous database is kept as ${keptAs}` : '')
  );
}
