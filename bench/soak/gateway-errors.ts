// What the gateways logged at level error or worse around each 5xx the soak's clients were answered:
// the gateway logs live in the helper's data folder (test/helpers/gateway-process.ts, one file per
// gateway across its restarts) and are gone once the stack stops, so the soak reads them first. A 500's
// answer names its request id, which picks the gateway's own 'unhandled error' line exactly; every
// other line at level ≥ error from a little before to a little after the answer is kept beside it.
import type { FiveXx } from './soak-traffic.js';

/** pino's numeric levels: 50 error, 60 fatal. */
const ERROR_LEVEL = 50;
/** Lines from this long before an answer (the request may have run that long) to shortly after it. */
const BEFORE_MS = 15_000;
const AFTER_MS = 2_000;
/** Lines kept per 5xx at most (a failover can log a burst). */
const MAX_LINES = 12;

export interface GatewayErrorLine {
  gateway: string;
  /** Into the run (ms), as the 5xx's `atMs`. */
  atMs: number;
  msg: string;
  reqId: string | null;
  /** The line is the very request that was answered (its id is in the answer). */
  sameRequest: boolean;
  err: { type: string; code: string | null; message: string; stack: string } | null;
}

export interface FiveXxDiagnosis extends FiveXx {
  lines: GatewayErrorLine[];
}

interface ParsedLine {
  time: number;
  level: number;
  msg: string;
  reqId: string | null;
  err: GatewayErrorLine['err'];
}

function parseLine(text: string): ParsedLine | null {
  if (!text.startsWith('{')) return null;
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return null;
  }
  // The gateway's logger writes ISO times (observability/logger.ts); pino's default is epoch ms.
  const time = typeof o.time === 'string' ? Date.parse(o.time) : o.time;
  if (typeof time !== 'number' || Number.isNaN(time) || typeof o.level !== 'number') return null;
  const e = o.err as Record<string, unknown> | undefined;
  const str = (v: unknown) => (typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v));
  return {
    time,
    level: o.level,
    msg: str(o.msg),
    reqId: typeof o.reqId === 'string' ? o.reqId : null,
    err:
      e && typeof e === 'object'
        ? {
            type: str(e.type),
            code: typeof e.code === 'string' ? e.code : null,
            message: str(e.message),
            stack: str(e.stack).split('\n').slice(0, 12).join('\n'),
          }
        : null,
  };
}

/** The request id in a 500's message: `Internal error (request <id>)`. */
export function requestIdOf(message: string | undefined): string | null {
  return /\(request ([^)\s]+)\)/.exec(message ?? '')?.[1] ?? null;
}

/**
 * For each 5xx, the gateways' lines at level ≥ error near it (`t0`: the run's start, epoch ms), the
 * answered request's own line first. `logs`: each gateway's whole log text.
 */
export function diagnoseFiveXx(
  fiveXx: readonly FiveXx[],
  logs: readonly { gateway: string; text: string }[],
  t0: number,
): FiveXxDiagnosis[] {
  const errors: (ParsedLine & { gateway: string })[] = [];
  for (const { gateway, text } of logs) {
    for (const raw of text.split('\n')) {
      const line = parseLine(raw);
      if (line && line.level >= ERROR_LEVEL) errors.push({ ...line, gateway });
    }
  }
  return fiveXx.map((x) => {
    const reqId = requestIdOf(x.message);
    const at = t0 + x.atMs;
    const near = errors
      .filter(
        (l) => (reqId !== null && l.reqId === reqId) || (l.time >= at - BEFORE_MS && l.time <= at + AFTER_MS),
      )
      .map((l) => ({
        gateway: l.gateway,
        atMs: l.time - t0,
        msg: l.msg,
        reqId: l.reqId,
        sameRequest: reqId !== null && l.reqId === reqId,
        err: l.err,
      }))
      .sort(
        (a, b) =>
          Number(b.sameRequest) - Number(a.sameRequest) ||
          Math.abs(a.atMs - x.atMs) - Math.abs(b.atMs - x.atMs),
      );
    return { ...x, lines: near.slice(0, MAX_LINES) };
  });
}
