// The one catalogue of errors a client can see: a stable code, its HTTP status, a human message and
// whether it is worth logging as an error. Routes and services throw `AppError`; nothing else builds
// error JSON (see http/error-handler.ts).

export const errorCatalogue = {
  // request shape
  VALIDATION_FAILED: { status: 400, message: 'The request is not valid', log: false },
  MALFORMED_JSON: { status: 400, message: 'The request body is not valid JSON', log: false },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Send the body as application/json', log: false },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large', log: false },
  NOT_FOUND: { status: 404, message: 'Not found', log: false },
  ROUTE_NOT_FOUND: { status: 404, message: 'No such route', log: false },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed', log: false },

  // auth
  UNAUTHENTICATED: { status: 401, message: 'Sign in first', log: false },
  TOKEN_EXPIRED: { status: 401, message: 'The access token has expired', log: false },
  INVALID_TOKEN: { status: 401, message: 'The token is not valid', log: false },
  INVALID_CREDENTIALS: { status: 401, message: 'Wrong email or password', log: false },
  REFRESH_TOKEN_REUSED: {
    status: 401,
    message: 'This refresh token was already used; every session of this sign-in was ended',
    log: false,
  },
  EMAIL_TAKEN: { status: 409, message: 'An account with this email already exists', log: false },
  FORBIDDEN_ORIGIN: { status: 403, message: 'This origin is not allowed', log: false },
  ACCOUNT_DISABLED: { status: 403, message: 'This account is disabled', log: false },
  FORBIDDEN: { status: 403, message: 'Only an admin may do this', log: false },
  REGISTRATION_CLOSED: {
    status: 403,
    message: 'Registration is by invitation: ask an admin for an invite link',
    log: false,
  },
  INVITE_INVALID: { status: 400, message: 'The invite is unknown, used or expired', log: false },
  RATE_LIMITED: { status: 429, message: 'Too many requests, try again later', log: false },
  LOCAL_AUTH_DISABLED: {
    status: 403,
    message: 'Password sign-in is turned off here: sign in with your company account',
    log: false,
  },

  // company sign-in (OIDC); the callback puts these codes in the sign-in page's URL
  OIDC_NOT_CONFIGURED: { status: 404, message: 'Company sign-in is not set up', log: false },
  OIDC_STATE_INVALID: {
    status: 400,
    message: 'This sign-in link is unknown, used or expired: start the sign-in again',
    log: false,
  },
  OIDC_DENIED: { status: 401, message: 'The identity provider did not sign you in', log: false },
  OIDC_TOKEN_INVALID: {
    status: 401,
    message: "The identity provider's answer could not be verified",
    log: false,
  },
  OIDC_EMAIL_MISSING: { status: 403, message: 'The identity provider gave no email address', log: false },
  OIDC_EMAIL_UNVERIFIED: {
    status: 403,
    message: 'The identity provider has not verified this email address',
    log: false,
  },
  OIDC_DOMAIN_FORBIDDEN: {
    status: 403,
    message: 'Accounts of this email domain may not sign in',
    log: false,
  },
  OIDC_PROVIDER_UNAVAILABLE: { status: 502, message: 'The identity provider cannot be reached', log: true },

  // two-factor (TOTP)
  MFA_REQUIRED: { status: 401, message: 'Enter the code from your authenticator app', log: false },
  MFA_ENROLMENT_REQUIRED: {
    status: 403,
    message: 'Two-factor sign-in is required here: set it up to continue',
    log: false,
  },
  MFA_CODE_INVALID: { status: 401, message: 'The code is wrong, expired or already used', log: false },
  MFA_CHALLENGE_INVALID: {
    status: 401,
    message: 'This sign-in step is unknown, used or expired: sign in again',
    log: false,
  },
  MFA_ALREADY_ENABLED: { status: 409, message: 'Two-factor sign-in is already on', log: false },
  MFA_NOT_ENABLED: { status: 409, message: 'Two-factor sign-in is not on', log: false },

  // instances
  INSTANCE_NOT_FOUND: { status: 404, message: 'No such instance', log: false },
  INSTANCE_ADDRESS_FORBIDDEN: {
    status: 422,
    // The guard's own message says why (instances/address-guard.ts); this one is the fallback.
    message: 'This address is not allowed for an instance',
    log: false,
  },
  INSTANCE_HOST_UNRESOLVABLE: { status: 422, message: 'The instance host name does not resolve', log: false },
  INVALID_PRIVATE_KEY: {
    status: 422,
    message: 'The private key cannot be read (wrong format or passphrase)',
    log: false,
  },

  // SSH and the instance
  HOST_KEY_MISMATCH: {
    status: 409,
    message: "The instance's SSH host key changed; re-trust it if you expected this",
    log: false,
  },
  SSH_AUTH_FAILED: { status: 422, message: 'The instance refused the SSH login', log: false },
  SSH_UNREACHABLE: { status: 502, message: 'The instance cannot be reached over SSH', log: false },
  SSH_TIMEOUT: { status: 504, message: 'The instance did not answer in time', log: false },
  SSH_PROTOCOL_ERROR: { status: 502, message: 'The instance spoke broken SSH', log: false },
  SSH_CHANNEL_FAILED: { status: 502, message: 'The instance refused to open a channel', log: false },
  VNC_SERVER_MISSING: {
    status: 422,
    message: 'No VNC server on the instance: install tigervnc-standalone-server',
    log: false,
  },
  DESKTOP_ENVIRONMENT_MISSING: {
    status: 422,
    message: 'The chosen desktop environment is not installed on the instance',
    log: false,
  },
  DESKTOP_ENVIRONMENT_UNKNOWN: { status: 400, message: 'Unknown desktop environment', log: false },
  NO_FREE_DISPLAY: { status: 503, message: 'Every VNC display on the instance is in use', log: false },
  DESKTOP_START_FAILED: { status: 502, message: 'The desktop did not start on the instance', log: true },
  VNC_PROTOCOL_ERROR: { status: 502, message: 'The VNC server spoke broken RFB', log: false },

  // sessions
  SESSION_NOT_FOUND: { status: 404, message: 'No such session', log: false },
  SESSION_ENDED: { status: 410, message: 'This session has ended', log: false },
  SESSION_LIMIT_REACHED: {
    status: 429,
    message: 'You have reached the maximum number of sessions',
    log: false,
  },
  TICKET_INVALID: { status: 401, message: 'The connect ticket is invalid, used or expired', log: false },

  SESSION_NOT_READY: { status: 409, message: 'The desktop of this session is still starting', log: false },
  SESSION_VIEWERS_FULL: {
    status: 429,
    message: 'This desktop has as many viewers as it may have (SESSION_MAX_VIEWERS)',
    log: false,
  },

  // shares
  SHARE_NOT_FOUND: { status: 404, message: 'No such share', log: false },
  GUEST_NOT_FOUND: { status: 404, message: 'No such guest is watching this session', log: false },
  SHARE_INVALID: { status: 404, message: 'This share link is not valid', log: false },
  SHARE_REVOKED: { status: 410, message: 'This share link was revoked by its owner', log: false },
  SHARE_EXPIRED: { status: 410, message: 'This share link has expired', log: false },
  SHARE_USED: { status: 410, message: 'This single-use share link was already used', log: false },
  SHARE_SIGN_IN_REQUIRED: { status: 401, message: 'Sign in to open this share link', log: false },
  SHARE_GUEST_NAME_REQUIRED: {
    status: 400,
    message: 'Give a display name (1 to 64 characters) to join as a guest',
    log: false,
  },
  SHARE_EXPIRY_TOO_LONG: {
    status: 400,
    message: 'A share may last at most SHARE_MAX_MINUTES minutes',
    log: false,
  },

  // administration
  USER_NOT_FOUND: { status: 404, message: 'No such user', log: false },
  LAST_ADMIN: {
    status: 409,
    message: 'The last admin cannot be disabled or demoted: promote another admin first',
    log: false,
  },
  CURSOR_INVALID: { status: 400, message: 'The cursor is not valid', log: false },
  AUDIT_RANGE_INVALID: {
    status: 400,
    message: '`from` and `to` must be ISO times, `from` first',
    log: false,
  },

  // usage
  USAGE_RANGE_INVALID: {
    status: 400,
    message: '`from` and `to` must be calendar days (YYYY-MM-DD, UTC) with `from` not after `to`',
    log: false,
  },
  USAGE_RANGE_TOO_LONG: { status: 400, message: 'Ask for at most 366 days of usage at once', log: false },

  // files on the instance (SFTP, src/files/)
  FILE_NOT_FOUND: { status: 404, message: 'No such file or directory on the instance', log: false },
  PERMISSION_DENIED: {
    status: 403,
    message: "The instance's user may not do this with that path",
    log: false,
  },
  DISK_FULL: { status: 507, message: 'The disk on the instance is full', log: false },
  IS_A_DIRECTORY: { status: 409, message: 'The path is a directory', log: false },
  NOT_A_DIRECTORY: { status: 409, message: 'The path is not a directory', log: false },
  FILE_EXISTS: {
    status: 409,
    message: 'Something already has that name; send overwrite=true to replace a file',
    log: false,
  },
  DIRECTORY_NOT_EMPTY: { status: 409, message: 'The directory is not empty', log: false },
  PATH_INVALID: { status: 400, message: 'The path is not valid', log: false },
  FILE_TOO_LARGE: { status: 413, message: 'The file is larger than FILE_TRANSFER_MAX_BYTES', log: false },
  RANGE_NOT_SATISFIABLE: { status: 416, message: 'The range is outside the file', log: false },
  TRANSFER_LIMIT_REACHED: {
    status: 429,
    message: 'Too many file transfers in flight; wait for one to finish',
    log: false,
  },
  UPLOAD_INCOMPLETE: {
    status: 400,
    message: 'The upload ended before the whole body arrived; nothing was kept',
    log: false,
  },
  DOWNLOAD_LINK_INVALID: { status: 401, message: 'The download link is invalid or expired', log: false },
  SFTP_UNAVAILABLE: {
    status: 422,
    message: 'The instance has no SFTP subsystem (OpenSSH: Subsystem sftp internal-sftp)',
    log: false,
  },
  SFTP_FAILED: { status: 502, message: 'The SFTP server on the instance refused the operation', log: false },

  // dependencies and the process
  STORE_UNAVAILABLE: { status: 503, message: 'The database is unavailable', log: true },
  COORDINATION_UNAVAILABLE: { status: 503, message: 'Coordination (Redis) is unavailable', log: true },
  BUSY: {
    status: 503,
    message: 'Another request for the same desktop is still running; retry shortly',
    log: false,
  },
  OVERLOADED: { status: 503, message: 'The server is busy; retry shortly', log: false },
  SHUTTING_DOWN: { status: 503, message: 'This server is shutting down; retry', log: false },
  INTERNAL: { status: 500, message: 'Internal error', log: true },
} as const satisfies Record<string, { status: number; message: string; log: boolean }>;

export type ErrorCode = keyof typeof errorCatalogue;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly log: boolean;
  /** Safe, client-facing extra facts (e.g. the observed host key fingerprint). */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    options: { message?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    const entry = errorCatalogue[code];
    super(
      options.message ?? entry.message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'AppError';
    this.code = code;
    this.status = entry.status;
    this.log = entry.log;
    this.details = options.details;
  }
}

/**
 * SHUTTING_DOWN as a draining gateway answers it (HTTP and refused viewer upgrades): retry in a second,
 * by when the balancer sends the retry to another gateway.
 */
export function shuttingDown(): AppError {
  return new AppError('SHUTTING_DOWN', { details: { retryAfterSeconds: 1 } });
}

export function isAppError(e: unknown): e is AppError {
  return e instanceof AppError;
}

/** Errors that only mean the peer went away: not worth an error log line. */
export function isPeerGoneError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return (
    code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'PEER_GONE'
  );
}

/** The client's connection closed before its request was handled: there is no one to answer. */
export class PeerGoneError extends Error {
  readonly code = 'PEER_GONE';
  constructor() {
    super('the client closed its connection before the request was handled');
    this.name = 'PeerGoneError';
  }
}
