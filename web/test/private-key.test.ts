// Reading a private key before it is uploaded: formats, passphrase detection, common mistakes.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { inspectPrivateKey } from '../src/views/private-key.js';

const dir = mkdtempSync(join(tmpdir(), 'cd-web-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function keygen(
  name: string,
  passphrase: string,
  type = 'ed25519',
  extra: string[] = [],
): { priv: string; pub: string } {
  const path = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', passphrase, '-C', 'test', '-f', path, ...extra]);
  return { priv: readFileSync(path, 'utf8'), pub: readFileSync(`${path}.pub`, 'utf8') };
}

describe('inspectPrivateKey', () => {
  it('reads OpenSSH keys and knows whether they need a passphrase', () => {
    const plain = keygen('plain', '');
    const locked = keygen('locked', 'secret phrase');
    expect(inspectPrivateKey(plain.priv)).toEqual({ ok: true, format: 'OpenSSH', encrypted: false });
    expect(inspectPrivateKey(locked.priv)).toEqual({ ok: true, format: 'OpenSSH', encrypted: true });
  });

  it('reads PEM keys, encrypted or not', () => {
    const pem = keygen('pem', '', 'rsa', ['-b', '2048', '-m', 'PEM']);
    expect(inspectPrivateKey(pem.priv)).toMatchObject({ ok: true, format: 'PEM (RSA)', encrypted: false });
    const pemLocked = keygen('pem-locked', 'long enough', 'rsa', ['-b', '2048', '-m', 'PEM']);
    expect(inspectPrivateKey(pemLocked.priv)).toMatchObject({ ok: true, encrypted: true });
  });

  it('explains the usual mistakes', () => {
    const { pub } = keygen('pub', '');
    expect(inspectPrivateKey(pub).problem).toMatch(/public key/);
    expect(inspectPrivateKey('PuTTY-User-Key-File-3: ssh-ed25519\n').problem).toMatch(/PuTTY/);
    expect(inspectPrivateKey('hello').problem).toMatch(/does not look like/);
    expect(inspectPrivateKey('  ').problem).toMatch(/empty/);
    expect(inspectPrivateKey('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----').ok).toBe(false);
  });
});
