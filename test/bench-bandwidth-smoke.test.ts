// Smoke run of `npm run bench:bandwidth` (issue 13, part 1): one setting, every phase for a second or
// three, on a real Xvnc + xfce desktop started by the gateway and viewed in Chromium. It asserts that
// each phase's bytes were counted by both sources (the gateway's relay counter and the browser's
// WebSocket frames) and agree, that the screen was compared after each phase, and that the report is
// complete — never how many bytes or how fast. Needs root (the sshd fixture), Chromium, xfce, xdotool,
// mousepad, feh and ImageMagick, as `scripts/setup.sh test` installs them. Also the report's pure parts:
// the pixel comparison and the plan's cost model.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  PLAN,
  bytesPerSessionHour,
  monthlyUsd,
  monthlyUsdWithCloudFront,
  officeKbps,
} from '../bench/bandwidth/cost-model.js';
import { phases } from '../bench/bandwidth/phases.js';
import { comparePixels, parsePpm } from '../bench/bandwidth/pixel-compare.js';
import type { BandwidthResult } from '../bench/bandwidth/result.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const needed = ['xdotool', 'mousepad', 'feh', 'xfce4-session', 'import', 'Xvnc'];
const missing = needed.filter((cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0);
const skip =
  process.getuid?.() !== 0
    ? 'needs root (the sshd fixture creates users)'
    : !existsSync('/usr/bin/chromium')
      ? 'needs /usr/bin/chromium'
      : missing.length > 0
        ? `needs ${missing.join(', ')} (scripts/setup.sh test installs them)`
        : !existsSync(join(repo, 'web', 'dist', 'index.html'))
          ? 'needs the built web client (npm --prefix web run build)'
          : false;

async function runHarness(outDir: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'bench/bandwidth/run.ts',
      '--settings',
      // The defaults without the shipped budget: under a budget the two counts can differ by ~1 % at a
      // phase's edges (docs/bandwidth.md, "The two counts"), and this run checks they agree to 256 bytes.
      'no-budget',
      '--phase-secs',
      '1',
      // Long enough for the web client's round-trip probe (every 2 s): idle is then not silent.
      '--secs',
      'idle=3',
      '--settle-secs',
      '5',
      '--quiet-ms',
      '500',
      '--out',
      outDir,
      '--report',
      join(outDir, 'bandwidth.md'),
      '--shots',
      join(outDir, 'shots'),
      '--label',
      'smoke',
    ],
    { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  // The harness stops everything it started on SIGTERM; make sure it gets one if the test ends early.
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    stderr = (stderr + s).slice(-20_000);
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, stderr };
}

void test(
  'bandwidth smoke run: every phase counted by the gateway and the browser, the screen checked, the report complete',
  // A run is ~70 s; a loaded machine has taken 300 s, and a phase that never catches up waits 20 s a read.
  { skip, timeout: 8 * 60_000 },
  async () => {
    const outDir = await mkdtemp(join(tmpdir(), 'clouddesk-bw-smoke-'));
    after(() => rm(outDir, { recursive: true, force: true }));

    const { code, stderr } = await runHarness(outDir);
    assert.equal(code, 0, `harness failed:\n${stderr}`);

    const result = JSON.parse(await readFile(join(outDir, 'smoke.json'), 'utf8')) as BandwidthResult;
    assert.ok(result.machine.cores > 0 && result.machine.tigervnc !== 'unknown', 'machine facts recorded');
    assert.equal(result.settings.length, 1);
    const s = result.settings[0]!;
    assert.equal(s.status, 'measured', s.reason ?? '');
    assert.deepEqual(
      s.phases.map((p) => p.id),
      phases.map((p) => p.id),
      'every phase ran, in order',
    );
    assert.ok(s.firstFrame !== null && s.firstFrame.gatewayToViewer > 0, 'first frame counted');
    // Read like the phases below: while the screen stands still, so at most a probe answer falls between.
    assert.ok(
      Math.abs(s.firstFrame.browserReceived - s.firstFrame.gatewayToViewer) <= 256,
      `first frame: both counts agree (${s.firstFrame.gatewayToViewer} vs ${s.firstFrame.browserReceived})`,
    );
    // A phase whose browser count never reached the gateway's within the wait is marked so, with notes (DevTools
    // events trail the socket on a loaded machine: one run had one phase's three reads all 0.8–3.4 KB
    // short after 10 s). Its two counts are not of one moment, so they are not compared; most phases must be.
    const behind = (p: (typeof s.phases)[number]) => !p.browserCaughtUp;
    const compared = s.phases.filter((p) => !behind(p));
    assert.ok(
      compared.length >= s.phases.length - 1,
      `the browser caught up in all phases but one at most (${s.phases
        .filter(behind)
        .map((p) => `${p.id}: ${p.notes.join('; ')}`)
        .join(' / ')})`,
    );
    for (const p of s.phases) {
      for (const side of ['gatewayToViewer', 'browserReceived'] as const) {
        assert.ok(p.total[side] > 0, `${p.id}: ${side} counted`);
      }
      if (behind(p)) continue;
      // Both counts are read as of one moment (the frame where the gateway's count stands).
      assert.ok(
        Math.abs(p.total.gatewayToViewer - p.total.browserReceived) <= 256,
        `${p.id}: gateway ${p.total.gatewayToViewer} vs browser ${p.total.browserReceived} (${p.notes.join('; ') || 'no notes'})`,
      );
      assert.ok(
        p.screen !== null && p.screen.diff.width > 0,
        `${p.id}: canvas compared with the framebuffer`,
      );
      assert.equal(p.screen.diff.sizeMismatch, null, `${p.id}: canvas and framebuffer of one size`);
      assert.equal(typeof p.kbps, 'number', `${p.id}: a rate`);
    }
    assert.equal(typeof s.officeKbps, 'number', 'office minute');
    assert.equal(typeof s.monthlyUsd, 'number', 'monthly bill');
    assert.ok(s.screenshot !== null && existsSync(join(repo, s.screenshot)), 'a screenshot');

    const md = await readFile(join(outDir, 'bandwidth.md'), 'utf8');
    assert.match(md, /^# Bandwidth/);
    assert.match(md, /npm run bench:bandwidth -- --settings no-budget/, 'the command line');
    assert.match(md, /Machine: /);
    for (const p of phases) assert.ok(md.includes(`| ${p.label}`), `report row for ${p.id}`);
    for (const row of [
      '**office minute**',
      'first frame after connect',
      'per session-hour',
      '$ / month',
      '$35,000',
    ])
      assert.ok(md.includes(row), `report row ${row}`);
    for (const section of ['## Targets', '## Settings', '## What the person saw', '## The two counts'])
      assert.ok(md.includes(section), `report section ${section}`);
    assert.match(md, /not read by this gateway|measured in/, 'settings say whether they were measured');
    const svg = await readFile(join(outDir, 'smoke.svg'), 'utf8');
    assert.match(svg, /^<svg /);
    assert.equal((svg.match(/fill="#1f77b4"/g) ?? []).length, 2, 'one bar per panel for the one setting');
  },
);

void test('the pixel comparison counts exact differences outside the pointer, and the cost model is the plan’s', () => {
  const ppm = (w: number, h: number, fill: number[]) =>
    Buffer.concat([
      Buffer.from(`P6\n# a comment\n${w} ${h}\n255\n`),
      Buffer.from(Array.from({ length: w * h }, () => fill).flat()),
    ]);
  const fb = parsePpm(ppm(4, 3, [10, 20, 30]));
  assert.deepEqual([fb.width, fb.height, fb.rgb.length], [4, 3, 36]);
  const canvas = { ...fb, rgb: Buffer.from(fb.rgb) };
  assert.equal(comparePixels(fb, canvas).differing, 0);
  canvas.rgb[0] = 12; // (0,0) off by 2
  canvas.rgb[3 * 11 + 2] = 99; // (3,2) off by 69
  const d = comparePixels(fb, canvas);
  assert.deepEqual([d.differing, d.visible, d.maxDelta, d.box], [2, 1, 69, { x0: 0, y0: 0, x1: 3, y1: 2 }]);
  assert.equal(
    comparePixels(fb, canvas, { x0: 2, y0: 1, x1: 5, y1: 5 }).differing,
    1,
    'the pointer box is left out',
  );
  assert.match(comparePixels(fb, parsePpm(ppm(2, 2, [0, 0, 0]))).sizeMismatch ?? '', /4×3.*2×2/);
  assert.throws(() => parsePpm(Buffer.from('P5\n1 1\n255\n\0')), /binary PPM/);
  assert.throws(() => parsePpm(ppm(4, 3, [1, 2, 3]).subarray(0, 30)), /truncated/);

  // The plan: 1000 sessions × 2 Mbit/s, 30 days, $0.09/GB = $58,320; its $35,000 is after CloudFront's 40 %.
  assert.equal(Math.round(monthlyUsd(PLAN.assumedKbps)), PLAN.rawMonthlyUsd);
  assert.equal(Math.round(monthlyUsdWithCloudFront(PLAN.assumedKbps)), 34_992);
  assert.equal(bytesPerSessionHour(2000), 900e6);
  assert.equal(officeKbps({ idle: 1, typing: 10, scrolling: 100, drag: 1000 }), 0.4 + 4 + 15 + 50);
  assert.equal(
    officeKbps({ idle: 1, typing: 10, scrolling: 100 }),
    null,
    'no office minute without every phase',
  );
});
