// The embedded store keeps its prepared statements (src/store/sqlite-statements.ts): one prepare per
// statement text, a bound on how many are kept, and kept statements that still see the schema as it is.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { keepingStatements } from '../src/store/sqlite-statements.js';

function counted(): { db: BetterSqlite3.Database; prepared: string[] } {
  const db = new BetterSqlite3(':memory:');
  const prepared: string[] = [];
  const prepare = db.prepare.bind(db);
  db.prepare = (text: string) => {
    prepared.push(text);
    return prepare(text);
  };
  return { db, prepared };
}

void describe('kept SQLite statements', () => {
  void it('prepares a statement text once however often it runs, with its own parameters each time', async () => {
    const { db, prepared } = counted();
    const k = new Kysely<{ t: { id: number; name: string } }>({
      dialect: new SqliteDialect({ database: keepingStatements(db) }),
    });
    await sql`create table t (id integer primary key, name text not null)`.execute(k);
    for (let i = 1; i <= 50; i++)
      await k
        .insertInto('t')
        .values({ id: i, name: `n${i}` })
        .execute();
    const names = [];
    for (const id of [3, 17, 50]) {
      names.push((await k.selectFrom('t').select('name').where('id', '=', id).executeTakeFirst())?.name);
    }
    assert.deepEqual(names, ['n3', 'n17', 'n50']);
    assert.equal(prepared.filter((p) => p.startsWith('insert')).length, 1);
    assert.equal(prepared.filter((p) => p.startsWith('select')).length, 1);
    await k.destroy();
  });

  void it('keeps at most `max` texts, dropping the least recently used', () => {
    const { db, prepared } = counted();
    const kept = keepingStatements(db, 2);
    kept.prepare('select 1');
    kept.prepare('select 2');
    kept.prepare('select 1'); // now most recent
    kept.prepare('select 3'); // drops 'select 2'
    kept.prepare('select 1');
    kept.prepare('select 2');
    assert.deepEqual(prepared, ['select 1', 'select 2', 'select 3', 'select 2']);
    db.close();
  });

  void it('a kept statement sees a column added after it was prepared', () => {
    const { db } = counted();
    const kept = keepingStatements(db);
    db.exec('create table t (a integer); insert into t values (1)');
    assert.deepEqual(kept.prepare('select * from t').all([]), [{ a: 1 }]);
    db.exec('alter table t add column b integer default 2');
    assert.deepEqual(kept.prepare('select * from t').all([]), [{ a: 1, b: 2 }]);
    db.close();
  });
});
