// Usage end to end through a real relay: OpenSSH sshd, TigerVNC Xvnc + openbox, a raw RFB client over
// the WebSocket. What the session records (bytes each way, viewer-seconds) equals what the client saw,
// and it reaches the session API, GET /api/usage and the per-viewer rate histogram.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/lib/clock.js';
import { listenTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('usage end to end (sshd + TigerVNC)', () => {
  let sshd: SshdFixture;
  let gw: TestGateway & { base: string };
  const clock = new ManualClock(Date.UTC(2026, 2, 10, 9));
  const viewerClosed: (() => void)[] = [];

  before(async () => {
    sshd = await startSshd({ users: 1 });
    gw = await listenTestGateway(
      { METRICS_TOKEN: 'metrics-token-for-tests' },
      { clock, gatewayHooks: { onViewerClosed: () => viewerClosed.shift()?.() } },
    );
  });
  after(async () => {
    await gw?.cleanup();
    await sshd?.stop();
  });

  test('the session counts exactly the bytes a raw RFB client saw, and the seconds it watched', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, { host: sshd.host, port: sshd.port, user: sshd.users[0]! });
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/sessions/connect',
      headers: user.auth,
      payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
    });
    assert.equal(res.statusCode, 201, res.body);
    const { sessionId, websocketUrl } = res.json().data;

    const viewer = await RfbTestClient.open(`ws://${gw.base}${websocketUrl}`, {
      origin: `http://${gw.base}`,
    });
    await viewer.handshake();
    viewer.requestUpdate(false);
    const update = await viewer.readFramebufferUpdate();
    assert.ok(update.bytes > 1280 * 800, 'a full frame came through');
    // Input with no update request outstanding: the desktop has nothing to send back.
    for (const down of [true, false]) viewer.keyEvent(0xffe1, down); // Shift
    clock.advance(90_000);

    const detached = new Promise<void>((resolve) => viewerClosed.push(resolve));
    viewer.close();
    await viewer.closed;
    await detached;
    await gw.activity.flush();

    const session = (
      await gw.app.inject({ method: 'GET', url: `/api/sessions/${sessionId}`, headers: user.auth })
    ).json().data;
    assert.equal(session.bytesToViewer, viewer.bytesReceived);
    assert.equal(session.bytesFromViewer, viewer.bytesSent);
    assert.equal(session.viewerSeconds, 90);

    const usage = (
      await gw.app.inject({
        method: 'GET',
        url: '/api/usage?from=2026-03-10&to=2026-03-10',
        headers: user.auth,
      })
    ).json().data;
    assert.deepEqual(usage.total, {
      bytesToViewer: viewer.bytesReceived,
      bytesFromViewer: viewer.bytesSent,
      viewerSeconds: 90,
    });
    assert.equal(usage.instances[0].instanceId, instance.id);

    const metrics = await gw.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: 'Bearer metrics-token-for-tests' },
    });
    const count = /^clouddesk_viewer_bandwidth_kbps_count\{[^}]*\} (\d+)$/m.exec(metrics.body);
    assert.ok(count && Number(count[1]) >= 1, 'the viewer’s rate was observed');
    assert.ok(
      !/clouddesk_viewer_bandwidth_kbps_bucket\{[^}]*session/.test(metrics.body),
      'no per-session label',
    );

    await gw.app.inject({ method: 'POST', url: `/api/sessions/disconnect/${sessionId}`, headers: user.auth });
  });
});
