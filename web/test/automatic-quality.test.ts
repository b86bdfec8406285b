// The Automatic preset follows TigerVNC's vncviewer rule: quality 8 above 16 Mbit/s, 6 below, the
// lowest tier at or below 256 kbit/s, from an estimate that moves by at most 20 % per measurement.
import { describe, expect, it } from 'vitest';
import { automaticLevels, automaticTier, ThroughputEstimator } from '../src/viewer/automatic-quality.js';
import { fixedPresets } from '../src/viewer/quality.js';

/** Feeds a burst of `count` full messages of `bytes`, arriving at `bps`. */
function burst(e: ThroughputEstimator, start: number, count: number, bytes: number, bps: number): number {
  let t = start;
  const gap = (bytes * 8 * 1000) / bps;
  for (let i = 0; i < count; i++) {
    e.received(bytes, t);
    t += gap;
  }
  return t;
}

describe('automaticTier', () => {
  it('uses TigerVNC’s thresholds', () => {
    expect(automaticTier(20_000_000)).toBe('fast');
    expect(automaticTier(16_000_001)).toBe('fast');
    expect(automaticTier(16_000_000)).toBe('normal');
    expect(automaticTier(1_000_000)).toBe('normal');
    expect(automaticTier(256_001)).toBe('normal');
    expect(automaticTier(256_000)).toBe('slow');
    expect(automaticTier(50_000)).toBe('slow');
  });

  it('stays in its tier within 10 % of a threshold', () => {
    expect(automaticTier(15_000_000, 'fast')).toBe('fast');
    expect(automaticTier(14_000_000, 'fast')).toBe('normal');
    expect(automaticTier(17_000_000, 'normal')).toBe('normal');
    expect(automaticTier(18_000_000, 'normal')).toBe('fast');
    expect(automaticTier(270_000, 'slow')).toBe('slow');
    expect(automaticTier(300_000, 'slow')).toBe('normal');
    expect(automaticTier(240_000, 'normal')).toBe('normal');
    expect(automaticTier(200_000, 'normal')).toBe('slow');
  });

  it('maps the tiers to levels, none below compression level 2', () => {
    expect(automaticLevels.fast).toEqual({ qualityLevel: 8, compressionLevel: 2 });
    expect(automaticLevels.normal).toEqual({ qualityLevel: 6, compressionLevel: 2 });
    expect(automaticLevels.slow.qualityLevel).toBe(fixedPresets.low.qualityLevel);
    for (const levels of [...Object.values(automaticLevels), ...Object.values(fixedPresets)])
      expect(levels.compressionLevel).toBeGreaterThanOrEqual(2);
  });
});

describe('ThroughputEstimator', () => {
  it('starts at 20 Mbit/s, as vncviewer does', () => {
    expect(new ThroughputEstimator().bitsPerSecond()).toBe(20_000_000);
  });

  it('converges on a slow link from the gaps between full messages', () => {
    const e = new ThroughputEstimator();
    burst(e, 0, 200, 32_768, 2_000_000);
    expect(e.bitsPerSecond()).toBeGreaterThan(1_800_000);
    expect(e.bitsPerSecond()).toBeLessThan(2_300_000);
    expect(automaticTier(e.bitsPerSecond())).toBe('normal');
  });

  it('moves by at most 20 % of the new value per measurement', () => {
    const e = new ThroughputEstimator();
    e.received(32_768, 0);
    e.received(32_768, 10_000); // a 10 s gap after a full message: capped weight
    expect(e.bitsPerSecond()).toBeCloseTo(20_000_000 * 0.8 + ((32_768 * 8) / 10) * 0.2, -2);
  });

  it('does not count idle time: the gap after a short message (end of an update) is ignored', () => {
    const e = new ThroughputEstimator();
    let t = burst(e, 0, 50, 32_768, 30_000_000);
    for (let i = 0; i < 50; i++) {
      e.received(32_768, t); // an update's full packet (after idle: not measured)…
      t += 0.2;
      e.received(600, t); // …its short tail, right behind it at 24 Mbit/s…
      t += 2_000; // …then two seconds of nothing before the next update
    }
    expect(automaticTier(e.bitsPerSecond())).toBe('fast');
  });

  it('starts over on a new connection', () => {
    const e = new ThroughputEstimator();
    burst(e, 0, 200, 32_768, 100_000);
    expect(automaticTier(e.bitsPerSecond())).toBe('slow');
    e.reset();
    expect(e.bitsPerSecond()).toBe(20_000_000);
  });
});
