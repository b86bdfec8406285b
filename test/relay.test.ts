// The relay on its own: a real WebSocket (ws server + client on loopback) piped into a real TCP
// socket standing in for the SSH channel (both are Node Duplex streams; the SSH path is covered end
// to end in gateway-e2e.test.ts).
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { WebSocketServer, WebSocket } from 'ws';
import { Relay, type RelayOptions } from '../src/relay/relay.js';
import { CloseCode } from '../src/relay/close-codes.js';

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
};

async function rig(
  options: Partial<RelayOptions> = {},
  attachNow = true,
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
  const relay = new Relay(ws, { ...defaults, ...options }, () => {
    buffered = ws.bufferedAmount;
    endResolve();
  });
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
    const up = Array.from({ length: 200 }, () => randomBytes(4096));

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
});
