// WebSocket close codes the gateway sends to viewers. The web client decides from the code whether to
// reconnect (fresh ticket + backoff) or to stop and tell the person why.

export const CloseCode = {
  /** The session was ended (by its owner, the idle sweeper or an admin): do not reconnect. */
  SESSION_ENDED: 4000,
  /** The user signed out everywhere: do not reconnect. */
  SIGNED_OUT: 4001,
  /**
   * The share this guest joined through was revoked or expired, or the owner ended this guest (reason
   * `removed by the owner`): do not reconnect.
   */
  SHARE_REVOKED: 4002,
  /**
   * A guest found the session at SESSION_MAX_VIEWERS as its viewer was added (the exact check, after the
   * ticket's approximate one): do not reconnect.
   */
  VIEWERS_FULL: 4003,
  /** This gateway process is draining or restarting: reconnect (through the balancer, to another one). */
  RECONNECT: 4010,
  /** The viewer did not read for too long (stalled past the deadline): reconnect if still wanted. */
  STALLED: 4011,
  /** The SSH channel to the desktop closed or failed: reconnect; the desktop may come back. */
  DESKTOP_UNREACHABLE: 4012,
  /** The viewer sent something the relay cannot accept (e.g. an over-large frame). */
  PROTOCOL_ERROR: 1002,
  /** Missed pongs: the peer looks dead. */
  PEER_TIMEOUT: 4013,
  INTERNAL: 1011,
} as const;

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

/** Codes after which a well-behaved client reconnects with a fresh ticket. */
export const reconnectableCodes: ReadonlySet<number> = new Set([
  CloseCode.RECONNECT,
  CloseCode.STALLED,
  CloseCode.DESKTOP_UNREACHABLE,
  CloseCode.PEER_TIMEOUT,
  CloseCode.INTERNAL,
  1001,
  1006,
]);
