// One error type for everything the API (or the network on the way to it) can answer, and the words a
// person sees for each stable code. The gateway's own message is used where it is already the right
// sentence; codes that need a next step get ours.

export class ApiError extends Error {
  constructor(
    /** HTTP status; 0 when the gateway could not be reached at all. */
    readonly status: number,
    /** The gateway's stable code (`INVALID_CREDENTIALS`), or NETWORK / BAD_RESPONSE. */
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> | undefined = undefined,
    /** Seconds, from Retry-After, when the gateway said when to try again. */
    readonly retryAfterSeconds: number | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The gateway is down, restarting or overloaded: worth retrying later. */
  get isTransient(): boolean {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

export function isApiError(e: unknown): e is ApiError {
  return e instanceof ApiError;
}

/** "in 40 seconds", "in 3 minutes". */
export function retryPhrase(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds <= 0) return 'in a little while';
  if (seconds < 90) return `in ${Math.ceil(seconds)} second${Math.ceil(seconds) === 1 ? '' : 's'}`;
  const minutes = Math.ceil(seconds / 60);
  return `in ${minutes} minute${minutes === 1 ? '' : 's'}`;
}

/** The sentence to show a person for an error, with what to do next where there is something to do. */
export function describeError(e: unknown): string {
  if (!isApiError(e)) return 'Something went wrong. Try again.';
  switch (e.code) {
    case 'NETWORK':
      return 'Cannot reach CloudDesk. Check your connection and try again.';
    case 'BAD_RESPONSE':
      return e.isTransient
        ? 'CloudDesk is temporarily unavailable. Try again in a moment.'
        : 'CloudDesk answered in a way this page does not understand. Reload the page.';
    case 'INVALID_CREDENTIALS':
      return 'Wrong email or password.';
    case 'RATE_LIMITED':
      return `Too many attempts. Try again ${retryPhrase(e.retryAfterSeconds)}.`;
    case 'EMAIL_TAKEN':
      return 'An account with this email already exists. Sign in instead.';
    case 'STORE_UNAVAILABLE':
      return "CloudDesk's database is not answering right now. Try again in a moment.";
    case 'COORDINATION_UNAVAILABLE':
      return 'CloudDesk cannot coordinate new connections right now. Try again in a moment.';
    case 'SHUTTING_DOWN':
      return 'CloudDesk is restarting. Try again in a moment.';
    case 'SESSION_EXPIRED':
    case 'TOKEN_EXPIRED':
    case 'INVALID_TOKEN':
    case 'UNAUTHENTICATED':
      return 'Your session has expired. Sign in again.';
    case 'REFRESH_TOKEN_REUSED':
      return 'For your safety you were signed out everywhere (a sign-in token was used twice). Sign in again.';
    case 'ACCOUNT_DISABLED':
      return 'This account is disabled. Ask an admin of this CloudDesk to enable it.';
    case 'REGISTRATION_CLOSED':
      return 'Accounts here are by invitation: ask an admin for an invite link.';
    case 'INVITE_INVALID':
      return 'This invite link is used, expired or meant for another email. Ask for a new one.';
    case 'FORBIDDEN':
      return 'Only an admin may do this.';
    case 'LAST_ADMIN':
      return 'This is the last admin: promote someone else first.';
    case 'INTERNAL':
      return `Something went wrong on the server. ${e.message}`;
    default:
      return e.message || 'Something went wrong. Try again.';
  }
}
