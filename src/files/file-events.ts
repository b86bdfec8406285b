// What happened to files on an instance, for the audit trail: one call per operation with its outcome.
// Until the audit trail takes this seam over (an injected sink, like session activity), events are
// structured log lines (`event: 'file.upload'`, …) at info level.
import type { Logger } from '../observability/logger.js';

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

export function logFileEvents(logger: Logger): FileEvents {
  return {
    record(type, details) {
      logger.info({ event: type, ...details }, type);
    },
  };
}
