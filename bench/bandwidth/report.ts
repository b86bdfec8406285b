// The markdown report of a bandwidth run (docs/bandwidth.md): the commands, the machine, kbit/s per phase
// and per office minute for every measured setting (the issue's table), the first frame, bytes per
// session-hour and the monthly bill beside the plan's, the issue's targets met or missed, what the person
// saw (canvas against framebuffer, screenshots), how far the two byte counts agree, and how it is
// measured. Numbers only from the result JSON.
import { join, relative } from 'node:path';
import { PLAN, monthlyUsd } from './cost-model.js';
import { officeWeights } from './phases.js';
import type { BandwidthResult, PhaseResult } from './result.js';
import { BASELINE_SETTING, BUDGET_SETTING, DEFAULT_SETTING } from './settings.js';

export interface ReportPaths {
  /** The chart and the JSON, relative to the report's folder. */
  chart: string;
  json: string;
  /** Absolute folders of the report and of the repository (screenshots are stored relative to it). */
  reportDir: string;
  repoDir: string;
}

export function kbit(v: number | null | undefined): string {
  if (v === null || v === undefined) return '–';
  if (v >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(1);
}

/** Decimal units, as the cost model's GB. */
export function megabytes(v: number | null | undefined): string {
  if (v === null || v === undefined) return '–';
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)} GB`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e8 ? 0 : 1)} MB`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(0)} KB`;
  return `${v.toFixed(0)} B`;
}

function usd(v: number | null | undefined): string {
  return v === null || v === undefined ? '–' : `$${Math.round(v).toLocaleString('en-US')}`;
}

function pct(v: number | null | undefined, digits = 2): string {
  return v === null || v === undefined ? '–' : `${(v * 100).toFixed(digits)} %`;
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** The phase's figure in the table: its whole cost per second; for a hidden tab, the rate while hidden. */
function phaseFigure(p: PhaseResult): number {
  return p.pageHidden ? p.activeKbps : p.kbps;
}

export interface TargetCheck {
  target: string;
  measured: string;
  met: boolean | null;
}

export function checkTargets(result: BandwidthResult): TargetCheck[] {
  const measured = result.settings.filter((s) => s.status === 'measured');
  const byId = (id: string) => measured.find((s) => s.id === id);
  const out: TargetCheck[] = [];
  const def = byId(DEFAULT_SETTING);
  const base = byId(BASELINE_SETTING);
  const defOffice = def?.officeKbps ?? null;
  const baseOffice = base?.officeKbps ?? null;
  out.push({
    target: 'the default settings’ office minute ≤ 20 % of noVNC’s defaults’',
    measured:
      defOffice !== null && baseOffice !== null && baseOffice > 0
        ? `${pct(defOffice / baseOffice, 0)} (${kbit(defOffice)} vs ${kbit(baseOffice)} kbit/s)`
        : 'not measured (needs both settings)',
    met: defOffice !== null && baseOffice !== null && baseOffice > 0 ? defOffice <= 0.2 * baseOffice : null,
  });
  out.push({
    target: 'the default settings’ office minute ≤ 400 kbit/s (≈ $7k instead of $35k a month per 1000 users)',
    measured:
      defOffice !== null
        ? `${kbit(defOffice)} kbit/s (${usd(def?.monthlyUsdWithCloudFront)})`
        : 'not measured',
    met: defOffice !== null ? defOffice <= 400 : null,
  });
  out.push({
    target: 'stretch: the default settings’ office minute ≤ 250 kbit/s',
    measured: defOffice !== null ? `${kbit(defOffice)} kbit/s` : 'not measured',
    met: defOffice !== null ? defOffice <= 250 : null,
  });
  const budget = byId(BUDGET_SETTING);
  const worstBy = (f: (p: PhaseResult) => number) =>
    budget?.phases.reduce<PhaseResult | null>((w, p) => (w === null || f(p) > f(w) ? p : w), null) ?? null;
  const worst = worstBy((p) => p.activeKbps);
  const worstSending = worstBy((p) => p.sendingKbps);
  const budgetReason = result.settings.find((s) => s.id === BUDGET_SETTING)?.reason;
  out.push({
    target: 'with SESSION_MAX_KBPS=2000, no phase averages more than 2.1 Mbit/s',
    measured:
      worst && worstSending
        ? `highest while the workload ran: ${worst.id} ${kbit(worst.activeKbps)} kbit/s; ` +
          `over the phase until its screen settled: ${worstSending.id} ${kbit(worstSending.sendingKbps)} kbit/s`
        : `not measured: ${budgetReason ?? 'setting not run'}`,
    met: worst && worstSending ? worst.activeKbps <= 2100 && worstSending.sendingKbps <= 2100 : null,
  });
  out.push({
    target: '… and typing echo is no slower',
    measured: 'not measured here: the echo round trip is `npm run bench`’s (its simulator)',
    met: null,
  });
  const hidden = def?.phases.find((p) => p.pageHidden);
  out.push({
    target: 'a hidden tab averages ≤ 1 kbit/s while its desktop is busy (default settings)',
    measured: hidden ? `${kbit(hidden.activeKbps)} kbit/s while hidden` : 'not measured',
    met: hidden ? hidden.activeKbps <= 1 : null,
  });
  const checks = measured.flatMap((s) => s.phases.filter((p) => p.screen !== null));
  const exact = checks.filter((p) => p.screen!.diff.differing === 0);
  out.push({
    target: 'after each phase settles, the canvas equals the lossless framebuffer (every setting)',
    measured:
      `${exact.length} of ${checks.length} phases pixel-exact: TigerVNC's "lossless" refresh of a JPEG area ` +
      'is JPEG at its quality level 9 (libjpeg quality 100, no chroma subsampling), see docs/desktop-setup.md',
    met: checks.length > 0 ? exact.length === checks.length : null,
  });
  const invisible = checks.filter((p) => p.screen!.diff.visible === 0);
  const worstDelta = checks.reduce((m, p) => Math.max(m, p.screen!.diff.maxDelta), 0);
  out.push({
    target: '… what can be had from TigerVNC 1.12 with JPEG: no pixel off by more than 8 levels in a channel',
    measured: `${invisible.length} of ${checks.length} phases; the largest difference anywhere ${worstDelta} levels`,
    met: checks.length > 0 ? invisible.length === checks.length : null,
  });
  out.push({
    target: 'the relay’s CPU per GB within 5 % of today’s',
    measured: 'not measured here: `npm run bench` (docs/benchmarks.md)',
    met: null,
  });
  return out;
}

function settingsTable(result: BandwidthResult): string[] {
  const lines = [
    '| setting | what | web client | gateway environment | desktop | status |',
    '|---|---|---|---|---|---|',
  ];
  for (const s of result.settings) {
    const client = [
      s.client.requestedQuality === null
        ? `no preference${s.client.selectedQuality ? ` (${s.client.selectedQuality})` : ''}`
        : `preset ${s.client.requestedQuality}`,
      s.client.levels
        ? `SetEncodings at q${s.client.levels.quality}, c${s.client.levels.compression}${s.status === 'measured' ? ` (${s.client.encodingsRewritten} rewritten)` : ''}`
        : null,
      `${s.client.scaling === 'fit' ? 'Fit' : 'Resize'} ${s.viewport.width}×${s.viewport.height}`,
    ]
      .filter((x) => x !== null)
      .join(', ');
    const env =
      s.knobs
        .map(
          (k) =>
            `\`${k.name}=${k.value}\`${k.known ? '' : k.ifKnown ? ' (not read by this gateway: today’s behaviour anyway)' : ' (**not read by this gateway**)'}`,
        )
        .join(', ') || '–';
    const desktop = [
      s.desktop.geometry ? `${s.desktop.geometry}` : null,
      s.desktop.compositing !== null
        ? `compositing ${s.desktop.compositing === 'true' ? 'on' : 'off'}`
        : null,
    ]
      .filter((x) => x !== null)
      .join(', ');
    const status =
      s.status === 'measured'
        ? `measured in ${s.seconds.toFixed(0)} s`
        : `**${s.status}**: ${s.reason ?? ''}`;
    lines.push(
      `| ${cell(s.label)} | ${cell(s.description)} | ${cell(client)} | ${cell(env)} | ${cell(desktop || '–')} | ${cell(status.split('\n')[0]!)} |`,
    );
  }
  return lines;
}

export function renderBandwidthReport(result: BandwidthResult, paths: ReportPaths): string {
  const measured = result.settings.filter((s) => s.status === 'measured');
  const m = result.machine;
  const lines: string[] = [];
  lines.push('# Bandwidth: what a real desktop costs per minute', '');
  lines.push(
    '<!-- Generated by `npm run bench:bandwidth` (bench/bandwidth/); do not edit by hand: run it again. -->',
    '',
  );
  lines.push(
    'What a CloudDesk session sends to the browser, measured on a real desktop (issue 13, part 1). Commands:',
    '',
    '```sh',
    `${result.command}   # this report`,
    'npm run bench:bandwidth -- --list                                  # settings and phases',
    'npm run bench:bandwidth -- --settings defaults,low --phase-secs 10 # a quick look',
    '```',
    '',
  );
  lines.push(
    `Machine: ${m.cores} × ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}, ${m.openssh}, ` +
      `TigerVNC ${m.tigervnc}, xfce4-session ${m.xfce}, Chromium ${m.chromium}, xdotool ${m.xdotool} (Debian packages); load average before the run ` +
      `${m.loadAverage.join(' / ')}, other processes used ${m.busyBeforeRunPercent} % of a core just before it (shared machine). ` +
      `Commit ${m.gitCommit}. ${result.startedAt} → ${result.finishedAt}. Result: [\`${paths.json}\`](${paths.json}).`,
    '',
  );

  // ---- the main table ----
  lines.push('## kbit/s to the viewer', '');
  if (measured.length === 0) {
    lines.push('No setting was measured.', '');
  } else {
    const phaseIds = [...new Set(measured.flatMap((s) => s.phases.map((p) => p.id)))];
    lines.push(`| phase | ${measured.map((s) => cell(s.label)).join(' | ')} | plan |`);
    lines.push(`|---|${measured.map(() => '---:').join('|')}|---:|`);
    for (const id of phaseIds) {
      const first = measured.flatMap((s) => s.phases).find((p) => p.id === id)!;
      const secs = Math.round(first.seconds);
      const label = `${first.label}, ${secs} s${first.pageHidden ? ' (while hidden)' : ''}`;
      const cells = measured.map((s) => {
        const p = s.phases.find((x) => x.id === id);
        return p ? kbit(phaseFigure(p)) : '–';
      });
      lines.push(`| ${cell(label)} | ${cells.join(' | ')} | |`);
    }
    const weights = Object.entries(officeWeights)
      .map(([k, v]) => `${Math.round(v * 100)} % ${k}`)
      .join(', ');
    lines.push(
      `| **office minute** (${weights}) | ${measured.map((s) => `**${kbit(s.officeKbps)}**`).join(' | ')} | **${kbit(PLAN.assumedKbps)}** |`,
    );
    lines.push(
      `| first frame after connect | ${measured.map((s) => megabytes(s.firstFrame?.gatewayToViewer)).join(' | ')} | |`,
    );
    lines.push(
      `| per session-hour (office minute) | ${measured.map((s) => megabytes(s.sessionHourBytes)).join(' | ')} | ${megabytes((PLAN.assumedKbps * 1000 * 3600) / 8)} |`,
    );
    lines.push(
      `| $ / month, 1000 concurrent users, $0.09/GB | ${measured.map((s) => usd(s.monthlyUsd)).join(' | ')} | ${usd(monthlyUsd(PLAN.assumedKbps))} |`,
    );
    lines.push(
      `| … after the plan’s 40 % CloudFront cut | ${measured.map((s) => `**${usd(s.monthlyUsdWithCloudFront)}**`).join(' | ')} | **${usd(PLAN.quotedMonthlyUsd)}** |`,
    );
    lines.push('');
    lines.push(
      `Each phase's figure is its bytes to the viewer from the start of the workload until the screen settled after it ` +
        `(TigerVNC's lossless refresh included), divided by the workload's seconds; for the hidden tab, the bytes while it was hidden. ` +
        `The office minute weights the phases ${weights}. The monthly bill is the plan's model (section 7.2): ` +
        `${PLAN.concurrentSessions} sessions at the office-minute rate, ${PLAN.hoursPerMonth} hours a month, $${PLAN.usdPerGB}/GB; the plan's ` +
        `2 Mbit/s makes $${PLAN.rawMonthlyUsd.toLocaleString('en-US')} that way, and its quoted $35,000 applies a 40 % CloudFront reduction on top, ` +
        'so the bold row is the one to read beside it.',
      '',
    );
    lines.push(`![office minute and monthly bill per setting](${paths.chart})`, '');
  }

  // ---- targets ----
  lines.push('## Targets (issue 13)', '', '| target | measured | met |', '|---|---|---|');
  for (const t of checkTargets(result))
    lines.push(
      `| ${cell(t.target)} | ${cell(t.measured)} | ${t.met === null ? '–' : t.met ? 'yes' : '**no**'} |`,
    );
  lines.push('');

  // ---- settings ----
  lines.push('## Settings', '');
  lines.push(...settingsTable(result), '');
  lines.push(
    'A setting whose gateway variable this checkout does not read yet (its config parser is asked which names it reads), ' +
      'or whose preset the web client does not offer, is not measured: it would only measure the defaults under a new name. ' +
      'They are measured as soon as their knob lands.',
    '',
  );

  // ---- what the person saw ----
  if (measured.length > 0) {
    lines.push('## What the person saw', '');
    lines.push(
      'After each phase settled, the browser’s canvas against the lossless framebuffer read on the instance (`import -window root`), ' +
        'pixel for pixel: the number of pixels that differ at all (0 = exact), how many of them by more than 8 levels in a channel ' +
        '(a difference one can see), and the largest difference. "moving" = the framebuffer changed while it was read (twice, around ' +
        'the canvas). A 65×65 square around the pointer is left out: Xvnc draws the cursor into the picture of a viewer whose own ' +
        'pointer is elsewhere (here xdotool moves it), and the X framebuffer has no cursor.',
      '',
    );
    const phaseIds = [...new Set(measured.flatMap((s) => s.phases.map((p) => p.id)))];
    lines.push(`| phase | ${measured.map((s) => cell(s.label)).join(' | ')} |`);
    lines.push(`|---|${measured.map(() => '---:').join('|')}|`);
    for (const id of phaseIds) {
      const cells = measured.map((s) => {
        const p = s.phases.find((x) => x.id === id);
        if (!p?.screen) return '–';
        const d = p.screen.diff;
        if (d.sizeMismatch) return cell(d.sizeMismatch);
        const n =
          d.differing === 0
            ? '0'
            : `**${d.differing.toLocaleString('en-US')}** (${d.visible.toLocaleString('en-US')} > 8, max ${d.maxDelta})`;
        return `${n}${p.screen.framebufferStable ? '' : ' (moving)'}`;
      });
      lines.push(`| ${id} | ${cells.join(' | ')} |`);
    }
    lines.push('');
    const diffs = measured.flatMap((s) => s.phases.flatMap((p) => (p.screen ? [p.screen.diff] : [])));
    const inexact = diffs.filter((d) => d.differing > 0).length;
    if (inexact > 0) {
      const maxDelta = Math.max(...diffs.map((d) => d.maxDelta));
      const visible = diffs.filter((d) => d.visible > 0).length;
      const typical = [...diffs.map((d) => d.maxDelta)].sort((a, b) => a - b)[Math.floor(diffs.length / 2)]!;
      lines.push(
        `${inexact} of ${diffs.length} settled screens differ from the framebuffer; in ${diffs.length - visible} of them no pixel is off by more ` +
          `than 8 levels (the median largest difference is ${typical} levels, the largest anywhere ${maxDelta}). ` +
          'Small differences spread over the screen are what a high-quality JPEG leaves behind: TigerVNC’s refresh of a settled area ' +
          'is JPEG at its quality level 9 (libjpeg quality 100 without chroma subsampling, the encoder’s `losslessQuality`), ' +
          'near-lossless, not lossless. Text and flat areas (palette and solid Tight rectangles) arrive exact; only what was ' +
          'once sent as JPEG keeps a difference of a few levels. A client that asks for no JPEG quality gets lossless zlib ' +
          'throughout, at several times the bytes; TigerVNC has no setting for a truly lossless final refresh after JPEG.',
        '',
      );
    }
    const shots = measured.filter((s) => s.screenshot !== null);
    if (shots.length > 0) {
      lines.push('Screenshots, taken in the middle of the photo phase (a second after a new photo):', '');
      for (const s of shots) {
        const rel = relative(paths.reportDir, join(paths.repoDir, s.screenshot!));
        lines.push(`- ${s.label}: [${rel}](${rel})`);
      }
      lines.push('');
    }

    // ---- the two counts ----
    lines.push('## The two counts', '');
    lines.push(
      `Bytes to the viewer over every phase, counted by ${result.byteSource} and by Chromium's WebSocket frames ` +
        '(DevTools protocol `Network.webSocketFrameReceived`), and the largest difference in one phase:',
      '',
      '| setting | gateway | browser | largest phase deviation | bytes from the viewer (gateway / browser) |',
      '|---|---:|---:|---:|---:|',
    );
    for (const s of measured) {
      const g = s.phases.reduce((a, p) => a + p.total.gatewayToViewer, 0);
      const b = s.phases.reduce((a, p) => a + p.total.browserReceived, 0);
      const up = s.phases.reduce((a, p) => a + p.total.gatewayFromViewer, 0);
      const upB = s.phases.reduce((a, p) => a + p.total.browserSent, 0);
      const dev = Math.max(0, ...s.phases.map((p) => p.sourceDeviation ?? 0));
      lines.push(
        `| ${cell(s.label)} | ${g.toLocaleString('en-US')} | ${b.toLocaleString('en-US')} | ${pct(dev, 3)} | ${megabytes(up)} / ${megabytes(upB)} |`,
      );
    }
    lines.push('');
  }

  // ---- method ----
  lines.push('## How it is measured', '');
  lines.push(
    '- **Real parts.** TigerVNC Xvnc and xfce, started by the CloudDesk gateway itself (a gateway process per setting, with that setting’s ' +
      'environment) over SSH on a loopback OpenSSH sshd with the benchmark’s own test user (`cdtestbw`); the web client from `web/dist` in ' +
      'Debian’s Chromium (headless, driven by playwright-core), which signs up, adds the instance with a key file, confirms its host key and ' +
      'connects, as a person would. Each setting gets a fresh browser profile, a fresh account and a new desktop from stock settings.',
    '- **The workload** is driven on the instance, as the instance user, with xdotool: idle; typing prose into an xterm at ~5 characters a ' +
      'second; `find /usr` scrolling in a maximized xterm; paging a long document (licence texts) in mousepad at 10 lines a second; dragging ' +
      'an xterm in circles (Alt+drag, a pointer move every 20 ms); feh showing a new photo every 3 s; a full-screen animation at 25 frames a ' +
      'second; and a hidden tab while `find /usr` scrolls. Photos and animation frames are made on the instance with ImageMagick’s plasma; ' +
      'nothing is downloaded. Windows are opened before the count starts and closed after it.',
    `- **Bytes** come from ${result.byteSource}, and from the browser's own WebSocket frames through the DevTools protocol; the table uses ` +
      'the gateway’s. Each setting’s gateway serves only this one viewer.',
    `- **Settled** = under ${String(result.options.quietBytes)} bytes to the viewer over ${String(result.options.quietMs)} ms ` +
      `(the web client’s own round-trip probe costs ~90 bytes every 2 s), waited for at most ${String(result.options.settleSeconds)} s.`,
    '- **First frame** = what a viewer receives from opening the desktop page again (a new WebSocket to the running desktop, after the last one closed) until the screen settled.',
    '- **Hidden tab**: headless Chromium reports every page as visible (minimizing or switching tabs changes nothing), so the phase makes ' +
      'the page look hidden where the web client looks (`document.visibilityState`, `document.hidden`, a `visibilitychange` event). ' +
      'Chromium’s own throttling of hidden tabs is not part of it.',
    '- **Noise.** The machine is shared and has 2 cores; Xvnc, xfce, Chromium, the gateway and sshd share them. Frame rates in the busy ' +
      'phases are limited by that CPU, so those figures are if anything low. Compare numbers within one run.',
  );
  lines.push('');
  return lines.join('\n');
}
