// A minimal RFB 3.8 viewer over a WebSocket, for tests: handshake with security None, ClientInit,
// ServerInit, then framebuffer update requests and key events. It reads the protocol properly
// (message by message) so a test can assert on real framebuffer updates from Xvnc.
import WebSocket from 'ws';

export interface ServerInit {
  width: number;
  height: number;
  name: string;
}

class ByteQueue {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failed: Error | null = null;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
    this.settle();
  }

  fail(e: Error): void {
    this.failed = e;
    if (this.waiter) {
      this.waiter.reject(e);
      this.waiter = null;
    }
  }

  read(n: number): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.settle();
    });
  }

  private settle(): void {
    if (!this.waiter || this.length < this.waiter.n) return;
    const all = Buffer.concat(this.chunks);
    const out = all.subarray(0, this.waiter.n);
    const rest = all.subarray(this.waiter.n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.length = rest.length;
    const w = this.waiter;
    this.waiter = null;
    w.resolve(out);
  }
}

export class RfbTestClient {
  readonly ws: WebSocket;
  private readonly queue = new ByteQueue();
  closeCode: number | null = null;
  readonly closed: Promise<number>;
  serverInit: ServerInit | null = null;
  /** Every byte this viewer received and sent over its WebSocket. */
  bytesReceived = 0;
  bytesSent = 0;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (d: Buffer) => {
      this.bytesReceived += d.length;
      this.queue.push(d);
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code) => {
        this.closeCode = code;
        this.queue.fail(new Error(`websocket closed (${code})`));
        resolve(code);
      });
    });
    ws.on('error', (e) => this.queue.fail(e));
  }

  /** Opens the WebSocket (rejects with the HTTP status on a refused upgrade). */
  static open(
    url: string,
    options: { origin?: string; headers?: Record<string, string>; autoPong?: boolean } = {},
  ): Promise<RfbTestClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, ['binary'], {
        headers: { ...(options.origin ? { origin: options.origin } : {}), ...options.headers },
        perMessageDeflate: false,
        autoPong: options.autoPong ?? true,
      });
      ws.once('open', () => resolve(new RfbTestClient(ws)));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () =>
          reject(
            Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), {
              status: res.statusCode,
              body,
            }),
          ),
        );
      });
      ws.once('error', reject);
    });
  }

  read(n: number): Promise<Buffer> {
    return this.queue.read(n);
  }

  send(bytes: Buffer | number[]): void {
    const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
    this.bytesSent += b.length;
    this.ws.send(b);
  }

  /** Version, security None, ClientInit (shared), ServerInit. */
  async handshake(): Promise<ServerInit> {
    const version = (await this.read(12)).toString('latin1');
    if (!/^RFB 003\.00[38]\n$/.test(version))
      throw new Error(`unexpected version ${JSON.stringify(version)}`);
    this.send(Buffer.from('RFB 003.008\n', 'latin1'));
    const count = (await this.read(1))[0]!;
    if (count === 0) {
      const len = (await this.read(4)).readUInt32BE();
      throw new Error(`server refused: ${(await this.read(len)).toString()}`);
    }
    const types = [...(await this.read(count))];
    if (!types.includes(1)) throw new Error(`no None security offered: ${types.join(',')}`);
    this.send([1]);
    const result = (await this.read(4)).readUInt32BE();
    if (result !== 0) throw new Error(`security result ${result}`);
    this.send([1]); // ClientInit: shared
    const init = await this.read(24);
    const nameLength = init.readUInt32BE(20);
    const name = (await this.read(nameLength)).toString('utf8');
    this.serverInit = { width: init.readUInt16BE(0), height: init.readUInt16BE(2), name };
    // Ask for raw pixels, 32 bpp true colour (the server's default pixel format from ServerInit).
    this.send([2, 0, 0, 1, 0, 0, 0, 0]); // SetEncodings: [Raw]
    return this.serverInit;
  }

  requestUpdate(incremental: boolean): void {
    const { width, height } = this.serverInit!;
    const msg = Buffer.alloc(10);
    msg[0] = 3;
    msg[1] = incremental ? 1 : 0;
    msg.writeUInt16BE(width, 6);
    msg.writeUInt16BE(height, 8);
    this.send(msg);
  }

  /**
   * Reads server messages until a FramebufferUpdate arrives; returns its rectangles' total pixel
   * bytes. Assumes Raw encoding at 32 bpp (what handshake() asked for).
   */
  async readFramebufferUpdate(): Promise<{ rects: number; bytes: number; pixels: Buffer[] }> {
    for (;;) {
      const type = (await this.read(1))[0]!;
      if (type === 0) {
        const hdr = await this.read(3);
        const rects = hdr.readUInt16BE(1);
        const pixels: Buffer[] = [];
        let bytes = 0;
        for (let i = 0; i < rects; i++) {
          const r = await this.read(12);
          const w = r.readUInt16BE(4);
          const h = r.readUInt16BE(6);
          const encoding = r.readInt32BE(8);
          if (encoding !== 0) throw new Error(`unexpected encoding ${encoding}`);
          const data = await this.read(w * h * 4);
          pixels.push(data);
          bytes += data.length;
        }
        return { rects, bytes, pixels };
      }
      if (type === 2) continue; // Bell
      if (type === 3) {
        const len = (await this.read(7)).readUInt32BE(3);
        await this.read(len); // ServerCutText
        continue;
      }
      if (type === 1) {
        const hdr = await this.read(5);
        await this.read(hdr.readUInt16BE(3) * 6); // SetColourMapEntries
        continue;
      }
      throw new Error(`unexpected server message type ${type}`);
    }
  }

  keyEvent(keysym: number, down: boolean): void {
    const msg = Buffer.alloc(8);
    msg[0] = 4;
    msg[1] = down ? 1 : 0;
    msg.writeUInt32BE(keysym, 4);
    this.send(msg);
  }

  close(): void {
    this.ws.close();
  }
}
