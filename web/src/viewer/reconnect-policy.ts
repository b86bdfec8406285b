// When the viewer's WebSocket closes: what the close code and reason mean (src/relay/close-codes.ts on
// the gateway), in words a person can act on, whether trying again can help, and when to try. Pure,
// with an injected clock and random source, so the schedule is tested without waiting.
//
// Two kinds of retry: asking the gateway for a fresh ticket is cheap and not rate limited separately,
// so while the gateway is down (a restart) it is retried after 1, 2, 3 and then every 5 s (a busy
// gateway's Retry-After wins, see lib/retry-after.ts); opening a WebSocket is limited
// to 10 a minute per user by the gateway, so those attempts back off exponentially and never exceed a
// budget below that limit, however often the connection flaps.

export type CloseKind = 'ended' | 'signed-out' | 'reconnect' | 'fatal';

/** What a closed viewer socket means: whether to try again, and the sentence the person reads. */
export interface CloseOutcome {
  kind: CloseKind;
  message: string;
}

/** Close codes the gateway uses (mirrors src/relay/close-codes.ts). */
export const CloseCode = {
  SESSION_ENDED: 4000,
  SIGNED_OUT: 4001,
  SHARE_REVOKED: 4002,
  VIEWERS_FULL: 4003,
  RECONNECT: 4010,
  STALLED: 4011,
  DESKTOP_UNREACHABLE: 4012,
  PEER_TIMEOUT: 4013,
} as const;

/** Codes that say retrying the same thing cannot help (a protocol or payload the gateway refused). */
const FATAL = new Set([1002, 1003, 1007, 1009]);

export function classifyClose(code: number, reason = ''): CloseKind {
  return describeClose(code, reason).kind;
}

const DROPPED = 'The connection dropped. Reconnecting to the same desktop…';

/**
 * 4012 (the desktop could not be reached) carries the gateway's error code as its reason. Some of
 * those will not heal by themselves: retrying for 90 s only hides them (issue 14 point 6).
 */
const DESKTOP_UNREACHABLE_REASONS: Record<string, CloseOutcome> = {
  SSH_AUTH_FAILED: {
    kind: 'fatal',
    message:
      'The instance refused the SSH login. Check the SSH user and its password or key (Edit on the Instances page), then try again.',
  },
  HOST_KEY_MISMATCH: {
    kind: 'fatal',
    message:
      'The instance’s SSH host key changed since it was pinned, so CloudDesk will not connect. Run Test connection on the Instances page to compare the fingerprints and decide.',
  },
  VNC_SERVER_MISSING: {
    kind: 'fatal',
    message:
      'The instance has no VNC server any more. Install it there (sudo apt install tigervnc-standalone-server), then connect again.',
  },
  DESKTOP_ENVIRONMENT_MISSING: {
    kind: 'fatal',
    message:
      'This desktop environment is no longer installed on the instance. Install it again, or connect with another one.',
  },
  INSTANCE_ADDRESS_FORBIDDEN: {
    kind: 'fatal',
    message: 'CloudDesk no longer allows connections to this instance’s address. Ask your administrator.',
  },
  INSTANCE_NOT_FOUND: { kind: 'ended', message: 'This instance was deleted, so its session has ended.' },
  SESSION_NOT_FOUND: { kind: 'ended', message: 'This session has ended.' },
  SSH_UNREACHABLE: {
    kind: 'reconnect',
    message: 'The instance cannot be reached over SSH right now. Retrying…',
  },
  SSH_TIMEOUT: { kind: 'reconnect', message: 'The instance did not answer in time. Retrying…' },
};

export function describeClose(code: number, reason = ''): CloseOutcome {
  switch (code) {
    case CloseCode.SESSION_ENDED:
      return { kind: 'ended', message: 'This session has ended.' };
    case CloseCode.SIGNED_OUT:
      return { kind: 'signed-out', message: 'You were signed out.' };
    case CloseCode.SHARE_REVOKED:
      return {
        kind: 'ended',
        message:
          reason === 'share expired'
            ? 'This share link has expired.'
            : reason === 'removed by the owner'
              ? 'The owner ended your view of this desktop.'
              : 'The owner stopped sharing this desktop.',
      };
    case CloseCode.VIEWERS_FULL:
      return {
        kind: 'ended',
        message: 'This desktop has as many viewers as it may have. Try again later.',
      };
    case CloseCode.RECONNECT:
      return { kind: 'reconnect', message: 'CloudDesk is restarting. Reconnecting to the same desktop…' };
    case CloseCode.STALLED:
      return {
        kind: 'reconnect',
        message: 'This browser fell behind the desktop’s updates (a slow or stalled network). Reconnecting…',
      };
    case CloseCode.PEER_TIMEOUT:
      return { kind: 'reconnect', message: 'The connection stopped answering. Reconnecting…' };
    case CloseCode.DESKTOP_UNREACHABLE:
      return (
        DESKTOP_UNREACHABLE_REASONS[reason] ?? {
          kind: 'reconnect',
          message: 'The connection to the desktop closed. Reconnecting…',
        }
      );
    default:
      if (FATAL.has(code)) {
        return {
          kind: 'fatal',
          message: `CloudDesk refused what this page sent (code ${code}${reason ? `: ${reason}` : ''}). Try again; if it keeps happening, reload the page.`,
        };
      }
      // 1001 (going away), 1006 (dropped, or the upgrade was refused — the browser cannot tell us
      // which), 1011 and anything unknown: a fresh ticket will tell whether the session still exists.
      return { kind: 'reconnect', message: DROPPED };
  }
}

export interface ReconnectOptions {
  /** Stop trying after this long without a working connection. */
  giveUpAfterMs: number;
  /** Delays before successive WebSocket attempts within one outage; the last repeats. */
  backoffMs: readonly number[];
  /** ± this fraction of random spread on each delay, so many viewers do not retry in lockstep. */
  jitter: number;
  /**
   * Delays between ticket requests while the gateway does not answer (a restart); the last repeats.
   * Each failed request is a console error in the browser, so they back off too.
   */
  ticketRetryMs: readonly number[];
  /** At most this many WebSocket opens in any `windowMs` (the gateway allows 10 a minute). */
  maxOpensPerWindow: number;
  windowMs: number;
  /** A connection that lasted this long counts as healthy: the next outage starts a fresh backoff. */
  stableAfterMs: number;
}

export const defaultReconnectOptions: ReconnectOptions = {
  giveUpAfterMs: 90_000,
  backoffMs: [300, 1_000, 2_000, 4_000, 8_000, 15_000],
  jitter: 0.2,
  ticketRetryMs: [1_000, 2_000, 3_000, 5_000],
  maxOpensPerWindow: 8,
  windowMs: 60_000,
  stableAfterMs: 30_000,
};

export class ReconnectSchedule {
  private readonly opens: number[] = [];
  private attempt = 0;
  private outageOpens = 0;
  private outageStartedAt: number | null = null;
  private connectedAt: number | null = null;

  constructor(
    private readonly now: () => number,
    private readonly random: () => number = Math.random,
    private readonly options: ReconnectOptions = defaultReconnectOptions,
  ) {}

  /** A WebSocket is being opened now. */
  opened(): void {
    const t = this.now();
    this.opens.push(t);
    this.attempt += 1;
    this.outageOpens += 1;
    while (this.opens.length > 0 && this.opens[0]! <= t - this.options.windowMs) this.opens.shift();
  }

  /** The desktop answered (RFB handshake done): the outage is over. */
  connected(): void {
    this.connectedAt = this.now();
    this.outageStartedAt = null;
    this.outageOpens = 0;
  }

  /** The connection was lost (or an attempt failed). */
  dropped(): void {
    const t = this.now();
    if (this.connectedAt !== null && t - this.connectedAt >= this.options.stableAfterMs) this.attempt = 0;
    this.connectedAt = null;
    this.outageStartedAt ??= t;
  }

  /** Start over (the person pressed "Try again" after we gave up). */
  reset(): void {
    this.attempt = 0;
    this.outageOpens = 0;
    this.outageStartedAt = null;
    this.connectedAt = null;
  }

  get giveUpAfterMs(): number {
    return this.options.giveUpAfterMs;
  }

  /** How many WebSocket attempts the current outage has made so far. */
  get attempts(): number {
    return this.outageOpens;
  }

  /** Whether the current outage has lasted past the give-up time. */
  expired(): boolean {
    return this.outageStartedAt !== null && this.now() - this.outageStartedAt >= this.options.giveUpAfterMs;
  }

  /** Milliseconds left before giving up (for "trying for another 40 s"). */
  remainingMs(): number {
    if (this.outageStartedAt === null) return this.options.giveUpAfterMs;
    return Math.max(0, this.options.giveUpAfterMs - (this.now() - this.outageStartedAt));
  }

  /** Delay before the next WebSocket attempt: the backoff step, or longer if the budget is spent. */
  nextOpenDelay(): number {
    const { backoffMs, jitter } = this.options;
    const base = backoffMs[Math.min(this.attempt, backoffMs.length - 1)] ?? 1_000;
    const spread = base * jitter * (this.random() * 2 - 1);
    const backoff = Math.max(0, Math.round(base + spread));
    return Math.max(backoff, this.budgetWaitMs());
  }

  /** Delay before ticket request number `failures + 1` of this outage (`failures` ≥ 1 failed so far). */
  ticketRetryDelay(failures: number): number {
    const steps = this.options.ticketRetryMs;
    const base = steps[Math.min(Math.max(failures - 1, 0), steps.length - 1)] ?? 1_000;
    return Math.round(base * (1 + this.options.jitter * (this.random() * 2 - 1)));
  }

  /** Time until another open fits in the sliding window. */
  private budgetWaitMs(): number {
    const t = this.now();
    const recent = this.opens.filter((o) => o > t - this.options.windowMs);
    if (recent.length < this.options.maxOpensPerWindow) return 0;
    const oldestThatMustExpire = recent[recent.length - this.options.maxOpensPerWindow]!;
    return oldestThatMustExpire + this.options.windowMs - t + 1;
  }
}
