// Long-task attribution (observability/long-tasks.ts): which stretches of a CPU profile blocked the
// loop, and behind what — on a hand-made profile, and on the gateway's loop profiling itself.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { sql } from 'kysely';
import { openStore } from '../src/store/database.js';
import {
  LongTaskMonitor,
  findLongTasks,
  summarizeLongTasks,
  type CpuProfile,
  type LongTask,
} from '../src/observability/long-tasks.js';

const SRC = 'file:///repo/src';
const NM = 'file:///repo/node_modules';

/** A profile from named stacks (root first): one sample per entry, each lasting `us`. */
function profileOf(samples: { stack: [string, string][]; us: number }[]): CpuProfile {
  const nodes: CpuProfile['nodes'] = [
    { id: 1, callFrame: { functionName: '(root)', url: '' }, children: [] },
  ];
  const idOf = (stack: [string, string][]) => {
    let at = nodes[0]!;
    for (const [functionName, url] of stack) {
      let next = (at.children ?? [])
        .map((c) => nodes.find((n) => n.id === c)!)
        .find((n) => n.callFrame.functionName === functionName && n.callFrame.url === url);
      if (!next) {
        next = { id: nodes.length + 1, callFrame: { functionName, url }, children: [] };
        nodes.push(next);
        at.children!.push(next.id);
      }
      at = next;
    }
    return at.id;
  };
  // timeDeltas[i] is the time since sample i-1; sample i lasts until sample i+1.
  const timeDeltas = [0, ...samples.slice(0, -1).map((s) => s.us)];
  return {
    nodes,
    startTime: 1_000_000,
    endTime: 1_000_000 + samples.reduce((a, s) => a + s.us, 0),
    samples: samples.map((s) => idOf(s.stack)),
    timeDeltas,
  };
}

const idle = { stack: [['(idle)', '']] as [string, string][], us: 5_000 };
const route: [string, string] = ['login', `${SRC}/auth/auth.routes.ts`];
const sqlite: [string, string][] = [
  route,
  ['findByEmail', `${SRC}/store/user.repository.ts`],
  ['executeQuery', `${NM}/kysely/dist/esm/dialect/sqlite/sqlite-driver.js`],
  ['all', ''],
];
const json: [string, string][] = [
  ['list', `${SRC}/instances/instance.routes.ts`],
  ['$main', `${NM}/fast-json-stringify/index.js`],
];
const relay: [string, string][] = [
  ['onData', `${NM}/ssh2/lib/protocol/Protocol.js`],
  ['forward', `${SRC}/relay/relay.ts`],
];

void describe('long tasks in a CPU profile', () => {
  void it('finds the busy stretches past the threshold and names each by where its time went', () => {
    const p = profileOf([
      idle,
      // 30 ms: 24 in SQLite under the login route, 6 in the relay
      ...Array.from({ length: 8 }, () => ({ stack: sqlite, us: 3_000 })),
      { stack: relay, us: 6_000 },
      idle,
      // 4 ms of relay: short, not a long task
      { stack: relay, us: 4_000 },
      idle,
      // 50 ms of JSON
      ...Array.from({ length: 10 }, () => ({ stack: json, us: 5_000 })),
      idle,
    ]);
    const tasks = findLongTasks(p, { overMs: 10 });
    assert.deepEqual(
      tasks.map((t) => [t.kind, Math.round(t.ms), t.where]),
      [
        ['sqlite', 30, 'store/user.repository.ts:findByEmail'],
        ['json', 50, 'instances/instance.routes.ts:list'],
      ],
    );
    assert.deepEqual(tasks[0]!.parts, [
      ['sqlite', 24],
      ['relay', 6],
    ]);

    const summary = summarizeLongTasks(tasks);
    assert.deepEqual(
      summary.map((s) => [s.kind, s.count, Math.round(s.p99Ms), Math.round(s.totalMs)]),
      [
        ['json', 1, 50, 50],
        ['sqlite', 1, 30, 30],
      ],
    );
  });

  void it('keeps only the tasks that start within a window of the profile', () => {
    const p = profileOf([
      ...Array.from({ length: 5 }, () => ({ stack: json, us: 5_000 })),
      idle,
      ...Array.from({ length: 5 }, () => ({ stack: sqlite, us: 5_000 })),
      idle,
    ]);
    const all = findLongTasks(p, { overMs: 10 });
    assert.equal(all.length, 2);
    const second = findLongTasks(p, { overMs: 10, fromUs: all[1]!.startUs, toUs: p.endTime });
    assert.deepEqual(
      second.map((t) => t.kind),
      ['sqlite'],
    );
  });

  void it('a loop that profiles itself reports a blocking SQLite query as a sqlite task', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clouddesk-long-tasks-'));
    const store = await openStore({ databaseUrl: null, dataDir: dir });
    const windows: LongTask[][] = [];
    let found: (tasks: LongTask[]) => void = () => undefined;
    const seen = new Promise<LongTask[]>((resolve) => (found = resolve));
    const monitor = new LongTaskMonitor({
      overMs: 20,
      windowMs: 200,
      onWindow: (tasks) => {
        windows.push(tasks);
        if (tasks.some((t) => t.kind === 'sqlite')) found(tasks);
      },
    });
    monitor.start();
    try {
      // A query that keeps better-sqlite3 (synchronous) busy well past 20 ms, a few times.
      for (let i = 0; i < 3; i++) {
        await sql`with recursive n(x) as (select 1 union all select x + 1 from n where x < 2000000) select count(*) from n`.execute(
          store.db,
        );
        await new Promise((r) => setTimeout(r, 50));
      }
      const tasks = await Promise.race([
        seen,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`no sqlite task in ${JSON.stringify(windows)}`)), 10_000),
        ),
      ]);
      const task = tasks.find((t) => t.kind === 'sqlite')!;
      assert.ok(task.ms > 20);
    } finally {
      monitor.stop();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
