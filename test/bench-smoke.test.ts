// Smoke run of the benchmark harness (issue 4): 20 users, a short hold, `--compare` (four stacks), two stalled
// viewers. It asserts that every stack moved exactly the bytes the simulator was asked to send (and
// the viewers' input the other way), and that the report carries every figure — never how fast.
// Needs root (the real sshd fixture), websockify and OpenSSH's client, like the rest of the suite.
import { spawn } from 'node:child_process';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult, StepResult } from '../bench/report/result.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const USERS = 20;

async function runHarness(outDir: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'bench/run.ts',
      '--compare',
      '--users',
      String(USERS),
      '--ramp',
      '2',
      '--hold',
      '4',
      '--stall',
      '2',
      '--stall-secs',
      '2',
      '--profile',
      'office',
      '--out',
      outDir,
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

function assertFigures(s: StepResult): void {
  const where = `${s.stack}`;
  for (const [name, l] of Object.entries({ setup: s.setupMs, rtt: s.rttMs })) {
    for (const p of ['p50', 'p95', 'p99'] as const) {
      assert.equal(typeof l[p], 'number', `${where}: ${name} ${p}`);
    }
  }
  assert.equal(typeof s.errorRate, 'number', `${where}: error rate`);
  assert.equal(typeof s.wsSuccessRate, 'number', `${where}: WebSocket success rate`);
  assert.ok(s.window.mbitPerSecond > 0, `${where}: throughput`);
  assert.equal(typeof s.cpu.simulatorSeconds, 'number', `${where}: simulator CPU`);
  assert.equal(typeof s.cpu.loadGeneratorSeconds, 'number', `${where}: load generator CPU`);
  assert.ok(s.memory.stalled !== null && s.memory.stalled.viewers === 2, `${where}: stalled viewers`);
  if (s.stack === 'direct') return;
  assert.equal(typeof s.cpu.gatewaySecondsPerGB, 'number', `${where}: gateway CPU per GB`);
  assert.equal(typeof s.cpu.sshdSecondsPerGB, 'number', `${where}: sshd CPU per GB`);
  assert.equal(typeof s.memory.perSessionBytes, 'number', `${where}: RSS per session`);
  assert.equal(typeof s.memory.stalled.perStalledSessionBytes, 'number', `${where}: RSS per stalled session`);
  assert.ok(s.addedRttMs !== null && typeof s.addedRttMs.p99 === 'number', `${where}: added latency`);
  if (s.stack === 'clouddesk') {
    for (const call of ['login', 'list-instances', 'connect', 'disconnect']) {
      assert.equal(typeof s.httpMs[call]?.p99, 'number', `${where}: API ${call} latency`);
    }
    assert.equal(typeof s.eventLoop.gatewayLagP99Ms, 'number', `${where}: gateway event-loop lag`);
  }
}

void test('bench smoke run: every stack moves every byte it is asked to, and the report is complete', async () => {
  const outDir = await mkdtemp(join(tmpdir(), 'clouddesk-bench-smoke-'));
  after(() => rm(outDir, { recursive: true, force: true }));

  const { code, stderr } = await runHarness(outDir);
  assert.equal(code, 0, `harness failed:\n${stderr}`);

  const result = JSON.parse(await readFile(join(outDir, 'smoke.json'), 'utf8')) as BenchResult;
  assert.deepEqual(
    result.steps.map((s) => s.stack),
    ['direct', 'diy', 'bare', 'clouddesk'],
  );
  assert.ok(result.machine.cores > 0 && result.machine.cpuModel.length > 0, 'machine facts recorded');
  for (const s of result.steps) {
    assert.equal(s.sessions.ready, USERS, `${s.stack}: every user reached a first screen update`);
    // A connect answered OVERLOADED and tried again after its Retry-After (`busy-retry:…`) is a user
    // still being served, as the report counts it; every other entry is a failure.
    const failures = Object.fromEntries(
      Object.entries(s.errors).filter(([k]) => !k.startsWith('busy-retry:')),
    );
    assert.deepEqual(failures, {}, `${s.stack}: no errors`);
    // The barrier: each viewer received exactly what the simulator wrote, and the simulator read
    // exactly what the viewer sent, for every session still open.
    assert.equal(s.bytes.live, USERS, `${s.stack}: sessions at the barrier`);
    assert.equal(s.bytes.exact, USERS, `${s.stack}: byte-exact sessions (${s.bytes.firstMismatch ?? ''})`);
    assert.equal(s.bytes.bytesIn, s.bytes.serverSent, `${s.stack}: bytes to viewers`);
    assert.ok(
      s.window.bytesToViewers > 0 && s.window.bytesFromViewers > 0,
      `${s.stack}: bytes moved both ways`,
    );
    assert.ok(s.window.echoes > 0, `${s.stack}: input echoes came back`);
    assertFigures(s);
  }
  const md = await readFile(join(outDir, 'smoke.md'), 'utf8');
  assert.match(md, /\| CloudDesk \| 20 \|/);
  assert.match(md, /CloudDesk ÷ peer/);
  const svg = await readFile(join(outDir, 'smoke.svg'), 'utf8');
  assert.match(svg, /^<svg /);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 4 + 3, 'one line per stack in each panel');
});
