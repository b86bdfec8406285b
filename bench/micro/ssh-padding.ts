// Micro-benchmark of ssh2's packet padding (patches/ssh2+1.17.0.patch): what building and encrypting one
// outgoing SSH packet costs with the pooled padding, against the same plus the one randomFillSync call per
// packet that unpatched ssh2 makes (the patch replaces exactly that call). The packets are the gateway's
// upstream ones: a FramebufferUpdateRequest or a key event in a channel-data packet, aes128-gcm through
// ssh2's native binding (what the gateway negotiates with OpenSSH). Rounds alternate A/B/A/B. Run:
//   node --import tsx bench/micro/ssh-padding.ts [--packets N] [--rounds R]
// Not a test: it prints numbers for docs/benchmarks.md.
import { randomBytes, randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const PACKETS = arg('--packets', 200_000);
const ROUNDS = arg('--rounds', 7);

interface Cipher {
  allocPacket(payloadLen: number): Buffer;
  encrypt(packet: Buffer): void;
}
const crypto = createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as {
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number }>;
  createCipher(config: unknown): Cipher;
};
const info = crypto.CIPHER_INFO['aes128-gcm@openssh.com']!;
let written = 0;
const cipher = crypto.createCipher({
  outbound: {
    onWrite: (b: Buffer) => (written += b.length),
    cipherInfo: info,
    cipherKey: randomBytes(info.keyLen),
    cipherIV: randomBytes(info.ivLen),
    seqno: 0,
  },
});

// SSH_MSG_CHANNEL_DATA: type, channel id, length, then 10 bytes of RFB (an update request).
const PAYLOAD = 1 + 4 + 4 + 10;

function round(perPacketRandomFill: boolean): number {
  const t0 = process.cpuUsage();
  for (let i = 0; i < PACKETS; i++) {
    const packet = cipher.allocPacket(PAYLOAD);
    if (perPacketRandomFill) randomFillSync(packet, 5 + PAYLOAD, packet[4]);
    packet[5] = 94;
    cipher.encrypt(packet);
  }
  const used = process.cpuUsage(t0);
  return ((used.user + used.system) * 1000) / PACKETS; // ns per packet
}

round(true);
round(false);
const a: number[] = [];
const b: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  a.push(round(true));
  b.push(round(false));
}
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1]!;
console.log(
  `packets per round: ${PACKETS}, rounds: ${ROUNDS} (A/B alternating), CPU time per packet, median`,
);
console.log(`A  randomFillSync per packet (unpatched ssh2): ${median(a).toFixed(0)} ns`);
console.log(`B  pooled padding (patched):                   ${median(b).toFixed(0)} ns`);
console.log(`saved per packet: ${(median(a) - median(b)).toFixed(0)} ns (${written} bytes encrypted)`);
