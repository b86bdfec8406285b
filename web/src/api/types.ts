// Shapes of the gateway's API (issue 2, "API contract"). Only what the client reads.

export interface User {
  id: string;
  email: string;
  /** The server enforces it; the client only decides which pages to offer. */
  role?: 'admin' | 'user';
}

export interface AuthResult {
  user: User;
  accessToken: string;
  refreshToken: string;
}

export interface TokenPair {
  accessToken: string;
  refreshToken: string;
}

export type AuthType = 'password' | 'privateKey';

export interface Instance {
  id: string;
  name: string;
  host: string;
  port: number;
  username: string;
  auth: { type: AuthType };
  hostKeyFingerprint: string | null;
  createdAt: string;
  updatedAt: string;
}

export type InstanceAuthInput =
  { type: 'password'; password: string } | { type: 'privateKey'; privateKey: string; passphrase?: string };

export interface InstanceInput {
  name: string;
  host: string;
  port?: number;
  username: string;
  auth: InstanceAuthInput;
  hostKeyFingerprint?: string;
}

export interface InstancePatch {
  name?: string;
  host?: string;
  port?: number;
  username?: string;
  auth?: InstanceAuthInput;
  hostKeyFingerprint?: string | null;
}

export interface VncServerInfo {
  kind: string;
  version: string | null;
  unixSocket: boolean;
}

export interface ConnectionTestResult {
  reachable: true;
  hostKeyFingerprint: string;
  hostKeyStatus: 'pinned' | 'new' | 'mismatch';
  vncServer: VncServerInfo | null;
  desktopEnvironments: string[];
}

export interface ConnectResult {
  sessionId: string;
  websocketUrl: string;
  display: number;
}

export interface ActiveSession {
  id: string;
  instanceId: string;
  instanceName?: string;
  desktopEnvironment: string;
  display: number | null;
  status: string;
  startedAt: string | null;
  createdAt?: string;
  lastActivityAt: string;
  viewers: number;
}

/** A page of a cursor-paged list (issue 10). */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface SessionHistoryEntry {
  id: string;
  instanceId: string;
  instanceName: string | null;
  desktopEnvironment: string;
  startedAt: string | null;
  endedAt: string | null;
  durationSeconds: number;
  endReason: string | null;
  bytesToViewer: number;
  bytesFromViewer: number;
}

export interface AdminUser {
  id: string;
  email: string;
  role: 'admin' | 'user';
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
  viewers: { id: string; node: string }[];
  startedAt: string | null;
  lastActivityAt: string;
  bytesToViewer: number;
  bytesFromViewer: number;
}

export interface AuditEvent {
  id: string;
  at: string;
  actor: string;
  ip: string | null;
  node: string;
  type: string;
  subjectUserId: string | null;
  targetId: string | null;
  details: Record<string, unknown>;
}

/** One entry of a folder on an instance (GET /api/instances/:id/files). */
export interface FileEntry {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  targetType?: 'file' | 'directory' | 'symlink' | 'other' | null;
  size: number;
  mtime: string;
  mode: number;
}

export interface FileListing {
  path: string;
  parent: string | null;
  entries: FileEntry[];
  truncated: boolean;
}

export type ShareMode = 'view' | 'control';

export interface CreatedShare {
  id: string;
  /** The landing path with the token after '#', shown once. */
  url: string;
  mode: ShareMode;
  singleUse: boolean;
  expiresAt: string;
}

export interface SessionShare {
  id: string;
  sessionId: string;
  mode: ShareMode;
  singleUse: boolean;
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
  revokedAt: string | null;
  status: 'active' | 'expired' | 'revoked' | 'used';
  guests: { viewerId: string; name: string; node: string }[];
}

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
