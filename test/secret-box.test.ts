import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SecretBox } from '../src/crypto/secret-box.js';

const k1 = randomBytes(32);
const k2 = randomBytes(32);

test('seals with AES-256-GCM under the current key id and opens it again', () => {
  const box = new SecretBox('k1', new Map([['k1', k1]]));
  const sealed = box.seal('hunter2', 'instance:a');
  assert.equal(sealed.keyId, 'k1');
  assert.ok(!sealed.ciphertext.includes('hunter2'));
  assert.notEqual(box.seal('hunter2', 'instance:a').ciphertext, sealed.ciphertext, 'fresh IV every time');
  assert.equal(box.open(sealed, 'instance:a'), 'hunter2');
});

test('a ciphertext moved to another row, or tampered with, does not open', () => {
  const box = new SecretBox('k1', new Map([['k1', k1]]));
  const sealed = box.seal('hunter2', 'instance:a');
  assert.throws(() => box.open(sealed, 'instance:b'));
  const raw = Buffer.from(sealed.ciphertext, 'base64');
  raw[raw.length - 1]! ^= 1;
  assert.throws(() => box.open({ ...sealed, ciphertext: raw.toString('base64') }, 'instance:a'));
});

test('after rotation, old ciphertexts still open and are reported stale', () => {
  const before = new SecretBox('k1', new Map([['k1', k1]]));
  const sealed = before.seal('s3cret', 'ctx');
  const after = new SecretBox(
    'k2',
    new Map([
      ['k1', k1],
      ['k2', k2],
    ]),
  );
  assert.equal(after.open(sealed, 'ctx'), 's3cret');
  assert.equal(after.isStale(sealed), true);
  assert.equal(after.seal('x', 'ctx').keyId, 'k2');
  const withoutOld = new SecretBox('k2', new Map([['k2', k2]]));
  assert.throws(() => withoutOld.open(sealed, 'ctx'), /ENCRYPTION_PREVIOUS_KEYS/);
});
