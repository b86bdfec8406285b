// A user's usage (issue 13): bytes to and from their viewers and viewer-seconds, per instance and per
// UTC day, over a bounded range of days. The rows come from the daily table the activity flush adds to;
// this only validates the range and adds them up.
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { DailyUsageRow, UsageRepository } from '../store/usage.repository.js';

export interface UsageTotals {
  bytesToViewer: number;
  bytesFromViewer: number;
  viewerSeconds: number;
}

export interface UsageReport {
  from: string;
  to: string;
  total: UsageTotals;
  instances: (UsageTotals & { instanceId: string; instanceName: string | null })[];
  days: (UsageTotals & { day: string; instanceId: string; instanceName: string | null })[];
}

export interface UsageServiceOptions {
  /** Longest range one request may ask for, in days (inclusive of both ends). */
  maxRangeDays: number;
  /** The range when `from` is not given: this many days ending `to`. */
  defaultRangeDays: number;
}

const DAY_MS = 86_400_000;
const dayPattern = /^(\d{4})-(\d{2})-(\d{2})$/;

export class UsageService {
  constructor(
    private readonly deps: { usage: Pick<UsageRepository, 'listDaily'>; clock: Clock },
    private readonly options: UsageServiceOptions = { maxRangeDays: 366, defaultRangeDays: 30 },
  ) {}

  /** `from`/`to`: UTC days (YYYY-MM-DD), inclusive; `to` defaults to today, `from` to 30 days before it. */
  async report(userId: string, range: { from?: string; to?: string }): Promise<UsageReport> {
    const to = range.to === undefined ? startOfUtcDay(this.deps.clock.now()) : parseDay(range.to);
    const from =
      range.from === undefined ? to - (this.options.defaultRangeDays - 1) * DAY_MS : parseDay(range.from);
    if (from > to) throw new AppError('USAGE_RANGE_INVALID', { message: '`from` is after `to`' });
    if ((to - from) / DAY_MS + 1 > this.options.maxRangeDays) {
      throw new AppError('USAGE_RANGE_TOO_LONG', { details: { maxDays: this.options.maxRangeDays } });
    }
    const fromDay = formatDay(from);
    const toDay = formatDay(to);
    const rows = await this.deps.usage.listDaily(userId, fromDay, toDay);
    return { from: fromDay, to: toDay, ...summarise(rows) };
  }
}

function summarise(rows: DailyUsageRow[]): Omit<UsageReport, 'from' | 'to'> {
  const total = zero();
  const byInstance = new Map<string, UsageTotals & { instanceId: string; instanceName: string | null }>();
  for (const r of rows) {
    add(total, r);
    let instance = byInstance.get(r.instanceId);
    if (!instance)
      byInstance.set(r.instanceId, (instance = { instanceId: r.instanceId, instanceName: null, ...zero() }));
    instance.instanceName ??= r.instanceName;
    add(instance, r);
  }
  return {
    total: present(total),
    instances: [...byInstance.values()].map(present),
    days: rows.map((r) => present({ ...r })),
  };
}

function zero(): UsageTotals {
  return { bytesToViewer: 0, bytesFromViewer: 0, viewerSeconds: 0 };
}

function add(into: UsageTotals, r: UsageTotals): void {
  into.bytesToViewer += r.bytesToViewer;
  into.bytesFromViewer += r.bytesFromViewer;
  into.viewerSeconds += r.viewerSeconds;
}

/** Whole seconds for the answer (they are summed unrounded). */
function present<T extends UsageTotals>(t: T): T {
  return { ...t, viewerSeconds: Math.round(t.viewerSeconds) };
}

function parseDay(text: string): number {
  const m = dayPattern.exec(text);
  const t = m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : NaN;
  // Date.UTC rolls 2026-02-30 over into March: a day that does not print back the same is not a day.
  if (!m || Number.isNaN(t) || formatDay(t) !== text) {
    throw new AppError('USAGE_RANGE_INVALID', {
      message: `"${text.slice(0, 10)}" is not a calendar day (YYYY-MM-DD)`,
    });
  }
  return t;
}

function startOfUtcDay(at: number): number {
  return at - (((at % DAY_MS) + DAY_MS) % DAY_MS);
}

function formatDay(t: number): string {
  return new Date(t).toISOString().slice(0, 10);
}
