// What reaches a gateway once its HTTP server is closing (a request on a kept-alive connection, a
// pipelined one) is answered with our coded 503 SHUTTING_DOWN, Retry-After and `Connection: close`,
// never Fastify's bare return503OnClosing body without a code (issue 11; see app.ts, shutdown()).
import type { FastifyInstance } from 'fastify';
import { shuttingDown } from '../errors/errors.js';

export function registerClosingGuard(app: FastifyInstance, isClosing: () => boolean): void {
  app.addHook('onRequest', (_request, reply, done) => {
    if (!isClosing()) {
      done();
      return;
    }
    void reply.header('Connection', 'close');
    done(shuttingDown());
  });
}
