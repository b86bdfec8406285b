// Company sign-in (issue 12): the decisions around the OpenID provider's answer. `start` keeps the
// sign-in's state, nonce and PKCE verifier in the coordinator (single use, any node may take them), so
// the callback works behind the balancer on whichever gateway it lands. `finish` turns verified claims
// into an account: the one already linked to this issuer + subject, else an account with the same
// email — linked only when the provider verified that email — else a new one (just in time). Roles
// follow the groups claim when OIDC_ADMIN_GROUPS is set. Every refusal is in the audit trail.
import { randomBytes } from 'node:crypto';
import type { OidcSettings } from '../config/config.js';
import type { Coordinator } from '../coordination/coordinator.js';
import { AppError, isAppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { AuditSink } from '../audit/audit-log.js';
import { normalizeEmail, type AuthService, type PublicUser, type TokenPair } from '../auth/auth.service.js';
import type { IdentityRepository } from '../store/identity.repository.js';
import type { UserRepository, UserRow } from '../store/user.repository.js';
import type { UserRole } from '../store/schema.js';
import type { OidcChecks, OidcClaims, OidcProviderPort } from './oidc-client.js';

/** How long a started sign-in may take at the provider (login page, consent, a second factor there). */
export const OIDC_SIGN_IN_TTL_MS = 10 * 60_000;

interface PendingSignIn {
  nonce: string;
  codeVerifier: string;
  redirectUri: string;
}

export class OidcService {
  constructor(
    private readonly deps: {
      provider: OidcProviderPort;
      coordinator: Coordinator;
      auth: AuthService;
      users: UserRepository;
      identities: IdentityRepository;
      audit: AuditSink;
      clock: Clock;
    },
    private readonly settings: OidcSettings,
  ) {}

  get name(): string {
    return this.settings.name;
  }

  /** The provider's authorization URL for a new sign-in, and its state (also kept in a cookie). */
  async start(redirectUri: string): Promise<{ url: URL; state: string }> {
    const checks: OidcChecks = {
      state: random(),
      nonce: random(),
      codeVerifier: random(),
      redirectUri,
    };
    const url = await this.deps.provider.authorizationUrl(checks);
    const pending: PendingSignIn = {
      nonce: checks.nonce,
      codeVerifier: checks.codeVerifier,
      redirectUri,
    };
    await this.deps.coordinator.putOnce('oidc', checks.state, JSON.stringify(pending), OIDC_SIGN_IN_TTL_MS);
    return { url, state: checks.state };
  }

  /**
   * The callback: `query` as the provider sent it, `browserState` the state this browser started
   * with (its cookie), so a sign-in started by someone else cannot be finished in this browser.
   */
  async finish(
    query: URLSearchParams,
    browserState: string | undefined,
  ): Promise<{ user: PublicUser } & TokenPair> {
    let email = '';
    let userId: string | null = null;
    try {
      const state = query.get('state');
      if (!state || browserState !== state) throw new AppError('OIDC_STATE_INVALID');
      const pending = parsePending(await this.deps.coordinator.takeOnce('oidc', state));
      if (!pending) throw new AppError('OIDC_STATE_INVALID');
      const claims = await this.deps.provider.exchange(query, { state, ...pending });
      email = typeof claims.email === 'string' ? normalizeEmail(claims.email) : '';
      const row = await this.accountFor(claims, email);
      userId = row.id;
      return await this.deps.auth.completeSignIn(row, 'oidc', { issuer: claims.iss });
    } catch (e) {
      const code = isAppError(e) ? e.code : 'INTERNAL';
      // ACCOUNT_DISABLED is recorded by completeSignIn itself.
      if (code !== 'ACCOUNT_DISABLED') this.deps.auth.signInFailed(email, userId, code, 'oidc');
      throw e;
    }
  }

  private async accountFor(claims: OidcClaims, email: string): Promise<UserRow> {
    const verified = claims.email_verified === true || claims.email_verified === 'true';
    const role = this.roleFrom(claims);
    const now = this.deps.clock.now();
    const linked = await this.deps.identities.findIdentity(claims.iss, claims.sub);
    let row = linked ? await this.deps.users.findById(linked.user_id) : undefined;
    if (!row) {
      if (email === '') throw new AppError('OIDC_EMAIL_MISSING');
      this.checkDomain(email, verified);
      const existing = await this.deps.users.findByEmail(email);
      if (existing) {
        // Anyone can type any address at some providers: only a verified one proves it is theirs.
        if (!verified) throw new AppError('OIDC_EMAIL_UNVERIFIED');
        row = existing;
      } else {
        const created = await this.deps.auth.createExternalAccount(email, role ?? 'user');
        // Lost a race with a registration of the same email: link to it as above, if verified.
        row = created ?? (verified ? await this.deps.users.findByEmail(email) : undefined);
        if (!row) throw new AppError('OIDC_EMAIL_UNVERIFIED');
        if (created)
          this.deps.audit.record('auth.register', {
            actor: created.id,
            targetId: created.id,
            details: { email, role: created.role, method: 'oidc', issuer: claims.iss },
          });
      }
      if (!(await this.deps.identities.linkIdentity(identity(claims, row.id, email, now))))
        throw new AppError('OIDC_STATE_INVALID', {
          message: 'This identity was linked meanwhile; sign in again',
        });
      this.deps.audit.record('identity.linked', {
        actor: row.id,
        targetId: row.id,
        details: { issuer: claims.iss, email },
      });
    } else {
      // A linked identity signs in by its subject; the domain rule still holds for its current email.
      if (email !== '') this.checkDomain(email, verified);
      await this.deps.identities.touchIdentity(claims.iss, claims.sub, email || null, now);
    }
    // Groups demote too, but never the last admin (the install would have none left).
    const keepsAnAdmin =
      role !== 'user' || row.role !== 'admin' || (await this.deps.users.countActiveAdmins(row.id)) > 0;
    if (role !== null && row.role !== role && row.disabled_at === null && keepsAnAdmin) {
      await this.deps.users.setRole(row.id, role);
      this.deps.audit.record('user.role-changed', {
        actor: 'system',
        subjectUserId: row.id,
        targetId: row.id,
        details: { from: row.role, to: role, source: 'oidc-groups' },
      });
      row = { ...row, role };
    }
    return row;
  }

  /** A domain is only trusted on a verified email: an unverified one could name any domain. */
  private checkDomain(email: string, verified: boolean): void {
    const allowed = this.settings.allowedDomains;
    if (allowed.length === 0) return;
    const domain = email.slice(email.lastIndexOf('@') + 1);
    if (!allowed.includes(domain)) throw new AppError('OIDC_DOMAIN_FORBIDDEN');
    if (!verified) throw new AppError('OIDC_EMAIL_UNVERIFIED');
  }

  /** admin / user from the groups claim; null when roles are not mapped (OIDC_ADMIN_GROUPS unset). */
  private roleFrom(claims: OidcClaims): UserRole | null {
    if (this.settings.adminGroups.length === 0) return null;
    const raw = claims[this.settings.groupsClaim];
    const groups = Array.isArray(raw) ? raw.filter((g): g is string => typeof g === 'string') : [];
    if (typeof raw === 'string') groups.push(raw);
    return groups.some((g) => this.settings.adminGroups.includes(g)) ? 'admin' : 'user';
  }
}

function identity(claims: OidcClaims, userId: string, email: string, now: number) {
  return {
    issuer: claims.iss,
    subject: claims.sub,
    user_id: userId,
    email,
    created_at: now,
    last_sign_in_at: now,
  };
}

function random(): string {
  return randomBytes(32).toString('base64url');
}

function parsePending(text: string | null): PendingSignIn | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as Partial<PendingSignIn>;
    if (
      typeof v.nonce === 'string' &&
      typeof v.codeVerifier === 'string' &&
      typeof v.redirectUri === 'string'
    )
      return { nonce: v.nonce, codeVerifier: v.codeVerifier, redirectUri: v.redirectUri };
  } catch {
    // a corrupt entry is an unknown sign-in
  }
  return null;
}
