// A bounded, mergeable latency histogram: log buckets 2 % wide over microseconds. Load-generator
// processes record into it and send the JSON to the harness, which merges them; memory stays a few
// hundred buckets whatever the run length, and percentiles are exact to within a bucket (±2 %).

const GROWTH = 1.02;
const LOG_GROWTH = Math.log(GROWTH);

export interface HistogramJson {
  buckets: [number, number][];
  count: number;
  sum: number;
  min: number;
  max: number;
}

export class Histogram {
  private readonly buckets = new Map<number, number>();
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  /** Records a duration in milliseconds. */
  record(ms: number): void {
    const us = Math.max(1, ms * 1000);
    const i = Math.ceil(Math.log(us) / LOG_GROWTH);
    this.buckets.set(i, (this.buckets.get(i) ?? 0) + 1);
    this.count++;
    this.sum += ms;
    if (ms < this.min) this.min = ms;
    if (ms > this.max) this.max = ms;
  }

  /** The value at percentile p (0–100) in milliseconds; null when empty. */
  percentile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (const i of [...this.buckets.keys()].sort((a, b) => a - b)) {
      seen += this.buckets.get(i)!;
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, GROWTH ** i / 1000));
    }
    return this.max;
  }

  mean(): number | null {
    return this.count === 0 ? null : this.sum / this.count;
  }

  merge(other: HistogramJson): void {
    for (const [i, n] of other.buckets) this.buckets.set(i, (this.buckets.get(i) ?? 0) + n);
    this.count += other.count;
    this.sum += other.sum;
    if (other.count > 0) {
      this.min = Math.min(this.min, other.min);
      this.max = Math.max(this.max, other.max);
    }
  }

  reset(): void {
    this.buckets.clear();
    this.count = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = 0;
  }

  toJSON(): HistogramJson {
    return {
      buckets: [...this.buckets.entries()],
      count: this.count,
      sum: this.sum,
      min: this.min,
      max: this.max,
    };
  }

  static from(json: HistogramJson): Histogram {
    const h = new Histogram();
    h.merge(json);
    return h;
  }

  summary(): LatencySummary {
    return {
      count: this.count,
      p50: this.percentile(50),
      p95: this.percentile(95),
      p99: this.percentile(99),
      max: this.count === 0 ? null : this.max,
      mean: this.mean(),
    };
  }
}

export interface LatencySummary {
  count: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
}
