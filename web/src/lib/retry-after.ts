// When to ask again after the gateway said "not now": 503 OVERLOADED or BUSY, or 429 RATE_LIMITED,
// with a Retry-After (issue 9). Never earlier than the gateway asked, plus up to 20 % random spread so
// the viewers it turned away do not all come back in the same second.
import { ApiError } from '../api/api-error.js';

const BUSY_CODES = new Set(['OVERLOADED', 'BUSY']);
const DEFAULT_BUSY_SECONDS = 2;
const JITTER = 0.2;
/** A Retry-After beyond this is not worth waiting for on screen; the person is told instead. */
export const MAX_BUSY_WAIT_SECONDS = 120;

/** Whether the gateway turned the request away for now (busy or overloaded), not for good. */
export function isBusy(e: unknown): e is ApiError {
  return e instanceof ApiError && e.status === 503 && BUSY_CODES.has(e.code);
}

/** Milliseconds to wait before retrying after `e`: its Retry-After (or 2 s) plus 0–20 % jitter. */
export function busyRetryDelayMs(e: ApiError, random: () => number = Math.random): number {
  const seconds = Math.min(e.retryAfterSeconds ?? DEFAULT_BUSY_SECONDS, MAX_BUSY_WAIT_SECONDS);
  return Math.round(seconds * 1000 * (1 + JITTER * random()));
}

/** "the server is busy, retrying in 3 s" for a countdown. */
export function busyMessage(remainingMs: number): string {
  return `The server is busy, retrying in ${Math.max(1, Math.ceil(remainingMs / 1000))} s…`;
}
