// The desktop→viewer budget (SESSION_MAX_KBPS) as a token bucket: bytes drain it, time refills it at the
// budget's rate up to a burst allowance. The relay sends what the desktop sent right away (it is already
// here) and, once the balance is below zero, pauses the SSH channel until it is back at zero: the SSH
// window then stops refilling, the VNC server's socket backs up, and TigerVNC, which only sends when its
// socket drains, merges the screen changes of the pause into its next, fresher update.
//
// The burst allowance is why typing does not wait: an idle or quiet session's bucket is full, so a small
// update (an echoed keystroke, a cursor blink) passes at once; only a sustained stream above the budget
// (scrolling, a video) is held back. Pure: time comes in as an argument (milliseconds, monotonic).

/** Seconds of the budget the burst allowance holds, and its floor (a few full-size SSH packets). */
export const BURST_SECONDS = 0.5;
export const MIN_BURST_BYTES = 64 * 1024;

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    /** Refill rate in bytes per millisecond. */
    private readonly bytesPerMs: number,
    /** Burst allowance: the most the bucket holds (it starts full). */
    readonly capacity: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.last = now;
  }

  /** A bucket for a budget in kbit/s (1000 bit/s), with its burst allowance. */
  static forKbps(kbps: number, now: number): TokenBucket {
    const bytesPerSecond = (kbps * 1000) / 8;
    return new TokenBucket(
      bytesPerSecond / 1000,
      Math.max(MIN_BURST_BYTES, bytesPerSecond * BURST_SECONDS),
      now,
    );
  }

  /** Spends `bytes`; returns how many ms until the balance is back at zero (0: it is not below). */
  take(bytes: number, now: number): number {
    this.refill(now);
    this.tokens -= bytes;
    return this.waitMs();
  }

  /** Ms until the balance is back at zero, as of `now`. */
  waitAt(now: number): number {
    this.refill(now);
    return this.waitMs();
  }

  /** The balance in bytes (negative: owed), as of the last call. */
  get balance(): number {
    return this.tokens;
  }

  private waitMs(): number {
    return this.tokens >= 0 ? 0 : Math.ceil(-this.tokens / this.bytesPerMs);
  }

  private refill(now: number): void {
    const elapsed = now - this.last;
    if (elapsed > 0) this.tokens = Math.min(this.capacity, this.tokens + elapsed * this.bytesPerMs);
    this.last = Math.max(this.last, now);
  }
}
