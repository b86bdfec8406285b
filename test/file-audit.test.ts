import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { auditFileEvents } from '../src/files/file-events.js';
import { buildTestGateway, newUser, type TestGateway } from './helpers/builders.js';

describe('file transfers in the audit trail', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await buildTestGateway();
  });
  after(() => gw.cleanup());

  test("an upload and a cancelled download are the user's own audit events, with the instance as target", async () => {
    const user = await newUser(gw);
    const instanceId = crypto.randomUUID();
    const events = auditFileEvents(gw.audit);
    events.record('file.upload', {
      userId: user.id,
      instanceId,
      path: 'reports/q3.pdf',
      name: 'q3.pdf',
      outcome: 'ok',
      size: 1234,
      bytes: 1234,
      durationMs: 12,
      peakHeldBytes: 4096,
    });
    events.record('file.download', {
      userId: user.id,
      instanceId,
      path: '/var/log/big.log',
      name: 'big.log',
      outcome: 'cancelled',
      code: 'CLIENT_CLOSED',
      size: 1 << 30,
      bytes: 65536,
    });
    await gw.audit.flush();

    const res = await gw.app.inject({ method: 'GET', url: '/api/audit/me', headers: user.auth });
    assert.equal(res.statusCode, 200, res.body);
    type Item = { type: string; actor: string; targetId: string; details: Record<string, unknown> };
    const items = res
      .json<{ data: { items: Item[] } }>()
      .data.items.filter((e) => e.type.startsWith('file.'));
    assert.deepEqual(
      items.map((e) => [e.type, e.actor, e.targetId]),
      [
        ['file.download', user.id, instanceId],
        ['file.upload', user.id, instanceId],
      ],
    );
    assert.deepEqual(items[1]!.details, {
      instanceId,
      path: 'reports/q3.pdf',
      name: 'q3.pdf',
      outcome: 'ok',
      size: 1234,
      bytes: 1234,
      durationMs: 12,
    });
    assert.equal(items[0]!.details.outcome, 'cancelled');
    assert.equal(items[0]!.details.code, 'CLIENT_CLOSED');
    assert.equal(items[0]!.details.bytes, 65536);
  });
});
