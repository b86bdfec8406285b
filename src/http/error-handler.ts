// The one error mapper: an AppError becomes its status and `{ error: { code, message } }`; Fastify's
// own request errors (validation, bad JSON, size) get catalogue codes; a lost database becomes
// STORE_UNAVAILABLE (whichever path it took: the repositories' retry rule, or a raw pool error from
// code outside them); anything else is a 500 with a generic message and the request id. Internal text
// never reaches the client.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, errorCatalogue, isAppError, isPeerGoneError, type ErrorCode } from '../errors/errors.js';
import { isStoreUnavailable } from '../store/store-retry.js';

export interface ErrorHooks {
  onError?(code: ErrorCode, status: number): void;
}

const fastifyCodes: Partial<Record<string, ErrorCode>> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'MALFORMED_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'MALFORMED_JSON',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'VALIDATION_FAILED',
};

export function toAppError(e: unknown): AppError | null {
  if (isAppError(e)) return e;
  const fe = e as Partial<FastifyError> | null;
  if (fe?.validation) {
    const first = fe.validation[0];
    const where = fe.validationContext ?? 'body';
    const path = first?.instancePath ? first.instancePath.replace(/^\//, '').replace(/\//g, '.') : '';
    const message = first
      ? `${where}${path ? `.${path}` : ''} ${first.message ?? 'is not valid'}`
      : undefined;
    return new AppError('VALIDATION_FAILED', { message });
  }
  const mapped = typeof fe?.code === 'string' ? fastifyCodes[fe.code] : undefined;
  if (mapped) return new AppError(mapped);
  if (fe?.statusCode === 400 && e instanceof SyntaxError) return new AppError('MALFORMED_JSON');
  if (isStoreUnavailable(e)) return new AppError('STORE_UNAVAILABLE', { cause: e });
  return null;
}

export function registerErrorHandling(app: FastifyInstance, hooks: ErrorHooks = {}): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    if (isPeerGoneError(error) && request.raw.destroyed) return;
    const known = toAppError(error);
    if (known) {
      if (known.log) request.log.error({ err: error, code: known.code }, known.message);
      hooks.onError?.(known.code, known.status);
      const retryAfter = known.details?.retryAfterSeconds;
      if (typeof retryAfter === 'number') void reply.header('Retry-After', String(retryAfter));
      const details =
        known.details && Object.keys(known.details).length > 0 ? { details: known.details } : {};
      return reply
        .status(known.status)
        .send({ error: { code: known.code, message: known.message, ...details } });
    }
    request.log.error({ err: error }, 'unhandled error');
    hooks.onError?.('INTERNAL', 500);
    return reply.status(500).send({
      error: { code: 'INTERNAL', message: `${errorCatalogue.INTERNAL.message} (request ${request.id})` },
    });
  });

  app.setNotFoundHandler((_request, reply) => {
    return reply
      .status(404)
      .send({ error: { code: 'ROUTE_NOT_FOUND', message: errorCatalogue.ROUTE_NOT_FOUND.message } });
  });
}
