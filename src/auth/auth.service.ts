// Accounts and tokens: argon2id password hashes, short-lived access JWTs, rotating refresh tokens in
// families (a reused refresh token revokes its whole family: someone copied it), with a short grace
// window for a rotation whose answer never reached the client.
import { createHash, randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { hash, verify } from '@node-rs/argon2';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { IdGenerator } from '../lib/ids.js';
import { Semaphore } from '../lib/semaphore.js';
import type { RefreshTokenRow, UserRepository, UserRow } from '../store/user.repository.js';
import type { UserRole } from '../store/schema.js';
import type { AuditSink } from '../audit/audit-log.js';
import type { Logger } from '../observability/logger.js';

export interface PublicUser {
  id: string;
  email: string;
  role: UserRole;
}

export interface Invite {
  id: string;
  /** Shown once; only its SHA-256 is stored. */
  token: string;
  email: string | null;
  expiresAt: string;
}

export interface TokenPair {
  accessToken: string;
  refreshToken: string;
}

export interface AuthServiceOptions {
  accessSecret: string;
  refreshSecret: string;
  accessTtlSeconds: number;
  refreshTtlSeconds: number;
  /** REFRESH_REUSE_GRACE_MS: how long after its rotation a token may rotate again; 0 = never. */
  refreshReuseGraceMs: number;
  /** Password hashes (argon2) running at once; default half the cores, at least 1. */
  hashConcurrency?: number;
  /** Hashes waiting beyond those; more sign-ins are answered OVERLOADED. Default 512. */
  hashQueue?: number;
  /** REGISTRATION; default open. */
  registration?: 'open' | 'closed';
  /** The first account of an empty install becomes admin; default false. */
  firstUserBecomesAdmin?: boolean;
  /** AUTH_LOCAL: password registration and sign-in; default true. */
  local?: boolean;
}

export interface SecondFactorGate {
  /** Throws (MFA_REQUIRED, MFA_ENROLMENT_REQUIRED, with a challenge) when a code must come first. */
  beforeTokens(user: UserRow): Promise<void>;
}

/** How an account proved who it is, for the audit trail. */
export type SignInMethod = 'password' | 'oidc';

const ISSUER = 'clouddesk';
/**
 * argon2 runs on libuv's thread pool (4 threads), where WebCrypto's HMAC — every JWT check — and file and
 * DNS work run too. A burst of sign-ins must not queue those behind seconds of hashing: hashes run at most
 * this many at once (half the cores, at least 1) and wait in a bounded queue of their own.
 */
const HASH_CONCURRENCY = Math.max(1, Math.floor(availableParallelism() / 2));
const HASH_QUEUE = 512;
// @node-rs/argon2 hashes with argon2id by default; these are OWASP's minimum parameters (19 MiB, t=2).
const argonOptions = { memoryCost: 19_456, timeCost: 2, parallelism: 1 };

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

export class AuthService {
  private readonly accessKey: Uint8Array;
  private readonly refreshKey: Uint8Array;
  /** Verified against when the email is unknown, so both answers take the same time. */
  private dummyHash: Promise<string> | undefined;
  private readonly hashing: Semaphore;

  constructor(
    private readonly deps: {
      users: UserRepository;
      clock: Clock;
      newId: IdGenerator;
      audit: AuditSink;
      logger?: Logger;
      /** Two-factor (identity/totp.service.ts): may refuse tokens after a right password until a code. */
      secondFactor?: SecondFactorGate;
    },
    private readonly options: AuthServiceOptions,
  ) {
    this.accessKey = new TextEncoder().encode(options.accessSecret);
    this.refreshKey = new TextEncoder().encode(options.refreshSecret);
    this.hashing = new Semaphore(
      options.hashConcurrency ?? HASH_CONCURRENCY,
      options.hashQueue ?? HASH_QUEUE,
    );
  }

  private hash(password: string): Promise<string> {
    return this.hashing.run(() => hash(password, argonOptions));
  }

  private verifyHash(passwordHash: string, password: string): Promise<boolean> {
    return this.hashing.run(() => verify(passwordHash, password));
  }

  /**
   * Self-registration. With REGISTRATION=closed an invite is required (single use, may name the
   * email); with it open an invite is optional. The first account of an empty single-node install
   * becomes its admin.
   */
  async register(
    email: string,
    password: string,
    options: { inviteToken?: string } = {},
  ): Promise<{ user: PublicUser } & TokenPair> {
    if (this.options.local === false) throw new AppError('LOCAL_AUTH_DISABLED');
    const normalized = normalizeEmail(email);
    if (this.options.registration === 'closed' && options.inviteToken === undefined)
      throw new AppError('REGISTRATION_CLOSED');
    const row = await this.createAccount(normalized, password, 'user');
    if (options.inviteToken !== undefined) {
      const used = await this.deps.users
        .consumeInvite(hashToken(options.inviteToken), normalized, row.id, this.deps.clock.now())
        .catch(async (e: unknown) => {
          await this.deps.users.deleteUser(row.id);
          throw e;
        });
      if (!used) {
        // The account was made first so that a taken email answers EMAIL_TAKEN without burning the invite.
        await this.deps.users.deleteUser(row.id);
        throw new AppError('INVITE_INVALID');
      }
    }
    if (this.options.firstUserBecomesAdmin && (await this.deps.users.promoteIfFirst(row.id))) {
      row.role = 'admin';
      this.deps.logger?.warn(
        { userId: row.id, email: row.email },
        'the first account of this install was made its admin',
      );
    }
    this.deps.audit.record('auth.register', {
      actor: row.id,
      targetId: row.id,
      details: { email: row.email, role: row.role, invited: options.inviteToken !== undefined },
    });
    // AUTH_REQUIRE_2FA: the new account gets no token until it has set up its second factor.
    await this.deps.secondFactor?.beforeTokens(row);
    return { user: toPublicUser(row), ...(await this.issuePair(row.id, this.deps.newId(), null)) };
  }

  /** Makes an account (registration, `clouddesk admin create`); EMAIL_TAKEN when it exists. */
  async createAccount(email: string, password: string, role: UserRole): Promise<UserRow> {
    const row: UserRow = {
      id: this.deps.newId(),
      email: normalizeEmail(email),
      password_hash: await this.hash(password),
      created_at: this.deps.clock.now(),
      role,
      disabled_at: null,
      last_sign_in_at: null,
      signed_out_at: null,
    };
    if (!(await this.deps.users.create(row))) throw new AppError('EMAIL_TAKEN');
    return row;
  }

  /** A single-use invite link's token, valid for `ttlHours`, optionally for one email only. */
  async createInvite(adminId: string, email: string | null, ttlHours: number): Promise<Invite> {
    const token = randomBytes(32).toString('base64url');
    const now = this.deps.clock.now();
    const id = this.deps.newId();
    const normalized = email === null ? null : normalizeEmail(email);
    const expiresAt = now + ttlHours * 3_600_000;
    await this.deps.users.addInvite({
      id,
      token_hash: hashToken(token),
      email: normalized,
      created_by: adminId,
      created_at: now,
      expires_at: expiresAt,
      used_at: null,
      used_by: null,
    });
    this.deps.audit.record('user.invite-created', {
      targetId: id,
      details: { email: normalized, expiresAt: new Date(expiresAt).toISOString() },
    });
    return { id, token, email: normalized, expiresAt: new Date(expiresAt).toISOString() };
  }

  /**
   * An account that signs in only through the company's provider: no password (an empty hash, which
   * no password matches).
   */
  async createExternalAccount(email: string, role: UserRole): Promise<UserRow | null> {
    const row: UserRow = {
      id: this.deps.newId(),
      email: normalizeEmail(email),
      password_hash: '',
      created_at: this.deps.clock.now(),
      role,
      disabled_at: null,
      last_sign_in_at: null,
      signed_out_at: null,
    };
    return (await this.deps.users.create(row)) ? row : null;
  }

  async login(email: string, password: string): Promise<{ user: PublicUser } & TokenPair> {
    if (this.options.local === false) throw new AppError('LOCAL_AUTH_DISABLED');
    const normalized = normalizeEmail(email);
    const row = await this.deps.users.findByEmail(normalized);
    if (!row || row.password_hash === '') {
      // A refused first try (OVERLOADED) must not stay cached.
      this.dummyHash ??= this.hash('not-a-real-password').catch((e: unknown) => {
        this.dummyHash = undefined;
        throw e;
      });
      await this.verifyHash(await this.dummyHash, password);
      this.signInFailed(normalized, row?.id ?? null, 'INVALID_CREDENTIALS');
      throw new AppError('INVALID_CREDENTIALS');
    }
    if (!(await this.verifyHash(row.password_hash, password))) {
      this.signInFailed(normalized, row.id, 'INVALID_CREDENTIALS');
      throw new AppError('INVALID_CREDENTIALS');
    }
    // Told only to whoever knows the password.
    if (row.disabled_at !== null) {
      this.signInFailed(normalized, row.id, 'ACCOUNT_DISABLED');
      throw new AppError('ACCOUNT_DISABLED');
    }
    await this.deps.secondFactor?.beforeTokens(row);
    return this.completeSignIn(row, 'password');
  }

  /** The last step of every sign-in, once the account is known and allowed: tokens and the trail. */
  async completeSignIn(
    row: UserRow,
    method: SignInMethod,
    details: Record<string, string> = {},
  ): Promise<{ user: PublicUser } & TokenPair> {
    if (row.disabled_at !== null) {
      this.signInFailed(row.email, row.id, 'ACCOUNT_DISABLED', method);
      throw new AppError('ACCOUNT_DISABLED');
    }
    const now = this.deps.clock.now();
    await this.deps.users.setLastSignIn(row.id, now);
    this.deps.audit.record('auth.sign-in', {
      actor: row.id,
      targetId: row.id,
      details: method === 'password' ? { email: row.email } : { email: row.email, method, ...details },
    });
    return {
      user: toPublicUser({ ...row, last_sign_in_at: now }),
      ...(await this.issuePair(row.id, this.deps.newId(), null)),
    };
  }

  /** A refused sign-in, in the trail of the account it named (when there is one). */
  signInFailed(
    email: string,
    userId: string | null,
    reason: string,
    method: SignInMethod = 'password',
  ): void {
    this.deps.audit.record('auth.sign-in-failed', {
      actor: 'system',
      subjectUserId: userId,
      targetId: userId,
      details:
        method === 'password'
          ? { email: normalizeEmail(email), reason }
          : { email: normalizeEmail(email), reason, method },
    });
  }

  async refresh(refreshToken: string): Promise<TokenPair> {
    const claims = await this.verifyRefresh(refreshToken);
    const now = this.deps.clock.now();
    const row = await this.deps.users.findRefreshToken(claims.jti);
    if (!row || row.user_id !== claims.sub || row.expires_at <= now) throw new AppError('INVALID_TOKEN');
    if (row.revoked_at !== null) {
      // Revoked alone while its sign-in lives on: a successor the grace window replaced as never received.
      // Someone did receive it, so whoever rotated the old token again was someone else: that is reuse.
      if (row.used_at === null && (await this.deps.users.familyIsLive(row.family_id, now))) {
        await this.deps.users.revokeFamily(row.family_id, now);
        this.refreshReused(row);
        throw new AppError('REFRESH_TOKEN_REUSED');
      }
      throw new AppError('INVALID_TOKEN');
    }
    const user = await this.deps.users.findById(row.user_id);
    if (!user) throw new AppError('INVALID_TOKEN');
    if (user.disabled_at !== null) throw new AppError('ACCOUNT_DISABLED');
    if (!(await this.deps.users.markRefreshTokenUsed(row.id, now))) {
      if (await this.replaceLostSuccessor(row, now))
        return this.issuePair(row.user_id, row.family_id, row.id);
      // Already used: the token was copied (or replayed). End every token of this sign-in.
      await this.deps.users.revokeFamily(row.family_id, now);
      this.refreshReused(row);
      throw new AppError('REFRESH_TOKEN_REUSED');
    }
    return this.issuePair(row.user_id, row.family_id, row.id);
  }

  private refreshReused(row: RefreshTokenRow): void {
    this.deps.audit.record('auth.refresh-reuse', {
      actor: 'system',
      subjectUserId: row.user_id,
      targetId: row.user_id,
      details: { family: row.family_id },
    });
  }

  /**
   * A used token presented again: the answer to its rotation may never have reached the client (page
   * closed, network dropped mid-refresh), which then presents the old token on its next load. Within
   * the grace window after that rotation, and only while the token it was exchanged for is still
   * unused (so it is the direct predecessor of the family's live token), that successor nobody received
   * is revoked and the caller rotates again. An older ancestor, or a token past the window, is reuse.
   */
  private async replaceLostSuccessor(row: RefreshTokenRow, now: number): Promise<boolean> {
    const grace = this.options.refreshReuseGraceMs;
    if (grace <= 0 || row.used_at === null || now - row.used_at >= grace) return false;
    const successor = await this.deps.users.findLiveSuccessor(row.id, now);
    // Conditional: if the successor's holder refreshes with it at the same moment, only one side wins.
    return successor !== undefined && (await this.deps.users.revokeUnusedRefreshToken(successor.id, now));
  }

  /** Revokes the refresh token's family; unknown or invalid tokens are ignored (logout is idempotent). */
  async logout(refreshToken: string): Promise<void> {
    let claims: { jti: string; sub: string };
    try {
      claims = await this.verifyRefresh(refreshToken);
    } catch {
      return;
    }
    const row = await this.deps.users.findRefreshToken(claims.jti);
    if (!row) return;
    await this.deps.users.revokeFamily(row.family_id, this.deps.clock.now());
    this.deps.audit.record('auth.sign-out', { actor: row.user_id, targetId: row.user_id });
  }

  async signOutEverywhere(userId: string): Promise<void> {
    await this.deps.users.revokeAllForUser(userId, this.deps.clock.now());
    this.deps.audit.record('auth.sign-out-everywhere', { actor: userId, targetId: userId });
  }

  async me(userId: string): Promise<PublicUser> {
    const row = await this.deps.users.findById(userId);
    if (!row) throw new AppError('UNAUTHENTICATED');
    return toPublicUser(row);
  }

  /**
   * The account behind a verified access token, as the store has it now: a disabled or deleted
   * account is refused even while its access token has not expired, and the role is today's.
   */
  async activeUser(userId: string): Promise<{ id: string; role: UserRole }> {
    const row = await this.deps.users.findById(userId);
    if (!row) throw new AppError('UNAUTHENTICATED');
    if (row.disabled_at !== null) throw new AppError('ACCOUNT_DISABLED');
    return { id: row.id, role: row.role };
  }

  /** Verifies an access token and returns the user id. */
  async verifyAccess(token: string): Promise<string> {
    try {
      const { payload } = await jwtVerify(token, this.accessKey, {
        issuer: ISSUER,
        algorithms: ['HS256'],
        currentDate: new Date(this.deps.clock.now()),
      });
      if (payload.typ !== 'access' || typeof payload.sub !== 'string') throw new AppError('INVALID_TOKEN');
      return payload.sub;
    } catch (e) {
      if (e instanceof AppError) throw e;
      if (e instanceof joseErrors.JWTExpired) throw new AppError('TOKEN_EXPIRED');
      throw new AppError('INVALID_TOKEN');
    }
  }

  private async verifyRefresh(token: string): Promise<{ jti: string; sub: string }> {
    try {
      const { payload } = await jwtVerify(token, this.refreshKey, {
        issuer: ISSUER,
        algorithms: ['HS256'],
        currentDate: new Date(this.deps.clock.now()),
      });
      if (payload.typ !== 'refresh' || typeof payload.sub !== 'string' || typeof payload.jti !== 'string') {
        throw new AppError('INVALID_TOKEN');
      }
      return { jti: payload.jti, sub: payload.sub };
    } catch (e) {
      if (e instanceof AppError) throw e;
      throw new AppError('INVALID_TOKEN');
    }
  }

  /** A new access token and refresh token; `parentId` is the refresh token this one replaces. */
  private async issuePair(userId: string, familyId: string, parentId: string | null): Promise<TokenPair> {
    const now = this.deps.clock.now();
    const iat = Math.floor(now / 1000);
    const jti = this.deps.newId();
    const accessToken = await new SignJWT({ typ: 'access' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(userId)
      .setIssuer(ISSUER)
      .setIssuedAt(iat)
      .setExpirationTime(iat + this.options.accessTtlSeconds)
      .sign(this.accessKey);
    const refreshToken = await new SignJWT({ typ: 'refresh' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(userId)
      .setJti(jti)
      .setIssuer(ISSUER)
      .setIssuedAt(iat)
      .setExpirationTime(iat + this.options.refreshTtlSeconds)
      .sign(this.refreshKey);
    await this.deps.users.addRefreshToken({
      id: jti,
      user_id: userId,
      family_id: familyId,
      parent_id: parentId,
      expires_at: now + this.options.refreshTtlSeconds * 1000,
      used_at: null,
      revoked_at: null,
      created_at: now,
    });
    return { accessToken, refreshToken };
  }
}

function toPublicUser(row: UserRow): PublicUser {
  return { id: row.id, email: row.email, role: row.role };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
