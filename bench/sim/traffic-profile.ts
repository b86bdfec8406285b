// Screen-traffic profiles of the desktop simulator: how often it sends an update and how large, with a
// burstiness that keeps the stated average. Sizes are drawn from a seeded generator so every stack in a
// `--compare` run is offered the same sequence of updates.

export type ProfileName = 'still' | 'idle' | 'office' | 'video';

export interface TrafficProfile {
  name: ProfileName;
  /** Average bitrate the profile stands for. */
  bitsPerSecond: number;
  /** Time between updates. */
  intervalMs: number;
  /** Update size multipliers and their probabilities; the expectation is 1. */
  burst: { p: number; factor: number }[];
}

export const profiles: Record<ProfileName, TrafficProfile> = {
  // a desktop left alone (nothing on it moves but a clock): one small update every 10 s, ~0.4 kbit/s.
  // For thousands of idle viewers: at idle's 10 kbit/s, 10,000 viewers are 100 Mbit/s through sshd,
  // which alone needed ~3 cores of this 2-core machine (0.6 of a core for 2000 idle viewers).
  still: { name: 'still', bitsPerSecond: 400, intervalMs: 10_000, burst: [{ p: 1, factor: 1 }] },
  // a cursor blink and a clock: one small update a second, ~10 kbit/s
  idle: { name: 'idle', bitsPerSecond: 10_000, intervalMs: 1000, burst: [{ p: 1, factor: 1 }] },
  // typing and scrolling, with one update in ten a window redraw five-and-a-half times the mean: ~1 Mbit/s
  office: {
    name: 'office',
    bitsPerSecond: 1_000_000,
    intervalMs: 50,
    burst: [
      { p: 0.1, factor: 5.5 },
      { p: 0.9, factor: 0.5 },
    ],
  },
  // 30 frames a second, one in ten a "key frame" twice the mean: ~5 Mbit/s
  video: {
    name: 'video',
    bitsPerSecond: 5_000_000,
    intervalMs: 1000 / 30,
    burst: [
      { p: 0.1, factor: 2 },
      { p: 0.9, factor: 8 / 9 },
    ],
  },
};

export function isProfileName(s: string): s is ProfileName {
  return s === 'still' || s === 'idle' || s === 'office' || s === 'video';
}

/** Mean bytes per update of a profile. */
export function meanUpdateBytes(p: TrafficProfile): number {
  return (p.bitsPerSecond / 8) * (p.intervalMs / 1000);
}

/** mulberry32: small, fast, seeded; good enough to vary update sizes. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Draws the size of the next update. */
export function nextUpdateBytes(p: TrafficProfile, rand: () => number): number {
  const mean = meanUpdateBytes(p);
  let r = rand();
  for (const b of p.burst) {
    if (r < b.p) return Math.round(mean * b.factor);
    r -= b.p;
  }
  return Math.round(mean);
}
