// The shape of a bandwidth result, as written to bench/results/<label>.json and read back by the report.
import type { MachineFacts } from '../report/result.js';
import type { PixelDiff } from './pixel-compare.js';

export interface SideCount {
  /** The gateway's count (see BandwidthResult.byteSource). */
  gatewayToViewer: number;
  gatewayFromViewer: number;
  /** Chromium's WebSocket frames (CDP). */
  browserReceived: number;
  browserSent: number;
}

export interface ScreenCheck {
  /** The canvas against the framebuffer of the last attempt. */
  diff: PixelDiff;
  /** The framebuffer read twice around the canvas read was the same (the desktop stood still). */
  framebufferStable: boolean;
  attempts: number;
}

export interface PhaseResult {
  id: string;
  label: string;
  /** Seconds the workload ran (measured around it). */
  seconds: number;
  pageHidden: boolean;
  /** Workload start → end of the workload. */
  active: SideCount;
  /** Workload start → the screen settled after it (the phase's whole cost, its final refresh included). */
  total: SideCount;
  /** total ÷ seconds, to the viewer, from the gateway's count: the figure of the report's tables. */
  kbps: number;
  /** active ÷ seconds (for the hidden tab: the rate while it was hidden). */
  activeKbps: number;
  /**
   * total ÷ the seconds it took to send: workload start until the last bytes before the screen settled
   * (the settle wait without its final quiet window). The rate the link carried over the phase.
   */
  sendingKbps: number;
  settled: boolean;
  settleSeconds: number;
  /** |gateway − browser| ÷ gateway for `total`, to the viewer. */
  sourceDeviation: number | null;
  screen: ScreenCheck | null;
  /** Every read of the phase found the browser's count caught up with the gateway's (else its notes say by how much). */
  browserCaughtUp: boolean;
  notes: string[];
}

export interface KnobUse {
  name: string;
  value: string;
  known: boolean;
  /** Only asked for when known (today's behaviour spelled out). */
  ifKnown: boolean;
}

export type SettingStatus = 'measured' | 'not-measured' | 'failed';

export interface SettingResult {
  id: string;
  label: string;
  description: string;
  status: SettingStatus;
  /** Why it was not measured, or what failed. */
  reason: string | null;
  knobs: KnobUse[];
  client: {
    requestedQuality: string | null;
    selectedQuality: string | null;
    presets: string[];
    scaling: string;
    levels: { quality: number; compression: number } | null;
    /** SetEncodings messages the harness rewrote to `levels`. */
    encodingsRewritten: number;
  };
  viewport: { width: number; height: number };
  desktop: { geometry: string | null; compositing: string | null };
  firstFrame: (SideCount & { seconds: number; settled: boolean }) | null;
  phases: PhaseResult[];
  officeKbps: number | null;
  sessionHourBytes: number | null;
  monthlyUsd: number | null;
  monthlyUsdWithCloudFront: number | null;
  /** Repository-relative path of the screenshot (taken mid-photo phase). */
  screenshot: string | null;
  seconds: number;
}

export interface BandwidthResult {
  label: string;
  command: string;
  options: Record<string, unknown>;
  machine: MachineFacts & { tigervnc: string; xfce: string; chromium: string; xdotool: string };
  startedAt: string;
  finishedAt: string;
  byteSource: string;
  officeWeights: Record<string, number>;
  settings: SettingResult[];
}
