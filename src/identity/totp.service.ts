// Two-factor sign-in for local accounts (issue 12): TOTP (RFC 6238, 30 s, 6 digits, SHA-1 — what
// every authenticator app reads from an otpauth:// QR code), computed by `otpauth`. The secret is
// sealed with the secret box (AES-256-GCM, bound to its user); a code is accepted once — its time step
// must be newer than the last accepted one, a conditional write, so two sign-ins racing with one code
// cannot both win; ten single-use recovery codes are shown once and kept as SHA-256 hashes (they are
// 50 random bits each, so a slow hash adds nothing). After the password, a sign-in with TOTP on gets
// a short-lived challenge (single use, in the coordinator, so the second step may land on any node)
// and no token until the code.
import { createHash, randomBytes } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import QRCode from 'qrcode';
import type { Coordinator } from '../coordination/coordinator.js';
import type { SecretBox } from '../crypto/secret-box.js';
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { AuditSink } from '../audit/audit-log.js';
import type { IdentityRepository } from '../store/identity.repository.js';
import type { UserRow } from '../store/user.repository.js';

/** How long the second step of a sign-in may take, and how many wrong codes it allows. */
export const MFA_CHALLENGE_TTL_MS = 5 * 60_000;
export const MFA_CHALLENGE_ATTEMPTS = 5;
const PERIOD_S = 30;
const RECOVERY_CODES = 10;
const ISSUER = 'CloudDesk';

export interface Enrolment {
  /** Base32, for typing into an app by hand. */
  secret: string;
  otpauthUrl: string;
  /** The otpauth URL as a QR code (SVG markup). */
  qrSvg: string;
}

/** What a challenge stands for: a sign-in waiting for its code, or one that must first enrol. */
interface Challenge {
  userId: string;
  purpose: 'sign-in' | 'enrol';
  attempts: number;
  expiresAt: number;
}

export class TotpService {
  constructor(
    private readonly deps: {
      identities: IdentityRepository;
      secrets: SecretBox;
      coordinator: Coordinator;
      audit: AuditSink;
      clock: Clock;
    },
    private readonly options: { require2fa: boolean },
  ) {}

  /**
   * Between a right password and the tokens (auth.service.ts): with TOTP on, MFA_REQUIRED and a
   * challenge for POST /api/auth/2fa/verify; with AUTH_REQUIRE_2FA and TOTP off, MFA_ENROLMENT_REQUIRED
   * and a challenge for /api/auth/2fa/enrol. Either way no token yet.
   */
  async beforeTokens(user: UserRow): Promise<void> {
    if (await this.isEnabled(user.id)) {
      throw new AppError('MFA_REQUIRED', {
        details: { challenge: await this.openChallenge(user.id, 'sign-in') },
      });
    }
    if (this.options.require2fa) {
      throw new AppError('MFA_ENROLMENT_REQUIRED', {
        details: { challenge: await this.openChallenge(user.id, 'enrol') },
      });
    }
  }

  /** The first step of an enrolment that AUTH_REQUIRE_2FA asked for: the challenge stays for the code. */
  async enrolWithChallenge(id: string, findUser: (userId: string) => Promise<UserRow>): Promise<Enrolment> {
    const challenge = parseChallenge(await this.deps.coordinator.takeOnce('mfa', id));
    if (!challenge || challenge.purpose !== 'enrol' || challenge.expiresAt <= this.deps.clock.now())
      throw new AppError('MFA_CHALLENGE_INVALID');
    try {
      return await this.beginEnrolment(await findUser(challenge.userId));
    } finally {
      await this.put(id, challenge);
    }
  }

  async isEnabled(userId: string): Promise<boolean> {
    const row = await this.deps.identities.findTotp(userId);
    return row !== undefined && row.enabled_at !== null;
  }

  async status(userId: string): Promise<{ enabled: boolean; recoveryCodesLeft: number }> {
    const enabled = await this.isEnabled(userId);
    return {
      enabled,
      recoveryCodesLeft: enabled ? await this.deps.identities.countRecoveryCodesLeft(userId) : 0,
    };
  }

  /** A new secret waiting for its first code (replacing an earlier unconfirmed one). */
  async beginEnrolment(user: UserRow): Promise<Enrolment> {
    if (await this.isEnabled(user.id)) throw new AppError('MFA_ALREADY_ENABLED');
    const secret = new Secret({ size: 20 });
    const sealed = this.deps.secrets.seal(secret.base32, context(user.id));
    const stored = await this.deps.identities.putPendingTotp({
      user_id: user.id,
      secret_ciphertext: sealed.ciphertext,
      secret_key_id: sealed.keyId,
      created_at: this.deps.clock.now(),
      enabled_at: null,
      last_step: null,
    });
    if (!stored) throw new AppError('MFA_ALREADY_ENABLED');
    const otpauthUrl = totp(secret, user.email).toString();
    return { secret: secret.base32, otpauthUrl, qrSvg: await QRCode.toString(otpauthUrl, { type: 'svg' }) };
  }

  /** The first code confirms the secret: TOTP is on, and the recovery codes are shown this once. */
  async confirmEnrolment(user: UserRow, code: string): Promise<{ recoveryCodes: string[] }> {
    const row = await this.deps.identities.findTotp(user.id);
    if (!row) throw new AppError('MFA_NOT_ENABLED', { message: 'Start the set-up first' });
    if (row.enabled_at !== null) throw new AppError('MFA_ALREADY_ENABLED');
    const step = this.stepOf(row, user, code);
    if (step === null || !(await this.deps.identities.acceptStep(user.id, step, this.deps.clock.now())))
      throw new AppError('MFA_CODE_INVALID');
    const recoveryCodes = await this.newRecoveryCodes(user.id);
    this.deps.audit.record('mfa.enabled', { actor: user.id, targetId: user.id });
    return { recoveryCodes };
  }

  /** Ten fresh recovery codes replace the old ones. */
  async newRecoveryCodes(userId: string): Promise<string[]> {
    const codes = Array.from({ length: RECOVERY_CODES }, recoveryCode);
    await this.deps.identities.replaceRecoveryCodes(userId, codes.map(hashCode));
    return codes;
  }

  /** A TOTP code (never one accepted before) or an unused recovery code (spent by this). */
  async verify(user: UserRow, code: string): Promise<boolean> {
    const trimmed = code.replace(/\s+/g, '');
    if (/^\d{6}$/.test(trimmed)) {
      const row = await this.deps.identities.findTotp(user.id);
      if (!row || row.enabled_at === null) return false;
      const step = this.stepOf(row, user, trimmed);
      return step !== null && (await this.deps.identities.acceptStep(user.id, step, null));
    }
    const used = await this.deps.identities.useRecoveryCode(
      user.id,
      hashCode(normalizeRecoveryCode(trimmed)),
      this.deps.clock.now(),
    );
    if (used) this.deps.audit.record('mfa.recovery-code-used', { actor: user.id, targetId: user.id });
    return used;
  }

  /** Turns TOTP off (the user, with a code; or an admin's reset). */
  async remove(userId: string, by: 'self' | 'admin'): Promise<void> {
    if (!(await this.deps.identities.deleteTotp(userId))) throw new AppError('MFA_NOT_ENABLED');
    if (by === 'self') this.deps.audit.record('mfa.disabled', { actor: userId, targetId: userId });
    else this.deps.audit.record('mfa.reset', { subjectUserId: userId, targetId: userId });
  }

  async openChallenge(userId: string, purpose: Challenge['purpose']): Promise<string> {
    const id = randomBytes(32).toString('base64url');
    const expiresAt = this.deps.clock.now() + MFA_CHALLENGE_TTL_MS;
    await this.put(id, { userId, purpose, attempts: 0, expiresAt });
    return id;
  }

  /**
   * Takes the challenge (single use). `check` decides; when it fails, the challenge goes back with one
   * attempt fewer (until none are left), so a mistyped code does not mean typing the password again.
   */
  async redeemChallenge<T>(
    id: string,
    check: (challenge: { userId: string; purpose: Challenge['purpose'] }) => Promise<T>,
  ): Promise<T> {
    const challenge = parseChallenge(await this.deps.coordinator.takeOnce('mfa', id));
    if (!challenge || challenge.expiresAt <= this.deps.clock.now())
      throw new AppError('MFA_CHALLENGE_INVALID');
    try {
      return await check(challenge);
    } catch (e) {
      if (
        e instanceof AppError &&
        e.code === 'MFA_CODE_INVALID' &&
        challenge.attempts + 1 < MFA_CHALLENGE_ATTEMPTS
      )
        await this.put(id, { ...challenge, attempts: challenge.attempts + 1 });
      throw e;
    }
  }

  private async put(id: string, challenge: Challenge): Promise<void> {
    const ttl = challenge.expiresAt - this.deps.clock.now();
    if (ttl > 0) await this.deps.coordinator.putOnce('mfa', id, JSON.stringify(challenge), ttl);
  }

  /** The time step the code is right for (this one or one either side, for clock drift), or null. */
  private stepOf(row: { secret_ciphertext: string; secret_key_id: string }, user: UserRow, code: string) {
    if (!/^\d{6}$/.test(code)) return null;
    const secret = this.deps.secrets.open(
      { ciphertext: row.secret_ciphertext, keyId: row.secret_key_id },
      context(user.id),
    );
    const timestamp = this.deps.clock.now();
    const delta = totp(Secret.fromBase32(secret), user.email).validate({ token: code, timestamp, window: 1 });
    return delta === null ? null : Math.floor(timestamp / 1000 / PERIOD_S) + delta;
  }
}

function totp(secret: Secret, label: string): TOTP {
  return new TOTP({ issuer: ISSUER, label, secret, algorithm: 'SHA1', digits: 6, period: PERIOD_S });
}

function context(userId: string): string {
  return `user_totp:${userId}`;
}

/** xxxxx-xxxxx from an alphabet without look-alikes (50 random bits). */
function recoveryCode(): string {
  const alphabet = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford's base32: 32 symbols, no i l o u
  const bytes = randomBytes(10);
  const chars = [...bytes].map((b) => alphabet[b & 31]!);
  return `${chars.slice(0, 5).join('')}-${chars.slice(5).join('')}`;
}

function normalizeRecoveryCode(code: string): string {
  const bare = code.toLowerCase().replace(/[^a-z0-9]/g, '');
  return bare.length === 10 ? `${bare.slice(0, 5)}-${bare.slice(5)}` : bare;
}

function hashCode(code: string): string {
  return createHash('sha256').update(code).digest('hex');
}

function parseChallenge(text: string | null): Challenge | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as Partial<Challenge>;
    if (
      typeof v.userId === 'string' &&
      (v.purpose === 'sign-in' || v.purpose === 'enrol') &&
      typeof v.attempts === 'number' &&
      typeof v.expiresAt === 'number'
    )
      return { userId: v.userId, purpose: v.purpose, attempts: v.attempts, expiresAt: v.expiresAt };
  } catch {
    // a corrupt entry is an unknown challenge
  }
  return null;
}
