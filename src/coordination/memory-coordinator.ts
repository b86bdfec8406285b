// In-process coordination for a single gateway process: maps with expiry read from the injected
// clock. Same contract as the Redis implementation (test/coordination.test.ts runs both).
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '../errors/errors.js';
import type { Clock } from '../lib/clock.js';
import type {
  ClusterCommand,
  Coordinator,
  LockHandle,
  OnceKind,
  TicketClaims,
  ViewerLease,
} from './coordinator.js';

interface Expiring<T> {
  value: T;
  expiresAt: number;
}

/** Maps are swept of expired entries at most this often, so abandoned keys cannot pile up. */
const SWEEP_EVERY_MS = 10_000;
/** A fencing counter outlives any lock of its key by far; it only has to grow while holders overlap. */
const FENCE_TTL_MS = 24 * 3600_000;

export class MemoryCoordinator implements Coordinator {
  private readonly tickets = new Map<string, Expiring<TicketClaims>>();
  private readonly locks = new Map<string, Expiring<string>>();
  private readonly once = new Map<string, Expiring<string>>();
  /** Each lock key's last fence, kept a day after its last grant (as in Redis). */
  private readonly fences = new Map<string, Expiring<number>>();
  private readonly viewers = new Map<string, Map<string, Expiring<ViewerLease>>>();
  private readonly handlers: ((command: ClusterCommand) => void)[] = [];
  private lastSweep = 0;

  constructor(private readonly clock: Clock) {}

  private sweep(): void {
    const now = this.clock.now();
    if (now - this.lastSweep < SWEEP_EVERY_MS) return;
    this.lastSweep = now;
    for (const map of [this.tickets, this.locks, this.fences, this.once] as Map<
      string,
      Expiring<unknown>
    >[]) {
      for (const [k, v] of map) if (v.expiresAt <= now) map.delete(k);
    }
    for (const [sessionId, leases] of this.viewers) {
      for (const [id, lease] of leases) if (lease.expiresAt <= now) leases.delete(id);
      if (leases.size === 0) this.viewers.delete(sessionId);
    }
  }

  issueTicket(claims: TicketClaims, ttlMs: number): Promise<string> {
    this.sweep();
    const ticket = randomBytes(24).toString('base64url');
    this.tickets.set(ticket, { value: { ...claims }, expiresAt: this.clock.now() + ttlMs });
    return Promise.resolve(ticket);
  }

  redeemTicket(ticket: string): Promise<TicketClaims | null> {
    const entry = this.tickets.get(ticket);
    this.tickets.delete(ticket);
    if (!entry || entry.expiresAt <= this.clock.now()) return Promise.resolve(null);
    return Promise.resolve(entry.value);
  }

  putOnce(kind: OnceKind, id: string, value: string, ttlMs: number): Promise<void> {
    this.sweep();
    this.once.set(`${kind}:${id}`, { value, expiresAt: this.clock.now() + ttlMs });
    return Promise.resolve();
  }

  takeOnce(kind: OnceKind, id: string): Promise<string | null> {
    const key = `${kind}:${id}`;
    const entry = this.once.get(key);
    this.once.delete(key);
    if (!entry || entry.expiresAt <= this.clock.now()) return Promise.resolve(null);
    return Promise.resolve(entry.value);
  }

  tryLock(key: string, ttlMs: number): Promise<LockHandle | null> {
    this.sweep();
    const held = this.locks.get(key);
    if (held && held.expiresAt > this.clock.now()) return Promise.resolve(null);
    const fence = (this.fences.get(key)?.value ?? 0) + 1;
    this.fences.set(key, { value: fence, expiresAt: this.clock.now() + FENCE_TTL_MS });
    const token = `${fence}:${randomBytes(12).toString('base64url')}`;
    this.locks.set(key, { value: token, expiresAt: this.clock.now() + ttlMs });
    return Promise.resolve({ key, token, fence });
  }

  unlock(handle: LockHandle): Promise<void> {
    if (this.locks.get(handle.key)?.value === handle.token) this.locks.delete(handle.key);
    return Promise.resolve();
  }

  extendLock(handle: LockHandle, ttlMs: number): Promise<boolean> {
    const held = this.locks.get(handle.key);
    if (!held || held.value !== handle.token || held.expiresAt <= this.clock.now())
      return Promise.resolve(false);
    held.expiresAt = this.clock.now() + ttlMs;
    return Promise.resolve(true);
  }

  async withLock<T>(key: string, ttlMs: number, waitMs: number, fn: () => Promise<T>): Promise<T> {
    return withLockPolling(this, key, ttlMs, waitMs, fn);
  }

  putViewer(lease: ViewerLease, ttlMs: number): Promise<void> {
    this.sweep();
    let leases = this.viewers.get(lease.sessionId);
    if (!leases) this.viewers.set(lease.sessionId, (leases = new Map<string, Expiring<ViewerLease>>()));
    leases.set(lease.viewerId, { value: { ...lease }, expiresAt: this.clock.now() + ttlMs });
    return Promise.resolve();
  }

  addViewerWithin(lease: ViewerLease, ttlMs: number, max: number): Promise<boolean> {
    this.sweep();
    const now = this.clock.now();
    const leases = this.viewers.get(lease.sessionId);
    let live = 0;
    for (const l of leases?.values() ?? []) if (l.expiresAt > now) live++;
    const held = (leases?.get(lease.viewerId)?.expiresAt ?? 0) > now;
    if (!held && live >= max) return Promise.resolve(false);
    return this.putViewer(lease, ttlMs).then(() => true);
  }

  removeViewer(sessionId: string, viewerId: string): Promise<void> {
    const leases = this.viewers.get(sessionId);
    leases?.delete(viewerId);
    if (leases?.size === 0) this.viewers.delete(sessionId);
    return Promise.resolve();
  }

  countViewers(sessionIds: readonly string[]): Promise<Map<string, number>> {
    const now = this.clock.now();
    const counts = new Map<string, number>();
    for (const id of sessionIds) {
      let n = 0;
      for (const lease of this.viewers.get(id)?.values() ?? []) if (lease.expiresAt > now) n++;
      counts.set(id, n);
    }
    return Promise.resolve(counts);
  }

  listViewers(sessionIds: readonly string[]): Promise<Map<string, ViewerLease[]>> {
    const now = this.clock.now();
    const out = new Map<string, ViewerLease[]>();
    for (const id of sessionIds) {
      const live = [...(this.viewers.get(id)?.values() ?? [])].filter((l) => l.expiresAt > now);
      out.set(
        id,
        live.map((l) => ({ ...l.value })),
      );
    }
    return Promise.resolve(out);
  }

  publish(command: ClusterCommand): Promise<void> {
    // Delivered on a later tick, as over Redis, so senders never re-enter their own handlers.
    queueMicrotask(() => {
      for (const h of this.handlers) h(command);
    });
    return Promise.resolve();
  }

  onCommand(handler: (command: ClusterCommand) => void): void {
    this.handlers.push(handler);
  }

  ping(): Promise<void> {
    return Promise.resolve();
  }

  state(): 'up' | 'down' {
    return 'up';
  }

  close(): Promise<void> {
    this.handlers.length = 0;
    return Promise.resolve();
  }
}

/**
 * Shared by both implementations: poll `tryLock` with jitter until `waitMs` passes, run `fn` holding
 * the lock, renewing it every third of `ttlMs` while `fn` runs (a lease: `ttlMs` bounds how long a
 * holder that died keeps the others out, not how long `fn` may take). A renewal that fails — the lock
 * lapsed, the coordinator is away — stops the renewals; `fn` is not interrupted (it has its own
 * bounds), as when a lock lapses mid-section. Real time is used for the wait and the renewals (they
 * bound a request), the lock's own expiry follows the coordinator's clock.
 */
export async function withLockPolling<T>(
  coordinator: Pick<Coordinator, 'tryLock' | 'unlock' | 'extendLock'>,
  key: string,
  ttlMs: number,
  waitMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + waitMs;
  let delay = 10;
  for (;;) {
    const handle = await coordinator.tryLock(key, ttlMs);
    if (handle) {
      const renewal = renewWhileHeld(coordinator, handle, ttlMs);
      try {
        return await fn();
      } finally {
        renewal.stop();
        // A failed release (Redis gone mid-way) must not replace fn's own result or error: the
        // lock lapses by itself after ttlMs.
        await coordinator.unlock(handle).catch(() => undefined);
      }
    }
    if (Date.now() >= deadline) {
      throw new AppError('BUSY', { details: { retryAfterSeconds: 2 } });
    }
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 200);
  }
}

/** Extends `handle` by `ttlMs` every third of it until stopped or a renewal fails. */
function renewWhileHeld(
  coordinator: Pick<Coordinator, 'extendLock'>,
  handle: LockHandle,
  ttlMs: number,
): { stop(): void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    timer = setTimeout(() => {
      coordinator.extendLock(handle, ttlMs).then(
        (held) => {
          if (held && !stopped) schedule();
        },
        () => undefined,
      );
    }, ttlMs / 3);
    timer.unref();
  };
  schedule();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
