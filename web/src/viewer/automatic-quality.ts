// The "Automatic" quality preset: estimate the link's throughput from the desktop's own updates and
// pick the levels the way TigerVNC's vncviewer does (vncviewer/CConn.cxx, framebufferUpdateEnd and
// updateQualityLevel / updatePixelFormat):
//   - the estimate starts at 20 Mbit/s and is a moving average: each measurement counts with a weight
//     of its duration over a 1 s window, at most 20 %;
//   - above 16 Mbit/s JPEG quality 8 ("perceptually lossless"), otherwise 6;
//   - at or below 256 kbit/s it switches to 8-bit colour. noVNC only speaks 32-bit true colour, so
//     here that tier is the Low preset's levels instead.
// TigerVNC uses no round-trip time in the rule, and neither does this. Its compression level is the
// server's default (2) in every tier but the slowest.
//
// TigerVNC times whole FramebufferUpdates, whose boundaries noVNC does not expose. A WebSocket message
// that follows a full-size one (the relay forwards SSH packets of up to the channel's packet size)
// arrived while the desktop still had bytes queued, so the gap before it is transfer time, not idle
// time: only those gaps are measured. TigerVNC switches exactly at its thresholds; a 10 % band is
// added here so an estimate sitting on a threshold does not resend SetEncodings on every update.
import { fixedPresets, type QualitySettings } from './quality.js';

const INITIAL_BPS = 20_000_000;
const WINDOW_MS = 1_000;
const MAX_WEIGHT = 0.2;
/** A message at least this share of the largest one seen counts as "full": more was queued behind it. */
const FULL_SHARE = 0.9;

export class ThroughputEstimator {
  private estimate = INITIAL_BPS;
  private largest = 0;
  private previous: { bytes: number; at: number } | null = null;

  /** A message of `bytes` arrived at `now` (ms). */
  received(bytes: number, now: number): void {
    const prev = this.previous;
    this.previous = { bytes, at: now };
    if (bytes > this.largest) this.largest = bytes;
    if (prev === null || prev.bytes < this.largest * FULL_SHARE || this.largest === 0) return;
    const elapsed = Math.max(now - prev.at, 0.001);
    const bps = (bytes * 8 * 1000) / elapsed;
    const weight = Math.min(elapsed / WINDOW_MS, MAX_WEIGHT);
    this.estimate = this.estimate * (1 - weight) + bps * weight;
  }

  /** The connection dropped: a new one is measured from scratch. */
  reset(): void {
    this.estimate = INITIAL_BPS;
    this.largest = 0;
    this.previous = null;
  }

  bitsPerSecond(): number {
    return this.estimate;
  }
}

export type AutomaticTier = 'fast' | 'normal' | 'slow';

const FAST_ABOVE_BPS = 16_000_000;
const SLOW_AT_OR_BELOW_BPS = 256_000;
const BAND = 0.1;

export const automaticLevels: Record<AutomaticTier, QualitySettings> = {
  fast: { qualityLevel: 8, compressionLevel: 2 },
  normal: { qualityLevel: 6, compressionLevel: 2 },
  slow: { qualityLevel: fixedPresets.low.qualityLevel, compressionLevel: fixedPresets.low.compressionLevel },
};

/** The tier for a throughput estimate, staying in `current` while within 10 % of its threshold. */
export function automaticTier(bps: number, current: AutomaticTier | null = null): AutomaticTier {
  const plain: AutomaticTier = bps > FAST_ABOVE_BPS ? 'fast' : bps > SLOW_AT_OR_BELOW_BPS ? 'normal' : 'slow';
  if (current === null || plain === current) return plain;
  if (current === 'fast' && bps > FAST_ABOVE_BPS * (1 - BAND)) return 'fast';
  if (current === 'slow' && bps <= SLOW_AT_OR_BELOW_BPS * (1 + BAND)) return 'slow';
  if (current === 'normal') {
    if (plain === 'fast' && bps <= FAST_ABOVE_BPS * (1 + BAND)) return 'normal';
    if (plain === 'slow' && bps > SLOW_AT_OR_BELOW_BPS * (1 - BAND)) return 'normal';
  }
  return plain;
}
