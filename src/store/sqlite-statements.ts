// better-sqlite3 behind Kysely with its prepared statements kept. Kysely's SQLite driver prepares every
// statement anew (`db.prepare(sql)` per query), and better-sqlite3 runs on the event loop: in the mixed-load
// profile (docs/benchmarks.md §8) `prepare` was most of SQLite's share of the loop's long tasks. The
// gateway's statements are a small fixed set of texts (plus IN lists of a few lengths), so the most
// recently used ones are kept, bounded. A kept statement stays valid across schema changes: SQLite
// prepares it again by itself when the schema it was prepared against has changed.
import type BetterSqlite3 from 'better-sqlite3';
import type { SqliteDatabase, SqliteStatement } from 'kysely';

export const KEPT_STATEMENTS = 256;

export function keepingStatements(db: BetterSqlite3.Database, max = KEPT_STATEMENTS): SqliteDatabase {
  const kept = new Map<string, SqliteStatement>();
  return {
    close: () => db.close(),
    prepare(sql: string): SqliteStatement {
      let stmt = kept.get(sql);
      if (stmt !== undefined) {
        // Most recently used last: the first key is the one to drop.
        kept.delete(sql);
        kept.set(sql, stmt);
        return stmt;
      }
      stmt = db.prepare(sql);
      kept.set(sql, stmt);
      if (kept.size > max) kept.delete(kept.keys().next().value!);
      return stmt;
    },
  };
}
