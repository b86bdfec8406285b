// The slice of RFB 3.8 (RFC 6143) the desktop simulator and the load generator speak to each other,
// plus the benchmark's own conventions layered on it:
// - bulk screen updates are Raw rectangles at least 2 pixels in area;
// - an input marker is a KeyEvent whose keysym has MARKER_TAG in its top byte and a sequence number
//   below; the simulator answers it with a FramebufferUpdate holding one 1×1 Raw rectangle whose pixel
//   is that sequence number (the "echo"), queued behind whatever screen data was already on its way,
//   like a real desktop drawing the keystroke in its next update;
// - a barrier marker (BARRIER_TAG) stops the bulk stream and is answered with a 1×5 rectangle:
//   sequence, bytes the simulator wrote to this connection (lo, hi) and bytes it read (lo, hi). Each
//   side then knows, exactly and with no timing, whether every byte arrived.

export const RFB_VERSION = Buffer.from('RFB 003.008\n', 'latin1');
export const SECURITY_NONE = 1;

export const MARKER_TAG = 0x1e000000;
export const BARRIER_TAG = 0x1f000000;
export const SEQ_MASK = 0x00ffffff;

export const ClientMessage = {
  SetPixelFormat: 0,
  SetEncodings: 2,
  FramebufferUpdateRequest: 3,
  KeyEvent: 4,
  PointerEvent: 5,
  ClientCutText: 6,
} as const;

/** 32 bpp true colour, little endian: what Xvnc offers by default. */
export const BYTES_PER_PIXEL = 4;
export const RAW_ENCODING = 0;
/** Bulk rectangles are this many pixels wide (1 KiB per row) unless smaller than a row. */
export const BULK_ROW_PIXELS = 256;

export function serverInit(width: number, height: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(24 + nameBytes.length);
  b.writeUInt16BE(width, 0);
  b.writeUInt16BE(height, 2);
  // pixel format: bpp 32, depth 24, little endian, true colour, max 255 each, shifts 16/8/0
  b.writeUInt8(32, 4);
  b.writeUInt8(24, 5);
  b.writeUInt8(0, 6);
  b.writeUInt8(1, 7);
  b.writeUInt16BE(255, 8);
  b.writeUInt16BE(255, 10);
  b.writeUInt16BE(255, 12);
  b.writeUInt8(16, 14);
  b.writeUInt8(8, 15);
  b.writeUInt8(0, 16);
  b.writeUInt32BE(nameBytes.length, 20);
  nameBytes.copy(b, 24);
  return b;
}

/** Header of a FramebufferUpdate with one Raw rectangle of w×h pixels; the pixels follow it. */
export function rawRectHeader(x: number, y: number, w: number, h: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(0, 0); // FramebufferUpdate
  b.writeUInt16BE(1, 2); // one rectangle
  b.writeUInt16BE(x, 4);
  b.writeUInt16BE(y, 6);
  b.writeUInt16BE(w, 8);
  b.writeUInt16BE(h, 10);
  b.writeInt32BE(RAW_ENCODING, 12);
  return b;
}

/** Width and height of the bulk rectangle carrying about `bytes` of pixels (≥ 2 pixels, never 1×1). */
export function bulkShape(bytes: number): { w: number; h: number } {
  const pixels = Math.max(2, Math.round(bytes / BYTES_PER_PIXEL));
  if (pixels <= BULK_ROW_PIXELS) return { w: pixels, h: 1 };
  return { w: BULK_ROW_PIXELS, h: Math.max(1, Math.round(pixels / BULK_ROW_PIXELS)) };
}

export function keyEvent(keysym: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(ClientMessage.KeyEvent, 0);
  b.writeUInt8(1, 1); // down
  b.writeUInt32BE(keysym >>> 0, 4);
  return b;
}

export function framebufferUpdateRequest(incremental: boolean, width: number, height: number): Buffer {
  const b = Buffer.alloc(10);
  b.writeUInt8(ClientMessage.FramebufferUpdateRequest, 0);
  b.writeUInt8(incremental ? 1 : 0, 1);
  b.writeUInt16BE(width, 6);
  b.writeUInt16BE(height, 8);
  return b;
}

export function setEncodings(encodings: number[]): Buffer {
  const b = Buffer.alloc(4 + 4 * encodings.length);
  b.writeUInt8(ClientMessage.SetEncodings, 0);
  b.writeUInt16BE(encodings.length, 2);
  encodings.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
  return b;
}

/** Splits a 64-bit-safe byte count into the two u32 pixels a barrier answer carries. */
export function splitCount(n: number): [number, number] {
  return [n % 0x1_0000_0000, Math.floor(n / 0x1_0000_0000)];
}
