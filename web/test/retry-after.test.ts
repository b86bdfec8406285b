// A busy gateway's Retry-After is followed, never undercut, with some spread.
import { describe, expect, it } from 'vitest';
import { ApiError } from '../src/api/api-error.js';
import { busyMessage, busyRetryDelayMs, isBusy } from '../src/lib/retry-after.js';

describe('retry after a busy gateway', () => {
  const overloaded = new ApiError(503, 'OVERLOADED', 'busy', undefined, 3);

  it('knows busy from down', () => {
    expect(isBusy(overloaded)).toBe(true);
    expect(isBusy(new ApiError(503, 'BUSY', 'busy'))).toBe(true);
    expect(isBusy(new ApiError(503, 'STORE_UNAVAILABLE', 'down'))).toBe(false);
    expect(isBusy(new ApiError(0, 'NETWORK', 'down'))).toBe(false);
    expect(isBusy(new Error('x'))).toBe(false);
  });

  it('waits Retry-After plus 0–20 %', () => {
    expect(busyRetryDelayMs(overloaded, () => 0)).toBe(3_000);
    expect(busyRetryDelayMs(overloaded, () => 1)).toBe(3_600);
    expect(busyRetryDelayMs(new ApiError(503, 'BUSY', 'busy'), () => 0)).toBe(2_000);
    expect(busyRetryDelayMs(new ApiError(503, 'BUSY', 'busy', undefined, 9_999), () => 0)).toBe(120_000);
  });

  it('says when', () => {
    expect(busyMessage(2_400)).toBe('The server is busy, retrying in 3 s…');
    expect(busyMessage(10)).toBe('The server is busy, retrying in 1 s…');
  });
});
