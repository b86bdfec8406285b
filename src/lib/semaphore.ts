// At most `limit` tasks at once; up to `maxQueued` more wait their turn in arrival order, and past that a
// caller is refused at once with OVERLOADED (a flood costs a bounded queue, not unbounded waiting).
import { AppError } from '../errors/errors.js';

export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly maxQueued: number,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error('Semaphore limit must be a whole number >= 1');
    if (!Number.isInteger(maxQueued) || maxQueued < 0) throw new Error('Semaphore maxQueued must be >= 0');
  }

  get running(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.limit) {
      this.active++;
    } else {
      if (this.waiting.length >= this.maxQueued) {
        throw new AppError('OVERLOADED', { details: { retryAfterSeconds: 1 } });
      }
      // The slot is handed over by the task that finishes (`active` stays as it is).
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
