// Micro-benchmark of the embedded store's kept statements (src/store/sqlite-statements.ts): the event-loop
// time of the repository calls a sign-in and a connect make — a user by email, the caller's instances, the
// live session of an instance, the caller's live sessions — through Kysely on better-sqlite3, each statement
// prepared anew (Kysely's SQLite driver as it comes) against kept statements. Both on one migrated database file with
// 1,000 users, 1,000 instances and 1,000 sessions; rounds alternate A/B. Run:
//   node --import tsx bench/micro/store-statements.ts [--ops N] [--rounds R]
// Not a test: it prints numbers for docs/benchmarks.md.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { openStore, sqliteFile } from '../../src/store/database.js';
import { InstanceRepository } from '../../src/store/instance.repository.js';
import type { Database } from '../../src/store/schema.js';
import { SessionRepository } from '../../src/store/session.repository.js';
import { createStoreRetry } from '../../src/store/store-retry.js';
import { UserRepository } from '../../src/store/user.repository.js';
import { keepingStatements } from '../../src/store/sqlite-statements.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const OPS = arg('--ops', 20_000);
const ROUNDS = arg('--rounds', 5);
const N = 1_000;

const dir = mkdtempSync(join(tmpdir(), 'clouddesk-statements-'));
const store = await openStore({ databaseUrl: null, dataDir: dir });
const now = Date.now();
const users = Array.from({ length: N }, (_, i) => ({ id: randomUUID(), email: `u${i}@bench.invalid` }));
const instances = users.map((u) => ({ id: randomUUID(), userId: u.id }));
for (const [i, u] of users.entries()) {
  await store.db
    .insertInto('users')
    .values({ id: u.id, email: u.email, password_hash: 'x', created_at: now, role: 'user' })
    .execute();
  await store.db
    .insertInto('instances')
    .values({
      id: instances[i]!.id,
      user_id: u.id,
      name: `i${i}`,
      host: '127.0.0.1',
      port: 22,
      username: 'u',
      auth_type: 'password',
      secret_ciphertext: 'x',
      secret_key_id: 'k',
      host_key_fingerprint: null,
      created_at: now,
      updated_at: now,
    })
    .execute();
  await store.db
    .insertInto('sessions')
    .values({
      id: randomUUID(),
      user_id: u.id,
      instance_id: instances[i]!.id,
      desktop_environment: 'xfce',
      status: 'active',
      display: null,
      transport: null,
      socket_path: null,
      vnc_port: null,
      vnc_password_ciphertext: null,
      vnc_password_key_id: null,
      desktop_pid: null,
      created_at: now,
      started_at: now,
      last_activity_at: now,
      ended_at: null,
      end_reason: null,
      bytes_to_viewer: 0,
      bytes_from_viewer: 0,
      viewer_seconds: 0,
      stop_due_at: null,
      stop_attempts: 0,
    })
    .execute();
}
await store.close();

function kysely(keep: boolean): Kysely<Database> {
  const sqlite = new BetterSqlite3(sqliteFile(dir));
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  return new Kysely<Database>({
    dialect: new SqliteDialect({ database: keep ? keepingStatements(sqlite) : sqlite }),
  });
}

async function run(db: Kysely<Database>): Promise<number> {
  const access = { db, retry: createStoreRetry({ budgetMs: 0 }) };
  const userRepo = new UserRepository(access);
  const instanceRepo = new InstanceRepository(access);
  const sessionRepo = new SessionRepository(access);
  const t0 = process.cpuUsage();
  for (let op = 0; op < OPS; op++) {
    const i = op % N;
    const user = users[i]!;
    switch (op % 4) {
      case 0:
        await userRepo.findByEmail(user.email);
        break;
      case 1:
        await instanceRepo.listByUser(user.id);
        break;
      case 2:
        await sessionRepo.findLive(user.id, instances[i]!.id);
        break;
      default:
        await sessionRepo.countLive(user.id);
    }
  }
  const used = process.cpuUsage(t0);
  return (used.user + used.system) / OPS;
}

const fresh = kysely(false);
const kept = kysely(true);
await run(fresh);
await run(kept); // warm both
console.log(`| round | prepared anew, µs of CPU per statement | kept, µs | kept ÷ anew |`);
console.log('|---:|---:|---:|---:|');
try {
  for (let r = 1; r <= ROUNDS; r++) {
    const a = await run(fresh);
    const b = await run(kept);
    console.log(`| ${r} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b / a).toFixed(2)} |`);
  }
} finally {
  await fresh.destroy();
  await kept.destroy();
  rmSync(dir, { recursive: true, force: true });
}
