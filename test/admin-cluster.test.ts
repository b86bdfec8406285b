// Administration across two gateway processes' worth of nodes (two gateways in this process, each
// with its own node id and Redis connection, on one PostgreSQL database) with real sshd + TigerVNC:
// the admin on gateway A sees the viewer on gateway B in the session list, disabling the user on A
// closes the viewer on B within a second (4001), ending a session on A closes its viewer on B (4000,
// reason admin), and the audit of the whole story holds the events an auditor asks for and not one
// password, key, passphrase, token or ticket.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { newInstance, type TestGateway } from './helpers/builders.js';
import { type SshdFixture } from './helpers/sshd.js';
import { startTwoGateways, type ListeningGateway, type TwoGateways } from './helpers/two-gateways.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('admin across two gateways (PostgreSQL + Redis, sshd + TigerVNC)', () => {
  let sshd: SshdFixture;
  let cluster: TwoGateways | undefined;
  let a: ListeningGateway;
  let b: ListeningGateway;

  before(async () => {
    cluster = await startTwoGateways('admin', { WS_MAX_CONNECTS_PER_MINUTE: '1000' });
    ({ sshd, a, b } = cluster);
  });
  after(async () => {
    await cluster?.stop();
  });

  const post = (gw: TestGateway, url: string, payload?: object, headers?: Record<string, string>) =>
    gw.app.inject({ method: 'POST', url, headers, ...(payload === undefined ? {} : { payload }) });

  test('the full story', { timeout: 120_000 }, async (t) => {
    const secrets: string[] = [];
    // A cluster has no first-account admin: the operator makes one (as `clouddesk admin create`).
    const adminPassword = 'admin passphrase 0123';
    await a.auth.createAccount('boss@example.com', adminPassword, 'admin');
    const adminLogin = await post(a, '/api/auth/login', {
      email: 'boss@example.com',
      password: adminPassword,
    });
    assert.equal(adminLogin.statusCode, 200, adminLogin.body);
    const adminAuth = { authorization: `Bearer ${adminLogin.json().data.accessToken as string}` };
    secrets.push(adminPassword, adminLogin.json().data.accessToken, adminLogin.json().data.refreshToken);

    const password = 'user passphrase 4567';
    const reg = await post(b, '/api/auth/register', { email: 'worker@example.com', password });
    assert.equal(reg.statusCode, 201, reg.body);
    assert.equal(reg.json().data.user.role, 'user', 'not the first account of a single node');
    const user = {
      id: reg.json().data.user.id as string,
      auth: { authorization: `Bearer ${reg.json().data.accessToken as string}` },
    };
    secrets.push(password, reg.json().data.accessToken, reg.json().data.refreshToken);
    const target = { host: sshd.host, port: sshd.port, user: sshd.users[0]! };
    secrets.push(sshd.users[0]!.password, sshd.users[0]!.passphrase);
    for (const line of sshd.users[0]!.privateKey.split('\n'))
      if (line.length > 20 && !line.startsWith('-----')) secrets.push(line);
    const instance = await newInstance(b, user, target, { auth: 'key', name: 'work box' });

    const connect = async () => {
      const res = await post(
        b,
        '/api/sessions/connect',
        { instanceId: instance.id, desktopEnvironment: 'openbox' },
        user.auth,
      );
      assert.ok(res.statusCode === 201 || res.statusCode === 200, res.body);
      const body = res.json().data as { sessionId: string; websocketUrl: string };
      secrets.push(body.websocketUrl.split('ticket=')[1]!);
      const viewer = await RfbTestClient.open(`ws://${b.base}${body.websocketUrl}`);
      await viewer.handshake();
      return { sessionId: body.sessionId, viewer };
    };

    // The viewer is on B; the admin on A sees it there.
    const first = await connect();
    const listed = await a.app.inject({
      method: 'GET',
      url: `/api/admin/sessions?userId=${user.id}`,
      headers: adminAuth,
    });
    assert.equal(listed.statusCode, 200, listed.body);
    const [row] = listed.json().data.items as {
      id: string;
      user: { email: string };
      instance: { name: string; host: string };
      viewers: { node: string }[];
      display: number;
    }[];
    assert.equal(row?.id, first.sessionId);
    assert.equal(row.user.email, 'worker@example.com');
    assert.deepEqual(row.instance, { id: instance.id, name: 'work box', host: sshd.host });
    assert.deepEqual(
      row.viewers.map((v) => v.node),
      ['gw-b'],
    );
    assert.ok(
      !listed.body.includes('secret') && !listed.body.includes(sshd.users[0]!.privateKey.slice(40, 80)),
    );
    const users = await a.app.inject({ method: 'GET', url: '/api/admin/users?q=worker', headers: adminAuth });
    assert.equal(users.json().data.items[0].liveSessions, 1);

    // A ticket taken before the account is disabled is no way back in.
    const spare = await post(b, `/api/sessions/${first.sessionId}/ticket`, {}, user.auth);
    const spareUrl = spare.json().data.websocketUrl as string;
    secrets.push(spareUrl.split('ticket=')[1]!);

    // Disabled on A: the viewer on B is closed within a second, with 4001.
    const started = performance.now();
    const disabled = await a.app.inject({
      method: 'PATCH',
      url: `/api/admin/users/${user.id}`,
      headers: adminAuth,
      payload: { disabled: true },
    });
    assert.equal(disabled.statusCode, 200, disabled.body);
    assert.equal(await first.viewer.closed, 4001);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 1000, `closed after ${Math.round(elapsed)} ms`);
    t.diagnostic(`disable on A → viewer on B closed (4001) in ${Math.round(elapsed)} ms`);
    await assert.rejects(
      RfbTestClient.open(`ws://${b.base}${spareUrl}`),
      (e: { status?: number; body?: string }) => e.status === 403 && /ACCOUNT_DISABLED/.test(e.body ?? ''),
    );
    assert.equal(
      (await b.app.inject({ method: 'GET', url: '/api/sessions/active', headers: user.auth })).statusCode,
      403,
    );

    // Enabled again, the user reconnects (the desktop is reused); the admin ends the session from A.
    await a.app.inject({
      method: 'PATCH',
      url: `/api/admin/users/${user.id}`,
      headers: adminAuth,
      payload: { disabled: false },
    });
    const login = await post(b, '/api/auth/login', { email: 'worker@example.com', password });
    assert.equal(login.statusCode, 200, login.body);
    user.auth = { authorization: `Bearer ${login.json().data.accessToken as string}` };
    secrets.push(login.json().data.accessToken, login.json().data.refreshToken);
    const second = await connect();
    assert.equal(second.sessionId, first.sessionId, 'the same desktop');
    const end = await post(a, `/api/admin/sessions/${second.sessionId}/end`, undefined, adminAuth);
    assert.equal(end.statusCode, 200, end.body);
    assert.equal(await second.viewer.closed, 4000);
    assert.equal(
      (await post(a, `/api/admin/sessions/${second.sessionId}/end`, undefined, adminAuth)).json().error.code,
      'SESSION_ENDED',
    );
    const history = await b.app.inject({ method: 'GET', url: '/api/sessions/history', headers: user.auth });
    const [past] = history.json().data.items as {
      id: string;
      endReason: string;
      instanceName: string;
      durationSeconds: number;
    }[];
    assert.equal(past?.id, second.sessionId);
    assert.equal(past.endReason, 'admin');
    assert.equal(past.instanceName, 'work box');
    await post(b, '/api/auth/logout', { refreshToken: login.json().data.refreshToken });

    // The audit of the story, from both nodes.
    await Promise.all([a.audit.flush(), b.audit.flush()]);
    const rows = await a.store.db
      .selectFrom('audit_events')
      .selectAll()
      .orderBy('at')
      .orderBy('id')
      .execute();
    const types = new Set(rows.map((r) => r.type));
    for (const t of [
      'auth.register',
      'auth.sign-in',
      'auth.sign-out',
      'instance.created',
      'host-key.pinned',
      'session.started',
      'session.reused',
      'viewer.attached',
      'viewer.detached',
      'user.disabled',
      'user.enabled',
      'session.ended',
    ])
      assert.ok(types.has(t), `${t} audited (have ${[...types].join(', ')})`);
    const ended = rows.find((r) => r.type === 'session.ended');
    assert.equal(JSON.parse(ended!.details).reason, 'admin');
    assert.equal(
      ended!.actor,
      (
        await a.store.db
          .selectFrom('users')
          .select('id')
          .where('email', '=', 'boss@example.com')
          .executeTakeFirstOrThrow()
      ).id,
    );
    const detached = rows
      .filter((r) => r.type === 'viewer.detached')
      .map((r) => JSON.parse(r.details) as Record<string, unknown>);
    assert.deepEqual(
      detached.map((d) => [d.node, d.closeCode]),
      [
        ['gw-b', 4001],
        ['gw-b', 4000],
      ],
    );
    assert.ok(detached.every((d) => typeof d.bytesToViewer === 'number' && d.bytesToViewer > 0));
    assert.ok(rows.every((r) => r.node_id === 'gw-a' || r.node_id === 'gw-b'));
    assert.ok(rows.filter((r) => r.type === 'auth.sign-in').every((r) => r.ip === '127.0.0.1'));

    const text = JSON.stringify(rows);
    for (const secret of secrets)
      assert.ok(!text.includes(secret), `an audit row holds a secret (${secret.slice(0, 6)}…)`);
    for (const r of rows) {
      const keys = Object.keys(JSON.parse(r.details) as object);
      assert.ok(
        !keys.some((k) => /pass|private|ticket|token|secret/i.test(k)),
        `${r.type}: ${keys.join(', ')}`,
      );
    }
  });
});
