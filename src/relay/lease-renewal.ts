// Renewing every viewer's lease in the coordinator (Redis in a cluster), for a process that may hold
// 10,000 viewers. One round trip after another, as this used to be, costs a round of 10,000 × the
// store's round trip (a few seconds at 0.3 ms, past the 15 s renewal period on a busy machine, when
// rounds then overlapped and the leases at the end of the list lapsed); and all at once would put
// 10,000 scripts and their promises in flight in one burst. So a round keeps a bounded number in
// flight, and a round that is still going when the next is due is not joined by a second one.

export interface RenewalRound {
  renewed: number;
  /** Items left out: they went away during the round (`stillWanted` said no), or the round stopped. */
  skipped: number;
  /** The first failure; the round stops there (the store is down: the next round tries again). */
  error: unknown;
}

export class LeaseRenewal<T> {
  private running: Promise<RenewalRound> | null = null;

  constructor(
    private readonly renew: (item: T) => Promise<void>,
    private readonly options: {
      /** Renewals in flight at once. */
      concurrency: number;
      /** Asked just before each renewal: false = the item went away meanwhile (a viewer that left). */
      stillWanted?: (item: T) => boolean;
    },
  ) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1)
      throw new Error('lease renewal concurrency must be a whole number of at least 1');
  }

  /** True while a round runs. */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Starts a round over `items` (a snapshot is taken); answers null if the last round still runs. */
  round(items: Iterable<T>): Promise<RenewalRound> | null {
    if (this.running) return null;
    const list = [...items];
    const run = this.runRound(list).finally(() => {
      this.running = null;
    });
    this.running = run;
    return run;
  }

  private async runRound(list: T[]): Promise<RenewalRound> {
    const result: RenewalRound = { renewed: 0, skipped: 0, error: undefined };
    let next = 0;
    let failed = false;
    const lane = async () => {
      while (next < list.length) {
        const item = list[next++]!;
        if (failed || (this.options.stillWanted && !this.options.stillWanted(item))) {
          result.skipped++;
          continue;
        }
        try {
          await this.renew(item);
          result.renewed++;
        } catch (e) {
          result.skipped++;
          if (!failed) {
            failed = true;
            result.error = e;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, list.length) }, lane));
    return result;
  }
}
