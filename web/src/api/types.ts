// Shapes of the gateway's API (issue 2, "API contract"). Only what the client reads.

export interface User {
  id: string;
  email: string;
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
