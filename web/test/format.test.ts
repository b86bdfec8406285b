import { describe, expect, it } from 'vitest';
import {
  endReasonLabel,
  formatAgo,
  formatBytes,
  formatDuration,
  formatRate,
  formatRtt,
} from '../src/lib/format.js';
import { retryPhrase } from '../src/api/api-error.js';

describe('format', () => {
  it('says durations the way people do', () => {
    expect(formatDuration(30_000)).toBe('less than a minute');
    expect(formatDuration(4 * 60_000)).toBe('4 min');
    expect(formatDuration(125 * 60_000)).toBe('2 h 5 min');
    expect(formatDuration(3 * 86_400_000)).toBe('3 days');
    expect(formatAgo(new Date(0).toISOString(), 10_000)).toBe('just now');
    expect(formatAgo(null, 0)).toBe('—');
  });

  it('formats rates and round trips for the status line', () => {
    expect(formatRate(840_000)).toBe('840 kbit/s');
    expect(formatRate(12_400_000)).toBe('12 Mbit/s');
    expect(formatRate(2_400_000)).toBe('2.4 Mbit/s');
    expect(formatRtt(12.4)).toBe('12 ms');
    expect(formatRtt(null)).toBe('—');
  });

  it('says when to retry', () => {
    expect(retryPhrase(1)).toBe('in 1 second');
    expect(retryPhrase(42)).toBe('in 42 seconds');
    expect(retryPhrase(900)).toBe('in 15 minutes');
    expect(retryPhrase(null)).toBe('in a little while');
  });
});

describe('formatBytes', () => {
  it('reads in decimal units with one decimal below 10', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1_234)).toBe('1.2 KB');
    expect(formatBytes(45_600_000)).toBe('46 MB');
    expect(formatBytes(2_500_000_000)).toBe('2.5 GB');
    expect(formatBytes(null)).toBe('—');
    expect(formatBytes(-1)).toBe('—');
  });
});

describe('endReasonLabel', () => {
  it('says why a session ended in words, and passes an unknown reason through', () => {
    expect(endReasonLabel('admin')).toBe('Ended by an admin');
    expect(endReasonLabel('idle-timeout')).toBe('Idle too long');
    expect(endReasonLabel('something-new')).toBe('something-new');
    expect(endReasonLabel(null)).toBe('—');
  });
});
