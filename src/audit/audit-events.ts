// The audit trail's vocabulary (issue 10) and the one rule for what a row may hold: small facts,
// never a secret. Details pass through `cleanDetails`, which drops any field whose name says it is a
// credential and any value that looks like a token, so a careless caller cannot leak one.

export const auditEventTypes = [
  'auth.register',
  'auth.sign-in',
  'auth.sign-in-failed',
  'auth.sign-out',
  'auth.sign-out-everywhere',
  'auth.refresh-reuse',
  'identity.linked',
  'mfa.enabled',
  'mfa.disabled',
  'mfa.reset',
  'mfa.recovery-code-used',
  'user.role-changed',
  'user.disabled',
  'user.enabled',
  'user.invite-created',
  'instance.created',
  'instance.changed',
  'instance.deleted',
  'host-key.pinned',
  'host-key.mismatch',
  'host-key.retrusted',
  'session.started',
  'session.reused',
  'session.ended',
  'viewer.attached',
  'viewer.detached',
  'share.created',
  'share.used',
  'share.revoked',
  'share.guest-ended',
  'file.upload',
  'file.download',
  'file.mkdir',
  'file.rename',
  'file.delete',
] as const;

export type AuditEventType = (typeof auditEventTypes)[number];

export function isAuditEventType(value: string): value is AuditEventType {
  return (auditEventTypes as readonly string[]).includes(value);
}

export type AuditDetailValue = string | number | boolean | null | readonly string[];
export type AuditDetails = Record<string, AuditDetailValue>;

export interface AuditEvent {
  /** A user id or 'system'; default: the signed-in user of the current request, else 'system'. */
  actor?: string;
  /** Default: the current request's source IP. */
  ip?: string | null;
  /** Whose trail this belongs to (GET /api/audit/me); default: the actor when it is a user. */
  subjectUserId?: string | null;
  /** The main thing acted on: a user, instance, session or share id. */
  targetId?: string | null;
  details?: AuditDetails;
}

const SECRET_NAME = /pass|secret|token|ticket|private|credential|cookie|authori[sz]ation|otp|(^|_)key$/i;
const TOKEN_LIKE = /^eyJ[\w-]+\.[\w-]+\.|-----BEGIN |^[A-Za-z0-9_-]{40,}$/;
const MAX_STRING = 256;
const MAX_FIELDS = 32;

/** The details with every credential-looking field and value removed and strings bounded. */
export function cleanDetails(details: AuditDetails | undefined): AuditDetails {
  const out: AuditDetails = {};
  if (!details) return out;
  let n = 0;
  for (const [key, value] of Object.entries(details)) {
    if (n >= MAX_FIELDS) break;
    if (SECRET_NAME.test(key)) continue;
    const clean = cleanValue(value);
    if (clean === undefined) continue;
    out[key] = clean;
    n++;
  }
  return out;
}

function cleanValue(value: AuditDetailValue): AuditDetailValue | undefined {
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'string') return TOKEN_LIKE.test(value) ? undefined : value.slice(0, MAX_STRING);
  return value
    .filter((v) => typeof v === 'string' && !TOKEN_LIKE.test(v))
    .slice(0, MAX_FIELDS)
    .map((v) => v.slice(0, 64));
}
