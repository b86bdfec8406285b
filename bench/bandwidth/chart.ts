// The bandwidth report's SVG chart: one bar per measured setting, the office minute in kbit/s (left, with
// the plan's 2 Mbit/s and the issue's 400 kbit/s target marked) and the monthly bill for 1000 concurrent
// users after the plan's CloudFront cut (right, with the plan's $35k marked). The axes and ticks are
// bench/report/svg-chart.ts's.
import { esc, fmt, ticks } from '../report/svg-chart.js';
import { PLAN } from './cost-model.js';
import type { BandwidthResult, SettingResult } from './result.js';

const W = 960;
const ROW = 26;
const TOP = 64;
const LABEL_W = 200;
const PANEL_W = 300;
const GAP = 60;

interface Mark {
  at: number;
  text: string;
}

function panel(
  left: number,
  title: string,
  rows: { label: string; value: number }[],
  marks: Mark[],
  unit: (v: number) => string,
): string {
  const max = Math.max(...rows.map((r) => r.value), ...marks.map((m) => m.at), 1);
  const t = ticks(max);
  const top = t[t.length - 1]!;
  const x = (v: number) => left + (v / top) * PANEL_W;
  const h = rows.length * ROW;
  const parts: string[] = [
    `<text x="${left + PANEL_W / 2}" y="${TOP - 24}" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
  ];
  for (const v of t) {
    parts.push(`<line x1="${x(v)}" y1="${TOP}" x2="${x(v)}" y2="${TOP + h}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${x(v)}" y="${TOP + h + 16}" text-anchor="middle">${esc(fmt(v))}</text>`);
  }
  rows.forEach((r, i) => {
    const y = TOP + i * ROW + 4;
    parts.push(
      `<rect x="${left}" y="${y}" width="${Math.max(1, x(r.value) - left).toFixed(1)}" height="${ROW - 8}" fill="#1f77b4"><title>${esc(
        `${r.label}: ${unit(r.value)}`,
      )}</title></rect>`,
      `<text x="${(x(r.value) + 4).toFixed(1)}" y="${y + ROW / 2}" font-size="11">${esc(unit(r.value))}</text>`,
    );
  });
  for (const m of marks) {
    parts.push(
      `<line x1="${x(m.at)}" y1="${TOP - 6}" x2="${x(m.at)}" y2="${TOP + h}" stroke="#d62728" stroke-dasharray="4 3"/>`,
      `<text x="${x(m.at)}" y="${TOP - 8}" text-anchor="middle" font-size="10" fill="#d62728">${esc(m.text)}</text>`,
    );
  }
  parts.push(`<rect x="${left}" y="${TOP}" width="${PANEL_W}" height="${h}" fill="none" stroke="#999"/>`);
  return parts.join('\n');
}

export function renderBandwidthChart(result: BandwidthResult): string {
  const measured = result.settings.filter(
    (s): s is SettingResult & { officeKbps: number; monthlyUsdWithCloudFront: number } =>
      s.status === 'measured' && s.officeKbps !== null && s.monthlyUsdWithCloudFront !== null,
  );
  const h = TOP + Math.max(1, measured.length) * ROW + 60;
  const labels = measured
    .map(
      (s, i) =>
        `<text x="${LABEL_W - 8}" y="${TOP + i * ROW + ROW / 2 + 4}" text-anchor="end">${esc(s.label)}</text>`,
    )
    .join('\n');
  const left1 = LABEL_W;
  const left2 = LABEL_W + PANEL_W + GAP + 40;
  const m = result.machine;
  const subtitle = `office minute (${Object.entries(result.officeWeights)
    .map(([k, v]) => `${Math.round(v * 100)} % ${k}`)
    .join(', ')}) · ${m.cores} × ${m.cpuModel} · ${result.startedAt.slice(0, 10)}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${h}" fill="#fff"/>
<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${esc(subtitle)}</text>
${labels}
${panel(
  left1,
  'kbit/s to the viewer',
  measured.map((s) => ({ label: s.label, value: s.officeKbps })),
  [
    { at: PLAN.assumedKbps, text: 'plan: 2 Mbit/s' },
    { at: 400, text: 'target 400' },
  ],
  (v) => `${fmt(v)} kbit/s`,
)}
${panel(
  left2,
  '$/month, 1000 users (plan’s CloudFront basis)',
  measured.map((s) => ({ label: s.label, value: s.monthlyUsdWithCloudFront })),
  [{ at: PLAN.quotedMonthlyUsd, text: 'plan: $35k' }],
  (v) => `$${Math.round(v).toLocaleString('en-US')}`,
)}
</svg>
`;
}
