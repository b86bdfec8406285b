import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AddressGuard } from '../src/instances/address-guard.js';
import { AppError } from '../src/errors/errors.js';

const code = (e: unknown) => (e instanceof AppError ? e.code : String(e));

test('refuses loopback, link-local (metadata endpoint), unspecified and mapped loopback by default', async () => {
  const guard = new AddressGuard({ allowedCidrs: [], deniedCidrs: [] });
  for (const host of [
    '127.0.0.1',
    '127.8.9.10',
    '169.254.169.254',
    '0.0.0.0',
    '::1',
    '::',
    'fe80::1',
    '::ffff:127.0.0.1',
  ]) {
    await assert.rejects(guard.check(host), (e) => code(e) === 'INSTANCE_ADDRESS_FORBIDDEN', host);
  }
  assert.equal(await guard.check('203.0.113.7'), '203.0.113.7');
  assert.equal(await guard.check('2001:db8::1'), '2001:db8::1');
});

test('INSTANCE_ALLOWED_CIDRS wins over the default denies; INSTANCE_DENIED_CIDRS adds denies', async () => {
  const guard = new AddressGuard({ allowedCidrs: ['127.0.0.0/8'], deniedCidrs: ['10.0.0.0/8'] });
  assert.equal(await guard.check('127.0.0.1'), '127.0.0.1');
  await assert.rejects(guard.check('10.1.2.3'), (e) => code(e) === 'INSTANCE_ADDRESS_FORBIDDEN');
  await assert.rejects(guard.check('169.254.169.254'), (e) => code(e) === 'INSTANCE_ADDRESS_FORBIDDEN');
});

test('names are resolved and refused if any address is forbidden; unresolvable names get their own code', async () => {
  const guard = new AddressGuard({ allowedCidrs: [], deniedCidrs: [] }, (host) =>
    host === 'sneaky.example'
      ? Promise.resolve(['203.0.113.9', '169.254.169.254'])
      : host === 'ok.example'
        ? Promise.resolve(['198.51.100.4'])
        : Promise.reject(new Error('ENOTFOUND')),
  );
  await assert.rejects(guard.check('sneaky.example'), (e) => code(e) === 'INSTANCE_ADDRESS_FORBIDDEN');
  assert.equal(await guard.check('ok.example'), '198.51.100.4');
  await assert.rejects(guard.check('nowhere.example'), (e) => code(e) === 'INSTANCE_HOST_UNRESOLVABLE');
});
