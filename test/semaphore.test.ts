// The bounded concurrency used where a burst must not swamp a shared resource (password hashing on
// libuv's thread pool): at most `limit` at once, a bounded queue in arrival order, OVERLOADED past it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Semaphore } from '../src/lib/semaphore.js';
import { rejectsWith } from './helpers/assertions.js';

/** A task the test finishes by hand. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const settle = () => new Promise((r) => setImmediate(r));

void describe('Semaphore', () => {
  void it('runs at most `limit` tasks at once and starts the waiting ones in arrival order', async () => {
    const sem = new Semaphore(2, 10);
    const tasks = Array.from({ length: 5 }, deferred);
    const started: number[] = [];
    const runs = tasks.map((t, i) =>
      sem.run(async () => {
        started.push(i);
        await t.promise;
        return i;
      }),
    );
    await settle();
    assert.deepEqual(started, [0, 1]);
    assert.deepEqual([sem.running, sem.queued], [2, 3]);
    tasks[1]!.resolve();
    await settle();
    assert.deepEqual(started, [0, 1, 2]);
    for (const t of tasks) t.resolve();
    assert.deepEqual(await Promise.all(runs), [0, 1, 2, 3, 4]);
    assert.deepEqual([sem.running, sem.queued], [0, 0]);
  });

  void it('refuses with OVERLOADED once the queue is full, and takes callers again when it drains', async () => {
    const sem = new Semaphore(1, 1);
    const first = deferred();
    const running = sem.run(() => first.promise);
    const queued = sem.run(() => Promise.resolve('queued'));
    await rejectsWith(
      sem.run(() => Promise.resolve('refused')),
      'OVERLOADED',
    );
    first.resolve();
    await running;
    assert.equal(await queued, 'queued');
    assert.equal(await sem.run(() => Promise.resolve('again')), 'again');
  });

  void it('frees the slot of a task that fails', async () => {
    const sem = new Semaphore(1, 0);
    await assert.rejects(
      sem.run(() => Promise.reject(new Error('boom'))),
      /boom/,
    );
    assert.equal(sem.running, 0);
    assert.equal(await sem.run(() => Promise.resolve(1)), 1);
  });
});
