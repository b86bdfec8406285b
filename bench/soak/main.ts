// `npm run soak -- --minutes N [--seed S] [--viewers V] [--api-workers W] [--one-of-each] [--name NAME]`:
// the chaos soak of issue 11 (soak.ts). Writes bench/results/<name>.json and .md (name: soak-<N>m) and
// exits 1 when anything was lost: a viewer not back, a stream whose bytes went missing or out of order,
// an acknowledged write missing, a 500.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runSoak, type SoakOptions } from './soak.js';
import { lostAnything, soakMarkdown } from './soak-report.js';

const USAGE =
  'usage: npm run soak -- --minutes N [--seed S] [--viewers 50..100] [--api-workers W] [--one-of-each] [--name NAME]';

function parse(argv: string[]): SoakOptions & { name: string } {
  const o: SoakOptions & { name: string } = {
    minutes: 30,
    seed: 1,
    viewers: 60,
    apiWorkers: 3,
    gateways: 3,
    gapMs: [20_000, 60_000],
    oneOfEach: false,
    partitionMs: 10_000,
    profile: 'office',
    sshUser: 'cdtestsoak1',
    name: '',
    log: (line) => console.error(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}`),
  };
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min || n > max) {
      console.error(`${flag} must be an integer from ${min} to ${max}\n${USAGE}`);
      process.exit(2);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--minutes') o.minutes = num(a, argv[++i], 1, 24 * 60);
    else if (a === '--seed') o.seed = num(a, argv[++i], 0, 2 ** 31);
    else if (a === '--viewers') o.viewers = num(a, argv[++i], 1, 500);
    else if (a === '--api-workers') o.apiWorkers = num(a, argv[++i], 0, 50);
    else if (a === '--one-of-each') o.oneOfEach = true;
    else if (a === '--name') o.name = argv[++i] ?? '';
    else {
      console.error(`unknown option ${a}\n${USAGE}`);
      process.exit(2);
    }
  }
  o.name ||= o.oneOfEach ? 'soak-one-of-each' : `soak-${o.minutes}m`;
  return o;
}

const options = parse(process.argv.slice(2));
const result = await runSoak(options);
const dir = fileURLToPath(new URL('../results/', import.meta.url));
await mkdir(dir, { recursive: true });
const command = `flock /work/bench.lock npm run soak -- ${process.argv.slice(2).join(' ')}`.trim();
await writeFile(join(dir, `${options.name}.json`), JSON.stringify({ command, ...result }, null, 2) + '\n');
await writeFile(join(dir, `${options.name}.md`), soakMarkdown(result, command));
console.error(soakMarkdown(result, command));
process.exit(lostAnything(result).length > 0 ? 1 : 0);
