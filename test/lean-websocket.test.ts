// The load generator's own WebSocket client (bench/load/lean-websocket.ts) against `ws`'s server: what the
// benchmark relies on it for — every byte of every message, in order and only once the message is whole;
// input the server reads as sent; pings answered; both ways of closing with their codes; each way an
// upgrade can fail told apart; a frame a server may not send refused.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { LeanWebSocket, type LeanWebSocketHandlers } from '../bench/load/lean-websocket.js';

interface Seen {
  pieces: Buffer[];
  opened: boolean;
  closed: Promise<number>;
  failed: Promise<string>;
  unexpected: Promise<number>;
}

function client(url: string, protocol = 'binary'): { ws: LeanWebSocket; seen: Seen } {
  let closed!: (c: number) => void;
  let failed!: (c: string) => void;
  let unexpected!: (s: number) => void;
  const seen: Seen = {
    pieces: [],
    opened: false,
    closed: new Promise((r) => (closed = r)),
    failed: new Promise((r) => (failed = r)),
    unexpected: new Promise((r) => (unexpected = r)),
  };
  const handlers: LeanWebSocketHandlers = {
    onOpen: () => (seen.opened = true),
    onData: (piece) => seen.pieces.push(Buffer.from(piece)),
    onUnexpectedResponse: unexpected,
    onOpenFailed: failed,
    onClose: closed,
  };
  return {
    ws: new LeanWebSocket(url, { protocol, origin: 'http://bench', handshakeTimeoutMs: 5000 }, handlers),
    seen,
  };
}

async function wsServer(): Promise<{ wss: WebSocketServer; url: string; next(): Promise<WebSocket> }> {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    handleProtocols: (p) => (p.has('binary') ? 'binary' : false),
  });
  await once(wss, 'listening');
  after(() => wss.close());
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/vnc?t=1`;
  return {
    wss,
    url,
    next: async () => {
      const [socket] = (await once(wss, 'connection')) as [WebSocket];
      return socket;
    },
  };
}

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setImmediate(r));
}

void describe('the load generator’s WebSocket client', () => {
  void test('every message whole and in order, a fragmented one only once its last fragment is in', async () => {
    const s = await wsServer();
    const origin = once(s.wss, 'headers');
    const { ws, seen } = client(s.url);
    const server = await s.next();
    await origin;
    const small = Buffer.from([1, 2, 3]);
    const large = Buffer.alloc(1 << 20, 7); // many socket reads; 64-bit length
    const medium = Buffer.alloc(40_000, 9); // 16-bit length
    server.send(small);
    server.send(large);
    server.send(medium);
    await until(() => Buffer.concat(seen.pieces).length === small.length + large.length + medium.length);
    assert.deepEqual(Buffer.concat(seen.pieces), Buffer.concat([small, large, medium]));

    // A first fragment, then a ping: the ping's answer shows the client has read the fragment, and it
    // must not have handed any of it on yet.
    seen.pieces.length = 0;
    server.send(Buffer.from('first '), { fin: false });
    server.ping(Buffer.from('p'));
    await once(server, 'pong');
    assert.equal(seen.pieces.length, 0, 'nothing of an unfinished message');
    server.send(Buffer.from('last'), { fin: true });
    await until(() => seen.pieces.length > 0);
    assert.equal(Buffer.concat(seen.pieces).toString(), 'first last');
    ws.close(1000);
    assert.equal(await seen.closed, 1000);
  });

  void test('what it sends arrives as sent; a close from either side ends with its code', async () => {
    const s = await wsServer();
    const { ws, seen } = client(s.url);
    const server = await s.next();
    const got: Buffer[] = [];
    server.on('message', (m: Buffer) => got.push(m));
    await until(() => seen.opened);
    const sent = [Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(300, 5), Buffer.alloc(70_000, 6)];
    for (const b of sent) ws.send(b);
    await until(() => got.length === sent.length);
    assert.deepEqual(got, sent);
    const serverSaw = once(server, 'close');
    ws.close(1000);
    assert.equal(await seen.closed, 1000);
    assert.equal((await serverSaw)[0], 1000);

    const second = client(s.url);
    const other = await s.next();
    await until(() => second.seen.opened);
    other.close(4001, 'bye');
    assert.equal(await second.seen.closed, 4001);
  });

  void test('an upgrade refused, a wrong subprotocol, nobody listening: each told apart', async () => {
    const refuser: Server = createServer((_req, res) => res.writeHead(401).end('no'));
    refuser.listen(0, '127.0.0.1');
    await once(refuser, 'listening');
    after(() => refuser.close());
    const refused = client(`ws://127.0.0.1:${(refuser.address() as AddressInfo).port}/vnc`);
    assert.equal(await refused.seen.unexpected, 401);

    const s = await wsServer();
    const wrong = client(s.url, 'other');
    assert.equal(await wrong.seen.failed, 'BAD_HANDSHAKE');

    const port = (refuser.address() as AddressInfo).port;
    await new Promise((r) => refuser.close(r));
    const nobody = client(`ws://127.0.0.1:${port}/vnc`);
    assert.equal(await nobody.seen.failed, 'ECONNREFUSED');
  });

  void test('a masked frame from the server is refused with 1002 and the connection dropped', async () => {
    // A hand-made server: it answers the upgrade, then sends a frame with the mask bit set.
    const raw = createTcpServer((socket) => {
      socket.once('data', (req) => {
        const key = /sec-websocket-key: (.+)\r\n/i.exec(req.toString())![1]!;
        const accept = createHash('sha1')
          .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
          .digest('base64');
        socket.write(
          'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: binary\r\n\r\n`,
        );
        socket.write(Buffer.from([0x82, 0x81, 0, 0, 0, 0, 1]));
      });
      socket.on('error', () => undefined);
    });
    raw.listen(0, '127.0.0.1');
    await once(raw, 'listening');
    after(() => raw.close());
    const { seen } = client(`ws://127.0.0.1:${(raw.address() as AddressInfo).port}/vnc`);
    assert.equal(await seen.closed, 1002);
    assert.equal(seen.pieces.length, 0);
  });
});
