// End to end over HTTP + WebSocket with real parts: OpenSSH sshd, TigerVNC Xvnc + openbox on
// loopback. Register → add instance → connect → RFB handshake through the relay → a real
// framebuffer update from Xvnc → disconnect → the desktop's processes are gone.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/lib/clock.js';
import { listenTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { isProcessAlive, startSshd, type SshdFixture } from './helpers/sshd.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('gateway end to end (sshd + TigerVNC)', () => {
  let sshd: SshdFixture;
  let gw: TestGateway;
  let base: string;
  const clock = new ManualClock(Date.now());

  before(async () => {
    sshd = await startSshd({ users: 2 });
    const listening = await listenTestGateway({ MAX_SESSIONS_PER_USER: '2', LOG_LEVEL: 'debug' }, { clock });
    gw = listening;
    base = listening.base;
  });
  after(async () => {
    await gw?.cleanup();
    await sshd?.stop();
  });

  const target = (i = 0) => ({ host: sshd.host, port: sshd.port, user: sshd.users[i]! });
  const connect = (
    user: { auth: { authorization: string } },
    instanceId: string,
    desktopEnvironment = 'openbox',
  ) =>
    gw.app.inject({
      method: 'POST',
      url: '/api/sessions/connect',
      headers: user.auth,
      payload: { instanceId, desktopEnvironment },
    });
  const openViewer = (websocketUrl: string) =>
    RfbTestClient.open(`ws://${base}${websocketUrl}`, { origin: `http://${base}` });
  const sessionRow = (id: string) =>
    gw.store.db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  test('key login: connect starts a desktop, the viewer gets real framebuffer updates, disconnect stops it', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target(0), { auth: 'key' });
    assert.equal(instance.hostKeyFingerprint, null);

    const res = await connect(user, instance.id);
    assert.equal(res.statusCode, 201, res.body);
    const { sessionId, websocketUrl, display } = res.json().data;
    assert.match(websocketUrl, /^\/vnc\?ticket=[A-Za-z0-9_-]+$/);
    assert.ok(Number.isInteger(display) && display >= 1 && display <= 10);

    // Trust on first use: the host key is pinned now.
    const pinned = await gw.app.inject({
      method: 'GET',
      url: `/api/instances/${instance.id}`,
      headers: user.auth,
    });
    assert.equal(pinned.json().data.hostKeyFingerprint, sshd.hostKeyFingerprint);

    const viewer = await openViewer(websocketUrl);
    const init = await viewer.handshake();
    assert.deepEqual([init.width, init.height], [1280, 800]);
    viewer.requestUpdate(false);
    const update = await viewer.readFramebufferUpdate();
    assert.ok(update.rects >= 1 && update.bytes > 0);

    // The ticket was single-use.
    await assert.rejects(openViewer(websocketUrl), (e: { status?: number }) => e.status === 401);

    // Connecting again to the same instance returns the same session (same desktop).
    const again = await connect(user, instance.id);
    assert.equal(again.statusCode, 200);
    assert.equal(again.json().data.sessionId, sessionId);
    assert.equal(again.json().data.display, display);

    const active = await gw.app.inject({ method: 'GET', url: '/api/sessions/active', headers: user.auth });
    const listed = active.json().data.find((s: { id: string }) => s.id === sessionId);
    assert.equal(listed.viewers, 1);
    assert.equal(listed.status, 'active');

    const { desktop_pid } = await sessionRow(sessionId);
    assert.ok(desktop_pid && isProcessAlive(desktop_pid));
    const end = await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/disconnect/${sessionId}`,
      headers: user.auth,
    });
    assert.equal(end.statusCode, 200);
    assert.equal(await viewer.closed, 4000);
    // The desktop is stopped in the background (admission.test.ts shows the answer does not wait for it).
    await gw.sessions.stopper.settled();
    assert.equal(isProcessAlive(desktop_pid), false, 'Xvnc is gone on the instance');
    assert.equal((await sessionRow(sessionId)).status, 'ended');
    const ticket = await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/${sessionId}/ticket`,
      headers: user.auth,
    });
    assert.equal(ticket.json().error.code, 'SESSION_ENDED');
  });

  test('password login works too, and a viewer may speak before the channel is open', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target(1), { auth: 'password' });
    const res = await connect(user, instance.id);
    assert.equal(res.statusCode, 201, res.body);
    const viewer = await openViewer(res.json().data.websocketUrl);
    // Send our version line and security choice without waiting: the relay must buffer them.
    viewer.send(Buffer.from('RFB 003.008\n', 'latin1'));
    viewer.send([1]);
    assert.equal((await viewer.read(12)).toString('latin1'), 'RFB 003.008\n');
    const count = (await viewer.read(1))[0]!;
    assert.ok([...(await viewer.read(count))].includes(1));
    assert.equal((await viewer.read(4)).readUInt32BE(), 0);
    viewer.close();
    await viewer.closed;
    await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/disconnect/${res.json().data.sessionId}`,
      headers: user.auth,
    });
  });

  test('a changed host key refuses the connection until the owner re-trusts it', async () => {
    const user = await newUser(gw);
    const wrong = 'SHA256:' + 'A'.repeat(43);
    const instance = await newInstance(gw, user, target(0), { hostKeyFingerprint: wrong });
    const res = await connect(user, instance.id);
    assert.equal(res.statusCode, 409);
    assert.equal(res.json().error.code, 'HOST_KEY_MISMATCH');
    assert.equal(res.json().error.details.actual, sshd.hostKeyFingerprint);
    const test = await gw.app.inject({
      method: 'POST',
      url: `/api/instances/${instance.id}/test`,
      headers: user.auth,
    });
    assert.equal(test.statusCode, 409);
    const retrust = await gw.app.inject({
      method: 'PATCH',
      url: `/api/instances/${instance.id}`,
      headers: user.auth,
      payload: { hostKeyFingerprint: sshd.hostKeyFingerprint },
    });
    assert.equal(retrust.statusCode, 200);
    const probe = await gw.app.inject({
      method: 'POST',
      url: `/api/instances/${instance.id}/test`,
      headers: user.auth,
    });
    assert.equal(probe.statusCode, 200, probe.body);
    const report = probe.json().data;
    assert.equal(report.hostKeyStatus, 'pinned');
    assert.equal(report.vncServer.kind, 'tigervnc');
    assert.ok(report.desktopEnvironments.includes('openbox'));
    assert.ok(report.desktopEnvironments.includes('xfce'));

    // The audit trail has the refusals (connect and test) and the re-trust, with both fingerprints.
    await gw.audit.flush();
    const rows = await gw.store.db
      .selectFrom('audit_events')
      .selectAll()
      .where('target_id', '=', instance.id)
      .where('type', 'like', 'host-key.%')
      .orderBy('id')
      .execute();
    assert.deepEqual(
      rows.map((r) => [r.type, JSON.parse(r.details) as unknown]),
      [
        ['host-key.mismatch', { pinned: wrong, presented: sshd.hostKeyFingerprint }],
        ['host-key.mismatch', { pinned: wrong, presented: sshd.hostKeyFingerprint }],
        ['host-key.retrusted', { previous: wrong, fingerprint: sshd.hostKeyFingerprint }],
      ],
    );
  });

  test('the per-user session limit answers 429 SESSION_LIMIT_REACHED', async () => {
    const user = await newUser(gw);
    const a = await newInstance(gw, user, target(0), { name: 'a' });
    const b = await newInstance(gw, user, target(1), { name: 'b' });
    const c = await newInstance(gw, user, target(0), { name: 'c' });
    const ra = await connect(user, a.id);
    const rb = await connect(user, b.id);
    assert.equal(ra.statusCode, 201);
    assert.equal(rb.statusCode, 201);
    const rc = await connect(user, c.id);
    assert.equal(rc.statusCode, 429);
    assert.equal(rc.json().error.code, 'SESSION_LIMIT_REACHED');
    for (const r of [ra, rb]) {
      await gw.app.inject({
        method: 'POST',
        url: `/api/sessions/disconnect/${r.json().data.sessionId}`,
        headers: user.auth,
      });
    }
  });

  test('tickets expire after 30 s and foreign origins are refused', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target(0));
    const res = await connect(user, instance.id);
    const { sessionId, websocketUrl } = res.json().data;
    await assert.rejects(
      RfbTestClient.open(`ws://${base}${websocketUrl}`, { origin: 'https://evil.example' }),
      (e: { status?: number }) => e.status === 403,
    );
    const fresh = await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/${sessionId}/ticket`,
      headers: user.auth,
    });
    clock.advance(31_000);
    await assert.rejects(
      openViewer(fresh.json().data.websocketUrl),
      (e: { status?: number }) => e.status === 401,
    );
    await gw.app.inject({ method: 'POST', url: `/api/sessions/disconnect/${sessionId}`, headers: user.auth });
  });

  test("signing out everywhere revokes refresh tokens and closes the user's viewers with 4001", async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target(0));
    const res = await connect(user, instance.id);
    const viewer = await openViewer(res.json().data.websocketUrl);
    await viewer.handshake();
    const out = await gw.app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: user.auth });
    assert.equal(out.statusCode, 204);
    assert.equal(await viewer.closed, 4001);
    const refresh = await gw.app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      payload: { refreshToken: user.refreshToken },
    });
    assert.equal(refresh.statusCode, 401);
    await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/disconnect/${res.json().data.sessionId}`,
      headers: user.auth,
    });
  });

  test('an idle session (no viewer for 30 min) is ended by the sweeper, which stops its desktop', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target(1));
    const res = await connect(user, instance.id);
    const { sessionId, websocketUrl } = res.json().data;
    const viewer = await openViewer(websocketUrl);
    await viewer.handshake();
    const { desktop_pid } = await sessionRow(sessionId);

    clock.advance(29 * 60_000);
    assert.equal(await gw.sweeper.runOnce(), 0, 'a watched session is not idle');
    viewer.close();
    await viewer.closed;
    await gw.activity.flush();
    clock.advance(29 * 60_000);
    assert.equal(await gw.sweeper.runOnce(), 0, 'not idle for long enough yet');
    clock.advance(2 * 60_000);
    assert.equal(await gw.sweeper.runOnce(), 1);
    const row = await sessionRow(sessionId);
    assert.equal(row.status, 'ended');
    assert.equal(row.end_reason, 'idle-timeout');
    await gw.sessions.stopper.settled();
    assert.equal(isProcessAlive(desktop_pid!), false);
  });

  test('TRUST_PROXY: a viewer behind the balancer is audited at the address Fastify gives its API calls', async () => {
    // The client says 198.51.100.9; the balancer on 127.0.0.1 appends the address it saw, 203.0.113.7.
    const headers = { 'x-forwarded-for': '198.51.100.9, 203.0.113.7' };
    const behindBalancer = async (g: TestGateway, gBase: string) => {
      const user = await newUser(g);
      const login = await g.app.inject({
        method: 'POST',
        url: '/api/auth/login',
        headers,
        payload: { email: user.email, password: user.password },
      });
      assert.equal(login.statusCode, 200, login.body);
      const instance = await newInstance(g, user, target(1));
      const res = await g.app.inject({
        method: 'POST',
        url: '/api/sessions/connect',
        headers: { ...user.auth, ...headers },
        payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
      });
      assert.equal(res.statusCode, 201, res.body);
      const { sessionId, websocketUrl } = res.json().data;
      const viewer = await RfbTestClient.open(`ws://${gBase}${websocketUrl as string}`, { headers });
      await viewer.handshake();
      viewer.close();
      await viewer.closed;
      await g.app.inject({
        method: 'POST',
        url: `/api/sessions/disconnect/${sessionId}`,
        headers: user.auth,
      });
      await g.audit.flush();
      const rows = await g.store.db
        .selectFrom('audit_events')
        .select(['type', 'ip'])
        .where('subject_user_id', '=', user.id)
        .where('type', 'in', ['auth.sign-in', 'viewer.attached', 'viewer.detached'])
        .orderBy('id')
        .execute();
      return rows.map((r) => [r.type, r.ip]);
    };

    const trusting = await listenTestGateway({ TRUST_PROXY: '127.0.0.1' });
    try {
      assert.deepEqual(await behindBalancer(trusting, trusting.base), [
        ['auth.sign-in', '203.0.113.7'],
        ['viewer.attached', '203.0.113.7'],
        ['viewer.detached', '203.0.113.7'],
      ]);
    } finally {
      await trusting.cleanup();
    }
    // Without TRUST_PROXY the header is the client's word, believed by neither.
    assert.deepEqual(await behindBalancer(gw, base), [
      ['auth.sign-in', '127.0.0.1'],
      ['viewer.attached', '127.0.0.1'],
      ['viewer.detached', '127.0.0.1'],
    ]);
  });

  test('no plaintext credential in any database row or log line', async () => {
    const rows = JSON.stringify([
      await gw.store.db.selectFrom('instances').selectAll().execute(),
      await gw.store.db.selectFrom('sessions').selectAll().execute(),
      await gw.store.db.selectFrom('users').selectAll().execute(),
    ]);
    const logs = gw.logLines.join('');
    for (const u of sshd.users) {
      const keyBody = u.privateKey.split('\n')[1]!;
      for (const secret of [u.password, keyBody]) {
        assert.ok(!rows.includes(secret), 'secret found in the database');
        assert.ok(!logs.includes(secret), 'secret found in the logs');
      }
    }
    assert.ok(!/ticket=[A-Za-z0-9_-]{16}/.test(logs), 'a ticket found in the logs');
  });
});
