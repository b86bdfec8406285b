// A PostgreSQL connection whose statement went unanswered past the store's deadline is dropped, not
// returned to the pool (src/store/stalled-client.ts, issue 11): the next statement runs on a fresh
// connection. Real server for the store's path (a statement that outlasts the deadline: pg_sleep stands
// for a partition's silence); a fake client for pg's own query timeout.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { isAppError } from '../src/errors/errors.js';
import { openStore, type Store } from '../src/store/database.js';
import { guardStalls, type EndableClient } from '../src/store/stalled-client.js';
import { createTestDatabase } from './helpers/postgres-database.js';

void describe('a stalled PostgreSQL connection (real server)', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: Store;
  let evicted = 0;

  before(async () => {
    database = await createTestDatabase();
    // One connection, so the statement after the stalled one can only get a new one or the same one.
    store = await openStore({
      databaseUrl: database.url,
      dataDir: '/nonexistent',
      poolSize: 1,
      retryBudgetMs: 1_000,
      onEvict: () => evicted++,
    });
  });

  after(async () => {
    await store?.close();
    await database?.drop();
  });

  const backendPid = async () =>
    (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(store.db)).rows[0]!.pid;

  test('a statement past the deadline answers 503 and its connection is replaced, not reused', async () => {
    const first = await backendPid();
    await assert.rejects(
      store.retry.run('read', () => sql`select pg_sleep(30)`.execute(store.db)),
      (e: unknown) => isAppError(e) && e.code === 'STORE_UNAVAILABLE',
    );
    const second = await backendPid();
    assert.notEqual(second, first, 'the next statement runs on a new connection');
    assert.equal(evicted, 1);
    // The new connection stays: statements that answer in time keep it.
    assert.equal(await backendPid(), second);
    assert.equal(evicted, 1);
  });
});

void describe('stall guard (fake client)', () => {
  function fakeClient(answer: () => Promise<unknown>) {
    const calls = { ended: 0, released: [] as unknown[] };
    const client: EndableClient = {
      query: answer,
      release: (err) => calls.released.push(err),
      end: () => {
        calls.ended++;
        return Promise.resolve();
      },
    };
    return { client, calls };
  }

  test("pg's own query timeout ends the client too (it would go back to the pool still stalled)", async () => {
    const { client, calls } = fakeClient(() => Promise.reject(new Error('Query read timeout')));
    const guarded = guardStalls(client, { stallMs: () => 60_000 });
    await assert.rejects(guarded.query('select 1', []), /Query read timeout/);
    assert.equal(calls.ended, 1);
  });

  test('a refused statement keeps the client; a discarded connection is released to be destroyed', async () => {
    const { client, calls } = fakeClient(() => Promise.reject(new Error('syntax error')));
    const guarded = guardStalls(client, { stallMs: () => 60_000 });
    await assert.rejects(guarded.query('selec 1', []), /syntax error/);
    assert.equal(calls.ended, 0);
    guarded.release();
    guarded.release(true);
    assert.deepEqual(calls.released, [undefined, true]);
  });

  test('no bound while migrations run', async () => {
    const { client, calls } = fakeClient(() => Promise.reject(new Error('Query read timeout')));
    const guarded = guardStalls(client, { stallMs: () => null });
    await assert.rejects(guarded.query('select 1', []));
    assert.equal(calls.ended, 0);
  });
});
