// Who is asking, for the audit trail, without threading it through every service call: the HTTP
// layer opens a context per request (source IP as the balancer reports it) and authentication adds
// the user; AuditLog.record reads it when an event names no actor or IP of its own. Work outside a
// request (sweepers, the relay) has no context and names its actor itself, or is `system`.
import { AsyncLocalStorage } from 'node:async_hooks';

export interface RequestContext {
  ip: string | null;
  userId: string | null;
}

const storage = new AsyncLocalStorage<RequestContext>();

export function runWithRequestContext(context: RequestContext, fn: () => void): void {
  storage.run(context, fn);
}

export function currentRequestContext(): RequestContext | undefined {
  return storage.getStore();
}
