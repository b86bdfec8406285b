// Reading a private key file in the browser before it is sent: what format it is, whether it needs a
// passphrase, and the common mistakes (a .pub file, a PuTTY key) caught with a useful sentence instead
// of a server round trip.

export interface KeyInfo {
  ok: boolean;
  /** "OpenSSH", "PEM (RSA)", … */
  format: string;
  encrypted: boolean;
  /** Set when ok is false. */
  problem?: string;
}

const MAX_KEY_BYTES = 16 * 1024;

export function inspectPrivateKey(text: string): KeyInfo {
  const trimmed = text.trim();
  if (trimmed.length === 0) return { ok: false, format: '', encrypted: false, problem: 'The key is empty.' };
  if (trimmed.length > MAX_KEY_BYTES) {
    return {
      ok: false,
      format: '',
      encrypted: false,
      problem: 'This file is too large to be an SSH private key.',
    };
  }
  if (/^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+|sk-\S+)\s+AAAA/.test(trimmed)) {
    return {
      ok: false,
      format: 'public key',
      encrypted: false,
      problem: 'This is a public key. Choose the private key file (the one without .pub).',
    };
  }
  if (trimmed.startsWith('PuTTY-User-Key-File')) {
    return {
      ok: false,
      format: 'PuTTY',
      encrypted: false,
      problem:
        'This is a PuTTY key. Export it in OpenSSH format (PuTTYgen → Conversions → Export OpenSSH key).',
    };
  }
  const m = /^-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+-----END \1-----$/.exec(trimmed);
  if (!m) {
    return {
      ok: false,
      format: '',
      encrypted: false,
      problem: 'This does not look like an SSH private key.',
    };
  }
  const label = m[1]!;
  switch (label) {
    case 'OPENSSH PRIVATE KEY':
      return { ok: true, format: 'OpenSSH', encrypted: openSshKeyIsEncrypted(trimmed) };
    case 'RSA PRIVATE KEY':
    case 'EC PRIVATE KEY':
    case 'DSA PRIVATE KEY':
      return {
        ok: true,
        format: `PEM (${label.split(' ')[0]!})`,
        encrypted: /Proc-Type:\s*4,ENCRYPTED/.test(trimmed),
      };
    case 'PRIVATE KEY':
      return { ok: true, format: 'PKCS#8', encrypted: false };
    case 'ENCRYPTED PRIVATE KEY':
      return { ok: true, format: 'PKCS#8', encrypted: true };
    default:
      return {
        ok: false,
        format: label,
        encrypted: false,
        problem: `A "${label}" is not an SSH private key.`,
      };
  }
}

/**
 * openssh-key-v1 layout: magic "openssh-key-v1\0", then a length-prefixed cipher name; "none" means
 * no passphrase.
 */
function openSshKeyIsEncrypted(pem: string): boolean {
  try {
    const body = pem.replace(/-----(BEGIN|END) OPENSSH PRIVATE KEY-----/g, '').replace(/\s+/g, '');
    const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    const magic = 'openssh-key-v1\0';
    const at = magic.length;
    const len = (bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!;
    const cipher = String.fromCharCode(...bytes.slice(at + 4, at + 4 + len));
    return cipher !== 'none';
  } catch {
    return false;
  }
}
