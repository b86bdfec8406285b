// Through a real relay to a real desktop (OpenSSH sshd, TigerVNC Xvnc + openbox) with raw RFB clients
// over the WebSocket: what a session records as usage (bytes each way, viewer-seconds) equals what the
// client saw and reaches the session API, GET /api/usage and the per-viewer rate histogram; the RFB
// parser closes a viewer that sends garbage without touching another viewer of the same desktop; and
// the size ceiling holds against TigerVNC's own resize.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/lib/clock.js';
import { listenTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('usage and viewer policy end to end (sshd + TigerVNC)', () => {
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

  async function connectNew(): Promise<{
    user: Awaited<ReturnType<typeof newUser>>;
    sessionId: string;
    websocketUrl: string;
    instanceId: string;
  }> {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, { host: sshd.host, port: sshd.port, user: sshd.users[0]! });
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/sessions/connect',
      headers: user.auth,
      payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
    });
    assert.equal(res.statusCode, 201, res.body);
    const { sessionId, websocketUrl } = res.json<{ data: { sessionId: string; websocketUrl: string } }>()
      .data;
    return { user, instanceId: instance.id, sessionId, websocketUrl };
  }

  const ticket = async (user: { auth: { authorization: string } }, sessionId: string) =>
    (
      await gw.app.inject({ method: 'POST', url: `/api/sessions/${sessionId}/ticket`, headers: user.auth })
    ).json().data.websocketUrl as string;
  const open = (url: string) => RfbTestClient.open(`ws://${gw.base}${url}`, { origin: `http://${gw.base}` });

  test('a viewer that sends an unknown RFB message is closed with 1002; another viewer of the desktop carries on', async () => {
    const { user, sessionId, websocketUrl } = await connectNew();
    const good = await open(websocketUrl);
    await good.handshake();
    const bad = await open(await ticket(user, sessionId));
    await bad.handshake();
    bad.send([7, 0, 0, 0]); // no such client message
    assert.equal(await bad.closed, 1002);
    good.requestUpdate(false);
    const update = await good.readFramebufferUpdate();
    assert.ok(update.bytes > 0, 'the other viewer still gets updates');
    good.close();
    await good.closed;
    await gw.app.inject({ method: 'POST', url: `/api/sessions/disconnect/${sessionId}`, headers: user.auth });
  });

  test('a SetDesktopSize above DESKTOP_MAX_GEOMETRY leaves TigerVNC at the ceiling', async () => {
    const { user, sessionId, websocketUrl } = await connectNew();
    const viewer = await open(websocketUrl);
    await viewer.handshake();
    viewer.send([2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xcc]); // SetEncodings: Raw, ExtendedDesktopSize (−308)
    // ExtendedDesktopSize support is announced with an update carrying the current layout; then resize.
    const resize = Buffer.alloc(24);
    resize[0] = 251;
    resize.writeUInt16BE(3840, 2);
    resize.writeUInt16BE(2160, 4);
    resize[6] = 1;
    resize.writeUInt16BE(3840, 8 + 8);
    resize.writeUInt16BE(2160, 8 + 10);
    viewer.requestUpdate(false);
    viewer.send(resize);
    // Read updates until the answer to our request (reason 1: this client asked) arrives.
    for (;;) {
      const type = (await viewer.read(1))[0]!;
      assert.equal(type, 0, `server message ${type}`);
      const rects = (await viewer.read(3)).readUInt16BE(1);
      let answer: { status: number; width: number; height: number } | null = null;
      for (let i = 0; i < rects; i++) {
        const r = await viewer.read(12);
        const [x, y, w, h, encoding] = [
          r.readUInt16BE(0),
          r.readUInt16BE(2),
          r.readUInt16BE(4),
          r.readUInt16BE(6),
          r.readInt32BE(8),
        ];
        if (encoding === -308) {
          const screens = (await viewer.read(4))[0]!;
          await viewer.read(16 * screens);
          if (x === 1) answer = { status: y, width: w, height: h };
        } else if (encoding === 0) {
          await viewer.read(w * h * 4);
        } else if (encoding === -223) {
          // DesktopSize: no data
        } else assert.fail(`unexpected encoding ${encoding}`);
      }
      if (answer) {
        assert.deepEqual(answer, { status: 0, width: 1920, height: 1080 });
        break;
      }
    }
    viewer.close();
    await viewer.closed;
    await gw.app.inject({ method: 'POST', url: `/api/sessions/disconnect/${sessionId}`, headers: user.auth });
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
