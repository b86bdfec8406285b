// The relay on its own: a real WebSocket (ws server + client on loopback) piped into a real TCP
// socket standing in for the SSH channel (both are Node Duplex streams; the SSH path is covered end
// to end in gateway-e2e.test.ts).
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { WebSocketServer, WebSocket } from 'ws';
import { Relay, type RelayOptions, type RelayViewer } from '../src/relay/relay.js';
import { CloseCode } from '../src/relay/close-codes.js';
import { permissivePolicy } from '../src/rfb/viewer-policy.js';
import * as rfb from './helpers/rfb-messages.js';

interface Rig {
  relay: Relay;
  /** The gateway's side of the WebSocket. */
  serverWs: WebSocket;
  client: WebSocket;
  /** The "desktop" end of the channel. */
  desktop: Socket;
  /** The relay's end of the channel. */
  channel: Socket;
  ended: Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const defaults: RelayOptions = {
  highWaterBytes: 64 * 1024,
  stallTimeoutMs: 300,
  preOpenBufferBytes: 16 * 1024,
  maxCutTextBytes: 64 * 1024,
};

async function rig(
  options: Partial<RelayOptions> = {},
  attachNow = true,
  viewer?: RelayViewer,
): Promise<Rig & { attach(): void; bufferedAtEnd(): number }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await once(wss, 'listening');
  const tcp: Server = createServer();
  tcp.listen(0, '127.0.0.1');
  await once(tcp, 'listening');
  cleanups.push(
    () => new Promise<void>((r) => tcp.close(() => r())),
    () => new Promise<void>((r) => wss.close(() => r())),
  );

  const serverWs = once(wss, 'connection');
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`, {
    perMessageDeflate: false,
  });
  cleanups.push(() => client.terminate());
  await once(client, 'open');
  const [ws] = (await serverWs) as [WebSocket];
  cleanups.push(() => ws.terminate());

  const desktopP = once(tcp, 'connection');
  const channel = connect((tcp.address() as { port: number }).port, '127.0.0.1');
  await once(channel, 'connect');
  const [desktop] = (await desktopP) as [Socket];
  cleanups.push(() => {
    desktop.destroy();
    channel.destroy();
  });

  let endResolve!: () => void;
  const ended = new Promise<void>((r) => (endResolve = r));
  let buffered = -1;
  const relay = new Relay(
    ws,
    { ...defaults, ...options },
    () => {
      buffered = ws.bufferedAmount;
      endResolve();
    },
    viewer,
  );
  const attach = () => relay.attach(channel);
  if (attachNow) attach();
  return { relay, serverWs: ws, client, desktop, channel, ended, attach, bufferedAtEnd: () => buffered };
}

function sha(buffers: Buffer[]): string {
  const h = createHash('sha256');
  for (const b of buffers) h.update(b);
  return h.digest('hex');
}

describe('relay', () => {
  test('moves bytes both ways unchanged, and counts them', async () => {
    const r = await rig();
    const down = randomBytes(3 * 1024 * 1024);
    // The viewer's side is RFB (the relay parses it): a handshake, then 200 clipboard messages of 4 KiB.
    const up = [
      ...rfb.typicalStream([]),
      ...Array.from({ length: 200 }, () => rfb.clientCutText(randomBytes(4088).toString('latin1'))),
    ];

    const received: Buffer[] = [];
    let receivedBytes = 0;
    const gotAll = new Promise<void>((resolve) =>
      r.client.on('message', (d: Buffer) => {
        received.push(d);
        receivedBytes += d.length;
        if (receivedBytes === down.length) resolve();
      }),
    );
    const desktopGot: Buffer[] = [];
    let desktopBytes = 0;
    const upTotal = up.reduce((n, b) => n + b.length, 0);
    const desktopDone = new Promise<void>((resolve) =>
      r.desktop.on('data', (d: Buffer) => {
        desktopGot.push(d);
        desktopBytes += d.length;
        if (desktopBytes === upTotal) resolve();
      }),
    );
    r.desktop.write(down);
    for (const b of up) r.client.send(b);
    await Promise.all([gotAll, desktopDone]);
    assert.equal(sha(received), sha([down]));
    assert.equal(sha(desktopGot), sha(up));
    assert.equal(r.relay.bytesToViewer, down.length);
    assert.equal(r.relay.bytesFromViewer, upTotal);
  });

  test('what the viewer sends before the channel opens is delivered first, in order', async () => {
    const r = await rig({}, false);
    const early = [Buffer.from('RFB 003.008\n'), Buffer.from([1])];
    // The relay listens first, so once our own listener saw both frames the relay has them too.
    const taken = new Promise<void>((resolve) => {
      let n = 0;
      r.serverWs.on('message', () => ++n === early.length && resolve());
    });
    for (const b of early) r.client.send(b);
    await taken;
    assert.equal(r.relay.bytesFromViewer, 13);
    r.attach();
    const got: Buffer[] = [];
    let n = 0;
    await new Promise<void>((resolve) =>
      r.desktop.on('data', (d: Buffer) => {
        got.push(d);
        n += d.length;
        if (n === 13) resolve();
      }),
    );
    assert.equal(Buffer.concat(got).toString('latin1'), 'RFB 003.008\n\x01');
  });

  test('a viewer that stops reading pauses the channel, buffers stay bounded, and it is closed as STALLED', async () => {
    const highWaterBytes = 64 * 1024;
    const r = await rig({ highWaterBytes, stallTimeoutMs: 400 });
    r.client.pause(); // the browser stops reading
    const chunk = randomBytes(16 * 1024);
    let written = 0;
    r.desktop.on('error', () => undefined);
    // The desktop keeps producing (respecting TCP backpressure) until the relay gives up on the viewer.
    const pump = async () => {
      while (!r.relay.closed && written < 512 * 1024 * 1024) {
        written += chunk.length;
        if (!r.desktop.write(chunk)) await Promise.race([once(r.desktop, 'drain'), r.ended]);
      }
    };
    void pump();
    await r.ended;
    assert.ok(written < 512 * 1024 * 1024, 'the relay stopped reading the channel');
    // Bounded: what the gateway held for this viewer was the high-water mark plus one read.
    assert.ok(r.bufferedAtEnd() <= highWaterBytes + 64 * 1024 + 16, `buffered ${r.bufferedAtEnd()}`);
    assert.equal(r.channel.destroyed, true);
    const code = new Promise<number>((resolve) => r.client.once('close', (c: number) => resolve(c)));
    r.client.resume();
    assert.equal(await code, CloseCode.STALLED);
  });

  test('text frames and floods before the channel opens are refused with a protocol error', async () => {
    const a = await rig();
    const codeA = new Promise<number>((resolve) => a.client.once('close', (c: number) => resolve(c)));
    a.client.send('hello');
    assert.equal(await codeA, CloseCode.PROTOCOL_ERROR);

    const b = await rig({ preOpenBufferBytes: 4096 }, false);
    const codeB = new Promise<number>((resolve) => b.client.once('close', (c: number) => resolve(c)));
    b.client.send(randomBytes(8192));
    assert.equal(await codeB, CloseCode.PROTOCOL_ERROR);
  });

  test('the desktop closing its end closes the viewer with DESKTOP_UNREACHABLE', async () => {
    const r = await rig();
    const code = new Promise<number>((resolve) => r.client.once('close', (c: number) => resolve(c)));
    r.desktop.end();
    assert.equal(await code, CloseCode.DESKTOP_UNREACHABLE);
  });

  /** Everything the desktop end receives until the relay closes the channel. */
  function desktopReceived(r: Rig): Promise<Buffer> {
    const got: Buffer[] = [];
    r.desktop.on('data', (d: Buffer) => got.push(d));
    return new Promise((resolve) => r.desktop.once('close', () => resolve(Buffer.concat(got))));
  }

  test('an unknown RFB message closes the viewer with PROTOCOL_ERROR; nothing of it reaches the desktop', async () => {
    const r = await rig();
    const received = desktopReceived(r);
    const code = new Promise<number>((resolve) => r.client.once('close', (c: number) => resolve(c)));
    const valid = Buffer.concat([...rfb.typicalStream([]), rfb.framebufferUpdateRequest(false)]);
    r.client.send(valid);
    r.client.send(Buffer.concat([rfb.keyEvent(0x61, true), Buffer.from([7, 0, 0, 0])]));
    assert.equal(await code, CloseCode.PROTOCOL_ERROR);
    assert.deepEqual(await received, valid, 'the valid messages before it, and not one byte after');
  });

  test('a view-only viewer: its input, clipboard and resize never reach the desktop, the rest does', async () => {
    const r = await rig({}, true, {
      policy: { ...permissivePolicy, viewOnly: true },
      streamStart: 'version',
    });
    const got: Buffer[] = [];
    let n = 0;
    const kept = [
      ...rfb.typicalStream([]),
      rfb.setEncodings([7, 0]),
      rfb.framebufferUpdateRequest(false),
      rfb.framebufferUpdateRequest(true),
    ];
    const want = kept.reduce((t, b) => t + b.length, 0);
    const arrived = new Promise<void>((resolve) =>
      r.desktop.on('data', (d: Buffer) => {
        got.push(d);
        if ((n += d.length) >= want) resolve();
      }),
    );
    // Input in its own frames and mixed into frames with messages that pass.
    r.client.send(Buffer.concat(rfb.typicalStream([])));
    r.client.send(
      Buffer.concat([rfb.keyEvent(0x61, true), rfb.setEncodings([7, 0]), rfb.pointerEvent(5, 5, 1)]),
    );
    r.client.send(rfb.clientCutText('secret'));
    r.client.send(Buffer.concat([rfb.setDesktopSize(800, 600), rfb.framebufferUpdateRequest(false)]));
    r.client.send(
      Buffer.concat([rfb.qemuKeyEvent(0x61, true, 30), rfb.xvp(2), rfb.framebufferUpdateRequest(true)]),
    );
    await arrived;
    assert.deepEqual(Buffer.concat(got), Buffer.concat(kept));
    assert.equal(r.relay.droppedMessages, 6);
    assert.equal(r.relay.closed, false);
  });

  test('a budget pauses the channel once its burst is spent, and resumes when paid for', async () => {
    let frozenAt: number | null = 0; // the budget's clock stands still until the test lets it run
    const r = await rig({ now: () => frozenAt ?? performance.now() + 1e9 }, true, {
      policy: { ...permissivePolicy, maxKbps: 1000 }, // 125 KB/s, burst 64 KiB
      streamStart: 'version',
    });
    const down = randomBytes(256 * 1024);
    let received = 0;
    const chunks: Buffer[] = [];
    let onBytes = (): void => undefined;
    r.client.on('message', (d: Buffer) => {
      chunks.push(d);
      received += d.length;
      onBytes();
    });
    const reached = (n: number) =>
      new Promise<void>((resolve) => {
        onBytes = () => received >= n && resolve();
        onBytes();
      });
    r.desktop.write(down);
    await reached(64 * 1024);
    // The chunk that overdrew the burst was sent; the channel was paused in the same turn.
    assert.equal(r.relay.budgetPauses, 1);
    assert.equal(r.channel.isPaused(), true);
    assert.ok(received < 64 * 1024 + 128 * 1024, `received ${received} with no time passing`);
    frozenAt = null;
    await reached(down.length);
    assert.equal(sha(chunks), sha([down]));
  });

  test('budget pauses longer than the stall deadline do not close a viewer that reads', async () => {
    const r = await rig({ stallTimeoutMs: 100, highWaterBytes: 4 * 1024 * 1024 }, true, {
      policy: { ...permissivePolicy, maxKbps: 2000 }, // 250 KB/s: holds of ~100-260 ms per 32-64 KiB chunk
      streamStart: 'version',
    });
    const down = randomBytes(512 * 1024);
    const chunks: Buffer[] = [];
    let received = 0;
    const all = new Promise<void>((resolve) =>
      r.client.on('message', (d: Buffer) => {
        chunks.push(d);
        if ((received += d.length) === down.length) resolve();
      }),
    );
    r.desktop.write(down);
    await all;
    assert.equal(sha(chunks), sha([down]));
    assert.ok(r.relay.budgetPauses >= 2, `paused ${r.relay.budgetPauses} times`);
    assert.equal(r.relay.closed, false, 'not closed as STALLED');
  });

  test('with a budget, a viewer that stops reading is still closed as STALLED', async () => {
    const r = await rig({ stallTimeoutMs: 300 }, true, {
      policy: { ...permissivePolicy, maxKbps: 100_000 },
      streamStart: 'version',
    });
    r.client.pause();
    r.desktop.on('error', () => undefined);
    const chunk = randomBytes(64 * 1024);
    const pump = async () => {
      while (!r.relay.closed) {
        if (!r.desktop.write(chunk)) await Promise.race([once(r.desktop, 'drain'), r.ended]);
      }
    };
    void pump();
    await r.ended;
    const code = new Promise<number>((resolve) => r.client.once('close', (c: number) => resolve(c)));
    r.client.resume();
    assert.equal(await code, CloseCode.STALLED);
  });
});
