// The access-token check for API routes: `Authorization: Bearer <jwt>` → request.userId and
// request.userRole, read from the store on every call so a disabled account or a demoted admin is
// refused at once, not when the access token expires. `requireAdmin` runs after it on admin routes.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors/errors.js';
import type { AuthService } from '../auth/auth.service.js';
import type { UserRole } from '../store/schema.js';
import { currentRequestContext } from '../audit/request-context.js';

declare module 'fastify' {
  interface FastifyRequest {
    userId: string;
    userRole: UserRole;
  }
}

/**
 * Which guard a route hook is: the API description (http/api-docs.ts) reads a route's security scheme
 * and the error codes of its checks from the hooks it is registered with, so no route repeats them.
 */
const guards = new WeakMap<object, 'user' | 'admin'>();

export function guardOf(hook: unknown): 'user' | 'admin' | undefined {
  return typeof hook === 'function' ? guards.get(hook) : undefined;
}

export function makeAuthenticate(
  auth: Pick<AuthService, 'verifyAccess' | 'activeUser'>,
  afterAuth?: (userId: string, reply: FastifyReply) => Promise<void>,
) {
  async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const header = request.headers.authorization;
    if (!header) throw new AppError('UNAUTHENTICATED');
    const m = /^Bearer ([A-Za-z0-9_\-.]{1,4096})$/.exec(header);
    if (!m) throw new AppError('INVALID_TOKEN');
    const userId = await auth.verifyAccess(m[1]!);
    const user = await auth.activeUser(userId);
    request.userId = user.id;
    request.userRole = user.role;
    const context = currentRequestContext();
    if (context) context.userId = user.id;
    if (afterAuth) await afterAuth(request.userId, reply);
  }
  guards.set(authenticate, 'user');
  return authenticate;
}

/** After `authenticate`: 403 FORBIDDEN unless the caller is an admin (now, per the store). */
export function requireAdmin(request: FastifyRequest): Promise<void> {
  if (request.userRole !== 'admin') return Promise.reject(new AppError('FORBIDDEN'));
  return Promise.resolve();
}
guards.set(requireAdmin, 'admin');
