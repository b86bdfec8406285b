// A write-behind buffer: entries noted in memory and written in batches, with one rule for failures
// shared by every buffer (session activity and usage today, the audit trail beside them):
//
// - The store is unavailable (store-retry.ts says it is an outage): the batch goes back into the buffer,
//   merged with what arrived meanwhile, and is written once the store answers again. No attempt limit:
//   an outage is waited out. One warning when the outage starts, one line when the rows are written.
// - The store refuses the batch for another reason (a constraint, a bug): it is kept for
//   `maxRefusals` flushes, then logged at error level and dropped, so one bad batch cannot block the
//   buffer for ever.
// - Memory is bounded: past `maxEntries` held entries, new keys are dropped and counted (a key that
//   is already held still merges). Only a very long outage gets there.
//
// Flushes run one after another, so a batch merged back after a failure is part of the next one.
import type { Logger } from '../observability/logger.js';
import { isStoreUnavailable } from './store-retry.js';

export interface WriteBehindOptions<T> {
  /** Names the buffer in log lines ('session activity', 'audit'). */
  name: string;
  /** Entries with the same key are merged into one (a key per entry keeps them all). */
  key(entry: T): string;
  /** Folds `next` into `held` (default: `next` replaces it). Must not lose what `held` had. */
  merge?(held: T, next: T): T;
  /** Writes one batch; throws to keep it. */
  write(batch: T[]): Promise<void>;
  logger: Logger;
  /** Entries held at most (default 100 000). */
  maxEntries?: number;
  /** Flushes a refused (non-outage) batch is kept for (default 3). */
  maxRefusals?: number;
  /** Counts entries dropped: 'overflow' (memory bound) or 'refused' (the store refused them). */
  onDropped?(drop: { buffer: string; reason: 'overflow' | 'refused'; count: number }): void;
}

export class WriteBehindBuffer<T> {
  private held = new Map<string, T>();
  private inFlight: Promise<void> = Promise.resolve();
  private refusals = 0;
  private outageSince: number | null = null;
  private readonly maxEntries: number;
  private readonly maxRefusals: number;

  constructor(private readonly options: WriteBehindOptions<T>) {
    this.maxEntries = options.maxEntries ?? 100_000;
    this.maxRefusals = options.maxRefusals ?? 3;
  }

  add(entry: T): void {
    const key = this.options.key(entry);
    const held = this.held.get(key);
    if (held !== undefined) {
      this.held.set(key, this.options.merge ? this.options.merge(held, entry) : entry);
      return;
    }
    if (this.held.size >= this.maxEntries) {
      this.options.onDropped?.({ buffer: this.options.name, reason: 'overflow', count: 1 });
      return;
    }
    this.held.set(key, entry);
  }

  /** Entries noted and not yet written (a batch being written is not among them). */
  get size(): number {
    return this.held.size;
  }

  pending(): T[] {
    return [...this.held.values()];
  }

  get(key: string): T | undefined {
    return this.held.get(key);
  }

  /** True while the last flush failed because the store was unavailable. */
  get waitingForStore(): boolean {
    return this.outageSince !== null;
  }

  /** Writes what is held; never rejects (a failure keeps or drops the batch as the header says). */
  flush(): Promise<void> {
    const run = this.inFlight.then(() => this.writeBatch());
    this.inFlight = run;
    return run;
  }

  private async writeBatch(): Promise<void> {
    if (this.held.size === 0) return;
    const batch = this.held;
    this.held = new Map();
    const { logger, name } = this.options;
    try {
      await this.options.write([...batch.values()]);
      if (this.outageSince !== null) {
        logger.info(
          { buffer: name, entries: batch.size, outageMs: Date.now() - this.outageSince },
          `${name}: the store is back; held entries written`,
        );
      }
      this.outageSince = null;
      this.refusals = 0;
    } catch (e) {
      if (isStoreUnavailable(e)) {
        if (this.outageSince === null) {
          this.outageSince = Date.now();
          logger.warn(
            { err: e, buffer: name, entries: batch.size },
            `${name}: store unavailable; holding entries`,
          );
        }
        this.putBack(batch);
        return;
      }
      this.refusals++;
      if (this.refusals < this.maxRefusals) {
        logger.warn(
          { err: e, buffer: name, entries: batch.size, refusals: this.refusals },
          `${name}: write refused; will retry`,
        );
        this.putBack(batch);
        return;
      }
      this.refusals = 0;
      logger.error(
        { err: e, buffer: name, dropped: batch.size, entries: [...batch.values()].slice(0, 20) },
        `${name}: write refused ${this.maxRefusals} times; batch dropped`,
      );
      this.options.onDropped?.({ buffer: name, reason: 'refused', count: batch.size });
    }
  }

  /** The failed batch first, then what arrived while it was written, merged per key. */
  private putBack(batch: Map<string, T>): void {
    const newer = this.held;
    this.held = batch;
    for (const entry of newer.values()) this.add(entry);
  }
}
