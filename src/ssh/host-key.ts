// Host key fingerprints, computed the way OpenSSH prints them, so what a user sees in `ssh-keygen -l`
// or in their first `ssh` prompt matches what we pin.
import { createHash, timingSafeEqual } from 'node:crypto';

/** 'SHA256:' + unpadded base64 of sha256(raw public key blob), as `ssh-keygen -l -E sha256` prints. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

const fingerprintPattern = /^SHA256:[A-Za-z0-9+/]{43}$/;

export function isFingerprint(text: string): boolean {
  return fingerprintPattern.test(text);
}

export function sameFingerprint(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
