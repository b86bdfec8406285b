// The Files panel in Chromium (issue 12) against a real gateway process, sshd (internal-sftp) and a
// TigerVNC + openbox desktop: a file dropped onto the desktop view uploads into the home folder with its
// progress bar and is then listed; a click on it downloads it through the browser's own download (a
// streamed link, not a blob built in the page); a large upload cancelled from its row leaves no file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { startSshd, type SshdFixture } from '../helpers/sshd.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { CHROMIUM, launchTestBrowser, type TestBrowser } from './chromium.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const DIST = join(REPO, 'web', 'dist', 'index.html');
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
const email = `files-e2e-${Date.now()}@example.com`;
const password = 'correct horse battery staple';
const stamp = Date.now().toString(36);

before(async () => {
  if (skip) return;
  assert.ok(existsSync(DIST), 'web client not built: run npm --prefix web ci && npm --prefix web run build');
  workDir = await mkdtemp(join(tmpdir(), 'clouddesk-files-e2e-'));
  sshd = await startSshd({ users: 1 });
  gateway = await startGatewayProcess();
  browser = await launchTestBrowser({ dir: workDir, viewport: { width: 1366, height: 820 } });
  page = await browser.context.newPage();
  page.setDefaultTimeout(STEP_MS);
});

after(async () => {
  if (skip) return;
  await browser?.close();
  await gateway?.stop();
  const home = sshd?.users[0]?.home;
  if (home)
    for (const n of await readdir(home)) if (n.includes(stamp)) await rm(join(home, n), { force: true });
  await sshd?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

async function api<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const res = await fetch(`${gateway.url}${path}`, {
    method,
    headers: {
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return (text ? (JSON.parse(text) as { data: T }).data : undefined) as T;
}

/** Drops files made in the page onto the desktop view, as a drag from the file manager would. */
async function dropOnDesktop(files: { name: string; text?: string; bytes?: number }[]): Promise<void> {
  // A string, not a function: this file is compiled without the DOM types.
  const dataTransfer = await page.evaluateHandle(
    `(() => {
      const dt = new DataTransfer();
      for (const f of ${JSON.stringify(files)}) {
        const content = f.text !== undefined ? [f.text] : [new Uint8Array(f.bytes ?? 0).fill(120)];
        dt.items.add(new File(content, f.name, { type: 'application/octet-stream' }));
      }
      return dt;
    })()`,
  );
  await page.dispatchEvent('[data-testid="stage"]', 'dragover', { dataTransfer });
  await page.dispatchEvent('[data-testid="stage"]', 'drop', { dataTransfer });
}

void test(
  'a file dropped onto the desktop uploads into the home folder and is listed; a click downloads it; a cancelled upload leaves nothing',
  { skip, timeout: 6 * STEP_MS },
  async () => {
    const user = sshd.users[0]!;
    const { accessToken } = await api<{ accessToken: string }>('POST', '/api/auth/register', {
      email,
      password,
    });
    const instance = await api<{ id: string }>(
      'POST',
      '/api/instances',
      {
        name: 'Files box',
        host: sshd.host,
        port: sshd.port,
        username: user.username,
        auth: { type: 'privateKey', privateKey: user.privateKey },
        hostKeyFingerprint: sshd.hostKeyFingerprint,
      },
      accessToken,
    );
    const { sessionId } = await api<{ sessionId: string }>(
      'POST',
      '/api/sessions/connect',
      { instanceId: instance.id, desktopEnvironment: 'openbox' },
      accessToken,
    );

    await page.goto(`${gateway.url}/sign-in`);
    await page.fill('input[name="email"]', email);
    await page.fill('input[name="password"]', password);
    await page.click('button[type="submit"]');
    await page.waitForURL(/\/instances$/);
    await page.goto(`${gateway.url}/desktop/${sessionId}`);
    await page.waitForSelector('[data-testid="viewer"][data-state="connected"]');

    // Drop: the panel opens on the home folder, the row shows progress, then the file is listed.
    const name = `dropped-${stamp}.txt`;
    const text = `hello from a drop ${stamp}\n`;
    await dropOnDesktop([{ name, text }]);
    await page.waitForSelector('[data-testid="files-panel"]:not([hidden])');
    await page.waitForSelector(`[data-testid="files-upload-item"][data-name="${name}"][data-state]`);
    assert.equal(
      await page.getAttribute(`[data-testid="files-upload-item"][data-name="${name}"]`, 'data-state'),
      'done',
      (await page.textContent('[data-testid="files-uploads"]')) ?? '',
    );
    await page.waitForSelector(`[data-testid="files-entry"][data-name="${name}"]`);
    assert.equal(await page.textContent('[data-testid="files-path"]'), user.home);
    assert.equal(await readFile(join(user.home, name), 'utf8'), text);

    // Download: the browser's own download of the link, saved by the browser.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.click(`[data-testid="files-entry"][data-name="${name}"]`),
    ]);
    assert.equal(download.suggestedFilename(), name);
    assert.match(download.url(), /\/files\/content\?path=.*&token=/);
    const saved = join(workDir, 'downloaded.txt');
    await download.saveAs(saved);
    assert.equal(await readFile(saved, 'utf8'), text);

    // Cancel: a 256 MB upload, cancelled once it is under way, leaves no file and no temporary file.
    const big = `big-${stamp}.bin`;
    await dropOnDesktop([{ name: big, bytes: 256 * 1024 * 1024 }]);
    const row = `[data-testid="files-upload-item"][data-name="${big}"]`;
    await page.waitForFunction((sel: string) => {
      type Doc = { querySelector(s: string): { value: number } | null };
      const bar = (globalThis as unknown as { document: Doc }).document.querySelector(sel);
      return bar !== null && bar.value > 0;
    }, `${row} progress`);
    await page.click(`${row} [data-testid="files-upload-cancel"]`);
    await page.waitForSelector(`${row}[data-state="cancelled"]`);
    // The gateway removes the temporary file once it sees the request end.
    for (;;) {
      const left = (await readdir(user.home)).filter((n) => n.includes(big));
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await assert.rejects(stat(join(user.home, big)));
    await page.click('[data-testid="files-refresh"]');
    assert.equal(await page.locator(`[data-testid="files-entry"][data-name="${big}"]`).count(), 0);
  },
);
