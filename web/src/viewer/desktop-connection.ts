// One viewer's link to a desktop: the WebSocket (opened here so its close code and reason are known),
// noVNC's RFB on top of it, automatic reconnection with fresh tickets, the link statistics, the
// Automatic quality preset, and pausing updates while the page is hidden. The page that shows it
// (views/desktop.view.ts) only renders the states this reports.
import RFB from '@novnc/novnc';
import { ApiError, describeError } from '../api/api-error.js';
import type { Scaling } from '../lib/prefs.js';
import { busyMessage, busyRetryDelayMs, isBusy } from '../lib/retry-after.js';
import {
  automaticLevels,
  automaticTier,
  ThroughputEstimator,
  type AutomaticTier,
} from './automatic-quality.js';
import { sendCombo, type KeyCombo } from './key-combos.js';
import { RateMeter, RoundTripMeter, probeMessage } from './link-stats.js';
import { fixedPresets, type QualityName, type QualitySettings } from './quality.js';
import { describeClose, ReconnectSchedule } from './reconnect-policy.js';
import { keysymsFor, MAX_TYPED_CHARACTERS } from './typed-text.js';
import { UpdatePause } from './update-pause.js';

export type ViewerState =
  | { kind: 'connecting' }
  | { kind: 'connected' }
  | { kind: 'reconnecting'; attempt: number; remainingMs: number; detail: string }
  | { kind: 'ended'; message: string }
  | { kind: 'signed-out'; message: string }
  | { kind: 'failed'; message: string };

/** The status line's figures; null while there is no working connection (nothing to measure). */
export interface LinkStats {
  downBitsPerSecond: number | null;
  upBitsPerSecond: number | null;
  rttMs: number | null;
  width: number;
  height: number;
  /** What the Automatic preset picked (null with a fixed preset or while disconnected). */
  automatic: QualitySettings | null;
  /** Updates are paused because the page is hidden. */
  paused: boolean;
}

export interface ViewerSettings {
  scaling: Scaling;
  quality: QualityName;
  viewOnly: boolean;
}

export type TypeResult = 'typing' | 'too-long' | 'not-connected';

export interface DesktopConnectionDeps {
  /** Where noVNC draws. */
  target: HTMLElement;
  /** Where the last frame stays visible (dimmed) while reconnecting, instead of a black hole. */
  ghost: HTMLElement;
  sessionId: string;
  tickets: { ticket(sessionId: string): Promise<{ websocketUrl: string }> };
  settings: ViewerSettings;
  onState(state: ViewerState): void;
  onClipboard(text: string): void;
  onStats(stats: LinkStats): void;
  onDesktopName?(name: string): void;
  now?: () => number;
  random?: () => number;
}

const STATS_INTERVAL_MS = 1_000;
const PROBE_EVERY_MS = 2_000;
/** Probe only when the desktop has been quiet this long, so the answer is ours and not a screen update. */
const PROBE_QUIET_MS = 150;
/** Key presses sent per task when typing text, so a long text does not hold up the page. */
const KEYS_PER_TASK = 40;

export class DesktopConnection {
  private rfb: RFB | null = null;
  private socket: WebSocket | null = null;
  private screen: Element | null = null;
  private generation = 0;
  private stopped = false;
  private readonly schedule: ReconnectSchedule;
  private readonly down = new RateMeter();
  private readonly up = new RateMeter();
  private readonly rtt = new RoundTripMeter();
  private readonly throughput = new ThroughputEstimator();
  private readonly pause = new UpdatePause();
  private tier: AutomaticTier | null = null;
  private lastInboundAt = 0;
  private lastProbeAt = 0;
  private statsTimer: number | undefined;
  private wakeUp: (() => void) | null = null;
  private sleepTimer: number | undefined;
  private settings: ViewerSettings;
  private connectedNow = false;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly onVisibility = () => this.applyVisibility();

  constructor(private readonly deps: DesktopConnectionDeps) {
    this.now = deps.now ?? (() => performance.now());
    this.random = deps.random ?? Math.random;
    this.schedule = new ReconnectSchedule(this.now, this.random);
    this.settings = { ...deps.settings };
  }

  get connected(): boolean {
    return this.connectedNow;
  }

  /** Starts with a ticket already in hand (just connected), or asks for one. */
  start(websocketUrl?: string): void {
    this.stopped = false;
    this.statsTimer ??= window.setInterval(() => this.tickStats(), STATS_INTERVAL_MS);
    document.addEventListener('visibilitychange', this.onVisibility);
    this.deps.onState({ kind: 'connecting' });
    if (websocketUrl) {
      this.schedule.opened();
      this.open(websocketUrl);
    } else {
      this.schedule.dropped();
      void this.reconnectLoop(true);
    }
  }

  /** Leaves the desktop running and closes this viewer. */
  stop(): void {
    this.stopped = true;
    this.generation += 1;
    window.clearInterval(this.statsTimer);
    this.statsTimer = undefined;
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.cancelSleep();
    this.connectedNow = false;
    this.rfb?.disconnect();
    this.rfb = null;
    this.socket = null;
  }

  /** After giving up: start over with a fresh schedule. */
  retry(): void {
    this.stop();
    this.schedule.reset();
    this.start();
  }

  // ---- controls ----

  setScaling(scaling: Scaling): void {
    this.settings.scaling = scaling;
    if (this.rfb) applyScaling(this.rfb, scaling);
  }

  setQuality(quality: QualityName): void {
    this.settings.quality = quality;
    this.tier = null;
    if (this.rfb) this.applyQuality(this.rfb);
  }

  setViewOnly(viewOnly: boolean): void {
    this.settings.viewOnly = viewOnly;
    if (this.rfb) this.rfb.viewOnly = viewOnly;
  }

  sendKeys(combo: KeyCombo): void {
    const rfb = this.rfb;
    if (!rfb || !this.connectedNow || this.settings.viewOnly) return;
    if (combo.id === 'ctrl-alt-del') rfb.sendCtrlAltDel();
    else sendCombo(combo, (keysym, code, down) => rfb.sendKey(keysym, code, down));
    rfb.focus({ preventScroll: true });
  }

  /** Puts text into the desktop's clipboard (and primary selection: TigerVNC sets both). */
  pasteToDesktop(text: string): boolean {
    if (!this.rfb || !this.connectedNow || this.settings.viewOnly) return false;
    this.rfb.clipboardPasteFrom(text);
    return true;
  }

  /** Types text into the focused program on the desktop, key by key. */
  typeText(text: string): TypeResult {
    const rfb = this.rfb;
    if (!rfb || !this.connectedNow || this.settings.viewOnly) return 'not-connected';
    if ([...text].length > MAX_TYPED_CHARACTERS) return 'too-long';
    const keysyms = keysymsFor(text);
    const generation = this.generation;
    let next = 0;
    const step = () => {
      if (generation !== this.generation || this.rfb !== rfb || !this.connectedNow) return;
      const end = Math.min(next + KEYS_PER_TASK, keysyms.length);
      for (; next < end; next++) rfb.sendKey(keysyms[next]!, null);
      if (next < keysyms.length) window.setTimeout(step, 0);
    };
    step();
    rfb.focus({ preventScroll: true });
    return 'typing';
  }

  focus(): void {
    this.rfb?.focus({ preventScroll: true });
  }

  // ---- the connection ----

  private open(websocketUrl: string): void {
    const generation = ++this.generation;
    const socket = new WebSocket(toWebSocketUrl(websocketUrl), ['binary']);
    this.socket = socket;
    this.pause.reset();
    this.throughput.reset();
    this.tier = null;
    this.interceptOutgoing(socket);
    const rfb = new RFB(this.deps.target, socket, { shared: true });
    this.rfb = rfb;
    rfb.background = 'transparent';
    rfb.showDotCursor = true;
    rfb.focusOnClick = true;
    applyScaling(rfb, this.settings.scaling);
    this.applyQuality(rfb);
    rfb.viewOnly = this.settings.viewOnly;

    const current = () => generation === this.generation && !this.stopped;

    rfb.addEventListener('connect', () => {
      if (!current()) return;
      this.connectedNow = true;
      this.schedule.connected();
      this.screen = this.deps.target.lastElementChild;
      this.deps.ghost.replaceChildren();
      this.rtt.reset();
      this.deps.onState({ kind: 'connected' });
      this.applyVisibility();
      // Keyboard to the desktop, unless the person is busy in the toolbar.
      const active = document.activeElement;
      if (active === null || active === document.body || this.deps.target.contains(active))
        rfb.focus({ preventScroll: true });
    });
    rfb.addEventListener('clipboard', (event) => {
      if (current()) this.deps.onClipboard(event.detail.text);
    });
    rfb.addEventListener('desktopname', (event) => {
      if (current()) this.deps.onDesktopName?.(event.detail.name);
    });
    rfb.addEventListener('securityfailure', (event) => {
      if (!current()) return;
      this.fail(
        `The desktop refused the connection${event.detail.reason ? `: ${event.detail.reason}` : ''}.`,
      );
    });
    rfb.addEventListener('credentialsrequired', () => {
      // The gateway answers the VNC authentication itself; the browser never holds a VNC password.
      if (current())
        this.fail('The desktop asked this browser for a password, which CloudDesk does not hand out.');
    });

    socket.addEventListener('message', (event: MessageEvent<ArrayBuffer | string>) => {
      if (!current()) return;
      const t = this.now();
      const size = typeof event.data === 'string' ? event.data.length : event.data.byteLength;
      this.lastInboundAt = t;
      this.down.add(size, t);
      this.throughput.received(size, t);
      this.rtt.received(t);
    });
    socket.addEventListener('close', (event) => {
      if (!current()) return;
      this.dropped(event.code, event.reason);
    });
  }

  private dropped(code: number, reason: string): void {
    this.connectedNow = false;
    // noVNC has taken its canvas out of the page; keep showing the last frame, dimmed.
    if (this.screen && !this.deps.target.contains(this.screen)) this.deps.ghost.replaceChildren(this.screen);
    this.screen = null;
    this.rfb = null;
    this.socket = null;
    this.clearStats();
    const outcome = describeClose(code, reason);
    switch (outcome.kind) {
      case 'ended':
        this.finish({ kind: 'ended', message: outcome.message });
        return;
      case 'signed-out':
        this.finish({ kind: 'signed-out', message: outcome.message });
        return;
      case 'fatal':
        this.fail(outcome.message);
        return;
      case 'reconnect':
        this.schedule.dropped();
        void this.reconnectLoop(false, outcome.message);
        return;
    }
  }

  private async reconnectLoop(firstConnect: boolean, why = ''): Promise<void> {
    const generation = ++this.generation;
    const alive = () => generation === this.generation && !this.stopped;
    let firstAttempt = true;
    let lastProblem = why;
    const reconnecting = (detail: string) =>
      this.deps.onState({
        kind: 'reconnecting',
        attempt: this.schedule.attempts + 1,
        remainingMs: this.schedule.remainingMs(),
        detail,
      });
    for (;;) {
      if (!alive()) return;
      if (this.schedule.expired()) {
        this.fail(
          `Could not reach the desktop for ${Math.round(this.schedule.giveUpAfterMs / 1000)} s. ${lastProblem || 'The connection kept dropping.'} The desktop may still be running: try again in a moment.`,
        );
        return;
      }
      if (!firstConnect) reconnecting(why || 'Reconnecting to the same desktop…');
      // The very first ticket of a page load needs no wait; every other attempt backs off.
      const delay = firstConnect && firstAttempt ? 0 : this.schedule.nextOpenDelay();
      firstAttempt = false;
      await this.sleep(delay);
      if (!alive()) return;

      let url: string | null = null;
      let failures = 0;
      while (url === null) {
        try {
          url = (await this.deps.tickets.ticket(this.deps.sessionId)).websocketUrl;
        } catch (e) {
          if (!alive()) return;
          failures += 1;
          const outcome = ticketFailure(e);
          if (outcome) {
            this.finish(outcome);
            return;
          }
          if (this.schedule.expired()) {
            this.fail(`${describeError(e)} The desktop cannot be reached right now; try again in a moment.`);
            return;
          }
          if (isBusy(e) || (e instanceof ApiError && e.status === 429)) {
            // The gateway said when to come back: follow it, with a countdown.
            lastProblem = 'The server was busy.';
            const wait = busyRetryDelayMs(e, this.random);
            const until = this.now() + wait;
            while (this.now() < until) {
              reconnecting(busyMessage(until - this.now()));
              await this.sleep(Math.min(1_000, until - this.now()));
              if (!alive()) return;
            }
            continue;
          }
          lastProblem = 'CloudDesk was not answering.';
          if (!firstConnect || !(e instanceof ApiError && e.isTransient)) {
            reconnecting('Waiting for CloudDesk to answer…');
          }
          firstConnect = false;
          await this.sleep(this.schedule.ticketRetryDelay(failures));
          if (!alive()) return;
        }
      }
      if (!alive()) return;
      this.schedule.opened();
      // A failure from here on arrives as a close event, which starts a new loop.
      this.open(url);
      return;
    }
  }

  private finish(state: ViewerState): void {
    this.generation += 1;
    this.connectedNow = false;
    this.rfb?.disconnect();
    this.rfb = null;
    this.clearStats();
    this.deps.onState(state);
  }

  private fail(message: string): void {
    this.finish({ kind: 'failed', message });
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.wakeUp = resolve;
      this.sleepTimer = window.setTimeout(() => {
        this.wakeUp = null;
        resolve();
      }, ms);
    });
  }

  private cancelSleep(): void {
    window.clearTimeout(this.sleepTimer);
    const wake = this.wakeUp;
    this.wakeUp = null;
    wake?.();
  }

  // ---- quality and hidden pages ----

  private applyQuality(rfb: RFB): void {
    const levels =
      this.settings.quality === 'auto'
        ? automaticLevels[(this.tier ??= automaticTier(this.throughput.bitsPerSecond()))]
        : fixedPresets[this.settings.quality];
    if (rfb.qualityLevel !== levels.qualityLevel) rfb.qualityLevel = levels.qualityLevel;
    if (rfb.compressionLevel !== levels.compressionLevel) rfb.compressionLevel = levels.compressionLevel;
  }

  /** Automatic: move to another tier when the estimate crossed a threshold. */
  private followThroughput(): void {
    if (this.settings.quality !== 'auto' || !this.rfb || !this.connectedNow) return;
    const next = automaticTier(this.throughput.bitsPerSecond(), this.tier);
    if (next === this.tier) return;
    this.tier = next;
    this.applyQuality(this.rfb);
  }

  private applyVisibility(): void {
    if (!this.connectedNow || !this.socket) return;
    const canvas = this.deps.target.querySelector('canvas');
    const width = canvas?.width ?? 0;
    const height = canvas?.height ?? 0;
    const hidden = document.visibilityState === 'hidden';
    const messages = hidden ? this.pause.pause(width, height) : this.pause.resume(width, height);
    for (const m of messages) this.socket.send(m);
    if (!hidden && messages.length > 0 && this.pause.continuousUpdates) {
      // noVNC learned from the server's EndOfContinuousUpdates that they were off; they are on again.
      const internals = this.rfb as unknown as { _enabledContinuousUpdates?: boolean } | null;
      if (internals && '_enabledContinuousUpdates' in internals) internals._enabledContinuousUpdates = true;
    }
    this.tickStats();
  }

  // ---- statistics ----

  /** Counts what goes out, and holds back update requests while the page is hidden. */
  private interceptOutgoing(socket: WebSocket): void {
    const send = socket.send.bind(socket);
    socket.send = (data: string | ArrayBufferLike | Blob | ArrayBufferView) => {
      if (ArrayBuffer.isView(data)) {
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        if (!this.pause.allow(bytes)) return;
      }
      const size =
        typeof data === 'string'
          ? data.length
          : data instanceof Blob
            ? data.size
            : ArrayBuffer.isView(data)
              ? data.byteLength
              : (data as ArrayBufferLike).byteLength;
      this.up.add(size, this.now());
      send(data);
    };
  }

  private clearStats(): void {
    this.down.reset();
    this.up.reset();
    this.rtt.reset();
    this.tickStats();
  }

  private tickStats(): void {
    const t = this.now();
    const live = this.connectedNow && this.socket?.readyState === WebSocket.OPEN;
    if (live) {
      this.maybeProbe(t);
      this.followThroughput();
    }
    const canvas = this.deps.target.querySelector('canvas');
    this.deps.onStats({
      downBitsPerSecond: live ? this.down.bitsPerSecond(t) : null,
      upBitsPerSecond: live ? this.up.bitsPerSecond(t) : null,
      rttMs: live ? this.rtt.value() : null,
      width: live ? (canvas?.width ?? 0) : 0,
      height: live ? (canvas?.height ?? 0) : 0,
      automatic: live && this.settings.quality === 'auto' && this.tier ? automaticLevels[this.tier] : null,
      paused: live && this.pause.paused,
    });
  }

  private maybeProbe(t: number): void {
    if (document.visibilityState !== 'visible') return;
    if (t - this.lastProbeAt < PROBE_EVERY_MS || this.rtt.waiting(t)) return;
    if (t - this.lastInboundAt < PROBE_QUIET_MS) return;
    this.lastProbeAt = t;
    this.rtt.sent(t);
    this.socket?.send(probeMessage());
  }
}

/** What a failed ticket request means for the viewer; null when it is worth retrying. */
function ticketFailure(e: unknown): ViewerState | null {
  if (!(e instanceof ApiError)) return null;
  if (e.code === 'SESSION_ENDED') return { kind: 'ended', message: 'This session has ended.' };
  if (e.code === 'SESSION_NOT_FOUND' || e.code === 'VALIDATION_FAILED') {
    return { kind: 'ended', message: 'There is no such session. It may have ended long ago.' };
  }
  if (e.status === 401) return { kind: 'signed-out', message: 'Your session has expired. Sign in again.' };
  if (e.isTransient || e.status === 429) return null;
  // Any other refusal (403, 404, 422, …) will be the same on the next attempt.
  return { kind: 'failed', message: describeError(e) };
}

function applyScaling(rfb: RFB, scaling: Scaling): void {
  rfb.scaleViewport = scaling === 'fit';
  rfb.resizeSession = scaling === 'remote';
  rfb.clipViewport = false;
}

export function toWebSocketUrl(path: string, base: string = location.href): string {
  const url = new URL(path, base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}
