// The viewer→desktop half of RFB (RFC 6143 plus the extensions noVNC speaks), parsed incrementally so
// the relay can apply a viewer's policy (viewer-policy.ts) to whole messages: view-only drops input,
// clipboard and resize; SetEncodings' quality and compression levels are clamped in place; SetDesktopSize
// is clamped to the size ceiling. Anything it does not know, or a length past its bounds, is a protocol
// error: a parser that guessed would let a viewer smuggle bytes past the policy.
//
// Cost: the relay hands it every WebSocket message. Whole messages are forwarded as `subarray`s of that
// chunk (the whole chunk itself when nothing was dropped), so the common path copies nothing and
// allocates at most one view per chunk. Only a message split across chunks is held, in a buffer of
// exactly its length, until it is complete: what is forwarded is always a sequence of whole messages.
//
// Layouts (client → server), each with its length as the server reads it (TigerVNC's SMsgReader):
//   handshake   ProtocolVersion "RFB 003.00x\n" (12) · security type (1, RFB ≥ 3.7 only) · ClientInit (1)
//   0   SetPixelFormat            20
//   2   SetEncodings              4 + 4 × count
//   3   FramebufferUpdateRequest  10
//   4   KeyEvent                  8
//   5   PointerEvent              6
//   6   ClientCutText             8 + length; a negative length (the extended clipboard) means −length
//   150 EnableContinuousUpdates   10
//   248 Fence                     9 + payload length (≤ 64)
//   250 xvp                       4
//   251 SetDesktopSize            8 + 16 × screens
//   255 QEMU client message       subtype 0, the extended key event: 12
//
// noVNC's extended PointerEvent (7 bytes, with the ExtendedMouseButtons marker bit) is only sent once the
// server acknowledged that pseudo-encoding, which only the desktop→viewer stream shows. So the
// pseudo-encoding (−316) is never passed on (rewritten to Raw, which every server has anyway): the server
// never acknowledges it, noVNC never sends the 7-byte form, and the PointerEvent length stays certain.
// (TigerVNC 1.12 does not know it at all.)
import { QUALITY_LEVELS, type ViewerPolicy } from './viewer-policy.js';

export class RfbProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RfbProtocolError';
  }
}

export interface ViewerStreamOptions {
  /**
   * Where the stream starts: the viewer's first byte (the desktop answers the handshake), or ClientInit
   * (the gateway played the server's handshake itself, rfb-viewer-handshake.ts).
   */
  start: 'version' | 'client-init';
  /** Largest ClientCutText text (either form) accepted. */
  maxCutTextBytes: number;
}

/** Bounds past which a message is malformed (noVNC sends ~25 encodings, 1 screen, fences ≤ 64 bytes). */
export const RFB_LIMITS = Object.freeze({ maxEncodings: 512, maxScreens: 16, maxFencePayload: 64 });

export const MessageType = {
  SetPixelFormat: 0,
  SetEncodings: 2,
  FramebufferUpdateRequest: 3,
  KeyEvent: 4,
  PointerEvent: 5,
  ClientCutText: 6,
  EnableContinuousUpdates: 150,
  Fence: 248,
  Xvp: 250,
  SetDesktopSize: 251,
  Qemu: 255,
} as const;

export const Encoding = {
  Raw: 0,
  Tight: 7,
  QualityLevel0: -32,
  QualityLevel9: -23,
  CompressLevel0: -256,
  CompressLevel9: -247,
  /** TurboVNC's fine-grained JPEG quality 0–100, which TigerVNC honours over the quality level. */
  FineQualityLevel0: -512,
  FineQualityLevel100: -412,
  ExtendedMouseButtons: -316,
} as const;

/** The JPEG quality TigerVNC uses for each quality level (its Tight encoder's table). */
export const JPEG_QUALITY_OF_LEVEL: readonly number[] = [15, 29, 41, 42, 62, 77, 79, 86, 92, 100];

const SECURITY_NONE = 1;
const QEMU_EXTENDED_KEY_EVENT = 0;

type Stage = 'version' | 'security' | 'client-init' | 'messages';

const FORWARD = 0;
const DROP = 1;
const REPLACE = 2;
type Action = typeof FORWARD | typeof DROP | typeof REPLACE;

/** The most bytes `measure` needs before it knows a message's length (Fence: type, 3 padding, flags, length). */
const HEAD_BYTES = 9;

export class ViewerStreamParser {
  /** Messages the policy dropped (view-only). */
  dropped = 0;
  private stage: Stage;
  /**
   * The split message being collected: its first bytes in `head` until its length is known, then in
   * `partial`. `head` is made at the first split: an idle viewer never splits one, and a Buffer of its own
   * is ~200 bytes of heap per viewer (issue 9).
   */
  private head: Buffer | null = null;
  private partial: Buffer | null = null;
  private held = 0;
  /** A rewritten message to forward instead of the original (SetEncodings that needed entries added). */
  private replacement: Buffer | null = null;
  private readonly fineQualityMin: number;
  private readonly fineQualityMax: number;

  constructor(
    private readonly policy: ViewerPolicy,
    private readonly options: ViewerStreamOptions,
    private readonly forward: (bytes: Buffer) => void,
  ) {
    this.stage = options.start;
    this.fineQualityMin = JPEG_QUALITY_OF_LEVEL[policy.quality.min]!;
    this.fineQualityMax = JPEG_QUALITY_OF_LEVEL[policy.quality.max]!;
  }

  /** Bytes of a split message held until the rest arrives (bounded by the largest message allowed). */
  get bufferedBytes(): number {
    return this.held;
  }

  /**
   * Takes the next chunk of the viewer's stream and forwards the whole messages it completes (after the
   * policy). Throws RfbProtocolError on anything unknown or out of bounds; the stream is then unusable.
   */
  push(chunk: Buffer): void {
    let off = 0;
    if (this.held > 0) {
      off = this.collect(chunk, 0);
      if (this.held > 0) return;
    }
    const end = chunk.length;
    let runStart = off;
    while (off < end) {
      const total = this.measure(chunk, off, end - off);
      if (total < 0 || total > end - off) break;
      const action = this.process(chunk, off, total);
      if (action !== FORWARD) {
        if (off > runStart) this.forward(chunk.subarray(runStart, off));
        if (action === REPLACE) this.forwardReplacement();
        runStart = off + total;
      }
      off += total;
    }
    if (off > runStart) this.forward(runStart === 0 && off === end ? chunk : chunk.subarray(runStart, off));
    if (off < end) this.startSplit(chunk, off);
  }

  /**
   * The length of the unit starting at buf[off] (a handshake step or a message), or −(bytes needed to
   * tell) when fewer than that are available. Throws on what is unknown or out of bounds.
   */
  private measure(buf: Buffer, off: number, avail: number): number {
    switch (this.stage) {
      case 'version':
        return 12;
      case 'security':
      case 'client-init':
        return 1;
      case 'messages':
        break;
    }
    const type = buf[off]!;
    switch (type) {
      case MessageType.SetPixelFormat:
        return 20;
      case MessageType.SetEncodings: {
        if (avail < 4) return -4;
        const count = buf.readUInt16BE(off + 2);
        if (count > RFB_LIMITS.maxEncodings)
          throw new RfbProtocolError(
            `SetEncodings with ${count} encodings (at most ${RFB_LIMITS.maxEncodings})`,
          );
        return 4 + 4 * count;
      }
      case MessageType.FramebufferUpdateRequest:
      case MessageType.EnableContinuousUpdates:
        return 10;
      case MessageType.KeyEvent:
        return 8;
      case MessageType.PointerEvent:
        return 6;
      case MessageType.ClientCutText: {
        if (avail < 8) return -8;
        const length = buf.readInt32BE(off + 4);
        // A negative length is the extended clipboard's (flags, then data); the server reads −length.
        const size = length < 0 ? -length : length;
        if (length < 0 && size < 4) throw new RfbProtocolError('extended clipboard message without flags');
        if (size > this.options.maxCutTextBytes)
          throw new RfbProtocolError(
            `ClientCutText of ${size} bytes (at most ${this.options.maxCutTextBytes})`,
          );
        return 8 + size;
      }
      case MessageType.Fence: {
        if (avail < 9) return -9;
        const payload = buf[off + 8]!;
        if (payload > RFB_LIMITS.maxFencePayload)
          throw new RfbProtocolError(
            `Fence with a ${payload}-byte payload (at most ${RFB_LIMITS.maxFencePayload})`,
          );
        return 9 + payload;
      }
      case MessageType.Xvp:
        return 4;
      case MessageType.SetDesktopSize: {
        if (avail < 8) return -8;
        const screens = buf[off + 6]!;
        if (screens === 0 || screens > RFB_LIMITS.maxScreens)
          throw new RfbProtocolError(
            `SetDesktopSize with ${screens} screens (1 to ${RFB_LIMITS.maxScreens})`,
          );
        return 8 + 16 * screens;
      }
      case MessageType.Qemu: {
        if (avail < 2) return -2;
        const subtype = buf[off + 1]!;
        if (subtype !== QEMU_EXTENDED_KEY_EVENT)
          throw new RfbProtocolError(`unknown QEMU client message subtype ${subtype}`);
        return 12;
      }
      default:
        throw new RfbProtocolError(`unknown message type ${type}`);
    }
  }

  /** Applies the policy to one whole unit at buf[off, off + len); may rewrite it in place. */
  private process(buf: Buffer, off: number, len: number): Action {
    switch (this.stage) {
      case 'version': {
        const m = /^RFB 003\.(\d{3})\n$/.exec(buf.toString('latin1', off, off + 12));
        if (!m) throw new RfbProtocolError('no RFB protocol version');
        // RFB 3.3: the server names the security type, the viewer does not choose one.
        this.stage = Number(m[1]) < 7 ? 'client-init' : 'security';
        return FORWARD;
      }
      case 'security':
        // The gateway only ever offers None (a per-session 0600 socket, or it authenticated itself).
        if (buf[off] !== SECURITY_NONE)
          throw new RfbProtocolError(`security type ${buf[off]} was not offered`);
        this.stage = 'client-init';
        return FORWARD;
      case 'client-init':
        // A view-only viewer must not ask for exclusive access (which disconnects everyone else).
        if (this.policy.viewOnly) buf[off] = 1;
        this.stage = 'messages';
        return FORWARD;
      case 'messages':
        break;
    }
    switch (buf[off]!) {
      case MessageType.SetPixelFormat: {
        const bpp = buf[off + 4];
        if (bpp !== 8 && bpp !== 16 && bpp !== 32)
          throw new RfbProtocolError(`SetPixelFormat with ${bpp} bits per pixel`);
        return FORWARD;
      }
      case MessageType.SetEncodings:
        return this.clampEncodings(buf, off, len);
      case MessageType.KeyEvent:
      case MessageType.PointerEvent:
      case MessageType.ClientCutText:
      case MessageType.Xvp:
      case MessageType.Qemu:
        return this.policy.viewOnly ? this.drop() : FORWARD;
      case MessageType.SetDesktopSize:
        if (this.policy.viewOnly) return this.drop();
        this.clampDesktopSize(buf, off);
        return FORWARD;
      default:
        return FORWARD;
    }
  }

  private drop(): Action {
    this.dropped++;
    return DROP;
  }

  /**
   * Quality and compression levels into the policy's bounds, in place. A viewer that sends Tight without
   * a quality level gets lossless Tight from TigerVNC (no JPEG at all, its most expensive form) and one
   * without a compression level is treated as below level 2 (glyphs go as JPEG): so with a quality cap
   * below 9 the missing level is added as the cap, and with a compression floor the missing level as the
   * floor. Without Tight neither level means anything and nothing is added.
   */
  private clampEncodings(buf: Buffer, off: number, len: number): Action {
    const { quality, compressionMin } = this.policy;
    let tight = false;
    let sawQuality = false;
    let sawCompression = false;
    for (let p = off + 4; p < off + len; p += 4) {
      const e = buf.readInt32BE(p);
      if (e >= Encoding.QualityLevel0 && e <= Encoding.QualityLevel9) {
        sawQuality = true;
        const level = e - Encoding.QualityLevel0;
        const clamped = Math.min(quality.max, Math.max(quality.min, level));
        if (clamped !== level) buf.writeInt32BE(Encoding.QualityLevel0 + clamped, p);
      } else if (e >= Encoding.CompressLevel0 && e <= Encoding.CompressLevel9) {
        sawCompression = true;
        if (e - Encoding.CompressLevel0 < compressionMin)
          buf.writeInt32BE(Encoding.CompressLevel0 + compressionMin, p);
      } else if (e >= Encoding.FineQualityLevel0 && e <= Encoding.FineQualityLevel100) {
        sawQuality = true;
        const q = e - Encoding.FineQualityLevel0;
        const clamped = Math.min(this.fineQualityMax, Math.max(this.fineQualityMin, q));
        if (clamped !== q) buf.writeInt32BE(Encoding.FineQualityLevel0 + clamped, p);
      } else if (e === Encoding.Tight) {
        tight = true;
      } else if (e === Encoding.ExtendedMouseButtons) {
        buf.writeInt32BE(Encoding.Raw, p);
      }
    }
    if (!tight) return FORWARD;
    const addQuality = !sawQuality && quality.max < QUALITY_LEVELS - 1;
    const addCompression = !sawCompression && compressionMin > 0;
    if (!addQuality && !addCompression) return FORWARD;
    const extra = (addQuality ? 4 : 0) + (addCompression ? 4 : 0);
    const out = Buffer.allocUnsafe(len + extra);
    buf.copy(out, 0, off, off + len);
    out.writeUInt16BE((len - 4) / 4 + extra / 4, 2);
    let p = len;
    if (addQuality) {
      out.writeInt32BE(Encoding.QualityLevel0 + quality.max, p);
      p += 4;
    }
    if (addCompression) out.writeInt32BE(Encoding.CompressLevel0 + compressionMin, p);
    this.replacement = out;
    return REPLACE;
  }

  /** The requested size (and every screen in it) within the ceiling, in place. */
  private clampDesktopSize(buf: Buffer, off: number): void {
    const ceiling = this.policy.maxGeometry;
    if (!ceiling) return;
    const width = buf.readUInt16BE(off + 2);
    const height = buf.readUInt16BE(off + 4);
    if (width <= ceiling.width && height <= ceiling.height) return;
    const w = Math.min(width, ceiling.width);
    const h = Math.min(height, ceiling.height);
    buf.writeUInt16BE(w, off + 2);
    buf.writeUInt16BE(h, off + 4);
    const screens = buf[off + 6]!;
    for (let i = 0, p = off + 8; i < screens; i++, p += 16) {
      const x = Math.min(buf.readUInt16BE(p + 4), w - 1);
      const y = Math.min(buf.readUInt16BE(p + 6), h - 1);
      buf.writeUInt16BE(x, p + 4);
      buf.writeUInt16BE(y, p + 6);
      buf.writeUInt16BE(Math.min(buf.readUInt16BE(p + 8), w - x), p + 8);
      buf.writeUInt16BE(Math.min(buf.readUInt16BE(p + 10), h - y), p + 10);
    }
  }

  private forwardReplacement(): void {
    const r = this.replacement!;
    this.replacement = null;
    this.forward(r);
  }

  /** Keeps the incomplete unit at chunk[off…] (a copy: the chunk itself is forwarded or dropped). */
  private startSplit(chunk: Buffer, off: number): void {
    this.partial = null;
    this.held = 0;
    this.collect(chunk, off);
  }

  /**
   * Adds bytes from chunk[off…] to the held unit until it is complete (then processes and forwards it and
   * holds nothing) or the chunk runs out. Returns the offset in `chunk` it stopped at.
   */
  private collect(chunk: Buffer, off: number): number {
    for (;;) {
      if (this.partial === null) {
        // Its length is not known yet: gather the few header bytes that tell it.
        const head = (this.head ??= Buffer.alloc(HEAD_BYTES));
        const total = this.held === 0 ? -1 : this.measure(head, 0, this.held);
        if (total < 0) {
          if (off === chunk.length) return off;
          const n = Math.min(-total - this.held, chunk.length - off);
          chunk.copy(head, this.held, off, off + n);
          this.held += n;
          off += n;
          continue;
        }
        this.partial = Buffer.allocUnsafe(total);
        head.copy(this.partial, 0, 0, this.held);
      }
      const n = Math.min(this.partial.length - this.held, chunk.length - off);
      chunk.copy(this.partial, this.held, off, off + n);
      this.held += n;
      off += n;
      if (this.held < this.partial.length) return off;
      const unit = this.partial;
      this.partial = null;
      this.held = 0;
      const action = this.process(unit, 0, unit.length);
      if (action === FORWARD) this.forward(unit);
      else if (action === REPLACE) this.forwardReplacement();
      return off;
    }
  }
}
