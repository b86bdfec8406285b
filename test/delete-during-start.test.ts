// Deleting an instance, or its owner's account, while a desktop start for it is running must not leave
// that desktop running on the machine, with real parts: OpenSSH sshd, TigerVNC Xvnc + openbox, gateways
// listening on loopback and real concurrent HTTP clients; one gateway (SQLite, in-process coordination),
// then two on one PostgreSQL database and one Redis (the delete on the other gateway). A start is held at a
// gate, before it reaches the instance or after its desktop is up but not yet recorded, and the delete is
// fired meanwhile. The gate opens once the delete has answered or is seen waiting for a lock another holds
// (the start's connect lock), so what is asserted is order, never elapsed time.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { systemClock } from '../src/lib/clock.js';
import { createLogger } from '../src/observability/logger.js';
import type { Coordinator } from '../src/coordination/coordinator.js';
import { MemoryCoordinator } from '../src/coordination/memory-coordinator.js';
import { RedisCoordinator } from '../src/coordination/redis-coordinator.js';
import { desktopMarker, type DesktopHandle, type DesktopService } from '../src/desktop/desktop.service.js';
import { listenTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { createTestDatabase } from './helpers/postgres-database.js';
import { Counter, gate, type DesktopOps } from './helpers/desktop-gateway.js';
import { isProcessAlive, processesWithEnv, startSshd, type SshdFixture } from './helpers/sshd.js';

type HoldAt = 'before-start' | 'after-start';

/** What the tests hold and observe around one gateway's desktop starts and its lock requests. */
class StartProbe {
  /** Where the next start waits (replaced per test); resolved: it does not wait. */
  beforeStart: () => Promise<void> = () => Promise.resolve();
  afterStart: () => Promise<void> = () => Promise.resolve();
  beforeStop: () => Promise<void> = () => Promise.resolve();
  readonly startsEntered = new Counter();
  /** The desktops the real service started, in order (`startsUp` counts them). */
  readonly started: DesktopHandle[] = [];
  readonly startsUp = new Counter();
  readonly stopsEntered = new Counter();
  /** Requests for a connect lock refused because another holds it (a caller that has to wait). */
  readonly connectLocksRefused = new Counter();

  wrap = (real: DesktopService): DesktopOps => ({
    start: async (target, de) => {
      this.startsEntered.bump();
      await this.beforeStart();
      const result = await real.start(target, de);
      this.started.push(result.handle);
      this.startsUp.bump();
      await this.afterStart();
      return result;
    },
    stop: async (target, handle) => {
      this.stopsEntered.bump();
      await this.beforeStop();
      await real.stop(target, handle);
    },
    isAlive: (target, handle) => real.isAlive(target, handle),
  });

  watchLocks<C extends Coordinator>(coordinator: C): C {
    const tryLock = coordinator.tryLock.bind(coordinator);
    coordinator.tryLock = async (key, ttlMs) => {
      const handle = await tryLock(key, ttlMs);
      if (!handle && key.startsWith('connect:')) this.connectLocksRefused.bump();
      return handle;
    };
    return coordinator;
  }

  /** Holds the next start at `at` until `open` resolves (then lets every later start through). */
  holdNext(at: HoldAt, open: Promise<void>): void {
    const held = () => {
      this.beforeStart = this.afterStart = () => Promise.resolve();
      return open;
    };
    if (at === 'before-start') this.beforeStart = held;
    else this.afterStart = held;
  }
}

/** The desktop's Xvnc, if it still lives, and every live process carrying its marker. */
async function leftovers(handle: DesktopHandle): Promise<number[]> {
  const { display, pid } = handle;
  return [...(isProcessAlive(pid) ? [pid] : []), ...(await processesWithEnv(desktopMarker({ display, pid })))]
    .filter((p, i, all) => all.indexOf(p) === i)
    .filter(isProcessAlive);
}

const request = (base: string, method: string, path: string, token: string, body?: unknown) =>
  fetch(`http://${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(90_000),
  });
const connect = (base: string, token: string, instanceId: string) =>
  request(base, 'POST', '/api/sessions/connect', token, { instanceId, desktopEnvironment: 'openbox' });

async function answer(res: Response): Promise<string> {
  const body = (await res.json().catch(() => ({}))) as { error?: { code: string } };
  return body.error ? `${res.status} ${body.error.code}` : String(res.status);
}

/**
 * The connect `starting` is held at `at`; `del` is fired meanwhile (on any gateway) and the start let go
 * once the delete answered or a lock request was refused on `deleter`. Both answers, once settled.
 */
async function deleteDuringStart(
  starter: StartProbe,
  deleter: StartProbe,
  at: HoldAt,
  starting: () => Promise<Response>,
  del: () => Promise<Response>,
): Promise<{ connect: string; del: string; desktop: DesktopHandle | undefined }> {
  const startGate = gate();
  starter.holdNext(at, startGate.promise);
  const entered = starter.startsEntered.value;
  const startedBefore = starter.started.length;
  const connecting = starting();
  await starter.startsEntered.reach(entered + 1);
  if (at === 'after-start') await starter.startsUp.reach(startedBefore + 1);
  const refused = deleter.connectLocksRefused.value;
  const deleting = del();
  await Promise.race([deleting, deleter.connectLocksRefused.reach(refused + 1)]);
  startGate.open();
  const [c, d] = await Promise.all([connecting, deleting]);
  return { connect: await answer(c), del: await answer(d), desktop: starter.started[startedBefore] };
}

describe('an instance or account deleted while its desktop starts (sshd + TigerVNC, one gateway)', () => {
  let sshd: SshdFixture;
  let gw: TestGateway & { base: string };
  const probe = new StartProbe();

  before(async () => {
    sshd = await startSshd({ users: 1 });
    gw = await listenTestGateway(
      { VNC_DISPLAY_MIN: '40', VNC_DISPLAY_MAX: '99', RATE_LIMIT_MAX_REQUESTS: '100000' },
      {
        wrapDesktops: probe.wrap,
        coordinator: probe.watchLocks(new MemoryCoordinator(systemClock)),
      },
    );
  });
  after(async () => {
    await gw?.cleanup();
    await sshd?.stop();
  });
  const target = () => ({ host: sshd.host, port: sshd.port, user: sshd.users[0]! });

  for (const at of ['before-start', 'after-start'] as const) {
    test(`instance deleted while its desktop start is held ${at}: the delete answers 204 with no desktop of it left`, async () => {
      const user = await newUser(gw);
      const instance = await newInstance(gw, user, target());
      const r = await deleteDuringStart(
        probe,
        probe,
        at,
        () => connect(gw.base, user.accessToken, instance.id),
        () => request(gw.base, 'DELETE', `/api/instances/${instance.id}`, user.accessToken),
      );
      assert.equal(r.del, '204');
      // It got its desktop before the delete (which then ended it), or found its session or instance gone.
      assert.ok(['201', '410 SESSION_ENDED', '404 INSTANCE_NOT_FOUND'].includes(r.connect), r.connect);
      assert.ok(r.desktop, 'the held start brought a desktop up');
      assert.deepEqual(await leftovers(r.desktop), [], 'no Xvnc or desktop process left once both answered');
      await gw.sessions.stopper.settled();
      assert.deepEqual(await leftovers(r.desktop), []);
      const rows = await gw.store.db
        .selectFrom('sessions')
        .select('id')
        .where('instance_id', '=', instance.id)
        .execute();
      assert.deepEqual(rows, [], 'the sessions went with the instance');
    });
  }

  test('a connect while the delete runs (its stop held): 404 INSTANCE_NOT_FOUND, no desktop started', async () => {
    const user = await newUser(gw);
    const instance = await newInstance(gw, user, target());
    assert.equal(await answer(await connect(gw.base, user.accessToken, instance.id)), '201');
    const first = probe.started.at(-1)!;
    const stopGate = gate();
    probe.beforeStop = () => stopGate.promise;
    const stops = probe.stopsEntered.value;
    const deleting = request(gw.base, 'DELETE', `/api/instances/${instance.id}`, user.accessToken);
    await probe.stopsEntered.reach(stops + 1);
    // The delete has ended the live session and is stopping its desktop: the instance is still there.
    const startedBefore = probe.started.length;
    const refused = probe.connectLocksRefused.value;
    const connecting = connect(gw.base, user.accessToken, instance.id);
    await Promise.race([connecting, probe.connectLocksRefused.reach(refused + 1)]);
    stopGate.open();
    probe.beforeStop = () => Promise.resolve();
    const [c, d] = await Promise.all([connecting, deleting]);
    assert.equal(await answer(d), '204');
    assert.equal(await answer(c), '404 INSTANCE_NOT_FOUND');
    await gw.sessions.connectsSettled();
    await gw.sessions.stopper.settled();
    const late = probe.started.slice(startedBefore);
    assert.deepEqual(late, [], 'no desktop started for the instance being deleted');
    assert.deepEqual(await leftovers(first), []);
  });

  for (const at of ['before-start', 'after-start'] as const) {
    test(`the owner's account deleted (rows cascade) while the start is held ${at}: the start stops the desktop it started`, async () => {
      const user = await newUser(gw);
      const instance = await newInstance(gw, user, target());
      const r = await deleteDuringStart(
        probe,
        probe,
        at,
        () => connect(gw.base, user.accessToken, instance.id),
        // No API deletes an account; what a store-level delete (or one a start cannot see) leaves: no rows.
        async () => {
          await gw.store.db.deleteFrom('users').where('id', '=', user.id).execute();
          return new Response(null, { status: 204 });
        },
      );
      assert.ok(/^4\d\d /.test(r.connect), `a coded refusal, not ${r.connect}`);
      assert.ok(r.desktop, 'the held start brought a desktop up');
      assert.deepEqual(await leftovers(r.desktop), [], 'stopped by the start that made it');
      await gw.sessions.stopper.settled();
      assert.deepEqual(await leftovers(r.desktop), []);
    });
  }
});

const REDIS_URL = 'redis://127.0.0.1:6379';

describe('an instance deleted on one gateway while the other starts its desktop (PostgreSQL + Redis)', () => {
  let sshd: SshdFixture;
  let db: { url: string; drop(): Promise<void> };
  const gateways: (TestGateway & { base: string })[] = [];
  const probes = [new StartProbe(), new StartProbe()] as const;
  const prefix = `cd-test-delete-start-${randomBytes(4).toString('hex')}:`;

  before(async () => {
    [sshd, db] = await Promise.all([startSshd({ users: 1 }), createTestDatabase()]);
    for (const [i, node] of ['gw-a', 'gw-b'].entries()) {
      const coordinator = new RedisCoordinator({
        url: REDIS_URL,
        clock: systemClock,
        logger: createLogger({ level: 'silent' }),
        keyPrefix: prefix,
      });
      gateways.push(
        await listenTestGateway(
          {
            DATABASE_URL: db.url,
            REDIS_URL,
            NODE_ID: node,
            REGISTRATION: 'open',
            VNC_DISPLAY_MIN: '40',
            VNC_DISPLAY_MAX: '99',
            RATE_LIMIT_MAX_REQUESTS: '100000',
          },
          { coordinator: probes[i]!.watchLocks(coordinator), wrapDesktops: probes[i]!.wrap },
        ),
      );
    }
  });
  after(async () => {
    for (const g of gateways) await g.cleanup();
    await sshd?.stop();
    await db?.drop();
  });

  for (const at of ['before-start', 'after-start'] as const) {
    test(`start on A held ${at}, delete on B: B answers 204, and no desktop of the instance is left`, async () => {
      const [a, b] = [gateways[0]!, gateways[1]!];
      const user = await newUser(a);
      const instance = await newInstance(a, user, { host: sshd.host, port: sshd.port, user: sshd.users[0]! });
      const r = await deleteDuringStart(
        probes[0],
        probes[1],
        at,
        () => connect(a.base, user.accessToken, instance.id),
        () => request(b.base, 'DELETE', `/api/instances/${instance.id}`, user.accessToken),
      );
      assert.equal(r.del, '204');
      assert.ok(['201', '410 SESSION_ENDED', '404 INSTANCE_NOT_FOUND'].includes(r.connect), r.connect);
      assert.ok(r.desktop, 'the held start brought a desktop up');
      await Promise.all(gateways.map((g) => g.sessions.stopper.settled()));
      assert.deepEqual(await leftovers(r.desktop), [], 'no Xvnc or desktop process left');
    });
  }
});
