// The client side of the RFB (VNC) handshake, for the one case the gateway speaks it itself: a TCP
// desktop protected by a per-session VNC password (VncAuth), which the gateway answers so the password
// never reaches the browser. Also reads the 12-byte version banner used as a readiness/liveness check.
// RFB: https://github.com/rfbproto/rfbproto/blob/master/rfbproto.rst
import { createCipheriv } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { AppError } from '../errors/errors.js';

const SECURITY_VNC_AUTH = 2;
const MAX_REASON_BYTES = 4096;
const versionPattern = /^RFB (\d{3})\.(\d{3})\n$/;

/**
 * Reads exact byte counts from a stream with one deadline for the whole exchange. `release()` gives the
 * stream back paused, with any bytes read past the handshake put back in front.
 */
class ExactReader {
  private buffered: Buffer = Buffer.alloc(0);
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly stream: Duplex,
    timeoutMs: number,
  ) {
    this.timer = setTimeout(
      () =>
        this.fail(new AppError('VNC_PROTOCOL_ERROR', { message: 'The VNC server did not answer in time' })),
      timeoutMs,
    );
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
  }

  read(n: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Buffer>((resolve, reject) => {
      this.want = { n, resolve, reject };
      this.drain();
    });
  }

  release(): void {
    clearTimeout(this.timer);
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
    this.stream.pause();
    if (this.buffered.length > 0) this.stream.unshift(this.buffered);
    this.buffered = Buffer.alloc(0);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    // The server has nothing long to say before ServerInit; a flood is not RFB.
    if (this.buffered.length > 64 * 1024) {
      this.fail(
        new AppError('VNC_PROTOCOL_ERROR', { message: 'The VNC server sent too much during the handshake' }),
      );
      return;
    }
    this.drain();
  };

  private readonly onEnd = (): void => {
    this.fail(new AppError('VNC_PROTOCOL_ERROR', { message: 'The VNC server closed the connection' }));
  };

  private readonly onError = (err: Error): void => {
    this.fail(new AppError('VNC_PROTOCOL_ERROR', { message: 'The VNC connection failed', cause: err }));
  };

  private drain(): void {
    if (!this.want || this.buffered.length < this.want.n) return;
    const { n, resolve } = this.want;
    this.want = null;
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    resolve(out);
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    clearTimeout(this.timer);
    const w = this.want;
    this.want = null;
    w?.reject(err);
  }
}

function protocolError(message: string): AppError {
  return new AppError('VNC_PROTOCOL_ERROR', { message });
}

/** Reads the server's `RFB xxx.yyy\n` banner and leaves the stream right after it. */
export async function readRfbBanner(stream: Duplex, timeoutMs: number): Promise<string> {
  const reader = new ExactReader(stream, timeoutMs);
  try {
    const banner = (await reader.read(12)).toString('latin1');
    if (!versionPattern.test(banner)) throw protocolError('The VNC server sent no RFB version');
    return banner;
  } finally {
    reader.release();
  }
}

/**
 * The VncAuth response: DES-encrypt the 16-byte challenge with the password (8 bytes, zero padded) as key,
 * each key byte bit-reversed (a quirk of the original VNC code). Node's OpenSSL 3 has no single DES in its
 * default provider; 3DES-EDE with the same 8-byte key three times is the same cipher.
 */
export function vncAuthResponse(challenge: Buffer, password: string): Buffer {
  const key = Buffer.alloc(8);
  Buffer.from(password, 'latin1').copy(key, 0, 0, 8);
  for (let i = 0; i < 8; i++) {
    let b = key[i]!;
    let r = 0;
    for (let bit = 0; bit < 8; bit++) {
      r = (r << 1) | (b & 1);
      b >>= 1;
    }
    key[i] = r;
  }
  const cipher = createCipheriv('des-ede3-ecb', Buffer.concat([key, key, key]), null);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(challenge), cipher.final()]);
}

async function readReason(reader: ExactReader): Promise<string> {
  const length = (await reader.read(4)).readUInt32BE(0);
  if (length > MAX_REASON_BYTES) throw protocolError('The VNC server sent an oversized reason');
  return (await reader.read(length)).toString('utf8');
}

/**
 * Runs the client half of the handshake up to and including SecurityResult, answering VncAuth with
 * `password`. Returns the server's version line; the stream is left paused, positioned where the viewer's
 * ClientInit goes next.
 */
export async function vncAuthenticate(stream: Duplex, password: string, timeoutMs: number): Promise<string> {
  const reader = new ExactReader(stream, timeoutMs);
  try {
    const banner = (await reader.read(12)).toString('latin1');
    const m = versionPattern.exec(banner);
    if (!m) throw protocolError('The VNC server sent no RFB version');
    const minor = Number(m[1]) === 3 ? Number(m[2]) : 8;
    // RFB: servers speak 3.3, 3.7 or 3.8; anything else between counts as 3.3, anything newer as 3.8.
    const version = minor >= 8 ? 8 : minor === 7 ? 7 : 3;
    stream.write(`RFB 003.00${version}\n`);

    if (version === 3) {
      const type = (await reader.read(4)).readUInt32BE(0);
      if (type === 0)
        throw protocolError(`The VNC server refused the connection: ${await readReason(reader)}`);
      if (type !== SECURITY_VNC_AUTH) throw protocolError('The VNC server does not ask for a VNC password');
    } else {
      const count = (await reader.read(1))[0]!;
      if (count === 0)
        throw protocolError(`The VNC server refused the connection: ${await readReason(reader)}`);
      const types = await reader.read(count);
      if (!types.includes(SECURITY_VNC_AUTH))
        throw protocolError('The VNC server does not offer VNC password auth');
      stream.write(Buffer.from([SECURITY_VNC_AUTH]));
    }

    const challenge = await reader.read(16);
    stream.write(vncAuthResponse(challenge, password));
    const result = (await reader.read(4)).readUInt32BE(0);
    if (result !== 0) {
      const reason = version === 8 ? await readReason(reader) : 'authentication failed';
      throw protocolError(`The VNC server refused the session password: ${reason}`);
    }
    return banner;
  } finally {
    reader.release();
  }
}
