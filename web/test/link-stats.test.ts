// The numbers on the viewer's status line.
import { describe, expect, it } from 'vitest';
import { probeMessage, RateMeter, RoundTripMeter } from '../src/viewer/link-stats.js';

describe('RateMeter', () => {
  it('reports bits per second over its window and forgets old bytes', () => {
    const m = new RateMeter(2_000);
    m.add(10_000, 0);
    m.add(15_000, 1_000);
    expect(m.bitsPerSecond(1_500)).toBe(100_000);
    expect(m.bitsPerSecond(2_500)).toBe(60_000);
    expect(m.bitsPerSecond(4_000)).toBe(0);
  });
});

describe('RoundTripMeter', () => {
  it('times a probe to the next answer and reports the median', () => {
    const m = new RoundTripMeter(5);
    expect(m.value()).toBeNull();
    for (const [sent, got] of [
      [0, 20],
      [100, 110],
      [200, 500],
    ] as const) {
      m.sent(sent);
      expect(m.waiting(sent)).toBe(true);
      m.received(got);
    }
    expect(m.value()).toBe(20);
  });

  it('ignores bytes when no probe is out and forgets a probe never answered', () => {
    const m = new RoundTripMeter(5, 1_000);
    m.received(50);
    expect(m.value()).toBeNull();
    m.sent(0);
    expect(m.waiting(2_000)).toBe(false);
  });
});

describe('probeMessage', () => {
  it('is a non-incremental FramebufferUpdateRequest for one pixel at 0,0', () => {
    expect([...probeMessage()]).toEqual([3, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
  });
});
