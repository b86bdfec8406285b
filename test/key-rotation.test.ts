// Rotating ENCRYPTION_KEY: credentials sealed under the old key still open (kept in
// ENCRYPTION_PREVIOUS_KEYS) and are re-sealed under the new key as they are used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../src/store/database.js';
import { buildTestGateway, newUser } from './helpers/builders.js';

const OLD = '11'.repeat(32);
const NEW = '22'.repeat(32);

test('credentials sealed under a previous key open and are re-sealed under the current one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'clouddesk-rotate-'));
  try {
    const before = await buildTestGateway(
      { ENCRYPTION_KEY: OLD, ENCRYPTION_KEY_ID: 'old' },
      { store: await openStore({ databaseUrl: null, dataDir: dir }) },
    );
    const user = await newUser(before);
    const created = await before.app.inject({
      method: 'POST',
      url: '/api/instances',
      headers: user.auth,
      payload: {
        name: 'box',
        host: '127.0.0.1',
        username: 'u',
        auth: { type: 'password', password: 'pw-to-keep' },
      },
    });
    const id = created.json().data.id as string;
    await before.cleanup();

    const after = await buildTestGateway(
      { ENCRYPTION_KEY: NEW, ENCRYPTION_KEY_ID: 'new', ENCRYPTION_PREVIOUS_KEYS: `old:${OLD}` },
      { store: await openStore({ databaseUrl: null, dataDir: dir }) },
    );
    try {
      const row = await after.instances.getRow(user.id, id);
      assert.equal(row.secret_key_id, 'old');
      const target = await after.instances.target(row);
      assert.deepEqual(target.auth, { type: 'password', password: 'pw-to-keep' });
      const resealed = await after.instances.getRow(user.id, id);
      assert.equal(resealed.secret_key_id, 'new');
      assert.notEqual(resealed.secret_ciphertext, row.secret_ciphertext);
      assert.deepEqual((await after.instances.target(resealed)).auth, target.auth);
    } finally {
      await after.cleanup();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
