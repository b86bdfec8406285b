// One simulated viewer: the client half of the benchmark's RFB conventions (see sim/rfb-protocol.ts)
// over any byte transport (a TCP socket for the floor, a WebSocket for websockify and CloudDesk). It
// does the RFB 3.8 handshake, asks for updates the way noVNC does (an incremental request after each
// update), parses the stream without copying pixel data, sends input markers and times their echoes,
// and runs the final byte-exact barrier.
import {
  BARRIER_TAG,
  BYTES_PER_PIXEL,
  MARKER_TAG,
  RAW_ENCODING,
  RFB_VERSION,
  SECURITY_NONE,
  SEQ_MASK,
  framebufferUpdateRequest,
  keyEvent,
  setEncodings,
} from '../sim/rfb-protocol.js';

export interface ViewerTransport {
  send(b: Buffer): void;
  /** Stop reading (a stalled browser tab); bytes pile up upstream. */
  pause(): void;
  resume(): void;
  close(): void;
}

export interface BarrierResult {
  /** What the simulator says it wrote to / read from this connection. */
  serverSent: number;
  serverReceived: number;
  /** What this viewer read / wrote. */
  clientReceived: number;
  clientSent: number;
}

export interface ViewerEvents {
  onFirstUpdate(): void;
  onEcho(rttMs: number): void;
  /** Every echo's sequence number as it arrives, known or not (the soak checks they come in order). */
  onEchoSeq?(seq: number): void;
  onBarrier(r: BarrierResult): void;
  onProtocolError(reason: string): void;
}

type State =
  | 'version'
  | 'sec-count'
  | 'sec-types'
  | 'sec-result'
  | 'server-init'
  | 'server-name'
  | 'msg'
  | 'rect'
  | 'rect-pixels'
  | 'failed';

const MAX_OUTSTANDING_MARKERS = 64;

export class BenchViewer {
  bytesIn = 0;
  bytesOut = 0;
  updates = 0;
  width = 0;
  height = 0;
  private state: State = 'version';
  private want = 12;
  private readonly head = Buffer.alloc(4096);
  private filled = 0;
  private skip = 0;
  private rectsLeft = 0;
  private rectW = 0;
  private rectH = 0;
  private sawBulk = false;
  private firstUpdateSeen = false;
  private seq = 0;
  private readonly outstanding = new Map<number, number>();
  lostMarkers = 0;
  private sentAtBarrier = 0;
  private barrierSent = false;
  /** Bytes of the current chunk not yet parsed: bytesIn minus this is the exact read position. */
  private unparsed = 0;
  private transport: ViewerTransport | null = null;

  constructor(private readonly events: ViewerEvents) {}

  attach(transport: ViewerTransport): void {
    this.transport = transport;
  }

  get handshakeDone(): boolean {
    return this.firstUpdateSeen;
  }

  /** Sends an input marker; its echo is timed. */
  sendMarker(): void {
    if (!this.firstUpdateSeen || this.barrierSent) return;
    if (this.outstanding.size >= MAX_OUTSTANDING_MARKERS) {
      // Echoes are not coming back (a stalled path): forget the oldest instead of growing.
      const oldest = this.outstanding.keys().next().value as number;
      this.outstanding.delete(oldest);
      this.lostMarkers++;
    }
    this.seq = (this.seq + 1) & SEQ_MASK;
    this.outstanding.set(this.seq, performance.now());
    this.send(keyEvent(MARKER_TAG | this.seq));
  }

  /** Asks the simulator to stop the stream and report its byte counts. */
  sendBarrier(): void {
    this.seq = (this.seq + 1) & SEQ_MASK;
    this.send(keyEvent(BARRIER_TAG | this.seq));
    this.sentAtBarrier = this.bytesOut;
    this.barrierSent = true;
  }

  /** Markers sent whose echo has not come back (lost when the viewer closes). */
  pendingMarkers(): number {
    return this.outstanding.size;
  }

  private send(b: Buffer): void {
    this.bytesOut += b.length;
    this.transport?.send(b);
  }

  private fail(reason: string): void {
    this.state = 'failed';
    this.events.onProtocolError(reason);
  }

  onData(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    let off = 0;
    while (off < chunk.length && this.state !== 'failed') {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        off += n;
        if (this.skip === 0) this.rectDone();
        continue;
      }
      const n = Math.min(this.want - this.filled, chunk.length - off);
      chunk.copy(this.head, this.filled, off, off + n);
      this.filled += n;
      off += n;
      if (this.filled === this.want) {
        this.filled = 0;
        this.unparsed = chunk.length - off;
        this.handle(this.head.subarray(0, this.want));
      }
    }
  }

  private expect(state: State, bytes: number): void {
    this.state = state;
    this.want = bytes;
  }

  private handle(b: Buffer): void {
    switch (this.state) {
      case 'version':
        if (!b.subarray(0, 4).equals(RFB_VERSION.subarray(0, 4))) return this.fail('not an RFB server');
        this.send(RFB_VERSION);
        return this.expect('sec-count', 1);
      case 'sec-count':
        if (b[0] === 0) return this.fail('server refused the connection');
        return this.expect('sec-types', b[0]!);
      case 'sec-types':
        if (!b.includes(SECURITY_NONE)) return this.fail('no security type None');
        this.send(Buffer.from([SECURITY_NONE]));
        return this.expect('sec-result', 4);
      case 'sec-result':
        if (b.readUInt32BE(0) !== 0) return this.fail('security handshake failed');
        this.send(Buffer.from([1])); // ClientInit, shared
        return this.expect('server-init', 24);
      case 'server-init': {
        this.width = b.readUInt16BE(0);
        this.height = b.readUInt16BE(2);
        const nameLength = b.readUInt32BE(20);
        if (nameLength > this.head.length) return this.fail('desktop name too long');
        if (nameLength === 0) return this.startUpdates();
        return this.expect('server-name', nameLength);
      }
      case 'server-name':
        return this.startUpdates();
      case 'msg':
        if (b[0] !== 0) return this.fail(`unexpected server message type ${b[0]}`);
        this.rectsLeft = b.readUInt16BE(2);
        this.sawBulk = false;
        if (this.rectsLeft === 0) return this.updateDone();
        return this.expect('rect', 12);
      case 'rect': {
        this.rectW = b.readUInt16BE(4);
        this.rectH = b.readUInt16BE(6);
        if (b.readInt32BE(8) !== RAW_ENCODING) return this.fail('unexpected encoding');
        const bytes = this.rectW * this.rectH * BYTES_PER_PIXEL;
        if (this.rectW === 1 && (this.rectH === 1 || this.rectH === 5))
          return this.expect('rect-pixels', bytes);
        this.sawBulk = true;
        this.skip = bytes;
        if (bytes === 0) this.rectDone();
        return;
      }
      case 'rect-pixels':
        this.marker(b);
        return this.rectDone();
      case 'failed':
        return;
    }
  }

  private marker(b: Buffer): void {
    const seq = b.readUInt32LE(0);
    if (this.rectH === 1) {
      this.events.onEchoSeq?.(seq);
      const sentAt = this.outstanding.get(seq);
      if (sentAt !== undefined) {
        this.outstanding.delete(seq);
        this.events.onEcho(performance.now() - sentAt);
      }
      return;
    }
    this.events.onBarrier({
      serverSent: b.readUInt32LE(4) + b.readUInt32LE(8) * 0x1_0000_0000,
      serverReceived: b.readUInt32LE(12) + b.readUInt32LE(16) * 0x1_0000_0000,
      clientReceived: this.bytesIn - this.unparsed,
      clientSent: this.sentAtBarrier,
    });
  }

  private rectDone(): void {
    this.rectsLeft--;
    if (this.rectsLeft > 0) return this.expect('rect', 12);
    this.updateDone();
  }

  private updateDone(): void {
    this.expect('msg', 4);
    if (!this.sawBulk) return;
    this.updates++;
    if (!this.firstUpdateSeen) {
      this.firstUpdateSeen = true;
      this.events.onFirstUpdate();
    }
    // noVNC asks for the next update as soon as one is drawn.
    this.send(framebufferUpdateRequest(true, this.width, this.height));
  }

  private startUpdates(): void {
    this.send(setEncodings([RAW_ENCODING]));
    this.send(framebufferUpdateRequest(false, this.width, this.height));
    this.expect('msg', 4);
  }
}
