// PostgreSQL failover under load (issue 11, "PostgreSQL that fails over"): the HA stack of
// docs/operations.md on loopback (etcd + two Patroni nodes, synchronous replication, HAProxy on
// Patroni's /primary check; test/helpers/patroni-cluster.ts), a real gateway process whose
// DATABASE_URL is HAProxy, OpenSSH sshd + TigerVNC desktops. While sign-ups, instance creations,
// connects and disconnects run in a loop and a viewer streams, the primary's postmaster is killed with
// SIGKILL. Then:
// - every write answered 2xx is in the new primary, row by row against the client-side log;
// - nothing was answered 500; every refusal is 503 STORE_UNAVAILABLE; a second gateway that never
//   retries (DATABASE_RETRY_MS=0) shows that 503 path during the outage and serves again unrestarted;
// - /api/ready went 503 and came back by itself, and the API serves writes again (bound: the plan's
//   30 s; the measured times are reported as diagnostics and written in docs/reliability.md);
// - the open stream kept flowing; the usage the activity buffer and the events the audit buffer held
//   through the outage were written.
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPatroniCluster, type PatroniCluster } from './helpers/patroni-cluster.js';
import { startGatewayProcess, type GatewayProcess } from './helpers/gateway-process.js';
import { processesWithEnv, startSshd, terminate, type SshdFixture } from './helpers/sshd.js';
import { RfbTestClient } from './helpers/rfb-client.js';
import { TEST_SECRETS } from './helpers/test-secrets.js';

const RECOVERY_BOUND_MS = 30_000; // the plan's target, used as the wait bound
const WORKERS = 3;

type OpKind = 'register' | 'instance' | 'connect' | 'disconnect';
interface Op {
  kind: OpKind;
  sentAt: number;
  answeredAt: number;
  status: number;
  code?: string;
  /** The id the 2xx answer named (user, instance or session). */
  id?: string;
  /** For an instance: its owner; for a session: its instance. */
  parent?: string;
  email?: string;
}

interface Answer {
  status: number;
  body: { data?: Record<string, unknown>; error?: { code: string; message: string } };
}

async function call(
  base: string,
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<Answer> {
  try {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    let parsed: Answer['body'] = {};
    try {
      parsed = JSON.parse(text) as Answer['body'];
    } catch {
      // not JSON: kept as an empty body, the status tells
    }
    return { status: res.status, body: parsed };
  } catch {
    // The gateway is not answering at all (a failure the test reports); do not spin.
    await sleep(100);
    return { status: 0, body: {} };
  }
}

void describe('PostgreSQL failover: SIGKILL the primary under load', { timeout: 300_000 }, () => {
  let cluster: PatroniCluster;
  let sshd: SshdFixture;
  let gateway: GatewayProcess;
  /** A second gateway that never retries (DATABASE_RETRY_MS=0): what it answers during the outage is the 503 path. */
  let strict: GatewayProcess;
  /** Set by the test when it is done, and by `after` when it failed midway: the loops end either way. */
  let stopLoad = false;
  let background: Promise<unknown>[] = [];

  before(async () => {
    [cluster, sshd] = await Promise.all([
      startPatroniCluster(),
      startSshd({ usernames: ['cdtestpgha1', 'cdtestpgha2'] }),
    ]);
    gateway = await startGatewayProcess({
      env: {
        ...TEST_SECRETS,
        DATABASE_URL: cluster.url,
        ACTIVITY_FLUSH_MS: '300',
        DESKTOP_GEOMETRY: '400x300',
        AUTH_MAX_ATTEMPTS_PER_IP: '100000',
        RATE_LIMIT_MAX_REQUESTS: '100000',
        WS_MAX_CONNECTS_PER_MINUTE: '1000',
        LOG_LEVEL: 'info',
      },
    });
    strict = await startGatewayProcess({
      env: { ...TEST_SECRETS, DATABASE_URL: cluster.url, DATABASE_RETRY_MS: '0', LOG_LEVEL: 'info' },
    });
  });

  after(async () => {
    stopLoad = true;
    await Promise.allSettled(background);
    const logs = (await gateway?.logs()) ?? '';
    await Promise.all([gateway?.stop(), strict?.stop()]);
    let left: string[] = [];
    if (sshd) {
      const pids = await processesWithEnv(sshd.envMarker);
      left = await Promise.all(
        pids.map(
          async (pid) =>
            `${pid} ${(await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => '')).replaceAll('\0', ' ')}`,
        ),
      );
      await terminate(pids);
      await sshd.stop();
    }
    await cluster?.stop();
    // Every desktop was ended through the API (a connect refused mid-start stops its own desktop).
    const stopFailures = logs
      .split('\n')
      .filter((l) => /could not stop|desktop/i.test(l) && /"level":[45]\d/.test(l));
    assert.deepEqual(left, [], `desktop processes left behind\n${stopFailures.join('\n').slice(-3000)}`);
  });

  void it('acknowledged writes survive, 503 not 500, /api/ready 503 and back, streams flow', async (t) => {
    const base = gateway.url;
    const ops: Op[] = [];
    stopLoad = false;

    // A viewer streaming the whole time (its own user, instance and desktop).
    const viewerUser = await call(base, 'POST', '/api/auth/register', undefined, {
      email: `viewer-${Date.now()}@example.com`,
      password: 'correct horse battery staple',
    });
    assert.equal(viewerUser.status, 201, JSON.stringify(viewerUser.body));
    const viewerToken = viewerUser.body.data!.accessToken as string;
    const sshUser = sshd.users[0]!;
    const inst = await call(base, 'POST', '/api/instances', viewerToken, {
      name: 'streamed',
      host: sshd.host,
      port: sshd.port,
      username: sshUser.username,
      auth: { type: 'privateKey', privateKey: sshUser.privateKey },
    });
    assert.equal(inst.status, 201, JSON.stringify(inst.body));
    const conn = await call(base, 'POST', '/api/sessions/connect', viewerToken, {
      instanceId: inst.body.data!.id,
      desktopEnvironment: 'openbox',
    });
    assert.equal(conn.status, 201, JSON.stringify(conn.body));
    const viewerSession = conn.body.data!.sessionId as string;
    const viewer = await RfbTestClient.open(
      `${base.replace(/^http/, 'ws')}${conn.body.data!.websocketUrl as string}`,
      {
        origin: base,
      },
    );
    await viewer.handshake();
    let frames = 0;
    let streamError: unknown = null;
    const streaming = (async () => {
      while (!stopLoad && viewer.closeCode === null) {
        viewer.requestUpdate(false);
        await viewer.readFramebufferUpdate();
        frames++;
        await sleep(100);
      }
    })().catch((e: unknown) => {
      streamError = e;
    });

    // The write loop: each worker signs up, creates an instance, connects and disconnects, again and again.
    const worker = async (w: number) => {
      for (let n = 0; !stopLoad; n++) {
        const record = async (
          kind: OpKind,
          run: () => Promise<Answer>,
          idOf: (a: Answer) => string | undefined,
          extra: Partial<Op> = {},
        ) => {
          const sentAt = Date.now();
          const a = await run();
          const op: Op = {
            kind,
            sentAt,
            answeredAt: Date.now(),
            status: a.status,
            code: a.body.error?.code,
            ...extra,
          };
          if (a.status >= 200 && a.status < 300) op.id = idOf(a);
          ops.push(op);
          return a.status >= 200 && a.status < 300 ? a : null;
        };
        const email = `w${w}-${n}-${Date.now()}@example.com`;
        const reg = await record(
          'register',
          () =>
            call(base, 'POST', '/api/auth/register', undefined, {
              email,
              password: 'correct horse battery staple',
            }),
          (a) => (a.body.data!.user as { id: string }).id,
          { email },
        );
        if (!reg) continue;
        const token = reg.body.data!.accessToken as string;
        const userId = (reg.body.data!.user as { id: string }).id;
        const u = sshd.users[(w + n) % sshd.users.length]!;
        const created = await record(
          'instance',
          () =>
            call(base, 'POST', '/api/instances', token, {
              name: `box ${w}-${n}`,
              host: sshd.host,
              port: sshd.port,
              username: u.username,
              auth: { type: 'privateKey', privateKey: u.privateKey },
            }),
          (a) => a.body.data!.id as string,
          { parent: userId },
        );
        if (!created) continue;
        const instanceId = created.body.data!.id as string;
        // A connect still waiting at its answer bound (DESKTOP_START_QUEUE_WAIT_MS, shorter than the store's
        // retry budget) is answered OVERLOADED while its start goes on; like the web client, ask again for
        // the same instance, so the desktop it started is the one this worker ends.
        let connected: Awaited<ReturnType<typeof record>> = null;
        for (let tries = 0; tries < 30; tries++) {
          connected = await record(
            'connect',
            () =>
              call(base, 'POST', '/api/sessions/connect', token, {
                instanceId,
                desktopEnvironment: 'openbox',
              }),
            (a) => a.body.data!.sessionId as string,
            { parent: instanceId },
          );
          const last = ops.findLast((o) => o.kind === 'connect' && o.parent === instanceId);
          if (connected || last?.code !== 'OVERLOADED') break;
          await sleep(500);
        }
        if (!connected) continue;
        const sessionId = connected.body.data!.sessionId as string;
        // A disconnect refused during the outage is repeated until it works: no desktop is left running.
        for (let tries = 0; tries < 100; tries++) {
          const ended = await record(
            'disconnect',
            () => call(base, 'POST', `/api/sessions/disconnect/${sessionId}`, token),
            () => sessionId,
            { parent: sessionId },
          );
          const last = ops.findLast((o) => o.kind === 'disconnect' && o.parent === sessionId);
          if (ended || last?.code === 'SESSION_ENDED') break;
          await sleep(200);
        }
      }
    };

    // /api/ready, polled every 100 ms.
    const readiness: { at: number; status: number }[] = [];
    const polling = (async () => {
      while (!stopLoad) {
        readiness.push({ at: Date.now(), status: (await call(base, 'GET', '/api/ready')).status });
        await sleep(100);
      }
    })();

    // The no-retry gateway: a read of the viewer's instances, every 100 ms.
    const strictAnswers: { at: number; status: number; code?: string }[] = [];
    const strictPolling = (async () => {
      while (!stopLoad) {
        const a = await call(strict.url, 'GET', '/api/instances', viewerToken);
        strictAnswers.push({ at: Date.now(), status: a.status, code: a.body.error?.code });
        await sleep(100);
      }
    })();

    const workers = Array.from({ length: WORKERS }, (_, w) => worker(w));
    background = [...workers, polling, streaming, strictPolling];
    // Warm up: every kind of write has worked at least once before the kill.
    const warmDeadline = Date.now() + 60_000;
    while (
      !(['register', 'instance', 'connect', 'disconnect'] as const).every((k) =>
        ops.some((o) => o.kind === k && o.id),
      )
    ) {
      assert.ok(
        Date.now() < warmDeadline,
        `warm-up: ${JSON.stringify(ops.slice(-5))}\n${(await gateway.logs()).slice(-3000)}`,
      );
      await sleep(100);
    }

    const old = await cluster.primary();
    const pid = await old.postmasterPid();
    assert.ok(pid !== null, 'the primary runs');
    const bytesAtKill = viewer.bytesReceived;
    const killedAt = Date.now();
    process.kill(pid, 'SIGKILL');

    // Readiness goes 503, then 200 again by itself.
    const waitFor = async (what: string, cond: () => boolean | Promise<boolean>, boundMs: number) => {
      const deadline = Date.now() + boundMs;
      while (!(await cond())) {
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}\n${cluster.logs().slice(-4000)}`);
        await sleep(50);
      }
    };
    await waitFor(
      '/api/ready 503',
      () => readiness.some((r) => r.at >= killedAt && r.status === 503),
      RECOVERY_BOUND_MS,
    );
    const notReadyAt = readiness.find((r) => r.at >= killedAt && r.status === 503)!.at;
    await waitFor(
      '/api/ready 200 again',
      () => readiness.some((r) => r.at > notReadyAt && r.status === 200),
      RECOVERY_BOUND_MS,
    );
    const readyAgainAt = readiness.find((r) => r.at > notReadyAt && r.status === 200)!.at;
    // Writes served again: a sign-up sent after the kill answered 201.
    await waitFor(
      'a sign-up sent after the kill to succeed',
      () => ops.some((o) => o.kind === 'register' && o.sentAt > killedAt && o.status === 201),
      RECOVERY_BOUND_MS,
    );
    const firstWrite = ops
      .filter((o) => o.kind === 'register' && o.sentAt > killedAt && o.status === 201)
      .sort((a, b) => a.answeredAt - b.answeredAt)[0]!;
    const bytesAtRecovery = viewer.bytesReceived;
    const framesAtRecovery = frames;
    // Keep the load on for a while after recovery: every kind of write works again.
    await waitFor(
      'every kind of write after recovery',
      () =>
        (['register', 'instance', 'connect', 'disconnect'] as const).every((k) =>
          ops.some((o) => o.kind === k && o.sentAt > readyAgainAt && o.id),
        ),
      60_000,
    );
    // And the no-retry gateway: a 200 after its 503s (its pool finds the new primary on its own, in
    // its own time: the load must not stop before it has).
    const strictBackAfterOutage = () => {
      const during = strictAnswers.filter((a) => a.at >= killedAt);
      const last503 = during.findLast((a) => a.status === 503);
      // (none at all is asserted below, with its own message)
      if (last503 === undefined) return true;
      return during.some((a) => a.at > last503.at && a.status === 200);
    };
    await waitFor('the no-retry gateway to serve again', strictBackAfterOutage, RECOVERY_BOUND_MS);
    stopLoad = true;
    await Promise.all([...workers, polling, streaming, strictPolling]);

    // The stream: never closed, and it moved bytes during the outage.
    assert.equal(streamError, null, 'the open stream kept answering');
    assert.equal(viewer.closeCode, null, 'the open stream was not dropped');
    assert.ok(bytesAtRecovery > bytesAtKill, 'the stream flowed while the store was away');
    viewer.close();
    await viewer.closed;

    // Answers: 2xx, or 503 STORE_UNAVAILABLE (a connect: or OVERLOADED at its answer bound); never a 500.
    // A disconnect repeated after a 503 may find its first run did end the session: 410 SESSION_ENDED.
    const refused = ops.filter(
      (o) =>
        (o.status < 200 || o.status >= 300) &&
        !(o.kind === 'disconnect' && o.code === 'SESSION_ENDED') &&
        // the connect's answer bound passed while the store was away (asked again above)
        !(o.kind === 'connect' && o.status === 503 && o.code === 'OVERLOADED'),
    );
    for (const o of refused) {
      assert.equal(o.status, 503, `${o.kind} answered ${o.status} ${o.code ?? ''}`);
      assert.equal(o.code, 'STORE_UNAVAILABLE', `${o.kind} answered 503 ${o.code ?? ''}`);
    }
    // Without retries, the outage shows as 503 STORE_UNAVAILABLE (never a 500), and the same process
    // serves again afterwards: its pool reconnected without a restart.
    const strictDuring = strictAnswers.filter((a) => a.at >= killedAt);
    const strict503 = strictDuring.filter((a) => a.status === 503);
    assert.ok(strict503.length > 0, 'the no-retry gateway answered 503 during the outage');
    for (const a of strictDuring.filter((x) => x.status !== 200)) {
      assert.equal(a.status, 503, `no-retry gateway answered ${a.status} ${a.code ?? ''}`);
      assert.equal(a.code, 'STORE_UNAVAILABLE');
    }
    const strictBack = strictDuring.find((a) => a.at > strict503.at(-1)!.at && a.status === 200);
    assert.ok(strictBack, 'the no-retry gateway serves again without a restart');
    const spanning = ops.filter((o) => o.sentAt <= killedAt + 3000 && o.answeredAt >= killedAt);
    const longest = Math.max(...spanning.map((o) => o.answeredAt - o.sentAt));

    // Every 2xx write is in the database the new primary serves, row by row. Patroni promotes the
    // synchronous standby when it can confirm that standby is fit (its REST API answered, its WAL is
    // close enough); when it cannot in time (seen once in ten runs on a loaded machine) it restarts
    // the crashed primary in place instead. Either way nothing acknowledged may be missing.
    const newPrimary = await cluster.primary();
    const path =
      newPrimary.name !== old.name
        ? `failed over ${old.name} → ${newPrimary.name}`
        : `restarted ${old.name} in place`;
    const db = new pg.Client({ connectionString: cluster.url });
    await db.connect();
    try {
      const acked = (k: OpKind) => ops.filter((o) => o.kind === k && o.id !== undefined);
      const ids = (rows: { id: string }[]) => new Set(rows.map((r) => r.id));
      const users = await db.query<{ id: string; email: string }>(
        'select id, email from users where id = any($1)',
        [acked('register').map((o) => o.id)],
      );
      const userEmail = new Map(users.rows.map((r) => [r.id, r.email]));
      for (const o of acked('register'))
        assert.equal(userEmail.get(o.id!), o.email, `user ${o.id} (${o.email})`);
      const instances = await db.query<{ id: string; user_id: string }>(
        'select id, user_id from instances where id = any($1)',
        [acked('instance').map((o) => o.id)],
      );
      const owner = new Map(instances.rows.map((r) => [r.id, r.user_id]));
      for (const o of acked('instance')) assert.equal(owner.get(o.id!), o.parent, `instance ${o.id}`);
      const sessions = await db.query<{ id: string; instance_id: string; status: string }>(
        'select id, instance_id, status from sessions where id = any($1)',
        [acked('connect').map((o) => o.id)],
      );
      const session = new Map(sessions.rows.map((r) => [r.id, r]));
      for (const o of acked('connect'))
        assert.equal(session.get(o.id!)?.instance_id, o.parent, `session ${o.id}`);
      for (const o of acked('disconnect'))
        assert.equal(session.get(o.id!)?.status, 'ended', `ended session ${o.id}`);
      assert.ok(ids(users.rows).size === acked('register').length);

      // The audit buffer held its rows through the outage and wrote them: one per acknowledged write.
      const expected = [
        ...acked('register').map((o) => `auth.register ${o.id}`),
        ...acked('instance').map((o) => `instance.created ${o.id}`),
        ...acked('connect').map((o) => `session.started ${o.id}`),
      ];
      let missing: string[] = expected;
      await waitFor(
        'the audit rows of every acknowledged write',
        async () => {
          const r = await db.query<{ k: string }>(
            "select type || ' ' || target_id as k from audit_events where type in ('auth.register', 'instance.created', 'session.started')",
          );
          const have = new Set(r.rows.map((x) => x.k));
          missing = expected.filter((k) => !have.has(k));
          return missing.length === 0;
        },
        15_000,
      ).catch(() => assert.fail(`audit rows missing: ${missing.join(', ')}`));

      // The activity buffer held the usage of the outage and wrote it: the session's total covers
      // every byte the viewer received (it is written after the viewer left, within a few flushes).
      await waitFor(
        'the viewer’s usage written',
        async () => {
          const r = await db.query<{ b: string }>('select bytes_to_viewer as b from sessions where id = $1', [
            viewerSession,
          ]);
          return Number(r.rows[0]?.b ?? 0) >= viewer.bytesReceived;
        },
        15_000,
      );
    } finally {
      await db.end();
    }
    const ended = await call(base, 'POST', `/api/sessions/disconnect/${viewerSession}`, viewerToken);
    assert.equal(ended.status, 200, JSON.stringify(ended.body));
    // Desktops of ended sessions are stopped in the background (sessions/desktop-stopper.ts): wait for
    // every one, so the teardown's check for left-behind processes sees the finished state.
    const check = new pg.Client({ connectionString: cluster.url });
    await check.connect();
    try {
      let due: unknown[] = [];
      await waitFor(
        'every ended session’s desktop stopped',
        async () => {
          due = (
            await check.query(
              'select id, status, stop_attempts, stop_due_at - $1::bigint as due_in_ms from sessions where stop_due_at is not null',
              [Date.now()],
            )
          ).rows;
          return due.length === 0;
        },
        60_000,
      ).catch(async (e: Error) => {
        const stopLines = (await gateway.logs())
          .split('\n')
          .filter((l) => /desktop stop|stop the desktop/.test(l))
          .slice(-20);
        throw new Error(`${e.message.split('\n')[0]}: ${JSON.stringify(due)}\n${stopLines.join('\n')}`);
      });
    } finally {
      await check.end();
    }

    const count = (k: OpKind) => ops.filter((o) => o.kind === k && o.id).length;
    t.diagnostic(
      `SIGKILL (${path}) → /api/ready 503 after ${notReadyAt - killedAt} ms, 200 again after ${readyAgainAt - killedAt} ms; ` +
        `first sign-up sent after the kill answered 201 after ${firstWrite.answeredAt - killedAt} ms; ` +
        `longest request across the kill ${longest} ms; no-retry gateway: ${strict503.length} × 503 until ${strictBack.at - killedAt} ms; ${refused.length} answers 503 STORE_UNAVAILABLE ` +
        `(${[...new Set(refused.map((o) => o.kind))].join(', ') || 'none'}); 2xx writes checked: ` +
        `${count('register')} users, ${count('instance')} instances, ${count('connect')} sessions, ${count('disconnect')} ends; ` +
        `viewer: ${framesAtRecovery} frames by recovery, ${bytesAtRecovery - bytesAtKill} bytes during the outage`,
    );
  });
});
