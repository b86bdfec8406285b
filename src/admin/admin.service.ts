// Administration (issue 10): the user list, role and disabled changes with the last-admin guard,
// every live session in the cluster with the node of each viewer, and ending anyone's session.
// Disabling an account revokes its refresh tokens and closes its viewers on every node through the
// coordinator's "sign user out" command (the path sign-out-everywhere takes); authenticate() refuses
// its access tokens from then on.
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import { decodeCursor, page } from '../lib/cursor.js';
import type { Coordinator } from '../coordination/coordinator.js';
import type { AuditSink } from '../audit/audit-log.js';
import type { UserRepository, UserRow } from '../store/user.repository.js';
import type { SessionRepository } from '../store/session.repository.js';
import type { SessionService } from '../sessions/session.service.js';
import type { SessionStatus, UserRole } from '../store/schema.js';

export interface AdminUser {
  id: string;
  email: string;
  role: UserRole;
  disabled: boolean;
  createdAt: string;
  lastSignInAt: string | null;
  liveSessions: number;
}

export interface AdminSession {
  id: string;
  user: { id: string; email: string };
  instance: { id: string; name: string; host: string };
  desktopEnvironment: string;
  display: number | null;
  status: SessionStatus;
  viewers: { id: string; node: string }[];
  startedAt: string | null;
  lastActivityAt: string;
  bytesToViewer: number;
  bytesFromViewer: number;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

export class AdminService {
  constructor(
    private readonly deps: {
      users: UserRepository;
      sessionRows: SessionRepository;
      sessions: Pick<SessionService, 'endByAdmin'>;
      coordinator: Coordinator;
      audit: AuditSink;
      clock: Clock;
    },
  ) {}

  async listUsers(filter: {
    q?: string;
    role?: UserRole;
    disabled?: boolean;
    cursor?: string;
    limit: number;
  }): Promise<Page<AdminUser>> {
    const after = decodeCursor(filter.cursor);
    const rows = await this.deps.users.list({
      q: filter.q,
      role: filter.role,
      disabled: filter.disabled,
      after: after && { createdAt: after.t, id: after.id },
      limit: filter.limit + 1,
    });
    const live = await this.deps.sessionRows.countLiveByUsers(rows.map((r) => r.id));
    return page(
      rows,
      filter.limit,
      (r) => ({ t: r.created_at, id: r.id }),
      (r) => toAdminUser(r, live.get(r.id) ?? 0),
    );
  }

  /**
   * Changes a role or disables/enables an account. Under a cluster-wide lock, so two admins demoting
   * each other at once cannot leave none: the last enabled admin can be neither demoted nor disabled.
   */
  async updateUser(id: string, patch: { role?: UserRole; disabled?: boolean }): Promise<AdminUser> {
    const row = await this.deps.coordinator.withLock('admin-roles', 10_000, 10_000, async () => {
      const current = await this.deps.users.findById(id);
      if (!current) throw new AppError('USER_NOT_FOUND');
      const losesAdmin =
        current.role === 'admin' &&
        current.disabled_at === null &&
        (patch.role === 'user' || patch.disabled === true);
      if (losesAdmin && (await this.deps.users.countActiveAdmins(id)) === 0) throw new AppError('LAST_ADMIN');
      const now = this.deps.clock.now();
      if (patch.role !== undefined && patch.role !== current.role) {
        await this.deps.users.setRole(id, patch.role);
        this.deps.audit.record('user.role-changed', {
          subjectUserId: id,
          targetId: id,
          details: { from: current.role, to: patch.role },
        });
      }
      const wasDisabled = current.disabled_at !== null;
      if (patch.disabled === true && !wasDisabled) {
        await this.deps.users.setDisabled(id, now);
        await this.deps.users.revokeAllForUser(id, now);
        this.deps.audit.record('user.disabled', { subjectUserId: id, targetId: id });
      } else if (patch.disabled === false && wasDisabled) {
        await this.deps.users.setDisabled(id, null);
        this.deps.audit.record('user.enabled', { subjectUserId: id, targetId: id });
      }
      return this.deps.users.findById(id);
    });
    if (!row) throw new AppError('USER_NOT_FOUND');
    // Outside the lock: every node closes the account's viewers (4001).
    if (patch.disabled === true) await this.deps.coordinator.publish({ type: 'sign-out-user', userId: id });
    const live = await this.deps.sessionRows.countLiveByUsers([id]);
    return toAdminUser(row, live.get(id) ?? 0);
  }

  async listSessions(filter: {
    userId?: string;
    instanceId?: string;
    cursor?: string;
    limit: number;
  }): Promise<Page<AdminSession>> {
    const after = decodeCursor(filter.cursor);
    const rows = await this.deps.sessionRows.listLive({
      userId: filter.userId,
      instanceId: filter.instanceId,
      after: after && { createdAt: after.t, id: after.id },
      limit: filter.limit + 1,
    });
    const viewers = await this.deps.coordinator.listViewers(rows.slice(0, filter.limit).map((r) => r.id));
    return page(
      rows,
      filter.limit,
      (r) => ({ t: r.created_at, id: r.id }),
      (r) => ({
        id: r.id,
        user: { id: r.user_id, email: r.user_email },
        instance: { id: r.instance_id, name: r.instance_name, host: r.instance_host },
        desktopEnvironment: r.desktop_environment,
        display: r.display,
        status: r.status,
        viewers: (viewers.get(r.id) ?? []).map((v) => ({ id: v.viewerId, node: v.nodeId })),
        startedAt: iso(r.started_at),
        lastActivityAt: new Date(r.last_activity_at).toISOString(),
        bytesToViewer: Number(r.bytes_to_viewer),
        bytesFromViewer: Number(r.bytes_from_viewer),
      }),
    );
  }

  endSession(id: string): Promise<void> {
    return this.deps.sessions.endByAdmin(id);
  }
}

function toAdminUser(r: UserRow, liveSessions: number): AdminUser {
  return {
    id: r.id,
    email: r.email,
    role: r.role,
    disabled: r.disabled_at !== null,
    createdAt: new Date(r.created_at).toISOString(),
    lastSignInAt: iso(r.last_sign_in_at),
    liveSessions,
  };
}
