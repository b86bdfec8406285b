// The per-request log lines ("incoming request", "request completed"). Health, readiness and metrics
// requests are logged at debug: a load balancer checking every 2 s and a Prometheus scrape would
// otherwise fill the info log with two lines each (issue 14.15). Everything else is Fastify's default;
// a probe that fails with an error is still logged as one.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

/** Routes polled by machines: their request lines go to debug. */
export const probeRoutes: ReadonlySet<string> = new Set(['/api/health', '/api/ready', '/metrics']);

function isProbe(request: FastifyRequest): boolean {
  const url = request.routeOptions.url;
  return url !== undefined && probeRoutes.has(url);
}

export class RequestLogController extends LogController {
  override incomingRequest(
    request: FastifyRequest,
    reply: FastifyReply,
    metadata?: Record<string, unknown>,
  ): void {
    if (!isProbe(request)) return super.incomingRequest(request, reply, metadata);
    if (!this.isLogDisabled(request)) request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
    metadata?: Record<string, unknown>,
  ): void {
    if (error || !isProbe(request)) return super.requestCompleted(error, request, reply, metadata);
    if (!this.isLogDisabled(request)) {
      reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed');
    }
  }
}
