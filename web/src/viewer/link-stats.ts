// The numbers in the viewer's status line: current throughput in each direction and the round-trip
// time to the desktop. Pure: time comes in as arguments.

/** Bytes seen over a sliding window → bits per second. */
export class RateMeter {
  private readonly samples: Array<{ t: number; bytes: number }> = [];

  constructor(private readonly windowMs = 2_000) {}

  add(bytes: number, now: number): void {
    this.samples.push({ t: now, bytes });
    this.trim(now);
  }

  bitsPerSecond(now: number): number {
    this.trim(now);
    let total = 0;
    for (const s of this.samples) total += s.bytes;
    return (total * 8 * 1000) / this.windowMs;
  }

  reset(): void {
    this.samples.length = 0;
  }

  private trim(now: number): void {
    while (this.samples.length > 0 && this.samples[0]!.t <= now - this.windowMs) this.samples.shift();
  }
}

/**
 * Round trips from probes: `sent()` when a probe goes out, `received()` on the next bytes from the
 * desktop. Reports the median of the last few, which shrugs off one probe that crossed an unrelated
 * screen update on the way.
 */
export class RoundTripMeter {
  private pendingSince: number | null = null;
  private readonly recent: number[] = [];

  constructor(
    private readonly keep = 5,
    private readonly timeoutMs = 5_000,
  ) {}

  /** Whether a probe is out and not yet answered (or timed out). */
  waiting(now: number): boolean {
    if (this.pendingSince !== null && now - this.pendingSince > this.timeoutMs) this.pendingSince = null;
    return this.pendingSince !== null;
  }

  sent(now: number): void {
    this.pendingSince = now;
  }

  received(now: number): void {
    if (this.pendingSince === null) return;
    const rtt = now - this.pendingSince;
    this.pendingSince = null;
    this.recent.push(rtt);
    if (this.recent.length > this.keep) this.recent.shift();
  }

  /** Median of the recent samples, or null before the first. */
  value(): number | null {
    if (this.recent.length === 0) return null;
    const sorted = [...this.recent].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  }

  reset(): void {
    this.pendingSince = null;
    this.recent.length = 0;
  }
}

/**
 * An RFB FramebufferUpdateRequest for one pixel, non-incremental: the VNC server answers it at once
 * with a FramebufferUpdate, which noVNC accepts like any other update. Sent between noVNC's own
 * messages (noVNC flushes whole messages within one task), it times a real round trip to the desktop
 * — browsers cannot send WebSocket pings.
 */
export function probeMessage(): Uint8Array {
  return new Uint8Array([3, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
}
