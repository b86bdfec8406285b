// The background desktop stop when its session's instance is deleted while a try runs: the instance's
// delete runs that stop itself (SessionService.deleteInstance), so the try that then finds the instance
// gone is not a failure to report as "gave up" (an error for the operator) but what happened, said once.
// And a try whose bookkeeping fails (the store away) is made again here within seconds, not left to the
// sweep (CLEANUP_INTERVAL_MS, 5 minutes): pg-failover's ended sessions kept their desktops past its wait.
// The session rows are a small in-memory stand-in (the try's reads and writes are all that matter here);
// the real store paths are covered by admission.test.ts and delete-during-start.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '../src/errors/errors.js';
import { ManualClock } from '../src/lib/clock.js';
import { MemoryCoordinator } from '../src/coordination/memory-coordinator.js';
import {
  DesktopStopper,
  type DesktopStopperOptions,
  type StopOutcome,
} from '../src/sessions/desktop-stopper.js';
import type { SessionRow } from '../src/store/session.repository.js';
import { captureLogger } from './helpers/builders.js';

function endedSession(id: string): SessionRow {
  return {
    id,
    user_id: 'u1',
    instance_id: 'i1',
    desktop_environment: 'openbox',
    status: 'ended',
    display: 42,
    transport: 'unix',
    socket_path: '/tmp/x',
    vnc_port: null,
    vnc_password_ciphertext: null,
    vnc_password_key_id: null,
    desktop_pid: 4242,
    created_at: 0,
    started_at: 0,
    last_activity_at: 0,
    ended_at: 1,
    end_reason: 'disconnected',
    bytes_to_viewer: 0,
    bytes_from_viewer: 0,
    viewer_seconds: 0,
    stop_due_at: 1,
    stop_attempts: 0,
  };
}

/**
 * One ended session `s1` and a stopper over it; `read` stands for the store's session read and `stop` for
 * the stop on the instance. `stopped()` resolves at the first 'stopped' outcome, failing the test if none
 * comes within 10 s of the call (a bound for a broken build, not a wait).
 */
function stopperOver(opts: {
  stop: (row: SessionRow) => Promise<void>;
  read?: (row: SessionRow | undefined) => Promise<SessionRow | undefined>;
  options?: Partial<DesktopStopperOptions>;
}) {
  const clock = new ManualClock(1_000);
  const rows = new Map<string, SessionRow>([['s1', endedSession('s1')]]);
  const { logger, lines } = captureLogger('info');
  const outcomes: StopOutcome[] = [];
  let sawStopped!: () => void;
  const stoppedOnce = new Promise<void>((resolve) => (sawStopped = resolve));
  const stopped = async () => {
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([
      stoppedOnce,
      new Promise((_, reject) => {
        bound = setTimeout(() => reject(new Error(`not stopped: ${outcomes.join(', ')}`)), 10_000);
      }),
    ]).finally(() => clearTimeout(bound));
  };
  const stopper = new DesktopStopper(
    {
      sessions: {
        findById: (id) => (opts.read ?? ((r) => Promise.resolve(r)))(rows.get(id)),
        // No sweep runs in these tests: what is retried is retried by the stopper itself.
        listStopsDue: () => Promise.reject(new Error('no sweep in this test')),
        setStopDue: (id, due, attempts) => {
          const row = rows.get(id);
          if (row) rows.set(id, { ...row, stop_due_at: due, stop_attempts: attempts });
          return Promise.resolve();
        },
      },
      coordinator: new MemoryCoordinator(clock),
      clock,
      logger,
      stop: opts.stop,
      onOutcome: (o) => {
        outcomes.push(o);
        if (o === 'stopped') sawStopped();
      },
    },
    { concurrency: 1, baseBackoffMs: 60_000, ...opts.options },
  );
  const logged = () => lines.map((l) => JSON.parse(l) as { level: number; msg: string; retryInMs?: number });
  return { stopper, rows, outcomes, logged, stopped };
}

const stopperFailingWith = (error: Error) => stopperOver({ stop: () => Promise.reject(error) });

test('a try that finds its instance deleted is not a failure: logged as what happened (info), nothing retried', async () => {
  const { stopper, rows, outcomes, logged } = stopperFailingWith(new AppError('INSTANCE_NOT_FOUND'));
  stopper.enqueue('s1');
  await stopper.settled();
  assert.deepEqual(outcomes, ['instance_deleted']);
  assert.equal(rows.get('s1')!.stop_due_at, null, 'nothing left due');
  const lines = logged();
  assert.deepEqual(
    lines.filter((l) => l.level >= 50),
    [],
    'no error log (no "gave up stopping the desktop")',
  );
  const said = lines.filter((l) => l.msg.includes('was deleted'));
  assert.equal(said.length, 1);
  assert.equal(said[0]!.level, 30);
  await stopper.close(0);
});

test('a try that fails otherwise is still retried with a warning (the control)', async () => {
  const { stopper, rows, outcomes, logged } = stopperFailingWith(new Error('instance unreachable'));
  stopper.enqueue('s1');
  await stopper.settled();
  assert.deepEqual(outcomes, ['retry']);
  assert.equal(rows.get('s1')!.stop_attempts, 1);
  assert.notEqual(rows.get('s1')!.stop_due_at, null);
  assert.ok(logged().some((l) => l.level === 40 && l.msg.includes('will retry')));
  await stopper.close(0);
});

test('a try that cannot read its session (store away) is made again here once the store is back, without a sweep', async () => {
  let reads = 0;
  const stoppedIds: string[] = [];
  const { stopper, rows, logged, stopped } = stopperOver({
    // The store comes back at the third read.
    read: (row) => (++reads < 3 ? Promise.reject(new AppError('STORE_UNAVAILABLE')) : Promise.resolve(row)),
    stop: (row) => {
      stoppedIds.push(row.id);
      return Promise.resolve();
    },
    options: { baseBackoffMs: 1, maxStoreRetryMs: 4 },
  });
  stopper.enqueue('s1');
  await stopped();
  assert.deepEqual(stoppedIds, ['s1'], 'stopped once, after the store came back');
  assert.equal(reads, 3, 'read again after each failure: two failed, the third worked');
  assert.equal(rows.get('s1')!.stop_due_at, null, 'nothing left due');
  assert.equal(rows.get('s1')!.stop_attempts, 0, 'store failures are not counted as failed stops');
  assert.deepEqual(
    logged()
      .filter((l) => l.msg.includes('bookkeeping failed'))
      .map((l) => [l.level, l.retryInMs]),
    [
      [40, 1],
      [40, 2],
    ],
    'each failure warned with its backoff, doubling',
  );
  await stopper.close(0);
});

test('a stop that cannot read its instance (store away) is tried again soon and not counted as a failed stop', async () => {
  let tries = 0;
  const { stopper, rows, outcomes, stopped } = stopperOver({
    // The instance's row is read through the store: away for the first two tries.
    stop: () => (++tries <= 2 ? Promise.reject(new AppError('STORE_UNAVAILABLE')) : Promise.resolve()),
    // A failed stop would wait a minute: only the store's short retry can make this finish.
    options: { baseBackoffMs: 60_000, maxStoreRetryMs: 2 },
  });
  stopper.enqueue('s1');
  await stopped();
  assert.equal(tries, 3);
  assert.deepEqual(outcomes, ['stopped'], 'no retry outcome: the stop itself never failed');
  assert.equal(rows.get('s1')!.stop_attempts, 0);
  assert.equal(rows.get('s1')!.stop_due_at, null);
  await stopper.close(0);
});
