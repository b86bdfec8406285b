// Session sharing (issue 10): the owner of a live session makes a link (view or control, expiring,
// optionally single-use); a guest exchanges the link's token for a normal single-use WebSocket ticket
// that names them and the share, and the gateway holds that viewer to the share's mode (view-only is the
// RFB parser's policy, enforced in the relay). Revoking publishes a cluster command every node acts on,
// so a guest on any gateway is closed (4002). The token is shown once; only its SHA-256 is stored.
import { createHash, randomBytes } from 'node:crypto';
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { IdGenerator } from '../lib/ids.js';
import type { Coordinator, GuestClaims } from '../coordination/coordinator.js';
import type { AuditSink } from '../audit/audit-log.js';
import type { SessionRepository, SessionRow } from '../store/session.repository.js';
import type { ShareRepository, ShareRow } from '../store/share.repository.js';
import type { UserRepository } from '../store/user.repository.js';
import type { ShareMode } from '../store/schema.js';

export interface ShareServiceOptions {
  /** SHARE_MAX_MINUTES */
  maxMinutes: number;
  /** SHARE_GUESTS */
  guests: 'signed-in' | 'anyone';
  /** SESSION_MAX_VIEWERS: a guest is refused when the session has this many viewers already. */
  maxViewers: number;
  ticketTtlMs: number;
}

export const DEFAULT_SHARE_MINUTES = 60;
/** 32 random bytes, base64url: 43 characters. */
export const SHARE_TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export interface CreatedShare {
  id: string;
  /** The web client's landing page with the token after `#` (never sent to a server, never logged). */
  url: string;
  mode: ShareMode;
  singleUse: boolean;
  expiresAt: string;
}

export interface PublicShare {
  id: string;
  sessionId: string;
  mode: ShareMode;
  singleUse: boolean;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
  revokedAt: string | null;
  status: 'active' | 'expired' | 'revoked' | 'used';
  /** Guests watching now, cluster-wide (their viewer leases). */
  guests: { viewerId: string; name: string; node: string }[];
}

/** What a share link's landing page shows before joining. */
export interface ShareInvitation {
  ownerName: string;
  mode: ShareMode;
  expiresAt: string;
  guests: 'signed-in' | 'anyone';
}

export interface GuestTicket {
  sessionId: string;
  websocketUrl: string;
  mode: ShareMode;
  ownerName: string;
  expiresAt: string;
}

export function hashShareToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export class ShareService {
  constructor(
    private readonly deps: {
      shares: ShareRepository;
      sessions: Pick<SessionRepository, 'findOwned' | 'findById'>;
      users: Pick<UserRepository, 'findById'>;
      coordinator: Coordinator;
      audit: AuditSink;
      clock: Clock;
      newId: IdGenerator;
    },
    private readonly options: ShareServiceOptions,
  ) {}

  async create(
    ownerId: string,
    sessionId: string,
    request: { mode: ShareMode; expiresInMinutes?: number; singleUse?: boolean },
  ): Promise<CreatedShare> {
    const minutes = request.expiresInMinutes ?? Math.min(DEFAULT_SHARE_MINUTES, this.options.maxMinutes);
    if (minutes > this.options.maxMinutes) {
      throw new AppError('SHARE_EXPIRY_TOO_LONG', {
        message: `A share may last at most ${this.options.maxMinutes} minutes (SHARE_MAX_MINUTES)`,
      });
    }
    const session = await this.liveSessionOf(ownerId, sessionId);
    const now = this.deps.clock.now();
    const token = randomBytes(32).toString('base64url');
    const row: ShareRow = {
      id: this.deps.newId(),
      session_id: session.id,
      owner_id: ownerId,
      token_hash: hashShareToken(token),
      mode: request.mode,
      single_use: request.singleUse ? 1 : 0,
      created_at: now,
      expires_at: now + minutes * 60_000,
      used_at: null,
      revoked_at: null,
    };
    await this.deps.shares.create(row);
    this.deps.audit.record('share.created', {
      subjectUserId: ownerId,
      targetId: row.id,
      details: { sessionId: session.id, mode: row.mode, singleUse: row.single_use === 1, minutes },
    });
    return {
      id: row.id,
      url: `/share#${token}`,
      mode: row.mode,
      singleUse: row.single_use === 1,
      expiresAt: new Date(row.expires_at).toISOString(),
    };
  }

  /** The session's shares, newest first, each with the guests watching through it now. */
  async list(ownerId: string, sessionId: string): Promise<PublicShare[]> {
    const session = await this.deps.sessions.findOwned(ownerId, sessionId);
    if (!session) throw new AppError('SESSION_NOT_FOUND');
    const rows = await this.deps.shares.listBySession(session.id);
    const leases = (await this.deps.coordinator.listViewers([session.id])).get(session.id) ?? [];
    const now = this.deps.clock.now();
    return rows.map((r) => ({
      id: r.id,
      sessionId: r.session_id,
      mode: r.mode,
      singleUse: r.single_use === 1,
      createdAt: iso(r.created_at),
      expiresAt: iso(r.expires_at),
      usedAt: r.used_at === null ? null : iso(r.used_at),
      revokedAt: r.revoked_at === null ? null : iso(r.revoked_at),
      status: statusOf(r, now),
      guests: leases
        .filter((l) => l.guest?.shareId === r.id)
        .map((l) => ({ viewerId: l.viewerId, name: l.guest!.name, node: l.nodeId })),
    }));
  }

  /**
   * Revokes a share and closes its guests on every node. Answers once the command is published (the
   * nodes act on it as they receive it, well within a second). Revoking a revoked share publishes again.
   */
  async revoke(ownerId: string, shareId: string): Promise<void> {
    const row = await this.deps.shares.findById(shareId);
    if (!row || row.owner_id !== ownerId) throw new AppError('SHARE_NOT_FOUND');
    const revoked = await this.deps.shares.revoke(row.id, this.deps.clock.now());
    if (revoked) {
      this.deps.audit.record('share.revoked', {
        subjectUserId: ownerId,
        targetId: row.id,
        details: { sessionId: row.session_id, mode: row.mode },
      });
    }
    await this.deps.coordinator.publish({ type: 'revoke-share', shareId: row.id });
  }

  /**
   * Ends one guest of the owner's session, on whatever node it is on (a cluster command; closed 4002
   * `removed by the owner`). Only a guest watching now (a live lease with a share) can be ended. The
   * removal is also stored, so a node cut off from the command closes the guest at its next lease
   * renewal. The share itself stays usable: revoke it to keep the guest from joining again.
   */
  async endGuest(ownerId: string, sessionId: string, viewerId: string): Promise<void> {
    const session = await this.deps.sessions.findOwned(ownerId, sessionId);
    if (!session) throw new AppError('SESSION_NOT_FOUND');
    const leases = (await this.deps.coordinator.listViewers([session.id])).get(session.id) ?? [];
    const lease = leases.find((l) => l.viewerId === viewerId && l.guest !== undefined);
    if (!lease?.guest) throw new AppError('GUEST_NOT_FOUND');
    await this.deps.coordinator.publish({ type: 'end-guest', sessionId: session.id, viewerId });
    // Kept for a node that could not hear the command (a partition): its next lease renewal reads it
    // and closes the guest as the command would have. Until the share expires: its guests close then.
    const now = this.deps.clock.now();
    const share = await this.deps.shares.findById(lease.guest.shareId);
    await this.deps.shares.recordGuestRemoved({
      viewer_id: viewerId,
      session_id: session.id,
      removed_at: now,
      expires_at: share?.expires_at ?? now + this.options.maxMinutes * 60_000,
    });
    this.deps.audit.record('share.guest-ended', {
      subjectUserId: ownerId,
      targetId: lease.guest.shareId,
      details: { sessionId: session.id, viewerId, guestName: lease.guest.name, node: lease.nodeId },
    });
  }

  /** What the landing page shows: whose desktop, which mode, and whether a guest must sign in. */
  async invitation(token: string): Promise<ShareInvitation> {
    const { share, owner } = await this.usable(token);
    return {
      ownerName: owner,
      mode: share.mode,
      expiresAt: iso(share.expires_at),
      guests: this.options.guests,
    };
  }

  /**
   * Exchanges a share's token for a single-use WebSocket ticket to the shared session. A signed-in guest
   * is named by their email; with SHARE_GUESTS=anyone a guest who is not signed in gives a display name.
   */
  async exchange(
    token: string,
    guest: { userId: string } | { displayName: string | undefined },
  ): Promise<GuestTicket> {
    let claims: Pick<GuestClaims, 'userId' | 'name'>;
    if ('userId' in guest) {
      const user = await this.deps.users.findById(guest.userId);
      if (!user) throw new AppError('UNAUTHENTICATED');
      claims = { userId: user.id, name: user.email };
    } else {
      if (this.options.guests === 'signed-in') throw new AppError('SHARE_SIGN_IN_REQUIRED');
      const name = guest.displayName?.trim() ?? '';
      if (name.length < 1 || name.length > 64) throw new AppError('SHARE_GUEST_NAME_REQUIRED');
      claims = { userId: null, name };
    }
    const { share, session, owner } = await this.usable(token);
    const viewers = (await this.deps.coordinator.countViewers([session.id])).get(session.id) ?? 0;
    if (viewers >= this.options.maxViewers) throw new AppError('SESSION_VIEWERS_FULL');
    const now = this.deps.clock.now();
    if (!(await this.deps.shares.markUsed(share.id, share.single_use === 1, now))) {
      throw new AppError('SHARE_USED');
    }
    const ticket = await this.deps.coordinator.issueTicket(
      {
        userId: session.user_id,
        sessionId: session.id,
        guest: { shareId: share.id, mode: share.mode, expiresAt: share.expires_at, ...claims },
      },
      this.options.ticketTtlMs,
    );
    this.deps.audit.record('share.used', {
      actor: claims.userId ?? 'anonymous',
      subjectUserId: share.owner_id,
      targetId: share.id,
      details: {
        sessionId: session.id,
        mode: share.mode,
        guestName: claims.name,
        guestUserId: claims.userId,
      },
    });
    return {
      sessionId: session.id,
      websocketUrl: `/vnc?ticket=${ticket}`,
      mode: share.mode,
      ownerName: owner,
      expiresAt: iso(share.expires_at),
    };
  }

  /** A share a guest may still join through, its live session and its owner's name. */
  private async usable(token: string): Promise<{ share: ShareRow; session: SessionRow; owner: string }> {
    if (!SHARE_TOKEN_PATTERN.test(token)) throw new AppError('SHARE_INVALID');
    const share = await this.deps.shares.findByTokenHash(hashShareToken(token));
    if (!share) throw new AppError('SHARE_INVALID');
    if (share.revoked_at !== null) throw new AppError('SHARE_REVOKED');
    if (share.expires_at <= this.deps.clock.now()) throw new AppError('SHARE_EXPIRED');
    if (share.single_use === 1 && share.used_at !== null) throw new AppError('SHARE_USED');
    const session = await this.deps.sessions.findById(share.session_id);
    if (session?.status !== 'active') throw new AppError('SESSION_ENDED');
    const owner = await this.deps.users.findById(share.owner_id);
    return { share, session, owner: owner?.email ?? 'someone' };
  }

  private async liveSessionOf(ownerId: string, sessionId: string): Promise<SessionRow> {
    const session = await this.deps.sessions.findOwned(ownerId, sessionId);
    if (!session) throw new AppError('SESSION_NOT_FOUND');
    if (session.status === 'ended') throw new AppError('SESSION_ENDED');
    if (session.status !== 'active') throw new AppError('SESSION_NOT_READY');
    return session;
  }
}

function statusOf(r: ShareRow, now: number): PublicShare['status'] {
  if (r.revoked_at !== null) return 'revoked';
  if (r.expires_at <= now) return 'expired';
  if (r.single_use === 1 && r.used_at !== null) return 'used';
  return 'active';
}

function iso(t: number): string {
  return new Date(t).toISOString();
}
