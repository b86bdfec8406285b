// `clouddesk backup` / `clouddesk restore` (src/backup/): an online, consistent copy of the embedded
// SQLite store taken while the gateway writes; a pg_dump of PostgreSQL restored into an empty
// database; a restored store opens every credential with the same ENCRYPTION_KEY, and a restore with
// another key refuses with a clear message and changes nothing.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import BetterSqlite3 from 'better-sqlite3';
import {
  BackupError,
  backupPostgres,
  backupSqlite,
  restorePostgres,
  restoreSqlite,
} from '../src/backup/backup.js';
import type { Gateway } from '../src/app.js';
import { sqliteFile } from '../src/store/database.js';
import { buildTestGateway, newUser, testConfig, type TestGateway } from './helpers/builders.js';
import { createTestDatabase } from './helpers/postgres-database.js';
import { TEST_SECRETS } from './helpers/test-secrets.js';

const execFileP = promisify(execFile);
const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');
const KEY = TEST_SECRETS.ENCRYPTION_KEY;
const OTHER_KEY = 'ab'.repeat(32);
assert.notEqual(KEY, OTHER_KEY);

/** Users with one password instance each, through the API; returns what a restore must bring back. */
async function seed(gw: Gateway, n: number) {
  const made: { user: Awaited<ReturnType<typeof newUser>>; instanceId: string; password: string }[] = [];
  for (let i = 0; i < n; i++) {
    const user = await newUser(gw);
    const password = `ssh password ${i} ${user.id}`;
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/instances',
      headers: user.auth,
      payload: {
        name: `box ${i}`,
        host: '127.0.0.1',
        port: 22,
        username: 'ubuntu',
        auth: { type: 'password', password },
      },
    });
    assert.equal(res.statusCode, 201, res.body);
    made.push({ user, instanceId: res.json<{ data: { id: string } }>().data.id, password });
  }
  return made;
}

/** Every seeded credential opens in `gw` and is the one that was stored. */
async function assertCredentials(gw: Gateway, made: Awaited<ReturnType<typeof seed>>) {
  for (const m of made) {
    const target = await gw.instances.target(await gw.instances.getRow(m.user.id, m.instanceId));
    assert.ok(JSON.stringify(target).includes(m.password), `credential of ${m.instanceId} opens`);
  }
}

const rejectsWith = (code: BackupError['code'], pattern?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof BackupError, String(e));
  assert.equal(e.code, code);
  if (pattern) assert.match(e.message, pattern);
  return true;
};

void describe('embedded SQLite: backup while writing, restore', () => {
  let gw: TestGateway;
  let made: Awaited<ReturnType<typeof seed>>;
  const dir = mkdtempSync(join(tmpdir(), 'cd-backup-'));
  const file = join(dir, 'clouddesk.backup');

  before(async () => {
    gw = await buildTestGateway();
    made = await seed(gw, 5);
  });
  after(async () => {
    await gw.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('an online backup taken while sign-ups keep arriving is consistent and has everything before it', async () => {
    const before: string[] = [];
    let backupStarted = false;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        const u = await newUser(gw);
        if (!backupStarted) before.push(u.id);
      }
    })();
    while (before.length < 20) await new Promise((r) => setImmediate(r));
    backupStarted = true;
    const summary = await backupSqlite(gw.config.dataDir, file);
    stop = true;
    await writer;

    assert.equal(summary.instances, 5);
    assert.equal(summary.credentials, 5);
    const copy = new BetterSqlite3(file, { readonly: true });
    try {
      assert.equal(copy.pragma('integrity_check', { simple: true }), 'ok');
      assert.deepEqual(copy.pragma('foreign_key_check'), []);
      const ids = new Set((copy.prepare('select id from users').all() as { id: string }[]).map((r) => r.id));
      for (const id of [...before, ...made.map((m) => m.user.id)])
        assert.ok(ids.has(id), `user ${id} in the backup`);
    } finally {
      copy.close();
    }
    await assert.rejects(backupSqlite(gw.config.dataDir, file), rejectsWith('BACKUP_TARGET_EXISTS'));
  });

  test('a restore with another ENCRYPTION_KEY refuses, names the problem, and writes nothing', async () => {
    const t = testConfig({ ENCRYPTION_KEY: OTHER_KEY });
    try {
      await assert.rejects(
        restoreSqlite(t.config, file),
        rejectsWith(
          'RESTORE_WRONG_KEY',
          /ENCRYPTION_KEY does not open 5 of 5 stored credentials.*Nothing was restored/,
        ),
      );
      assert.equal(existsSync(sqliteFile(t.dataDir)), false);
    } finally {
      t.cleanup();
    }
  });

  test('restored with the same key, every credential opens and users sign in', async () => {
    const target = mkdtempSync(join(tmpdir(), 'cd-restored-'));
    try {
      const t = testConfig({ DATA_DIR: target });
      const result = await restoreSqlite(t.config, file);
      assert.equal(result.instances, 5);
      assert.equal(result.keptAs, null);
      const restored = await buildTestGateway({ DATA_DIR: target });
      try {
        await assertCredentials(restored, made);
        const login = await restored.app.inject({
          method: 'POST',
          url: '/api/auth/login',
          payload: { email: made[0]!.user.email, password: made[0]!.user.password },
        });
        assert.equal(login.statusCode, 200, login.body);
      } finally {
        await restored.shutdown('test done');
      }
      // Over an existing database only with --force, keeping the old one.
      await assert.rejects(restoreSqlite(t.config, file), rejectsWith('RESTORE_TARGET_NOT_EMPTY', /--force/));
      const forced = await restoreSqlite(t.config, file, { force: true });
      assert.ok(forced.keptAs !== null && existsSync(forced.keptAs));
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });

  test('a file that is not a backup is refused', async () => {
    const junk = join(dir, 'junk');
    writeFileSync(junk, 'not a database at all');
    const t = testConfig();
    try {
      await assert.rejects(restoreSqlite(t.config, junk), rejectsWith('BACKUP_FILE_INVALID'));
      await assert.rejects(
        restoreSqlite(t.config, join(dir, 'missing')),
        rejectsWith('BACKUP_SOURCE_MISSING'),
      );
    } finally {
      t.cleanup();
    }
  });

  test('the CLI: backup prints one line; restore with a wrong key exits 1 with the reason', async () => {
    const out = join(dir, 'cli.backup');
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      DATA_DIR: gw.config.dataDir,
      LOG_LEVEL: 'silent',
      ...TEST_SECRETS,
    };
    const backup = await execFileP(
      process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'backup', '--out', out],
      {
        cwd: REPO,
        env,
      },
    );
    assert.match(backup.stdout, /^backup written: .*cli\.backup \(\d+ users, 5 instances/);
    const fresh = mkdtempSync(join(tmpdir(), 'cd-restored-'));
    try {
      const refused = await execFileP(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'restore', out], {
        cwd: REPO,
        env: { ...env, DATA_DIR: fresh, ENCRYPTION_KEY: OTHER_KEY },
      }).then(
        () => null,
        (e: { code?: number; stderr?: string }) => e,
      );
      assert.ok(refused, 'restore with another key must fail');
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr ?? '',
        /clouddesk restore: restore refused: the configured ENCRYPTION_KEY does not open/,
      );
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });
});

void describe('PostgreSQL: pg_dump backup, restore into an empty database', () => {
  let source: Awaited<ReturnType<typeof createTestDatabase>>;
  let target: Awaited<ReturnType<typeof createTestDatabase>>;
  let gw: TestGateway;
  let made: Awaited<ReturnType<typeof seed>>;
  const dir = mkdtempSync(join(tmpdir(), 'cd-pgbackup-'));
  const file = join(dir, 'clouddesk.dump');

  before(async () => {
    [source, target] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    gw = await buildTestGateway({ DATABASE_URL: source.url });
    made = await seed(gw, 3);
  });
  after(async () => {
    await gw?.cleanup();
    await Promise.all([source?.drop(), target?.drop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('dump, refuse a wrong key, restore, every credential opens; a second restore is refused', async () => {
    await backupPostgres(source.url, file);
    const wrong = testConfig({ DATABASE_URL: target.url, ENCRYPTION_KEY: OTHER_KEY });
    try {
      await assert.rejects(restorePostgres(wrong.config, file), rejectsWith('RESTORE_WRONG_KEY', /3 of 3/));
    } finally {
      wrong.cleanup();
    }
    const right = testConfig({ DATABASE_URL: target.url });
    try {
      const summary = await restorePostgres(right.config, file);
      assert.deepEqual([summary.instances, summary.credentials], [3, 3]);
      assert.ok(summary.users >= 3);
      await assert.rejects(restorePostgres(right.config, file), rejectsWith('RESTORE_TARGET_NOT_EMPTY'));
    } finally {
      right.cleanup();
    }
    const restored = await buildTestGateway({ DATABASE_URL: target.url });
    try {
      await assertCredentials(restored, made);
    } finally {
      await restored.shutdown('test done');
    }
  });
});
