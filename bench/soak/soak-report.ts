// The soak's result as markdown (bench/results/soak-*.md, docs/reliability.md), and the list of what
// was lost — empty when nothing was: the smoke test asserts on it, the CLI exits 1 on it.
import type { SoakResult } from './soak.js';

/** Everything the soak promises not to lose, as sentences; [] when nothing was lost. */
export function lostAnything(r: SoakResult): string[] {
  const out: string[] = [];
  const v = r.viewers;
  if (v.notBack.length > 0)
    out.push(`${v.notBack.length} viewers lost and not back: ${JSON.stringify(v.notBack)}`);
  if (v.sessionsLost > 0)
    out.push(`${v.sessionsLost} viewers found their session gone and had to connect anew`);
  if (v.corruptStreams.length > 0)
    out.push(
      `${v.corruptStreams.length} streams with bytes missing or out of order: ${JSON.stringify(v.corruptStreams)}`,
    );
  if (v.barrier.mismatched.length > 0) out.push(`byte counts differ: ${v.barrier.mismatched.join('; ')}`);
  if (v.barrier.noAnswer > 0) out.push(`${v.barrier.noAnswer} live streams never answered the barrier`);
  if (v.unexpectedDrops.length > 0)
    out.push(
      `${v.unexpectedDrops.length} streams cut where none should be: ${JSON.stringify(v.unexpectedDrops)}`,
    );
  if (r.writes.missing.length > 0)
    out.push(`${r.writes.missing.length} acknowledged writes missing: ${JSON.stringify(r.writes.missing)}`);
  const fiveHundreds = r.api.fiveXx.filter((x) => x.status === 500);
  if (fiveHundreds.length > 0)
    out.push(`${fiveHundreds.length} answers 500: ${JSON.stringify(fiveHundreds)}`);
  const unrecovered = r.faults.filter((f) => f.recoveredAtMs === null);
  if (unrecovered.length > 0)
    out.push(`${unrecovered.length} faults not recovered: ${JSON.stringify(unrecovered)}`);
  return out;
}

const s = (ms: number | null) => (ms === null ? '—' : `${(ms / 1000).toFixed(1)} s`);

export function soakMarkdown(r: SoakResult, command: string): string {
  const v = r.viewers;
  const lost = lostAnything(r);
  const byKind = new Map<string, number[]>();
  for (const f of r.faults)
    if (f.recoveryMs !== null) byKind.set(f.kind, [...(byKind.get(f.kind) ?? []), f.recoveryMs]);
  const lines = [
    `# Chaos soak: ${(r.durationMs / 60_000).toFixed(1)} minutes, ${r.faults.length} faults`,
    '',
    `\`${command}\` — started ${r.startedAt}, seed ${r.options.seed}; ${r.options.gateways} gateways behind HAProxy, Redis Sentinel (primary + replica + 3 sentinels), Patroni (2 nodes, synchronous) + etcd + HAProxy; ${v.count} viewers (\`${r.options.profile}\` profile) and ${r.options.apiWorkers} API workers.`,
    '',
    `**${lost.length === 0 ? 'Nothing lost.' : `LOST: ${lost.length} kinds of loss (below).`}**`,
    '',
    'Recovery: a killed or drained gateway is restarted at once (as a supervisor would) and counts as',
    'recovered when HAProxy has it UP again, it signs in and issues a ticket, and every viewer cut is',
    'streaming again; a Redis or PostgreSQL primary kill when every gateway signs in and issues a ticket',
    '(each asked directly) and every viewer cut is back; a partition from its healing to the same on the',
    'partitioned gateway. "Undone" is when the cause was undone: the gateway restarted and ready, a new',
    'Redis primary elected, the partition healed.',
    '',
    '| # | at | fault | target | undone after | recovery | viewers cut | all back after | notes |',
    '|---:|---:|---|---|---:|---:|---:|---:|---|',
    ...r.faults.map(
      (f, i) =>
        `| ${i + 1} | ${s(f.atMs)} | ${f.kind} | ${f.target} | ${s(f.undoneAtMs === null ? null : f.undoneAtMs - f.atMs)} | ${s(f.recoveryMs)} | ${f.viewersDropped} | ${s(f.viewersBackMs)} | ${f.notes.join('; ')} |`,
    ),
    '',
    '| fault kind | count | recovery min / max |',
    '|---|---:|---:|',
    ...[...byKind.entries()].map(
      ([k, xs]) => `| ${k} | ${xs.length} | ${s(Math.min(...xs))} / ${s(Math.max(...xs))} |`,
    ),
    '',
    '| what | result |',
    '|---|---|',
    `| viewers lost and not back | ${v.notBack.length} |`,
    `| sessions lost (a viewer had to connect anew) | ${v.sessionsLost} |`,
    `| streams cut (outages) / longest outage | ${v.outages} / ${s(v.longestOutageMs)} |`,
    `| streams cut where no gateway was being killed or drained | ${v.unexpectedDrops.length} |`,
    `| streams opened / with bytes missing or out of order | ${v.streams} / ${v.corruptStreams.length} |`,
    `| byte-exact barrier at the end (live / exact / mismatched / no answer) | ${v.barrier.live} / ${v.barrier.exact} / ${v.barrier.mismatched.length} / ${v.barrier.noAnswer} |`,
    `| bytes streamed to viewers | ${(v.bytesIn / 1e9).toFixed(2)} GB |`,
    `| acknowledged writes (${Object.entries(r.writes.acked)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}) missing | ${r.writes.missing.length} |`,
    `| API requests / API-worker loops (abandoned) | ${r.api.requests} / ${r.api.loops} (${r.api.abandoned}) |`,
    `| answers by status | ${Object.entries(r.api.statuses)
      .map(([k, n]) => `${k}: ${n}`)
      .join(', ')} |`,
    `| 5xx by status and code | ${
      Object.entries(r.api.fiveXxByCode)
        .map(([k, n]) => `${k}: ${n}`)
        .join(', ') || 'none'
    } |`,
    `| network errors | ${
      Object.entries(r.api.networkErrors)
        .map(([k, n]) => `${k}: ${n}`)
        .join(', ') || 'none'
    } |`,
    `| recovery probes' 5xx (sent to a gateway directly, during outages) | ${
      Object.entries(r.probes.fiveXxByCode)
        .map(([k, n]) => `${k}: ${n}`)
        .join(', ') || 'none'
    } |`,
    `| HAProxy: time with no gateway UP / state changes | ${s(r.balancer.noneUpMs)} / ${r.balancer.changes.length} |`,
    '',
  ];
  if (lost.length > 0) lines.push('## Lost', '', ...lost.map((l) => `- ${l}`), '');
  if (r.api.fiveXx.length > 0)
    lines.push(
      '## Every 5xx',
      '',
      ...r.api.fiveXx.slice(0, 200).map((x) => `- ${s(x.atMs)} ${x.route}: ${x.status} ${x.code}`),
      '',
    );
  const diagnosed = (r.api.fiveXxLogs ?? []).filter((x) => x.lines.length > 0);
  if (diagnosed.length > 0)
    lines.push(
      "## Gateways' errors around each 5xx",
      '',
      'Log lines at level ≥ error from 15 s before to 2 s after each answer; "this request" marks the',
      "answered request's own line (a 500 names its request id).",
      '',
      ...diagnosed
        .slice(0, 50)
        .flatMap((x) => [
          `### ${s(x.atMs)} ${x.route}: ${x.status} ${x.code}`,
          '',
          ...x.lines.flatMap((l) => [
            `- ${s(l.atMs)} ${l.gateway}${l.sameRequest ? ' (this request)' : ''}: ${l.msg}${
              l.err ? ` — ${l.err.type}${l.err.code ? ` ${l.err.code}` : ''}: ${l.err.message}` : ''
            }`,
            ...(l.err?.stack ? ['', '  ```', ...l.err.stack.split('\n').map((t) => `  ${t}`), '  ```'] : []),
          ]),
          '',
        ]),
    );
  return lines.join('\n');
}
