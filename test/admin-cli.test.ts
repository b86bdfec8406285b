// `clouddesk admin create --email … --password-stdin` and `clouddesk admin promote EMAIL` as an operator
// runs them (a real process on the real CLI), against embedded SQLite and PostgreSQL.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore, type Store } from '../src/store/database.js';
import { TEST_SECRETS } from './helpers/test-secrets.js';
import { createTestDatabase } from './helpers/postgres-database.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');

function cli(
  args: string[],
  env: Record<string, string>,
  stdin = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

const dialects = [
  {
    name: 'sqlite',
    setup() {
      const dir = mkdtempSync(join(tmpdir(), 'clouddesk-cli-'));
      return Promise.resolve({
        env: { DATA_DIR: dir },
        open: () => openStore({ databaseUrl: null, dataDir: dir }),
        cleanup: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })),
      });
    },
  },
  {
    name: 'postgres',
    async setup() {
      const db = await createTestDatabase();
      const dir = mkdtempSync(join(tmpdir(), 'clouddesk-cli-'));
      return {
        env: { DATA_DIR: dir, DATABASE_URL: db.url },
        open: () => openStore({ databaseUrl: db.url, dataDir: dir }),
        cleanup: async () => {
          rmSync(dir, { recursive: true, force: true });
          await db.drop();
        },
      };
    },
  },
];

for (const dialect of dialects) {
  describe(`clouddesk admin (${dialect.name})`, () => {
    let env: Record<string, string>;
    let store: Store;
    let cleanup: () => Promise<void>;

    before(async () => {
      const s = await dialect.setup();
      env = { ...TEST_SECRETS, ...s.env };
      cleanup = s.cleanup;
      // Migrated by the first command; opened here after it to read what it wrote.
      const first = await cli(
        ['admin', 'create', '--email', 'Root@Example.com', '--password-stdin'],
        env,
        'a long passphrase\n',
      );
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /^admin root@example\.com created \(id [0-9a-f-]{36}\)\n$/);
      store = await s.open();
    });
    after(async () => {
      await store?.close();
      await cleanup?.();
    });

    test('create makes an admin whose password (without the newline) signs in', async () => {
      const row = await store.db
        .selectFrom('users')
        .selectAll()
        .where('email', '=', 'root@example.com')
        .executeTakeFirstOrThrow();
      assert.equal(row.role, 'admin');
      const { verify } = await import('@node-rs/argon2');
      assert.ok(await verify(row.password_hash, 'a long passphrase'));
      const audit = await store.db
        .selectFrom('audit_events')
        .selectAll()
        .where('target_id', '=', row.id)
        .execute();
      assert.equal(audit.length, 1);
      assert.equal(audit[0]!.actor, 'system');
      assert.deepEqual(JSON.parse(audit[0]!.details), {
        email: 'root@example.com',
        role: 'admin',
        via: 'cli',
      });
      assert.ok(!JSON.stringify(audit).includes('passphrase'));
    });

    test('create refuses an existing email, a short password and a bad command line', async () => {
      const again = await cli(
        ['admin', 'create', '--email', 'root@example.com', '--password-stdin'],
        env,
        'another long one',
      );
      assert.equal(again.code, 1);
      assert.match(again.stderr, /exists: use `clouddesk admin promote`/);
      const short = await cli(
        ['admin', 'create', '--email', 'x@example.com', '--password-stdin'],
        env,
        'short',
      );
      assert.equal(short.code, 1);
      assert.match(short.stderr, /8 to 256 characters/);
      const noStdin = await cli(['admin', 'create', '--email', 'x@example.com'], env);
      assert.equal(noStdin.code, 2);
      assert.match(noStdin.stderr, /usage: clouddesk/);
    });

    test('promote makes an existing account admin, once; an unknown email is an error', async () => {
      await store.db
        .insertInto('users')
        .values({
          id: crypto.randomUUID(),
          email: 'later@example.com',
          password_hash: 'x',
          created_at: 1,
          role: 'user',
          disabled_at: null,
          last_sign_in_at: null,
        })
        .execute();
      const res = await cli(['admin', 'promote', 'Later@example.com'], env);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stdout, 'later@example.com is now an admin\n');
      const row = await store.db
        .selectFrom('users')
        .select('role')
        .where('email', '=', 'later@example.com')
        .executeTakeFirstOrThrow();
      assert.equal(row.role, 'admin');
      assert.equal(
        (await cli(['admin', 'promote', 'later@example.com'], env)).stdout,
        'later@example.com is already an admin\n',
      );
      const unknown = await cli(['admin', 'promote', 'nobody@example.com'], env);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /no account with nobody@example\.com/);
    });
  });
}
