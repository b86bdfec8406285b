// The person at the browser: Debian's Chromium driven by playwright-core, with the product's own web
// client (served by the gateway from web/dist). It signs up, adds the instance with a key file, trusts
// its host key and connects to an xfce desktop as a person would, with the setting's preferences in
// localStorage. It counts every WebSocket frame through the Chrome DevTools Protocol
// (Network.webSocketFrameReceived/Sent) — the browser's side of the byte count — and reads the canvas
// back for the pixel comparison.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type BrowserContext, type CDPSession, type Page } from 'playwright-core';
import type { RgbImage } from './pixel-compare.js';
import type { BandwidthSetting } from './settings.js';

export const CHROMIUM = '/usr/bin/chromium';
const STEP_MS = 60_000;
/** Frame ends kept for `countsAt`: many more than arrive between two reads of the gateway's count. */
const FRAME_ENDS_KEPT = 20_000;

export interface ViewerCounters {
  received: number;
  sent: number;
  framesReceived: number;
}

/** Bytes of a CDP WebSocket frame payload: base64 for binary frames (opcode 2), text otherwise. */
export function payloadBytes(opcode: number, payload: string): number {
  if (opcode !== 2) return Buffer.byteLength(payload, 'utf8');
  const pad = payload.endsWith('==') ? 2 : payload.endsWith('=') ? 1 : 0;
  return (payload.length * 3) / 4 - pad;
}

// Runs before the web client on every navigation. Plain JavaScript in strings: this tsconfig has no DOM
// types (it is the server's).
function prefsScript(s: BandwidthSetting): string {
  const prefs: Record<string, string> = { scaling: s.client.scaling };
  if (s.client.quality !== null) prefs.quality = s.client.quality;
  return `(() => { try {
    const key = 'clouddesk.prefs';
    const p = JSON.parse(localStorage.getItem(key) || '{}');
    Object.assign(p, ${JSON.stringify(prefs)});
    localStorage.setItem(key, JSON.stringify(p));
  } catch (e) {} })()`;
}

// JPEG quality (-32 + q) and compression level (-256 + c) pseudo-encodings replaced in the client's
// SetEncodings (type 2, count, then count × s32), as a noVNC with those levels would send them.
function levelsScript(q: number, c: number): string {
  return `(() => {
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
      try {
        const u8 = data instanceof Uint8Array ? data
          : data instanceof ArrayBuffer ? new Uint8Array(data)
          : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
        if (u8 && u8.length >= 4 && u8[0] === 2 && u8.length === 4 + 4 * ((u8[2] << 8) | u8[3])) {
          const copy = new Uint8Array(u8);
          const v = new DataView(copy.buffer);
          for (let i = 4; i < copy.length; i += 4) {
            const e = v.getInt32(i);
            if (e >= -32 && e <= -23) v.setInt32(i, -32 + ${q});
            else if (e >= -256 && e <= -247) v.setInt32(i, -256 + ${c});
          }
          window.__bwEncodingsRewritten = (window.__bwEncodingsRewritten || 0) + 1;
          return send.call(this, copy);
        }
      } catch (e) {}
      return send.call(this, data);
    };
  })()`;
}

// Headless Chromium always reports a visible page (minimizing or switching tabs does not change it), so a
// hidden tab is emulated where the page looks: document.visibilityState / hidden and 'visibilitychange'.
const VISIBILITY = `(hidden) => {
  if (hidden) {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
  } else {
    delete document.visibilityState;
    delete document.hidden;
  }
  document.dispatchEvent(new Event('visibilitychange'));
}`;

// The canvas as base64 RGB (no alpha), read in the page.
const CANVAS_RGB = `(() => {
  const c = document.querySelector('[data-testid="screen"] canvas');
  if (!c || c.width === 0) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const rgb = new Uint8Array(c.width * c.height * 3);
  for (let i = 0, j = 0; i < d.length; i += 4) { rgb[j++] = d[i]; rgb[j++] = d[i + 1]; rgb[j++] = d[i + 2]; }
  let s = '';
  for (let i = 0; i < rgb.length; i += 0x8000) s += String.fromCharCode.apply(null, rgb.subarray(i, i + 0x8000));
  return { width: c.width, height: c.height, rgb: btoa(s) };
})()`;

export interface InstanceForm {
  host: string;
  port: number;
  username: string;
  privateKey: string;
  hostKeyFingerprint: string;
}

export class BrowserViewer {
  readonly counters: ViewerCounters = { received: 0, sent: 0, framesReceived: 0 };
  /** Received frames (time, bytes), for "has the screen settled"; trimmed to the last minute. */
  private readonly recent: { t: number; bytes: number }[] = [];
  /** Bytes per VNC WebSocket (DevTools request id), in the order they were opened. */
  private readonly vncSockets = new Map<string, { received: number; sent: number }>();
  private readonly waiters = new Set<() => void>();
  /**
   * The browser's counts after each received frame, keyed by the received count (the last few thousand),
   * so that a count the gateway read can be found in the browser's own stream (`countsAt`).
   */
  private readonly frameEnds = new Map<number, number>();
  /** Bytes received since the last reset, for first-frame and phase windows. */
  private constructor(
    readonly context: BrowserContext,
    readonly page: Page,
    private readonly cdp: CDPSession,
  ) {}

  static async launch(setting: BandwidthSetting, profileDir: string): Promise<BrowserViewer> {
    const context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
      ],
      viewport: setting.viewport,
      colorScheme: 'light',
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(STEP_MS);
    await context.addInitScript(prefsScript(setting));
    if (setting.levels)
      await context.addInitScript(levelsScript(setting.levels.quality, setting.levels.compression));
    const cdp = await context.newCDPSession(page);
    const viewer = new BrowserViewer(context, page, cdp);
    cdp.on('Network.webSocketCreated', (e) => {
      if (new URL(e.url).pathname === '/vnc') viewer.vncSockets.set(e.requestId, { received: 0, sent: 0 });
    });
    cdp.on('Network.webSocketFrameReceived', (e) => {
      const socket = viewer.vncSockets.get(e.requestId);
      if (socket === undefined) return;
      const bytes = payloadBytes(e.response.opcode, e.response.payloadData);
      socket.received += bytes;
      viewer.counters.received += bytes;
      viewer.counters.framesReceived += 1;
      viewer.frameEnds.set(viewer.counters.received, viewer.counters.sent);
      if (viewer.frameEnds.size > FRAME_ENDS_KEPT)
        viewer.frameEnds.delete(viewer.frameEnds.keys().next().value!);
      viewer.recent.push({ t: Date.now(), bytes });
      while (viewer.recent.length > 0 && viewer.recent[0]!.t < Date.now() - 60_000) viewer.recent.shift();
      for (const wake of viewer.waiters) wake();
    });
    cdp.on('Network.webSocketFrameSent', (e) => {
      const socket = viewer.vncSockets.get(e.requestId);
      if (socket === undefined) return;
      const bytes = payloadBytes(e.response.opcode, e.response.payloadData);
      socket.sent += bytes;
      viewer.counters.sent += bytes;
    });
    await cdp.send('Network.enable');
    return viewer;
  }

  /** Sign up, add the instance (key file, host key confirmed), connect to xfce: the session id. */
  async signUpAndConnect(
    baseUrl: string,
    email: string,
    password: string,
    instance: InstanceForm,
    workDir: string,
  ): Promise<string> {
    const page = this.page;
    await page.goto(`${baseUrl}/sign-up`);
    await page.fill('input[name="email"]', email);
    await page.fill('input[name="password"]', password);
    await page.click('button[type="submit"]');
    await page.waitForURL(/\/instances$/);
    const keyPath = join(workDir, 'id_ed25519');
    await writeFile(keyPath, instance.privateKey, { mode: 0o600 });
    await page.click('[data-testid="add-instance"]');
    await page.fill('input[name="name"]', 'Bandwidth bench');
    await page.fill('input[name="host"]', instance.host);
    await page.fill('input[name="port"]', String(instance.port));
    await page.fill('input[name="username"]', instance.username);
    await page.setInputFiles('[data-testid="key-file"]', keyPath);
    await page.waitForSelector('text=OpenSSH private key');
    await page.click('dialog button[type="submit"]');
    const check = page.locator('[data-testid="connection-check"]');
    const shown = await check.locator('[data-testid="fingerprint"]').first().textContent();
    if (shown !== instance.hostKeyFingerprint)
      throw new Error(`the page showed host key ${shown}, the instance has ${instance.hostKeyFingerprint}`);
    await check.locator('[data-testid="trust-host-key"]').click();
    await page.waitForSelector('text=Trusted and pinned');
    await page.click('dialog >> text=Done');
    // A tested instance connects in one click, with the desktop picked on its card when it has several.
    const card = page.locator('[data-testid="instance"]');
    await card.locator('[data-testid="connect"]').waitFor();
    const choice = card.locator('[data-testid="desktop-choice"]');
    if ((await choice.count()) > 0) await choice.selectOption('xfce');
    await card.locator('[data-testid="connect"]').click();
    await page.waitForURL(/\/desktop\//);
    await this.waitConnected();
    return decodeURIComponent(new URL(page.url()).pathname.split('/').pop() ?? '');
  }

  async waitConnected(): Promise<void> {
    await this.page.waitForSelector('[data-testid="viewer"][data-state="connected"]', { timeout: STEP_MS });
  }

  /** The viewer's quality menu: its presets and the one selected. */
  async qualityMenu(): Promise<{ options: string[]; selected: string }> {
    const select = this.page.locator('[data-testid="quality"]');
    const options = await select
      .locator('option')
      .evaluateAll((els) => els.map((e) => (e as unknown as { value: string }).value));
    return { options, selected: await select.inputValue() };
  }

  async encodingsRewritten(): Promise<number> {
    return this.page.evaluate<number>('window.__bwEncodingsRewritten || 0');
  }

  /**
   * Resolves once less than `quietBytes` arrived over the last `quietMs` (the screen stopped changing and
   * TigerVNC's lossless refresh is in), or after `maxMs`. The web client's own RTT probe (a one-pixel
   * update every 2 s, ~90 bytes) stays below any sensible threshold.
   */
  async waitSettled(
    quietMs: number,
    quietBytes: number,
    maxMs: number,
  ): Promise<{ settled: boolean; waitedMs: number }> {
    const start = Date.now();
    for (;;) {
      const now = Date.now();
      let bytes = 0;
      for (let i = this.recent.length - 1; i >= 0 && this.recent[i]!.t > now - quietMs; i--)
        bytes += this.recent[i]!.bytes;
      if (now - start >= quietMs && bytes < quietBytes) return { settled: true, waitedMs: now - start };
      if (now - start >= maxMs) return { settled: false, waitedMs: now - start };
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Resolves once the browser has received `bytes` in all (what the gateway says it sent has arrived:
   * DevTools events trail the socket on a busy machine), or after `timeoutMs`; true if it arrived.
   */
  waitReceived(bytes: number, timeoutMs: number, except?: ReadonlySet<string>): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(ok);
      };
      const check = () => {
        if ((except ? this.countsExcept(except).received : this.counters.received) >= bytes) done(true);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /**
   * The browser's counts at the moment its received count stood at exactly `received` (after some frame),
   * or null when no frame ended there (or it was too long ago). The gateway counts each WebSocket message
   * as it sends it, so a gateway count that is a frame end here is of the same bytes, whatever arrived since.
   */
  countsAt(received: number): { received: number; sent: number } | null {
    const sent = this.frameEnds.get(received);
    return sent === undefined ? null : { received, sent };
  }

  /** The VNC sockets opened so far, to count a later connection's bytes alone with `countsExcept`. */
  vncSocketIds(): ReadonlySet<string> {
    return new Set(this.vncSockets.keys());
  }

  /** Bytes on the VNC sockets not in `except`. */
  countsExcept(except: ReadonlySet<string>): { received: number; sent: number } {
    const sum = { received: 0, sent: 0 };
    for (const [id, socket] of this.vncSockets)
      if (!except.has(id)) {
        sum.received += socket.received;
        sum.sent += socket.sent;
      }
    return sum;
  }

  async readCanvas(): Promise<RgbImage | null> {
    const r = await this.page.evaluate<{ width: number; height: number; rgb: string } | null>(CANVAS_RGB);
    return r === null ? null : { width: r.width, height: r.height, rgb: Buffer.from(r.rgb, 'base64') };
  }

  async setHidden(hidden: boolean): Promise<void> {
    await this.page.evaluate(`(${VISIBILITY})(${hidden})`);
  }

  /** Leaves the desktop's page for a blank one (its WebSocket closes); the desktop's address, for `rejoin`. */
  async leave(): Promise<string> {
    const url = this.page.url();
    await this.page.goto('about:blank');
    return url;
  }

  /** Opens the desktop's page again, as a person coming back to it would, until the viewer is connected. */
  async rejoin(url: string): Promise<void> {
    await this.page.goto(url);
    await this.waitConnected();
  }

  async screenshot(path: string): Promise<void> {
    await this.page.screenshot({ path, type: 'jpeg', quality: 90 });
  }

  async close(): Promise<void> {
    await this.context.close().catch(() => undefined);
  }
}
