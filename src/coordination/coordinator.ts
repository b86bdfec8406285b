// The coordination seam: what gateway processes must agree on. One interface, two implementations:
// in-process (memory-coordinator.ts, a single node) and Redis (redis-coordinator.ts, a cluster).
// Both pass test/coordination.test.ts. Nothing else in the code branches on which one runs.

export interface TicketClaims {
  /** The session's owner (whose desktop it is). */
  userId: string;
  sessionId: string;
  /** Set for a share's guest: who they are and what the share lets them do. */
  guest?: GuestClaims;
}

/** A share's guest, carried by their ticket (shares/share.service.ts). */
export interface GuestClaims {
  shareId: string;
  mode: 'view' | 'control';
  /** The signed-in guest's user id; null for an anonymous guest (SHARE_GUESTS=anyone). */
  userId: string | null;
  /** Shown to the owner: the guest's email, or the display name an anonymous guest gave. */
  name: string;
  /** When the share expires (ms since the epoch): the guest's viewer is closed then. */
  expiresAt: number;
}

export interface LockHandle {
  readonly key: string;
  readonly token: string;
  /**
   * Fencing number: grows with every grant of this key (never repeats while the key's holders can
   * overlap), so a consumer that stores the highest fence it saw can refuse a stale holder.
   * docs/coordination.md says what survives a Redis failover.
   */
  readonly fence: number;
}

/** A command any node can send; the node holding the affected viewers acts on it. */
export type ClusterCommand =
  | { type: 'end-session'; sessionId: string; reason: string }
  | { type: 'sign-out-user'; userId: string }
  /** A share was revoked: its guests' viewers close (4002). */
  | { type: 'revoke-share'; shareId: string }
  /** The owner ended one guest: that guest's viewer closes (4002 `removed by the owner`). */
  | { type: 'end-guest'; sessionId: string; viewerId: string };

/** What `putOnce` holds: the OIDC sign-in in flight, the second step of a two-factor sign-in. */
export type OnceKind = 'oidc' | 'mfa';

export interface ViewerLease {
  sessionId: string;
  viewerId: string;
  nodeId: string;
  /** Set when the viewer is a share's guest (the owner's list of who is watching). */
  guest?: { shareId: string; name: string };
}

export interface Coordinator {
  /** Stores claims under a fresh unguessable ticket that can be redeemed once within ttlMs. */
  issueTicket(claims: TicketClaims, ttlMs: number): Promise<string>;
  /** Returns the claims and forgets the ticket; null when unknown, used or expired. */
  redeemTicket(ticket: string): Promise<TicketClaims | null>;

  /**
   * A short-lived single-use value under a key the caller made unguessable (an OIDC sign-in's
   * `state`, a second sign-in step): any node may take it, once, within ttlMs.
   */
  putOnce(kind: OnceKind, id: string, value: string, ttlMs: number): Promise<void>;
  /** Returns the value and forgets it; null when unknown, taken or expired. */
  takeOnce(kind: OnceKind, id: string): Promise<string | null>;

  /**
   * Mutual exclusion across the cluster (`SET key token NX PX ttl`). Returns null when held by
   * someone else. Release only succeeds for the owner token (compare-and-delete).
   */
  tryLock(key: string, ttlMs: number): Promise<LockHandle | null>;
  unlock(handle: LockHandle): Promise<void>;
  /** Renews a lock its holder still has for ttlMs more; false when it lapsed or is someone else's. */
  extendLock(handle: LockHandle, ttlMs: number): Promise<boolean>;
  /**
   * Waits (bounded by waitMs, polling with jitter) for the lock, runs fn, releases it. The lock is a
   * lease: renewed every third of ttlMs while fn runs, so ttlMs bounds how long a holder that died (or
   * lost the coordinator) keeps others out, not how long fn may take.
   */
  withLock<T>(key: string, ttlMs: number, waitMs: number, fn: () => Promise<T>): Promise<T>;

  /** Records (or renews) a live viewer; it lapses by itself after ttlMs unless renewed. */
  putViewer(lease: ViewerLease, ttlMs: number): Promise<void>;
  /**
   * SESSION_MAX_VIEWERS, exact: records the lease only if the session has fewer than `max` live viewers
   * (lapsed leases do not count), in one atomic step cluster-wide, so two callers at one instant cannot
   * both take the last place. A viewer that already holds a lease renews regardless. True when recorded.
   */
  addViewerWithin(lease: ViewerLease, ttlMs: number, max: number): Promise<boolean>;
  removeViewer(sessionId: string, viewerId: string): Promise<void>;
  /** Live viewers of each session, cluster-wide (expired leases do not count). */
  countViewers(sessionIds: readonly string[]): Promise<Map<string, number>>;
  /** Live viewers of each session with the node each is on, cluster-wide (the admin's session list). */
  listViewers(sessionIds: readonly string[]): Promise<Map<string, ViewerLease[]>>;

  publish(command: ClusterCommand): Promise<void>;
  /** Handlers run on every node, including the sender's. */
  onCommand(handler: (command: ClusterCommand) => void): void;

  /** Throws when the backing service cannot be reached (bounded by a timeout). */
  ping(): Promise<void>;
  /** 'up' | 'down', cheap, for health reports. */
  state(): 'up' | 'down';
  close(): Promise<void>;
}
