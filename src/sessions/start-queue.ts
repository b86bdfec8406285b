// Admission control for desktop starts (issue 9). A start costs an SSH login and a few seconds of shell on
// the instance, so a burst of connects must not start every desktop at once: at most `inFlight` starts run
// in this process, at most `inFlightPerInstance` of them on one instance, and up to `maxQueued` more wait
// their turn, in arrival order. Past that a connect is refused at once with 503 OVERLOADED and a
// Retry-After estimated from the queue and how long starts take, instead of failing after a minute.
//
// `maxWaitMs` bounds the whole answer, not just the line: a connect is let into the line only when its turn
// (the line ahead of it, at the pace starts have been finishing) plus its own start (as long as starts have
// been taking) can be expected within it, and a waiter leaves the line (the same answer) once its start
// could no longer finish in time. A start that then runs longer than starts have been taking does not hold
// its connect's answer: the session service answers at the bound and lets it go on (session.service.ts).
//
// A waiter whose instance is at its limit does not hold up a later one for another instance: a freed slot
// goes to the first waiter that may run.
//
// Turned-away connects are told to come back spread at the pace starts finish, not all at once: each
// refusal takes the next place in a line of return times — one per start slot's worth of time, in the
// process and on its instance — so a burst of N refusals is told to return over N × (start time ÷ slots)
// instead of all after the same few seconds (where they would meet a full queue again, and each retry
// would cost the loop a request, a sign-in check and database reads for another refusal). The line is
// capped at MAX_RETRY_AFTER_S ahead and drains by itself as time passes.
import { AppError } from '../errors/errors.js';

export interface StartQueueOptions {
  inFlight: number;
  inFlightPerInstance: number;
  maxQueued: number;
  maxWaitMs: number;
  /** The guess of a start's duration before any has finished (Retry-After), ms. Default 2000. */
  initialStartMs?: number;
  /** Milliseconds on a monotonic clock (the return times of refused connects); default performance.now. */
  now?: () => number;
}

export type StartRejection =
  | 'queue_full'
  | 'expected_wait'
  | 'queue_timeout'
  | 'client_gone'
  /** Answered at the bound while the connect still waited (its start, a lock, the store): see session.service.ts. */
  | 'answer_deadline';

export interface StartQueueHooks {
  /** A connect was turned away (or gave up) instead of being started. */
  onRejected?(reason: StartRejection): void;
}

interface Waiter {
  key: string;
  start: () => void;
}

/** Bounds on the Retry-After a refusal carries. */
const MIN_RETRY_AFTER_S = 1;
const MAX_RETRY_AFTER_S = 60;
/** Weight of the newest start in the running average of start durations. */
const EWMA_WEIGHT = 0.2;
/** Instances whose return line is remembered before the ones already past are forgotten. */
const RETRY_LINES_KEPT = 1024;

export class StartQueue {
  private running = 0;
  private readonly runningPerKey = new Map<string, number>();
  private readonly waiting: Waiter[] = [];
  private readonly waitingPerKey = new Map<string, number>();
  private averageStartMs: number;
  private readonly now: () => number;
  /** When the last refused connect was told to come back, in the process and per instance (ms, `now`). */
  private retryAt = -Infinity;
  private readonly retryAtPerKey = new Map<string, number>();

  constructor(
    private readonly options: StartQueueOptions,
    private readonly hooks: StartQueueHooks = {},
  ) {
    const { inFlight, inFlightPerInstance, maxQueued, maxWaitMs } = options;
    for (const [name, v, min] of [
      ['inFlight', inFlight, 1],
      ['inFlightPerInstance', inFlightPerInstance, 1],
      ['maxQueued', maxQueued, 0],
      ['maxWaitMs', maxWaitMs, 0],
    ] as const) {
      if (!Number.isInteger(v) || v < min)
        throw new Error(`StartQueue ${name} must be a whole number >= ${min}`);
    }
    this.averageStartMs = options.initialStartMs ?? 2_000;
    this.now = options.now ?? (() => performance.now());
  }

  /** Connects waiting for a slot (the queue-depth gauge). */
  get depth(): number {
    return this.waiting.length;
  }

  /** Starts running now in this process. */
  get inFlight(): number {
    return this.running;
  }

  /**
   * Runs `task` (a desktop start on the instance `key`) when a slot is free: at once, after waiting in
   * line, or not at all (OVERLOADED with `retryAfterSeconds`). An aborted `signal` (the client went away)
   * takes a waiter out of the line; a task already running is not interrupted. `budgetMs` is what is left
   * of the connect's answer bound (default `maxWaitMs`: the connect spent nothing before the queue).
   */
  async run<T>(
    key: string,
    task: () => Promise<T>,
    signal?: AbortSignal,
    budgetMs: number = this.options.maxWaitMs,
  ): Promise<T> {
    if (signal?.aborted) throw this.refuse('client_gone', key);
    if (!this.mayStart(key)) {
      if (this.waiting.length >= this.options.maxQueued) throw this.refuse('queue_full', key);
      // Its turn and then its own start must both fit in the bound.
      if (this.expectedWaitMs(key) + this.averageStartMs > budgetMs) throw this.refuse('expected_wait', key);
      await this.wait(key, signal, budgetMs - this.averageStartMs);
    } else {
      this.take(key);
    }
    const started = performance.now();
    try {
      return await task();
    } finally {
      const took = performance.now() - started;
      this.averageStartMs += EWMA_WEIGHT * (took - this.averageStartMs);
      this.release(key);
    }
  }

  /**
   * Seconds one more connect (for instance `key`) would wait for its turn now: the line ahead of it, at
   * the pace starts finish. (A refusal is told this or later: see `scheduleRetry`.)
   */
  retryAfterSeconds(key?: string): number {
    return toRetryAfter(this.expectedWaitMs(key));
  }

  /**
   * Seconds until a start that has run `elapsedMs` can be expected to finish, as long as starts have been
   * taking (at least 1: one already slower than that may finish any moment). The Retry-After of a connect
   * answered while its start goes on.
   */
  remainingStartSeconds(elapsedMs: number): number {
    return toRetryAfter(this.averageStartMs - elapsedMs);
  }

  /**
   * The Retry-After of a refusal: the next place in the line of return times — at least its turn's wait
   * now, and one start slot's worth of time (start time ÷ slots) after the previous refusal's, in the
   * process and on its instance — so the connects turned away come back at the pace starts can take them.
   */
  private scheduleRetry(key: string): number {
    const now = this.now();
    const latest = now + MAX_RETRY_AFTER_S * 1000;
    const { inFlight, inFlightPerInstance } = this.options;
    const waiting = this.waitingPerKey.get(key) ?? 0;
    const inProcess = Math.min(
      latest,
      Math.max(
        now + ((this.waiting.length + 1) / inFlight) * this.averageStartMs,
        this.retryAt + this.averageStartMs / inFlight,
      ),
    );
    const onInstance = Math.min(
      latest,
      Math.max(
        now + ((waiting + 1) / inFlightPerInstance) * this.averageStartMs,
        (this.retryAtPerKey.get(key) ?? -Infinity) + this.averageStartMs / inFlightPerInstance,
      ),
    );
    this.retryAt = inProcess;
    if (this.retryAtPerKey.size >= RETRY_LINES_KEPT && !this.retryAtPerKey.has(key)) {
      for (const [k, at] of this.retryAtPerKey) if (at <= now) this.retryAtPerKey.delete(k);
    }
    this.retryAtPerKey.set(key, onInstance);
    return toRetryAfter(Math.max(inProcess, onInstance) - now);
  }

  /**
   * How long one more connect would wait for a slot: the rounds of starts ahead of it in the process, or
   * on its instance if that is the narrower limit, each taking about as long as starts have been taking.
   */
  private expectedWaitMs(key?: string): number {
    const byProcess = (this.waiting.length + 1) / this.options.inFlight;
    const byInstance =
      key === undefined ? 0 : ((this.waitingPerKey.get(key) ?? 0) + 1) / this.options.inFlightPerInstance;
    return Math.max(byProcess, byInstance) * this.averageStartMs;
  }

  private mayStart(key: string): boolean {
    return (
      this.running < this.options.inFlight &&
      (this.runningPerKey.get(key) ?? 0) < this.options.inFlightPerInstance
    );
  }

  private take(key: string): void {
    this.running++;
    this.runningPerKey.set(key, (this.runningPerKey.get(key) ?? 0) + 1);
  }

  private release(key: string): void {
    this.running--;
    const n = (this.runningPerKey.get(key) ?? 1) - 1;
    if (n > 0) this.runningPerKey.set(key, n);
    else this.runningPerKey.delete(key);
    this.dispatch();
  }

  /** Hands free slots to the first waiters that may run (arrival order, skipping full instances). */
  private dispatch(): void {
    for (let i = 0; i < this.waiting.length && this.running < this.options.inFlight;) {
      const w = this.waiting[i]!;
      if (this.mayStart(w.key)) {
        this.unqueue(i);
        this.take(w.key);
        w.start();
      } else {
        i++;
      }
    }
  }

  /** Waits for a slot for at most `timeoutMs` (the bound minus the start still to come). */
  private wait(key: string, signal: AbortSignal | undefined, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const leave = (reason: StartRejection) => {
        const at = this.waiting.indexOf(waiter);
        if (at < 0) return;
        this.unqueue(at);
        cleanup();
        reject(this.refuse(reason, key));
      };
      const onAbort = () => leave('client_gone');
      const timer = setTimeout(() => leave('queue_timeout'), Math.max(0, timeoutMs));
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        key,
        start: () => {
          cleanup();
          resolve();
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
      this.waitingPerKey.set(key, (this.waitingPerKey.get(key) ?? 0) + 1);
    });
  }

  private unqueue(index: number): void {
    const [w] = this.waiting.splice(index, 1);
    const n = (this.waitingPerKey.get(w!.key) ?? 1) - 1;
    if (n > 0) this.waitingPerKey.set(w!.key, n);
    else this.waitingPerKey.delete(w!.key);
  }

  private refuse(reason: StartRejection, key: string): AppError {
    this.hooks.onRejected?.(reason);
    return new AppError('OVERLOADED', {
      message: 'Too many desktops are starting right now; retry shortly',
      // One that hung up will not come back: it takes no place in the line of return times.
      details: {
        retryAfterSeconds: reason === 'client_gone' ? this.retryAfterSeconds(key) : this.scheduleRetry(key),
      },
    });
  }
}

function toRetryAfter(ms: number): number {
  // Whole milliseconds first: a return time less the clock (`now + 4000 - now`) can come out as
  // 4000.0000000000005, which would round up to a second more than the wait.
  return Math.min(MAX_RETRY_AFTER_S, Math.max(MIN_RETRY_AFTER_S, Math.ceil(Math.round(ms) / 1000)));
}
