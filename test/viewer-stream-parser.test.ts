// The viewer→desktop RFB parser on its own (pure: bytes in, whole messages out): every message noVNC
// sends, every split point, the policies, the bounds, and fuzzing with random and damaged streams.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RFB_LIMITS,
  RfbProtocolError,
  ViewerStreamParser,
  type ViewerStreamOptions,
} from '../src/rfb/viewer-stream-parser.js';
import { permissivePolicy, tightenPolicy, type ViewerPolicy } from '../src/rfb/viewer-policy.js';
import * as m from './helpers/rfb-messages.js';

const MAX_CUT = 64 * 1024;
const options: ViewerStreamOptions = { start: 'version', maxCutTextBytes: MAX_CUT };

interface Run {
  parser: ViewerStreamParser;
  forwarded: Buffer[];
  push(chunk: Buffer): void;
  output(): Buffer;
}

function run(policy: ViewerPolicy = permissivePolicy, o: Partial<ViewerStreamOptions> = {}): Run {
  const forwarded: Buffer[] = [];
  const parser = new ViewerStreamParser(policy, { ...options, ...o }, (b) => forwarded.push(b));
  return {
    parser,
    forwarded,
    push: (chunk) => parser.push(chunk),
    output: () => Buffer.concat(forwarded),
  };
}

/** Runs `messages` (after a handshake) through a parser with `policy` in one chunk; what came out. */
function through(policy: Partial<ViewerPolicy>, messages: Buffer[]): Buffer {
  const r = run(tightenPolicy(permissivePolicy, policy));
  r.push(Buffer.concat([...m.typicalStream([]), ...messages]));
  return r.output().subarray(14);
}

/** Offsets in `units`' concatenation where a unit ends. */
function boundaries(units: Buffer[]): Set<number> {
  const ends = new Set<number>([0]);
  let at = 0;
  for (const u of units) ends.add((at += u.length));
  return ends;
}

/** Asserts every forwarded buffer ends on a message boundary of the expected output. */
function assertWholeMessages(r: Run, expected: Buffer[]): void {
  const ends = boundaries(expected);
  let at = 0;
  for (const f of r.forwarded) {
    at += f.length;
    assert.ok(ends.has(at), `a forward ended at ${at}, inside a message`);
  }
}

function encodingsOf(setEncodings: Buffer): number[] {
  const n = setEncodings.readUInt16BE(2);
  return Array.from({ length: n }, (_, i) => setEncodings.readInt32BE(4 + 4 * i));
}

/** A small seeded PRNG (mulberry32): fuzz runs are reproducible from the seed in the failure message. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('viewer stream parser: messages and chunking', () => {
  test('a whole noVNC session in one chunk is forwarded as that same chunk, untouched', () => {
    const r = run();
    const chunk = Buffer.concat(m.typicalStream());
    const expected = Buffer.concat(m.typicalStream(m.typicalMessages(true)));
    r.push(chunk);
    assert.equal(r.forwarded.length, 1);
    assert.equal(r.forwarded[0], chunk, 'no copy: the chunk itself');
    assert.deepEqual(r.output(), expected);
    assert.equal(r.parser.bufferedBytes, 0);
  });

  test('each message type in a chunk of its own passes whole, with its exact length', () => {
    const r = run();
    const units = m.typicalStream();
    for (const u of units) {
      const before = r.forwarded.length;
      r.push(Buffer.from(u));
      assert.equal(r.forwarded.length, before + 1, `message type ${u[0]} (${u.length} bytes) was forwarded`);
      assert.equal(r.forwarded.at(-1)!.length, u.length);
      assert.equal(r.parser.bufferedBytes, 0);
    }
  });

  test('split at every byte boundary, the output is the same whole messages', () => {
    const stream = Buffer.concat(m.typicalStream());
    const expectedUnits = m.typicalStream(m.typicalMessages(true));
    const expected = Buffer.concat(expectedUnits);
    for (let i = 0; i <= stream.length; i++) {
      const copy = Buffer.from(stream);
      const r = run();
      r.push(copy.subarray(0, i));
      r.push(copy.subarray(i));
      assert.deepEqual(r.output(), expected, `split at ${i}`);
      assertWholeMessages(r, expectedUnits);
      assert.equal(r.parser.bufferedBytes, 0);
    }
  });

  test('one byte at a time, the output is the same whole messages, each forwarded once complete', () => {
    const stream = Buffer.concat(m.typicalStream());
    const expectedUnits = m.typicalStream(m.typicalMessages(true));
    const r = run();
    for (let i = 0; i < stream.length; i++) r.push(stream.subarray(i, i + 1));
    assert.deepEqual(r.output(), Buffer.concat(expectedUnits));
    assert.equal(r.forwarded.length, expectedUnits.length);
    assertWholeMessages(r, expectedUnits);
  });

  test('RFB 3.3 has no security choice; the tcp transport starts at ClientInit', () => {
    const a = run();
    const messages = [m.framebufferUpdateRequest(false), m.keyEvent(0x61, true)];
    a.push(Buffer.concat([m.versionLine(3), m.clientInit(), ...messages]));
    assert.equal(a.output().length, 12 + 1 + 18);

    const b = run(permissivePolicy, { start: 'client-init' });
    b.push(Buffer.concat([m.clientInit(false), ...messages]));
    assert.deepEqual(b.output(), Buffer.concat([m.clientInit(false), ...messages]));
  });

  test('empty chunks are harmless anywhere', () => {
    const r = run();
    for (const u of m.typicalStream()) {
      r.push(Buffer.alloc(0));
      r.push(Buffer.from(u));
    }
    assert.deepEqual(r.output(), Buffer.concat(m.typicalStream(m.typicalMessages(true))));
  });
});

describe('viewer stream parser: policies', () => {
  test('view-only drops key, pointer, clipboard, resize, xvp and QEMU key events and passes the rest', () => {
    const r = run({ ...permissivePolicy, viewOnly: true });
    const all = m.typicalMessages(true);
    r.push(Buffer.concat(m.typicalStream()));
    const dropped = new Set([4, 5, 6, 250, 251, 255]);
    const kept = all.filter((u) => !dropped.has(u[0]!));
    assert.deepEqual(r.output(), Buffer.concat([...m.typicalStream([]), ...kept]));
    assert.equal(r.parser.dropped, all.length - kept.length);
    assert.ok(kept.some((u) => u[0] === 3) && kept.some((u) => u[0] === 248), 'updates and fences pass');
  });

  test('view-only: split at every byte boundary, nothing of a dropped message leaks', () => {
    const stream = Buffer.concat(m.typicalStream());
    const dropped = new Set([4, 5, 6, 250, 251, 255]);
    const expected = Buffer.concat([
      ...m.typicalStream([]),
      ...m.typicalMessages(true).filter((u) => !dropped.has(u[0]!)),
    ]);
    for (let i = 0; i <= stream.length; i++) {
      const copy = Buffer.from(stream);
      const r = run({ ...permissivePolicy, viewOnly: true });
      r.push(copy.subarray(0, i));
      r.push(copy.subarray(i));
      assert.deepEqual(r.output(), expected, `split at ${i}`);
    }
  });

  test('view-only: a ClientInit asking for exclusive access is sent as shared', () => {
    const r = run({ ...permissivePolicy, viewOnly: true });
    r.push(Buffer.concat([m.versionLine(8), m.securityChoice(1), m.clientInit(false)]));
    assert.equal(r.output()[13], 1);
    const owner = run();
    owner.push(Buffer.concat([m.versionLine(8), m.securityChoice(1), m.clientInit(false)]));
    assert.equal(owner.output()[13], 0, 'a viewer in control keeps its choice');
  });

  test('quality levels are clamped into the bounds and compression levels raised to the floor', () => {
    const policy = { quality: { min: 2, max: 6 }, compressionMin: 2 };
    const high = through(policy, [m.setEncodings(m.noVncEncodings(9, 1))]);
    assert.ok(encodingsOf(high).includes(-32 + 6), 'quality 9 → 6');
    assert.ok(encodingsOf(high).includes(-256 + 2), 'compression 1 → 2');
    assert.ok(!encodingsOf(high).includes(-32 + 9) && !encodingsOf(high).includes(-256 + 1));
    const low = through(policy, [m.setEncodings(m.noVncEncodings(0, 9))]);
    assert.ok(encodingsOf(low).includes(-32 + 2), 'quality 0 → 2');
    assert.ok(encodingsOf(low).includes(-256 + 9), 'compression 9 stays');
    const within = m.setEncodings(m.noVncEncodings(5, 5));
    assert.deepEqual(
      encodingsOf(through(policy, [within])),
      encodingsOf(within).map((e) => (e === -316 ? 0 : e)),
    );
    assert.equal(high.length, m.setEncodings(m.noVncEncodings()).length, 'rewritten in place, same length');
  });

  test('fine-grained JPEG quality (TurboVNC, honoured by TigerVNC) is clamped to the same bounds', () => {
    const policy = { quality: { min: 2, max: 6 } };
    const out = encodingsOf(through(policy, [m.setEncodings([7, -512 + 100, -512 + 5])]));
    // Levels 2 and 6 are JPEG quality 41 and 79 in TigerVNC's table.
    assert.deepEqual(out, [7, -512 + 79, -512 + 41]);
  });

  test('Tight without a quality level gets the cap added (TigerVNC would send lossless), and no floor-less compression', () => {
    const out = encodingsOf(
      through({ quality: { min: 0, max: 8 }, compressionMin: 2 }, [m.setEncodings([7, 1, 0, -223])]),
    );
    assert.deepEqual(out, [7, 1, 0, -223, -32 + 8, -256 + 2]);
    const both = encodingsOf(
      through({ quality: { min: 0, max: 8 }, compressionMin: 2 }, [m.setEncodings([7, -32 + 3, -256 + 4])]),
    );
    assert.deepEqual(both, [7, -32 + 3, -256 + 4], 'nothing added when the viewer named both');
  });

  test('without Tight, or without caps, nothing is added (the byte count stays what the viewer sent)', () => {
    assert.deepEqual(
      encodingsOf(through({ quality: { min: 0, max: 8 }, compressionMin: 2 }, [m.setEncodings([0])])),
      [0],
    );
    assert.deepEqual(
      encodingsOf(through({}, [m.setEncodings([7, 0])])),
      [7, 0],
      'no cap, no floor: untouched',
    );
  });

  test('a SetEncodings that grew is forwarded whole between the messages around it, split or not', () => {
    const policy = tightenPolicy(permissivePolicy, { quality: { min: 0, max: 8 } });
    const messages = [m.pointerEvent(1, 1), m.setEncodings([7, 0]), m.pointerEvent(2, 2)];
    const stream = Buffer.concat([...m.typicalStream([]), ...messages]);
    const expectedUnits = [
      ...m.typicalStream([]),
      messages[0]!,
      m.setEncodings([7, 0, -32 + 8]),
      messages[2]!,
    ];
    for (let i = 0; i <= stream.length; i++) {
      const copy = Buffer.from(stream);
      const r = run(policy);
      r.push(copy.subarray(0, i));
      r.push(copy.subarray(i));
      assert.deepEqual(r.output(), Buffer.concat(expectedUnits), `split at ${i}`);
      assertWholeMessages(r, expectedUnits);
    }
  });

  test('ExtendedMouseButtons is never offered to the server, so PointerEvent stays 6 bytes', () => {
    assert.deepEqual(encodingsOf(through({}, [m.setEncodings([7, -316, -239])])), [7, 0, -239]);
  });

  test('SetDesktopSize above the ceiling is clamped to it, screens included; below it passes', () => {
    const policy = { maxGeometry: { width: 1920, height: 1080 } };
    const big = through(policy, [m.setDesktopSize(2560, 1440)]);
    assert.deepEqual([big.readUInt16BE(2), big.readUInt16BE(4)], [1920, 1080]);
    assert.deepEqual([big.readUInt16BE(8 + 8), big.readUInt16BE(8 + 10)], [1920, 1080], 'the screen too');
    const tall = through(policy, [m.setDesktopSize(1280, 2000)]);
    assert.deepEqual([tall.readUInt16BE(2), tall.readUInt16BE(4)], [1280, 1080]);
    const ok = m.setDesktopSize(1600, 900);
    assert.deepEqual(through(policy, [ok]), ok);
    assert.deepEqual(through({}, [m.setDesktopSize(4000, 3000)]).readUInt16BE(2), 4000, 'no ceiling');
  });

  test('a per-viewer override can only tighten the configured caps', () => {
    const base: ViewerPolicy = {
      viewOnly: false,
      quality: { min: 2, max: 8 },
      compressionMin: 2,
      maxKbps: 2000,
      maxGeometry: { width: 1920, height: 1080 },
    };
    assert.deepEqual(
      tightenPolicy(base, {
        viewOnly: true,
        quality: { min: 0, max: 9 },
        compressionMin: 0,
        maxKbps: 0,
        maxGeometry: { width: 4000, height: 720 },
      }),
      { ...base, viewOnly: true, maxGeometry: { width: 1920, height: 720 } },
    );
    assert.deepEqual(tightenPolicy(base, { quality: { min: 9, max: 9 }, maxKbps: 500 }).quality, {
      min: 8,
      max: 8,
    });
    assert.equal(tightenPolicy(base, { maxKbps: 500 }).maxKbps, 500);
    assert.equal(tightenPolicy({ ...base, maxKbps: 0 }, { maxKbps: 500 }).maxKbps, 500);
    assert.equal(tightenPolicy(base, { viewOnly: false }).viewOnly, false);
  });
});

describe('viewer stream parser: malformed input', () => {
  const cases: [string, Buffer[]][] = [
    ['an unknown message type', [Buffer.from([7, 0, 0, 0])]],
    ['an unknown QEMU subtype', [Buffer.from([255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]],
    [
      'SetEncodings with thousands of entries',
      [m.setEncodings(Array<number>(RFB_LIMITS.maxEncodings + 1).fill(0))],
    ],
    ['a Fence payload over 64 bytes', [m.fence(0, Buffer.alloc(65))]],
    ['ClientCutText over the cap', [m.clientCutText('x'.repeat(MAX_CUT + 1))]],
    ['an extended clipboard message over the cap', [m.extendedClipboard(0x10000001, Buffer.alloc(MAX_CUT))]],
    [
      'an extended clipboard message without its flags',
      [Buffer.from([6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe, 0, 0])],
    ],
    ['ClientCutText claiming −2³¹ bytes', [Buffer.from([6, 0, 0, 0, 0x80, 0, 0, 0])]],
    ['SetDesktopSize without screens', [m.setDesktopSize(800, 600, 0)]],
    ['SetDesktopSize with too many screens', [m.setDesktopSize(800, 600, RFB_LIMITS.maxScreens + 1)]],
    ['SetPixelFormat with 24 bits per pixel', [m.setPixelFormat(24)]],
  ];
  for (const [name, messages] of cases) {
    test(`${name} is a protocol error, and nothing of it is forwarded`, () => {
      const r = run();
      r.push(Buffer.concat(m.typicalStream([])));
      const before = r.output().length;
      assert.throws(() => r.push(Buffer.concat(messages)), RfbProtocolError);
      assert.equal(r.output().length, before);
    });
  }

  test('a header alone is enough to refuse an oversized message (no waiting for a megabyte)', () => {
    const r = run();
    r.push(Buffer.concat(m.typicalStream([])));
    const header = Buffer.from([6, 0, 0, 0, 0, 0x10, 0, 0]); // 1 MiB of text announced
    r.push(header.subarray(0, 5));
    assert.throws(() => r.push(header.subarray(5)), RfbProtocolError);
    assert.ok(r.parser.bufferedBytes <= 8);
  });

  test('the handshake: no RFB version, or a security type the gateway did not offer', () => {
    assert.throws(() => run().push(Buffer.from('GET / HTTP/1.1\r\n')), RfbProtocolError);
    assert.throws(() => run().push(Buffer.concat([m.versionLine(8), m.securityChoice(2)])), RfbProtocolError);
  });
});

describe('viewer stream parser: fuzzing', () => {
  /** The largest unit the parser may hold: a ClientCutText at the cap. */
  const maxHeld = 8 + MAX_CUT;

  /**
   * Feeds `stream` in random chunks and checks the invariants: only RfbProtocolError is thrown, what
   * was forwarded is whole messages (a fresh permissive parser takes it all and holds nothing back),
   * what is held stays bounded, and the parser always finishes.
   */
  function fuzzOnce(
    stream: Buffer,
    rand: () => number,
    policy: ViewerPolicy,
    label: string,
    start: ViewerStreamOptions['start'] = rand() < 0.5 ? 'version' : 'client-init',
  ): 'ok' | 'error' {
    const r = run(policy, { start });
    let outcome: 'ok' | 'error' = 'ok';
    let off = 0;
    while (off < stream.length) {
      const n = 1 + Math.floor(rand() * Math.min(64, stream.length - off));
      try {
        r.push(stream.subarray(off, off + n));
      } catch (e) {
        assert.ok(e instanceof RfbProtocolError, `${label}: threw ${String(e)}`);
        outcome = 'error';
        break;
      }
      assert.ok(r.parser.bufferedBytes <= maxHeld, `${label}: holds ${r.parser.bufferedBytes} bytes`);
      off += n;
    }
    const check = run(permissivePolicy, { start });
    assert.doesNotThrow(() => check.push(r.output()), `${label}: forwarded bytes do not parse`);
    assert.equal(check.parser.bufferedBytes, 0, `${label}: a partial message was forwarded`);
    return outcome;
  }

  const policies: ViewerPolicy[] = [
    permissivePolicy,
    {
      viewOnly: true,
      quality: { min: 2, max: 6 },
      compressionMin: 2,
      maxKbps: 0,
      maxGeometry: { width: 1920, height: 1080 },
    },
  ];

  test('random bytes: only its own protocol error, whole messages only, bounded, always finishes', () => {
    const rand = prng(1);
    for (let i = 0; i < 3000; i++) {
      const bytes = Buffer.alloc(1 + Math.floor(rand() * 512));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rand() * 256);
      // Half the time behind a valid handshake, so the message parser itself is what gets the noise.
      const stream = rand() < 0.5 ? bytes : Buffer.concat([...m.typicalStream([]), bytes]);
      fuzzOnce(stream, rand, policies[i % 2]!, `random #${i}`);
    }
  });

  /** A valid message of a random known type with random contents (lengths within the bounds). */
  function randomMessage(rand: () => number): Buffer {
    const int = (n: number) => Math.floor(rand() * n);
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
    const withType = (type: number, b: Buffer) => ((b[0] = type), b);
    switch (int(11)) {
      case 0: {
        const b = withType(0, bytes(20));
        b[4] = [8, 16, 32][int(3)]!;
        return b;
      }
      case 1: {
        // Encodings drawn mostly from the pseudo-encoding ranges the policy rewrites.
        const ranges = [
          [-32, -23],
          [-256, -247],
          [-512, -412],
          [-316, -316],
          [0, 16],
          [-0x80000000, 0x7fffffff],
        ] as const;
        return m.setEncodings(
          Array.from({ length: int(40) }, () => {
            const [lo, hi] = ranges[int(ranges.length)]!;
            return lo + Math.floor(rand() * (hi - lo + 1));
          }),
        );
      }
      case 2:
        return withType(3, bytes(10));
      case 3:
        return withType(4, bytes(8));
      case 4:
        return withType(5, bytes(6));
      case 5: {
        const size = int(200);
        const b = withType(6, bytes(8 + size));
        if (size >= 4 && rand() < 0.5) b.writeInt32BE(-size, 4);
        else b.writeUInt32BE(size, 4);
        return b;
      }
      case 6:
        return withType(150, bytes(10));
      case 7: {
        const b = withType(248, bytes(9 + int(65)));
        b[8] = b.length - 9;
        return b;
      }
      case 8:
        return withType(250, bytes(4));
      case 9: {
        const screens = 1 + int(RFB_LIMITS.maxScreens);
        const b = withType(251, bytes(8 + 16 * screens));
        b[6] = screens;
        return b;
      }
      default: {
        const b = withType(255, bytes(12));
        b[1] = 0;
        return b;
      }
    }
  }

  test('random valid messages with random contents: all accepted, policies hold on the output', () => {
    const rand = prng(3);
    const viewOnly = policies[1]!;
    for (let i = 0; i < 3000; i++) {
      const messages = Array.from({ length: 1 + Math.floor(rand() * 20) }, () => randomMessage(rand));
      const stream = Buffer.concat([...m.typicalStream([]), ...messages]);
      for (const policy of policies) {
        assert.equal(
          fuzzOnce(Buffer.from(stream), rand, policy, `valid #${i}`, 'version'),
          'ok',
          `valid #${i} was refused`,
        );
      }
      // Nothing a view-only viewer may not send survives its parser.
      const r = run(viewOnly);
      r.push(Buffer.from(stream));
      const again = run(viewOnly);
      again.push(r.output());
      assert.equal(again.parser.dropped, 0, `valid #${i}: input got past view-only`);
    }
  });

  test('random streams of valid messages, truncated and mutated', () => {
    const rand = prng(2);
    const pool = m.typicalMessages();
    let errors = 0;
    for (let i = 0; i < 3000; i++) {
      const messages = Array.from({ length: 1 + Math.floor(rand() * 30) }, () =>
        Buffer.from(pool[Math.floor(rand() * pool.length)]!),
      );
      let stream = Buffer.concat([...m.typicalStream([]), ...messages]);
      const mutation = rand();
      if (mutation < 0.4) {
        stream = stream.subarray(0, Math.floor(rand() * stream.length)); // truncated
      } else if (mutation < 0.8) {
        for (let k = 0; k < 1 + Math.floor(rand() * 4); k++)
          stream[Math.floor(rand() * stream.length)] = Math.floor(rand() * 256); // bytes flipped
      } else {
        const cut = Math.floor(rand() * stream.length); // a slice removed
        stream = Buffer.concat([stream.subarray(0, cut), stream.subarray(cut + 1 + Math.floor(rand() * 16))]);
      }
      if (fuzzOnce(stream, rand, policies[i % 2]!, `mutated #${i}`) === 'error') errors++;
    }
    assert.ok(errors > 0, 'some mutations were refused (the fuzzer reaches the error paths)');
  });
});
