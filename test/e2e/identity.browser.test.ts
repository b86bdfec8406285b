// Company sign-in and two-factor sign-in in a real browser (Debian's Chromium via playwright-core)
// against a real gateway process and a real OpenID provider (oidc-provider on a loopback port):
// "Sign in with Test IdP" goes to the provider's login page and comes back signed in, to an account
// made just in time; a local account sets up TOTP on the Security page from the key the page shows,
// keeps its recovery codes, and its next sign-in asks for the code.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { Secret, TOTP } from 'otpauth';
import { freePort } from '../helpers/free-port.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startOidcProvider, type OidcProviderFixture } from '../helpers/oidc-provider.js';
import { CHROMIUM, launchTestBrowser, type TestBrowser } from './chromium.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const DIST = join(REPO, 'web', 'dist', 'index.html');
const STEP_MS = 60_000;
const VIEWPORT = { width: 1280, height: 800 };
const skip = !existsSync(CHROMIUM) ? 'needs /usr/bin/chromium' : false;

let gateway: GatewayProcess;
let idp: OidcProviderFixture;
let browser: TestBrowser;
let workDir: string;

before(async () => {
  if (skip) return;
  assert.ok(existsSync(DIST), 'web client not built: run npm --prefix web ci && npm --prefix web run build');
  workDir = await mkdtemp(join(tmpdir(), 'clouddesk-identity-e2e-'));
  // The gateway is told the issuer first (it discovers it on the first sign-in), the provider is
  // then told the gateway's callback.
  const idpPort = await freePort();
  gateway = await startGatewayProcess({
    env: {
      OIDC_ISSUER: `http://127.0.0.1:${idpPort}`,
      OIDC_CLIENT_ID: 'clouddesk',
      OIDC_CLIENT_SECRET: 'a-test-client-secret-that-is-long-enough',
      OIDC_SCOPES: 'openid email profile',
      OIDC_NAME: 'Test IdP',
    },
  });
  idp = await startOidcProvider({
    port: idpPort,
    redirectUris: [`${gateway.url}/api/auth/oidc/callback`],
    accounts: { alice: { email: 'alice@example.com', email_verified: true, name: 'Alice' } },
  });
  browser = await launchTestBrowser({ dir: workDir, viewport: VIEWPORT });
});

after(async () => {
  if (skip) return;
  await browser?.close();
  await idp?.stop();
  await gateway?.stop();
  await rm(workDir, { recursive: true, force: true });
});

function inBrowser(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await fn();
    } catch (e) {
      const why = await browser.diagnose();
      throw new Error(
        `${e instanceof Error ? e.message : String(e)}\n${why || (await gateway.logs())}`.slice(0, 20_000),
        { cause: e },
      );
    }
  };
}

async function newPage(): Promise<Page> {
  const context = await browser.browser.newContext({ viewport: VIEWPORT, colorScheme: 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  return page;
}

void test(
  'Sign in with the company: the provider’s login page, then back signed in to a new account',
  { skip, timeout: 3 * STEP_MS },
  inBrowser(async () => {
    const page = await newPage();
    await page.goto(`${gateway.url}/sign-in`);
    const button = page.getByTestId('oidc-sign-in');
    await button.waitFor();
    assert.equal((await button.textContent())?.trim(), 'Sign in with Test IdP');
    await button.click();
    await page.waitForURL((u) => u.origin === idp.issuer);
    await page.fill('input[name="login"]', 'alice');
    await page.click('button[type="submit"]');
    await page.waitForURL(/\/instances$/);
    await page.getByText('alice@example.com').waitFor();
    await page.context().close();
  }),
);

void test(
  'TOTP: set up on the Security page, recovery codes shown once, the next sign-in asks for the code',
  { skip, timeout: 3 * STEP_MS },
  inBrowser(async () => {
    const email = `totp-${Date.now()}@example.com`;
    const password = 'correct horse battery staple';
    const page = await newPage();
    await page.goto(`${gateway.url}/sign-up`);
    await page.fill('input[name="email"]', email);
    await page.fill('input[name="password"]', password);
    await page.click('button[type="submit"]');
    await page.waitForURL(/\/instances$/);

    await page.getByTestId('nav-security').click();
    await page.getByTestId('mfa-setup').click();
    await page.getByTestId('mfa-qr').waitFor();
    const secret = (await page.getByTestId('mfa-secret').textContent())!.trim();
    const totp = new TOTP({ secret: Secret.fromBase32(secret), period: 30, digits: 6, algorithm: 'SHA1' });
    await page.getByTestId('mfa-code').fill(totp.generate());
    await page.getByRole('button', { name: 'Turn on' }).click();
    const codes = page.getByTestId('mfa-recovery-codes').locator('li');
    await codes.first().waitFor();
    assert.equal(await codes.count(), 10);
    await page.getByRole('button', { name: 'I have saved them' }).click();
    await page.getByText('Two-factor sign-in is on. Recovery codes left: 10.').waitFor();

    await page.getByTestId('sign-out').click();
    await page.waitForURL(/\/sign-in/);
    await page.fill('input[name="email"]', email);
    await page.fill('input[name="password"]', password);
    await page.click('button[type="submit"]');
    // The code that turned TOTP on is spent for its window; the next window's code is accepted early
    // (one step of drift), so no waiting for the clock.
    await page.getByTestId('mfa-code').fill(totp.generate({ timestamp: Date.now() + 30_000 }));
    await page.getByRole('button', { name: 'Verify' }).click();
    await page.waitForURL(/\/instances$/);
    await page.context().close();
  }),
);
