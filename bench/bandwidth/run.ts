// `npm run bench:bandwidth -- [options]`: what a real desktop costs per minute (issue 13, part 1). Real
// TigerVNC Xvnc + xfce, started by the real gateway over a loopback sshd, viewed by the product's own web
// client in Debian's Chromium; the phases are driven on the instance with xdotool, and the bytes are
// counted by the gateway and by the browser (CDP). Writes bench/results/<label>.json and .svg and the
// report (docs/bandwidth.md). Everything it starts is stopped by PID, also on Ctrl-C.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { machineFacts } from '../lib/machine.js';
import { stopEverything } from '../lib/process-registry.js';
import { startBenchSshd } from '../stacks/bench-sshd.js';
import { repoDir } from '../stacks/stack.js';
import { CHROMIUM } from './browser-viewer.js';
import { renderBandwidthChart } from './chart.js';
import { gatewayVariables } from './gateway-knobs.js';
import { InstanceDriver } from './instance-driver.js';
import { parseOptions, usage, type BandwidthOptions } from './options.js';
import { officeWeights, phases } from './phases.js';
import { renderBandwidthReport } from './report.js';
import type { BandwidthResult, SettingResult } from './result.js';
import { runSetting } from './run-setting.js';
import { settingById, settings } from './settings.js';

const log = (line: string) => process.stderr.write(`${line}\n`);

/** The benchmark's own test user, so its desktop settings never touch the test suite's cdtest users. */
const INSTANCE_USER = 'cdtestbw';
const NEEDED_TOOLS = [
  'xdotool',
  'xterm',
  'mousepad',
  'feh',
  'import',
  'convert',
  'xfconf-query',
  'setsid',
  'timeout',
];

function packageVersion(name: string): string {
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', name], { encoding: 'utf8', timeout: 10_000 });
  return r.stdout?.trim() || 'unknown';
}

function listing(): string {
  const lines = ['settings:'];
  for (const s of settings) lines.push(`  ${s.id.padEnd(24)} ${s.label} — ${s.description}`);
  lines.push('phases:');
  for (const p of phases) lines.push(`  ${p.id.padEnd(24)} ${p.label} (${p.seconds} s)`);
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  let o: BandwidthOptions;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (e) {
    log(e instanceof Error ? e.message : String(e));
    process.exitCode = 2;
    return;
  }
  if (o.help) {
    process.stdout.write(usage);
    return;
  }
  if (o.list) {
    process.stdout.write(listing());
    return;
  }
  if (process.getuid?.() !== 0)
    throw new Error('the bandwidth benchmark runs a real sshd with a test user: run it as root');
  if (!existsSync(CHROMIUM)) throw new Error(`needs Debian's Chromium at ${CHROMIUM}`);
  if (!existsSync(join(repoDir, 'web', 'dist', 'index.html')))
    throw new Error('the web client is not built: npm --prefix web run build');
  const outDir = resolve(repoDir, o.outDir);
  const reportPath = resolve(repoDir, o.report);
  const shotsDir = resolve(repoDir, o.shotsDir);
  await mkdir(outDir, { recursive: true });

  const startedAt = new Date().toISOString();
  log('bench:bandwidth: reading machine facts…');
  const machine = {
    ...(await machineFacts()),
    tigervnc: packageVersion('tigervnc-standalone-server'),
    xfce: packageVersion('xfce4-session'),
    chromium: packageVersion('chromium'),
    xdotool: packageVersion('xdotool'),
  };
  const sshd = await startBenchSshd([], INSTANCE_USER);
  const user = sshd.fixture.users[0]!;
  const instance = {
    host: sshd.fixture.host,
    port: sshd.fixture.port,
    username: user.username,
    privateKey: user.privateKey,
    hostKeyFingerprint: sshd.fixture.hostKeyFingerprint,
  };
  const driver = await InstanceDriver.connect(instance);
  const tools = (await driver.must(['tools', 0])).get('tool') ?? [];
  driver.close();
  const missing = NEEDED_TOOLS.filter((t) => !tools.includes(t));
  if (missing.length > 0)
    throw new Error(`the instance lacks ${missing.join(', ')} (bash scripts/setup.sh test installs them)`);

  const known = gatewayVariables();
  const results: SettingResult[] = [];
  for (const id of o.settings) {
    const setting = settingById(id)!;
    log(`bench:bandwidth: ${setting.id} — ${setting.label}`);
    const r = await runSetting(setting, { options: o, instance, gatewayVariables: known, shotsDir, log });
    log(
      `bench:bandwidth: ${setting.id}: ${r.status}${r.reason ? ` (${r.reason.split('\n')[0]})` : ''}${
        r.officeKbps !== null ? `, office minute ${r.officeKbps.toFixed(1)} kbit/s` : ''
      } in ${r.seconds.toFixed(0)} s`,
    );
    results.push(r);
  }
  await sshd.stop();

  const result: BandwidthResult = {
    label: o.label,
    command: [
      'npm run bench:bandwidth',
      ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : []),
    ].join(' '),
    options: {
      ...o,
      outDir: relative(repoDir, outDir),
      report: relative(repoDir, reportPath),
      shotsDir: relative(repoDir, shotsDir),
    },
    machine,
    startedAt,
    finishedAt: new Date().toISOString(),
    byteSource:
      o.byteSource === 'metrics'
        ? 'the gateway’s relay byte counter (`clouddesk_relay_bytes_total` on `METRICS_PORT`)'
        : 'the session’s recorded usage (`GET /api/sessions/:id`)',
    officeWeights: { ...officeWeights },
    settings: results,
  };
  const base = join(outDir, o.label);
  const chartPath = `${base}.svg`;
  await writeFile(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(chartPath, renderBandwidthChart(result));
  await mkdir(dirname(reportPath), { recursive: true });
  await writeFile(
    reportPath,
    renderBandwidthReport(result, {
      chart: relative(dirname(reportPath), chartPath),
      json: relative(dirname(reportPath), `${base}.json`),
      reportDir: dirname(reportPath),
      repoDir,
    }),
  );
  log(
    `bench:bandwidth: wrote ${relative(process.cwd(), base)}.{json,svg} and ${relative(process.cwd(), reportPath)}`,
  );
  if (results.some((r) => r.status === 'failed')) process.exitCode = 1;
}

main()
  .catch((e: unknown) => {
    log(`bench:bandwidth failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  })
  .finally(() => {
    void stopEverything().then(() => process.exit());
  });
