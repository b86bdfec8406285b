// Usage per session: the activity buffer's batched deltas (kept across a failed flush, written at
// shutdown), the session fields in the API, and GET /api/usage with its range checks. SQLite here; the
// repository itself runs on both dialects in store.test.ts, and through a real relay in viewer-e2e.test.ts.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { ManualClock } from '../src/lib/clock.js';
import { ActivityBuffer } from '../src/sessions/activity-buffer.js';
import { UsageRepository, type UsageEntry } from '../src/store/usage.repository.js';
import { SessionRepository } from '../src/store/session.repository.js';
import { createLogger } from '../src/observability/logger.js';
import { buildTestGateway, newUser, type TestGateway } from './helpers/builders.js';

describe('usage per session', () => {
  const clock = new ManualClock(Date.UTC(2026, 2, 10, 12));
  let gw: TestGateway;
  let alice: Awaited<ReturnType<typeof newUser>>;
  let bob: Awaited<ReturnType<typeof newUser>>;

  before(async () => {
    gw = await buildTestGateway({}, { clock });
    alice = await newUser(gw);
    bob = await newUser(gw);
  });
  after(() => gw.cleanup());

  /** An instance (through the API) and an active session on it (straight into the store). */
  async function newSession(user: typeof alice, name = 'box') {
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/instances',
      headers: user.auth,
      payload: {
        name,
        host: '127.0.0.1',
        port: 2222,
        username: 'u',
        auth: { type: 'password', password: 'pw' },
      },
    });
    assert.equal(res.statusCode, 201, res.body);
    const instanceId = res.json().data.id as string;
    const sessionId = randomUUID();
    await new SessionRepository(gw.store).create({
      id: sessionId,
      user_id: user.id,
      instance_id: instanceId,
      desktop_environment: 'openbox',
      status: 'active',
      display: 1,
      transport: 'unix',
      socket_path: '/tmp/x.sock',
      vnc_port: null,
      vnc_password_ciphertext: null,
      vnc_password_key_id: null,
      desktop_pid: 1,
      created_at: clock.now(),
      started_at: clock.now(),
      last_activity_at: clock.now(),
      ended_at: null,
      end_reason: null,
      bytes_to_viewer: 0,
      bytes_from_viewer: 0,
      viewer_seconds: 0,
      stop_due_at: null,
      stop_attempts: 0,
    });
    return { sessionId, instanceId, userId: user.id };
  }

  const getSession = async (user: typeof alice, id: string) =>
    (await gw.app.inject({ method: 'GET', url: `/api/sessions/${id}`, headers: user.auth })).json<{
      data: { bytesToViewer: number; bytesFromViewer: number; viewerSeconds: number };
    }>().data;
  const getUsage = (user: typeof alice, query = '') =>
    gw.app.inject({ method: 'GET', url: `/api/usage${query}`, headers: user.auth });

  test('usage noted in memory reaches the session and the API only when the buffer flushes', async () => {
    const s = await newSession(alice);
    let sampled = 0;
    gw.activity.addSampler(() => {
      // (Stays registered for the later tests: it adds its usage on the first flush only.)
      if (sampled++ > 0) return;
      gw.activity.addUsage(s, { bytesToViewer: 100, bytesFromViewer: 1, viewerSeconds: 5 }, clock.now());
    });
    gw.activity.addUsage(s, { bytesToViewer: 2000, bytesFromViewer: 20, viewerSeconds: 1.2 }, clock.now());
    assert.equal((await getSession(alice, s.sessionId)).bytesToViewer, 0, 'nothing written per note');
    await gw.activity.flush();
    assert.equal(sampled, 1, 'live viewers are sampled just before the write');
    const shown = await getSession(alice, s.sessionId);
    assert.deepEqual([shown.bytesToViewer, shown.bytesFromViewer, shown.viewerSeconds], [2100, 21, 6]);
    const listed = (await gw.app.inject({ method: 'GET', url: '/api/sessions/active', headers: alice.auth }))
      .json()
      .data.find((x: { id: string }) => x.id === s.sessionId);
    assert.deepEqual([listed.bytesToViewer, listed.bytesFromViewer, listed.viewerSeconds], [2100, 21, 6]);
  });

  test('a flush that fails keeps the usage for the next one: nothing lost, nothing counted twice', async () => {
    const s = await newSession(alice);
    const real = new UsageRepository(gw.store);
    let failNext = true;
    const calls: number[] = [];
    const buffer = new ActivityBuffer(
      new SessionRepository(gw.store),
      {
        addMany(entries: readonly UsageEntry[]) {
          calls.push(entries.length);
          if (failNext) {
            failNext = false;
            return Promise.reject(new Error('database is down'));
          }
          return real.addMany(entries);
        },
      },
      createLogger({ level: 'silent' }),
    );
    buffer.addUsage(s, { bytesToViewer: 10, bytesFromViewer: 0, viewerSeconds: 1 }, clock.now());
    await buffer.flush();
    assert.equal((await getSession(alice, s.sessionId)).bytesToViewer, 0);
    assert.equal(buffer.pendingUsage().length, 1, 'kept');
    buffer.addUsage(s, { bytesToViewer: 5, bytesFromViewer: 0, viewerSeconds: 1 }, clock.now());
    await buffer.stop(); // shutdown flushes what is left
    assert.deepEqual(calls, [1, 1], 'merged into one entry for the retry');
    assert.equal((await getSession(alice, s.sessionId)).bytesToViewer, 15);
    assert.equal(buffer.pendingUsage().length, 0);
  });

  test('GET /api/usage: per instance and per UTC day, only the caller’s', async () => {
    const a = await newSession(alice, 'alpha');
    const b = await newSession(alice, 'beta');
    const other = await newSession(bob, 'bobs');
    const day = (iso: string) => Date.parse(iso);
    gw.activity.addUsage(
      a,
      { bytesToViewer: 1000, bytesFromViewer: 10, viewerSeconds: 60 },
      day('2026-03-08T23:59:59Z'),
    );
    gw.activity.addUsage(
      a,
      { bytesToViewer: 500, bytesFromViewer: 5, viewerSeconds: 30 },
      day('2026-03-09T00:00:01Z'),
    );
    gw.activity.addUsage(
      b,
      { bytesToViewer: 7, bytesFromViewer: 1, viewerSeconds: 2.4 },
      day('2026-03-09T10:00:00Z'),
    );
    gw.activity.addUsage(
      other,
      { bytesToViewer: 9999, bytesFromViewer: 9, viewerSeconds: 9 },
      day('2026-03-09T10:00:00Z'),
    );
    await gw.activity.flush();

    const res = await getUsage(alice, '?from=2026-03-08&to=2026-03-09');
    assert.equal(res.statusCode, 200, res.body);
    const report = res.json().data;
    assert.equal(report.from, '2026-03-08');
    assert.equal(report.to, '2026-03-09');
    assert.deepEqual(report.total, { bytesToViewer: 1507, bytesFromViewer: 16, viewerSeconds: 92 });
    const byName = Object.fromEntries(
      report.instances.map((i: { instanceName: string; bytesToViewer: number }) => [
        i.instanceName,
        i.bytesToViewer,
      ]),
    );
    assert.deepEqual(byName, { alpha: 1500, beta: 7 });
    // Ordered by day, then instance id; compare by day and name.
    assert.deepEqual(
      report.days
        .map((d: { day: string; instanceName: string; bytesToViewer: number }) => [
          d.day,
          d.instanceName,
          d.bytesToViewer,
        ])
        .sort(),
      [
        ['2026-03-08', 'alpha', 1000],
        ['2026-03-09', 'alpha', 500],
        ['2026-03-09', 'beta', 7],
      ],
    );
    const onlyNinth = (await getUsage(alice, '?from=2026-03-09&to=2026-03-09')).json().data;
    assert.equal(onlyNinth.total.bytesToViewer, 507);
    // The default range: the 30 days ending today (the clock says 2026-03-10).
    const defaults = (await getUsage(alice)).json().data;
    assert.deepEqual([defaults.from, defaults.to], ['2026-02-09', '2026-03-10']);
    assert.ok(defaults.total.bytesToViewer >= 1507);
    assert.equal(
      (await getUsage(bob, '?from=2026-03-09&to=2026-03-09')).json().data.total.bytesToViewer,
      9999,
    );
  });

  test('GET /api/usage refuses bad ranges with clear codes', async () => {
    const cases: [string, number, string][] = [
      ['?from=2026-3-1', 400, 'VALIDATION_FAILED'],
      ['?to=yesterday', 400, 'VALIDATION_FAILED'],
      ['?from=2026-03-01&limit=5', 400, 'VALIDATION_FAILED'],
      ['?from=2026-02-30&to=2026-03-01', 400, 'USAGE_RANGE_INVALID'],
      ['?from=2026-03-02&to=2026-03-01', 400, 'USAGE_RANGE_INVALID'],
      ['?from=2027-01-01', 400, 'USAGE_RANGE_INVALID'],
      ['?from=2024-01-01&to=2025-01-01', 400, 'USAGE_RANGE_TOO_LONG'],
    ];
    for (const [query, status, code] of cases) {
      const res = await getUsage(alice, query);
      assert.equal(res.statusCode, status, `${query}: ${res.body}`);
      assert.equal(res.json().error.code, code, query);
    }
    assert.equal(
      (await getUsage(alice, '?from=2024-01-01&to=2024-12-31')).statusCode,
      200,
      '366 days (a leap year)',
    );
    const anonymous = await gw.app.inject({ method: 'GET', url: '/api/usage' });
    assert.equal(anonymous.statusCode, 401);
  });
});
