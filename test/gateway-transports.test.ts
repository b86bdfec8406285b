// The TCP fallback through the whole gateway (Xvnc on localhost with a per-session VNC password
// that the gateway answers itself: the viewer sees security None), and instances that are not what
// they claim (a hostile SSH server, nothing listening): clear errors, no hang, nothing lost.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import {
  buildTestGateway,
  listenTestGateway,
  newInstance,
  newUser,
  type TestGateway,
} from './helpers/builders.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { freePort } from './helpers/free-port.js';
import { RfbTestClient } from './helpers/rfb-client.js';

describe('TCP transport: the gateway answers the VNC password', () => {
  let sshd: SshdFixture;
  let gw: TestGateway;
  let base: string;

  before(async () => {
    sshd = await startSshd();
    const listening = await listenTestGateway({ DESKTOP_TRANSPORT: 'tcp' });
    gw = listening;
    base = listening.base;
  });
  after(async () => {
    await gw?.cleanup();
    await sshd?.stop();
  });

  test('the viewer is offered security None, gets ServerInit and pixels; the password stays sealed', async () => {
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
    const row = await gw.store.db
      .selectFrom('sessions')
      .selectAll()
      .where('id', '=', sessionId)
      .executeTakeFirstOrThrow();
    assert.equal(row.transport, 'tcp');
    assert.ok(row.vnc_port! >= 5901 && row.vnc_port! <= 5910);
    assert.ok(row.vnc_password_ciphertext && row.vnc_password_key_id);

    const viewer = await RfbTestClient.open(`ws://${base}${websocketUrl}`, { origin: `http://${base}` });
    const init = await viewer.handshake(); // fails unless None is offered
    assert.equal(init.width, 1280);
    viewer.requestUpdate(false);
    assert.ok((await viewer.readFramebufferUpdate()).bytes > 0);
    const end = await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/disconnect/${sessionId}`,
      headers: user.auth,
    });
    assert.equal(end.statusCode, 200);
    assert.equal(await viewer.closed, 4000);
  });
});

describe('instances that do not behave', () => {
  let gw: TestGateway;
  let hostile: Server;
  const sockets: Socket[] = [];

  before(async () => {
    gw = await buildTestGateway({ SSH_READY_TIMEOUT_MS: '1500' });
    hostile = createServer((s) => {
      sockets.push(s);
      s.on('error', () => undefined);
      s.write('HTTP/1.1 400 Bad Request\r\n\r\n'); // not SSH at all
    });
    hostile.listen(0, '127.0.0.1');
    await once(hostile, 'listening');
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => hostile.close(() => r()));
    await gw?.cleanup();
  });

  test('a server that does not speak SSH gets a clear 5xx, not a hang, and the instance is kept', async () => {
    const user = await newUser(gw);
    const port = (hostile.address() as AddressInfo).port;
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/instances',
      headers: user.auth,
      payload: {
        name: 'liar',
        host: '127.0.0.1',
        port,
        username: 'u',
        auth: { type: 'password', password: 'pw' },
      },
    });
    const id = res.json().data.id as string;
    const probe = await gw.app.inject({
      method: 'POST',
      url: `/api/instances/${id}/test`,
      headers: user.auth,
    });
    assert.ok(probe.statusCode >= 500 && probe.statusCode < 600, probe.body);
    assert.match(probe.json().error.code, /^SSH_(PROTOCOL_ERROR|TIMEOUT)$/);
    const connect = await gw.app.inject({
      method: 'POST',
      url: '/api/sessions/connect',
      headers: user.auth,
      payload: { instanceId: id, desktopEnvironment: 'openbox' },
    });
    assert.match(connect.json().error.code, /^SSH_(PROTOCOL_ERROR|TIMEOUT)$/);
    const active = await gw.app.inject({ method: 'GET', url: '/api/sessions/active', headers: user.auth });
    assert.deepEqual(active.json().data, [], 'a failed start leaves no live session behind');
    const kept = await gw.app.inject({ method: 'GET', url: `/api/instances/${id}`, headers: user.auth });
    assert.equal(kept.statusCode, 200);
  });

  test('nothing listening is SSH_UNREACHABLE', async () => {
    const user = await newUser(gw);
    const port = await freePort();
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/instances',
      headers: user.auth,
      payload: {
        name: 'gone',
        host: '127.0.0.1',
        port,
        username: 'u',
        auth: { type: 'password', password: 'pw' },
      },
    });
    const probe = await gw.app.inject({
      method: 'POST',
      url: `/api/instances/${res.json().data.id}/test`,
      headers: user.auth,
    });
    assert.equal(probe.statusCode, 502);
    assert.equal(probe.json().error.code, 'SSH_UNREACHABLE');
  });

  test('instance addresses: loopback is refused unless allowed by config', async () => {
    const strict = await buildTestGateway({ INSTANCE_ALLOWED_CIDRS: '' });
    try {
      const user = await newUser(strict);
      for (const host of ['127.0.0.1', '169.254.169.254', '0.0.0.0', '::1']) {
        const res = await strict.app.inject({
          method: 'POST',
          url: '/api/instances',
          headers: user.auth,
          payload: { name: 'x', host, username: 'u', auth: { type: 'password', password: 'pw' } },
        });
        assert.equal(res.statusCode, 422, host);
        assert.equal(res.json().error.code, 'INSTANCE_ADDRESS_FORBIDDEN');
      }
    } finally {
      await strict.cleanup();
    }
  });
});

describe('heartbeat', () => {
  let sshd: SshdFixture;
  let gw: TestGateway;
  let base: string;

  before(async () => {
    sshd = await startSshd();
    const listening = await listenTestGateway({ WS_PING_INTERVAL_MS: '200', WS_MISSED_PONGS: '2' });
    gw = listening;
    base = listening.base;
  });
  after(async () => {
    await gw?.cleanup();
    await sshd?.stop();
  });

  test('a viewer that answers pings stays; one that misses two pongs is dropped', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, { host: sshd.host, port: sshd.port, user: sshd.users[0]! });
    const connect = () =>
      gw.app.inject({
        method: 'POST',
        url: '/api/sessions/connect',
        headers: user.auth,
        payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
      });
    const first = await connect();
    const alive = await RfbTestClient.open(`ws://${base}${first.json().data.websocketUrl}`, {
      origin: `http://${base}`,
    });
    const second = await connect();
    const silent = await RfbTestClient.open(`ws://${base}${second.json().data.websocketUrl}`, {
      origin: `http://${base}`,
      autoPong: false,
    });
    // The silent one is cut off (no close frame: the peer looks dead) ...
    assert.equal(await silent.closed, 1006);
    // ... while the answering one has seen more pings than the silent one was allowed to miss.
    let pings = 0;
    await new Promise<void>((resolve) => alive.ws.on('ping', () => ++pings === 4 && resolve()));
    assert.equal(alive.closeCode, null);
    alive.close();
    await alive.closed;
    await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/disconnect/${first.json().data.sessionId}`,
      headers: user.auth,
    });
  });
});
