// ssh2's packet padding, as patched by patches/ssh2+*.patch: drawn from a pool of CSPRNG output refilled in
// bulk instead of one randomFillSync call per packet (docs/benchmarks.md, "CPU per GB"). RFC 4253 section 6
// asks for random padding; these check that the pool still gives every packet fresh random bytes (never
// the same bytes twice, across refills) and that the packet framing around it is unchanged, for each cipher
// kind ssh2 builds packets for. The end-to-end proof that sshd accepts the packets is test/ssh-pool.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface CipherInfo {
  sslName: string;
  blockLen: number;
  keyLen: number;
  ivLen: number;
}
interface PacketCipher {
  allocPacket(payloadLen: number): Buffer;
}
interface Ssh2Crypto {
  CIPHER_INFO: Record<string, CipherInfo>;
  MAC_INFO: Record<string, { len: number }>;
  NullCipher: new (seqno: number, onWrite: (b: Buffer) => void) => PacketCipher;
  createCipher(config: unknown): PacketCipher;
}

const crypto = require('ssh2/lib/protocol/crypto.js') as Ssh2Crypto;
const PACKETS = 20_000;

function cipherFor(name: string, forceNative: boolean): PacketCipher {
  if (name === 'none') return new crypto.NullCipher(0, () => {});
  const cipherInfo = crypto.CIPHER_INFO[name]!;
  const macInfo =
    cipherInfo.sslName.endsWith('gcm') || cipherInfo.sslName === 'chacha20'
      ? undefined
      : crypto.MAC_INFO['hmac-sha2-256'];
  return crypto.createCipher({
    outbound: {
      onWrite: () => {},
      cipherInfo,
      cipherKey: randomBytes(cipherInfo.keyLen),
      cipherIV: cipherInfo.ivLen ? randomBytes(cipherInfo.ivLen) : undefined,
      macInfo,
      macKey: macInfo ? randomBytes(macInfo.len) : undefined,
      seqno: 0,
      forceNative,
    },
  });
}

/** Builds PACKETS packets of varied payload sizes; returns all their padding bytes, in order. */
function paddingOf(cipher: PacketCipher, alignment: number, lengthCounted: boolean): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < PACKETS; i++) {
    const payloadLen = 1 + ((i * 7919) % 300);
    const packet = cipher.allocPacket(payloadLen);
    const padLen = packet[4]!;
    assert.ok(padLen >= 4, 'RFC 4253: at least four bytes of padding');
    // The length field counts padding length, payload and padding (the buffer may have room for a MAC after).
    const packetLen = 4 + 1 + payloadLen + padLen;
    assert.equal(packet.readUInt32BE(0), packetLen - 4);
    assert.ok(packet.length >= packetLen);
    // The cipher's block size divides the packet (AEAD ciphers leave the length field out).
    assert.equal((lengthCounted ? packetLen : packetLen - 4) % alignment, 0);
    parts.push(packet.subarray(5 + payloadLen, packetLen));
  }
  return Buffer.concat(parts);
}

function assertRandom(stream: Buffer): void {
  // Tens of kilobytes: many refills of the 4 KiB pool. A pool handed out twice, or not refilled, repeats.
  assert.ok(stream.length > 10 * 4096, `only ${stream.length} padding bytes`);
  const seen = new Set<string>();
  for (let at = 0; at + 16 <= stream.length; at += 16) {
    const block = stream.toString('hex', at, at + 16);
    assert.ok(!seen.has(block), `padding bytes repeat (16 bytes at ${at})`);
    seen.add(block);
  }
  // Byte frequencies: chi-square with 255 degrees of freedom has mean 255 and sd 22.6; 400 is more than
  // six sd out (p ≈ 1e-8), while zeros, a constant or a short cycle land in the many thousands.
  const counts = new Array<number>(256).fill(0);
  for (const b of stream) counts[b]!++;
  const expected = stream.length / 256;
  const chi2 = counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
  assert.ok(chi2 < 400, `padding bytes are not uniform (chi-square ${chi2.toFixed(0)})`);
}

describe('ssh2 packet padding (pooled)', () => {
  it('the installed ssh2 carries the pooled-padding patch (npm ci applies patches/ on postinstall)', () => {
    const source = readFileSync(require.resolve('ssh2/lib/protocol/crypto.js'), 'utf8');
    // Missing here means node_modules was installed before the patch: `npm ci` (or `npx patch-package`).
    assert.match(
      source,
      /function randomPadding\(/,
      'ssh2 is not patched: run npm ci (or npx patch-package)',
    );
    assert.doesNotMatch(source, /randomFillSync\(packet, 5 \+ payloadLen, padLen\)/);
  });

  const kinds: Array<{ name: string; forceNative: boolean; alignment: number; lengthCounted: boolean }> = [
    { name: 'none', forceNative: false, alignment: 8, lengthCounted: true },
    { name: 'aes128-gcm@openssh.com', forceNative: false, alignment: 16, lengthCounted: false },
    { name: 'aes128-gcm@openssh.com', forceNative: true, alignment: 16, lengthCounted: false },
    { name: 'chacha20-poly1305@openssh.com', forceNative: false, alignment: 8, lengthCounted: false },
    { name: 'chacha20-poly1305@openssh.com', forceNative: true, alignment: 8, lengthCounted: false },
    { name: 'aes128-ctr', forceNative: false, alignment: 16, lengthCounted: true },
    { name: 'aes128-ctr', forceNative: true, alignment: 16, lengthCounted: true },
  ];
  for (const k of kinds) {
    it(`${k.name}${k.forceNative ? ' (JavaScript cipher)' : ''}: fresh random padding in every packet`, () => {
      assertRandom(paddingOf(cipherFor(k.name, k.forceNative), k.alignment, k.lengthCounted));
    });
  }

  it('two ciphers drawing from the one pool never get the same bytes', () => {
    const a = cipherFor('aes128-gcm@openssh.com', false);
    const b = cipherFor('aes128-gcm@openssh.com', false);
    const parts: Buffer[] = [];
    for (let i = 0; i < PACKETS; i++) {
      for (const c of [a, b]) {
        const packet = c.allocPacket(13);
        parts.push(packet.subarray(18, 18 + packet[4]!));
      }
    }
    assertRandom(Buffer.concat(parts));
  });
});
