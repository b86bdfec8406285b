// Session sharing through the API (issue 10), on the embedded store with an injected clock: creating a
// share (defaults, bounds, only the owner), the token shown once and stored only as its hash (never in a
// row or a log line), exchanging it for a ticket under SHARE_GUESTS=signed-in and anyone, single use,
// expiry, revoke, a share dying with its session, SESSION_MAX_VIEWERS, and the audit trail of it all.
// The relay side (view-only enforced on a real desktop, revoke closing a guest) is in shares-e2e.test.ts.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ManualClock } from '../src/lib/clock.js';
import { ShareRepository } from '../src/store/share.repository.js';
import { buildTestGateway, newUser, type TestGateway } from './helpers/builders.js';

const START = Date.UTC(2026, 11, 2, 9);

describe('session sharing API', () => {
  const clock = new ManualClock(START);
  let gw: TestGateway;
  let anyone: TestGateway;

  before(async () => {
    gw = await buildTestGateway({ SHARE_MAX_MINUTES: '120', SESSION_MAX_VIEWERS: '2' }, { clock });
    anyone = await buildTestGateway({ SHARE_GUESTS: 'anyone' }, { clock });
  });
  after(async () => {
    await gw?.cleanup();
    await anyone?.cleanup();
  });

  /** A user with a live session (the row as a started desktop leaves it; no desktop is reached here). */
  async function owner(g: TestGateway = gw) {
    const user = await newUser(g);
    const instance = await g.app.inject({
      method: 'POST',
      url: '/api/instances',
      headers: user.auth,
      payload: {
        name: 'box',
        host: '127.0.0.1',
        port: 2,
        username: 'u',
        auth: { type: 'password', password: 'instance-password-1' },
      },
    });
    assert.equal(instance.statusCode, 201, instance.body);
    const sessionId = crypto.randomUUID();
    const now = clock.now();
    await g.store.db
      .insertInto('sessions')
      .values({
        id: sessionId,
        user_id: user.id,
        instance_id: instance.json().data.id,
        desktop_environment: 'openbox',
        status: 'active',
        display: 3,
        transport: 'unix',
        socket_path: '/tmp/x.sock',
        vnc_port: null,
        vnc_password_ciphertext: null,
        vnc_password_key_id: null,
        desktop_pid: 1,
        created_at: now,
        started_at: now,
        last_activity_at: now,
        ended_at: null,
        end_reason: null,
        bytes_to_viewer: 0,
        bytes_from_viewer: 0,
        viewer_seconds: 0,
        stop_due_at: null,
        stop_attempts: 0,
      })
      .execute();
    return { ...user, sessionId };
  }

  const share = (g: TestGateway, who: { auth: Record<string, string> }, sessionId: string, payload: object) =>
    g.app.inject({ method: 'POST', url: `/api/sessions/${sessionId}/shares`, headers: who.auth, payload });
  const exchange = (g: TestGateway, token: string, headers: Record<string, string> = {}, payload?: object) =>
    g.app.inject({
      method: 'POST',
      url: `/api/shares/${token}/ticket`,
      headers,
      ...(payload ? { payload } : {}),
    });
  const tokenOf = (url: string) => {
    const m = /^\/share#([A-Za-z0-9_-]{43})$/.exec(url);
    assert.ok(m, `a landing path with the token after #: ${url}`);
    return m[1]!;
  };

  test('a share: 60 minutes by default, the token shown once and kept only as its hash', async () => {
    const alice = await owner();
    const res = await share(gw, alice, alice.sessionId, { mode: 'view' });
    assert.equal(res.statusCode, 201, res.body);
    const created = res.json().data as { id: string; url: string; mode: string; expiresAt: string };
    assert.equal(created.mode, 'view');
    assert.equal(created.expiresAt, new Date(START + 60 * 60_000).toISOString());
    const token = tokenOf(created.url);
    const rows = await gw.store.db.selectFrom('shares').selectAll().where('id', '=', created.id).execute();
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.token_hash, createHash('sha256').update(token).digest('hex'));
    assert.ok(!JSON.stringify(rows).includes(token), 'no column holds the token');

    const listed = await gw.app.inject({
      method: 'GET',
      url: `/api/sessions/${alice.sessionId}/shares`,
      headers: alice.auth,
    });
    assert.equal(listed.statusCode, 200, listed.body);
    assert.deepEqual(
      listed
        .json()
        .data.map((s: { id: string; status: string; guests: unknown[] }) => [s.id, s.status, s.guests]),
      [[created.id, 'active', []]],
    );
    assert.ok(!listed.body.includes(token), 'the list never shows the token again');
  });

  test('bounds: SHARE_MAX_MINUTES, the mode, and only the owner may share or revoke', async () => {
    const alice = await owner();
    const long = await share(gw, alice, alice.sessionId, { mode: 'view', expiresInMinutes: 121 });
    assert.equal(long.statusCode, 400);
    assert.equal(long.json().error.code, 'SHARE_EXPIRY_TOO_LONG');
    const ok = await share(gw, alice, alice.sessionId, {
      mode: 'control',
      expiresInMinutes: 120,
      singleUse: true,
    });
    assert.equal(ok.statusCode, 201, ok.body);
    const mode = await share(gw, alice, alice.sessionId, { mode: 'admin' });
    assert.equal(mode.json().error.code, 'VALIDATION_FAILED');

    const mallory = await newUser(gw);
    const theirs = await share(gw, mallory, alice.sessionId, { mode: 'view' });
    assert.equal(theirs.json().error.code, 'SESSION_NOT_FOUND');
    const revoke = await gw.app.inject({
      method: 'DELETE',
      url: `/api/shares/${ok.json().data.id as string}`,
      headers: mallory.auth,
    });
    assert.equal(revoke.json().error.code, 'SHARE_NOT_FOUND');
    const list = await gw.app.inject({
      method: 'GET',
      url: `/api/sessions/${alice.sessionId}/shares`,
      headers: mallory.auth,
    });
    assert.equal(list.json().error.code, 'SESSION_NOT_FOUND');
  });

  test('SHARE_GUESTS=signed-in: the token is exchanged for a ticket only by a signed-in guest', async () => {
    const alice = await owner();
    const token = tokenOf((await share(gw, alice, alice.sessionId, { mode: 'view' })).json().data.url);
    const invitation = await gw.app.inject({ method: 'GET', url: `/api/shares/${token}` });
    assert.equal(invitation.statusCode, 200, invitation.body);
    assert.deepEqual(invitation.json().data, {
      ownerName: alice.email,
      mode: 'view',
      expiresAt: new Date(START + 60 * 60_000).toISOString(),
      guests: 'signed-in',
    });

    const anonymous = await exchange(gw, token, {}, { displayName: 'Bob' });
    assert.equal(anonymous.statusCode, 401);
    assert.equal(anonymous.json().error.code, 'SHARE_SIGN_IN_REQUIRED');
    const bob = await newUser(gw);
    const res = await exchange(gw, token, bob.auth);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json().data as {
      sessionId: string;
      websocketUrl: string;
      mode: string;
      ownerName: string;
    };
    assert.equal(body.sessionId, alice.sessionId);
    assert.equal(body.mode, 'view');
    assert.equal(body.ownerName, alice.email);
    const claims = await gw.coordinator.redeemTicket(body.websocketUrl.split('ticket=')[1]!);
    assert.equal(claims?.userId, alice.id, "the ticket is to the owner's session");
    assert.deepEqual(
      { ...claims?.guest, shareId: undefined },
      { shareId: undefined, mode: 'view', userId: bob.id, name: bob.email, expiresAt: START + 60 * 60_000 },
    );

    for (const bad of ['x'.repeat(43), 'short', 'a'.repeat(120)]) {
      const r = await exchange(gw, bad, bob.auth);
      assert.equal(r.json().error.code, 'SHARE_INVALID', bad);
    }
  });

  test('SHARE_GUESTS=anyone: an anonymous guest gives a display name', async () => {
    const alice = await owner(anyone);
    const token = tokenOf((await share(anyone, alice, alice.sessionId, { mode: 'control' })).json().data.url);
    for (const payload of [undefined, {}, { displayName: '   ' }, { displayName: 'x'.repeat(65) }]) {
      const r = await exchange(anyone, token, {}, payload);
      assert.equal(r.json().error.code, 'SHARE_GUEST_NAME_REQUIRED', JSON.stringify(payload));
    }
    const res = await exchange(anyone, token, {}, { displayName: ' Carol ' });
    assert.equal(res.statusCode, 200, res.body);
    const claims = await anyone.coordinator.redeemTicket(res.json().data.websocketUrl.split('ticket=')[1]);
    assert.equal(claims?.guest?.userId, null);
    assert.equal(claims?.guest?.name, 'Carol');
    assert.equal(claims?.guest?.mode, 'control');
  });

  test('single use, expiry, revoke, and a share dying with its session', async () => {
    const alice = await owner();
    const bob = await newUser(gw);
    const once = tokenOf(
      (await share(gw, alice, alice.sessionId, { mode: 'view', singleUse: true })).json().data.url,
    );
    assert.equal((await exchange(gw, once, bob.auth)).statusCode, 200);
    assert.equal((await exchange(gw, once, bob.auth)).json().error.code, 'SHARE_USED');

    const short = tokenOf(
      (await share(gw, alice, alice.sessionId, { mode: 'view', expiresInMinutes: 1 })).json().data.url,
    );
    assert.equal((await exchange(gw, short, bob.auth)).statusCode, 200);
    clock.advance(60_000);
    assert.equal((await exchange(gw, short, bob.auth)).json().error.code, 'SHARE_EXPIRED');

    const created = (await share(gw, alice, alice.sessionId, { mode: 'view' })).json().data;
    const revoked = await gw.app.inject({
      method: 'DELETE',
      url: `/api/shares/${created.id as string}`,
      headers: alice.auth,
    });
    assert.equal(revoked.statusCode, 204, revoked.body);
    const r = await exchange(gw, tokenOf(created.url), bob.auth);
    assert.equal(r.statusCode, 410);
    assert.equal(r.json().error.code, 'SHARE_REVOKED');
    const statuses = (
      await gw.app.inject({
        method: 'GET',
        url: `/api/sessions/${alice.sessionId}/shares`,
        headers: alice.auth,
      })
    )
      .json()
      .data.map((s: { status: string }) => s.status);
    // Newest first; the first two were made at the same tick, so their order is the ids'.
    assert.equal(statuses[0], 'revoked');
    assert.deepEqual(statuses.slice(1).sort(), ['expired', 'used']);

    const live = tokenOf((await share(gw, alice, alice.sessionId, { mode: 'view' })).json().data.url);
    await gw.store.db
      .updateTable('sessions')
      .set({ status: 'ended' })
      .where('id', '=', alice.sessionId)
      .execute();
    assert.equal((await exchange(gw, live, bob.auth)).json().error.code, 'SESSION_ENDED');
    assert.equal(
      (await share(gw, alice, alice.sessionId, { mode: 'view' })).json().error.code,
      'SESSION_ENDED',
    );
  });

  test('a ticket issued before a revoke is refused at the WebSocket', async () => {
    const alice = await owner();
    const bob = await newUser(gw);
    const created = (await share(gw, alice, alice.sessionId, { mode: 'view' })).json().data;
    const ticket = (await exchange(gw, tokenOf(created.url), bob.auth))
      .json()
      .data.websocketUrl.split('ticket=')[1];
    await gw.app.inject({
      method: 'DELETE',
      url: `/api/shares/${created.id as string}`,
      headers: alice.auth,
    });
    await assert.rejects(gw.sessions.resolveTicket(ticket as string), { code: 'SHARE_REVOKED' });
  });

  test('SESSION_MAX_VIEWERS: a guest is refused when the session has as many viewers as it may', async () => {
    const alice = await owner();
    const bob = await newUser(gw);
    const token = tokenOf((await share(gw, alice, alice.sessionId, { mode: 'view' })).json().data.url);
    for (const viewerId of ['v1', 'v2'])
      await gw.coordinator.putViewer({ sessionId: alice.sessionId, viewerId, nodeId: 'n' }, 60_000);
    const r = await exchange(gw, token, bob.auth);
    assert.equal(r.statusCode, 429);
    assert.equal(r.json().error.code, 'SESSION_VIEWERS_FULL');
    await gw.coordinator.removeViewer(alice.sessionId, 'v2');
    assert.equal((await exchange(gw, token, bob.auth)).statusCode, 200);
  });

  test('a guest removed by the owner is stored until its share expires, for a node that missed the command', async () => {
    const alice = await owner();
    const created = (await share(gw, alice, alice.sessionId, { mode: 'view', expiresInMinutes: 1 })).json()
      .data;
    const longer = (await share(gw, alice, alice.sessionId, { mode: 'view', expiresInMinutes: 10 })).json()
      .data;
    const guestLease = (viewerId: string, shareId: string = created.id) =>
      gw.coordinator.putViewer(
        { sessionId: alice.sessionId, viewerId, nodeId: 'n', guest: { shareId, name: 'bob' } },
        60_000,
      );
    const remove = (viewerId: string) =>
      gw.app.inject({
        method: 'DELETE',
        url: `/api/sessions/${alice.sessionId}/guests/${viewerId}`,
        headers: alice.auth,
      });
    const rows = () =>
      gw.store.db
        .selectFrom('removed_guests')
        .selectAll()
        .where('session_id', '=', alice.sessionId)
        .orderBy('viewer_id')
        .execute();
    await guestLease('g1');
    const removedAt = clock.now();
    assert.equal((await remove('g1')).statusCode, 204);
    assert.deepEqual(
      (await rows()).map((r) => ({
        ...r,
        removed_at: Number(r.removed_at),
        expires_at: Number(r.expires_at),
      })),
      [
        {
          viewer_id: 'g1',
          session_id: alice.sessionId,
          removed_at: removedAt,
          expires_at: removedAt + 60_000,
        },
      ],
    );
    // What the lease renewal's catch-up reads (batched by viewer id): only the removed guest.
    const found = await new ShareRepository(gw.store).listRemovedGuestsAmong(['g1', 'g2', 'not-a-guest']);
    assert.deepEqual([...found], [['g1', alice.sessionId]]);
    // Past the first share's expiry its row can match no open viewer (its guests are closed then): the
    // next removal, a guest of a share still live, prunes it.
    clock.advance(60_000 + 1);
    await guestLease('g2', longer.id);
    assert.equal((await remove('g2')).statusCode, 204);
    assert.deepEqual(
      (await rows()).map((r) => r.viewer_id),
      ['g2'],
    );
  });

  test('the audit trail has the share made, used and revoked, and no log line or row holds a token', async () => {
    const alice = await owner();
    const bob = await newUser(gw);
    const created = (await share(gw, alice, alice.sessionId, { mode: 'view', expiresInMinutes: 5 })).json()
      .data;
    const token = tokenOf(created.url);
    await gw.app.inject({ method: 'GET', url: `/api/shares/${token}` });
    const ticketUrl = (await exchange(gw, token, bob.auth)).json().data.websocketUrl as string;
    await gw.app.inject({
      method: 'DELETE',
      url: `/api/shares/${created.id as string}`,
      headers: alice.auth,
    });
    await gw.audit.flush();
    const rows = await gw.store.db
      .selectFrom('audit_events')
      .selectAll()
      .where('target_id', '=', created.id)
      .orderBy('at')
      .orderBy('id')
      .execute();
    assert.deepEqual(
      rows.map((r) => [r.type, r.actor, r.subject_user_id]),
      [
        ['share.created', alice.id, alice.id],
        ['share.used', bob.id, alice.id],
        ['share.revoked', alice.id, alice.id],
      ],
    );
    assert.deepEqual(JSON.parse(rows[1]!.details), {
      sessionId: alice.sessionId,
      mode: 'view',
      guestName: bob.email,
      guestUserId: bob.id,
    });
    const ticket = ticketUrl.split('ticket=')[1]!;
    const everything = JSON.stringify(await gw.store.db.selectFrom('audit_events').selectAll().execute());
    for (const secret of [token, ticket]) {
      assert.ok(!everything.includes(secret), 'no audit row holds it');
      assert.ok(!gw.logLines.some((l) => l.includes(secret)), 'no log line holds it');
    }
    assert.ok(
      gw.logLines.some((l) => l.includes('/api/shares/[token]/ticket')),
      'the request is logged without it',
    );
  });
});
