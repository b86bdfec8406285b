// Command-line options of `npm run bench:bandwidth -- [options]`, parsed and checked in one place; every
// bad value is reported together, as `npm run bench` and the gateway's own config do.
import { phaseById, phases } from './phases.js';
import { settingById, settings } from './settings.js';

export type ByteSourceName = 'metrics' | 'usage-api';

export interface BandwidthOptions {
  settings: string[];
  phases: string[];
  /** Active seconds per phase id. */
  seconds: Record<string, number>;
  /** Longest wait for the screen to settle after a phase (or at connect). */
  settleSeconds: number;
  /** Settled = less than `quietBytes` to the viewer over the last `quietMs`. */
  quietMs: number;
  quietBytes: number;
  byteSource: ByteSourceName;
  outDir: string;
  report: string;
  shotsDir: string;
  label: string;
  seed: number;
  list: boolean;
  help: boolean;
}

export const usage = `npm run bench:bandwidth -- [options]

  --settings a,b        settings to run, by id (--list shows them)                  (default all)
  --phases a,b          phases to run, by id, in the order given                     (default all)
  --phase-secs S        active seconds of every phase
  --secs id=S[,id=S…]   active seconds of single phases (after --phase-secs)
                        (defaults: ${phases.map((p) => `${p.id}=${p.seconds}`).join(', ')})
  --settle-secs S       longest wait for the screen to settle after a phase           (default 20)
  --quiet-ms MS         settled = under --quiet-bytes to the viewer for this long      (default 1500)
  --quiet-bytes B                                                                       (default 1024)
  --bytes-source S      the gateway's side of the count: metrics (the relay's byte counter on
                        METRICS_PORT) or usage-api (GET /api/sessions/:id bytesToViewer)  (default metrics)
  --out DIR             results folder (JSON, chart)                                  (default bench/results)
  --report FILE         the markdown report                                           (default docs/bandwidth.md)
  --shots DIR           one screenshot per setting                                    (default docs/screenshots/bandwidth)
  --label NAME          name of the result files                                      (default bandwidth)
  --seed N              seed of the generated photos and animation                    (default 1)
  --list                print the settings and phases, then exit
`;

export function parseOptions(argv: string[]): BandwidthOptions {
  const o: BandwidthOptions = {
    settings: settings.map((s) => s.id),
    phases: phases.map((p) => p.id),
    seconds: Object.fromEntries(phases.map((p) => [p.id, p.seconds])),
    settleSeconds: 20,
    quietMs: 1500,
    quietBytes: 1024,
    byteSource: 'metrics',
    outDir: 'bench/results',
    report: 'docs/bandwidth.md',
    shotsDir: 'docs/screenshots/bandwidth',
    label: 'bandwidth',
    seed: 1,
    list: false,
    help: false,
  };
  const problems: string[] = [];
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      problems.push(`${flag} needs a number from ${min} to ${max} (got ${v ?? 'nothing'})`);
      return min;
    }
    return n;
  };
  const ids = (flag: string, v: string | undefined, known: (id: string) => boolean): string[] => {
    const list = (v ?? '').split(',').filter((s) => s !== '');
    const unknown = list.filter((id) => !known(id));
    if (list.length === 0) problems.push(`${flag} needs a list of ids`);
    if (unknown.length > 0) problems.push(`${flag}: unknown ${unknown.join(', ')} (see --list)`);
    return list.filter(known);
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = () => argv[++i];
    switch (flag) {
      case '--settings':
        o.settings = ids(flag, value(), (id) => settingById(id) !== undefined);
        break;
      case '--phases':
        o.phases = ids(flag, value(), (id) => phaseById(id) !== undefined);
        break;
      case '--phase-secs': {
        const s = num(flag, value(), 1, 3600);
        for (const id of Object.keys(o.seconds)) o.seconds[id] = s;
        break;
      }
      case '--secs':
        for (const entry of (value() ?? '').split(',')) {
          const [id, s] = entry.split('=');
          if (id === undefined || phaseById(id) === undefined)
            problems.push(`--secs: unknown phase ${id ?? ''}`);
          else o.seconds[id] = num(`--secs ${id}`, s, 1, 3600);
        }
        break;
      case '--settle-secs':
        o.settleSeconds = num(flag, value(), 1, 600);
        break;
      case '--quiet-ms':
        o.quietMs = Math.round(num(flag, value(), 100, 60_000));
        break;
      case '--quiet-bytes':
        o.quietBytes = Math.round(num(flag, value(), 0, 10_000_000));
        break;
      case '--bytes-source': {
        const v = value();
        if (v === 'metrics' || v === 'usage-api') o.byteSource = v;
        else problems.push('--bytes-source must be metrics or usage-api');
        break;
      }
      case '--out':
        o.outDir = value() ?? o.outDir;
        break;
      case '--report':
        o.report = value() ?? o.report;
        break;
      case '--shots':
        o.shotsDir = value() ?? o.shotsDir;
        break;
      case '--label': {
        const v = value() ?? '';
        if (/^[A-Za-z0-9._-]{1,64}$/.test(v)) o.label = v;
        else problems.push('--label takes 1-64 of [A-Za-z0-9._-]');
        break;
      }
      case '--seed':
        o.seed = Math.round(num(flag, value(), 0, 2 ** 31));
        break;
      case '--list':
        o.list = true;
        break;
      case '--help':
      case '-h':
        o.help = true;
        break;
      default:
        problems.push(`unknown option ${flag}`);
    }
  }
  if (problems.length > 0) throw new Error(`bad options:\n  - ${problems.join('\n  - ')}\n\n${usage}`);
  return o;
}
