// The web client in a real browser (Debian's Chromium driven by playwright-core) against a real
// gateway process, a real OpenSSH sshd and real TigerVNC + openbox + xterm on loopback:
//   - a wrong password says so;
//   - a new user signs up, adds an instance with a private key file, confirms its host key, connects
//     with openbox, and the canvas shows the desktop (an xterm we start there, found by its colour);
//   - typing reaches the xterm;
//   - the gateway restarting (viewers told to reconnect) and the gateway crashing (socket dropped):
//     the page reconnects by itself to the same desktop, the typed text still there;
//   - ending the session shows "ended"; a changed host key is refused until re-trusted; a revoked
//     sign-in shows "expired" after a reload.
// Screenshots of the instances page, a connection test and a connected desktop go to
// docs/screenshots/ when run with UPDATE_SCREENSHOTS=1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startSshd, type SshdFixture } from '../helpers/sshd.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';

const execFileP = promisify(execFile);
const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const DIST = join(REPO, 'web', 'dist', 'index.html');
const SCREENSHOTS = join(REPO, 'docs', 'screenshots');
const CHROMIUM = '/usr/bin/chromium';
const STEP_MS = 60_000;

const skip = !existsSync(CHROMIUM)
  ? 'needs /usr/bin/chromium'
  : process.getuid?.() !== 0
    ? 'needs root (the sshd fixture creates users)'
    : false;

let sshd: SshdFixture;
let gateway: GatewayProcess;
let context: BrowserContext;
let page: Page;
let profileDir: string;
let workDir: string;

const email = `e2e-${Date.now()}@example.com`;
const password = 'correct horse battery staple';
let sessionId = '';
let display = -1;

before(async () => {
  if (skip) return;
  assert.ok(existsSync(DIST), 'web client not built: run npm --prefix web ci && npm --prefix web run build');
  workDir = await mkdtemp(join(tmpdir(), 'clouddesk-e2e-'));
  profileDir = await mkdtemp(join(tmpdir(), 'clouddesk-chromium-'));
  sshd = await startSshd({ users: 1 });
  gateway = await startGatewayProcess();
  context = await chromium.launchPersistentContext(profileDir, {
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
    ],
    viewport: { width: 1366, height: 820 },
    colorScheme: 'light',
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_MS);
});

after(async () => {
  if (skip) return;
  await context?.close().catch(() => undefined);
  await gateway?.stop();
  await sshd?.stop();
  await rm(profileDir, { recursive: true, force: true });
  await rm(workDir, { recursive: true, force: true });
});

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

/** Polls the canvas until `ok` holds (pixels arrive as frames; there is no event to wait on). */
async function waitForCanvas(ok: (f: CanvasFacts) => boolean, what: string): Promise<CanvasFacts> {
  const deadline = Date.now() + STEP_MS;
  let last: CanvasFacts | null = null;
  while (Date.now() < deadline) {
    last = await canvasFacts();
    if (ok(last)) return last;
    await page.waitForTimeout(200);
  }
  throw new Error(
    `canvas never showed ${what}; last: ${JSON.stringify(last)}\n${(await gateway.logs()).slice(-3000)}`,
  );
}

async function viewerState(): Promise<string | null> {
  return page.getAttribute('[data-testid="viewer"]', 'data-state');
}

async function waitForViewerState(state: string): Promise<void> {
  await page.waitForSelector(`[data-testid="viewer"][data-state="${state}"]`, { timeout: STEP_MS });
}

/**
 * Screenshots for the README: written to docs/screenshots/ with UPDATE_SCREENSHOTS=1, otherwise into
 * the test's temp folder (so a plain test run leaves the tracked files alone).
 */
async function shoot(name: string): Promise<void> {
  const dir = process.env.UPDATE_SCREENSHOTS === '1' ? SCREENSHOTS : workDir;
  await mkdir(dir, { recursive: true });
  // Notices that happen to be on screen would only date the picture.
  await page.evaluate(`document.querySelectorAll('.toast').forEach((t) => t.remove())`);
  await page.screenshot({ path: join(dir, name) });
}

void test('a wrong password is refused with a clear message', { skip, timeout: 2 * STEP_MS }, async () => {
  const created = await api('POST', '/api/auth/register', { email, password });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  // The registration above set no cookie in the browser: it lands on the sign-in page.
  await page.goto(gateway.url);
  await page.waitForURL(/\/sign-in/);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', 'not the password');
  await page.click('button[type="submit"]');
  await page.waitForSelector('[data-testid="auth-error"]:not(:empty)');
  assert.equal(await page.textContent('[data-testid="auth-error"]'), 'Wrong email or password.');
});

void test(
  'sign in, add an instance with a key file, confirm its host key, connect with openbox and see the desktop',
  { skip, timeout: 5 * STEP_MS },
  async () => {
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

    // Adding runs the connection test: the fingerprint is shown and must be confirmed.
    const check = page.locator('[data-testid="connection-check"]');
    await check.locator('[data-testid="trust-host-key"]').waitFor();
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

    // Connect: the dialog checks again, offers the desktop environments the instance has.
    await page.click('[data-testid="instance"] [data-testid="connect"]');
    await page.click('[data-testid="de-openbox"]');
    await page.click('[data-testid="start-desktop"]');
    await page.waitForURL(/\/desktop\//);
    sessionId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    await waitForViewerState('connected');
    const first = await waitForCanvas((f) => f.width > 0 && f.nonBlack > 0, 'a frame');
    assert.ok(first.width >= 640 && first.height >= 480, `desktop size ${first.width}x${first.height}`);

    // Start an xterm in that desktop, as the instance user would, with a colour we can find. The X
    // cookie is where the desktop service keeps it (src/desktop/remote-script.ts).
    const token = await accessToken();
    const active = await api<{ data: Array<{ id: string; display: number }> }>(
      'GET',
      '/api/sessions/active',
      undefined,
      token,
    );
    display = active.body.data.find((s) => s.id === sessionId)!.display;
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
      `DISPLAY=:${display} XAUTHORITY=/tmp/clouddesk-$(id -u)/${display}.xauth setsid -f xterm -T clouddesk-e2e -bg '#ff00ff' -fg black -fa Monospace -fs 14 -geometry 60x12+80+80 </dev/null >/dev/null 2>&1`,
    ]);
    const withXterm = await waitForCanvas((f) => f.marker !== null, 'the xterm');
    const m = withXterm.marker!;

    // Keyboard input reaches it: click into the xterm (focus), type, and its text pixels change.
    const box = (await page.locator('[data-testid="screen"] canvas').boundingBox())!;
    const scale = box.width / withXterm.width;
    await page.mouse.click(box.x + ((m.x0 + m.x1) / 2) * scale, box.y + ((m.y0 + m.y1) / 2) * scale);
    await page.keyboard.type('echo CLOUDDESK-E2E-TYPED-THIS ################################', { delay: 10 });
    const typed = await waitForCanvas(
      (f) => f.marker !== null && f.marker.text > m.text + 400,
      'the typed text',
    );
    assert.equal(await viewerState(), 'connected');
    const rate = await page.textContent('[data-testid="rate"]');
    assert.match(rate ?? '', /kbit\/s|Mbit\/s/);
    // The round trip to the desktop is measured through the gateway (a one-pixel update request).
    await page.locator('[data-testid="rtt"]', { hasText: /RTT \d+ ms/ }).waitFor();
    await page.mouse.move(box.x + box.width - 4, box.y + box.height - 4);
    await shoot('desktop.png');

    // The gateway restarts (drains: viewers are told to reconnect), then crashes outright: each time
    // the page reconnects by itself to the same desktop, with the typed text still on screen.
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
        (f) => f.marker !== null && f.marker.text > typed.marker!.text * 0.8,
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
    await waitForCanvas(
      (f) => f.marker !== null && f.marker.text > typed.marker!.text * 0.8,
      'the xterm after resuming',
    );
  },
);

void test(
  'ending the session shows that it ended, also after a reload',
  { skip, timeout: 2 * STEP_MS },
  async () => {
    assert.ok(sessionId, 'needs the connected session of the previous test');
    const token = await accessToken();
    const ended = await api('POST', `/api/sessions/disconnect/${encodeURIComponent(sessionId)}`, {}, token);
    assert.equal(ended.status, 200, JSON.stringify(ended.body));
    await waitForViewerState('ended');
    assert.match((await page.textContent('[data-testid="overlay-ended"]')) ?? '', /This session has ended/);

    await page.reload();
    await waitForViewerState('ended');
    assert.match((await page.textContent('[data-testid="overlay-ended"]')) ?? '', /This session has ended/);
  },
);

void test(
  'a changed host key is refused loudly until the owner re-trusts it',
  { skip, timeout: 2 * STEP_MS },
  async () => {
    const token = await accessToken();
    const list = await api<{ data: Array<{ id: string }> }>('GET', '/api/instances', undefined, token);
    const instanceId = list.body.data[0]!.id;
    // As if the instance had been rebuilt since: the pinned key is not the one it presents.
    const wrong = `SHA256:${'A'.repeat(43)}`;
    const patched = await api('PATCH', `/api/instances/${instanceId}`, { hostKeyFingerprint: wrong }, token);
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
      `/api/instances/${instanceId}`,
      undefined,
      token,
    );
    assert.equal(after.body.data.hostKeyFingerprint, sshd.hostKeyFingerprint);
  },
);

void test(
  'a sign-in revoked elsewhere shows "session expired" after a reload',
  { skip, timeout: 2 * STEP_MS },
  async () => {
    await page.goto(`${gateway.url}/instances`);
    await page.waitForSelector('[data-testid="instance"]');
    // Sign out that browser's sign-in from outside (as another device or an admin would).
    const cookie = (await context.cookies(`${gateway.url}/api/auth/refresh`)).find(
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
  },
);
