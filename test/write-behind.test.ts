// The write-behind rule shared by the activity, usage and audit buffers (src/store/write-behind.ts):
// an outage keeps every entry until the store is back, a refused batch is retried a few times and then
// dropped and counted, memory is bounded.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../src/observability/logger.js';
import { StoreConnectError } from '../src/store/store-retry.js';
import { AppError } from '../src/errors/errors.js';
import { WriteBehindBuffer, type WriteBehindOptions } from '../src/store/write-behind.js';

interface Counted {
  id: string;
  n: number;
}

function buffer(overrides: Partial<WriteBehindOptions<Counted>> = {}) {
  const written: Counted[][] = [];
  const drops: { reason: string; count: number }[] = [];
  let fail: Error | null = null;
  const b = new WriteBehindBuffer<Counted>({
    name: 'test',
    key: (e) => e.id,
    merge: (held, next) => ({ id: held.id, n: held.n + next.n }),
    write: (batch) => {
      if (fail !== null) return Promise.reject(fail);
      written.push(batch);
      return Promise.resolve();
    },
    logger: createLogger({ level: 'silent' }),
    onDropped: (d) => drops.push({ reason: d.reason, count: d.count }),
    ...overrides,
  });
  return { b, written, drops, failWith: (e: Error | null) => (fail = e) };
}

void describe('write-behind buffer', () => {
  test('an outage keeps every entry, however many flushes fail, and writes them merged when it ends', async () => {
    const h = buffer();
    h.b.add({ id: 'a', n: 1 });
    h.failWith(new StoreConnectError(new Error('ECONNREFUSED')));
    for (let i = 0; i < 10; i++) {
      await h.b.flush();
      h.b.add({ id: 'a', n: 1 });
      h.b.add({ id: `b${i}`, n: 1 });
    }
    assert.equal(h.b.waitingForStore, true);
    h.failWith(new AppError('STORE_UNAVAILABLE'));
    await h.b.flush();
    h.failWith(null);
    await h.b.flush();
    assert.equal(h.b.waitingForStore, false);
    assert.equal(h.written.length, 1);
    const byId = new Map(h.written[0]!.map((e) => [e.id, e.n]));
    assert.equal(byId.get('a'), 11, 'nothing lost, nothing counted twice');
    assert.equal(byId.size, 11);
    assert.deepEqual(h.drops, []);
    assert.equal(h.b.size, 0);
  });

  test('entries added while a batch is being written are kept when that write fails', async () => {
    let release!: (e: unknown) => void;
    const h = buffer({
      write: () =>
        new Promise<void>((_, reject) => {
          release = reject;
        }),
    });
    h.b.add({ id: 'a', n: 1 });
    const flushing = h.b.flush();
    await new Promise((r) => setImmediate(r));
    h.b.add({ id: 'a', n: 2 });
    h.b.add({ id: 'c', n: 5 });
    release(new Error('Connection terminated unexpectedly'));
    await flushing;
    assert.deepEqual(
      h.b.pending().sort((x, y) => x.id.localeCompare(y.id)),
      [
        { id: 'a', n: 3 },
        { id: 'c', n: 5 },
      ],
    );
  });

  test('a batch the store refuses is retried 3 times, then dropped and counted', async () => {
    const h = buffer();
    h.b.add({ id: 'a', n: 1 });
    h.failWith(Object.assign(new Error('violates foreign key constraint'), { code: '23503' }));
    await h.b.flush();
    await h.b.flush();
    assert.equal(h.b.size, 1, 'kept after 2 refusals');
    await h.b.flush();
    assert.equal(h.b.size, 0);
    assert.deepEqual(h.drops, [{ reason: 'refused', count: 1 }]);
    h.failWith(null);
    h.b.add({ id: 'b', n: 1 });
    await h.b.flush();
    assert.deepEqual(h.written, [[{ id: 'b', n: 1 }]], 'the buffer carries on');
  });

  test('memory is bounded: past maxEntries new keys are dropped, held keys still merge', async () => {
    const h = buffer({ maxEntries: 2 });
    h.b.add({ id: 'a', n: 1 });
    h.b.add({ id: 'b', n: 1 });
    h.b.add({ id: 'c', n: 1 });
    h.b.add({ id: 'a', n: 1 });
    assert.deepEqual(h.drops, [{ reason: 'overflow', count: 1 }]);
    await h.b.flush();
    assert.deepEqual(h.written, [
      [
        { id: 'a', n: 2 },
        { id: 'b', n: 1 },
      ],
    ]);
  });
});
