// The desktop simulator: a small RFB 3.8 server standing in for Xvnc in the benchmark (and nowhere
// else). Each connection gets the handshake (security type None), a ServerInit, then — once the viewer
// asks for its first update — Raw FramebufferUpdates at the profile's rate and burstiness, an echo for
// every input marker, and an exact byte count for a barrier marker (see rfb-protocol.ts).
//
// One timer drives every connection, so a thousand sessions cost a thousand list entries, not a
// thousand timers. A connection whose socket is not draining (a stalled viewer, a relay applying
// backpressure) has its updates dropped past WRITE_BACKLOG_BYTES, as a real VNC server coalesces damage
// instead of queueing it: the simulator itself never grows without bound.
import { createServer, type Server, type Socket } from 'node:net';
import { chmod, chown, unlink } from 'node:fs/promises';
import {
  BARRIER_TAG,
  BYTES_PER_PIXEL,
  ClientMessage,
  MARKER_TAG,
  RFB_VERSION,
  SECURITY_NONE,
  SEQ_MASK,
  bulkShape,
  rawRectHeader,
  serverInit,
  splitCount,
} from './rfb-protocol.js';
import { nextUpdateBytes, seededRandom, type TrafficProfile } from './traffic-profile.js';

const TICK_MS = 10;
const WRITE_BACKLOG_BYTES = 512 * 1024;
/** An update later than this many intervals is dropped rather than sent in a catch-up burst. */
const MAX_CATCH_UP = 3;
const MAX_CLIENT_BUFFER = 64 * 1024;

export interface SimulatorStats {
  connections: number;
  open: number;
  bytesSent: number;
  bytesReceived: number;
  updatesSent: number;
  /** Updates not sent because the connection's socket was not draining (backpressure, stalled viewer). */
  updatesDropped: number;
  /** Update slots skipped because the simulator's own event loop ran late (it was starved of CPU). */
  updatesLate: number;
  echoes: number;
  protocolErrors: number;
}

type Phase = 'version' | 'security' | 'client-init' | 'normal' | 'closed';

class Connection {
  phase: Phase = 'version';
  inbox: Buffer = Buffer.alloc(0);
  streaming = false;
  /** Set by a barrier: the stream stays stopped even if the viewer asks for more. */
  stopped = false;
  nextDue = 0;
  sent = 0;
  /** Bytes of complete client messages handled so far (exact at any message boundary). */
  consumed = 0;
  readonly rand: () => number;

  constructor(
    readonly socket: Socket,
    seed: number,
  ) {
    this.rand = seededRandom(seed);
  }
}

export interface DesktopSimulatorOptions {
  profile: TrafficProfile;
  width?: number;
  height?: number;
  /** Seed of the update-size sequence; connection n uses seed + n. */
  seed?: number;
}

export class DesktopSimulator {
  private readonly conns = new Set<Connection>();
  private readonly servers = new Set<Server>();
  private readonly pixels: Buffer;
  private readonly width: number;
  private readonly height: number;
  private readonly init: Buffer;
  private readonly timer: NodeJS.Timeout;
  private connectionCount = 0;
  private readonly totals: SimulatorStats = {
    connections: 0,
    open: 0,
    bytesSent: 0,
    bytesReceived: 0,
    updatesSent: 0,
    updatesDropped: 0,
    updatesLate: 0,
    echoes: 0,
    protocolErrors: 0,
  };

  constructor(private readonly opts: DesktopSimulatorOptions) {
    this.width = opts.width ?? 1280;
    this.height = opts.height ?? 800;
    this.init = serverInit(this.width, this.height, 'clouddesk-bench simulated desktop');
    // One shared pattern every update is sliced from: updates cost a header, not an allocation.
    this.pixels = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < this.pixels.length; i++) this.pixels[i] = (i * 2654435761) >>> 24;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  stats(): SimulatorStats {
    return { ...this.totals, open: this.conns.size };
  }

  /** Serves RFB on one accepted socket. */
  serve(socket: Socket): void {
    const c = new Connection(socket, (this.opts.seed ?? 1) + this.connectionCount++);
    this.totals.connections++;
    this.conns.add(c);
    socket.setNoDelay(true);
    socket.on('error', () => this.drop(c));
    socket.on('close', () => this.drop(c));
    socket.on('data', (chunk: Buffer) => this.onData(c, chunk));
    this.write(c, RFB_VERSION);
  }

  /** A TCP listener on loopback (port 0 = any free port); resolves with the port. */
  async listenTcp(port = 0): Promise<number> {
    const server = this.server();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => resolve());
    });
    const a = server.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  /** A Unix-socket listener at `path`, handed to `uid:gid` with `mode` (as Xvnc -rfbunixmode does). */
  async listenUnix(
    path: string,
    owner: { uid: number; gid: number } | null,
    mode: number,
  ): Promise<() => void> {
    const server = this.server();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path, backlog: 512 }, () => resolve());
    });
    if (owner !== null) await chown(path, owner.uid, owner.gid);
    await chmod(path, mode);
    return () => {
      server.close();
      this.servers.delete(server);
      unlink(path).catch(() => undefined);
    };
  }

  close(): void {
    clearInterval(this.timer);
    for (const s of this.servers) s.close();
    for (const c of this.conns) c.socket.destroy();
    this.conns.clear();
  }

  private server(): Server {
    const server = createServer((socket) => this.serve(socket));
    this.servers.add(server);
    return server;
  }

  private drop(c: Connection): void {
    if (c.phase === 'closed') return;
    c.phase = 'closed';
    this.conns.delete(c);
    c.socket.destroy();
  }

  private write(c: Connection, b: Buffer): void {
    c.sent += b.length;
    this.totals.bytesSent += b.length;
    c.socket.write(b);
  }

  private fail(c: Connection): void {
    this.totals.protocolErrors++;
    this.drop(c);
  }

  private onData(c: Connection, chunk: Buffer): void {
    this.totals.bytesReceived += chunk.length;
    c.inbox = c.inbox.length === 0 ? chunk : Buffer.concat([c.inbox, chunk]);
    if (c.inbox.length > MAX_CLIENT_BUFFER) return this.fail(c);
    for (;;) {
      const used = this.consume(c);
      if (used === 0 || c.phase === 'closed') break;
      c.consumed += used;
      c.inbox = c.inbox.subarray(used);
    }
  }

  /** Handles one complete message at the head of the inbox; returns the bytes used (0: need more). */
  private consume(c: Connection): number {
    const b = c.inbox;
    switch (c.phase) {
      case 'version':
        if (b.length < 12) return 0;
        if (!b.subarray(0, 4).equals(Buffer.from('RFB '))) {
          this.fail(c);
          return 0;
        }
        c.phase = 'security';
        this.write(c, Buffer.from([1, SECURITY_NONE]));
        return 12;
      case 'security':
        if (b.length < 1) return 0;
        if (b[0] !== SECURITY_NONE) {
          this.fail(c);
          return 0;
        }
        c.phase = 'client-init';
        this.write(c, Buffer.alloc(4)); // SecurityResult OK
        return 1;
      case 'client-init':
        if (b.length < 1) return 0;
        c.phase = 'normal';
        this.write(c, this.init);
        return 1;
      case 'normal':
        return this.clientMessage(c, b);
      case 'closed':
        return 0;
    }
  }

  private clientMessage(c: Connection, b: Buffer): number {
    const type = b[0];
    if (type === undefined) return 0;
    switch (type) {
      case ClientMessage.SetPixelFormat:
        return b.length >= 20 ? 20 : 0;
      case ClientMessage.SetEncodings: {
        if (b.length < 4) return 0;
        const len = 4 + 4 * b.readUInt16BE(2);
        return b.length >= len ? len : 0;
      }
      case ClientMessage.FramebufferUpdateRequest:
        if (b.length < 10) return 0;
        if (!c.streaming && !c.stopped) {
          c.streaming = true;
          this.sendUpdate(c);
          c.nextDue = Date.now() + c.rand() * this.opts.profile.intervalMs;
        }
        return 10;
      case ClientMessage.KeyEvent: {
        if (b.length < 8) return 0;
        const keysym = b.readUInt32BE(4);
        const tag = (keysym & 0xff000000) >>> 0;
        if (tag === MARKER_TAG) this.echo(c, keysym & SEQ_MASK);
        else if (tag === BARRIER_TAG) this.barrier(c, keysym & SEQ_MASK);
        return 8;
      }
      case ClientMessage.PointerEvent:
        return b.length >= 6 ? 6 : 0;
      case ClientMessage.ClientCutText: {
        if (b.length < 8) return 0;
        const len = 8 + b.readUInt32BE(4);
        if (len > MAX_CLIENT_BUFFER) {
          this.fail(c);
          return 0;
        }
        return b.length >= len ? len : 0;
      }
      default:
        this.fail(c);
        return 0;
    }
  }

  private echo(c: Connection, seq: number): void {
    const px = Buffer.alloc(4);
    px.writeUInt32LE(seq, 0);
    this.totals.echoes++;
    this.write(c, Buffer.concat([rawRectHeader(0, 0, 1, 1), px]));
  }

  private barrier(c: Connection, seq: number): void {
    c.streaming = false;
    c.stopped = true;
    const reply = Buffer.alloc(16 + 5 * BYTES_PER_PIXEL);
    rawRectHeader(0, 0, 1, 5).copy(reply, 0);
    // The count includes this reply, so the viewer compares it with everything it read.
    const [sentLo, sentHi] = splitCount(c.sent + reply.length);
    // Everything read up to and including this 8-byte KeyEvent, not what followed it in the same chunk.
    const [recvLo, recvHi] = splitCount(c.consumed + 8);
    reply.writeUInt32LE(seq, 16);
    reply.writeUInt32LE(sentLo, 20);
    reply.writeUInt32LE(sentHi, 24);
    reply.writeUInt32LE(recvLo, 28);
    reply.writeUInt32LE(recvHi, 32);
    this.write(c, reply);
  }

  private sendUpdate(c: Connection): void {
    if (c.socket.writableLength > WRITE_BACKLOG_BYTES) {
      this.totals.updatesDropped++;
      return;
    }
    const bytes = nextUpdateBytes(this.opts.profile, c.rand);
    const { w, h } = bulkShape(Math.min(bytes, this.pixels.length));
    const n = w * h * BYTES_PER_PIXEL;
    const x = Math.floor(c.rand() * Math.max(1, this.width - w));
    const y = Math.floor(c.rand() * Math.max(1, this.height - h));
    const offset = Math.floor(c.rand() * (this.pixels.length - n));
    c.socket.cork();
    this.write(c, rawRectHeader(x, Math.min(y, 0xffff), w, h));
    this.write(c, this.pixels.subarray(offset, offset + n));
    c.socket.uncork();
    this.totals.updatesSent++;
  }

  private tick(): void {
    const now = Date.now();
    const interval = this.opts.profile.intervalMs;
    for (const c of this.conns) {
      if (!c.streaming || now < c.nextDue) continue;
      let sent = 0;
      while (now >= c.nextDue && sent < MAX_CATCH_UP) {
        this.sendUpdate(c);
        c.nextDue += interval;
        sent++;
      }
      if (now >= c.nextDue) {
        // Too far behind (the process was starved): skip ahead rather than burst.
        const skipped = Math.floor((now - c.nextDue) / interval) + 1;
        this.totals.updatesLate += skipped;
        c.nextDue += skipped * interval;
      }
    }
  }
}
