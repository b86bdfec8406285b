// One viewer's link to a desktop: the WebSocket (opened here so its close code is known), noVNC's RFB
// on top of it, automatic reconnection with fresh tickets, and the link statistics. The page that
// shows it (views/desktop.view.ts) only renders the states this reports.
import RFB from '@novnc/novnc';
import { ApiError } from '../api/api-error.js';
import type { Quality, Scaling } from '../lib/prefs.js';
import { sendCombo, type KeyCombo } from './key-combos.js';
import { RateMeter, RoundTripMeter, probeMessage } from './link-stats.js';
import { qualityPresets } from './quality.js';
import { classifyClose, ReconnectSchedule } from './reconnect-policy.js';

export type ViewerState =
  | { kind: 'connecting' }
  | { kind: 'connected' }
  | { kind: 'reconnecting'; attempt: number; remainingMs: number; detail: string }
  | { kind: 'ended'; message: string }
  | { kind: 'signed-out'; message: string }
  | { kind: 'failed'; message: string };

export interface LinkStats {
  downBitsPerSecond: number;
  upBitsPerSecond: number;
  rttMs: number | null;
  width: number;
  height: number;
}

export interface ViewerSettings {
  scaling: Scaling;
  quality: Quality;
  viewOnly: boolean;
}

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
}

const STATS_INTERVAL_MS = 1_000;
const PROBE_EVERY_MS = 2_000;
/** Probe only when the desktop has been quiet this long, so the answer is ours and not a screen update. */
const PROBE_QUIET_MS = 150;

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
  private lastInboundAt = 0;
  private lastProbeAt = 0;
  private statsTimer: number | undefined;
  private wakeUp: (() => void) | null = null;
  private sleepTimer: number | undefined;
  private settings: ViewerSettings;
  private connectedNow = false;
  private readonly now: () => number;

  constructor(private readonly deps: DesktopConnectionDeps) {
    this.now = deps.now ?? (() => performance.now());
    this.schedule = new ReconnectSchedule(this.now);
    this.settings = { ...deps.settings };
  }

  get connected(): boolean {
    return this.connectedNow;
  }

  /** Starts with a ticket already in hand (just connected), or asks for one. */
  start(websocketUrl?: string): void {
    this.stopped = false;
    this.statsTimer ??= window.setInterval(() => this.tickStats(), STATS_INTERVAL_MS);
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

  setQuality(quality: Quality): void {
    this.settings.quality = quality;
    if (this.rfb) applyQuality(this.rfb, quality);
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

  pasteToDesktop(text: string): boolean {
    if (!this.rfb || !this.connectedNow || this.settings.viewOnly) return false;
    this.rfb.clipboardPasteFrom(text);
    return true;
  }

  focus(): void {
    this.rfb?.focus({ preventScroll: true });
  }

  // ---- the connection ----

  private open(websocketUrl: string): void {
    const generation = ++this.generation;
    const socket = new WebSocket(toWebSocketUrl(websocketUrl), ['binary']);
    this.socket = socket;
    this.countOutgoing(socket);
    const rfb = new RFB(this.deps.target, socket, { shared: true });
    this.rfb = rfb;
    rfb.background = 'transparent';
    rfb.showDotCursor = true;
    rfb.focusOnClick = true;
    applyScaling(rfb, this.settings.scaling);
    applyQuality(rfb, this.settings.quality);
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
      this.lastInboundAt = t;
      this.down.add(typeof event.data === 'string' ? event.data.length : event.data.byteLength, t);
      this.rtt.received(t);
    });
    socket.addEventListener('close', (event) => {
      if (!current()) return;
      this.dropped(event.code);
    });
  }

  private dropped(code: number): void {
    this.connectedNow = false;
    // noVNC has taken its canvas out of the page; keep showing the last frame, dimmed.
    if (this.screen && !this.deps.target.contains(this.screen)) this.deps.ghost.replaceChildren(this.screen);
    this.screen = null;
    this.rfb = null;
    this.socket = null;
    this.down.reset();
    this.up.reset();
    switch (classifyClose(code)) {
      case 'ended':
        this.finish({ kind: 'ended', message: 'This session has ended.' });
        return;
      case 'signed-out':
        this.finish({ kind: 'signed-out', message: 'You were signed out.' });
        return;
      case 'fatal':
        this.fail(`The connection to the desktop broke (code ${code}).`);
        return;
      case 'reconnect':
        this.schedule.dropped();
        void this.reconnectLoop(false);
        return;
    }
  }

  private async reconnectLoop(firstConnect: boolean): Promise<void> {
    const generation = ++this.generation;
    const alive = () => generation === this.generation && !this.stopped;
    let firstAttempt = true;
    for (;;) {
      if (!alive()) return;
      if (this.schedule.expired()) {
        this.fail('Could not reconnect to the desktop. It may still be running: try again in a moment.');
        return;
      }
      if (!firstConnect) {
        this.deps.onState({
          kind: 'reconnecting',
          attempt: this.schedule.attempts + 1,
          remainingMs: this.schedule.remainingMs(),
          detail: 'The connection dropped. Reconnecting to the same desktop…',
        });
      }
      // The very first ticket of a page load needs no wait; every other attempt backs off.
      const delay = firstConnect && firstAttempt ? 0 : this.schedule.nextOpenDelay();
      firstAttempt = false;
      await this.sleep(delay);
      if (!alive()) return;

      let url: string | null = null;
      while (url === null) {
        try {
          url = (await this.deps.tickets.ticket(this.deps.sessionId)).websocketUrl;
        } catch (e) {
          if (!alive()) return;
          const outcome = ticketFailure(e);
          if (outcome) {
            this.finish(outcome);
            return;
          }
          if (this.schedule.expired()) {
            this.fail('CloudDesk is not answering, so the desktop cannot be reached. Try again in a moment.');
            return;
          }
          if (!firstConnect || !(e instanceof ApiError && e.isTransient)) {
            this.deps.onState({
              kind: 'reconnecting',
              attempt: this.schedule.attempts + 1,
              remainingMs: this.schedule.remainingMs(),
              detail: 'Waiting for CloudDesk to answer…',
            });
          }
          firstConnect = false;
          await this.sleep(this.schedule.ticketRetryDelay());
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

  // ---- statistics ----

  private countOutgoing(socket: WebSocket): void {
    const send = socket.send.bind(socket);
    socket.send = (data: string | ArrayBufferLike | Blob | ArrayBufferView) => {
      const size =
        typeof data === 'string'
          ? data.length
          : data instanceof Blob
            ? data.size
            : (data as ArrayBufferLike).byteLength;
      this.up.add(size, this.now());
      send(data);
    };
  }

  private tickStats(): void {
    const t = this.now();
    if (this.connectedNow && this.socket?.readyState === WebSocket.OPEN) this.maybeProbe(t);
    const canvas = this.deps.target.querySelector('canvas');
    this.deps.onStats({
      downBitsPerSecond: this.down.bitsPerSecond(t),
      upBitsPerSecond: this.up.bitsPerSecond(t),
      rttMs: this.rtt.value(),
      width: canvas?.width ?? 0,
      height: canvas?.height ?? 0,
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
  return null;
}

function applyScaling(rfb: RFB, scaling: Scaling): void {
  rfb.scaleViewport = scaling === 'fit';
  rfb.resizeSession = scaling === 'remote';
  rfb.clipViewport = false;
}

function applyQuality(rfb: RFB, quality: Quality): void {
  const preset = qualityPresets[quality];
  rfb.qualityLevel = preset.qualityLevel;
  rfb.compressionLevel = preset.compressionLevel;
}

export function toWebSocketUrl(path: string, base: string = location.href): string {
  const url = new URL(path, base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}
