// The messages between the harness and its load-generator processes, and what each stack's viewers
// connect to. The harness drives every phase; a worker only acts on a command and answers it.
import type { HistogramJson } from '../lib/histogram.js';

/**
 * How long one API call is asked again while the gateway answers 503 OVERLOADED/BUSY (after each
 * Retry-After), as a person would keep the page open; the default setup limit covers it (options.ts).
 */
export const BUSY_RETRY_BUDGET_MS = 120_000;

export type StackTarget =
  /** The floor: raw TCP straight to the simulator. */
  | { kind: 'tcp'; host: string; port: number }
  /** A WebSocket that carries raw RFB (websockify). */
  | { kind: 'websocket'; url: string }
  /** The gateway: sign in, list instances, connect, then its WebSocket. */
  | {
      kind: 'clouddesk';
      baseUrl: string;
      desktopEnvironment: string;
      /** Where the --mixed control-plane load goes when it has a process of its own (--control-process). */
      controlBaseUrl?: string;
      /** Where the viewers' WebSockets go when a relay process serves them (--roles); else baseUrl. */
      viewerBaseUrl?: string;
      /** What the virtual users register as their instance in the prepare phase: user i takes i mod n. */
      instances: BenchInstance[];
    };

export interface BenchInstance {
  host: string;
  port: number;
  username: string;
  privateKey: string;
  hostKeyFingerprint: string;
}

export interface VirtualUserSpec {
  /** Global index across workers: decides when in the ramp it starts. */
  index: number;
  /** The account's; users that share an account (--sessions-per-account) share the email and its sign-in. */
  email: string;
  stall: boolean;
}

export interface WorkerPlan {
  target: StackTarget;
  users: VirtualUserSpec[];
  totalUsers: number;
  password: string;
  rampMs: number;
  echoIntervalMs: number;
  setupTimeoutMs: number;
}

export type WorkerCommand =
  | { cmd: 'prepare'; plan: WorkerPlan }
  | { cmd: 'ramp'; startAt: number }
  | { cmd: 'window-start' }
  | { cmd: 'window-end' }
  | { cmd: 'stall' }
  | { cmd: 'unstall' }
  | { cmd: 'barrier'; timeoutMs: number }
  | { cmd: 'close' };

export interface ErrorCounts {
  [code: string]: number;
}

export interface RampReport {
  attempted: number;
  ready: number;
  failed: number;
  wsAttempts: number;
  wsOpened: number;
  setup: HistogramJson;
  http: Record<string, HistogramJson>;
  httpRequests: number;
  httpErrors: number;
  errors: ErrorCounts;
}

export interface WindowReport {
  ms: number;
  bytesIn: number;
  bytesOut: number;
  rtt: HistogramJson;
  echoes: number;
  lostMarkers: number;
  live: number;
  dropped: number;
}

export interface StallReport {
  stalled: number;
  /** Stalled viewers that the other side closed while stalled (a stall deadline doing its job). */
  closedWhileStalled: number;
  closeCodes: ErrorCounts;
}

export interface BarrierReport {
  live: number;
  exact: number;
  mismatched: number;
  timedOut: number;
  bytesIn: number;
  bytesOut: number;
  serverSent: number;
  firstMismatch: string | null;
}

export interface CloseReport {
  httpRequests: number;
  httpErrors: number;
  http: Record<string, HistogramJson>;
  errors: ErrorCounts;
  droppedDuringRun: number;
  closeCodes: ErrorCounts;
  cpuSeconds: number;
  eventLoopDelayP99Ms: number | null;
  totalBytesIn: number;
  totalBytesOut: number;
}

export type WorkerReply =
  | { reply: 'prepare'; prepared: number; errors: ErrorCounts }
  | { reply: 'ramp'; report: RampReport }
  | { reply: 'window-start' }
  | { reply: 'window-end'; report: WindowReport }
  | { reply: 'stall'; stalled: number }
  | { reply: 'unstall'; report: StallReport }
  | { reply: 'barrier'; report: BarrierReport }
  | { reply: 'close'; report: CloseReport }
  | { reply: 'error'; message: string };
