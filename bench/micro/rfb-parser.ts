// Micro-benchmark of the viewer→desktop RFB parser (src/rfb/viewer-stream-parser.ts): nanoseconds per
// byte and per message of a typical noVNC stream, one WebSocket message per RFB message (noVNC flushes
// after each), with no caps and with every policy on. Run:
//   node --import tsx bench/micro/rfb-parser.ts [--messages N] [--rounds R]
// Not a test: it prints numbers for docs/benchmarks.md.
import { ViewerStreamParser } from '../../src/rfb/viewer-stream-parser.js';
import { permissivePolicy, type ViewerPolicy } from '../../src/rfb/viewer-policy.js';
import * as m from '../../test/helpers/rfb-messages.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const MESSAGES = arg('--messages', 200_000);
const ROUNDS = arg('--rounds', 7);

/**
 * What a viewer sends in a busy minute, by share of messages: pointer moves dominate (noVNC sends one per
 * mouse move, throttled to ~60/s), then update requests (one per update drawn), keys, the odd clipboard
 * and fence.
 */
function typicalChunks(n: number): Buffer[] {
  const out: Buffer[] = [];
  let seed = 1;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.6)
      out.push(m.pointerEvent(Math.floor(rand() * 1280), Math.floor(rand() * 800), r < 0.05 ? 1 : 0));
    else if (r < 0.85) out.push(m.framebufferUpdateRequest(true));
    else if (r < 0.97) out.push(m.qemuKeyEvent(0x61, r < 0.91, 30));
    else if (r < 0.985) out.push(m.keyEvent(0x61, true));
    else if (r < 0.995) out.push(m.fence(0x80000003, Buffer.from('sync')));
    else out.push(m.clientCutText('some text the person copied in the browser'));
  }
  return out;
}

function time(chunks: Buffer[], make: () => (b: Buffer) => void): number {
  const best: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const push = make();
    const t0 = process.hrtime.bigint();
    for (const c of chunks) push(c);
    best.push(Number(process.hrtime.bigint() - t0));
  }
  return Math.min(...best);
}

const chunks = typicalChunks(MESSAGES);
const bytes = chunks.reduce((n, c) => n + c.length, 0);
const handshake = Buffer.concat(m.typicalStream([m.setEncodings(m.noVncEncodings())]));
let sink = 0;
const forward = (b: Buffer) => {
  sink += b.length;
};
const capped: ViewerPolicy = {
  viewOnly: false,
  quality: { min: 0, max: 8 },
  compressionMin: 2,
  maxKbps: 2000,
  maxGeometry: { width: 1920, height: 1080 },
};

const parserWith = (policy: ViewerPolicy) => () => {
  const p = new ViewerStreamParser(policy, { start: 'version', maxCutTextBytes: 1 << 20 }, forward);
  p.push(Buffer.from(handshake));
  return (b: Buffer) => p.push(b);
};
const results = {
  'forward only (no parser)': time(chunks, () => forward),
  'parser, no caps': time(chunks, parserWith(permissivePolicy)),
  'parser, caps on': time(chunks, parserWith(capped)),
  'parser, view-only': time(chunks, parserWith({ ...capped, viewOnly: true })),
};
console.log(
  `${MESSAGES} messages, ${bytes} bytes (${(bytes / MESSAGES).toFixed(1)} bytes/message), best of ${ROUNDS}`,
);
for (const [name, ns] of Object.entries(results)) {
  console.log(
    `${name.padEnd(28)} ${(ns / bytes).toFixed(2).padStart(7)} ns/byte ${(ns / MESSAGES).toFixed(1).padStart(7)} ns/message`,
  );
}
if (sink < 0) console.log(sink);
