// One setting, start to end: its own gateway process (the setting's environment), a fresh browser profile
// that signs up and connects to a new xfce desktop, the first frame after a reconnect, then every phase
// (set up → counted workload → settled → canvas against framebuffer → torn down), and the session ended.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { DEFAULT_SESSION_MAX_KBPS } from '../../src/config/config.js';
import { startGatewayProcess, type GatewayProcess } from '../../test/helpers/gateway-process.js';
import { freePort } from '../../test/helpers/free-port.js';
import { onCleanup } from '../lib/process-registry.js';
import { scrapeMetrics } from '../stacks/clouddesk-stack.js';
import { repoDir } from '../stacks/stack.js';
import { BrowserViewer } from './browser-viewer.js';
import { metricsByteSource, usageApiByteSource, type GatewayByteSource } from './byte-sources.js';
import { bytesPerSessionHour, monthlyUsd, monthlyUsdWithCloudFront, officeKbps } from './cost-model.js';
import { InstanceDriver, type InstanceLogin } from './instance-driver.js';
import type { BandwidthOptions } from './options.js';
import { phaseById, type Phase } from './phases.js';
import { allDiffer, comparePixels, parsePpm, sameImage } from './pixel-compare.js';
import type { KnobUse, PhaseResult, ScreenCheck, SettingResult, SideCount } from './result.js';
import type { BandwidthSetting } from './settings.js';

export interface RunContext {
  options: BandwidthOptions;
  instance: InstanceLogin;
  /** Environment variables this checkout's gateway reads. */
  gatewayVariables: Set<string>;
  /** Absolute folder for the screenshots. */
  shotsDir: string;
  log(line: string): void;
}

/** Displays of their own, away from the test suite's :1–:10 and `npm run bench`'s fakes at 1000+. */
const DISPLAY_MIN = 700;
const DISPLAY_MAX = 799;
const USAGE_FLUSH_MS = 500;
/** Tries at reading both byte counts of one moment before the last is taken as it is (snap, below). */
const SNAP_ATTEMPTS = 5;
/**
 * How long the browser's count gets to reach the gateway's at a snap: DevTools events trail the socket, and on a
 * loaded machine a phase's snaps have all stayed a few KB short after 10 s (the phase then notes it).
 */
const CATCH_UP_MS = 20_000;
/** Pixels left out on each side of the pointer: room for a large cursor and its hotspot. */
const POINTER_BOX = 32;
const PASSWORD = 'bandwidth bench passphrase';

function resolveKnobs(s: BandwidthSetting, known: Set<string>): KnobUse[] {
  return [
    ...Object.entries(s.gatewayEnv).map(([name, value]) => ({
      name,
      value,
      known: known.has(name),
      ifKnown: false,
    })),
    ...Object.entries(s.gatewayEnvIfKnown ?? {}).map(([name, value]) => ({
      name,
      value,
      known: known.has(name),
      ifKnown: true,
    })),
  ];
}

function blankResult(s: BandwidthSetting, knobs: KnobUse[]): SettingResult {
  return {
    id: s.id,
    label: s.label,
    description: s.description,
    status: 'measured',
    reason: null,
    knobs,
    client: {
      requestedQuality: s.client.quality,
      selectedQuality: null,
      presets: [],
      scaling: s.client.scaling,
      levels: s.levels ?? null,
      encodingsRewritten: 0,
    },
    viewport: s.viewport,
    desktop: { geometry: null, compositing: null },
    firstFrame: null,
    phases: [],
    officeKbps: null,
    sessionHourBytes: null,
    monthlyUsd: null,
    monthlyUsdWithCloudFront: null,
    screenshot: null,
    seconds: 0,
  };
}

function minus(b: SideCount, a: SideCount): SideCount {
  return {
    gatewayToViewer: b.gatewayToViewer - a.gatewayToViewer,
    gatewayFromViewer: b.gatewayFromViewer - a.gatewayFromViewer,
    browserReceived: b.browserReceived - a.browserReceived,
    browserSent: b.browserSent - a.browserSent,
  };
}

/** Resolves once the gateway's metrics show no viewer WebSocket open; throws after `timeoutMs`. */
async function viewersGone(metricsUrl: string, token: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await scrapeMetrics(metricsUrl, token);
    if (m?.raw.clouddesk_viewers_live === 0) return;
    if (Date.now() >= deadline)
      throw new Error(`the gateway still had a viewer open after ${String(timeoutMs)} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const kbps = (bytes: number, seconds: number) => (seconds > 0 ? (bytes * 8) / 1000 / seconds : 0);

export async function runSetting(setting: BandwidthSetting, ctx: RunContext): Promise<SettingResult> {
  const started = Date.now();
  const knobs = resolveKnobs(setting, ctx.gatewayVariables);
  const result = blankResult(setting, knobs);
  const unknown = knobs.filter((k) => !k.known && !k.ifKnown);
  if (unknown.length > 0) {
    result.status = 'not-measured';
    result.reason = `the gateway does not read ${unknown.map((k) => k.name).join(', ')} yet`;
    return result;
  }
  const cleanups: (() => Promise<void>)[] = [];
  let gateway: GatewayProcess | null = null;
  try {
    const driver = await InstanceDriver.connect(ctx.instance);
    cleanups.push(() => Promise.resolve(driver.close()));
    await driver.must(['reset', 0]);
    await driver.must(['prepare', 0, ctx.options.seed], 180_000);

    const metricsPort = await freePort();
    const metricsToken = randomBytes(24).toString('base64url');
    const env: Record<string, string> = {
      NODE_ENV: 'production',
      METRICS_PORT: String(metricsPort),
      METRICS_TOKEN: metricsToken,
      VNC_DISPLAY_MIN: String(DISPLAY_MIN),
      VNC_DISPLAY_MAX: String(DISPLAY_MAX),
      ...(ctx.options.byteSource === 'usage-api' ? { ACTIVITY_FLUSH_MS: String(USAGE_FLUSH_MS) } : {}),
    };
    // The gateway as shipped unless the setting says otherwise (the test fixture turns the budget off).
    env.SESSION_MAX_KBPS = String(DEFAULT_SESSION_MAX_KBPS);
    for (const k of knobs) if (k.known) env[k.name] = k.value;
    const gw = await startGatewayProcess({ env });
    gateway = gw;
    cleanups.push(onCleanup(`gateway (${setting.id})`, () => gw.stop()));

    const workDir = await mkdtemp(join(tmpdir(), 'clouddesk-bw-browser-'));
    cleanups.push(onCleanup('browser profile', () => rm(workDir, { recursive: true, force: true })));
    const viewer = await BrowserViewer.launch(setting, join(workDir, 'profile'));
    cleanups.push(onCleanup('browser', () => viewer.close()));

    const email = `bw-${setting.id}-${randomBytes(4).toString('hex')}@example.com`;
    ctx.log(`  ${setting.id}: sign up, add the instance, connect (xfce)`);
    const sessionId = await viewer.signUpAndConnect(gw.url, email, PASSWORD, ctx.instance, workDir);
    const token = async () => {
      const res = await fetch(`${gw.url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email, password: PASSWORD }),
      });
      return ((await res.json()) as { data: { accessToken: string } }).data.accessToken;
    };
    cleanups.push(async () => {
      await fetch(`${gw.url}/api/sessions/disconnect/${encodeURIComponent(sessionId)}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await token()}`, 'content-type': 'application/json' },
        body: '{}',
      }).catch(() => undefined);
    });

    const menu = await viewer.qualityMenu();
    result.client.presets = menu.options;
    result.client.selectedQuality = menu.selected;
    if (setting.client.quality !== null && menu.selected !== setting.client.quality) {
      result.status = 'not-measured';
      result.reason = `the web client has no "${setting.client.quality}" preset yet (it offers ${menu.options.join(', ')})`;
      return result;
    }

    const active = (await (
      await fetch(`${gw.url}/api/sessions/active`, { headers: { authorization: `Bearer ${await token()}` } })
    ).json()) as { data: { id: string; display: number | null }[] };
    const display = active.data.find((s) => s.id === sessionId)?.display;
    if (typeof display !== 'number') throw new Error(`no display for session ${sessionId}`);

    const source: GatewayByteSource =
      ctx.options.byteSource === 'usage-api'
        ? usageApiByteSource(gw.url, sessionId, token, USAGE_FLUSH_MS)
        : metricsByteSource(`http://127.0.0.1:${metricsPort}`, metricsToken);
    // At a settled moment the browser's count is made to catch up with what the gateway says it sent. The
    // gateway counts each WebSocket message as it sends it, so its count is the end of one of the browser's
    // frames, and the browser's counts at that frame's end are of the same bytes, whatever arrived since (a
    // probe answer, a cursor's blink). A gateway count that ends no frame (the counts disagree) is read again
    // until nothing was sent between two reads, five times at most. A browser that does not catch up within
    // the wait (DevTools events trail the socket on a loaded machine) is taken as it is and marked so.
    const snap = async (notes?: string[]): Promise<SideCount & { caughtUp: boolean }> => {
      let g = await source.read();
      for (let attempt = 1; ; attempt++) {
        const waitStart = Date.now();
        const caughtUp = await viewer.waitReceived(g.toViewer, CATCH_UP_MS);
        if (caughtUp && Date.now() - waitStart > 1000)
          notes?.push(`caught up after ${Date.now() - waitStart} ms`);
        const counted = (caughtUp ? viewer.countsAt(g.toViewer) : null) ?? {
          received: viewer.counters.received,
          sent: viewer.counters.sent,
        };
        const exact = counted.received === g.toViewer;
        const again = exact ? g : await source.read();
        if (!caughtUp)
          notes?.push(
            `the browser was ${g.toViewer - counted.received} bytes short of the gateway's count after ${CATCH_UP_MS / 1000} s (${viewer.vncSocketIds().size} WebSockets so far)`,
          );
        else if (!exact && attempt === SNAP_ATTEMPTS && again.toViewer !== g.toViewer)
          notes?.push(
            `counts read while bytes still arrived (${again.toViewer - g.toViewer} between the last two reads)`,
          );
        if (!caughtUp || again.toViewer === g.toViewer || attempt === SNAP_ATTEMPTS)
          return {
            caughtUp,
            gatewayToViewer: g.toViewer,
            gatewayFromViewer: g.fromViewer,
            browserReceived: counted.received,
            browserSent: counted.sent,
          };
        g = again;
      }
    };
    const o = ctx.options;
    const settle = (maxSeconds = o.settleSeconds) =>
      viewer.waitSettled(o.quietMs, o.quietBytes, maxSeconds * 1000);

    await driver.must(['wait-desktop', display], 90_000);
    await settle(60);
    if (setting.desktop?.compositing !== undefined) {
      const a = await driver.must(['compositing', display, setting.desktop.compositing ? 'on' : 'off']);
      result.desktop.compositing = a.get('compositing')?.[0] ?? null;
      await settle();
    }
    result.desktop.geometry = (await driver.must(['geometry', display])).get('geometry')?.[0] ?? null;

    // The first frame: what a viewer coming back to this desktop receives until the screen settles. The
    // page is left, and the gateway's count read once it has let that viewer go; the browser's is the new
    // socket's alone. Across a reload the window held whatever the gateway still wrote to the closing socket,
    // which the browser never reports (CI saw 72,559 vs 54,997), and DevTools reports no close for a socket
    // whose page is gone, so the old socket's last frames cannot be waited for.
    ctx.log(`  ${setting.id}: first frame`);
    const desktopUrl = await viewer.leave();
    await viewersGone(`http://127.0.0.1:${metricsPort}`, metricsToken, 30_000);
    const gatewayBefore = await source.read();
    const oldSockets = viewer.vncSocketIds();
    const t0 = performance.now();
    await viewer.rejoin(desktopUrl);
    const firstSettled = await settle(60);
    const gatewayAfter = await source.read();
    await viewer.waitReceived(gatewayAfter.toViewer - gatewayBefore.toViewer, 10_000, oldSockets);
    const browser = viewer.countsExcept(oldSockets);
    result.firstFrame = {
      gatewayToViewer: gatewayAfter.toViewer - gatewayBefore.toViewer,
      gatewayFromViewer: gatewayAfter.fromViewer - gatewayBefore.fromViewer,
      browserReceived: browser.received,
      browserSent: browser.sent,
      seconds: (performance.now() - t0) / 1000,
      settled: firstSettled.settled,
    };
    result.client.encodingsRewritten = await viewer.encodingsRewritten();

    // Xvnc draws the cursor into the stream while the desktop's pointer is not where this viewer last put
    // it (xdotool moved it), and the X framebuffer has none: the pointer's surroundings are left out.
    const framebuffer = async () => {
      const r = await driver.run(['framebuffer', display]);
      const [x, y] = (/pointer=(\d+),(\d+)/.exec(r.stderr) ?? []).slice(1).map(Number);
      const pointer =
        x === undefined || y === undefined
          ? null
          : { x0: x - POINTER_BOX, y0: y - POINTER_BOX, x1: x + POINTER_BOX, y1: y + POINTER_BOX };
      return { image: parsePpm(r.stdout), pointer };
    };
    // Until the framebuffer stands still and the canvas matches it, or differs the same way twice in a row
    // (a difference that stays), or the settle time is up (a text cursor blinks for GTK's 10 s after the
    // last key).
    const checkScreen = async (): Promise<ScreenCheck> => {
      const deadline = Date.now() + o.settleSeconds * 1000;
      let previous: number | null = null;
      for (let attempt = 1; ; attempt++) {
        const before = await framebuffer();
        const canvas = await viewer.readCanvas();
        const after = await framebuffer();
        const diff =
          canvas === null
            ? allDiffer(before.image.width, before.image.height, 'no canvas')
            : comparePixels(before.image, canvas, before.pointer);
        const check = { diff, framebufferStable: sameImage(before.image, after.image), attempts: attempt };
        if (check.framebufferStable && (diff.differing === 0 || diff.differing === previous)) return check;
        if (Date.now() >= deadline || attempt >= 20) return check;
        previous = check.framebufferStable ? diff.differing : null;
        // Moving, or a last update still on its way: settle again and look once more.
        await settle();
      }
    };

    for (const id of o.phases) {
      const phase = phaseById(id)!;
      const seconds = o.seconds[id] ?? phase.seconds;
      ctx.log(`  ${setting.id}: ${phase.id} (${seconds} s)`);
      result.phases.push(
        await runPhase(phase, seconds, {
          driver,
          viewer,
          display,
          snap,
          settle,
          checkScreen,
          setting,
          ctx,
          result,
        }),
      );
    }

    result.officeKbps = officeKbps(Object.fromEntries(result.phases.map((p) => [p.id, p.kbps])));
    if (result.officeKbps !== null) {
      result.sessionHourBytes = bytesPerSessionHour(result.officeKbps);
      result.monthlyUsd = monthlyUsd(result.officeKbps);
      result.monthlyUsdWithCloudFront = monthlyUsdWithCloudFront(result.officeKbps);
    }
    return result;
  } catch (e) {
    result.status = 'failed';
    const logs = gateway ? (await gateway.logs()).slice(-1500) : '';
    result.reason = `${e instanceof Error ? e.message : String(e)}${logs ? `\n gateway log: ${logs}` : ''}`;
    return result;
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    result.seconds = (Date.now() - started) / 1000;
  }
}

interface PhaseDeps {
  driver: InstanceDriver;
  viewer: BrowserViewer;
  display: number;
  snap(notes?: string[]): Promise<SideCount & { caughtUp: boolean }>;
  settle(maxSeconds?: number): Promise<{ settled: boolean; waitedMs: number }>;
  checkScreen(): Promise<ScreenCheck>;
  setting: BandwidthSetting;
  ctx: RunContext;
  result: SettingResult;
}

async function runPhase(phase: Phase, seconds: number, d: PhaseDeps): Promise<PhaseResult> {
  const notes: string[] = [];
  await d.driver.must(['setup', d.display, phase.kind], 180_000);
  const before = await d.settle();
  if (!before.settled)
    notes.push(`the screen had not settled after the set-up (${(before.waitedMs / 1000).toFixed(0)} s)`);

  const socketsBefore = d.viewer.vncSocketIds().size;
  const start = await d.snap(notes);
  const t0 = performance.now();
  if (phase.pageHidden) await d.viewer.setHidden(true);
  let shot: Promise<void> | null = null;
  let shotTimer: NodeJS.Timeout | undefined;
  if (phase.kind === 'photo' && !phase.pageHidden) {
    // Mid-phase, ~1 s after a new photo: what the person sees while photos change.
    const at = Math.min(seconds / 2, Math.floor(seconds / 6) * 3 + 1);
    shot = new Promise<void>((resolve) => {
      shotTimer = setTimeout(() => {
        const path = join(d.ctx.shotsDir, `${d.setting.id}.jpg`);
        void mkdir(d.ctx.shotsDir, { recursive: true })
          .then(() => d.viewer.screenshot(path))
          .then(() => {
            d.result.screenshot = relative(repoDir, path);
          })
          .catch((e: unknown) => notes.push(`screenshot failed: ${String(e)}`))
          .finally(resolve);
      }, at * 1000);
    });
  }
  await d.driver.must(['run', d.display, phase.kind, seconds], (seconds + 120) * 1000);
  const elapsed = (performance.now() - t0) / 1000;
  const end = await d.snap(notes);
  if (phase.pageHidden) await d.viewer.setHidden(false);
  clearTimeout(shotTimer);
  if (shot) await shot;
  const after = await d.settle();
  const last = await d.snap(notes);
  const total = minus(last, start);
  const socketsAfter = d.viewer.vncSocketIds().size;
  if (socketsAfter !== socketsBefore)
    notes.push(`the viewer opened ${socketsAfter - socketsBefore} new WebSocket(s) during the phase`);
  const activeCount = minus(end, start);
  const screen = await d.checkScreen();
  await d.driver.must(['teardown', d.display, phase.kind]);
  await d.settle();
  return {
    id: phase.id,
    label: phase.label,
    seconds: elapsed,
    pageHidden: phase.pageHidden === true,
    active: activeCount,
    total,
    kbps: kbps(total.gatewayToViewer, elapsed),
    activeKbps: kbps(activeCount.gatewayToViewer, elapsed),
    sendingKbps: kbps(
      total.gatewayToViewer,
      elapsed + Math.max(0, after.waitedMs - d.ctx.options.quietMs) / 1000,
    ),
    settled: after.settled,
    settleSeconds: after.waitedMs / 1000,
    browserCaughtUp: start.caughtUp && end.caughtUp && last.caughtUp,
    sourceDeviation:
      total.gatewayToViewer > 0
        ? Math.abs(total.gatewayToViewer - total.browserReceived) / total.gatewayToViewer
        : null,
    screen,
    notes,
  };
}
