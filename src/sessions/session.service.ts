// Desktop sessions: connect (start or reuse the user's desktop on an instance), tickets for the
// WebSocket, listing, ending, and the idle sweep. Cluster-safe through the coordinator: per-user and
// per-instance locks, viewer leases, and an "end session" command every node acts on.
//
// Starts go through a bounded queue (start-queue.ts): a burst is answered 503 OVERLOADED + Retry-After at
// once past the queue. A connect is answered within the queue's bound (DESKTOP_START_QUEUE_WAIT_MS) whatever
// it waits for (issue 9): when the bound comes first, it is answered OVERLOADED with a Retry-After of about
// the start's remaining time and the start goes on; the retry joins it here (or, on another gateway
// process, finds the started desktop in the store once the start's lock is released). The ticket is minted
// only when the desktop answers, so no ticket ages while its owner waits in line. Ending a session answers once the record is ended; the desktop is stopped in the
// background (desktop-stopper.ts), bounded, retried, and picked up by any node's sweep if this one dies.
import { AppError, isAppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { IdGenerator } from '../lib/ids.js';
import type { Logger } from '../observability/logger.js';
import type { Coordinator, GuestClaims } from '../coordination/coordinator.js';
import type { ShareRepository } from '../store/share.repository.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { SessionRepository, SessionRow } from '../store/session.repository.js';
import type { InstanceRow } from '../store/instance.repository.js';
import type { SessionStatus } from '../store/schema.js';
import type { InstanceService } from '../instances/instance.service.js';
import type { DesktopHandle, DesktopService } from '../desktop/desktop.service.js';
import type { SshTarget } from '../ssh/ssh-pool.js';
import { isDesktopEnvironmentId, type DesktopEnvironmentId } from '../desktop/desktop-environments.js';
import type { ViewerPolicyOverrides } from '../rfb/viewer-policy.js';
import { StartQueue, type StartQueueOptions, type StartRejection } from './start-queue.js';
import { DesktopStopper, type DesktopStopperOptions, type StopOutcome } from './desktop-stopper.js';
import type { AuditSink } from '../audit/audit-log.js';
import { decodeCursor, page } from '../lib/cursor.js';

export interface SessionServiceOptions {
  maxPerUser: number;
  idleTimeoutMs: number;
  ticketTtlMs: number;
  startTimeoutMs: number;
  /** Admission control for desktop starts (per process). */
  startQueue: StartQueueOptions;
  /** The background stop of ended sessions' desktops. */
  stops: DesktopStopperOptions;
}

export interface ConnectResult {
  created: boolean;
  sessionId: string;
  websocketUrl: string;
  display: number;
}

/** A desktop ready for its connect's answer: the ticket is minted by the answer, not before. */
interface ReadyDesktop {
  created: boolean;
  userId: string;
  sessionId: string;
  display: number;
}

/** A connect in progress in this process for one user and instance; later connects for the pair join it. */
interface PendingConnect {
  ready: Promise<ReadyDesktop>;
  /** performance.now() when its desktop start took a start slot (unset while it waits before that). */
  startedAt?: number;
  /** A connect has answered 201 with this desktop: others that join it answer 200 (it is no longer new). */
  delivered: boolean;
}

export interface PublicSession {
  id: string;
  instanceId: string;
  instanceName?: string;
  desktopEnvironment: string;
  display: number | null;
  status: SessionStatus;
  startedAt: string | null;
  createdAt: string;
  lastActivityAt: string;
  endedAt: string | null;
  endReason: string | null;
  viewers: number;
  /** Usage so far, as of the last activity flush (ACTIVITY_FLUSH_MS). */
  bytesToViewer: number;
  bytesFromViewer: number;
  viewerSeconds: number;
}

/** One past session on the sessions page (connection history). */
export interface SessionHistoryEntry {
  id: string;
  instanceId: string;
  /** null when the instance has since been deleted. */
  instanceName: string | null;
  desktopEnvironment: string;
  startedAt: string | null;
  endedAt: string | null;
  durationSeconds: number;
  endReason: string | null;
  bytesToViewer: number;
  bytesFromViewer: number;
  viewerSeconds: number;
}

/** What the relay needs to reach a session's desktop. */
export interface SessionEndpoint {
  session: SessionRow;
  target: SshTarget;
  handle: DesktopHandle;
  /**
   * What this ticket's viewer is held to beyond the configured caps (it can only tighten them): e.g.
   * `{ viewOnly: true }` for a guest of a view-only share. The owner's own tickets carry none.
   */
  policy?: ViewerPolicyOverrides;
  /** Set when the viewer is a share's guest (not the owner). */
  guest?: GuestClaims;
}

export class SessionService {
  constructor(
    private readonly deps: {
      sessions: SessionRepository;
      instances: InstanceService;
      desktops: Pick<DesktopService, 'start' | 'stop' | 'isAlive'>;
      coordinator: Coordinator;
      secrets: SecretBox;
      clock: Clock;
      newId: IdGenerator;
      logger: Logger;
      onStartRejected?: (reason: StartRejection) => void;
      onStopOutcome?: (outcome: StopOutcome) => void;
      audit: AuditSink;
      /** To refuse a guest's ticket whose share was revoked or expired since it was issued. */
      shares?: Pick<ShareRepository, 'findById'>;
    },
    private readonly options: SessionServiceOptions,
  ) {
    this.startQueue = new StartQueue(options.startQueue, { onRejected: deps.onStartRejected });
    this.stopper = new DesktopStopper(
      {
        sessions: deps.sessions,
        coordinator: deps.coordinator,
        clock: deps.clock,
        logger: deps.logger,
        stop: (row) => this.stopDesktopOf(row),
        onOutcome: (outcome) => deps.onStopOutcome?.(outcome),
      },
      options.stops,
    );
  }

  /** Connects in progress in this process, by user and instance (`connect` joins them). */
  private readonly connects = new Map<string, PendingConnect>();
  /** Desktop starts of this process: running, and waiting in line. */
  readonly startQueue: StartQueue;
  /** Desktop stops of ended sessions, in the background. */
  readonly stopper: DesktopStopper;

  /**
   * Starts (or reuses) the user's desktop on the instance. A new start waits for a slot in the start
   * queue; an aborted `signal` (the client went away) takes it out of the line. Answered within the
   * queue's bound (`maxWaitMs`) of `receivedAt` (when the request arrived, `performance.now()` time;
   * default now) whatever the start, the locks or the store do: see `answer`. What the request waited
   * before the handler ran (authentication behind the hash threads, a busy loop) comes off the bound.
   */
  async connect(
    userId: string,
    instanceId: string,
    desktopEnvironment: string,
    { signal, receivedAt = performance.now() }: { signal?: AbortSignal; receivedAt?: number } = {},
  ): Promise<ConnectResult> {
    if (!isDesktopEnvironmentId(desktopEnvironment)) throw new AppError('DESKTOP_ENVIRONMENT_UNKNOWN');
    const answerBy = receivedAt + this.options.startQueue.maxWaitMs;
    const key = `${userId}:${instanceId}`;
    let pending = this.connects.get(key);
    if (!pending) {
      const entry: PendingConnect = {
        delivered: false,
        ready: this.connectOnce(userId, instanceId, desktopEnvironment, signal, answerBy, () => {
          entry.startedAt = performance.now();
        }),
      };
      const done = () => {
        if (this.connects.get(key) === entry) this.connects.delete(key);
      };
      entry.ready.then(done, done);
      this.connects.set(key, entry);
      pending = entry;
    }
    return this.answer(pending, answerBy);
  }

  /** Resolves once the connects in progress now (and their starts, answered or not) have settled (tests). */
  async connectsSettled(): Promise<void> {
    await Promise.allSettled([...this.connects.values()].map((c) => c.ready));
  }

  /**
   * The answer of one connect: the desktop with a fresh ticket once `pending` has it, or at `answerBy`
   * 503 OVERLOADED with a Retry-After (about the start's remaining time once it runs), while `pending`
   * goes on: a start is not abandoned because its answer could not wait for it.
   */
  private async answer(pending: PendingConnect, answerBy: number): Promise<ConnectResult> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(this.answerDeadline(pending)),
        Math.max(0, answerBy - performance.now()),
      );
    });
    try {
      const ready = await Promise.race([pending.ready, deadline]);
      const websocketUrl = await Promise.race([this.websocketUrl(ready.userId, ready.sessionId), deadline]);
      const created = ready.created && !pending.delivered;
      if (created) pending.delivered = true;
      return { created, sessionId: ready.sessionId, websocketUrl, display: ready.display };
    } finally {
      clearTimeout(timer);
    }
  }

  private answerDeadline(pending: PendingConnect): AppError {
    this.deps.onStartRejected?.('answer_deadline');
    const starting = pending.startedAt !== undefined;
    return new AppError('OVERLOADED', {
      message: starting
        ? 'Your desktop is still starting; ask again after Retry-After'
        : 'Too many desktops are starting right now; retry shortly',
      details: {
        retryAfterSeconds: starting
          ? this.startQueue.remainingStartSeconds(performance.now() - pending.startedAt!)
          : this.startQueue.retryAfterSeconds(),
      },
    });
  }

  /**
   * The work of a connect, which may outlive its answer: under the per-user-and-instance lock (held until
   * the start is recorded, so a connect on another gateway process waits for it, then reuses the desktop),
   * reuse the live desktop or start one. Each wait before the start is bounded by what is left of
   * `answerBy`; the start itself by DESKTOP_START_TIMEOUT_MS.
   */
  private async connectOnce(
    userId: string,
    instanceId: string,
    desktopEnvironment: DesktopEnvironmentId,
    signal: AbortSignal | undefined,
    answerBy: number,
    onStarting: () => void,
  ): Promise<ReadyDesktop> {
    // Answers INSTANCE_NOT_FOUND without waiting for the lock; read again under it, where an instance
    // delete (which takes the same lock) may have run meanwhile.
    let instance = await this.deps.instances.getRow(userId, instanceId);
    try {
      return await this.deps.coordinator.withLock(
        connectLockKey(userId, instanceId),
        CONNECT_LOCK_LEASE_MS,
        timeLeft(answerBy),
        async () => {
          instance = await this.deps.instances.getRow(userId, instanceId);
          const live = await this.deps.sessions.findLive(userId, instanceId);
          if (live) {
            const reused = await this.tryReuse(live, instance);
            if (reused) return reused;
          }
          const target = await this.deps.instances.target(instance);
          // The session slot is taken only once a start slot is: a connect turned away leaves nothing behind.
          return await this.startQueue.run(
            `${target.host}:${target.port}`,
            async () => {
              onStarting();
              const session = await this.reserve(userId, instance, desktopEnvironment, answerBy);
              return this.startDesktop(session, instance, target, desktopEnvironment);
            },
            signal,
            timeLeft(answerBy),
          );
        },
      );
    } catch (e) {
      this.deps.instances.noteHostKeyMismatch(instance, e);
      throw e;
    }
  }

  /** A fresh single-use ticket for an existing, live session (reconnecting viewers). */
  async ticket(userId: string, sessionId: string): Promise<{ websocketUrl: string }> {
    const session = await this.deps.sessions.findOwned(userId, sessionId);
    if (!session) throw new AppError('SESSION_NOT_FOUND');
    if (session.status === 'ended') throw new AppError('SESSION_ENDED');
    return { websocketUrl: await this.websocketUrl(userId, session.id) };
  }

  async listActive(userId: string): Promise<PublicSession[]> {
    const rows = await this.deps.sessions.listLiveByUser(userId);
    const viewers = await this.deps.coordinator.countViewers(rows.map((r) => r.id));
    return rows.map((r) => ({
      ...toPublicSession(r, viewers.get(r.id) ?? 0),
      instanceName: r.instance_name,
    }));
  }

  /** The user's ended sessions, newest first, a page at a time (cursor: the last one's end). */
  async history(
    userId: string,
    cursor: string | undefined,
    limit: number,
  ): Promise<{ items: SessionHistoryEntry[]; nextCursor: string | null }> {
    const before = decodeCursor(cursor);
    const rows = await this.deps.sessions.listEndedByUser(
      userId,
      before && { endedAt: before.t, id: before.id },
      limit + 1,
    );
    return page(
      rows,
      limit,
      (r) => ({ t: r.ended_at ?? 0, id: r.id }),
      (r) => ({
        id: r.id,
        instanceId: r.instance_id,
        instanceName: r.instance_name,
        desktopEnvironment: r.desktop_environment,
        startedAt: r.started_at === null ? null : new Date(r.started_at).toISOString(),
        endedAt: r.ended_at === null ? null : new Date(r.ended_at).toISOString(),
        durationSeconds:
          r.started_at === null || r.ended_at === null ? 0 : Math.round((r.ended_at - r.started_at) / 1000),
        endReason: r.end_reason,
        bytesToViewer: Number(r.bytes_to_viewer),
        bytesFromViewer: Number(r.bytes_from_viewer),
        viewerSeconds: Math.round(Number(r.viewer_seconds)),
      }),
    );
  }

  async get(userId: string, sessionId: string): Promise<PublicSession> {
    const row = await this.deps.sessions.findOwned(userId, sessionId);
    if (!row) throw new AppError('SESSION_NOT_FOUND');
    const viewers = await this.deps.coordinator.countViewers([row.id]);
    return toPublicSession(row, viewers.get(row.id) ?? 0);
  }

  /** The owner ends a session: viewers closed, desktop stopped on the instance, display freed. */
  async disconnect(userId: string, sessionId: string): Promise<void> {
    const row = await this.deps.sessions.findOwned(userId, sessionId);
    if (!row) throw new AppError('SESSION_NOT_FOUND');
    if (row.status === 'ended') this.alreadyEnded(row);
    await this.end(row, 'disconnected');
  }

  /** An admin ends anyone's session: as the owner's disconnect, with reason `admin`. */
  async endByAdmin(sessionId: string): Promise<void> {
    const row = await this.deps.sessions.findById(sessionId);
    if (!row) throw new AppError('SESSION_NOT_FOUND');
    if (row.status === 'ended') this.alreadyEnded(row);
    await this.end(row, 'admin');
  }

  /**
   * An end asked again of a session already ended: SESSION_ENDED, with its desktop's stop, when one is
   * due by now, taken up here. That is how a client repeats an end whose answer it lost (the store or
   * Redis failed after the session was ended): the first try may have ended it without getting as far as
   * queueing its stop, which would otherwise wait for the next sweep.
   */
  private alreadyEnded(row: SessionRow): never {
    if (row.stop_due_at !== null && row.stop_due_at <= this.deps.clock.now()) this.stopper.enqueue(row.id);
    throw new AppError('SESSION_ENDED');
  }

  /**
   * Deletes the instance with every desktop of it stopped first. Its sessions go with it (a foreign key
   * cascade), and with them what any retry or sweep could find, so nothing may still be started or left
   * to stop once the row is gone:
   * - Under the instance's connect lock, the one every connect (in any gateway process) holds from its
   *   look for a live session until its start is recorded: a start in flight finishes first (its session
   *   is then ended and stopped here like any live one), and a connect that comes meanwhile waits and
   *   then finds the instance gone. The wait is bounded (`deleteWaitMs`); past it the delete answers
   *   BUSY and deletes nothing.
   * - Then the live session is ended and every desktop of the instance still to be stopped is stopped on
   *   the request, side by side, each bounded by the stop timeout: the live session's, and those of
   *   sessions ended before whose background stop has not finished (a disconnect just before, a retry
   *   waiting out its backoff, a try another gateway runs). A stop that cannot reach the machine is logged
   *   and the delete goes on, as it always did for the live session: the owner asked for the instance to
   *   go, and an unreachable machine must not make it undeletable.
   * A start that still meets its session ended or gone (the lock lost in a Redis failover, or the rows
   * removed another way) stops its own desktop with the target it holds: see `startDesktop`.
   */
  async deleteInstance(userId: string, instanceId: string): Promise<void> {
    await this.deps.instances.getRow(userId, instanceId);
    const key = connectLockKey(userId, instanceId);
    await this.deps.coordinator.withLock(key, CONNECT_LOCK_LEASE_MS, this.deleteWaitMs(), async () => {
      await this.endAllForInstance(userId, instanceId);
      await this.deps.instances.delete(userId, instanceId);
    });
  }

  private async endAllForInstance(userId: string, instanceId: string): Promise<void> {
    const live = await this.deps.sessions.findLive(userId, instanceId);
    if (live) await this.end(live, 'instance-deleted', { stopNow: true });
    const pending = await this.deps.sessions.listStopsPendingForInstance(instanceId, MAX_STOPS_ON_DELETE);
    await Promise.all(
      pending.map((row) =>
        this.stopper.runNow(row).catch((e: unknown) => {
          this.deps.logger.warn(
            { err: e, sessionId: row.id, instanceId, display: row.display },
            'could not stop the desktop of an ended session before its instance was deleted',
          );
        }),
      ),
    );
  }

  /**
   * How long an instance delete waits for the connect lock: a connect holds it for its wait in line and
   * its start (the queue's bound and the start timeout), and one whose gateway died keeps it until its
   * lease lapses. Past that the holder is beyond its own bounds.
   */
  private deleteWaitMs(): number {
    return this.options.startQueue.maxWaitMs + this.options.startTimeoutMs + CONNECT_LOCK_LEASE_MS;
  }

  /** Redeems a WebSocket ticket and returns where the viewer must be connected. */
  async resolveTicket(ticket: string): Promise<SessionEndpoint> {
    const claims = await this.deps.coordinator.redeemTicket(ticket);
    if (!claims) throw new AppError('TICKET_INVALID');
    const session = await this.deps.sessions.findOwned(claims.userId, claims.sessionId);
    if (!session) throw new AppError('TICKET_INVALID');
    if (session.status !== 'active') throw new AppError('SESSION_ENDED');
    const guest = claims.guest;
    if (guest) {
      const share = await this.deps.shares?.findById(guest.shareId);
      if (!share || share.session_id !== session.id || share.revoked_at !== null)
        throw new AppError('SHARE_REVOKED');
      if (share.expires_at <= this.deps.clock.now()) throw new AppError('SHARE_EXPIRED');
    }
    const instance = await this.deps.instances.getRow(claims.userId, session.instance_id);
    return {
      session,
      target: await this.deps.instances.target(instance),
      handle: this.handleOf(session),
      ...(guest ? { guest, policy: { viewOnly: guest.mode === 'view' } } : {}),
    };
  }

  /** Of these sessions, those that are ended or gone (a node's viewers that missed the end command). */
  endedAmong(sessionIds: readonly string[]): Promise<string[]> {
    return this.deps.sessions.listEndedAmong(sessionIds);
  }

  /**
   * Ends every session that has had no live viewer (anywhere in the cluster) and no activity for the
   * idle timeout. A per-session lock makes exactly one node act on each.
   */
  async sweepIdle(pendingActivity: ReadonlyMap<string, number> = new Map()): Promise<number> {
    const now = this.deps.clock.now();
    const cutoff = now - this.options.idleTimeoutMs;
    let ended = 0;
    const candidates = await this.deps.sessions.listIdleCandidates(cutoff, 500);
    const viewers = await this.deps.coordinator.countViewers(candidates.map((c) => c.id));
    for (const s of candidates) {
      if ((viewers.get(s.id) ?? 0) > 0) continue;
      if ((pendingActivity.get(s.id) ?? 0) >= cutoff) continue;
      const lock = await this.deps.coordinator.tryLock(`sweep:${s.id}`, 60_000);
      if (!lock) continue;
      try {
        const fresh = await this.deps.sessions.findById(s.id);
        if (fresh?.status !== 'active' || fresh.last_activity_at >= cutoff) continue;
        await this.end(fresh, 'idle-timeout', { actor: 'system' });
        ended++;
      } finally {
        await this.deps.coordinator.unlock(lock);
      }
    }
    // Sessions left 'starting' by a gateway that died mid-start never got a desktop handle.
    for (const s of await this.deps.sessions.listStaleStarting(now - this.options.startTimeoutMs * 3, 100)) {
      if (await this.markEnded(s, 'start-abandoned', now, { actor: 'system' })) ended++;
    }
    // Desktop stops that are due and nobody runs: left by a gateway that died or drained, or retries.
    await this.stopper.sweep();
    return ended;
  }

  private async tryReuse(live: SessionRow, instance: InstanceRow): Promise<ReadyDesktop | null> {
    if (live.status === 'active') {
      let alive = false;
      try {
        alive = await this.deps.desktops.isAlive(
          await this.deps.instances.target(instance),
          this.handleOf(live),
        );
      } catch (e) {
        // The instance could not be asked (down, key mismatch…): say so rather than start a 2nd desktop.
        if (isAppError(e)) throw e;
        throw new AppError('SSH_UNREACHABLE', { cause: e });
      }
      if (alive) {
        this.deps.audit.record('session.reused', {
          subjectUserId: live.user_id,
          targetId: live.id,
          details: { instanceId: live.instance_id, display: live.display },
        });
        return { created: false, userId: live.user_id, sessionId: live.id, display: live.display! };
      }
    }
    // Its desktop is gone (instance rebooted, someone killed it, or a start was abandoned).
    await this.markEnded(live, 'desktop-gone', this.deps.clock.now());
    await this.deps.coordinator.publish({ type: 'end-session', sessionId: live.id, reason: 'desktop-gone' });
    return null;
  }

  /** Takes one of the user's session slots, atomically across the cluster (lock, then the database's check). */
  private async reserve(
    userId: string,
    instance: InstanceRow,
    desktopEnvironment: string,
    answerBy: number,
  ): Promise<SessionRow> {
    const wait = Math.min(10_000, timeLeft(answerBy));
    return this.deps.coordinator.withLock(`user-sessions:${userId}`, 10_000, wait, async () => {
      if ((await this.deps.sessions.countLive(userId)) >= this.options.maxPerUser) {
        throw new AppError('SESSION_LIMIT_REACHED');
      }
      const now = this.deps.clock.now();
      const row: SessionRow = {
        id: this.deps.newId(),
        user_id: userId,
        instance_id: instance.id,
        desktop_environment: desktopEnvironment,
        status: 'starting',
        display: null,
        transport: null,
        socket_path: null,
        vnc_port: null,
        vnc_password_ciphertext: null,
        vnc_password_key_id: null,
        desktop_pid: null,
        created_at: now,
        started_at: null,
        last_activity_at: now,
        ended_at: null,
        end_reason: null,
        bytes_to_viewer: 0,
        bytes_from_viewer: 0,
        viewer_seconds: 0,
        stop_due_at: null,
        stop_attempts: 0,
      };
      // The lock keeps the common case cheap and ordered; the database's own check is what holds
      // the limit if a Redis failover lost the lock and granted it twice (docs/coordination.md).
      if (!(await this.deps.sessions.createWithinLimit(row, this.options.maxPerUser))) {
        throw new AppError('SESSION_LIMIT_REACHED');
      }
      return row;
    });
  }

  private async startDesktop(
    session: SessionRow,
    instance: InstanceRow,
    target: SshTarget,
    desktopEnvironment: DesktopEnvironmentId,
  ): Promise<ReadyDesktop> {
    let handle: DesktopHandle;
    try {
      // Displays are per machine, whoever asks: the desktop service reserves each display it tries
      // cluster-wide (see app.ts), so starts on one instance run side by side.
      const started = await this.deps.desktops.start(target, desktopEnvironment);
      handle = started.handle;
      if (instance.host_key_fingerprint === null) {
        await this.deps.instances
          .pinHostKey(instance, started.hostKeyFingerprint)
          .catch(async (e: unknown) => {
            await this.deps.desktops.stop(target, started.handle).catch(() => undefined);
            throw e;
          });
      }
    } catch (e) {
      await this.markEnded(session, 'start-failed', this.deps.clock.now(), {
        extra: { error: isAppError(e) ? e.code : 'INTERNAL' },
      });
      throw e;
    }
    const now = this.deps.clock.now();
    const sealed =
      handle.transport === 'tcp' ? this.deps.secrets.seal(handle.vncPassword, `session:${session.id}`) : null;
    const desktop = {
      display: handle.display,
      transport: handle.transport,
      socket_path: handle.transport === 'unix' ? handle.socketPath : null,
      vnc_port: handle.transport === 'tcp' ? handle.port : null,
      vnc_password_ciphertext: sealed?.ciphertext ?? null,
      vnc_password_key_id: sealed?.keyId ?? null,
      desktop_pid: handle.pid,
    };
    if (
      !(await this.recordStarted(session, target, handle, {
        ...desktop,
        started_at: now,
        last_activity_at: now,
      }))
    ) {
      await this.stopUnrecorded(session, target, handle, desktop, now);
      throw new AppError('SESSION_ENDED');
    }
    this.deps.audit.record('session.started', {
      subjectUserId: session.user_id,
      targetId: session.id,
      details: {
        instanceId: instance.id,
        instanceName: instance.name,
        desktopEnvironment,
        display: handle.display,
        transport: handle.transport,
      },
    });
    return { created: true, userId: session.user_id, sessionId: session.id, display: handle.display };
  }

  /**
   * A start whose session was ended (disconnected, swept) or is gone (its instance or account deleted:
   * the rows cascade) while it ran stops the desktop it started itself, with the target it still holds:
   * once the rows are gone no background stop or sweep could find that desktop, nor the instance's
   * credentials, and a delete on another gateway may take them at any moment. The stop is put on record
   * as due first, so that if this stop fails (or this process dies) the background stop and the sweeps
   * take it up while the row lasts.
   */
  private async stopUnrecorded(
    session: SessionRow,
    target: SshTarget,
    handle: DesktopHandle,
    desktop: Parameters<SessionRepository['update']>[1],
    now: number,
  ): Promise<void> {
    const log = { sessionId: session.id, instanceId: session.instance_id, display: handle.display };
    const onRecord = await this.deps.sessions
      .update(session.id, { ...desktop, stop_due_at: now, stop_attempts: 0 })
      .then(
        () => true,
        (e: unknown) => {
          this.deps.logger.warn(
            { ...log, err: e },
            'could not put the stop of an unrecorded desktop on record',
          );
          return false;
        },
      );
    try {
      await this.deps.desktops.stop(target, handle);
    } catch (e) {
      this.deps.logger.warn(
        { ...log, err: e },
        'could not stop the desktop of a session ended or deleted while it started; left to the background stop (it may still run on the instance if the session is gone)',
      );
      if (onRecord) this.stopper.enqueue(session.id);
      return;
    }
    if (onRecord) await this.deps.sessions.setStopDue(session.id, null, 0).catch(() => undefined);
  }

  /**
   * Records a started desktop: false when the session was ended meanwhile (nothing written). When that
   * write fails (the store went away mid-connect), the desktop is stopped again: the caller gets an
   * error, so nobody would ever use or end it.
   */
  private async recordStarted(
    session: SessionRow,
    target: SshTarget,
    handle: DesktopHandle,
    patch: Parameters<SessionRepository['activate']>[1],
  ): Promise<boolean> {
    try {
      return await this.deps.sessions.activate(session.id, patch);
    } catch (e) {
      await this.deps.desktops.stop(target, handle).catch((stopError: unknown) => {
        this.deps.logger.warn(
          { err: stopError, sessionId: session.id },
          'could not stop a desktop whose start was not recorded',
        );
      });
      throw e;
    }
  }

  /**
   * Ends the session (viewers closed everywhere) with its desktop's stop on record as due, and has it
   * stopped in the background; with `stopNow` the caller runs the stop itself (deleteInstance).
   */
  private async end(
    row: SessionRow,
    reason: string,
    opts: { stopNow?: boolean; actor?: string } = {},
  ): Promise<void> {
    const now = this.deps.clock.now();
    // A session read while 'starting' may have had its desktop recorded since (its connect answered with
    // it): then this end's own write puts the stop on record. If not, its start finds the session ended
    // and stops that desktop itself (stopUnrecorded).
    const stopDesktop =
      row.status === 'active' && row.display !== null
        ? true
        : row.status === 'starting'
          ? 'if-started'
          : false;
    const stopInBackground = stopDesktop !== false && !opts.stopNow;
    try {
      if (!(await this.markEnded(row, reason, now, { actor: opts.actor, stopDesktop }))) return;
      await this.deps.coordinator.publish({ type: 'end-session', sessionId: row.id, reason });
    } catch (e) {
      // The end may be on record though this failed (the write committed and its answer was lost, or the
      // publish after it failed): queued, the stop runs if it is due once the store answers (the stopper
      // reads the row and retries its own bookkeeping), and does nothing if the session was not ended.
      if (stopInBackground) this.stopper.enqueue(row.id);
      throw e;
    }
    if (stopInBackground) this.stopper.enqueue(row.id);
  }

  /**
   * Marks a session ended (false when it already was) and audits it. The actor is the caller of the
   * current request, or `system` for the sweeper; usage is as of the last activity flush.
   */
  private async markEnded(
    row: SessionRow,
    reason: string,
    now: number,
    opts: { actor?: string; stopDesktop?: boolean | 'if-started'; extra?: Record<string, string> } = {},
  ): Promise<boolean> {
    if (!(await this.deps.sessions.markEnded(row.id, reason, now, opts.stopDesktop ?? false))) return false;
    const usage = (await this.deps.sessions.findById(row.id).catch(() => undefined)) ?? row;
    this.deps.audit.record('session.ended', {
      ...(opts.actor === undefined ? {} : { actor: opts.actor }),
      subjectUserId: row.user_id,
      targetId: row.id,
      details: {
        instanceId: row.instance_id,
        reason,
        durationSeconds: row.started_at === null ? 0 : Math.round((now - row.started_at) / 1000),
        bytesToViewer: Number(usage.bytes_to_viewer),
        bytesFromViewer: Number(usage.bytes_from_viewer),
        ...opts.extra,
      },
    });
    return true;
  }

  private async stopDesktopOf(row: SessionRow): Promise<void> {
    const instance = await this.deps.instances.getRow(row.user_id, row.instance_id);
    await this.deps.desktops.stop(await this.deps.instances.target(instance), this.handleOf(row));
  }

  private handleOf(row: SessionRow): DesktopHandle {
    if (row.transport === 'tcp') {
      return {
        display: row.display!,
        transport: 'tcp',
        port: row.vnc_port!,
        pid: row.desktop_pid ?? 0,
        vncPassword: this.deps.secrets.open(
          { keyId: row.vnc_password_key_id!, ciphertext: row.vnc_password_ciphertext! },
          `session:${row.id}`,
        ),
      };
    }
    return {
      display: row.display!,
      transport: 'unix',
      socketPath: row.socket_path!,
      pid: row.desktop_pid ?? 0,
    };
  }

  private async websocketUrl(userId: string, sessionId: string): Promise<string> {
    const ticket = await this.deps.coordinator.issueTicket({ userId, sessionId }, this.options.ticketTtlMs);
    return `/vnc?ticket=${ticket}`;
  }
}

/** The lock a connect holds for its user and instance (and an instance delete takes). */
function connectLockKey(userId: string, instanceId: string): string {
  return `connect:${userId}:${instanceId}`;
}

/**
 * Pending stops an instance delete runs at most. An instance has few displays (VNC_DISPLAY_MIN..MAX), so
 * far fewer desktops can be waiting for their stop; the bound only keeps the request's cost bounded.
 */
const MAX_STOPS_ON_DELETE = 100;

/**
 * The per-user-and-instance connect lock is a lease renewed while its start runs (however long that is,
 * up to DESKTOP_START_TIMEOUT_MS): this is how long a gateway that died mid-start keeps that user's
 * connects to the instance waiting (they are answered OVERLOADED meanwhile). It was the whole start's
 * bound plus 20 s (~45 s) before: the soak saw one API worker refused for 36 s after a gateway kill.
 */
const CONNECT_LOCK_LEASE_MS = 15_000;

/** Milliseconds left until `deadline` (performance.now() time), never below 0. */
function timeLeft(deadline: number): number {
  return Math.max(0, deadline - performance.now());
}

function toPublicSession(r: SessionRow, viewers: number): PublicSession {
  const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
  return {
    id: r.id,
    instanceId: r.instance_id,
    desktopEnvironment: r.desktop_environment,
    display: r.display,
    status: r.status,
    createdAt: new Date(r.created_at).toISOString(),
    startedAt: iso(r.started_at),
    lastActivityAt: new Date(r.last_activity_at).toISOString(),
    endedAt: iso(r.ended_at),
    endReason: r.end_reason,
    viewers,
    bytesToViewer: Number(r.bytes_to_viewer),
    bytesFromViewer: Number(r.bytes_from_viewer),
    viewerSeconds: Math.round(Number(r.viewer_seconds)),
  };
}
