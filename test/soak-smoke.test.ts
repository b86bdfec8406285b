// The chaos soak's smoke run (bench/soak/soak.ts, issue 11): the whole stack — three gateways behind HAProxy,
// Redis under Sentinel, PostgreSQL under Patroni — with a few viewers streaming from the benchmark's
// desktop simulator and API workers in a loop, and one fault of each kind (a gateway SIGKILLed, a
// gateway drained, the Redis primary SIGKILLed, the PostgreSQL primary's postmaster SIGKILLed, a
// gateway partitioned from both stores), each recovered from before the next. It asserts that nothing
// was lost — no viewer left without its desktop, no byte missing or out of order, no acknowledged write
// missing, no 500 — and never how long anything took.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FAULT_KINDS, runSoak } from '../bench/soak/soak.js';
import { lostAnything } from '../bench/soak/soak-report.js';

test('chaos soak, one fault of each kind: nothing lost', { timeout: 900_000 }, async () => {
  const lines: string[] = [];
  const result = await runSoak({
    minutes: 0,
    seed: 7,
    viewers: 6,
    apiWorkers: 2,
    gateways: 3,
    gapMs: [3000, 6000],
    oneOfEach: true,
    partitionMs: 8000,
    profile: 'office',
    sshUser: 'cdtestsoak2',
    log: (line) => lines.push(line),
  });
  const context = `${lines.join('\n')}\n${JSON.stringify(result.faults, null, 2)}`;
  assert.deepEqual(result.faults.map((f) => f.kind).sort(), [...FAULT_KINDS].sort(), context);
  assert.deepEqual(lostAnything(result), [], context);
  // The checks had something to check: every viewer passed the byte-exact barrier, writes were made.
  assert.equal(result.viewers.barrier.live, 6, context);
  assert.equal(result.viewers.barrier.exact, 6, context);
  for (const kind of ['user', 'instance', 'session', 'end'])
    assert.ok((result.writes.acked[kind] ?? 0) > 0, `no acknowledged ${kind} writes\n${context}`);
});
