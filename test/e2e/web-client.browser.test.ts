// The web client in a real browser (Debian's Chromium driven by playwright-core, see chromium.ts)
// against a real gateway process, a real OpenSSH sshd and real TigerVNC + openbox + xterm on loopback:
//   - a first visit asks nothing it has no cookie for (no 401), a wrong password says so, and the
//     sign-up form has one password hint;
//   - a new user signs up, adds an instance with a private key file (the notice stays above the
//     dialog), confirms its host key, connects in one click (no second test), sees the openbox hint,
//     and the remote desktop takes the size of the browser (Resize);
//   - typing reaches the xterm, also straight after a toolbar action (focus goes back to the desktop);
//     "type the clipboard" runs a command; text selected on the desktop arrives with a notice;
//   - a hidden tab receives (almost) nothing while its desktop is busy, and a full refresh on return;
//   - view only says so; full screen hides the toolbar until the pointer reaches the top edge;
//   - the gateway restarting and crashing: the page reconnects by itself to the same desktop;
//   - ending the session shows "ended"; a refused SSH login stops with that cause (no retry loop, no
//     stale link figures) and a failed one-click connect runs the connection test; a busy gateway's
//     Retry-After is followed; a changed host key is refused until re-trusted; a revoked sign-in shows
//     "expired" after a reload.
// Screenshots go to docs/screenshots/ when run with UPDATE_SCREENSHOTS=1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { startSshd, type SshdFixture } from '../helpers/sshd.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { CHROMIUM, launchTestBrowser, type TestBrowser } from './chromium.js';

const execFileP = promisify(execFile);
const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const DIST = join(REPO, 'web', 'dist', 'index.html');
const SCREENSHOTS = join(REPO, 'docs', 'screenshots');
const STEP_MS = 60_000;

const skip = !existsSync(CHROMIUM)
  ? 'needs /usr/bin/chromium'
  : process.getuid?.() !== 0
    ? 'needs root (the sshd fixture creates users)'
    : false;

let sshd: SshdFixture;
let gateway: GatewayProcess;
let browser: TestBrowser;
let page: Page;
let workDir: string;

const email = `e2e-${Date.now()}@example.com`;
const password = 'correct horse battery staple';
let sessionId = '';
let display = -1;
const requests: string[] = [];
const consoleErrors: string[] = [];

before(async () => {
  if (skip) return;
  assert.ok(existsSync(DIST), 'web client not built: run npm --prefix web ci && npm --prefix web run build');
  workDir = await mkdtemp(join(tmpdir(), 'clouddesk-e2e-'));
  sshd = await startSshd({ users: 1 });
  gateway = await startGatewayProcess();
  browser = await launchTestBrowser({ dir: workDir, viewport: { width: 1366, height: 820 } });
  page = await browser.context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
});

after(async () => {
  if (skip) return;
  await browser?.close();
  await gateway?.stop();
  await sshd?.stop();
  await rm(workDir, { recursive: true, force: true });
});

/**
 * A test body whose failure carries the browser's own account when the browser died under it (the
 * flaky "Target page, context or browser has been closed" had none).
 */
function inBrowser(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await fn();
    } catch (e) {
      const why = await browser.diagnose();
      if (why === '') throw e;
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n--- the browser died ---\n${why}`, {
        cause: e,
      });
    }
  };
}

/** Calls the gateway's API from the test (not the browser), as `email`. */
async function api<T>(
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${gateway.url}${path}`, {
    method,
    headers: {
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

async function accessToken(): Promise<string> {
  const res = await api<{ data: { accessToken: string } }>('POST', '/api/auth/login', { email, password });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.data.accessToken;
}

async function instanceId(token: string): Promise<string> {
  const list = await api<{ data: Array<{ id: string }> }>('GET', '/api/instances', undefined, token);
  return list.body.data[0]!.id;
}

/** Runs a command on the instance as the test user, in the desktop's X display. */
async function onDesktop(command: string): Promise<void> {
  const user = sshd.users[0]!;
  const keyFile = join(workDir, 'id_ssh');
  await writeFile(keyFile, user.privateKey, { mode: 0o600 });
  await execFileP('ssh', [
    '-i',
    keyFile,
    '-p',
    String(sshd.port),
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'LogLevel=ERROR',
    `${user.username}@${sshd.host}`,
    // The X cookie is where the desktop service keeps it (src/desktop/remote-script.ts): <N>-<Xvnc PID>.xauth,
    // with the PID of the display's live Xvnc from its X lock (a desktop that died unstopped, as earlier
    // tests' may, leaves its own cookie file behind).
    `export DISPLAY=:${display} XAUTHORITY=/tmp/clouddesk-$(id -u)/${display}-$(tr -cd 0-9 < /tmp/.X${display}-lock).xauth; ${command}`,
  ]);
}

/** Pixel facts about the desktop canvas, computed in the page. */
interface CanvasFacts {
  width: number;
  height: number;
  /** Pixels that are not (near) black: a desktop, not a black screen. */
  nonBlack: number;
  /** Bounding box of the xterm's magenta background, and the dark (text) pixels inside it. */
  marker: { x0: number; y0: number; x1: number; y1: number; count: number; text: number } | null;
}

// Runs in the page. Plain JavaScript in a string: this tsconfig has no DOM types (it is the server's).
const CANVAS_FACTS = `(() => {
  const canvas = document.querySelector('[data-testid="screen"] canvas');
  if (!canvas || canvas.width === 0) return { width: 0, height: 0, nonBlack: 0, marker: null };
  const { data, width, height } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let nonBlack = 0, x0 = width, y0 = height, x1 = -1, y1 = -1, count = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const r = data[i], g = data[i + 1], b = data[i + 2];
      if (r + g + b > 60) nonBlack++;
      if (r > 200 && g < 90 && b > 200) {
        count++;
        if (x < x0) x0 = x;
        if (y < y0) y0 = y;
        if (x > x1) x1 = x;
        if (y > y1) y1 = y;
      }
    }
  }
  if (count < 500) return { width, height, nonBlack, marker: null };
  let text = 0;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const i = (y * width + x) * 4;
      if (data[i] + data[i + 1] + data[i + 2] < 200) text++;
    }
  }
  return { width, height, nonBlack, marker: { x0, y0, x1, y1, count, text } };
})()`;

async function canvasFacts(): Promise<CanvasFacts> {
  return page.evaluate<CanvasFacts>(CANVAS_FACTS);
}

/** Polls until `check` returns a value (pixels and bytes arrive as frames; there is no event to wait on). */
async function poll<T>(
  check: () => Promise<T | null>,
  what: string,
  describe: () => Promise<string> | string,
): Promise<T> {
  const deadline = Date.now() + STEP_MS;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== null) return value;
    await page.waitForTimeout(200);
  }
  throw new Error(`never saw ${what}; ${await describe()}\n${(await gateway.logs()).slice(-3000)}`);
}

async function waitForCanvas(ok: (f: CanvasFacts) => boolean, what: string): Promise<CanvasFacts> {
  let last: CanvasFacts | null = null;
  return poll(
    async () => {
      last = await canvasFacts();
      return ok(last) ? last : null;
    },
    `the canvas show ${what}`,
    () => `last: ${JSON.stringify(last)}`,
  );
}

async function viewerState(): Promise<string | null> {
  return page.getAttribute('[data-testid="viewer"]', 'data-state');
}

async function waitForViewerState(state: string): Promise<void> {
  await page.waitForSelector(`[data-testid="viewer"][data-state="${state}"]`, { timeout: STEP_MS });
}

/** Where on the page a canvas pixel is. */
async function pagePoint(x: number, y: number): Promise<{ x: number; y: number }> {
  const box = (await page.locator('[data-testid="screen"] canvas').boundingBox())!;
  const facts = await canvasFacts();
  const scale = box.width / facts.width;
  return { x: box.x + x * scale, y: box.y + y * scale };
}

/**
 * Screenshots for the README: written to docs/screenshots/ with UPDATE_SCREENSHOTS=1, otherwise into
 * the test's temp folder (so a plain test run leaves the tracked files alone).
 */
async function shoot(name: string, options: { keepToasts?: boolean } = {}): Promise<void> {
  const dir = process.env.UPDATE_SCREENSHOTS === '1' ? SCREENSHOTS : workDir;
  await mkdir(dir, { recursive: true });
  // Notices that happen to be on screen would only date the picture.
  if (!options.keepToasts)
    await page.evaluate(`document.querySelectorAll('.toast').forEach((t) => t.remove())`);
  await page.screenshot({ path: join(dir, name) });
}

/**
 * The page's top layer (modal dialogs, popovers), bottom to top, as `TAG.class`. Hit testing cannot
 * tell what is drawn on top here: a modal dialog makes everything else inert, notices included.
 */
async function topLayer(): Promise<string[]> {
  const cdp = await browser.context.newCDPSession(page);
  try {
    await cdp.send('DOM.getDocument', { depth: 0 });
    const { nodeIds } = await cdp.send('DOM.getTopLayerElements');
    const names: string[] = [];
    for (const nodeId of nodeIds) {
      const { node } = await cdp.send('DOM.describeNode', { nodeId });
      if (node.nodeName.startsWith('::')) continue;
      const attrs = node.attributes ?? [];
      const cls = attrs[attrs.indexOf('class') + 1] ?? '';
      names.push(`${node.nodeName}.${cls.split(' ')[0]}`);
    }
    return names;
  } finally {
    await cdp.detach();
  }
}

/**
 * Makes the page believe it is hidden (or visible again) and tells it. Headless Chromium keeps every
 * tab "visible" (no window is ever occluded) and has no CDP command for it, so the document's
 * visibility is overridden in the page: the client reacts to exactly what a browser would report.
 */
async function setHidden(hidden: boolean): Promise<void> {
  await page.evaluate(`(() => {
    const state = ${hidden ? "'hidden'" : "'visible'"};
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => state === 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  })()`);
}

void test(
  'a first visit asks for no token, a wrong password is refused clearly, and sign-up has one password hint',
  { skip, timeout: 2 * STEP_MS },
  inBrowser(async () => {
    const created = await api('POST', '/api/auth/register', { email, password });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    // The registration above set no cookie in the browser: it lands on the sign-in page.
    await page.goto(gateway.url);
    await page.waitForURL(/\/sign-in/);
    assert.deepEqual(
      requests.filter((r) => r.includes('/api/auth/refresh')),
      [],
      'nothing to refresh on a first visit: no 401 in the console',
    );
    assert.deepEqual(consoleErrors, []);

    await page.click('text=Create an account');
    await page.waitForURL(/\/sign-up/);
    await page.fill('input[name="email"]', 'someone@example.com');
    await page.fill('input[name="password"]', 'short');
    await page.click('button[type="submit"]');
    await page.waitForSelector('[data-testid="password-hint"].field-error');
    assert.equal(await page.textContent('[data-testid="password-hint"]'), 'At least 8 characters.');
    assert.equal(await page.textContent('[data-testid="auth-error"]'), '', 'one hint, not two');

    await page.click('text=Sign in');
    await page.waitForURL(/\/sign-in/);
    await page.fill('input[name="email"]', email);
    await page.fill('input[name="password"]', 'not the password');
    await page.click('button[type="submit"]');
    await page.waitForSelector('[data-testid="auth-error"]:not(:empty)');
    assert.equal(await page.textContent('[data-testid="auth-error"]'), 'Wrong email or password.');
  }),
);

void test(
  'sign in, add an instance with a key file, confirm its host key, connect in one click with openbox and work on the desktop',
  { skip, timeout: 8 * STEP_MS },
  inBrowser(async () => {
    const user = sshd.users[0]!;
    await page.fill('input[name="password"]', password);
    await page.click('button[type="submit"]');
    await page.waitForURL(/\/instances$/);
    await page.waitForSelector('text=No instances yet');

    // Add the instance: the private key goes in as a file.
    const keyPath = join(workDir, 'id_ed25519');
    await writeFile(keyPath, user.privateKey, { mode: 0o600 });
    await page.click('[data-testid="add-instance"]');
    await page.fill('input[name="name"]', 'Dev box');
    await page.fill('input[name="host"]', sshd.host);
    await page.fill('input[name="port"]', String(sshd.port));
    await page.fill('input[name="username"]', user.username);
    await page.setInputFiles('[data-testid="key-file"]', keyPath);
    await page.waitForSelector('text=OpenSSH private key');
    await page.click('dialog button[type="submit"]');

    // Adding runs the connection test: the fingerprint is shown and must be confirmed. The "added"
    // notice is drawn above that dialog and its backdrop, not under them.
    const check = page.locator('[data-testid="connection-check"]');
    await check.locator('[data-testid="trust-host-key"]').waitFor();
    await page.locator('.toast', { hasText: 'Dev box added' }).waitFor();
    assert.deepEqual((await topLayer()).slice(-1), ['DIV.toasts'], 'the notice is the topmost layer');
    assert.equal(
      await check.locator('[data-testid="fingerprint"]').first().textContent(),
      sshd.hostKeyFingerprint,
    );
    await check.locator('[data-testid="trust-host-key"]').click();
    await page.waitForSelector('text=Trusted and pinned');
    await page.waitForSelector('.check-ok >> text=Openbox');
    await shoot('connection-test.png');
    await page.click('dialog >> text=Done');
    await page.waitForSelector('[data-testid="instance"] >> text=Host key pinned');

    // Connect: the instance is known now (key pinned, desktops found), so one click starts it without
    // testing again.
    const testsBefore = requests.filter((r) => r.endsWith('/test')).length;
    // This machine has xfce too: the card offers the desktops the test found.
    await page.selectOption('[data-testid="instance"] [data-testid="desktop-choice"]', 'openbox');
    await page.click('[data-testid="instance"] [data-testid="connect"]');
    await page.waitForURL(/\/desktop\//);
    assert.equal(
      requests.filter((r) => r.endsWith('/test')).length,
      testsBefore,
      'no second connection test',
    );
    sessionId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    await waitForViewerState('connected');
    await waitForCanvas((f) => f.width > 0 && f.nonBlack > 0, 'a frame');

    // Openbox is a bare screen: a one-time hint says where its menu is.
    const hint = page.locator('[data-testid="desktop-hint"]');
    await hint.waitFor();
    assert.match((await hint.textContent()) ?? '', /right-click the desktop/);

    // Resize is the default: the remote desktop takes the size of the browser's desktop area.
    const stage = await page.evaluate<{ width: number; height: number }>(
      `(() => { const s = document.querySelector('[data-testid="screen"]'); return { width: s.clientWidth, height: s.clientHeight }; })()`,
    );
    await waitForCanvas(
      (f) => f.width === stage.width && f.height === stage.height,
      `the desktop resized to ${stage.width}x${stage.height}`,
    );

    // Start an xterm in that desktop, as the instance user would, with a colour we can find.
    const token = await accessToken();
    const active = await api<{ data: Array<{ id: string; display: number }> }>(
      'GET',
      '/api/sessions/active',
      undefined,
      token,
    );
    display = active.body.data.find((s) => s.id === sessionId)!.display;
    await onDesktop(
      `setsid -f xterm -T clouddesk-e2e -bg '#ff00ff' -fg black -fa Monospace -fs 14 -geometry 60x12+80+80 </dev/null >/dev/null 2>&1`,
    );
    const withXterm = await waitForCanvas((f) => f.marker !== null, 'the xterm');
    const m = withXterm.marker!;

    // Keyboard input reaches it: click into the xterm (focus), type, and its text pixels change.
    const inXterm = await pagePoint((m.x0 + m.x1) / 2, (m.y0 + m.y1) / 2);
    await page.mouse.click(inXterm.x, inXterm.y);
    await page.click('[data-testid="desktop-hint"] >> text=Got it');
    await page.keyboard.type('echo CLOUDDESK-E2E-TYPED-THIS ###################', { delay: 10 });
    const typed = await waitForCanvas(
      (f) => f.marker !== null && f.marker.text > m.text + 300,
      'the typed text',
    );
    assert.equal(await viewerState(), 'connected');

    // After a toolbar action the keyboard is back on the desktop: typing needs no click.
    await page.selectOption('[data-testid="quality"]', 'high');
    assert.equal(
      await page.evaluate<boolean>(
        `document.querySelector('[data-testid="screen"]').contains(document.activeElement)`,
      ),
      true,
      'focus went back to the desktop',
    );
    await page.keyboard.type(' ################', { delay: 10 });
    await waitForCanvas(
      (f) => f.marker !== null && f.marker.text > typed.marker!.text + 150,
      'text typed right after choosing a quality',
    );
    await page.selectOption('[data-testid="quality"]', 'auto');
    await page.keyboard.press('Control+U'); // clear the line in the shell

    // "Type it" sends the clipboard panel's text as key presses: here, a command the shell runs.
    const marker = `/tmp/clouddesk-typed-${process.pid}-${Date.now()}`;
    await page.click('[data-testid="clipboard-menu"]');
    await page.fill('[data-testid="clipboard-text"]', `touch ${marker}\n`);
    await page.click('[data-testid="clipboard-type"]');
    await poll(
      () => Promise.resolve(existsSync(marker) ? true : null),
      `the typed command create ${marker}`,
      async () => (await page.textContent('[data-testid="clipboard-status"]')) ?? '',
    );
    await rm(marker, { force: true });
    // "Send to clipboard" says how to paste where Ctrl+Shift+V does not work (xterm).
    await page.click('[data-testid="clipboard-menu"]');
    await page.click('[data-testid="clipboard-send"]');
    await page.locator('.toast', { hasText: 'Shift+Insert' }).waitFor();

    // Text selected on the desktop arrives, and the person is told.
    // A drag, not a double click: under load the two clicks can reach the X server further apart than
    // xterm's double-click time, and then nothing is selected (seen once in 20 runs).
    const line = await pagePoint(m.x0 + 8, m.y0 + 12);
    await page.mouse.move(line.x, line.y);
    await page.mouse.down();
    await page.mouse.move(line.x + 120, line.y, { steps: 5 });
    await page.mouse.move(line.x + 240, line.y, { steps: 5 });
    await page.mouse.up();
    await page.locator('[data-testid="clipboard-badge"]:not([hidden])').waitFor();
    await page.locator('.toast', { hasText: 'The desktop copied' }).waitFor();

    const rate = await page.textContent('[data-testid="rate"]');
    assert.match(rate ?? '', /kbit\/s|Mbit\/s/);
    // The round trip to the desktop is measured through the gateway (a one-pixel update request).
    await page.locator('[data-testid="rtt"]', { hasText: /RTT \d+ ms/ }).waitFor();
    await page.locator('[data-testid="auto-quality"]', { hasText: /Automatic: quality \d/ }).waitFor();
    await page.mouse.move(inXterm.x + 400, inXterm.y + 300);
    await shoot('desktop.png');

    await hiddenTabCostsNothing();

    // View only is said in words, not only by a pressed button.
    await page.click('[data-testid="view-only"]');
    await page.locator('[data-testid="view-only-badge"]:not([hidden])').waitFor();
    assert.equal(await page.textContent('[data-testid="viewer-status"]'), 'Connected · view only');
    await page.click('[data-testid="view-only"]');
    assert.equal(await page.textContent('[data-testid="viewer-status"]'), 'Connected');

    // Full screen: only the desktop (at the screen's size); the toolbar comes back at the top edge.
    await page.click('[data-testid="fullscreen"]');
    await page.waitForSelector('[data-testid="viewer"].is-fullscreen');
    // The bars slide away (a short transition): wait until the toolbar is above the screen.
    await poll(
      async () => {
        const bar = await page.locator('.viewer-toolbar').boundingBox();
        return bar && bar.y + bar.height <= 1 ? true : null;
      },
      'the toolbar slide away in full screen',
      () => '',
    );
    const full = await page.evaluate<{ width: number; height: number }>(
      `(() => { const s = document.querySelector('[data-testid="screen"]'); return { width: s.clientWidth, height: s.clientHeight }; })()`,
    );
    assert.ok(full.height > stage.height, 'the desktop area grew');
    await waitForCanvas((f) => f.width === full.width && f.height === full.height, 'the full-screen size');
    await page.mouse.move(600, 0);
    await page.waitForSelector('[data-testid="viewer"].reveal-chrome');
    // (Polled with evaluate: the page's CSP forbids the string eval that waitForFunction uses.)
    await poll(
      async () =>
        (await page.evaluate<number>(
          `document.querySelector('.viewer-toolbar').getBoundingClientRect().top`,
        )) >= 0
          ? true
          : null,
      'the toolbar slide in at the top edge',
      () => '',
    );
    await page.click('[data-testid="fullscreen"]');
    await page.waitForSelector('[data-testid="viewer"]:not(.is-fullscreen)');

    // The gateway restarts (drains: viewers are told to reconnect), then crashes outright: each time
    // the page reconnects by itself to the same desktop, with the typed text still on screen.
    const settled = await waitForCanvas((f) => f.marker !== null, 'the xterm before the restarts');
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      const url = page.url();
      const reconnecting = page.waitForSelector('[data-testid="viewer"][data-state="reconnecting"]', {
        timeout: STEP_MS,
      });
      await gateway.restart({ signal });
      await reconnecting;
      await waitForViewerState('connected');
      assert.equal(page.url(), url, 'no page reload, same session');
      const again = await waitForCanvas(
        (f) => f.marker !== null && f.marker.text > settled.marker!.text * 0.8,
        `the same xterm with its text after ${signal}`,
      );
      assert.ok(Math.abs(again.marker!.x0 - typed.marker!.x0) <= 2, 'the xterm did not move: same desktop');
    }

    // Leaving the viewer keeps the desktop running: the instance offers to resume it.
    await page.click('a[aria-label^="Back to instances"]');
    await page.waitForSelector('[data-testid="instance"] >> text=Openbox running');
    await shoot('instances.png');
    await page.click('[data-testid="instance"] [data-testid="resume"]');
    await waitForViewerState('connected');
    assert.equal(decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!), sessionId);
    await waitForCanvas((f) => f.marker !== null, 'the xterm after resuming');
    assert.equal(
      await page.locator('[data-testid="desktop-hint"]').isHidden(),
      true,
      'the hint was one-time',
    );
  }),
);

/**
 * While the tab is hidden the desktop streams busily, yet (almost) no bytes reach the browser; on
 * return a full refresh arrives. Bytes are counted from Chromium's own WebSocket frames (CDP).
 */
async function hiddenTabCostsNothing(): Promise<void> {
  const cdp = await browser.context.newCDPSession(page);
  let received = 0;
  cdp.on('Network.webSocketFrameReceived', (e: { response: { payloadData: string; opcode: number } }) => {
    received += e.response.opcode === 2 ? Buffer.from(e.response.payloadData, 'base64').length : 0;
  });
  await cdp.send('Network.enable');
  /** Bytes that arrive in the next `ms`. */
  const bytesOver = async (ms: number) => {
    const start = received;
    await page.waitForTimeout(ms);
    return received - start;
  };
  // A second xterm scrolls a listing over and over: a busy desktop.
  await onDesktop(
    `setsid -f sh -c 'echo $$ > "$HOME/.clouddesk-busy.pid"; exec xterm -T clouddesk-busy -geometry 100x30+300+200 -e sh -c "while :; do ls -l /usr/bin; done"' </dev/null >/dev/null 2>&1`,
  );
  const WINDOW_MS = 3_000;
  let visible = 0;
  for (let i = 0; i < 10 && visible < 100_000; i++) visible = await bytesOver(WINDOW_MS);
  assert.ok(
    visible >= 100_000,
    `the busy desktop streams while visible (${visible} bytes in ${WINDOW_MS} ms)`,
  );

  await setHidden(true);
  await page.waitForSelector('[data-testid="viewer"][data-updates="paused"]');
  // What was already on its way when the tab was hidden still arrives: wait until it has.
  await poll(
    async () => ((await bytesOver(500)) === 0 ? true : null),
    'the stream stop while hidden',
    () => `still receiving (${received} bytes so far)`,
  );
  const hidden = await bytesOver(WINDOW_MS);
  // ≤ 1 kbit/s: at most 375 bytes in 3 s (the gateway's pings are control frames, not counted).
  assert.ok(
    hidden <= (1_000 / 8) * (WINDOW_MS / 1_000),
    `hidden tab received ${hidden} bytes in ${WINDOW_MS} ms`,
  );
  assert.equal(await page.textContent('[data-testid="viewer-status"]'), 'Paused while this tab is hidden');

  await setHidden(false);
  await page.waitForSelector('[data-testid="viewer"][data-updates="live"]');
  let back = 0;
  for (let i = 0; i < 10 && back < 100_000; i++) back = await bytesOver(WINDOW_MS);
  assert.ok(back >= 100_000, `updates resume on return (${back} bytes in ${WINDOW_MS} ms)`);
  await onDesktop(`kill "$(cat "$HOME/.clouddesk-busy.pid")"; rm -f "$HOME/.clouddesk-busy.pid"`);
  await cdp.detach();
}

void test(
  'ending the session shows that it ended, also after a reload',
  { skip, timeout: 2 * STEP_MS },
  inBrowser(async () => {
    assert.ok(sessionId, 'needs the connected session of the previous test');
    const token = await accessToken();
    const ended = await api('POST', `/api/sessions/disconnect/${encodeURIComponent(sessionId)}`, {}, token);
    assert.equal(ended.status, 200, JSON.stringify(ended.body));
    await waitForViewerState('ended');
    assert.match((await page.textContent('[data-testid="overlay-ended"]')) ?? '', /This session has ended/);

    await page.reload();
    await waitForViewerState('ended');
    assert.match((await page.textContent('[data-testid="overlay-ended"]')) ?? '', /This session has ended/);
  }),
);

void test(
  'a refused SSH login stops the viewer with that cause, a failed one-click connect runs the test, a busy gateway is waited for',
  { skip, timeout: 4 * STEP_MS },
  inBrowser(async () => {
    const user = sshd.users[0]!;
    const token = await accessToken();
    const id = await instanceId(token);

    // A busy gateway (503 OVERLOADED with Retry-After) is asked again after it, with a countdown.
    let turnedAway = 0;
    await page.route('**/api/sessions/connect', async (route) => {
      if (turnedAway++ > 0) return route.continue();
      await route.fulfill({
        status: 503,
        headers: { 'Retry-After': '2', 'Content-Type': 'application/json' },
        body: JSON.stringify({ error: { code: 'OVERLOADED', message: 'The server is busy; retry shortly' } }),
      });
    });
    await page.goto(`${gateway.url}/instances`);
    await page.click('[data-testid="instance"] [data-testid="connect"]');
    await page.locator('dialog', { hasText: /The server is busy, retrying in \d s/ }).waitFor();
    await page.waitForURL(/\/desktop\//);
    await page.unroute('**/api/sessions/connect');
    assert.equal(turnedAway, 2, 'asked once more after Retry-After');
    sessionId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    await waitForViewerState('connected');

    // The instance's login stops working (a wrong password), and the viewer's SSH connection is gone.
    const broken = await api(
      'PATCH',
      `/api/instances/${id}`,
      { auth: { type: 'password', password: 'wrong' } },
      token,
    );
    assert.equal(broken.status, 200, JSON.stringify(broken.body));
    await gateway.restart({ signal: 'SIGKILL' });
    await waitForViewerState('failed');
    const failed = (await page.textContent('[data-testid="overlay-failed"]')) ?? '';
    assert.match(failed, /refused the SSH login/);
    assert.doesNotMatch(failed, /dropped|Reconnecting/);
    assert.equal(await page.textContent('[data-testid="rtt"]'), 'RTT —', 'no stale round trip');
    assert.equal(await page.textContent('[data-testid="rate"]'), '↓ — ↑ —', 'no stale throughput');
    const opens = requests.filter((r) => r.includes('/ticket')).length;
    await page.waitForTimeout(3_000);
    assert.equal(requests.filter((r) => r.includes('/ticket')).length, opens, 'no retrying what cannot heal');
    await shoot('desktop-login-refused.png');

    // A one-click connect that fails that way runs the connection test, which shows the cause.
    await api('POST', `/api/sessions/disconnect/${encodeURIComponent(sessionId)}`, {}, token);
    await page.goto(`${gateway.url}/instances`);
    await page.click('[data-testid="instance"] [data-testid="connect"]');
    await page
      .locator('[data-testid="connection-check"] .check-error', { hasText: 'refused the login' })
      .waitFor();
    await page.click('dialog >> text=Cancel');

    const fixed = await api(
      'PATCH',
      `/api/instances/${id}`,
      { auth: { type: 'privateKey', privateKey: user.privateKey } },
      token,
    );
    assert.equal(fixed.status, 200, JSON.stringify(fixed.body));
  }),
);

void test(
  'a changed host key is refused loudly until the owner re-trusts it',
  { skip, timeout: 2 * STEP_MS },
  inBrowser(async () => {
    const token = await accessToken();
    const id = await instanceId(token);
    // As if the instance had been rebuilt since: the pinned key is not the one it presents.
    const wrong = `SHA256:${'A'.repeat(43)}`;
    const patched = await api('PATCH', `/api/instances/${id}`, { hostKeyFingerprint: wrong }, token);
    assert.equal(patched.status, 200, JSON.stringify(patched.body));

    await page.goto(`${gateway.url}/instances`);
    await page.click('[data-testid="instance"] [data-testid="test"]');
    const check = page.locator('[data-testid="connection-check"]');
    await check.locator('text=The host key of this instance has changed').waitFor();
    assert.equal(
      await check.locator('[data-testid="presented-fingerprint"]').textContent(),
      sshd.hostKeyFingerprint,
    );
    const retrust = check.locator('[data-testid="retrust-host-key"]');
    assert.equal(await retrust.isDisabled(), true, 're-trusting needs an explicit confirmation');
    await check.locator('[data-testid="mismatch-understood"]').check();
    await retrust.click();
    await check.locator('text=Matches the pinned key').waitFor();
    await page.click('dialog >> text=Done');
    const after = await api<{ data: { hostKeyFingerprint: string } }>(
      'GET',
      `/api/instances/${id}`,
      undefined,
      token,
    );
    assert.equal(after.body.data.hostKeyFingerprint, sshd.hostKeyFingerprint);
  }),
);

void test(
  'a sign-in revoked elsewhere shows "session expired" after a reload',
  { skip, timeout: 2 * STEP_MS },
  inBrowser(async () => {
    await page.goto(`${gateway.url}/instances`);
    await page.waitForSelector('[data-testid="instance"]');
    // Sign out that browser's sign-in from outside (as another device or an admin would).
    const cookie = (await browser.context.cookies(`${gateway.url}/api/auth/refresh`)).find(
      (c) => c.name === 'cd_refresh',
    );
    assert.ok(cookie, 'the refresh token lives in the cd_refresh cookie');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    const out = await api('POST', '/api/auth/logout', { refreshToken: cookie.value });
    assert.equal(out.status, 204);
    // Nothing secret is kept where page scripts could read it.
    const stored = await page.evaluate<string>(
      'JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage })',
    );
    assert.doesNotMatch(stored, /eyJ/);

    await page.reload();
    await page.waitForURL(/\/sign-in/);
    assert.equal(await page.textContent('[data-testid="flash"]'), 'Your session has expired. Sign in again.');
  }),
);
