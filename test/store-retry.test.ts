// The store's failover rule (src/store/store-retry.ts): which errors are outages, which statements
// may be retried after which kind of failure, and that retries stop at the budget. Fake time; the
// real-server behaviour is in pg-failover.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '../src/errors/errors.js';
import {
  StoreConnectError,
  classifyStoreFailure,
  createStoreRetry,
  type StatementKind,
} from '../src/store/store-retry.js';

const pgError = (code: string, message = 'x') => Object.assign(new Error(message), { code });

void describe('store failures', () => {
  test('a statement that never ran is "unsent"', () => {
    for (const e of [
      new StoreConnectError(new Error('connect ECONNREFUSED 127.0.0.1:5432')),
      pgError('ECONNREFUSED'),
      pgError('57P03', 'the database system is starting up'),
      pgError('25006', 'cannot execute INSERT in a read-only transaction'),
      new Error('timeout exceeded when trying to connect'),
      new Error('Client has encountered a connection error and is not queryable'),
      new Error('Client was closed and is not queryable'),
      new Error('driver has already been destroyed'),
      pgError('40P01', 'deadlock detected'),
      pgError('40001', 'could not serialize access due to concurrent update'),
    ])
      assert.equal(classifyStoreFailure(e), 'unsent', e.message);
  });

  test('a connection lost mid-statement is "in-doubt"', () => {
    for (const e of [
      new Error('Connection terminated unexpectedly'),
      pgError('57P01', 'terminating connection due to administrator command'),
      pgError('ECONNRESET'),
      new Error('Query read timeout'),
    ])
      assert.equal(classifyStoreFailure(e), 'in-doubt', e.message);
  });

  test('a refused statement or a bug is not an outage', () => {
    for (const e of [
      pgError('23505', 'duplicate key value violates unique constraint'),
      pgError('42P01', 'relation "nope" does not exist'),
      new TypeError('x is undefined'),
      new AppError('NOT_FOUND'),
      null,
      'text',
    ])
      assert.equal(classifyStoreFailure(e), null, String(e));
  });
});

function harness(budgetMs: number) {
  let now = 0;
  const sleeps: number[] = [];
  const retry = createStoreRetry({
    budgetMs,
    now: () => now,
    sleep: (ms) => {
      sleeps.push(ms);
      now += ms;
      return Promise.resolve();
    },
  });
  /** Runs `kind` with a statement that fails with `errors` in turn, then answers 'ok'. */
  const run = async (kind: StatementKind, errors: unknown[]) => {
    let calls = 0;
    const result = await retry
      .run(kind, () => {
        const e = errors[calls++] as Error | undefined;
        return e === undefined ? Promise.resolve('ok') : Promise.reject(e);
      })
      .catch((e: unknown) => e);
    return { result, calls };
  };
  return { run, sleeps };
}

void describe('the retry rule', () => {
  const lost = new Error('Connection terminated unexpectedly');
  const refused = new StoreConnectError(new Error('ECONNREFUSED'));

  test('reads and idempotent writes are retried after a lost connection', async () => {
    for (const kind of ['read', 'idempotent'] as const) {
      const h = harness(5000);
      assert.deepEqual(await h.run(kind, [lost, lost]), { result: 'ok', calls: 3 });
    }
  });

  test('a plain write is retried only when it never ran', async () => {
    const h = harness(5000);
    assert.deepEqual(await h.run('write', [refused, refused]), { result: 'ok', calls: 3 });
    const inDoubt = await h.run('write', [lost]);
    assert.equal(inDoubt.calls, 1, 'not run twice: it may have committed');
    assert.ok(inDoubt.result instanceof AppError);
    assert.equal(inDoubt.result.code, 'STORE_UNAVAILABLE');
    assert.equal(inDoubt.result.cause, lost);
  });

  test('retries stop at the budget with STORE_UNAVAILABLE, backing off up to 1 s', async () => {
    const h = harness(3000);
    const { result, calls } = await h.run('read', Array<unknown>(100).fill(refused));
    assert.ok(result instanceof AppError && result.code === 'STORE_UNAVAILABLE');
    const slept = h.sleeps.reduce((a, b) => a + b, 0);
    assert.ok(slept <= 3000, `slept ${slept} ms within a 3000 ms budget`);
    assert.ok(calls >= 4 && calls < 30, `${calls} attempts`);
    assert.ok(Math.max(...h.sleeps) <= 1000);
  });

  test('other errors pass through at once, untouched', async () => {
    const h = harness(5000);
    const dup = pgError('23505');
    assert.deepEqual(await h.run('idempotent', [dup]), { result: dup, calls: 1 });
    const known = new AppError('EMAIL_TAKEN');
    assert.deepEqual(await h.run('read', [known]), { result: known, calls: 1 });
  });

  test('a budget of 0 never retries', async () => {
    const h = harness(0);
    const { result, calls } = await h.run('read', [refused]);
    assert.equal(calls, 1);
    assert.ok(result instanceof AppError && result.code === 'STORE_UNAVAILABLE');
  });

  test('a statement the server never answers (a partition) is given up at the deadline, of every kind', async () => {
    const retry = createStoreRetry({ budgetMs: 5000, deadlineMs: 50 });
    for (const kind of ['read', 'idempotent', 'write'] as const) {
      let calls = 0;
      const result = await retry
        .run(kind, () => {
          calls++;
          return new Promise<never>(() => undefined);
        })
        .catch((e: unknown) => e);
      assert.ok(
        result instanceof AppError && result.code === 'STORE_UNAVAILABLE',
        `${kind}: ${String(result)}`,
      );
      assert.equal(calls, 1, 'the stalled attempt is not repeated: its outcome is in doubt');
    }
    // An answer before the deadline is an answer.
    assert.equal(await retry.run('read', () => Promise.resolve(7)), 7);
  });
});
