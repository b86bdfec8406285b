// GATEWAY_ROLE (issue 9: the relay never waits behind the control plane): an api process and a relay
// process on one PostgreSQL database and one Redis, before a real sshd + TigerVNC — what a balancer that
// sends `/vnc` to relays and everything else to api processes puts in front of a browser. The desktop is
// started through the api process and streamed through the relay; each refuses the other's routes with
// a coded answer.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectNewDesktop, newUser } from './helpers/builders.js';
import { type SshdFixture } from './helpers/sshd.js';
import { startTwoGateways, type ListeningGateway, type TwoGateways } from './helpers/two-gateways.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('an api process and a relay process (GATEWAY_ROLE; PostgreSQL + Redis, sshd + TigerVNC)', () => {
  let sshd: SshdFixture;
  let cluster: TwoGateways | undefined;
  let api: ListeningGateway;
  let relay: ListeningGateway;

  before(async () => {
    cluster = await startTwoGateways('roles', {}, [{ GATEWAY_ROLE: 'api' }, { GATEWAY_ROLE: 'relay' }]);
    ({ sshd, a: api, b: relay } = cluster);
  });
  after(async () => {
    await cluster?.stop();
  });

  /** A desktop connected through the api process: its owner, session id and viewer URL. */
  const connected = async () => {
    const alice = await newUser(api);
    const target = { host: sshd.host, port: sshd.port, user: sshd.users[0]! };
    return { alice, ...(await connectNewDesktop(api, alice, target)) };
  };

  test(
    'connected on the api process, viewed through the relay: the desktop streams, and a disconnect on the api process closes the viewer',
    { timeout: 120_000 },
    async () => {
      const { alice, sessionId, websocketUrl } = await connected();
      const viewer = await RfbTestClient.open(`ws://${relay.base}${websocketUrl}`);
      await viewer.handshake();
      viewer.requestUpdate(false);
      assert.ok((await viewer.readFramebufferUpdate()).bytes > 0, 'a framebuffer update through the relay');
      assert.equal(relay.vnc.viewerCount, 1);
      assert.equal(api.vnc.viewerCount, 0);

      const end = await api.app.inject({
        method: 'POST',
        url: `/api/sessions/disconnect/${sessionId}`,
        headers: alice.auth,
      });
      assert.equal(end.statusCode, 200, end.body);
      assert.equal(await viewer.closed, 4000, 'the relay closed its viewer: session ended');
    },
  );

  test(
    'the api process refuses a viewer WebSocket, and its ticket stays good for the relay',
    { timeout: 120_000 },
    async () => {
      const { websocketUrl } = await connected();
      await assert.rejects(
        RfbTestClient.open(`ws://${api.base}${websocketUrl}`),
        (e: { status?: number; body?: string }) => {
          assert.equal(e.status, 404);
          assert.equal(
            (JSON.parse(e.body ?? '{}') as { error: { code: string } }).error.code,
            'ROUTE_NOT_FOUND',
          );
          return true;
        },
      );
      // Refused before the ticket was looked at: the viewer the balancer should have sent to a relay can
      // still use it there.
      const viewer = await RfbTestClient.open(`ws://${relay.base}${websocketUrl}`);
      await viewer.handshake();
      viewer.close();
      await viewer.closed;
    },
  );

  test('the relay serves no API route and no web client, only its health checks; each says its role', async () => {
    for (const [method, url] of [
      ['POST', '/api/auth/login'],
      ['GET', '/api/instances'],
      ['POST', '/api/sessions/connect'],
      ['GET', '/'],
    ] as const) {
      const res = await relay.app.inject({ method, url, payload: method === 'POST' ? {} : undefined });
      assert.equal(res.statusCode, 404, `${method} ${url}`);
      assert.equal(res.json<{ error: { code: string } }>().error.code, 'ROUTE_NOT_FOUND');
    }
    for (const [gw, role] of [
      [relay, 'relay'],
      [api, 'api'],
    ] as const) {
      const health = await gw.app.inject({ method: 'GET', url: '/api/health' });
      assert.equal(health.statusCode, 200);
      assert.equal(health.json<{ role: string }>().role, role);
      assert.equal((await gw.app.inject({ method: 'GET', url: '/api/ready' })).statusCode, 200);
      // The loop metric says whose loop it is.
      assert.match(
        await gw.metrics.render(),
        new RegExp(`clouddesk_event_loop_delay_seconds\\{role="${role}"`),
      );
    }
  });
});
