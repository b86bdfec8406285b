// Owns the HTTP `upgrade` event and every viewer on this process: `/vnc?ticket=…` is checked
// (path, Origin, single-use ticket, per-user connect limit) before the WebSocket is accepted, then
// the viewer is relayed into an SSH channel to its desktop. Also: one heartbeat timer for all viewers
// (ping, missed pongs, RTT), viewer leases in the coordinator, activity notes, cluster commands
// ("end session X", "sign user Y out", "share Z revoked") and draining on shutdown. A share's guest is a
// viewer like the owner's, with the share's mode as its policy (view-only: the parser drops input,
// clipboard and resize) and closed (4002) when the share is revoked or expires. Each viewer's policy is decided here,
// once, at attach (the configured caps narrowed by the session's own, see rfb/viewer-policy.ts), and
// each viewer's usage (bytes each way, seconds attached) is handed to the activity buffer when it
// flushes and when the viewer leaves — never per chunk.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { AppError, isAppError, errorCatalogue, shuttingDown } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type { Logger } from '../observability/logger.js';
import type { ClusterCommand, Coordinator, GuestClaims, ViewerLease } from '../coordination/coordinator.js';
import type { DesktopService } from '../desktop/desktop.service.js';
import type { SessionEndpoint, SessionService } from '../sessions/session.service.js';
import type { ActivityBuffer } from '../sessions/activity-buffer.js';
import { tightenPolicy, type ViewerPolicy } from '../rfb/viewer-policy.js';
import { CloseCode } from './close-codes.js';
import { Relay, type RelayOptions } from './relay.js';
import { LeaseRenewal } from './lease-renewal.js';
import { ViewerHandshake } from './rfb-viewer-handshake.js';
import type { AuditSink } from '../audit/audit-log.js';
import { clientAddress, type ProxyTrust } from '../http/client-address.js';

export interface VncGatewayOptions extends Omit<RelayOptions, 'maxCutTextBytes'> {
  /** Largest WebSocket message; also the largest clipboard text a viewer may send. */
  maxPayloadBytes: number;
  pingIntervalMs: number;
  missedPongsAllowed: number;
  nodeId: string;
  /** Every viewer's policy before the session's own narrows it (from the configured caps). */
  basePolicy: ViewerPolicy;
  /** TRUST_PROXY, compiled: which hops' X-Forwarded-For to believe for the viewer's address (unset: none). */
  proxyTrust?: ProxyTrust;
  /** SESSION_MAX_VIEWERS: a guest's viewer is added only below it (atomically, cluster-wide); unset: no cap. */
  maxViewers?: number;
}

export interface VncGatewayHooks {
  /** Throws AppError('RATE_LIMITED') when the user opens WebSockets too fast. */
  consumeWsConnect?(userId: string): Promise<void>;
  onViewerRtt?(ms: number): void;
  onViewerClosed?(code: number): void;
  /** One viewer's desktop→viewer rate over one usage sample (an activity flush interval), kbit/s. */
  onViewerKbps?(kbps: number): void;
}

/** The store's view of viewers' accounts and shares (user and share repositories). */
export interface ViewerStanding {
  /** Per user id, viewers attached at or before this time close: Infinity for a disabled or deleted account. */
  closedBefore(userIds: readonly string[]): Promise<Map<string, number>>;
  /** Of these share ids, those revoked or gone. */
  revokedShares(shareIds: readonly string[]): Promise<string[]>;
  /** Of these guests' viewer ids, those their session's owner removed: viewer id → session id. */
  removedGuests(viewerIds: readonly string[]): Promise<Map<string, string>>;
}

interface Viewer {
  id: string;
  /** The session's owner (usage is the owner's). */
  userId: string;
  /** Set for a share's guest. */
  guest: GuestClaims | null;
  /** Closes a guest when its share expires. */
  expiry: NodeJS.Timeout | null;
  sessionId: string;
  instanceId: string;
  ws: WebSocket;
  relay: Relay | null;
  ip: string | null;
  attachedAt: number;
  missedPongs: number;
  pingSentAt: number;
  bytesSeen: number;
  /** What was already handed to the activity buffer as usage, and when. */
  sampledToViewer: number;
  sampledFromViewer: number;
  sampledAt: number;
}

/** Samples shorter than this are added to the totals but not observed as a rate (too noisy). */
const MIN_RATE_SAMPLE_MS = 1000;

const trustNoProxy: ProxyTrust = () => false;
const TICKET_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
const LEASE_RENEW_MS = 15_000;
/** Lease renewals in flight at once (lease-renewal.ts): a round of 10,000 viewers is ~157 round trips deep. */
const LEASE_RENEW_CONCURRENCY = 64;
/**
 * A revoked share is remembered this long, so a guest whose ticket was checked just before the revoke
 * and who attaches just after the command passed is still closed (longer than any ticket lives).
 */
const REVOKED_MEMORY_MS = 15 * 60_000;

export class VncGateway {
  private readonly wss: WebSocketServer;
  private readonly viewers = new Set<Viewer>();
  private readonly bySession = new Map<string, Set<Viewer>>();
  private readonly revokedShares = new Map<string, number>();
  /** Leases of viewers that left while Redis could not be reached: viewerId → sessionId. */
  private readonly staleLeases = new Map<string, string>();
  private heartbeat: NodeJS.Timeout | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  private readonly leaseRenewal = new LeaseRenewal<Viewer>(
    (v) => this.deps.coordinator.putViewer(this.leaseOf(v), LEASE_RENEW_MS * 3),
    // A viewer that detached during the round is not given its lease back.
    { concurrency: LEASE_RENEW_CONCURRENCY, stillWanted: (v) => this.viewers.has(v) },
  );
  private draining = false;
  private readonly relayOptions: RelayOptions;
  /** Bytes of relays that already ended; live relays are added on read. */
  private closedBytesToViewer = 0;
  private closedBytesFromViewer = 0;
  private closedBudgetPauses = 0;

  constructor(
    private readonly deps: {
      sessions: Pick<SessionService, 'resolveTicket' | 'endedAmong'>;
      desktops: Pick<DesktopService, 'openStream'>;
      coordinator: Coordinator;
      activity: ActivityBuffer;
      clock: Clock;
      logger: Logger;
      isOriginAllowed: (origin: string, host: string | undefined) => boolean;
      hooks?: VncGatewayHooks;
      audit?: AuditSink;
      /** What the store says of viewers' accounts and shares, to catch up commands missed on pub/sub. */
      standing?: ViewerStanding;
    },
    private readonly options: VncGatewayOptions,
  ) {
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: options.maxPayloadBytes,
      clientTracking: false,
      // noVNC asks for 'binary'; clients that ask for nothing get raw binary frames all the same.
      handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : false),
    });
    deps.coordinator.onCommand((c) => this.onCommand(c));
    // One options object for every relay, not a copy per viewer (issue 9).
    this.relayOptions = Object.freeze({
      highWaterBytes: options.highWaterBytes,
      stallTimeoutMs: options.stallTimeoutMs,
      preOpenBufferBytes: options.preOpenBufferBytes,
      maxCutTextBytes: options.maxPayloadBytes,
      ...(options.now ? { now: options.now } : {}),
      onInternalError: (e: unknown, relay: Relay) => {
        // A bug, so rare: the viewer is found by its relay.
        for (const v of this.viewers)
          if (v.relay === relay)
            return this.viewerLog(v).error({ err: e }, 'relay failed on a viewer message');
        this.deps.logger.error({ err: e }, 'relay failed on a viewer message');
      },
    });
  }

  start(): void {
    this.heartbeat = setInterval(() => this.beat(), this.options.pingIntervalMs);
    this.heartbeat.unref();
    this.leaseTimer = setInterval(() => void this.renewLeases(), LEASE_RENEW_MS);
    this.leaseTimer.unref();
  }

  get viewerCount(): number {
    return this.viewers.size;
  }

  stats(): {
    viewers: number;
    sessions: number;
    bytesToViewer: number;
    bytesFromViewer: number;
    budgetPauses: number;
  } {
    let toViewer = this.closedBytesToViewer;
    let fromViewer = this.closedBytesFromViewer;
    let budgetPauses = this.closedBudgetPauses;
    for (const v of this.viewers) {
      // A relay that ended is in the closed totals already (its viewer may not have detached yet).
      if (!v.relay || v.relay.closed) continue;
      toViewer += v.relay.bytesToViewer;
      fromViewer += v.relay.bytesFromViewer;
      budgetPauses += v.relay.budgetPauses;
    }
    return {
      viewers: this.viewers.size,
      sessions: this.bySession.size,
      bytesToViewer: toViewer,
      bytesFromViewer: fromViewer,
      budgetPauses,
    };
  }

  /** The server's 'upgrade' listener. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', noop);
    void this.upgrade(req, socket, head).catch((e: unknown) => {
      this.deps.logger.error({ err: e }, 'upgrade failed');
      rejectUpgrade(socket, new AppError('INTERNAL'));
    });
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://gateway.invalid');
    if (url.pathname !== '/vnc') return rejectUpgrade(socket, new AppError('ROUTE_NOT_FOUND'), 400);
    if (this.draining) return rejectUpgrade(socket, shuttingDown());
    // Browsers always send Origin: a foreign page must not ride a user's ticket. Non-browser RFB
    // clients send none; for them the single-use ticket is the whole authentication.
    const origin = req.headers.origin;
    if (origin !== undefined && !this.deps.isOriginAllowed(origin, req.headers.host)) {
      return rejectUpgrade(socket, new AppError('FORBIDDEN_ORIGIN'));
    }
    const ticket = url.searchParams.get('ticket') ?? '';
    if (!TICKET_PATTERN.test(ticket)) return rejectUpgrade(socket, new AppError('TICKET_INVALID'));

    let endpoint: SessionEndpoint;
    try {
      endpoint = await this.deps.sessions.resolveTicket(ticket);
      const guest = endpoint.guest;
      // A signed-in guest is checked and rate-limited as themselves; an anonymous guest under the owner,
      // whose account must be active for their share to work.
      await this.deps.hooks?.consumeWsConnect?.(guest?.userId ?? endpoint.session.user_id);
    } catch (e) {
      if (!isAppError(e)) throw e;
      return rejectUpgrade(socket, e);
    }
    if (socket.destroyed) return;
    if (this.draining) return rejectUpgrade(socket, shuttingDown());
    const ip = clientAddress(req, this.options.proxyTrust ?? trustNoProxy);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.attach(ws, endpoint, ip));
  }

  private attach(ws: WebSocket, endpoint: SessionEndpoint, ip: string | null): void {
    const { session, target, handle } = endpoint;
    const now = this.deps.clock.now();
    const viewer: Viewer = {
      id: randomBytes(9).toString('base64url'),
      userId: session.user_id,
      guest: endpoint.guest ?? null,
      expiry: null,
      sessionId: session.id,
      instanceId: session.instance_id,
      ws,
      relay: null,
      ip,
      attachedAt: now,
      missedPongs: 0,
      pingSentAt: 0,
      bytesSeen: 0,
      sampledToViewer: 0,
      sampledFromViewer: 0,
      sampledAt: now,
    };
    this.viewers.add(viewer);
    let set = this.bySession.get(session.id);
    if (!set) this.bySession.set(session.id, (set = new Set()));
    set.add(viewer);
    this.deps.activity.touch(session.id, now);
    this.deps.audit?.record('viewer.attached', {
      actor: actorOf(viewer),
      ip,
      subjectUserId: session.user_id,
      targetId: session.id,
      details: {
        viewerId: viewer.id,
        node: this.options.nodeId,
        viewOnly: endpoint.policy?.viewOnly ?? false,
        ...(viewer.guest
          ? { shareId: viewer.guest.shareId, guestName: viewer.guest.name, mode: viewer.guest.mode }
          : {}),
      },
    });
    this.listen(viewer);
    // A guest takes a place under SESSION_MAX_VIEWERS in one atomic step (the owner is never refused);
    // refused, it is closed before its desktop stream has started. The lease lapses with its node.
    const max = this.options.maxViewers;
    const added =
      viewer.guest && max !== undefined
        ? this.deps.coordinator.addViewerWithin(this.leaseOf(viewer), LEASE_RENEW_MS * 3, max)
        : this.deps.coordinator.putViewer(this.leaseOf(viewer), LEASE_RENEW_MS * 3).then(() => true);
    const placed = added.then(
      (ok) => {
        if (!ok) closeViewer(viewer, CloseCode.VIEWERS_FULL, 'viewers full');
        return ok;
      },
      (e: unknown) => {
        this.deps.logger.warn({ err: e, sessionId: viewer.sessionId }, 'could not record viewer lease');
        return true;
      },
    );

    // Made on first use, not per viewer: a pino child is ~1.1 KB of heap (measured, 5,000 children), held
    // by this viewer's closures for its whole life, and an idle viewer never logs (issue 9).
    const log = () => this.viewerLog(viewer);
    const guest = viewer.guest;
    if (guest) {
      if (this.revokedShares.has(guest.shareId)) {
        ws.close(CloseCode.SHARE_REVOKED, 'share revoked');
        return;
      }
      this.armShareExpiry(viewer, guest.expiresAt);
    }
    // The one place a viewer's policy is decided; the relay and its parser only enforce it.
    const policy = tightenPolicy(this.options.basePolicy, endpoint.policy);
    const streamPromise = this.deps.desktops.openStream(target, handle, { budgetKbps: policy.maxKbps });
    const relay = new Relay(
      ws,
      this.relayOptions,
      this.onRelayEnd,
      // With the tcp transport the gateway plays the server's handshake: the viewer's stream reaches the
      // parser at ClientInit.
      { policy, streamStart: handle.transport === 'tcp' ? 'client-init' : 'version' },
    );
    viewer.relay = relay;
    if (handle.transport === 'tcp') {
      // The gateway answered the VNC password itself: play the server's handshake to the viewer.
      const handshake = new ViewerHandshake((bytes) => ws.send(bytes));
      relay.setPreamble((chunk) => handshake.feed(chunk), 15_000);
      handshake.start();
    }
    const start = async () => {
      if (!(await placed)) {
        streamPromise.then((s) => s.stream.destroy()).catch(noop);
        return;
      }
      const { stream } = await streamPromise;
      relay.attach(stream);
      if (this.deps.logger.isLevelEnabled('debug')) log().debug('viewer attached');
    };
    start().catch((e: unknown) => {
      streamPromise.then((s) => s.stream.destroy()).catch(noop);
      const reason = isAppError(e) ? e.code : 'relay start failed';
      if (!isAppError(e)) log().warn({ err: e }, 'could not connect viewer to its desktop');
      else log().info({ code: e.code }, 'could not connect viewer to its desktop');
      closeViewer(viewer, CloseCode.DESKTOP_UNREACHABLE, reason);
    });
  }

  /**
   * The viewer's own WebSocket listeners, made here rather than in attach(): a closure keeps its whole
   * scope, and attach's holds the session row, the ticket's endpoint and the stream's promises, which
   * would then live as long as the viewer (issue 9).
   */
  private listen(viewer: Viewer): void {
    viewer.ws.on('pong', () => {
      viewer.missedPongs = 0;
      if (viewer.pingSentAt > 0) this.deps.hooks?.onViewerRtt?.(Date.now() - viewer.pingSentAt);
    });
    viewer.ws.on('close', (code) => this.detach(viewer, code));
  }

  /** Closes a guest when its share expires (outside attach's scope, as listen()). */
  private armShareExpiry(viewer: Viewer, expiresAt: number): void {
    // Timers cap at 2^31-1 ms (~24.8 days); SHARE_MAX_MINUTES allows a year: re-arm until it is due.
    const arm = () => {
      const left = expiresAt - this.deps.clock.now();
      if (left <= 0) return closeViewer(viewer, CloseCode.SHARE_REVOKED, 'share expired');
      viewer.expiry = setTimeout(arm, Math.min(left, 2 ** 31 - 1));
      viewer.expiry.unref();
    };
    arm();
  }

  private viewerLog(viewer: Viewer): Logger {
    return this.deps.logger.child({ sessionId: viewer.sessionId, viewerId: viewer.id });
  }

  /** Every relay's end: its bytes join the totals of relays that ended. */
  private readonly onRelayEnd = (r: Relay): void => {
    this.closedBytesToViewer += r.bytesToViewer;
    this.closedBytesFromViewer += r.bytesFromViewer;
    this.closedBudgetPauses += r.budgetPauses;
  };

  private leaseOf(v: Viewer): ViewerLease {
    return {
      sessionId: v.sessionId,
      viewerId: v.id,
      nodeId: this.options.nodeId,
      ...(v.guest ? { guest: { shareId: v.guest.shareId, name: v.guest.name } } : {}),
    };
  }

  private detach(viewer: Viewer, code: number): void {
    if (!this.viewers.delete(viewer)) return;
    if (viewer.expiry) clearTimeout(viewer.expiry);
    viewer.relay?.close(code, '');
    const set = this.bySession.get(viewer.sessionId);
    set?.delete(viewer);
    if (set?.size === 0) this.bySession.delete(viewer.sessionId);
    const now = this.deps.clock.now();
    this.sampleViewer(viewer, now);
    this.deps.activity.touch(viewer.sessionId, now);
    this.deps.hooks?.onViewerClosed?.(code);
    this.deps.audit?.record('viewer.detached', {
      actor: actorOf(viewer),
      ip: viewer.ip,
      subjectUserId: viewer.userId,
      targetId: viewer.sessionId,
      details: {
        viewerId: viewer.id,
        node: this.options.nodeId,
        closeCode: code,
        durationSeconds: Math.round((now - viewer.attachedAt) / 1000),
        bytesToViewer: viewer.relay?.bytesToViewer ?? 0,
        bytesFromViewer: viewer.relay?.bytesFromViewer ?? 0,
        ...(viewer.guest ? { shareId: viewer.guest.shareId, guestName: viewer.guest.name } : {}),
      },
    });
    void this.deps.coordinator.removeViewer(viewer.sessionId, viewer.id).catch((e: unknown) => {
      // Redis out of reach (a partition, an outage): removed with the next lease renewal that gets
      // through, so the session's viewer count is right again then rather than when the lease lapses.
      this.staleLeases.set(viewer.id, viewer.sessionId);
      this.deps.logger.debug({ err: e }, 'could not remove viewer lease; retried with the next renewal');
    });
  }

  /**
   * Hands every live viewer's usage since its last sample to the activity buffer (which calls this
   * just before it writes, see app.ts). Viewers that left were sampled as they left.
   */
  sampleUsage(): void {
    const now = this.deps.clock.now();
    for (const v of this.viewers) this.sampleViewer(v, now);
  }

  private sampleViewer(v: Viewer, now: number): void {
    const toViewer = v.relay?.bytesToViewer ?? 0;
    const fromViewer = v.relay?.bytesFromViewer ?? 0;
    const elapsedMs = Math.max(0, now - v.sampledAt);
    const delta = {
      bytesToViewer: toViewer - v.sampledToViewer,
      bytesFromViewer: fromViewer - v.sampledFromViewer,
      viewerSeconds: elapsedMs / 1000,
    };
    v.sampledToViewer = toViewer;
    v.sampledFromViewer = fromViewer;
    v.sampledAt = now;
    this.deps.activity.addUsage(
      { sessionId: v.sessionId, userId: v.userId, instanceId: v.instanceId },
      delta,
      now,
    );
    if (elapsedMs >= MIN_RATE_SAMPLE_MS) {
      this.deps.hooks?.onViewerKbps?.((delta.bytesToViewer * 8) / elapsedMs);
    }
  }

  /** Closes this process's viewers of a session (the session ended somewhere in the cluster). */
  closeSession(sessionId: string, code: number, reason: string): void {
    for (const v of [...(this.bySession.get(sessionId) ?? [])]) closeViewer(v, code, reason);
  }

  private onCommand(command: ClusterCommand): void {
    switch (command.type) {
      case 'end-session':
        this.closeSession(command.sessionId, CloseCode.SESSION_ENDED, command.reason);
        break;
      case 'sign-out-user':
        // A guest is signed out with their own account, not with the owner's.
        for (const v of [...this.viewers])
          if ((v.guest ? v.guest.userId : v.userId) === command.userId)
            closeViewer(v, CloseCode.SIGNED_OUT, 'signed out');
        break;
      case 'revoke-share': {
        const now = Date.now();
        for (const [id, at] of this.revokedShares)
          if (at < now - REVOKED_MEMORY_MS) this.revokedShares.delete(id);
        this.revokedShares.set(command.shareId, now);
        for (const v of [...this.viewers])
          if (v.guest?.shareId === command.shareId) closeViewer(v, CloseCode.SHARE_REVOKED, 'share revoked');
        break;
      }
      case 'end-guest':
        // Only a guest: the owner's own viewers are not ended through this command.
        for (const v of [...(this.bySession.get(command.sessionId) ?? [])])
          if (v.id === command.viewerId && v.guest)
            closeViewer(v, CloseCode.SHARE_REVOKED, 'removed by the owner');
        break;
    }
  }

  private beat(): void {
    const now = Date.now();
    for (const v of this.viewers) {
      if (v.missedPongs >= this.options.missedPongsAllowed) {
        v.ws.terminate();
        continue;
      }
      v.missedPongs++;
      v.pingSentAt = now;
      v.ws.ping();
    }
  }

  private async renewLeases(): Promise<void> {
    // The last round is still going (a slow store): it renews these viewers too; never two at once.
    if (this.leaseRenewal.busy) return;
    const now = this.deps.clock.now();
    for (const v of this.viewers) {
      const moved = (v.relay?.bytesToViewer ?? 0) + (v.relay?.bytesFromViewer ?? 0);
      if (moved !== v.bytesSeen) {
        v.bytesSeen = moved;
        this.deps.activity.touch(v.sessionId, now);
      }
    }
    const round = await this.leaseRenewal.round(this.viewers);
    if (round === null) return;
    if (round.error !== undefined)
      this.deps.logger.warn({ err: round.error, skipped: round.skipped }, 'could not renew viewer leases');
    try {
      if (round.error === undefined) {
        for (const [viewerId, sessionId] of [...this.staleLeases]) {
          await this.deps.coordinator.removeViewer(sessionId, viewerId);
          this.staleLeases.delete(viewerId);
        }
      }
      // An end published while this node could not hear it (pub/sub keeps nothing: a partition, a
      // subscriber reconnecting) is found here: its viewers close as if the command had arrived.
      const ended = await this.deps.sessions.endedAmong([...this.bySession.keys()]);
      for (const id of ended) this.closeSession(id, CloseCode.SESSION_ENDED, 'session ended');
      if (this.deps.standing) await this.catchUpStanding(this.deps.standing);
    } catch (e) {
      this.deps.logger.warn({ err: e }, 'could not reconcile viewers with the cluster');
    }
  }

  /**
   * A sign-out everywhere, a disabled account, a share revoke or a guest removed by the owner published
   * while this node could not hear it: one batched read of the accounts, one of the shares and one of
   * the removed guests behind its viewers, and those that should be gone close with the live path's
   * codes (4001, 4002).
   */
  private async catchUpStanding(standing: ViewerStanding): Promise<void> {
    const users = new Set<string>();
    const shares = new Set<string>();
    const guestViewers: string[] = [];
    // An anonymous guest has no account to sign out; their share still counts.
    const accountOf = (v: Viewer): string | null => (v.guest ? v.guest.userId : v.userId);
    for (const v of this.viewers) {
      const account = accountOf(v);
      if (account !== null) users.add(account);
      if (v.guest) {
        shares.add(v.guest.shareId);
        guestViewers.push(v.id);
      }
    }
    if (users.size === 0 && shares.size === 0) return;
    const closedBefore = users.size > 0 ? await standing.closedBefore([...users]) : new Map<string, number>();
    const revoked = new Set(shares.size > 0 ? await standing.revokedShares([...shares]) : []);
    const removed =
      guestViewers.length > 0 ? await standing.removedGuests(guestViewers) : new Map<string, string>();
    for (const v of [...this.viewers]) {
      const account = accountOf(v);
      const before = account === null ? undefined : closedBefore.get(account);
      if (before !== undefined && v.attachedAt <= before) closeViewer(v, CloseCode.SIGNED_OUT, 'signed out');
      else if (v.guest && revoked.has(v.guest.shareId)) {
        this.revokedShares.set(v.guest.shareId, Date.now());
        closeViewer(v, CloseCode.SHARE_REVOKED, 'share revoked');
      } else if (v.guest && removed.get(v.id) === v.sessionId)
        closeViewer(v, CloseCode.SHARE_REVOKED, 'removed by the owner');
    }
  }

  /**
   * Refuses new viewers (SHUTTING_DOWN, so their reconnect goes to another gateway) and leaves the
   * current ones open: the first step of a drain, while the balancer still sends here (issue 11).
   */
  refuseViewers(): void {
    this.draining = true;
  }

  /**
   * Stops taking viewers and asks every current one to reconnect elsewhere; resolves when all have
   * gone or after `timeoutMs`.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    for (const v of [...this.viewers]) closeViewer(v, CloseCode.RECONNECT, 'server restarting; reconnect');
    const deadline = Date.now() + timeoutMs;
    while (this.viewers.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const v of [...this.viewers]) v.ws.terminate();
  }

  async close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    for (const v of [...this.viewers]) {
      v.ws.terminate();
      // Now rather than on its 'close' event, so its last usage is in the activity buffer's final flush.
      this.detach(v, 1006);
    }
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

/** Who the audit trail names for a viewer: the owner, a signed-in guest, or 'anonymous'. */
function actorOf(v: Viewer): string {
  return v.guest ? (v.guest.userId ?? 'anonymous') : v.userId;
}

function closeViewer(viewer: Viewer, code: number, reason: string): void {
  if (viewer.relay) viewer.relay.close(code, reason);
  else viewer.ws.close(code, reason);
}

const statusText: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  410: 'Gone',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Answers a refused upgrade with a plain HTTP error carrying the usual `{ error }` body. */
export function rejectUpgrade(socket: Duplex, error: AppError, status = error.status): void {
  if (socket.destroyed) return;
  const body = JSON.stringify({ error: { code: error.code, message: errorCatalogue[error.code].message } });
  const retryAfter = error.details?.retryAfterSeconds;
  socket.end(
    `HTTP/1.1 ${status} ${statusText[status] ?? 'Error'}\r\n` +
      'Connection: close\r\nContent-Type: application/json\r\n' +
      (typeof retryAfter === 'number' ? `Retry-After: ${retryAfter}\r\n` : '') +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

function noop(): void {}
