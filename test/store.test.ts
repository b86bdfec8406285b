// One store suite, run against both dialects: embedded SQLite and PostgreSQL.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { openStore, type Store } from '../src/store/database.js';
import { UserRepository } from '../src/store/user.repository.js';
import { InstanceRepository, type InstanceRow } from '../src/store/instance.repository.js';
import { SessionRepository, type SessionRow } from '../src/store/session.repository.js';
import { UsageRepository, type UsageEntry } from '../src/store/usage.repository.js';
import { createTestDatabase } from './helpers/postgres-database.js';

const dialects: { name: string; open(): Promise<{ store: Store; cleanup(): Promise<void> }> }[] = [
  {
    name: 'sqlite',
    async open() {
      const dir = mkdtempSync(join(tmpdir(), 'clouddesk-store-'));
      const store = await openStore({ databaseUrl: null, dataDir: dir });
      return { store, cleanup: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })) };
    },
  },
  {
    name: 'postgres',
    async open() {
      const db = await createTestDatabase();
      const store = await openStore({ databaseUrl: db.url, dataDir: '/nonexistent' });
      return { store, cleanup: () => db.drop() };
    },
  },
];

function instanceRow(userId: string, o: Partial<InstanceRow> = {}): InstanceRow {
  return {
    id: randomUUID(),
    user_id: userId,
    name: 'box',
    host: '203.0.113.1',
    port: 22,
    username: 'ubuntu',
    auth_type: 'password',
    secret_ciphertext: 'sealed',
    secret_key_id: 'k1',
    host_key_fingerprint: null,
    created_at: 1,
    updated_at: 1,
    ...o,
  };
}

function sessionRow(userId: string, instanceId: string, o: Partial<SessionRow> = {}): SessionRow {
  return {
    id: randomUUID(),
    user_id: userId,
    instance_id: instanceId,
    desktop_environment: 'openbox',
    status: 'active',
    display: 1,
    transport: 'unix',
    socket_path: '/home/u/.clouddesk/1.sock',
    vnc_port: null,
    vnc_password_ciphertext: null,
    vnc_password_key_id: null,
    desktop_pid: 42,
    created_at: 1000,
    started_at: 1000,
    last_activity_at: 1000,
    ended_at: null,
    end_reason: null,
    bytes_to_viewer: 0,
    bytes_from_viewer: 0,
    viewer_seconds: 0,
    stop_due_at: null,
    stop_attempts: 0,
    ...o,
  };
}

for (const dialect of dialects) {
  describe(`store (${dialect.name})`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;
    let users: UserRepository;
    let instances: InstanceRepository;
    let sessions: SessionRepository;
    let usage: UsageRepository;

    before(async () => {
      ({ store, cleanup } = await dialect.open());
      users = new UserRepository(store);
      instances = new InstanceRepository(store);
      sessions = new SessionRepository(store);
      usage = new UsageRepository(store);
    });
    after(async () => {
      await store.close();
      await cleanup();
    });

    async function newUserRow() {
      const id = randomUUID();
      assert.equal(
        await users.create({ id, email: `${id}@example.com`, password_hash: 'h', created_at: 1 }),
        true,
      );
      return id;
    }

    test('answers ping and reports its dialect', async () => {
      await store.ping();
      assert.equal(store.dialect, dialect.name);
    });

    test('a second account with the same email is refused without touching the first', async () => {
      const id = await newUserRow();
      const again = await users.create({
        id: randomUUID(),
        email: `${id}@example.com`,
        password_hash: 'x',
        created_at: 2,
      });
      assert.equal(again, false);
      assert.equal((await users.findByEmail(`${id}@example.com`))?.password_hash, 'h');
    });

    test('a refresh token can be marked used exactly once; revoking a family stops the rest', async () => {
      const userId = await newUserRow();
      const family = randomUUID();
      const a = {
        id: randomUUID(),
        user_id: userId,
        family_id: family,
        expires_at: 10_000,
        used_at: null,
        revoked_at: null,
        created_at: 1,
      };
      const b = { ...a, id: randomUUID() };
      await users.addRefreshToken(a);
      await users.addRefreshToken(b);
      const results = await Promise.all([
        users.markRefreshTokenUsed(a.id, 5),
        users.markRefreshTokenUsed(a.id, 6),
      ]);
      assert.deepEqual(results.sort(), [false, true]);
      await users.revokeFamily(family, 7);
      assert.equal(await users.markRefreshTokenUsed(b.id, 8), false);
    });

    test('instances are scoped to their owner', async () => {
      const alice = await newUserRow();
      const bob = await newUserRow();
      const row = instanceRow(alice);
      await instances.create(row);
      assert.equal((await instances.findOwned(alice, row.id))?.name, 'box');
      assert.equal(await instances.findOwned(bob, row.id), undefined);
      assert.equal(await instances.update(bob, row.id, { name: 'stolen' }), false);
      assert.equal(await instances.delete(bob, row.id), false);
      assert.deepEqual((await instances.listByUser(bob)).length, 0);
      assert.equal((await instances.listByUser(alice)).length, 1);
    });

    test('a host key is pinned only once', async () => {
      const alice = await newUserRow();
      const row = instanceRow(alice);
      await instances.create(row);
      await instances.pinHostKey(row.id, 'SHA256:first', 2);
      await instances.pinHostKey(row.id, 'SHA256:second', 3);
      assert.equal((await instances.findOwned(alice, row.id))?.host_key_fingerprint, 'SHA256:first');
    });

    test('at most one live session per user and instance, enforced by the database', async () => {
      const alice = await newUserRow();
      const inst = instanceRow(alice);
      await instances.create(inst);
      const first = sessionRow(alice, inst.id);
      await sessions.create(first);
      await assert.rejects(sessions.create(sessionRow(alice, inst.id, { status: 'starting' })));
      assert.equal(await sessions.countLive(alice), 1);
      assert.equal(await sessions.markEnded(first.id, 'test', 2000), true);
      assert.equal(await sessions.markEnded(first.id, 'again', 3000), false, 'ending twice is a no-op');
      await sessions.create(sessionRow(alice, inst.id));
      assert.equal(await sessions.countLive(alice), 1);
      const live = await sessions.listLiveByUser(alice);
      assert.equal(live[0]?.instance_name, 'box');
    });

    test("ending a session read while 'starting' puts its stop on record only if its desktop was recorded since", async () => {
      const alice = await newUserRow();
      const [a, b] = [instanceRow(alice), instanceRow(alice)];
      await instances.create(a);
      await instances.create(b);
      const empty = { display: null, socket_path: null, desktop_pid: null, started_at: null };
      const recorded = sessionRow(alice, a.id, { status: 'starting', ...empty });
      const still = sessionRow(alice, b.id, { status: 'starting', ...empty });
      await sessions.create(recorded);
      await sessions.create(still);
      // The start recorded its desktop between the end's read and its write.
      assert.equal(
        await sessions.activate(recorded.id, {
          display: 7,
          socket_path: '/s',
          desktop_pid: 9,
          started_at: 1500,
        }),
        true,
      );
      assert.equal(await sessions.markEnded(recorded.id, 'disconnected', 2000, 'if-started'), true);
      assert.equal(await sessions.markEnded(still.id, 'disconnected', 2000, 'if-started'), true);
      const r = await sessions.findById(recorded.id);
      assert.equal(Number(r?.stop_due_at), 2000, 'the recorded desktop is due to be stopped');
      assert.equal(r?.stop_attempts, 0);
      assert.equal(
        (await sessions.findById(still.id))?.stop_due_at,
        null,
        'nothing to stop: its start will see the end',
      );
    });

    test('the per-user session limit holds in the database alone, under concurrent inserts', async () => {
      const alice = await newUserRow();
      const insts = Array.from({ length: 6 }, () => instanceRow(alice));
      for (const i of insts) await instances.create(i);
      // No lock in front: six racing inserts, at most three live sessions.
      const rows = insts.map((i) => sessionRow(alice, i.id, { status: 'starting' }));
      const results = await Promise.all(rows.map((r) => sessions.createWithinLimit(r, 3)));
      assert.equal(results.filter(Boolean).length, 3);
      assert.equal(await sessions.countLive(alice), 3);
      // A retry of an insert that committed finds its own row.
      const taken = rows[results.indexOf(true)]!;
      assert.equal(await sessions.createWithinLimit(taken, 3), true);
      assert.equal(await sessions.countLive(alice), 3);
      await sessions.markEnded(taken.id, 'test', 2000);
      const free = rows[results.indexOf(false)]!;
      assert.equal(await sessions.createWithinLimit(free, 3), true, 'an ended session frees a slot');
    });

    test('activity timestamps are written in one batch and never move backwards', async () => {
      const alice = await newUserRow();
      const inst = instanceRow(alice);
      await instances.create(inst);
      const s = sessionRow(alice, inst.id, { last_activity_at: 5000 });
      await sessions.create(s);
      await sessions.touchMany(new Map([[s.id, 4000]]));
      assert.equal((await sessions.findById(s.id))?.last_activity_at, 5000);
      await sessions.touchMany(new Map([[s.id, 9000]]));
      assert.equal((await sessions.findById(s.id))?.last_activity_at, 9000);
      const idle = await sessions.listIdleCandidates(10_000, 100);
      assert.ok(idle.some((r) => r.id === s.id));
      assert.ok(!(await sessions.listIdleCandidates(8000, 100)).some((r) => r.id === s.id));
    });

    test('deleting a user removes their instances and sessions', async () => {
      const alice = await newUserRow();
      const inst = instanceRow(alice);
      await instances.create(inst);
      await sessions.create(sessionRow(alice, inst.id));
      await store.db.deleteFrom('users').where('id', '=', alice).execute();
      assert.equal((await instances.listByUser(alice)).length, 0);
      assert.equal(await sessions.countLive(alice), 0);
    });

    /** A user with an instance and a session on it. */
    async function sessionOfNewUser() {
      const userId = await newUserRow();
      const inst = instanceRow(userId, { name: 'usage box' });
      await instances.create(inst);
      const s = sessionRow(userId, inst.id);
      await sessions.create(s);
      return { userId, instanceId: inst.id, sessionId: s.id };
    }

    const delta = (o: Partial<UsageEntry> & Pick<UsageEntry, 'sessionId' | 'userId' | 'instanceId'>) => ({
      day: '2026-03-01',
      bytesToViewer: 0,
      bytesFromViewer: 0,
      viewerSeconds: 0,
      ...o,
    });

    test('usage deltas add up on the session and on the day, batch after batch', async () => {
      const a = await sessionOfNewUser();
      await usage.addMany([delta({ ...a, bytesToViewer: 1000, bytesFromViewer: 10, viewerSeconds: 2.5 })]);
      await usage.addMany([
        delta({ ...a, bytesToViewer: 5_000_000_000, bytesFromViewer: 5, viewerSeconds: 5 }),
        delta({ ...a, day: '2026-03-02', bytesToViewer: 7, viewerSeconds: 1 }),
      ]);
      const row = await sessions.findById(a.sessionId);
      assert.deepEqual(
        [row?.bytes_to_viewer, row?.bytes_from_viewer, row?.viewer_seconds],
        [5_000_001_007, 15, 8.5],
        'bigint totals past 2³² stay exact',
      );
      assert.deepEqual(await usage.listDaily(a.userId, '2026-03-01', '2026-03-02'), [
        {
          day: '2026-03-01',
          instanceId: a.instanceId,
          instanceName: 'usage box',
          bytesToViewer: 5_000_001_000,
          bytesFromViewer: 15,
          viewerSeconds: 7.5,
        },
        {
          day: '2026-03-02',
          instanceId: a.instanceId,
          instanceName: 'usage box',
          bytesToViewer: 7,
          bytesFromViewer: 0,
          viewerSeconds: 1,
        },
      ]);
      assert.equal(
        (await usage.listDaily(a.userId, '2026-03-02', '2026-03-31')).length,
        1,
        'range is inclusive',
      );
      assert.equal((await usage.listDaily(a.userId, '2026-02-01', '2026-02-28')).length, 0);
    });

    test('two sessions of one instance on one day share the daily row, also within one batch', async () => {
      const a = await sessionOfNewUser();
      const second = sessionRow(a.userId, a.instanceId, { status: 'ended' });
      await sessions.create(second);
      await usage.addMany([
        delta({ ...a, bytesToViewer: 100 }),
        delta({ ...a, sessionId: second.id, bytesToViewer: 50 }),
      ]);
      const days = await usage.listDaily(a.userId, '2026-03-01', '2026-03-01');
      assert.deepEqual(
        days.map((d) => d.bytesToViewer),
        [150],
      );
      assert.equal((await sessions.findById(second.id))?.bytes_to_viewer, 50);
    });

    test('concurrent flushes (two gateway processes) both count', async () => {
      const a = await sessionOfNewUser();
      await Promise.all(
        Array.from({ length: 8 }, () => usage.addMany([delta({ ...a, bytesToViewer: 3, viewerSeconds: 1 })])),
      );
      assert.equal((await sessions.findById(a.sessionId))?.bytes_to_viewer, 24);
      assert.equal((await usage.listDaily(a.userId, '2026-03-01', '2026-03-01'))[0]?.viewerSeconds, 8);
    });

    test("usage outlives its instance; a deleted user's pending usage is dropped without failing the batch", async () => {
      const a = await sessionOfNewUser();
      const b = await sessionOfNewUser();
      await usage.addMany([delta({ ...a, bytesToViewer: 9 })]);
      await instances.delete(a.userId, a.instanceId);
      const kept = await usage.listDaily(a.userId, '2026-03-01', '2026-03-01');
      assert.deepEqual(
        kept.map((d) => [d.instanceId, d.instanceName, d.bytesToViewer]),
        [[a.instanceId, null, 9]],
      );
      await store.db.deleteFrom('users').where('id', '=', b.userId).execute();
      await usage.addMany([delta({ ...b, bytesToViewer: 1 }), delta({ ...a, bytesToViewer: 1 })]);
      assert.equal((await usage.listDaily(a.userId, '2026-03-01', '2026-03-01'))[0]?.bytesToViewer, 10);
      assert.equal((await usage.listDaily(b.userId, '2026-03-01', '2026-03-01')).length, 0);
    });

    test("one user's usage is never in another's", async () => {
      const a = await sessionOfNewUser();
      const b = await sessionOfNewUser();
      await usage.addMany([delta({ ...a, bytesToViewer: 1 }), delta({ ...b, bytesToViewer: 2 })]);
      assert.deepEqual(
        (await usage.listDaily(b.userId, '2026-01-01', '2026-12-31')).map((d) => d.bytesToViewer),
        [2],
      );
    });
  });
}
