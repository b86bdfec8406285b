// Moving file bytes between an HTTP stream and an SFTP handle with backpressure both ways and a fixed
// bound on what the gateway holds per transfer:
//   upload:   at most `windowBytes` of SFTP WRITE requests the instance has not acknowledged, plus the
//             one body chunk being placed (≤ 64 KiB, a socket read) — the HTTP body is not read further
//             until acknowledgements make room, so a slow instance slows the browser's upload (TCP).
//   download: at most `windowBytes` of SFTP READ requests outstanding, plus the stream's own buffer
//             (one chunk) — reads are only issued while the HTTP response accepts more, so a slow
//             browser slows the reads from the instance.
// Both report the largest amount they held (`peakHeldBytes`), which the tests assert on.
import { Readable } from 'node:stream';
import { AppError } from '../errors/errors.js';
import type { SftpSession } from './sftp-session.js';

const READ_CHUNK = 64 * 1024;
const WRITE_PIECE = 64 * 1024;

/** Reads [start, end] (inclusive) of an open handle, in order, with up to `windowBytes` of reads in flight. */
export class SftpReadStream extends Readable {
  private next: number;
  private inFlight = 0;
  private readonly slots: { buf: Buffer; filled: number; done: boolean }[] = [];
  private wanted = false;
  private failed = false;
  peakHeldBytes = 0;
  bytesSent = 0;

  constructor(
    private readonly session: SftpSession,
    private readonly handle: Buffer,
    start: number,
    private readonly end: number,
    private readonly windowBytes: number,
  ) {
    super({ highWaterMark: READ_CHUNK });
    this.next = start;
  }

  override _read(): void {
    this.wanted = true;
    this.pump();
  }

  private pump(): void {
    while (
      this.wanted &&
      !this.failed &&
      this.next <= this.end &&
      this.inFlight + Math.min(READ_CHUNK, this.end - this.next + 1) <= Math.max(this.windowBytes, READ_CHUNK)
    ) {
      const length = Math.min(READ_CHUNK, this.end - this.next + 1);
      const slot = { buf: Buffer.allocUnsafe(length), filled: 0, done: false };
      this.slots.push(slot);
      this.inFlight += length;
      this.peakHeldBytes = Math.max(this.peakHeldBytes, this.inFlight + this.readableLength);
      this.fill(slot, this.next);
      this.next += length;
    }
    if (this.next > this.end && this.slots.length === 0 && !this.failed) this.push(null);
  }

  /** Reads until the slot is full; a short read (allowed by SFTP) asks again for the rest. */
  private fill(slot: { buf: Buffer; filled: number; done: boolean }, position: number): void {
    this.session
      .read(this.handle, slot.buf, slot.filled, slot.buf.length - slot.filled, position + slot.filled)
      .then((n) => {
        if (this.failed || this.destroyed) return;
        if (n === 0) {
          this.fail(new AppError('SFTP_FAILED', { message: 'The file got shorter during the download' }));
          return;
        }
        slot.filled += n;
        if (slot.filled < slot.buf.length) {
          this.fill(slot, position);
          return;
        }
        slot.done = true;
        this.flush();
      })
      .catch((e: unknown) => this.fail(e instanceof Error ? e : new Error(String(e))));
  }

  private flush(): void {
    while (this.slots.length > 0 && this.slots[0]!.done) {
      const slot = this.slots.shift()!;
      this.inFlight -= slot.buf.length;
      this.bytesSent += slot.buf.length;
      if (!this.push(slot.buf)) this.wanted = false;
    }
    this.pump();
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.destroy(e);
  }
}

export interface UploadProgress {
  /** Bytes taken from the body so far. */
  received: number;
  /** Bytes the instance acknowledged. */
  written: number;
  peakHeldBytes: number;
}

/**
 * Writes the body to the handle from offset 0. Rejects with FILE_TOO_LARGE past `maxBytes` (the body is
 * not read further), or with the raw SFTP error of a refused write (the caller tells a full disk apart).
 */
export async function writeBody(
  session: SftpSession,
  handle: Buffer,
  body: AsyncIterable<Buffer>,
  opts: { windowBytes: number; maxBytes: number; progress: UploadProgress },
): Promise<void> {
  const p = opts.progress;
  let inFlight = 0;
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  const waitForAck = () => new Promise<void>((resolve) => (wake = resolve));
  const acked = (length: number) => {
    inFlight -= length;
    p.written += length;
    const w = wake;
    wake = null;
    w?.();
  };
  // Iterated by hand, not with for-await: leaving a for-await destroys the request, and the client should
  // still get our answer (413, 507, …) rather than a reset.
  const it: AsyncIterator<Buffer> = body[Symbol.asyncIterator]();
  for (;;) {
    const step = await it.next();
    if (step.done === true || failure !== null) break;
    const body = step.value;
    if (p.received + body.length > opts.maxBytes) {
      failure = new AppError('FILE_TOO_LARGE');
      break;
    }
    // A socket read is at most 64 KiB; a larger chunk (another body source) is written in pieces that size.
    for (let offset = 0; offset < body.length && failure === null; offset += WRITE_PIECE) {
      const piece = body.subarray(offset, offset + WRITE_PIECE);
      while (inFlight > 0 && inFlight + piece.length > opts.windowBytes && failure === null)
        await waitForAck();
      if (failure !== null) break;
      const length = piece.length;
      const position = p.received;
      inFlight += length;
      p.received += length;
      p.peakHeldBytes = Math.max(p.peakHeldBytes, inFlight);
      session.write(handle, piece, position).then(
        () => acked(length),
        (e: unknown) => {
          failure ??= e instanceof Error ? e : new Error(String(e));
          acked(length);
        },
      );
    }
  }
  while (inFlight > 0) await waitForAck();
  if (failure !== null) throw failure;
}
