// The scaling plan's cost model (section 7.2), so each setting's measured rate becomes a monthly bill
// on the plan's own assumptions: 1000 concurrent sessions around the clock for 30 days, egress at
// $0.09/GB (decimal GB, as the plan's "648 TB/month" at 2 Mbit/s), and — for the figure the plan quotes,
// $35,000 — its 40 % CloudFront reduction on top.
import { officeWeights } from './phases.js';

export const PLAN = {
  concurrentSessions: 1000,
  hoursPerMonth: 30 * 24,
  usdPerGB: 0.09,
  /** "With CloudFront: ~$35,000/month (40% reduction)". */
  cloudFrontFactor: 0.6,
  /** The plan's assumed rate per session, and what it made of it. */
  assumedKbps: 2000,
  quotedMonthlyUsd: 35_000,
  rawMonthlyUsd: 58_320,
} as const;

export function bytesPerSessionHour(kbps: number): number {
  return (kbps * 1000 * 3600) / 8;
}

/** $ per month for the plan's 1000 concurrent sessions at `kbps` each, at $0.09/GB. */
export function monthlyUsd(kbps: number): number {
  const gb = (bytesPerSessionHour(kbps) * PLAN.hoursPerMonth * PLAN.concurrentSessions) / 1e9;
  return gb * PLAN.usdPerGB;
}

/** The same after the plan's 40 % CloudFront reduction: comparable with its $35,000. */
export function monthlyUsdWithCloudFront(kbps: number): number {
  return monthlyUsd(kbps) * PLAN.cloudFrontFactor;
}

/**
 * The office minute from per-phase rates; null when a weighted phase was not measured (a partial
 * office minute would look cheaper than it is).
 */
export function officeKbps(kbpsByPhase: Record<string, number | null | undefined>): number | null {
  let sum = 0;
  for (const [phase, weight] of Object.entries(officeWeights)) {
    const v = kbpsByPhase[phase];
    if (v === null || v === undefined) return null;
    sum += weight * v;
  }
  return sum;
}
