// Sharing in a real browser (Debian's Chromium via playwright-core) against a real gateway process,
// sshd and TigerVNC: the owner opens the Share dialog on the desktop and makes a view-only link; a
// second browser context opens it, joins under a display name (SHARE_GUESTS=anyone), sees the desktop
// with the banner "Viewing X's desktop (view only)" and no way to send input; the owner sees the guest in
// the dialog and revokes the share, and the guest's page says the sharing ended.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BrowserContext } from 'playwright-core';
import { startSshd, type SshdFixture } from '../helpers/sshd.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { CHROMIUM, launchTestBrowser, type TestBrowser } from './chromium.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const DIST = join(REPO, 'web', 'dist', 'index.html');
const STEP_MS = 60_000;
const VIEWPORT = { width: 1280, height: 800 };

const skip = !existsSync(CHROMIUM)
  ? 'needs /usr/bin/chromium'
  : process.getuid?.() !== 0
    ? 'needs root (the sshd fixture creates users)'
    : false;

let sshd: SshdFixture;
let gateway: GatewayProcess;
let browser: TestBrowser;
let workDir: string;
let guestContext: BrowserContext;
const password = 'correct horse battery staple';
const ownerEmail = `owner-${Date.now()}@example.com`;

before(async () => {
  if (skip) return;
  assert.ok(existsSync(DIST), 'web client not built: run npm --prefix web ci && npm --prefix web run build');
  workDir = await mkdtemp(join(tmpdir(), 'clouddesk-share-e2e-'));
  sshd = await startSshd({ users: 1 });
  gateway = await startGatewayProcess({ env: { SHARE_GUESTS: 'anyone' } });
  browser = await launchTestBrowser({ dir: workDir, viewport: VIEWPORT });
  guestContext = await browser.browser.newContext({ viewport: VIEWPORT, colorScheme: 'light' });
});

after(async () => {
  if (skip) return;
  await guestContext?.close().catch(() => undefined);
  await browser?.close();
  await gateway?.stop();
  await sshd?.stop();
  await rm(workDir, { recursive: true, force: true });
});

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

void test(
  'an owner shares view-only; a guest opens the link, watches with the banner, and sees the revoke',
  { skip, timeout: 5 * STEP_MS },
  async () => {
    try {
      const reg = await api<{ data: { accessToken: string } }>('POST', '/api/auth/register', {
        email: ownerEmail,
        password,
      });
      assert.equal(reg.status, 201, JSON.stringify(reg.body));
      const token = reg.body.data.accessToken;
      const user = sshd.users[0]!;
      const instance = await api<{ data: { id: string } }>(
        'POST',
        '/api/instances',
        {
          name: 'Shared box',
          host: sshd.host,
          port: sshd.port,
          username: user.username,
          auth: { type: 'privateKey', privateKey: user.privateKey },
          hostKeyFingerprint: sshd.hostKeyFingerprint,
        },
        token,
      );
      assert.equal(instance.status, 201, JSON.stringify(instance.body));
      const connect = await api<{ data: { sessionId: string } }>(
        'POST',
        '/api/sessions/connect',
        { instanceId: instance.body.data.id, desktopEnvironment: 'openbox' },
        token,
      );
      assert.equal(connect.status, 201, JSON.stringify(connect.body));
      const sessionId = connect.body.data.sessionId;

      // The owner, on their desktop: Share → view only → Create link.
      const owner = await browser.context.newPage();
      owner.setDefaultTimeout(STEP_MS);
      await owner.goto(`${gateway.url}/sign-in`);
      await owner.fill('input[name="email"]', ownerEmail);
      await owner.fill('input[name="password"]', password);
      await owner.click('button[type="submit"]');
      await owner.waitForURL(/\/instances$/);
      await owner.goto(`${gateway.url}/desktop/${sessionId}`);
      await owner.waitForSelector('[data-testid="viewer"][data-state="connected"]');
      await owner.click('[data-testid="share"]');
      await owner.selectOption('[data-testid="share-mode"]', 'view');
      await owner.click('[data-testid="share-create"]');
      const link = owner.locator('[data-testid="share-link"]');
      // The link's box shows when the link is in it.
      await link.waitFor({ state: 'visible' });
      const url = await link.inputValue();
      assert.ok(url.startsWith(`${gateway.url}/share#`), url);

      // The guest, in another browser context with no account: a name, Join, the desktop and the banner.
      const guest = await guestContext.newPage();
      guest.setDefaultTimeout(STEP_MS);
      await guest.goto(url);
      await guest.fill('[data-testid="guest-name"]', 'Dana');
      await guest.click('[data-testid="guest-join"]');
      await guest.waitForSelector('[data-testid="viewer"][data-state="connected"]');
      assert.equal(
        (await guest.textContent('[data-testid="guest-banner"]'))?.trim(),
        `Viewing ${ownerEmail}’s desktop (view only)`,
      );
      assert.equal(await guest.isVisible('[data-testid="view-only-badge"]'), true);
      assert.equal(
        await guest.isDisabled('[data-testid="view-only"]'),
        true,
        'the guest cannot turn input on',
      );
      for (const absent of ['share', 'files-toggle', 'end-session'])
        assert.equal(await guest.locator(`[data-testid="${absent}"]`).count(), 0, `no ${absent} for a guest`);
      // noVNC's canvas has the framebuffer's size once connected.
      const size = await guest
        .locator('[data-testid="screen"] canvas')
        .evaluate((c: { width: number; height: number }) => [c.width, c.height]);
      assert.ok(size[0]! >= 640 && size[1]! >= 400, `the guest sees the desktop (${size.join('×')})`);

      // The owner sees Dana watching (the list refreshes while the dialog is open) and ends just her view.
      await owner.waitForSelector('[data-testid="share-item"][data-status="active"] >> text=watching: Dana');
      await owner.click('[data-testid="share-guest"] [data-testid="share-guest-end"]');
      await guest.waitForSelector('[data-testid="overlay-ended"]');
      assert.match((await guest.textContent('[data-testid="overlay-ended"]')) ?? '', /ended your view/);
      assert.equal(await owner.getAttribute('[data-testid="viewer"]', 'data-state'), 'connected');
      // The share still works: Dana joins again, and the owner then revokes the share.
      await guest.goto('about:blank');
      await guest.goto(url);
      await guest.fill('[data-testid="guest-name"]', 'Dana');
      await guest.click('[data-testid="guest-join"]');
      await guest.waitForSelector('[data-testid="viewer"][data-state="connected"]');
      await owner.waitForSelector('[data-testid="share-item"][data-status="active"] >> text=watching: Dana');
      await owner.click('[data-testid="share-item"][data-status="active"] [data-testid="share-revoke"]');
      await guest.waitForSelector('[data-testid="overlay-ended"]');
      assert.match((await guest.textContent('[data-testid="overlay-ended"]')) ?? '', /stopped sharing/);
      // The owner's own desktop carries on.
      assert.equal(await owner.getAttribute('[data-testid="viewer"]', 'data-state'), 'connected');
    } catch (e) {
      throw new Error(
        `${e instanceof Error ? e.message : String(e)}\n${(await gateway.logs()).slice(-20_000)}`,
        {
          cause: e,
        },
      );
    }
  },
);
