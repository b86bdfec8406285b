// Ends of one session racing across two gateways (issue 11, the soak's 500 on disconnect), on one
// PostgreSQL database and one Redis, with real sshd + TigerVNC desktops: the owner's disconnect sent to
// both gateways at once (a client retrying through the balancer while its first try still runs), and
// the instance deleted on the other gateway meanwhile. Every answer is one the API documents (200, 410
// SESSION_ENDED, 404 once the instance and its sessions are gone), never a 500, and the session is
// ended once (one audit event). Whichever gateway ends it, its desktop does not outlive the instance: no
// Xvnc or process of that desktop is left once the delete has answered.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { desktopMarker } from '../src/desktop/desktop.service.js';
import { newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { isProcessAlive, processesWithEnv, type SshdFixture } from './helpers/sshd.js';
import { startTwoGateways, type ListeningGateway, type TwoGateways } from './helpers/two-gateways.js';

const ROUNDS = 4;

describe('one session ended at once from two gateways (PostgreSQL + Redis, sshd + TigerVNC)', () => {
  let sshd: SshdFixture;
  let cluster: TwoGateways | undefined;
  let gateways: ListeningGateway[] = [];

  before(async () => {
    cluster = await startTwoGateways('end-race');
    ({ sshd, gateways } = cluster);
  });
  after(async () => {
    await cluster?.stop();
  });

  test(
    'disconnects on both gateways, and an instance delete: no 500, ended once',
    { timeout: 180_000 },
    async () => {
      const [a, b] = [gateways[0]!, gateways[1]!];
      const alice = await newUser(a);
      const answers: string[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const withDelete = round % 2 === 1;
        const instance = await newInstance(a, alice, {
          host: sshd.host,
          port: sshd.port,
          user: sshd.users[0]!,
        });
        const connect = await a.app.inject({
          method: 'POST',
          url: '/api/sessions/connect',
          headers: alice.auth,
          payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
        });
        assert.equal(connect.statusCode, 201, connect.body);
        const { sessionId } = connect.json().data as { sessionId: string };
        const { display, desktop_pid: pid } = await a.store.db
          .selectFrom('sessions')
          .select(['display', 'desktop_pid'])
          .where('id', '=', sessionId)
          .executeTakeFirstOrThrow();
        assert.ok(display !== null && pid !== null && isProcessAlive(pid));
        const disconnect = (g: TestGateway) =>
          g.app.inject({ method: 'POST', url: `/api/sessions/disconnect/${sessionId}`, headers: alice.auth });
        const calls = [disconnect(a), disconnect(b), disconnect(b)];
        if (withDelete)
          calls.push(
            b.app.inject({ method: 'DELETE', url: `/api/instances/${instance.id}`, headers: alice.auth }),
          );
        const results = await Promise.all(calls);
        for (const r of results) {
          const code = r.statusCode >= 400 ? ` ${r.json<{ error: { code: string } }>().error.code}` : '';
          answers.push(`${r.statusCode}${code}`);
          assert.ok(r.statusCode < 500, `round ${round}: ${r.statusCode} ${r.body}`);
        }
        const ends = results.slice(0, 3).map((r) => r.statusCode);
        if (!withDelete)
          assert.ok(ends.includes(200), `round ${round}: one disconnect ends it (${ends.join(', ')})`);
        for (const s of ends) assert.ok([200, 410, 404].includes(s), `round ${round}: ${s}`);
        if (withDelete) {
          assert.equal(results[3]!.statusCode, 204, results[3]!.body);
          // Stopped by the time the delete answered, whichever gateway's end won.
          const left = [pid, ...(await processesWithEnv(desktopMarker({ display, pid })))].filter(
            isProcessAlive,
          );
          assert.deepEqual(left, [], `round ${round}: no Xvnc or desktop process left`);
          await Promise.all(gateways.map((g) => g.sessions.stopper.settled()));
        } else {
          // Ended once: one gateway's audit trail says so.
          const endedLines = gateways
            .flatMap((g) => g.logLines)
            .filter((l) => l.includes('"session.ended"') && l.includes(sessionId));
          assert.equal(endedLines.length, 1, endedLines.join('\n'));
          // Its desktop is stopped in the background by the gateway that ended it; then the instance goes.
          await Promise.all(gateways.map((g) => g.sessions.stopper.settled()));
          await instancesDelete(a, alice.auth, instance.id);
        }
      }
      console.log(`answers: ${answers.join(', ')}`);
    },
  );
});

async function instancesDelete(g: TestGateway, auth: { authorization: string }, id: string): Promise<void> {
  const r = await g.app.inject({ method: 'DELETE', url: `/api/instances/${id}`, headers: auth });
  assert.equal(r.statusCode, 204, r.body);
}
