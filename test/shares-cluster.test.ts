// Sharing across two gateways (each with its own node id and Redis connection, one PostgreSQL database;
// what a round-robin balancer does to a guest: the share is made on one node, the link opened on the
// other) with real sshd + TigerVNC: the guest joins on B through a share created on A and is held to
// view-only there, the owner on A sees the guest and its node, and a revoke on A closes the guest on B
// within a second (4002) while the owner's viewer stays.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectNewDesktop, newUser } from './helpers/builders.js';
import { type SshdFixture } from './helpers/sshd.js';
import { startTwoGateways, type ListeningGateway, type TwoGateways } from './helpers/two-gateways.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('sharing across two gateways (PostgreSQL + Redis, sshd + TigerVNC)', () => {
  let sshd: SshdFixture;
  let cluster: TwoGateways | undefined;
  let a: ListeningGateway;
  let b: ListeningGateway;

  before(async () => {
    cluster = await startTwoGateways('shares', {
      SHARE_GUESTS: 'anyone',
      SESSION_MAX_VIEWERS: '3',
      WS_MAX_CONNECTS_PER_MINUTE: '1000',
    });
    ({ sshd, a, b } = cluster);
  });
  after(async () => {
    await cluster?.stop();
  });

  test(
    'made on A, joined on B, revoked on A: the guest on B is closed within a second',
    { timeout: 120_000 },
    async () => {
      const alice = await newUser(a);
      const { sessionId, websocketUrl } = await connectNewDesktop(a, alice, {
        host: sshd.host,
        port: sshd.port,
        user: sshd.users[0]!,
      });
      const owner = await RfbTestClient.open(`ws://${a.base}${websocketUrl}`);
      await owner.handshake();

      const created = await a.app.inject({
        method: 'POST',
        url: `/api/sessions/${sessionId}/shares`,
        headers: alice.auth,
        payload: { mode: 'view' },
      });
      assert.equal(created.statusCode, 201, created.body);
      const share = created.json().data as { id: string; url: string };
      const token = share.url.split('#')[1]!;

      // The anonymous guest's calls and WebSocket all land on B.
      const invitation = await b.app.inject({ method: 'GET', url: `/api/shares/${token}` });
      assert.equal(invitation.json().data.ownerName, alice.email);
      const exchanged = await b.app.inject({
        method: 'POST',
        url: `/api/shares/${token}/ticket`,
        payload: { displayName: 'Dana from support' },
      });
      assert.equal(exchanged.statusCode, 200, exchanged.body);
      const guest = await RfbTestClient.open(`ws://${b.base}${exchanged.json().data.websocketUrl as string}`);
      await guest.handshake();
      guest.requestUpdate(false);
      assert.ok((await guest.readFramebufferUpdate()).bytes > 0, 'the guest on B sees the desktop');

      // The owner, asking A, sees the guest on B. The lease is written as the guest attaches; wait for it.
      let guests: { name: string; node: string }[] = [];
      for (let i = 0; i < 100 && guests.length === 0; i++) {
        const listed = await a.app.inject({
          method: 'GET',
          url: `/api/sessions/${sessionId}/shares`,
          headers: alice.auth,
        });
        guests = (listed.json().data as { guests: typeof guests }[])[0]!.guests;
        if (guests.length === 0) await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(
        guests.map((g) => [g.name, g.node]),
        [['Dana from support', 'gw-b']],
      );

      const started = performance.now();
      const revoked = await a.app.inject({
        method: 'DELETE',
        url: `/api/shares/${share.id}`,
        headers: alice.auth,
      });
      assert.equal(revoked.statusCode, 204);
      assert.equal(await guest.closed, 4002);
      const ms = performance.now() - started;
      assert.ok(ms < 1000, `closed ${Math.round(ms)} ms after the revoke`);

      owner.requestUpdate(false);
      assert.ok((await owner.readFramebufferUpdate()).bytes > 0, "the owner's viewer on A stays");
      const again = await b.app.inject({
        method: 'POST',
        url: `/api/shares/${token}/ticket`,
        payload: { displayName: 'Dana from support' },
      });
      assert.equal(again.json().error.code, 'SHARE_REVOKED');
      await a.app.inject({
        method: 'POST',
        url: `/api/sessions/disconnect/${sessionId}`,
        headers: alice.auth,
      });
      assert.equal(await owner.closed, 4000);
    },
  );
  test(
    'the owner on A ends one guest on B: closed within a second (4002), the other guest stays',
    { timeout: 120_000 },
    async () => {
      const alice = await newUser(a);
      const mallory = await newUser(a);
      const { sessionId, websocketUrl } = await connectNewDesktop(a, alice, {
        host: sshd.host,
        port: sshd.port,
        user: sshd.users[0]!,
      });
      const owner = await RfbTestClient.open(`ws://${a.base}${websocketUrl}`);
      await owner.handshake();
      const created = await a.app.inject({
        method: 'POST',
        url: `/api/sessions/${sessionId}/shares`,
        headers: alice.auth,
        payload: { mode: 'view' },
      });
      const token = (created.json().data as { url: string }).url.split('#')[1]!;
      const join = async (displayName: string): Promise<RfbTestClient> => {
        const exchanged = await b.app.inject({
          method: 'POST',
          url: `/api/shares/${token}/ticket`,
          payload: { displayName },
        });
        assert.equal(exchanged.statusCode, 200, exchanged.body);
        const c = await RfbTestClient.open(`ws://${b.base}${exchanged.json().data.websocketUrl as string}`);
        await c.handshake();
        return c;
      };
      const dana = await join('Dana');
      const erin = await join('Erin');

      let guests: { viewerId: string; name: string; node: string }[] = [];
      for (let i = 0; i < 200 && guests.length < 2; i++) {
        const listed = await a.app.inject({
          method: 'GET',
          url: `/api/sessions/${sessionId}/shares`,
          headers: alice.auth,
        });
        guests = (listed.json().data as { guests: typeof guests }[])[0]!.guests;
        if (guests.length < 2) await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(guests.map((g) => g.name).sort(), ['Dana', 'Erin']);
      const danaId = guests.find((g) => g.name === 'Dana')!.viewerId;

      // Someone else's session, an unknown guest and the owner's own viewer are all 404.
      const notYours = await a.app.inject({
        method: 'DELETE',
        url: `/api/sessions/${sessionId}/guests/${danaId}`,
        headers: mallory.auth,
      });
      assert.equal(notYours.statusCode, 404);
      assert.equal(notYours.json().error.code, 'SESSION_NOT_FOUND');
      const unknown = await a.app.inject({
        method: 'DELETE',
        url: `/api/sessions/${sessionId}/guests/nobody`,
        headers: alice.auth,
      });
      assert.equal(unknown.statusCode, 404);
      assert.equal(unknown.json().error.code, 'GUEST_NOT_FOUND');

      const started = performance.now();
      const ended = await a.app.inject({
        method: 'DELETE',
        url: `/api/sessions/${sessionId}/guests/${danaId}`,
        headers: alice.auth,
      });
      assert.equal(ended.statusCode, 204, ended.body);
      assert.equal(await dana.closed, 4002);
      const ms = performance.now() - started;
      assert.ok(ms < 1000, `closed ${Math.round(ms)} ms after the request`);

      erin.requestUpdate(false);
      assert.ok((await erin.readFramebufferUpdate()).bytes > 0, 'the other guest on B stays');
      owner.requestUpdate(false);
      assert.ok((await owner.readFramebufferUpdate()).bytes > 0, "the owner's viewer on A stays");

      await a.audit.flush();
      const trail = await a.app.inject({
        method: 'GET',
        url: '/api/audit/me?type=share.guest-ended',
        headers: alice.auth,
      });
      const rows = trail.json().data.items as { type: string; details: { viewerId: string; node: string } }[];
      assert.deepEqual(
        rows.map((r) => [r.type, r.details.viewerId, r.details.node]),
        [['share.guest-ended', danaId, 'gw-b']],
      );

      await a.app.inject({
        method: 'POST',
        url: `/api/sessions/disconnect/${sessionId}`,
        headers: alice.auth,
      });
      assert.equal(await owner.closed, 4000);
      assert.equal(await erin.closed, 4000);
    },
  );
  test(
    'SESSION_MAX_VIEWERS is exact: three guests with tickets open at one instant on A and B, two get in',
    { timeout: 120_000 },
    async () => {
      const alice = await newUser(a);
      const { sessionId, websocketUrl } = await connectNewDesktop(a, alice, {
        host: sshd.host,
        port: sshd.port,
        user: sshd.users[0]!,
      });
      const owner = await RfbTestClient.open(`ws://${a.base}${websocketUrl}`);
      await owner.handshake();
      const created = await a.app.inject({
        method: 'POST',
        url: `/api/sessions/${sessionId}/shares`,
        headers: alice.auth,
        payload: { mode: 'view' },
      });
      const token = (created.json().data as { url: string }).url.split('#')[1]!;
      // All three tickets pass the approximate check (one viewer, the owner, of three places).
      const tickets: string[] = [];
      for (const name of ['G1', 'G2', 'G3']) {
        const exchanged = await b.app.inject({
          method: 'POST',
          url: `/api/shares/${token}/ticket`,
          payload: { displayName: name },
        });
        assert.equal(exchanged.statusCode, 200, exchanged.body);
        tickets.push(exchanged.json().data.websocketUrl as string);
      }
      const clients = await Promise.all(
        tickets.map((url, i) => RfbTestClient.open(`ws://${(i % 2 === 0 ? a : b).base}${url}`)),
      );
      const outcomes = await Promise.all(
        clients.map((c) =>
          c.handshake().then(
            () => 'in',
            async () => `closed ${await c.closed}`,
          ),
        ),
      );
      assert.deepEqual([...outcomes].sort(), ['closed 4003', 'in', 'in']);
      const counted = await a.app.inject({
        method: 'GET',
        url: `/api/sessions/${sessionId}/shares`,
        headers: alice.auth,
      });
      assert.equal((counted.json().data as { guests: unknown[] }[])[0]!.guests.length, 2);
      // Full now: a fourth guest is refused at the ticket (429).
      const full = await b.app.inject({
        method: 'POST',
        url: `/api/shares/${token}/ticket`,
        payload: { displayName: 'G4' },
      });
      assert.equal(full.json().error.code, 'SESSION_VIEWERS_FULL');

      await a.app.inject({
        method: 'POST',
        url: `/api/sessions/disconnect/${sessionId}`,
        headers: alice.auth,
      });
      assert.equal(await owner.closed, 4000);
      for (const [i, c] of clients.entries()) if (outcomes[i] === 'in') assert.equal(await c.closed, 4000);
    },
  );
});
