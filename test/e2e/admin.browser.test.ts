// The admin pages in a real browser (Debian's Chromium via playwright-core) against a real gateway
// process, sshd and TigerVNC: the first account of the install is its admin and sees the Admin pages;
// a normal user does not, and the gateway refuses them the admin API whatever the page shows; the
// admin finds the user, sees their live desktop, disables them, and the user's open desktop tab shows
// that they were signed out; the user's past session is in the history with why it ended; an invite
// link made on the users page signs someone up, once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BrowserContext, Page } from 'playwright-core';
import { startSshd, type SshdFixture } from '../helpers/sshd.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { CHROMIUM, launchTestBrowser, type TestBrowser } from './chromium.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const SCREENSHOTS = join(REPO, 'docs', 'screenshots');
/** With UPDATE_SCREENSHOTS=1 the admin pages are saved to docs/screenshots/admin-*.png. */
async function screenshot(page: Page, name: string): Promise<void> {
  if (process.env.UPDATE_SCREENSHOTS !== '1') return;
  await mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}
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
let userContext: BrowserContext;
const password = 'correct horse battery staple';
const adminEmail = `boss-${Date.now()}@example.com`;
const userEmail = `worker-${Date.now()}@example.com`;

before(async () => {
  if (skip) return;
  assert.ok(existsSync(DIST), 'web client not built: run npm --prefix web ci && npm --prefix web run build');
  workDir = await mkdtemp(join(tmpdir(), 'clouddesk-admin-e2e-'));
  sshd = await startSshd({ users: 1 });
  // Audit rows are written with the activity flush: a short one so the audit page has them soon.
  gateway = await startGatewayProcess({ env: { ACTIVITY_FLUSH_MS: '300' } });
  browser = await launchTestBrowser({ dir: workDir, viewport: VIEWPORT });
  userContext = await browser.browser.newContext({ viewport: VIEWPORT, colorScheme: 'light' });
});

after(async () => {
  if (skip) return;
  await userContext?.close().catch(() => undefined);
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

async function signIn(page: Page, email: string): Promise<void> {
  page.setDefaultTimeout(STEP_MS);
  await page.goto(`${gateway.url}/sign-in`);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  await page.click('button[type="submit"]');
  await page.waitForURL(/\/instances$/);
}

function inBrowser(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await fn();
    } catch (e) {
      const why = await browser.diagnose();
      if (why === '')
        throw new Error(
          `${e instanceof Error ? e.message : String(e)}\n${await gateway.logs()}`.slice(0, 20_000),
          { cause: e },
        );
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n--- the browser died ---\n${why}`, {
        cause: e,
      });
    }
  };
}

void test(
  'an admin disables a user; the user’s open desktop tab shows they were signed out; the history says why',
  { skip, timeout: 6 * STEP_MS },
  inBrowser(async () => {
    // The first account of this empty single-node install is its admin.
    const admin = await api<{ data: { user: { role: string } } }>('POST', '/api/auth/register', {
      email: adminEmail,
      password,
    });
    assert.equal(admin.status, 201);
    assert.equal(admin.body.data.user.role, 'admin');
    const reg = await api<{ data: { accessToken: string; user: { id: string; role: string } } }>(
      'POST',
      '/api/auth/register',
      { email: userEmail, password },
    );
    assert.equal(reg.body.data.user.role, 'user');
    const token = reg.body.data.accessToken;
    const user = sshd.users[0]!;
    const instance = await api<{ data: { id: string } }>(
      'POST',
      '/api/instances',
      {
        name: 'Worker box',
        host: sshd.host,
        port: sshd.port,
        username: user.username,
        auth: { type: 'privateKey', privateKey: user.privateKey },
        hostKeyFingerprint: sshd.hostKeyFingerprint,
      },
      token,
    );
    assert.equal(instance.status, 201, JSON.stringify(instance.body));

    // The user, in their own browser context: no Admin link, and the admin API refuses them.
    const userPage = await userContext.newPage();
    await signIn(userPage, userEmail);
    assert.equal(await userPage.isVisible('[data-testid="nav-admin"]'), false, 'no Admin link for a user');
    const refused = await api<{ error: { code: string } }>('GET', '/api/admin/users', undefined, token);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'FORBIDDEN');
    await userPage.goto(`${gateway.url}/admin/users`);
    await userPage.waitForSelector('[data-testid="admin-user"], [role="alert"]');
    assert.equal(await userPage.locator('[data-testid="admin-user"]').count(), 0, 'the page shows no user');
    assert.match((await userPage.textContent('.table-card [role="alert"]')) ?? '', /Only an admin/);

    // The user's desktop, open in a tab.
    const connect = await api<{ data: { sessionId: string } }>(
      'POST',
      '/api/sessions/connect',
      { instanceId: instance.body.data.id, desktopEnvironment: 'openbox' },
      token,
    );
    assert.ok(connect.status === 201, JSON.stringify(connect.body));
    const sessionId = connect.body.data.sessionId;
    await userPage.goto(`${gateway.url}/desktop/${sessionId}`);
    await userPage.waitForSelector('[data-testid="viewer"][data-state="connected"]');

    // The admin, in the other context: the Admin pages, the user's live desktop, then Disable.
    const adminPage = await browser.context.newPage();
    await signIn(adminPage, adminEmail);
    await adminPage.click('[data-testid="nav-admin"]');
    await adminPage.waitForURL(/\/admin\/users$/);
    await adminPage.click('[data-testid="admin-tab-sessions"]');
    const liveRow = adminPage.locator(`[data-testid="admin-session"][data-session-id="${sessionId}"]`);
    await liveRow.waitFor();
    assert.match((await liveRow.textContent()) ?? '', new RegExp(userEmail.replace(/[.]/g, '\\.')));
    assert.match((await liveRow.textContent()) ?? '', /Worker box/);
    await screenshot(adminPage, 'admin-sessions');

    await adminPage.click('[data-testid="admin-tab-users"]');
    await adminPage.fill('[data-testid="admin-user-search"]', 'worker-');
    const row = adminPage.locator(`[data-testid="admin-user"][data-user-email="${userEmail}"]`);
    await row.waitFor();
    await adminPage.locator('[data-testid="admin-user"]').nth(1).waitFor({ state: 'detached' });
    assert.match((await row.textContent()) ?? '', /active/);
    await screenshot(adminPage, 'admin-users');
    await row.locator('[data-testid="admin-user-disable"]').click();
    await adminPage.click('.dialog .btn-danger');
    await adminPage.waitForSelector(
      `[data-testid="admin-user"][data-user-email="${userEmail}"] >> text=disabled`,
    );

    // The user's tab: signed out, on the sign-in page, saying so.
    await userPage.waitForURL(/\/sign-in/);
    assert.equal(await userPage.textContent('[data-testid="flash"]'), 'You were signed out.');
    await userPage.fill('input[name="email"]', userEmail);
    await userPage.fill('input[name="password"]', password);
    await userPage.click('button[type="submit"]');
    await userPage.waitForSelector('[data-testid="auth-error"]:not(:empty)');
    assert.match((await userPage.textContent('[data-testid="auth-error"]')) ?? '', /disabled/);

    // The admin ends the desktop and enables the user again; its history says why it ended.
    await adminPage.click('[data-testid="admin-tab-sessions"]');
    await liveRow.locator('[data-testid="admin-session-end"]').click();
    await adminPage.click('.dialog .btn-danger');
    await liveRow.waitFor({ state: 'detached' });
    await adminPage.click('[data-testid="admin-tab-audit"]');
    await adminPage.selectOption('[data-testid="admin-audit-type"]', 'user.disabled');
    // Written within a flush interval; Apply asks again.
    const disabledEvent = adminPage.locator('[data-testid="admin-audit-event"][data-type="user.disabled"]');
    for (let i = 0; (await disabledEvent.count()) === 0; i++) {
      assert.ok(i < 100, 'the user.disabled event reaches the audit page');
      await adminPage.click('[data-testid="admin-audit-apply"]');
      await disabledEvent
        .first()
        .waitFor({ timeout: 500 })
        .catch(() => undefined);
    }
    assert.match((await disabledEvent.first().textContent()) ?? '', /user\.disabled/);
    await adminPage.click('[data-testid="admin-tab-users"]');
    await row.waitFor();
    await row.locator('[data-testid="admin-user-disable"]').click();
    await adminPage.waitForSelector(
      `[data-testid="admin-user"][data-user-email="${userEmail}"] >> text=active`,
    );

    // Signed in again, the tab goes back where it was: a desktop that has ended meanwhile.
    await userPage.click('button[type="submit"]');
    await userPage.waitForURL(/\/desktop\//);
    await userPage.waitForSelector('[data-testid="overlay-ended"]');
    await userPage.goto(`${gateway.url}/sessions`);
    const past = userPage.locator(`[data-testid="history-session"][data-session-id="${sessionId}"]`);
    await past.waitFor();
    assert.equal(await past.locator('[data-testid="history-reason"]').textContent(), 'Ended by an admin');
    assert.match((await past.textContent()) ?? '', /Worker box/);
    await screenshot(userPage, 'sessions-history');

    // An invite link, made on the users page, signs someone up once.
    await adminPage.click('[data-testid="admin-invite"]');
    const invitedEmail = `invited-${Date.now()}@example.com`;
    await adminPage.fill('input[name="invite-email"]', invitedEmail);
    await adminPage.click('.dialog .btn-primary');
    const inviteUrl = (await adminPage
      .locator('[data-testid="admin-invite-url"]:not(:empty)')
      .textContent())!;
    assert.match(inviteUrl, /\/sign-up\?invite=[A-Za-z0-9_-]{43}$/);
    const guestContext = await browser.browser.newContext({ viewport: VIEWPORT, colorScheme: 'light' });
    try {
      const guest = await guestContext.newPage();
      guest.setDefaultTimeout(STEP_MS);
      await guest.goto(inviteUrl);
      await guest.fill('input[name="email"]', invitedEmail);
      await guest.fill('input[name="password"]', password);
      await guest.click('button[type="submit"]');
      await guest.waitForURL(/\/instances$/);
    } finally {
      await guestContext.close();
    }
    const again = await api<{ error: { code: string } }>('POST', '/api/auth/register', {
      email: `late-${Date.now()}@example.com`,
      password,
      inviteToken: new URL(inviteUrl).searchParams.get('invite'),
    });
    assert.equal(again.body.error.code, 'INVITE_INVALID', 'the invite was used');
  }),
);
