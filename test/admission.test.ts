// Admission control for desktop starts and the background stop (issue 9), with real parts: OpenSSH sshd,
// TigerVNC Xvnc + openbox, the gateway listening on loopback and real concurrent HTTP clients. Desktop
// starts and stops go to the real DesktopService through a wrapper that can hold them at a gate, so what
// is asserted is order (answered before the start or stop finished), never elapsed time.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { desktopMarker } from '../src/desktop/desktop.service.js';
import { AppError } from '../src/errors/errors.js';
import { newInstance, newUser, type TestGateway } from './helpers/builders.js';
import {
  startDesktopGateway,
  type DesktopGateway,
  Counter,
  type DesktopOps,
  gate,
} from './helpers/desktop-gateway.js';
import { isProcessAlive, processesWithEnv } from './helpers/sshd.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('admission control and background stop (sshd + TigerVNC)', () => {
  let fixture: DesktopGateway | undefined;
  let gw: TestGateway & { base: string };
  // What the next starts / stops do before going to the real service (replaced per test).
  let beforeStart: () => Promise<void> = () => Promise.resolve();
  let beforeStop: () => Promise<void> = () => Promise.resolve();
  const startsEntered = new Counter();
  const stopsEntered = new Counter();
  const stopsDone = new Counter();

  before(async () => {
    fixture = await startDesktopGateway(
      {
        DESKTOP_STARTS_IN_FLIGHT: '2',
        DESKTOP_STARTS_IN_FLIGHT_PER_INSTANCE: '2',
        DESKTOP_START_QUEUE: '4',
        DESKTOP_START_QUEUE_WAIT_MS: '120000',
        DESKTOP_STOPS_IN_FLIGHT: '2',
      },
      (real): DesktopOps => ({
        start: async (target, de) => {
          startsEntered.bump();
          await beforeStart();
          return real.start(target, de);
        },
        stop: async (target, handle) => {
          stopsEntered.bump();
          try {
            await beforeStop();
            await real.stop(target, handle);
          } finally {
            stopsDone.bump();
          }
        },
        isAlive: (target, handle) => real.isAlive(target, handle),
      }),
    );
    gw = fixture.gw;
  });
  after(async () => {
    await fixture?.stop();
  });

  const target = () => fixture!.target();
  const post = (path: string, token: string, body?: unknown) =>
    fetch(`http://${gw.base}${path}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      // Far beyond what any answer may take here; the old behaviour was a 60 s failure.
      signal: AbortSignal.timeout(90_000),
    });
  const deleteInstance = (id: string, token: string) =>
    fetch(`http://${gw.base}/api/instances/${id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(90_000),
    });
  /** The desktop's Xvnc, if it still lives, and every live process carrying its marker. */
  const leftovers = async (display: number, pid: number) =>
    [...(isProcessAlive(pid) ? [pid] : []), ...(await processesWithEnv(desktopMarker({ display, pid })))]
      .filter((p, i, all) => all.indexOf(p) === i)
      .filter(isProcessAlive);
  const sessionRow = (id: string) =>
    gw.store.db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  /** The session ended in the store with its stop due, and nothing in this process told of it. */
  const endedOnRecordStopDue = (id: string) =>
    gw.store.db
      .updateTable('sessions')
      .set({ status: 'ended', ended_at: Date.now(), end_reason: 'disconnected', stop_due_at: Date.now() - 1 })
      .where('id', '=', id)
      .execute();
  const openViewer = (websocketUrl: string) =>
    RfbTestClient.open(`ws://${gw.base}${websocketUrl}`, { origin: `http://${gw.base}` });
  const metric = async (name: string, label: string) => {
    const text = await gw.metrics.render();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(label));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  };

  /** A new instance of `user`'s and a connected session on it, its desktop running. */
  const connectedDesktop = async (user: Awaited<ReturnType<typeof newUser>>) => {
    const instance = await newInstance(gw, user, target());
    const res = await post('/api/sessions/connect', user.accessToken, {
      instanceId: instance.id,
      desktopEnvironment: 'openbox',
    });
    assert.equal(res.status, 201);
    const { sessionId } = ((await res.json()) as { data: { sessionId: string } }).data;
    const { display, desktop_pid } = await sessionRow(sessionId);
    assert.ok(display !== null && desktop_pid !== null && isProcessAlive(desktop_pid));
    return { instance, sessionId, display, desktop_pid };
  };

  test('30 connects at once against 2 in flight + a queue of 4: 24 answered 503 OVERLOADED + Retry-After (spread) before any start finished, 6 get a desktop and a live ticket', async () => {
    const users = await Promise.all(Array.from({ length: 30 }, () => newUser(gw)));
    const instances = await Promise.all(users.map((u) => newInstance(gw, u, target())));
    const startGate = gate();
    beforeStart = () => startGate.promise;
    const startsBefore = startsEntered.value;

    const answered = new Counter();
    const calls = users.map(async (u, i) => {
      const res = await post('/api/sessions/connect', u.accessToken, {
        instanceId: instances[i]!.id,
        desktopEnvironment: 'openbox',
      });
      const body = (await res.json()) as {
        data?: { sessionId: string; websocketUrl: string };
        error?: { code: string };
      };
      const startedDesktops = startsEntered.value - startsBefore;
      answered.bump();
      return {
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body,
        startedDesktops,
        user: u,
      };
    });

    // Every refusal arrives while the two admitted starts are still held at the gate.
    await answered.reach(24);
    assert.equal(startsEntered.value - startsBefore, 2, 'two starts run, the rest wait or are refused');
    assert.equal(gw.sessions.startQueue.inFlight, 2);
    assert.equal(gw.sessions.startQueue.depth, 4);
    startGate.open();
    beforeStart = () => Promise.resolve();
    const results = await Promise.all(calls);

    const refused = results.filter((r) => r.status === 503);
    const created = results.filter((r) => r.status === 201);
    assert.equal(refused.length, 24, JSON.stringify(results.map((r) => [r.status, r.body.error?.code])));
    assert.equal(created.length, 6);
    for (const r of refused) {
      assert.equal(r.body.error?.code, 'OVERLOADED');
      assert.match(r.retryAfter ?? '', /^[1-9]\d*$/, 'Retry-After in whole seconds');
      assert.ok(Number(r.retryAfter) <= 60);
    }
    // Told to come back spread at the pace starts finish (2 at once, ~2 s each: one a second), not all
    // after the same few seconds, where they would meet a full queue again.
    const told = refused.map((r) => Number(r.retryAfter));
    assert.ok(Math.max(...told) - Math.min(...told) >= 15, `Retry-Afters spread: ${told.join(',')}`);
    assert.equal(await metric('clouddesk_desktop_start_rejected_total', 'reason="queue_full"'), 24);
    // A refused connect leaves no session behind.
    const rows = await gw.store.db.selectFrom('sessions').select('id').execute();
    assert.equal(rows.length, 6);

    // Tickets are minted when the desktop is ready: each still opens its viewer after the wait in line.
    for (const r of created) {
      const viewer = await openViewer(r.body.data!.websocketUrl);
      const init = await viewer.handshake();
      assert.equal(init.width, 1280);
      viewer.close();
      await viewer.closed;
    }
    for (const r of created) {
      const end = await post(`/api/sessions/disconnect/${r.body.data!.sessionId}`, r.user.accessToken);
      assert.equal(end.status, 200);
    }
    await gw.sessions.stopper.settled();
    for (const r of created) {
      const row = await sessionRow(r.body.data!.sessionId);
      assert.equal(row.stop_due_at, null);
      assert.equal(isProcessAlive(row.desktop_pid!), false);
    }
  });

  test('disconnect answers once the session is ended, before the stop script has run; the desktop is then stopped', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target());
    const res = await post('/api/sessions/connect', user.accessToken, {
      instanceId: instance.id,
      desktopEnvironment: 'openbox',
    });
    assert.equal(res.status, 201);
    const { sessionId, websocketUrl } = (
      (await res.json()) as { data: { sessionId: string; websocketUrl: string } }
    ).data;
    const viewer = await openViewer(websocketUrl);
    await viewer.handshake();
    const { desktop_pid } = await sessionRow(sessionId);

    const stopGate = gate();
    beforeStop = () => stopGate.promise;
    const entered = stopsEntered.value;
    const done = stopsDone.value;
    const end = await post(`/api/sessions/disconnect/${sessionId}`, user.accessToken);
    assert.equal(end.status, 200);
    assert.equal(await viewer.closed, 4000);
    // Answered; the stop has not finished (it cannot: it waits at the gate), and the desktop still runs.
    assert.equal(stopsDone.value, done);
    assert.ok(isProcessAlive(desktop_pid!));
    const row = await sessionRow(sessionId);
    assert.equal(row.status, 'ended');
    assert.notEqual(row.stop_due_at, null, 'the pending stop is on record');
    await stopsEntered.reach(entered + 1);

    stopGate.open();
    beforeStop = () => Promise.resolve();
    await gw.sessions.stopper.settled();
    assert.equal(isProcessAlive(desktop_pid!), false, 'Xvnc is gone on the instance');
    assert.equal((await sessionRow(sessionId)).stop_due_at, null);
  });

  test('a stop that fails is retried with backoff until it succeeds', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target());
    const res = await post('/api/sessions/connect', user.accessToken, {
      instanceId: instance.id,
      desktopEnvironment: 'openbox',
    });
    const { sessionId } = ((await res.json()) as { data: { sessionId: string } }).data;
    const { desktop_pid } = await sessionRow(sessionId);
    let failures = 2;
    beforeStop = () =>
      failures-- > 0 ? Promise.reject(new Error('instance unreachable')) : Promise.resolve();
    const done = stopsDone.value;
    assert.equal((await post(`/api/sessions/disconnect/${sessionId}`, user.accessToken)).status, 200);
    await stopsDone.reach(done + 3);
    await gw.sessions.stopper.settled();
    beforeStop = () => Promise.resolve();
    const row = await sessionRow(sessionId);
    assert.equal(row.stop_attempts, 2);
    assert.equal(row.stop_due_at, null);
    assert.equal(isProcessAlive(desktop_pid!), false);
    assert.equal(await metric('clouddesk_desktop_stops_total', 'outcome="retry"'), 2);
  });

  test('a session ended while its desktop was starting: the connect answers SESSION_ENDED and the new desktop is stopped', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target());
    const startGate = gate();
    beforeStart = () => startGate.promise;
    const entered = startsEntered.value;
    const connecting = post('/api/sessions/connect', user.accessToken, {
      instanceId: instance.id,
      desktopEnvironment: 'openbox',
    });
    await startsEntered.reach(entered + 1);
    const active = await fetch(`http://${gw.base}/api/sessions/active`, {
      headers: { authorization: `Bearer ${user.accessToken}` },
    });
    const [starting] = ((await active.json()) as { data: { id: string; status: string }[] }).data;
    assert.ok(starting);
    assert.equal(starting.status, 'starting');
    assert.equal((await post(`/api/sessions/disconnect/${starting.id}`, user.accessToken)).status, 200);
    startGate.open();
    beforeStart = () => Promise.resolve();
    const res = await connecting;
    assert.equal(res.status, 410);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SESSION_ENDED');
    await gw.sessions.stopper.settled();
    const row = await sessionRow(starting.id);
    assert.equal(row.status, 'ended');
    assert.ok(row.desktop_pid && row.desktop_pid > 1, 'the desktop it got is on record');
    assert.equal(isProcessAlive(row.desktop_pid), false, 'and stopped');
    assert.equal(row.stop_due_at, null);
  });

  test('a stop a gateway left behind (it died after ending the session) is run by the next sweep', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target());
    const res = await post('/api/sessions/connect', user.accessToken, {
      instanceId: instance.id,
      desktopEnvironment: 'openbox',
    });
    const { sessionId } = ((await res.json()) as { data: { sessionId: string } }).data;
    const { desktop_pid } = await sessionRow(sessionId);
    // What a gateway that ended the session and died before its stop ran leaves in the store.
    await gw.sessions.stopper.settled();
    await endedOnRecordStopDue(sessionId);
    assert.ok(isProcessAlive(desktop_pid!));
    await gw.sweeper.runOnce();
    await gw.sessions.stopper.settled();
    assert.equal(isProcessAlive(desktop_pid!), false);
    assert.equal((await sessionRow(sessionId)).stop_due_at, null);
  });

  test('a disconnect whose answer failed after the session was ended (Redis lost at the publish): its desktop is still stopped, and the repeat answers SESSION_ENDED', async () => {
    const user = await newUser(gw);
    const { sessionId, desktop_pid } = await connectedDesktop(user);
    const realPublish = gw.coordinator.publish.bind(gw.coordinator);
    gw.coordinator.publish = () => Promise.reject(new AppError('COORDINATION_UNAVAILABLE'));
    try {
      const end = await post(`/api/sessions/disconnect/${sessionId}`, user.accessToken);
      assert.equal(end.status, 503);
    } finally {
      gw.coordinator.publish = realPublish;
    }
    assert.equal((await sessionRow(sessionId)).status, 'ended', 'the end is on record');
    const again = await post(`/api/sessions/disconnect/${sessionId}`, user.accessToken);
    assert.equal(again.status, 410);
    assert.equal(((await again.json()) as { error: { code: string } }).error.code, 'SESSION_ENDED');
    await gw.sessions.stopper.settled();
    assert.equal(isProcessAlive(desktop_pid), false, 'stopped without waiting for a sweep');
    assert.equal((await sessionRow(sessionId)).stop_due_at, null);
  });

  test('a disconnect repeated after its answer was lost (the session ended on record, its stop not queued by anyone): the repeat answers SESSION_ENDED and stops the desktop', async () => {
    const user = await newUser(gw);
    const { sessionId, desktop_pid } = await connectedDesktop(user);
    await gw.sessions.stopper.settled();
    // What a first disconnect leaves when the store's answer to its write is lost in a failover.
    await endedOnRecordStopDue(sessionId);
    const again = await post(`/api/sessions/disconnect/${sessionId}`, user.accessToken);
    assert.equal(again.status, 410);
    await gw.sessions.stopper.settled();
    assert.equal(isProcessAlive(desktop_pid), false, 'stopped on the repeat, no sweep ran');
    assert.equal((await sessionRow(sessionId)).stop_due_at, null);
  });

  test('an instance deleted while the stop of its just-disconnected session waits: the delete stops that desktop, and the late background try is harmless', async () => {
    const user = await newUser(gw);
    const { instance, sessionId, display, desktop_pid } = await connectedDesktop(user);

    // The background stop's first try is held at the gate (holding the session's stop lock); every other
    // stop goes straight to the instance.
    const stopGate = gate();
    let held = false;
    beforeStop = () => {
      if (held) return Promise.resolve();
      held = true;
      return stopGate.promise;
    };
    const entered = stopsEntered.value;
    const stopped = await metric('clouddesk_desktop_stops_total', 'outcome="stopped"');
    assert.equal((await post(`/api/sessions/disconnect/${sessionId}`, user.accessToken)).status, 200);
    await stopsEntered.reach(entered + 1);

    const del = await deleteInstance(instance.id, user.accessToken);
    assert.equal(del.status, 204);
    // Answered with the desktop already gone, while the background try still waits.
    assert.deepEqual(await leftovers(display, desktop_pid), [], 'no Xvnc or desktop process left');
    assert.equal(stopsDone.value < stopsEntered.value, true, 'the background try has not finished');

    // The held try now stops the same desktop a second time: it finds nothing left and succeeds.
    stopGate.open();
    beforeStop = () => Promise.resolve();
    await gw.sessions.stopper.settled();
    assert.equal(await metric('clouddesk_desktop_stops_total', 'outcome="stopped"'), stopped + 1);
    assert.deepEqual(await leftovers(display, desktop_pid), []);
  });

  test('disconnect and instance delete at once (real concurrent clients): no desktop of the session is left', async () => {
    const user = await newUser(gw);
    for (let round = 0; round < 3; round++) {
      const { instance, sessionId, display, desktop_pid } = await connectedDesktop(user);

      const [end, del] = await Promise.all([
        post(`/api/sessions/disconnect/${sessionId}`, user.accessToken),
        deleteInstance(instance.id, user.accessToken),
      ]);
      // The disconnect ended it (200), or found it ended (410) or already gone with its instance (404).
      assert.ok([200, 404, 410].includes(end.status), `round ${round}: disconnect ${end.status}`);
      assert.equal(del.status, 204, `round ${round}`);
      assert.deepEqual(await leftovers(display, desktop_pid), [], `round ${round}: stopped by the delete`);
      await gw.sessions.stopper.settled();
      assert.deepEqual(await leftovers(display, desktop_pid), [], `round ${round}`);
    }
  });
});
