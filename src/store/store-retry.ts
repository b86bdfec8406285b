// The store's failover rule, in one place: which database errors mean "the primary is gone" (as
// opposed to a refused statement), which of those may be retried for which kind of statement, and
// for how long. Repositories mark each statement as a read, an idempotent write or a plain write and
// run it through `StoreRetry.run`; services see only AppError('STORE_UNAVAILABLE') when the budget
// is spent. Write-behind buffers (session activity, audit) use `isStoreUnavailable` to tell an outage,
// which they wait out, from a batch the store refuses.
import { AppError, isAppError } from '../errors/errors.js';

/**
 * - `read`: a SELECT; running it twice changes nothing.
 * - `idempotent`: a write whose second run finds the first one's result and answers the same
 *   (an insert of a fixed id that treats "already there with that id" as success, an update that sets
 *   values rather than adding to them).
 * - `write`: anything else; retried only when the statement certainly never ran.
 */
export type StatementKind = 'read' | 'idempotent' | 'write';

/**
 * - `unsent`: the statement never ran on a primary (no connection could be made, the pool timed out,
 *   or the server refused it before running it: read-only standby, starting up). Safe to retry.
 * - `in-doubt`: the connection was lost while the statement ran, so it may or may not have committed.
 */
export type StoreFailure = 'unsent' | 'in-doubt';

/** Thrown by the pool when a connection cannot be had: whatever was to run never reached a server. */
export class StoreConnectError extends Error {
  readonly code = 'STORE_CONNECT_FAILED';
  constructor(cause: unknown) {
    super(`could not connect to the database: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
    this.name = 'StoreConnectError';
  }
}

/** SQLSTATEs and socket codes that mean nothing ran (see PostgreSQL's errcodes.txt). */
const unsentCodes = new Set([
  'STORE_CONNECT_FAILED',
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  '57P03', // cannot_connect_now: the server is starting up or shutting down
  '25006', // read_only_sql_transaction: this server is (now) a standby
  '08001', // sqlclient_unable_to_establish_sqlconnection
  '08004', // sqlserver_rejected_establishment_of_sqlconnection
  // The server rolled the whole transaction back and says so: nothing of it stayed, whatever the kind.
  '40001', // serialization_failure (also a hot standby's "conflict with recovery")
  '40P01', // deadlock_detected: this transaction was the victim
]);

/** Codes that mean the connection went away while a statement may have been running. */
const inDoubtCodes = new Set([
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  '57P01', // admin_shutdown: terminated by a fast shutdown (a Patroni demote, pg_ctl stop -m fast)
  '57P02', // crash_shutdown: another backend crashed
  '08000', // connection_exception
  '08003', // connection_does_not_exist
  '08006', // connection_failure
]);

const unsentMessages = [
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Cannot use a pool after calling end on the pool',
  // pg: the client was ended (the pool dropped it) before this statement was written to it.
  'Client was closed and is not queryable',
  // kysely: the store is closing (a gateway shutting down); nothing was sent.
  'driver has already been destroyed',
];
const inDoubtMessages = [
  'Connection terminated',
  'Query read timeout',
  'database ping timed out',
  'terminating connection due to',
  'server closed the connection unexpectedly',
];

/** What kind of store outage `e` shows, or null when it is not an outage (a refused statement, a bug). */
export function classifyStoreFailure(e: unknown): StoreFailure | null {
  if (isAppError(e)) return e.code === 'STORE_UNAVAILABLE' ? 'in-doubt' : null;
  const err = e as { code?: unknown; message?: unknown; cause?: unknown } | null;
  if (err === null || typeof err !== 'object') return null;
  const code = typeof err.code === 'string' ? err.code : '';
  if (unsentCodes.has(code)) return 'unsent';
  if (inDoubtCodes.has(code)) return 'in-doubt';
  const msg = typeof err.message === 'string' ? err.message : '';
  if (unsentMessages.some((m) => msg.includes(m))) return 'unsent';
  if (inDoubtMessages.some((m) => msg.includes(m))) return 'in-doubt';
  return null;
}

/** True when `e` means the database cannot be reached (rather than refusing a statement). */
export function isStoreUnavailable(e: unknown): boolean {
  return classifyStoreFailure(e) !== null;
}

/** Whether a failure of this kind may be retried for a statement of that kind. */
export function mayRetry(kind: StatementKind, failure: StoreFailure): boolean {
  return failure === 'unsent' || kind !== 'write';
}

export interface StoreRetryOptions {
  /** Retries stop once this much time has passed since the first attempt; 0 = never retry. */
  budgetMs: number;
  /** First pause between attempts; doubled each time, capped at `maxDelayMs`. */
  firstDelayMs?: number;
  maxDelayMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Called for each retry (metrics, logs). */
  onRetry?: (failure: StoreFailure, attempt: number, error: unknown) => void;
  /**
   * Gives up waiting this long (real time) after the first attempt began, even if an attempt is still
   * running: a server that went silent (a partition: no reset, no answer) would otherwise hold the
   * request for the pool's whole query timeout. The abandoned attempt's outcome is in doubt, so this
   * answers STORE_UNAVAILABLE whatever the kind. Unset: attempts are bounded only by the pool.
   */
  deadlineMs?: number;
}

export interface StoreRetry {
  /**
   * Runs one statement (or one transaction) under the rule: an outage error is retried with backoff
   * while the budget lasts and `mayRetry` allows it, and becomes AppError('STORE_UNAVAILABLE')
   * otherwise. Any other error passes through untouched.
   */
  run<T>(kind: StatementKind, fn: () => Promise<T>): Promise<T>;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export function createStoreRetry(options: StoreRetryOptions): StoreRetry {
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? defaultSleep;
  const firstDelay = options.firstDelayMs ?? 100;
  const maxDelay = options.maxDelayMs ?? 1000;
  return {
    async run<T>(kind: StatementKind, fn: () => Promise<T>): Promise<T> {
      const started = now();
      let delay = firstDelay;
      const deadline = options.deadlineMs === undefined ? null : stallTimer(options.deadlineMs);
      try {
        for (let attempt = 1; ; attempt++) {
          try {
            return await (deadline ? deadline.race(fn()) : fn());
          } catch (e) {
            if (isAppError(e)) throw e;
            if (e instanceof StoreStalledError) throw new AppError('STORE_UNAVAILABLE', { cause: e });
            const failure = classifyStoreFailure(e);
            if (failure === null) throw e;
            const left = options.budgetMs - (now() - started);
            if (!mayRetry(kind, failure) || left <= 0) {
              throw new AppError('STORE_UNAVAILABLE', { cause: e });
            }
            options.onRetry?.(failure, attempt, e);
            // Jitter spreads the retries of many requests that failed together.
            await sleep(Math.min(left, delay * (0.5 + Math.random() / 2)));
            delay = Math.min(delay * 2, maxDelay);
          }
        }
      } finally {
        deadline?.clear();
      }
    },
  };
}

/** An attempt still running at the run's deadline: the server stalled (no answer, no error). */
export class StoreStalledError extends Error {
  readonly code = 'STORE_STALLED';
  constructor(ms: number) {
    super(`the database did not answer within ${ms} ms`);
    this.name = 'StoreStalledError';
  }
}

function stallTimer(ms: number): { race<T>(p: Promise<T>): Promise<T>; clear(): void } {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    // Not unref'd: it is cleared as soon as the call settles, and a call waiting on it is work.
    timer = setTimeout(() => reject(new StoreStalledError(ms)), ms);
  });
  // Nobody may be racing it when it fires (between attempts): that is not an unhandled rejection.
  expired.catch(() => undefined);
  return {
    race<T>(p: Promise<T>): Promise<T> {
      // The abandoned attempt settles later (the pool's query timeout, or the server's late answer).
      p.catch(() => undefined);
      return Promise.race([p, expired]);
    },
    clear: () => clearTimeout(timer),
  };
}

/** No retries at all: every outage error becomes STORE_UNAVAILABLE at once. */
export const noStoreRetry: StoreRetry = createStoreRetry({ budgetMs: 0 });
