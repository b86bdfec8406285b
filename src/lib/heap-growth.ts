// The old generation's growth between full collections, set once at start (GC_HEAP_GROWING_PERCENT).
//
// A relay allocates little on the JavaScript heap but a great deal outside it: every read from sshd is
// an ArrayBuffer of its own (≈ 125 MB/s at 1 Gbit/s relayed), dead by the next scavenge. V8 counts
// ArrayBuffer bytes allocated since the last full collection against the old generation's limit, and
// sets that limit from what survived the last full collection, times a factor it derives from its own
// old-generation allocation rate — which is low here, so the factor is small (≈ 1.2: live 33 MB, limit
// 56 MB). Once one full collection has happened, the young buffers in flight between two scavenges
// fill the little room left, every scavenge starts marking again, and the process does a full
// collection after nearly every scavenge: 85–117 in 30 s at 200 × 5 Mbit/s, against 0–1 before the
// first, with 1.6 times the CPU per GB relayed and twice the event-loop delay (docs/benchmarks.md,
// section 14). Which state a process was in looked like chance, because it depends only on whether a
// full collection had yet happened; a gateway that runs for days is always past it.
//
// A fixed factor gives the limit room proportional to the live heap, which the churn between scavenges
// then fits in. The cost is memory: the old generation may hold up to (1 + percent/100) times its live
// objects, plus the young generation, before it is collected.
import { setFlagsFromString } from 'node:v8';

/**
 * Sets V8's heap growing factor to 1 + percent/100 for every later full collection (0: leave V8's own).
 * V8 reads this flag each time it computes the limit, so setting it at run time takes effect at the next
 * full collection; it must come before the relay's load does, so the gateway sets it as it starts.
 */
export function applyHeapGrowth(percent: number): void {
  // An integer from 0 to 1000: the config checked it.
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}
