// How an ssh2 failure becomes one of our catalogue errors, and which failures are worth another attempt.
// ssh2 marks where an error came from in `err.level`; the socket errors keep their errno `code`.
import { AppError, type ErrorCode } from '../errors/errors.js';

/** What a request that logs in to an instance over SSH can answer (listed in the API description). */
export const sshLoginErrorCodes = [
  'SSH_AUTH_FAILED',
  'SSH_UNREACHABLE',
  'SSH_TIMEOUT',
  'SSH_PROTOCOL_ERROR',
  'SSH_CHANNEL_FAILED',
  'HOST_KEY_MISMATCH',
  'INVALID_PRIVATE_KEY',
  'SHUTTING_DOWN',
] as const satisfies readonly ErrorCode[];

interface Ssh2Error extends Error {
  level?: string;
  code?: string | number;
  reason?: number | string;
}

/** A failed handshake attempt: the error a caller will see, and whether dialing again could help. */
export class HandshakeFailure extends Error {
  constructor(
    readonly error: AppError,
    readonly retriable: boolean,
  ) {
    super(error.message, { cause: error });
    this.name = 'HandshakeFailure';
  }
}

const unreachableCodes = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
  'ETIMEDOUT',
]);
// sshd over MaxStartups accepts and then drops the connection at once: a reset, or an EOF before the banner.
const droppedCodes = new Set(['ECONNRESET', 'EPIPE']);

export function closedBeforeReady(cause?: unknown): HandshakeFailure {
  return new HandshakeFailure(
    new AppError('SSH_PROTOCOL_ERROR', {
      message: 'The instance closed the connection before the SSH login finished',
      cause,
    }),
    true,
  );
}

/** Classifies an error ssh2 raised before the connection was ready. */
export function classifyHandshakeError(err: unknown): HandshakeFailure {
  const e = (err ?? {}) as Ssh2Error;
  const code = typeof e.code === 'string' ? e.code : undefined;
  if (e.level === 'client-authentication') {
    return new HandshakeFailure(new AppError('SSH_AUTH_FAILED', { cause: err }), false);
  }
  if (e.level === 'client-timeout') {
    return new HandshakeFailure(new AppError('SSH_TIMEOUT', { cause: err }), false);
  }
  if (e.level === 'client-dns' || (code !== undefined && unreachableCodes.has(code))) {
    return new HandshakeFailure(new AppError('SSH_UNREACHABLE', { cause: err }), false);
  }
  if (code !== undefined && droppedCodes.has(code)) return closedBeforeReady(err);
  if (e.message === 'Connection lost before handshake') return closedBeforeReady(err);
  return new HandshakeFailure(new AppError('SSH_PROTOCOL_ERROR', { cause: err }), false);
}

/** True when a channel could not be opened because the connection under it is gone (not a refusal). */
export function isConnectionLost(err: unknown): boolean {
  const e = (err ?? {}) as Ssh2Error;
  return e.message === 'Not connected' || e.message === 'No response from server';
}

export function channelFailed(err: unknown): AppError {
  return new AppError('SSH_CHANNEL_FAILED', { cause: err });
}
