// The shape of a benchmark result, as written to bench/results/*.json and read back by the report.
import type { LatencySummary } from '../lib/histogram.js';
import type { CoreUse } from '../lib/pinning.js';
import type { BarrierReport, ErrorCounts } from '../load/load-plan.js';
import type { StackName } from '../stacks/stack.js';
import type { ControlLoadReport } from '../load/control-load.js';
import type { LongTaskSummary } from '../../src/observability/long-tasks.js';

export interface MachineFacts {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  openssh: string;
  websockify: string;
  loadAverage: [number, number, number];
  /** Other processes' CPU use seen just before the run (the machine is shared): % of one core. */
  busyBeforeRunPercent: number;
  /**
   * kernel.sched_autogroup_enabled: with it on, each session (setsid) gets an equal share of a core
   * whatever its nice value, so other work at nice 19 still takes CPU from the run.
   */
  schedAutogroup?: boolean;
  date: string;
  gitCommit: string;
}

export interface StepResult {
  stack: StackName;
  users: number;
  profile: string;
  rampSeconds: number;
  holdSeconds: number;
  accounting: string;
  sessions: {
    attempted: number;
    ready: number;
    failed: number;
    liveAtWindowEnd: number;
    droppedDuringRun: number;
  };
  /** Failed or dropped sessions, failed API calls of the scenario, bytes lost: ÷ attempted sessions. */
  errorRate: number;
  /** Viewers that reached a first screen update ÷ WebSocket attempts (TCP connects for the floor). */
  wsSuccessRate: number;
  errors: ErrorCounts;
  closeCodes: ErrorCounts;
  setupMs: LatencySummary;
  rttMs: LatencySummary;
  /** rttMs minus the floor's at the same user count (filled in when the floor ran). */
  addedRttMs: { p50: number | null; p95: number | null; p99: number | null } | null;
  httpMs: Record<string, LatencySummary>;
  httpErrorRate: number | null;
  window: {
    seconds: number;
    bytesToViewers: number;
    bytesFromViewers: number;
    mbitPerSecond: number;
    perSessionKbitPerSecond: number;
    echoes: number;
    lostMarkers: number;
  };
  cpu: {
    gatewaySeconds: number;
    gatewayCores: number;
    gatewaySecondsPerGB: number | null;
    sshdSeconds: number | null;
    sshdSecondsPerGB: number | null;
    simulatorSeconds: number;
    loadGeneratorSeconds: number;
    loadGeneratorCores: number;
    /** The instance's desktops (fake Xvnc → socat) and scripts, apart from sshd; null without any. */
    desktopsSeconds?: number | null;
    /** The harness process itself (sampling /proc, driving the phases). */
    harnessSeconds?: number;
  };
  /** Each CPU's use over the hold window, from /proc/stat (every process on it, the kernel's too). */
  cores?: CoreUse[];
  /** `--pin`: which CPU the gateway had and which everything else had, and each group's affinity as read. */
  pinning?: { gatewayCpu: number; restCpu: number; affinity: Record<string, string | null> } | null;
  memory: {
    gatewayRssBeforeBytes: number;
    gatewayRssHoldBytes: number;
    gatewayRssPeakBytes: number;
    /** (RSS while holding − RSS before the first session) ÷ live sessions. */
    perSessionBytes: number | null;
    sshdRssHoldBytes: number | null;
    gatewayProcesses: number;
    stalled: {
      viewers: number;
      seconds: number;
      rssBeforeBytes: number;
      rssPeakBytes: number;
      perStalledSessionBytes: number | null;
      closedWhileStalled: number;
    } | null;
  };
  eventLoop: {
    gatewayLagP99Ms: number | null;
    gatewayLagMaxMs: number | null;
    /** Round trip of GET /api/health during the hold, from outside. */
    probeMs: LatencySummary | null;
    loadGeneratorLagP99Ms: number | null;
  };
  bytes: BarrierReport;
  simulator: Record<string, number>;
  gatewayCounters: Record<string, number> | null;
  cpuProfiles: string[];
  /** --mixed: what the control-plane load did during the hold. */
  controlPlane: ControlLoadReport | null;
  /**
   * --cpu-prof: the gateway's event-loop long tasks during the hold, by kind (one list per profiled
   * thread, main thread first), from observability/long-tasks.ts.
   */
  longTasks: {
    profile: string;
    overMs: number;
    windowSeconds: number;
    busySeconds: number;
    summary: LongTaskSummary[];
    timeByCategoryMs: [string, number][];
  }[];
  notes: string[];
}

export interface BenchResult {
  label: string;
  command: string;
  options: Record<string, unknown>;
  machine: MachineFacts;
  startedAt: string;
  finishedAt: string;
  steps: StepResult[];
  findMax: {
    stack: StackName;
    reached: number;
    brokeAt: number | null;
    brokenTargets: string[];
  }[];
}
