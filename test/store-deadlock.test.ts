// A statement PostgreSQL rolled back to break a deadlock (40P01) or a serialization failure (40001) ran
// to no effect: the store's retry rule (src/store/store-retry.ts) takes it as "unsent" and runs it again,
// and a request whose budget is spent answers a coded 503, never 500. Real server: a deadlock is made
// between the store's transaction and a second connection that locks the same two rows the other way.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { sql } from 'kysely';
import { openStore, type Store } from '../src/store/database.js';
import { toAppError } from '../src/http/error-handler.js';
import { createTestDatabase } from './helpers/postgres-database.js';

let database: Awaited<ReturnType<typeof createTestDatabase>>;
let store: Store;

before(async () => {
  database = await createTestDatabase();
  store = await openStore({ databaseUrl: database.url, dataDir: '/nonexistent' });
  await sql`create table deadlock_rows (id int primary key, v int not null)`.execute(store.db);
  await sql`insert into deadlock_rows values (1, 0), (2, 0)`.execute(store.db);
});

after(async () => {
  await store?.close();
  await database?.drop();
});

test('a transaction chosen as a deadlock victim is run again, and its second run commits', async () => {
  const other = new pg.Client({ connectionString: database.url });
  await other.connect();
  const errors: unknown[] = [];
  const pending: { other?: Promise<unknown> } = {};
  try {
    // The other side waits long before it looks for a deadlock, so the store's side (1 s) is the victim.
    await other.query(`set deadlock_timeout = '20s'`);
    await other.query('begin');
    await other.query('update deadlock_rows set v = v + 10 where id = 2');
    let attempts = 0;
    const retry = store.retry;
    await retry.run('write', async () => {
      attempts++;
      try {
        await store.db.transaction().execute(async (trx) => {
          await sql`update deadlock_rows set v = v + 1 where id = 1`.execute(trx);
          // Now the other side wants row 1 (held here) while holding row 2 (wanted here next).
          pending.other ??= other
            .query('update deadlock_rows set v = v + 10 where id = 1')
            .then(() => other.query('commit'));
          await sql`update deadlock_rows set v = v + 1 where id = 2`.execute(trx);
        });
      } catch (e) {
        errors.push(e);
        throw e;
      }
    });
    await pending.other;
    assert.equal(attempts, 2, 'one deadlock, then a run that commits');
    assert.equal((errors[0] as { code?: string }).code, '40P01');
    const rows = await other.query<{ id: number; v: number }>('select id, v from deadlock_rows order by id');
    assert.deepEqual(
      rows.rows.map((r) => r.v),
      [11, 11],
      "each side's updates once: the victim's first run left nothing behind",
    );
  } finally {
    await pending.other?.catch(() => undefined);
    await other.end();
  }
  // Past the budget the same failure is a coded 503, not a 500.
  assert.equal(toAppError(errors[0])?.code, 'STORE_UNAVAILABLE');
});
