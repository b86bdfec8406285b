// What sign-in, registration and refresh ask of brute-force protection. The rate-limit module
// (coordination/rate-limits.ts) provides the real one; `noSignInGuard` is for unit tests of the auth
// flow itself.

export interface SignInGuard {
  /** Any auth attempt from this IP (register, refresh): a generous per-IP budget. */
  attempt(ip: string): Promise<void>;
  /** Throws RATE_LIMITED when this account+IP pair or this IP is locked out. */
  beforeSignIn(email: string, ip: string): Promise<void>;
  signInFailed(email: string, ip: string): Promise<void>;
  signInSucceeded(email: string, ip: string): Promise<void>;
}

export const noSignInGuard: SignInGuard = {
  attempt: () => Promise.resolve(),
  beforeSignIn: () => Promise.resolve(),
  signInFailed: () => Promise.resolve(),
  signInSucceeded: () => Promise.resolve(),
};
