// The access-token check for API routes: `Authorization: Bearer <jwt>` → request.userId.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors/errors.js';
import type { AuthService } from '../auth/auth.service.js';

declare module 'fastify' {
  interface FastifyRequest {
    userId: string;
  }
}

export function makeAuthenticate(
  auth: Pick<AuthService, 'verifyAccess'>,
  afterAuth?: (userId: string, reply: FastifyReply) => Promise<void>,
) {
  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const header = request.headers.authorization;
    if (!header) throw new AppError('UNAUTHENTICATED');
    const m = /^Bearer ([A-Za-z0-9_\-.]{1,4096})$/.exec(header);
    if (!m) throw new AppError('INVALID_TOKEN');
    request.userId = await auth.verifyAccess(m[1]!);
    if (afterAuth) await afterAuth(request.userId, reply);
  };
}
