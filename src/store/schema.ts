// The database schema as Kysely sees it. Times are integer milliseconds since the epoch in both
// dialects (no timezone or driver-specific date handling), ids are random strings.

export interface UsersTable {
  id: string;
  email: string;
  password_hash: string;
  created_at: number;
  role: UserRole;
  /** Set while the account is disabled: no sign-in, no refresh, no API call. */
  disabled_at: number | null;
  last_sign_in_at: number | null;
  /** The last "sign out everywhere": viewers attached before it are closed (4001). */
  signed_out_at: number | null;
}

export type UserRole = 'admin' | 'user';

/** A single-use invitation to register (REGISTRATION=closed); only the token's SHA-256 is kept. */
export interface InvitesTable {
  id: string;
  token_hash: string;
  /** When set, only this address may register with it. */
  email: string | null;
  created_by: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
  used_by: string | null;
}

/** One row per audited event; append-only (only the retention sweep deletes). */
export interface AuditEventsTable {
  id: string;
  at: number;
  /** A user id, or 'system'. */
  actor: string;
  ip: string | null;
  node_id: string;
  type: string;
  /** The account whose trail this belongs to (GET /api/audit/me). */
  subject_user_id: string | null;
  target_id: string | null;
  /** JSON object; never a secret (audit/audit-details.ts strips them). */
  details: string;
}

export interface RefreshTokensTable {
  id: string;
  user_id: string;
  family_id: string;
  /** The token this one was issued in exchange for; null for the first of a family (sign-in). */
  parent_id: string | null;
  expires_at: number;
  used_at: number | null;
  revoked_at: number | null;
  created_at: number;
}

export interface InstancesTable {
  id: string;
  user_id: string;
  name: string;
  host: string;
  port: number;
  username: string;
  auth_type: 'password' | 'privateKey';
  /** AES-256-GCM sealed JSON of the credential; see crypto/secret-box.ts. */
  secret_ciphertext: string;
  secret_key_id: string;
  host_key_fingerprint: string | null;
  created_at: number;
  updated_at: number;
}

export type SessionStatus = 'starting' | 'active' | 'ended';

export interface SessionsTable {
  id: string;
  user_id: string;
  instance_id: string;
  desktop_environment: string;
  status: SessionStatus;
  display: number | null;
  transport: 'unix' | 'tcp' | null;
  socket_path: string | null;
  vnc_port: number | null;
  vnc_password_ciphertext: string | null;
  vnc_password_key_id: string | null;
  desktop_pid: number | null;
  created_at: number;
  started_at: number | null;
  last_activity_at: number;
  ended_at: number | null;
  end_reason: string | null;
  /** Usage so far (every viewer, every gateway process), as of the last activity flush. */
  bytes_to_viewer: number;
  bytes_from_viewer: number;
  viewer_seconds: number;
  /** The desktop of this ended session still has to be stopped: the next try is due then (null: nothing to do). */
  stop_due_at: number | null;
  /** Stop tries that failed so far. */
  stop_attempts: number;
}

/** Usage per user, instance and UTC day (the flush adds to it); kept when the instance is deleted. */
export interface UsageDailyTable {
  user_id: string;
  instance_id: string;
  /** YYYY-MM-DD, UTC. */
  day: string;
  bytes_to_viewer: number;
  bytes_from_viewer: number;
  viewer_seconds: number;
}

/** An external identity (OIDC issuer + subject) an account signs in with. */
export interface UserIdentitiesTable {
  issuer: string;
  subject: string;
  user_id: string;
  /** The email the provider gave at the last sign-in. */
  email: string | null;
  created_at: number;
  last_sign_in_at: number;
}

/** A local account's TOTP secret (sealed); enabled_at null while enrolment is not confirmed. */
export interface UserTotpTable {
  user_id: string;
  secret_ciphertext: string;
  secret_key_id: string;
  created_at: number;
  enabled_at: number | null;
  /** The highest 30-second step a code was accepted for: that code and older ones are refused. */
  last_step: number | null;
}

/** One-time recovery codes; only their SHA-256 is kept. */
export interface TotpRecoveryCodesTable {
  code_hash: string;
  user_id: string;
  used_at: number | null;
}

export type ShareMode = 'view' | 'control';

/** A link to a live session for guests (shares/); only the token's SHA-256 (hex) is kept. */
export interface SharesTable {
  id: string;
  session_id: string;
  owner_id: string;
  token_hash: string;
  mode: ShareMode;
  /** 1: the link can be exchanged for a ticket once. */
  single_use: number;
  created_at: number;
  expires_at: number;
  /** The first exchange for a ticket (a single-use share is spent then). */
  used_at: number | null;
  revoked_at: number | null;
}

/** One row per gateway node (NODE_ID), rewritten every few seconds by its coordination watch. */
export interface GatewayNodesTable {
  node_id: string;
  /** The node's last write of this row: a row older than a few beats is a node gone or cut off. */
  seen_at: number;
  /** The last time the node's Redis check answered (null: never, since the row was made). */
  redis_reached_at: number | null;
}

/** A guest its owner removed (DELETE /api/sessions/:id/guests/:viewerId), kept for the lease renewal's catch-up. */
export interface RemovedGuestsTable {
  viewer_id: string;
  session_id: string;
  removed_at: number;
  /** The guest's share expires then (its viewer is closed by then anyway): the row is pruned after it. */
  expires_at: number;
}

export interface Database {
  users: UsersTable;
  refresh_tokens: RefreshTokensTable;
  instances: InstancesTable;
  sessions: SessionsTable;
  usage_daily: UsageDailyTable;
  invites: InvitesTable;
  audit_events: AuditEventsTable;
  user_identities: UserIdentitiesTable;
  user_totp: UserTotpTable;
  totp_recovery_codes: TotpRecoveryCodesTable;
  shares: SharesTable;
  gateway_nodes: GatewayNodesTable;
  removed_guests: RemovedGuestsTable;
}
