// The soak's diagnosis of a 5xx (bench/soak/gateway-errors.ts): the gateways' log lines at level ≥ error
// near each answer, the answered request's own line (its id is in a 500's message) first; and whose an
// error answer without a catalogue code is (soak-traffic.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { diagnoseFiveXx, requestIdOf } from '../bench/soak/gateway-errors.js';
import { uncodedAnswer } from '../bench/soak/soak-traffic.js';

const t0 = Date.parse('2026-12-02T13:58:23.000Z');
const line = (atMs: number, level: number, msg: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    level,
    time: new Date(t0 + atMs).toISOString(),
    pid: 1,
    name: 'clouddesk',
    msg,
    ...extra,
  });

test('a 500 gets its own request line first, then the errors near it; info lines and far ones are left out', () => {
  const err = { type: 'Error', message: 'boom', stack: 'Error: boom\n    at end (session.service.ts:1:1)' };
  const gw1 = [
    line(400_000, 50, 'long before'),
    line(431_000, 30, 'request completed', { reqId: 'r1' }),
    line(430_000, 50, 'store unavailable', { reqId: 'r0', err: { ...err, code: 'X' } }),
    'not json',
  ].join('\n');
  const gw2 = line(432_300, 50, 'unhandled error', { reqId: 'r9', err }) + '\n';
  const [d] = diagnoseFiveXx(
    [
      {
        atMs: 432_348,
        route: 'disconnect',
        status: 500,
        code: 'INTERNAL',
        message: 'Internal error (request r9)',
      },
    ],
    [
      { gateway: 'gw1', text: gw1 },
      { gateway: 'gw2', text: gw2 },
    ],
    t0,
  );
  assert.deepEqual(
    d!.lines.map((l) => [l.gateway, l.msg, l.sameRequest, l.err?.message ?? null]),
    [
      ['gw2', 'unhandled error', true, 'boom'],
      ['gw1', 'store unavailable', false, 'boom'],
    ],
  );
  assert.equal(d!.lines[0]!.err!.stack.split('\n')[1], '    at end (session.service.ts:1:1)');
  assert.equal(requestIdOf('Internal error (request abc_12)'), 'abc_12');
  assert.equal(requestIdOf('The database is unavailable'), null);
});

test("an error answer without a code is named by whose it is: HAProxy's page, a closing gateway's, other", () => {
  // HAProxy 2.6's own pages, and Fastify's return503OnClosing body.
  const noServer =
    '<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n';
  const badGateway =
    '<html><body><h1>502 Bad Gateway</h1>\nThe server returned an invalid or incomplete response.\n</body></html>\n';
  assert.equal(uncodedAnswer(503, noServer), 'HAPROXY_503');
  assert.equal(uncodedAnswer(502, badGateway), 'HAPROXY_502');
  assert.equal(
    uncodedAnswer(503, '{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}'),
    'GATEWAY_CLOSING',
  );
  assert.equal(uncodedAnswer(500, ''), 'HTTP_500');
});
