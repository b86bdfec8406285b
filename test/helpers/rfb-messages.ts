// Viewer→desktop RFB messages laid out byte for byte as noVNC 1.7 sends them (core/rfb.js,
// RFB.messages), for tests of the gateway's parser and relay.

export const versionLine = (minor = 8): Buffer => Buffer.from(`RFB 003.00${minor}\n`, 'latin1');
export const securityChoice = (type = 1): Buffer => Buffer.from([type]);
export const clientInit = (shared = true): Buffer => Buffer.from([shared ? 1 : 0]);

export function setPixelFormat(bpp = 32, depth = 24): Buffer {
  const b = Buffer.alloc(20);
  b[0] = 0;
  b[4] = bpp;
  b[5] = depth;
  b[7] = 1; // true colour
  b.writeUInt16BE(255, 8);
  b.writeUInt16BE(255, 10);
  b.writeUInt16BE(255, 12);
  b[14] = 0;
  b[15] = 8;
  b[16] = 16;
  return b;
}

export function setEncodings(encodings: number[]): Buffer {
  const b = Buffer.alloc(4 + 4 * encodings.length);
  b[0] = 2;
  b.writeUInt16BE(encodings.length, 2);
  encodings.forEach((e, i) => b.writeInt32BE(e | 0, 4 + 4 * i));
  return b;
}

/** What noVNC 1.7 sends at full depth with quality `q` and compression `c` (no H.264 decoder). */
export function noVncEncodings(q = 6, c = 2): number[] {
  return [
    1,
    7,
    -260,
    16,
    21,
    5,
    2,
    6,
    0,
    -32 + q,
    -256 + c,
    -223,
    -224,
    -258,
    -261,
    -308,
    -309,
    -312,
    -313,
    -307,
    0xc0a1e5ce | 0,
    -316,
    0x574d5664,
    -239,
  ];
}

export function framebufferUpdateRequest(incremental = true, w = 1280, h = 800): Buffer {
  const b = Buffer.alloc(10);
  b[0] = 3;
  b[1] = incremental ? 1 : 0;
  b.writeUInt16BE(w, 6);
  b.writeUInt16BE(h, 8);
  return b;
}

export function keyEvent(keysym: number, down: boolean): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 4;
  b[1] = down ? 1 : 0;
  b.writeUInt32BE(keysym >>> 0, 4);
  return b;
}

export function pointerEvent(x: number, y: number, mask = 0): Buffer {
  const b = Buffer.alloc(6);
  b[0] = 5;
  b[1] = mask & 0x7f;
  b.writeUInt16BE(x, 2);
  b.writeUInt16BE(y, 4);
  return b;
}

export function clientCutText(text: string): Buffer {
  const data = Buffer.from(text, 'latin1');
  const b = Buffer.alloc(8 + data.length);
  b[0] = 6;
  b.writeUInt32BE(data.length, 4);
  data.copy(b, 8);
  return b;
}

/** Extended clipboard (caps/notify/request/provide): the length is sent negated. */
export function extendedClipboard(flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(12 + payload.length);
  b[0] = 6;
  b.writeInt32BE(-(4 + payload.length), 4);
  b.writeUInt32BE(flags >>> 0, 8);
  payload.copy(b, 12);
  return b;
}

export function enableContinuousUpdates(enable = true, w = 1280, h = 800): Buffer {
  const b = Buffer.alloc(10);
  b[0] = 150;
  b[1] = enable ? 1 : 0;
  b.writeUInt16BE(w, 6);
  b.writeUInt16BE(h, 8);
  return b;
}

export function fence(flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(9 + payload.length);
  b[0] = 248;
  b.writeUInt32BE(flags >>> 0, 4);
  b[8] = payload.length;
  payload.copy(b, 9);
  return b;
}

export function xvp(op: number): Buffer {
  return Buffer.from([250, 0, 1, op]);
}

export function setDesktopSize(width: number, height: number, screens = 1): Buffer {
  const b = Buffer.alloc(8 + 16 * screens);
  b[0] = 251;
  b.writeUInt16BE(width, 2);
  b.writeUInt16BE(height, 4);
  b[6] = screens;
  for (let i = 0; i < screens; i++) {
    const p = 8 + 16 * i;
    b.writeUInt32BE(i, p);
    b.writeUInt16BE(0, p + 4);
    b.writeUInt16BE(0, p + 6);
    b.writeUInt16BE(width, p + 8);
    b.writeUInt16BE(height, p + 10);
  }
  return b;
}

export function qemuKeyEvent(keysym: number, down: boolean, keycode: number): Buffer {
  const b = Buffer.alloc(12);
  b[0] = 255;
  b[1] = 0;
  b.writeUInt16BE(down ? 1 : 0, 2);
  b.writeUInt32BE(keysym >>> 0, 4);
  b.writeUInt32BE(keycode >>> 0, 8);
  return b;
}

/**
 * The messages of a short noVNC session after the handshake: one of every kind, in a plausible order.
 * `asForwarded`: as the gateway passes them on with no caps (ExtendedMouseButtons, −316, becomes Raw).
 */
export function typicalMessages(asForwarded = false): Buffer[] {
  const encodings = noVncEncodings().map((e) => (asForwarded && e === -316 ? 0 : e));
  return [
    setPixelFormat(),
    setEncodings(encodings),
    framebufferUpdateRequest(false),
    extendedClipboard(0x01000000 | 0x1f, Buffer.alloc(20)), // caps
    fence(0x80000003, Buffer.from('sync')),
    enableContinuousUpdates(true),
    pointerEvent(10, 20),
    pointerEvent(11, 21, 1),
    pointerEvent(11, 21, 0),
    keyEvent(0x61, true),
    keyEvent(0x61, false),
    qemuKeyEvent(0x62, true, 0x30),
    qemuKeyEvent(0x62, false, 0x30),
    clientCutText('hello from the browser'),
    extendedClipboard(0x08000001), // notify: text
    setDesktopSize(1600, 900),
    xvp(2),
    framebufferUpdateRequest(true),
  ];
}

/** The viewer's whole stream for RFB 3.8 with security None: handshake, then `messages`. */
export function typicalStream(messages: Buffer[] = typicalMessages()): Buffer[] {
  return [versionLine(8), securityChoice(1), clientInit(true), ...messages];
}
