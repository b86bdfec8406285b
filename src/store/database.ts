// The store seam's connection: embedded SQLite (better-sqlite3, in the data folder) by default,
// PostgreSQL when DATABASE_URL is set. Kysely gives both one query layer; migrations run at start.
// The PostgreSQL pool survives a failover by itself (a broken client is dropped, the next one connects
// through the balancer to the new primary); store-retry.ts decides what a request may retry meanwhile,
// and a client whose statement went unanswered past its deadline is dropped (stalled-client.ts).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import {
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  sql,
  type Migration,
  type MigrationProvider,
  type PostgresPoolClient,
} from 'kysely';
import pg from 'pg';
import { migrations } from './migrations.js';
import { guardStalls } from './stalled-client.js';
import { keepingStatements } from './sqlite-statements.js';
import type { Database } from './schema.js';
import {
  createStoreRetry,
  StoreConnectError,
  type StoreRetry,
  type StoreRetryOptions,
} from './store-retry.js';

export type Dialect = 'sqlite' | 'postgres';

/** What a repository needs of the store: the query builder and the retry rule. */
export type StoreAccess = Pick<Store, 'db' | 'retry'>;

export interface Store {
  db: Kysely<Database>;
  dialect: Dialect;
  /** The retry rule every repository runs its statements under. */
  retry: StoreRetry;
  /** `SELECT 1` bounded by a timeout; throws when the database does not answer. */
  ping(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

// int8 (bigint) columns hold millisecond timestamps, well inside Number's exact range.
pg.types.setTypeParser(20, (v) => Number(v));

/** The embedded database's file in the data folder. */
export function sqliteFile(dataDir: string): string {
  return join(dataDir, 'clouddesk.sqlite');
}

export interface StoreOptions {
  databaseUrl: string | null;
  dataDir: string;
  /** Pool size per process for PostgreSQL. */
  poolSize?: number;
  /** How long a safe statement is retried across a failover before STORE_UNAVAILABLE (default 5 s). */
  retryBudgetMs?: number;
  onRetry?: StoreRetryOptions['onRetry'];
  /** Called when a PostgreSQL connection is dropped for a statement left unanswered past the deadline. */
  onEvict?: () => void;
}

/** How much longer than the retry budget a store call may wait for a silent server (see openStore). */
const STALL_GRACE_MS = 1_000;
/** pg's bound on one statement; also when a stalled client is ended if there is no deadline. */
const QUERY_TIMEOUT_MS = 10_000;

export async function openStore(options: StoreOptions): Promise<Store> {
  let db: Kysely<Database>;
  let dialect: Dialect;
  const retryBudgetMs = options.retryBudgetMs ?? 5000;
  // A statement the server leaves unanswered (a partition) costs a request the retry budget and one
  // more second, not the 10 s query timeout; with retries off (0) only the pool bounds it.
  const deadlineMs = options.databaseUrl && retryBudgetMs > 0 ? retryBudgetMs + STALL_GRACE_MS : undefined;
  // Past the deadline the client is ended too (stalled-client.ts); not while migrations run, which may
  // take long on a big database.
  let stallMs: number | null = null;
  if (options.databaseUrl) {
    dialect = 'postgres';
    const pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: 3000,
      idleTimeoutMillis: 30_000,
      // A query must not hang a request forever when the server stalls.
      query_timeout: QUERY_TIMEOUT_MS,
      // A primary that vanished without a FIN (host down, partition) is noticed by the kernel.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    // An idle client losing its server emits here; without a listener the process would crash. The
    // pool has already dropped that client.
    pool.on('error', () => undefined);
    const guarded = new WeakMap<pg.PoolClient, PostgresPoolClient>();
    db = new Kysely<Database>({
      dialect: new PostgresDialect({
        pool: {
          // A failed connect is tagged, so the retry rule knows the statement never reached a server.
          connect: async () => {
            let client: pg.PoolClient;
            try {
              client = await pool.connect();
            } catch (e) {
              throw new StoreConnectError(e);
            }
            // A checked-out client whose server goes away between statements (inside a transaction,
            // say) emits 'error' with nobody listening, which would crash the process; the pool only
            // listens while the client is idle. The statement that runs next fails instead, and the
            // pool drops the broken client when it is released.
            let wrapped = guarded.get(client);
            if (wrapped === undefined) {
              client.on('error', () => undefined);
              wrapped = guardStalls(client, { stallMs: () => stallMs, onEvict: options.onEvict });
              guarded.set(client, wrapped);
            }
            return wrapped;
          },
          end: () => pool.end(),
        },
      }),
    });
  } else {
    dialect = 'sqlite';
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const sqlite = new BetterSqlite3(sqliteFile(options.dataDir));
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 5000');
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: keepingStatements(sqlite) }) });
  }
  await migrate(db);
  // Without a deadline, a client is still ended when pg's query timeout fails its statement.
  stallMs = deadlineMs ?? QUERY_TIMEOUT_MS * 2;
  return {
    db,
    dialect,
    retry: createStoreRetry({
      budgetMs: retryBudgetMs,
      onRetry: options.onRetry,
      ...(deadlineMs !== undefined ? { deadlineMs } : {}),
    }),
    async ping(timeoutMs = 2000) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          sql`select 1`.execute(db),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('database ping timed out')), timeoutMs);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    close: () => db.destroy(),
  };
}

class InCodeMigrations implements MigrationProvider {
  getMigrations(): Promise<Record<string, Migration>> {
    return Promise.resolve(migrations);
  }
}

async function migrate(db: Kysely<Database>): Promise<void> {
  const migrator = new Migrator({ db, provider: new InCodeMigrations() });
  const { error } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error('migration failed', { cause: error });
}
