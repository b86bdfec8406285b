// The load generator's WebSocket client: RFC 6455 over a plain TCP socket, as light as a browser's, so
// that one process standing for hundreds of browsers spends on each stream no more than one browser
// would. `ws` waits for a whole frame and copies it out of the socket's reads into a new buffer
// whenever it spans two of them (most frames at 5 Mbit/s: the gateway sends up to 16 KiB a frame, the
// socket reads up to 64 KiB), and each copy is an ArrayBuffer of its own for the garbage collector; in
// the load generator that was twice the collector's time of the plain-TCP floor for the same bytes
// (docs/benchmarks.md, section 14). Here a message's payload is handed on as views of the reads
// themselves, at the same moment `ws` would hand it on (the frame that ends the message has arrived,
// as a browser's `onmessage` sees it). Client side only: it masks what it sends, refuses masked frames
// from the server, and speaks `ws://` to loopback gateways, which is all the benchmark needs.
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { request, type ClientRequest } from 'node:http';
import type { Socket } from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** A message larger than this is refused (close 1009): the gateway's frames are at most 64 KiB. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** After our close frame, how long the server gets to answer before the socket is dropped. */
const CLOSE_WAIT_MS = 30_000;

export interface LeanWebSocketHandlers {
  onOpen(): void;
  /** One piece of a message's payload; a message's pieces come in order, once the whole message is in. */
  onData(piece: Buffer): void;
  /** The server answered the upgrade with something other than 101. */
  onUnexpectedResponse(statusCode: number): void;
  /** The connection failed before it opened: a socket error's code, or HANDSHAKE_TIMEOUT / BAD_HANDSHAKE. */
  onOpenFailed(code: string): void;
  /** The connection ended after it opened: the close code the server sent, 1005 for none, 1006 for no close. */
  onClose(code: number): void;
}

export interface LeanWebSocketOptions {
  protocol: string;
  origin?: string;
  handshakeTimeoutMs: number;
}

/** Mask keys come from a random pool, refilled when used up (one `randomFillSync` per 1,024 frames). */
const maskPool = Buffer.alloc(4096);
let maskOffset = maskPool.length;
function nextMask(into: Buffer, at: number): void {
  if (maskOffset === maskPool.length) {
    randomFillSync(maskPool);
    maskOffset = 0;
  }
  maskPool.copy(into, at, maskOffset, maskOffset + 4);
  maskOffset += 4;
}

/** A masked frame (FIN set) with `opcode` and `payload`, in one buffer: one write. */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const lengthBytes = n < 126 ? 0 : n < 65_536 ? 2 : 8;
  const head = 2 + lengthBytes;
  const frame = Buffer.allocUnsafe(head + 4 + n);
  frame[0] = 0x80 | opcode;
  if (lengthBytes === 0) frame[1] = 0x80 | n;
  else if (lengthBytes === 2) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    frame.writeUInt32BE(n >>> 0, 6);
  }
  nextMask(frame, head);
  for (let i = 0; i < n; i++) frame[head + 4 + i] = payload[i]! ^ frame[head + (i & 3)]!;
  return frame;
}

type ReadState = 'head' | 'length' | 'payload';

export class LeanWebSocket {
  private readonly req: ClientRequest;
  private socket: Socket | null = null;
  private opened = false;
  private ended = false;
  private closeSent = false;
  private closeReceived: number | null = null;
  private closeTimer: NodeJS.Timeout | undefined;
  private paused = false;

  // Frame parsing: the header is gathered into `head` (at most 10 bytes from a server), the payload
  // is taken as views of the reads.
  private state: ReadState = 'head';
  private readonly head = Buffer.alloc(10);
  private headFilled = 0;
  private headWant = 2;
  private fin = false;
  private opcode = 0;
  private payloadLeft = 0;
  /** The message being received: its opcode (binary, or a control frame's) and its pieces so far. */
  private messageOpcode = 0;
  private messageBytes = 0;
  private pieces: Buffer[] = [];
  private control: Buffer[] = [];

  constructor(
    url: string,
    private readonly options: LeanWebSocketOptions,
    private readonly handlers: LeanWebSocketHandlers,
  ) {
    const u = new URL(url);
    if (u.protocol !== 'ws:') throw new Error(`only ws:// URLs (got ${u.protocol})`);
    const key = randomBytes(16).toString('base64');
    const req = (this.req = request({
      host: u.hostname,
      port: u.port === '' ? 80 : Number(u.port),
      path: `${u.pathname}${u.search}`,
      agent: false,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': key,
        'Sec-WebSocket-Protocol': options.protocol,
        ...(options.origin === undefined ? {} : { Origin: options.origin }),
      },
    }));
    const timer = setTimeout(() => {
      req.destroy();
      this.failOpen('HANDSHAKE_TIMEOUT');
    }, options.handshakeTimeoutMs);
    req.on('response', (res) => {
      clearTimeout(timer);
      res.resume();
      if (this.ended) return;
      this.ended = true;
      handlers.onUnexpectedResponse(res.statusCode ?? 0);
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      this.failOpen(e.code ?? 'ERROR');
    });
    req.on('upgrade', (res, socket, rest) => {
      clearTimeout(timer);
      const accept = createHash('sha1')
        .update(key + GUID)
        .digest('base64');
      const protocol = res.headers['sec-websocket-protocol'];
      if (this.ended || res.headers['sec-websocket-accept'] !== accept || protocol !== options.protocol) {
        socket.destroy();
        this.failOpen('BAD_HANDSHAKE');
        return;
      }
      this.socket = socket;
      this.opened = true;
      socket.setNoDelay(true);
      socket.setTimeout(0);
      socket.on('data', (chunk: Buffer) => this.read(chunk));
      socket.on('error', () => socket.destroy());
      socket.on('close', () => this.onSocketClosed());
      handlers.onOpen();
      if (rest.length > 0) this.read(rest);
      if (this.paused) socket.pause();
    });
    req.end();
  }

  send(payload: Buffer): void {
    if (this.socket === null || this.closeSent || this.socket.destroyed) return;
    this.socket.write(clientFrame(0x2, payload));
  }

  pause(): void {
    this.paused = true;
    this.socket?.pause();
  }

  resume(): void {
    this.paused = false;
    this.socket?.resume();
  }

  /** Sends a close frame and waits (bounded) for the server's; before it opened, just gives up. */
  close(code = 1000): void {
    if (this.socket === null) {
      this.req.destroy();
      this.failOpen('CLOSED');
      return;
    }
    this.sendClose(code);
  }

  private sendClose(code: number): void {
    const socket = this.socket!;
    if (this.closeSent || socket.destroyed) return;
    this.closeSent = true;
    const body = Buffer.alloc(2);
    body.writeUInt16BE(code, 0);
    socket.write(clientFrame(0x8, body));
    if (this.closeReceived !== null) socket.end();
    else {
      this.closeTimer = setTimeout(() => socket.destroy(), CLOSE_WAIT_MS);
      this.closeTimer.unref();
    }
  }

  private failOpen(code: string): void {
    if (this.ended || this.opened) return;
    this.ended = true;
    this.handlers.onOpenFailed(code);
  }

  private onSocketClosed(): void {
    clearTimeout(this.closeTimer);
    if (this.ended) return;
    this.ended = true;
    this.handlers.onClose(this.closeReceived ?? 1006);
  }

  /** A frame the server may not send: close 1002 (1009 for too large) and drop the connection. */
  private fail(code: number): void {
    this.sendClose(code);
    this.closeReceived ??= code;
    this.socket!.destroy();
  }

  private read(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && !this.socket!.destroyed) {
      if (this.state === 'payload') {
        const n = Math.min(this.payloadLeft, chunk.length - off);
        const piece = chunk.subarray(off, off + n);
        if (this.opcode === 0x2 || this.opcode === 0x0) this.pieces.push(piece);
        else this.control.push(piece);
        this.payloadLeft -= n;
        off += n;
        if (this.payloadLeft === 0) this.frameDone();
        continue;
      }
      const n = Math.min(this.headWant - this.headFilled, chunk.length - off);
      chunk.copy(this.head, this.headFilled, off, off + n);
      this.headFilled += n;
      off += n;
      if (this.headFilled === this.headWant) this.headerPart();
    }
  }

  private headerPart(): void {
    const h = this.head;
    if (this.state === 'head') {
      if ((h[0]! & 0x70) !== 0 || (h[1]! & 0x80) !== 0) return this.fail(1002); // RSV bits, or masked
      this.fin = (h[0]! & 0x80) !== 0;
      this.opcode = h[0]! & 0x0f;
      const control = this.opcode >= 0x8;
      const known =
        this.opcode === 0x2 ||
        (this.opcode === 0x0 && this.messageOpcode === 0x2) ||
        this.opcode === 0x8 ||
        this.opcode === 0x9 ||
        this.opcode === 0xa;
      if (!known || (this.opcode === 0x2 && this.messageOpcode === 0x2)) return this.fail(1002);
      if (control && (!this.fin || (h[1]! & 0x7f) > 125)) return this.fail(1002);
      if (this.opcode === 0x2) this.messageOpcode = 0x2;
      const len = h[1]! & 0x7f;
      if (len < 126) return this.startPayload(len);
      this.state = 'length';
      this.headFilled = 0;
      this.headWant = len === 126 ? 2 : 8;
      return;
    }
    const len = this.headWant === 2 ? h.readUInt16BE(0) : h.readUInt32BE(0) * 2 ** 32 + h.readUInt32BE(4);
    this.startPayload(len);
  }

  private startPayload(len: number): void {
    this.headFilled = 0;
    this.headWant = 2;
    if (this.opcode < 0x8) {
      this.messageBytes += len;
      if (this.messageBytes > MAX_MESSAGE_BYTES) return this.fail(1009);
    }
    this.payloadLeft = len;
    this.state = 'payload';
    if (len === 0) this.frameDone();
  }

  private frameDone(): void {
    this.state = 'head';
    if (this.opcode >= 0x8) return this.controlFrame();
    if (!this.fin) return;
    const pieces = this.pieces;
    this.pieces = [];
    this.messageOpcode = 0;
    this.messageBytes = 0;
    for (const piece of pieces) this.handlers.onData(piece);
  }

  private controlFrame(): void {
    const body = this.control.length === 1 ? this.control[0]! : Buffer.concat(this.control);
    this.control = [];
    const socket = this.socket!;
    if (this.opcode === 0x9) {
      if (!this.closeSent) socket.write(clientFrame(0xa, body));
    } else if (this.opcode === 0x8) {
      this.closeReceived = body.length >= 2 ? body.readUInt16BE(0) : 1005;
      if (this.closeSent) socket.end();
      else this.sendClose(this.closeReceived === 1005 ? 1000 : this.closeReceived);
    }
  }
}
