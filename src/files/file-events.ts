// What happened to files on an instance, for the audit trail: one call per operation with its outcome.
// The gateway sends them to the audit trail (`auditFileEvents`), which also writes each as a structured
// log line.
import type { AuditDetails } from '../audit/audit-events.js';
import type { AuditSink } from '../audit/audit-log.js';

export type FileEventType = 'file.upload' | 'file.download' | 'file.mkdir' | 'file.rename' | 'file.delete';

export type FileOutcome = 'ok' | 'failed' | 'cancelled';

export interface FileEventDetails {
  userId: string;
  instanceId: string;
  /** The path as the client gave it (for rename: `from`; `to` is in `target`). */
  path: string;
  /** The file's name (last path segment). */
  name: string;
  outcome: FileOutcome;
  /** The error code of a failed or cancelled operation. */
  code?: string;
  /** Transfers: the file's size (download: the whole file), and the bytes actually moved. */
  size?: number;
  bytes?: number;
  target?: string;
  durationMs?: number;
  /** Transfers: the most file data the gateway held at once (see file-transfer.ts). */
  peakHeldBytes?: number;
}

export interface FileEvents {
  record(type: FileEventType, details: FileEventDetails): void;
}

/**
 * File events as audit rows: the user's own trail (`GET /api/audit/me`) and the admins', with the
 * instance as the target. Only the listed facts go in: a path and name, never the file's contents.
 */
export function auditFileEvents(audit: AuditSink): FileEvents {
  return {
    record(type, d) {
      const details: AuditDetails = {
        instanceId: d.instanceId,
        path: d.path,
        name: d.name,
        outcome: d.outcome,
      };
      if (d.code !== undefined) details.code = d.code;
      if (d.size !== undefined) details.size = d.size;
      if (d.bytes !== undefined) details.bytes = d.bytes;
      if (d.target !== undefined) details.target = d.target;
      if (d.durationMs !== undefined) details.durationMs = d.durationMs;
      audit.record(type, { actor: d.userId, subjectUserId: d.userId, targetId: d.instanceId, details });
    },
  };
}
