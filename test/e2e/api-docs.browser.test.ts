// The API reference page in a real browser (Debian's Chromium, see chromium.ts): /api/docs renders
// every operation of /api/openapi.json from the gateway's own files, with no Content-Security-Policy
// violation (the page's policy allows only 'self' and one hashed inline style).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenTestGateway, type TestGateway } from '../helpers/builders.js';
import { CHROMIUM, launchTestBrowser, type TestBrowser } from './chromium.js';

const skip = existsSync(CHROMIUM) ? false : 'needs /usr/bin/chromium';
let gw: TestGateway & { base: string };
let browser: TestBrowser;
let dir: string;

before(async () => {
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), 'clouddesk-api-docs-'));
  gw = await listenTestGateway();
  browser = await launchTestBrowser({ dir, viewport: { width: 1280, height: 900 } });
});
after(async () => {
  await browser?.close();
  await gw?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('/api/docs shows every operation, without a CSP violation', { skip }, async () => {
  const page = await browser.context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`http://${gw.base}/api/docs`);
  await page.waitForSelector('.opblock', { timeout: 60_000 });
  const doc = (await (await fetch(`http://${gw.base}/api/openapi.json`)).json()) as {
    paths: Record<string, object>;
  };
  const operations = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
  assert.equal(await page.locator('.opblock').count(), operations);
  assert.match((await page.locator('.info .title').first().textContent()) ?? '', /CloudDesk API/);
  assert.deepEqual(problems, [], `${await browser.diagnose()}`);
});
