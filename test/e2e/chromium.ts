// Test fixture: Debian's Chromium for the browser tests, launched so that a failure explains itself and
// teardown cannot hang (issue 14 point 13).
//   - Flags for this machine (see the machine notes): headless, no sandbox (root), no GPU, no QUIC, no
//     first-run, no background networking, no component updates, no sync; `--disable-dev-shm-usage`,
//     because Debian's wrapper decides it from `findmnt` on /dev/shm, which breaks ("unexpected
//     operator") when /dev/shm is mounted twice, so a small /dev/shm would go unnoticed.
//   - A fresh profile per launch (Playwright makes and removes it), nothing from $HOME.
//   - Chromium's own output (stderr, `--enable-logging=stderr`) goes to a log file, with a crash dump
//     folder (`--crash-dumps-dir`, crash reporting on). When the browser dies, `diagnose()` says how it
//     ended (exit code or signal), what it printed last and which dumps it left: the "Target page,
//     context or browser has been closed" of a later click then comes with its cause.
//   - `close()` is bounded: context and browser close with a deadline, then the process is killed by
//     its PID and waited for.
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const CLOSE_DEADLINE_MS = 10_000;
const LAUNCH_TIMEOUT_MS = 120_000;

export const chromiumFlags = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

export interface TestBrowser {
  browser: Browser;
  context: BrowserContext;
  /** Chromium's stderr. */
  logPath: string;
  crashDir: string;
  /** Whether the browser process ended before `close()` asked it to. */
  died(): boolean;
  /** How the browser ended, its last output and its crash dumps; '' while it runs normally. */
  diagnose(): Promise<string>;
  close(): Promise<void>;
}

export async function launchTestBrowser(options: {
  dir: string;
  viewport: { width: number; height: number };
}): Promise<TestBrowser> {
  const logPath = join(options.dir, 'chromium.log');
  const crashDir = join(options.dir, 'chromium-crashes');
  await mkdir(crashDir, { recursive: true });
  const log = createWriteStream(logPath, { flags: 'a' });
  const server = await chromium.launchServer({
    executablePath: CHROMIUM,
    headless: true,
    args: [...chromiumFlags, '--enable-logging=stderr', '--log-level=1', `--crash-dumps-dir=${crashDir}`],
    // Playwright turns crash reporting off by default; a dump is what tells a crash from a kill.
    ignoreDefaultArgs: ['--disable-breakpad'],
    timeout: LAUNCH_TIMEOUT_MS,
  });
  const child = server.process();
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let closing = false;
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      exit = { code: child.exitCode, signal: child.signalCode };
      resolve();
      return;
    }
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      log.write(`\n[test] chromium pid ${child.pid} exited: code ${code} signal ${signal}\n`);
      resolve();
    });
  });
  teeOutput(child, log);

  const browser = await chromium.connect(server.wsEndpoint(), { timeout: LAUNCH_TIMEOUT_MS });
  const context = await browser.newContext({ viewport: options.viewport, colorScheme: 'light' });
  context.on('page', (page) => {
    page.on('crash', () => log.write(`\n[test] renderer crashed: ${page.url()}\n`));
  });
  browser.on('disconnected', () => {
    if (!closing) log.write('\n[test] the browser connection closed unexpectedly\n');
  });

  const died = () => exit !== null && !closing;
  return {
    browser,
    context,
    logPath,
    crashDir,
    died,
    async diagnose() {
      if (!died() && browser.isConnected()) return '';
      const dumps = await listFiles(crashDir);
      const output = await readFile(logPath, 'utf8').catch(() => '');
      const ended: { code: number | null; signal: NodeJS.Signals | null } | null = exit;
      return [
        `Chromium (pid ${child.pid}) ${ended ? `exited with code ${ended.code} / signal ${ended.signal}` : 'stopped answering'}.`,
        `Crash dumps in ${crashDir}: ${dumps.length > 0 ? dumps.join(', ') : 'none'}.`,
        `Last output (${logPath}):`,
        output.slice(-4000),
      ].join('\n');
    },
    async close() {
      closing = true;
      await withDeadline(context.close(), CLOSE_DEADLINE_MS);
      await withDeadline(browser.close(), CLOSE_DEADLINE_MS);
      await withDeadline(server.close(), CLOSE_DEADLINE_MS);
      if (exit === null) {
        // Still there after a polite close: end it by its PID and wait for it.
        await server.kill().catch(() => undefined);
        await withDeadline(exited, CLOSE_DEADLINE_MS);
      }
      await new Promise<void>((resolve) => log.end(() => resolve()));
    },
  };
}

function teeOutput(child: ChildProcess, log: WriteStream): void {
  child.stderr?.on('data', (chunk: Buffer) => log.write(chunk));
  child.stdout?.on('data', (chunk: Buffer) => log.write(chunk));
}

async function withDeadline(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory())
      out.push(...(await listFiles(join(dir, entry.name))).map((f) => join(entry.name, f)));
    else out.push(entry.name);
  }
  return out;
}
