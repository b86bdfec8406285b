// The only place the client talks HTTP to the gateway. Owns the access token (in memory only, never in
// storage or a URL), refreshes it silently through the httpOnly refresh cookie when the gateway says it
// expired, and turns every answer into data or an ApiError.
import { ApiError } from './api-error.js';
import type {
  ActiveSession,
  AdminSession,
  AdminUser,
  AuditEvent,
  AuthResult,
  ConnectionTestResult,
  ConnectResult,
  FileListing,
  Instance,
  InstanceInput,
  InstancePatch,
  Page,
  SessionHistoryEntry,
  TokenPair,
  User,
  CreatedShare,
  GuestTicket,
  SessionShare,
  ShareInvitation,
  ShareMode,
} from './types.js';

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface ApiClientDeps {
  fetch: typeof fetch;
  /**
   * Runs a refresh while holding a lock shared by every tab of this origin. Refresh tokens rotate
   * and presenting a used one revokes the whole sign-in, so two tabs must never refresh with the
   * same cookie at once. Defaults to no cross-tab lock (tests, old browsers).
   */
  withRefreshLock?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Called once when the sign-in is gone (refresh refused): the app shows the sign-in page. */
  onSignedOut?: (reason: ApiError) => void;
}

/** Codes after which a fresh access token may fix the request. */
const REFRESHABLE = new Set(['TOKEN_EXPIRED', 'INVALID_TOKEN', 'UNAUTHENTICATED']);

export interface SignInMethods {
  local: boolean;
  oidc: { name: string } | null;
  registration: 'open' | 'closed';
}

export interface Enrolment {
  secret: string;
  otpauthUrl: string;
  qrSvg: string;
}

export class ApiClient {
  private accessToken: string | null = null;
  private refreshing: Promise<void> | null = null;

  constructor(private readonly deps: ApiClientDeps) {}

  get signedIn(): boolean {
    return this.accessToken !== null;
  }

  // ---- auth ----

  async register(email: string, password: string, inviteToken?: string): Promise<User> {
    const body = inviteToken ? { email, password, inviteToken } : { email, password };
    const result = await this.send<AuthResult>('POST', '/api/auth/register', body, false);
    this.accessToken = result.accessToken;
    return result.user;
  }

  // ---- two-factor ----

  /** The second step of a sign-in (MFA_REQUIRED / MFA_ENROLMENT_REQUIRED gave the challenge). */
  async verifySecondFactor(
    challenge: string,
    code: string,
  ): Promise<{ user: User; recoveryCodes?: string[] }> {
    const result = await this.send<AuthResult & { recoveryCodes?: string[] }>(
      'POST',
      '/api/auth/2fa/verify',
      { challenge, code },
      false,
    );
    this.accessToken = result.accessToken;
    return { user: result.user, recoveryCodes: result.recoveryCodes };
  }

  /** The set-up AUTH_REQUIRE_2FA asks for before any token. */
  enrolWithChallenge(challenge: string): Promise<Enrolment> {
    return this.send<Enrolment>('POST', '/api/auth/2fa/enrol', { challenge }, false);
  }

  twoFactorStatus(): Promise<{ enabled: boolean; recoveryCodesLeft: number }> {
    return this.request('GET', '/api/auth/2fa');
  }

  setupTwoFactor(): Promise<Enrolment> {
    return this.request<Enrolment>('POST', '/api/auth/2fa/setup', {});
  }

  confirmTwoFactor(code: string): Promise<{ recoveryCodes: string[] }> {
    return this.request('POST', '/api/auth/2fa/confirm', { code });
  }

  disableTwoFactor(code: string): Promise<void> {
    return this.request<void>('POST', '/api/auth/2fa/disable', { code });
  }

  /** What the sign-in page may offer: passwords, and/or "Sign in with <name>" (company sign-in). */
  methods(): Promise<SignInMethods> {
    return this.send<SignInMethods>('GET', '/api/auth/methods', undefined, false);
  }

  async login(email: string, password: string): Promise<User> {
    const result = await this.send<AuthResult>('POST', '/api/auth/login', { email, password }, false);
    this.accessToken = result.accessToken;
    return result.user;
  }

  /**
   * After a page load: trade the refresh cookie (if any) for an access token and return the user,
   * or null when there is no sign-in to restore. Transient failures (gateway down) are thrown.
   */
  async restore(): Promise<User | null> {
    try {
      await this.refresh();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return null;
      throw e;
    }
    return this.me();
  }

  async logout(): Promise<void> {
    this.accessToken = null;
    // The cookie carries the refresh token; the gateway revokes its family and clears the cookie.
    await this.send<void>('POST', '/api/auth/logout', {}, false);
  }

  /** Forgets the access token without telling the gateway (another tab signed out). */
  forget(): void {
    this.accessToken = null;
  }

  me(): Promise<User> {
    return this.request<User>('GET', '/api/auth/me');
  }

  // ---- instances ----

  listInstances(): Promise<Instance[]> {
    return this.request<Instance[]>('GET', '/api/instances');
  }

  createInstance(input: InstanceInput): Promise<Instance> {
    return this.request<Instance>('POST', '/api/instances', input);
  }

  updateInstance(id: string, patch: InstancePatch): Promise<Instance> {
    return this.request<Instance>('PATCH', `/api/instances/${encodeURIComponent(id)}`, patch);
  }

  deleteInstance(id: string): Promise<void> {
    return this.request<void>('DELETE', `/api/instances/${encodeURIComponent(id)}`);
  }

  testInstance(id: string): Promise<ConnectionTestResult> {
    return this.request<ConnectionTestResult>('POST', `/api/instances/${encodeURIComponent(id)}/test`, {});
  }

  // ---- sessions ----

  connect(instanceId: string, desktopEnvironment: string): Promise<ConnectResult> {
    return this.request<ConnectResult>('POST', '/api/sessions/connect', { instanceId, desktopEnvironment });
  }

  ticket(sessionId: string): Promise<{ websocketUrl: string }> {
    return this.request<{ websocketUrl: string }>(
      'POST',
      `/api/sessions/${encodeURIComponent(sessionId)}/ticket`,
      {},
    );
  }

  activeSessions(): Promise<ActiveSession[]> {
    return this.request<ActiveSession[]>('GET', '/api/sessions/active');
  }

  endSession(sessionId: string): Promise<void> {
    return this.request<void>('POST', `/api/sessions/disconnect/${encodeURIComponent(sessionId)}`, {});
  }

  // ---- sharing ----

  createShare(
    sessionId: string,
    input: { mode: ShareMode; expiresInMinutes?: number; singleUse?: boolean },
  ): Promise<CreatedShare> {
    return this.request<CreatedShare>('POST', `/api/sessions/${encodeURIComponent(sessionId)}/shares`, input);
  }

  listShares(sessionId: string): Promise<SessionShare[]> {
    return this.request<SessionShare[]>('GET', `/api/sessions/${encodeURIComponent(sessionId)}/shares`);
  }

  /** Ends one guest watching the session (closed on whatever gateway node it is on). */
  endGuest(sessionId: string, viewerId: string): Promise<void> {
    return this.request<void>(
      'DELETE',
      `/api/sessions/${encodeURIComponent(sessionId)}/guests/${encodeURIComponent(viewerId)}`,
    );
  }

  revokeShare(id: string): Promise<void> {
    return this.request<void>('DELETE', `/api/shares/${encodeURIComponent(id)}`);
  }

  /** A share link's landing facts; needs no sign-in. */
  shareInvitation(token: string): Promise<ShareInvitation> {
    return this.send<ShareInvitation>('GET', `/api/shares/${encodeURIComponent(token)}`, undefined, false);
  }

  /** A ticket to the shared desktop: as the signed-in user, or anonymously under a display name. */
  shareTicket(token: string, displayName?: string): Promise<GuestTicket> {
    const path = `/api/shares/${encodeURIComponent(token)}/ticket`;
    if (displayName !== undefined) return this.send<GuestTicket>('POST', path, { displayName }, false);
    return this.request<GuestTicket>('POST', path, {});
  }

  // ---- plumbing ----

  sessionHistory(cursor?: string): Promise<Page<SessionHistoryEntry>> {
    return this.request<Page<SessionHistoryEntry>>('GET', `/api/sessions/history${query({ cursor })}`);
  }

  // ---- administration (admins only; the server answers 403 FORBIDDEN to anyone else) ----

  adminUsers(q: string, cursor?: string): Promise<Page<AdminUser>> {
    return this.request<Page<AdminUser>>('GET', `/api/admin/users${query({ q, cursor })}`);
  }

  updateUser(id: string, patch: { role?: 'admin' | 'user'; disabled?: boolean }): Promise<AdminUser> {
    return this.request<AdminUser>('PATCH', `/api/admin/users/${encodeURIComponent(id)}`, patch);
  }

  adminSessions(cursor?: string): Promise<Page<AdminSession>> {
    return this.request<Page<AdminSession>>('GET', `/api/admin/sessions${query({ cursor })}`);
  }

  /** A single-use sign-up link (REGISTRATION=closed); `url` is a path on this site. */
  createInvite(email?: string): Promise<{ url: string; expiresAt: string; email: string | null }> {
    return this.request('POST', '/api/admin/invites', email ? { email } : {});
  }

  adminEndSession(id: string): Promise<void> {
    return this.request<void>('POST', `/api/admin/sessions/${encodeURIComponent(id)}/end`, {});
  }

  adminAudit(filters: {
    actor?: string;
    type?: string;
    target?: string;
    cursor?: string;
  }): Promise<Page<AuditEvent>> {
    return this.request<Page<AuditEvent>>('GET', `/api/admin/audit${query(filters)}`);
  }

  // ---- files on an instance (SFTP) ----

  listFiles(instanceId: string, path?: string): Promise<FileListing> {
    return this.request<FileListing>('GET', `${filesBase(instanceId)}${query({ path })}`);
  }

  /** A URL the browser's own download manager can fetch (streams to disk, resumes with Range). */
  fileDownloadLink(instanceId: string, path: string): Promise<{ url: string; expiresAt: string }> {
    return this.request('POST', `${filesBase(instanceId)}/link`, { path });
  }

  makeFolder(instanceId: string, path: string): Promise<{ path: string }> {
    return this.request('POST', `${filesBase(instanceId)}/mkdir`, { path });
  }

  renameFile(instanceId: string, from: string, to: string): Promise<{ path: string }> {
    return this.request('POST', `${filesBase(instanceId)}/rename`, { from, to });
  }

  deleteFile(instanceId: string, path: string): Promise<void> {
    return this.request('POST', `${filesBase(instanceId)}/delete`, { path });
  }

  /**
   * Uploads a File as the request body (the browser streams it from disk) with progress events; abort
   * with `signal`. XMLHttpRequest because fetch reports no upload progress.
   */
  async uploadFile(
    instanceId: string,
    path: string,
    file: Blob,
    opts: { overwrite?: boolean; onProgress?: (sent: number, total: number) => void; signal?: AbortSignal },
  ): Promise<{ path: string; size: number }> {
    if (this.accessToken === null) await this.refreshOrSignOut();
    const attempt = () =>
      new Promise<{ path: string; size: number }>((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        const url = `${filesBase(instanceId)}/content${query({ path, overwrite: opts.overwrite ? 'true' : undefined })}`;
        xhr.open('PUT', url);
        xhr.setRequestHeader('Authorization', `Bearer ${this.accessToken ?? ''}`);
        xhr.setRequestHeader('Content-Type', 'application/octet-stream');
        xhr.upload.onprogress = (e) => opts.onProgress?.(e.loaded, e.total);
        xhr.onload = () => {
          let payload: unknown = null;
          try {
            payload = JSON.parse(xhr.responseText);
          } catch {
            // not JSON
          }
          if (xhr.status === 201 && isObject(payload) && isObject(payload.data)) {
            resolve(payload.data as { path: string; size: number });
            return;
          }
          const error = isObject(payload) && isObject(payload.error) ? payload.error : null;
          reject(
            new ApiError(
              xhr.status,
              error && typeof error.code === 'string' ? error.code : 'BAD_RESPONSE',
              error && typeof error.message === 'string'
                ? error.message
                : `Upload failed (HTTP ${xhr.status})`,
            ),
          );
        };
        xhr.onerror = () => reject(new ApiError(0, 'NETWORK', 'Cannot reach CloudDesk'));
        xhr.onabort = () => reject(new ApiError(0, 'CANCELLED', 'Upload cancelled'));
        if (opts.signal?.aborted) {
          reject(new ApiError(0, 'CANCELLED', 'Upload cancelled'));
          return;
        }
        opts.signal?.addEventListener('abort', () => xhr.abort(), { once: true });
        xhr.send(file);
      });
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401 || !REFRESHABLE.has(e.code)) throw e;
    }
    await this.refreshOrSignOut();
    return attempt();
  }

  /** An authenticated request; on an expired token, refreshes once and retries. */
  async request<T>(method: Method, path: string, body?: unknown): Promise<T> {
    if (this.accessToken === null) await this.refreshOrSignOut();
    try {
      return await this.send<T>(method, path, body, true);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401 || !REFRESHABLE.has(e.code)) throw e;
    }
    await this.refreshOrSignOut();
    return this.send<T>(method, path, body, true);
  }

  private async refreshOrSignOut(): Promise<void> {
    try {
      await this.refresh();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.accessToken = null;
        const reason =
          e.code === 'REFRESH_TOKEN_REUSED'
            ? e
            : new ApiError(401, 'SESSION_EXPIRED', 'Your session has expired. Sign in again.');
        this.deps.onSignedOut?.(reason);
        throw reason;
      }
      throw e;
    }
  }

  /** One refresh at a time in this tab (callers share it), and one at a time across tabs. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const lock = this.deps.withRefreshLock ?? ((fn) => fn());
        const pair = await lock(() => this.send<TokenPair>('POST', '/api/auth/refresh', {}, false));
        this.accessToken = pair.accessToken;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  private async send<T>(method: Method, path: string, body: unknown, withToken: boolean): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (withToken && this.accessToken !== null) headers.Authorization = `Bearer ${this.accessToken}`;
    let response: Response;
    try {
      response = await this.deps.fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'NETWORK', 'Cannot reach CloudDesk');
    }
    if (response.status === 204) return undefined as T;
    let payload: unknown;
    try {
      payload = await response.json();
    } catch {
      throw new ApiError(response.status, 'BAD_RESPONSE', `Unexpected answer (HTTP ${response.status})`);
    }
    if (response.ok && isObject(payload) && 'data' in payload) return payload.data as T;
    const error = isObject(payload) && isObject(payload.error) ? payload.error : null;
    if (error && typeof error.code === 'string') {
      const retryAfter = Number(response.headers.get('Retry-After'));
      return Promise.reject(
        new ApiError(
          response.status,
          error.code,
          typeof error.message === 'string' ? error.message : error.code,
          isObject(error.details) ? error.details : undefined,
          Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
        ),
      );
    }
    throw new ApiError(response.status, 'BAD_RESPONSE', `Unexpected answer (HTTP ${response.status})`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Cross-tab refresh lock on the Web Locks API where the browser has it. */
export function webLocksRefreshLock(): (<T>(fn: () => Promise<T>) => Promise<T>) | undefined {
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  if (!locks) return undefined;
  return <T>(fn: () => Promise<T>) => locks.request('clouddesk-token-refresh', fn) as Promise<T>;
}

function filesBase(instanceId: string): string {
  return `/api/instances/${encodeURIComponent(instanceId)}/files`;
}

/** `?a=1&b=2` from the set values (empty string when none). */
function query(values: Record<string, string | undefined>): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== undefined && v !== '') params.set(k, v);
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}
