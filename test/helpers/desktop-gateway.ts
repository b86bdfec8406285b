// Test fixture: one gateway listening on loopback (embedded store, in-process coordination) before one
// real sshd with a test user, whose desktop starts and stops go to the real DesktopService (TigerVNC Xvnc
// + openbox) through a wrapper the test hands in, so a test can hold a start or stop at a gate and
// assert order, never elapsed time. Also the gate and counter such tests hold and count with.
import type { DesktopService } from '../../src/desktop/desktop.service.js';
import { listenTestGateway, type TestGateway } from './builders.js';
import { startSshd, type SshdFixture, type SshdTestUser } from './sshd.js';

export type DesktopOps = Pick<DesktopService, 'start' | 'stop' | 'isAlive'>;

export interface Gate {
  promise: Promise<void>;
  open(): void;
}
export function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** Resolves `reach(n)` once `bump()` has been called n times. */
export class Counter {
  private n = 0;
  private waiters: { at: number; resolve: () => void }[] = [];
  bump(): void {
    this.n++;
    this.waiters = this.waiters.filter((w) => (this.n >= w.at ? (w.resolve(), false) : true));
  }
  get value(): number {
    return this.n;
  }
  reach(at: number): Promise<void> {
    if (this.n >= at) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ at, resolve }));
  }
}

export interface DesktopGateway {
  sshd: SshdFixture;
  gw: TestGateway & { base: string };
  /** The sshd's test user as an instance target. */
  target(): { host: string; port: number; user: SshdTestUser };
  stop(): Promise<void>;
}

/**
 * `env` is added to displays 40–99, two sessions a user and no practical rate limit; the background
 * stop retries fast (20–100 ms backoff).
 */
export async function startDesktopGateway(
  env: Record<string, string>,
  wrapDesktops: (real: DesktopService) => DesktopOps,
): Promise<DesktopGateway> {
  const sshd = await startSshd({ users: 1 });
  let gw: TestGateway & { base: string };
  try {
    gw = await listenTestGateway(
      {
        VNC_DISPLAY_MIN: '40',
        VNC_DISPLAY_MAX: '99',
        MAX_SESSIONS_PER_USER: '2',
        RATE_LIMIT_MAX_REQUESTS: '100000',
        ...env,
      },
      { wrapDesktops, desktopStops: { baseBackoffMs: 20, maxBackoffMs: 100 } },
    );
  } catch (err) {
    await sshd.stop();
    throw err;
  }
  return {
    sshd,
    gw,
    target: () => ({ host: sshd.host, port: sshd.port, user: sshd.users[0]! }),
    async stop() {
      await gw.cleanup();
      await sshd.stop();
    },
  };
}
