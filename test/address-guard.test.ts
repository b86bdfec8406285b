import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { AddressGuard, OWN_ADDRESSES_TTL_MS, type InterfaceSource } from '../src/instances/address-guard.js';
import { AppError } from '../src/errors/errors.js';
import { ManualClock } from '../src/lib/clock.js';
import { buildTestGateway, newUser } from './helpers/builders.js';

const noInterfaces: InterfaceSource = () => ({});

function guardWith(
  options: { allowedCidrs?: string[]; deniedCidrs?: string[]; denyPrivate?: boolean } = {},
  deps: ConstructorParameters<typeof AddressGuard>[1] = {},
): AddressGuard {
  return new AddressGuard(
    { allowedCidrs: options.allowedCidrs ?? [], deniedCidrs: options.deniedCidrs ?? [], ...options },
    { interfaces: noInterfaces, ...deps },
  );
}

/** The refusal reason of `host`, or 'allowed:<address>'. */
async function verdict(guard: AddressGuard, host: string): Promise<string> {
  try {
    return `allowed:${await guard.check(host)}`;
  } catch (e) {
    if (e instanceof AppError && e.code === 'INSTANCE_ADDRESS_FORBIDDEN') return String(e.details?.reason);
    if (e instanceof AppError) return e.code;
    throw e;
  }
}

async function assertVerdicts(guard: AddressGuard, expected: Record<string, string>): Promise<void> {
  const seen: Record<string, string> = {};
  for (const host of Object.keys(expected)) seen[host] = await verdict(guard, host);
  assert.deepEqual(seen, expected);
}

function iface(address: string, family: 'IPv4' | 'IPv6', internal = false): NetworkInterfaceInfo {
  const common = { address, mac: '02:00:00:00:00:01', internal, netmask: '', cidr: null };
  return family === 'IPv4' ? { ...common, family } : { ...common, family, scopeid: 0 };
}

describe('address guard', () => {
  test('refuses loopback, unspecified, link-local, multicast and broadcast by default', async () => {
    await assertVerdicts(guardWith(), {
      '127.0.0.1': 'loopback',
      '127.8.9.10': 'loopback',
      '0.0.0.0': 'unspecified',
      '0.1.2.3': 'unspecified',
      '169.254.1.1': 'link-local',
      '224.0.0.1': 'multicast',
      '239.255.255.250': 'multicast',
      '255.255.255.255': 'broadcast',
      '::1': 'loopback',
      '::': 'unspecified',
      'fe80::1': 'link-local',
      'ff02::1': 'multicast',
      '203.0.113.7': 'allowed:203.0.113.7',
      '2001:db8::1': 'allowed:2001:db8::1',
      '10.1.2.3': 'allowed:10.1.2.3',
      'fd12:3456::1': 'allowed:fd12:3456::1',
    });
  });

  test("refuses every cloud's metadata endpoint, even inside a range that is allowed", async () => {
    const metadata = {
      '169.254.169.254': 'metadata', // AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
      'fd00:ec2::254': 'metadata', // AWS IPv6
      'fd00:ec2::23': 'metadata', // AWS EKS Pod Identity IPv6
      'fd20:ce::254': 'metadata', // GCP IPv6
      '100.100.100.200': 'metadata', // Alibaba
      '168.63.129.16': 'metadata', // Azure WireServer
      '192.0.0.192': 'metadata', // Oracle Cloud classic
      'fd00:42::42': 'metadata', // Scaleway IPv6
    };
    await assertVerdicts(guardWith(), metadata);
    // Allowing the ranges around them (CGNAT, ULA, link-local, all of IPv4) does not open them…
    const wide = guardWith({ allowedCidrs: ['100.64.0.0/10', 'fc00::/7', '169.254.0.0/16', '0.0.0.0/0'] });
    await assertVerdicts(wide, { ...metadata, '100.100.100.201': 'allowed:100.100.100.201' });
    // …allowing exactly one does.
    assert.equal(
      await verdict(guardWith({ allowedCidrs: ['168.63.129.16/32'] }), '168.63.129.16'),
      'allowed:168.63.129.16',
    );
  });

  test('refuses the same addresses in every other form: mapped, SIIT, NAT64, 6to4, Teredo, numeric IPv4', async () => {
    await assertVerdicts(guardWith(), {
      // IPv4-mapped IPv6, dotted and hex
      '::ffff:127.0.0.1': 'loopback',
      '::ffff:7f00:1': 'loopback',
      '::ffff:a9fe:a9fe': 'metadata',
      '::ffff:169.254.169.254': 'metadata',
      '::ffff:0.0.0.0': 'unspecified',
      // SIIT (IPv4-translated)
      '::ffff:0:7f00:1': 'loopback',
      '::ffff:0:169.254.169.254': 'metadata',
      // deprecated IPv4-compatible
      '::127.0.0.1': 'ipv4-compatible',
      '::a9fe:a9fe': 'ipv4-compatible',
      // NAT64: well-known and local-use prefixes
      '64:ff9b::7f00:1': 'loopback',
      '64:ff9b::169.254.169.254': 'metadata',
      '64:ff9b::6464:64c8': 'metadata',
      '64:ff9b:1::a9fe:a9fe': 'metadata',
      // 6to4 and Teredo (client bits inverted: 127.0.0.1 → 80ff:fffe)
      '2002:7f00:1::1': 'loopback',
      '2002:a9fe:a9fe::': 'metadata',
      '2001:0:4136:e378:8000:63bf:80ff:fffe': 'loopback',
      // other spellings of IPv6
      '[::1]': 'loopback',
      '0:0:0:0:0:0:0:1': 'loopback',
      '0000::0001': 'loopback',
      'FE80::1': 'link-local',
      '[fd00:ec2::254]': 'metadata',
      'fd00:0ec2:0000::0254': 'metadata',
      // IPv4 not as four decimal numbers (getaddrinfo reads all of these as 127.0.0.1)
      '2130706433': 'non-standard-form',
      '0x7f000001': 'non-standard-form',
      '0x7f.1': 'non-standard-form',
      '0177.0.0.1': 'non-standard-form',
      '127.1': 'non-standard-form',
      '127.0.1': 'non-standard-form',
      '01.2.3.4': 'non-standard-form',
      '017700000001': 'non-standard-form',
      // …and the same forms of a public address pass, as the address they reach
      '::ffff:203.0.113.7': 'allowed:203.0.113.7',
      '::ffff:cb00:7107': 'allowed:203.0.113.7',
      '64:ff9b::cb00:7107': 'allowed:64:ff9b::cb00:7107',
      '2002:cb00:7107::1': 'allowed:2002:cb00:7107::1',
      '[2001:db8::1]': 'allowed:2001:db8::1',
    });
  });

  test('refuses names that resolve to a forbidden address in any form; unresolvable names get their own code', async () => {
    const answers: Record<string, string[]> = {
      'sneaky.example': ['203.0.113.9', '169.254.169.254'],
      'mapped.example': ['::ffff:127.0.0.1'],
      'nat64.example': ['64:ff9b::a9fe:a9fe'],
      'ok.example': ['198.51.100.4', '2001:db8::4'],
      'empty.example': [],
      'garbage.example': ['not an address'],
    };
    const guard = guardWith(
      {},
      {
        resolve: (host) =>
          answers[host] ? Promise.resolve(answers[host]) : Promise.reject(new Error('ENOTFOUND')),
      },
    );
    await assertVerdicts(guard, {
      'sneaky.example': 'metadata',
      'mapped.example': 'loopback',
      'nat64.example': 'metadata',
      'ok.example': 'allowed:198.51.100.4',
      'empty.example': 'INSTANCE_HOST_UNRESOLVABLE',
      'garbage.example': 'INSTANCE_HOST_UNRESOLVABLE',
      'nowhere.example': 'INSTANCE_HOST_UNRESOLVABLE',
    });
  });

  test('the refusal says why in words, naming the address a name resolved to', async () => {
    const guard = guardWith(
      {},
      {
        interfaces: () => ({ eth0: [iface('10.0.0.5', 'IPv4')] }),
        resolve: () => Promise.resolve(['10.0.0.5']),
      },
    );
    const messages: Record<string, string> = {};
    for (const host of ['10.0.0.5', 'self.example', '169.254.169.254', '64:ff9b::7f00:1', '0x7f.1']) {
      await guard.check(host).then(
        () => assert.fail(`${host} was allowed`),
        (e: AppError) => (messages[host] = e.message),
      );
    }
    assert.deepEqual(messages, {
      '10.0.0.5':
        "This address is not allowed for an instance: 10.0.0.5 is one of this gateway's own addresses",
      'self.example':
        "This address is not allowed for an instance: self.example resolves to 10.0.0.5, which is one of this gateway's own addresses",
      '169.254.169.254':
        "This address is not allowed for an instance: 169.254.169.254 is a cloud provider's instance metadata endpoint",
      '64:ff9b::7f00:1':
        'This address is not allowed for an instance: 64:ff9b::7f00:1 is a loopback address (the gateway host itself) (127.0.0.1 inside a NAT64 address)',
      '0x7f.1': '0x7f.1 is not a standard IPv4 address: write it as four decimal numbers, e.g. 203.0.113.10',
    });
  });

  test("refuses the gateway's own interface addresses, but not their neighbours", async () => {
    const interfaces: InterfaceSource = () => ({
      lo: [iface('127.0.0.1', 'IPv4', true), iface('::1', 'IPv6', true)],
      eth0: [iface('10.0.0.5', 'IPv4'), iface('fd12::5', 'IPv6'), iface('fe80::5', 'IPv6')],
      docker0: [iface('172.17.0.1', 'IPv4')],
      eth1: [iface('198.51.100.20', 'IPv4')],
    });
    await assertVerdicts(guardWith({}, { interfaces }), {
      '10.0.0.5': 'gateway-address',
      '::ffff:10.0.0.5': 'gateway-address',
      'fd12::5': 'gateway-address',
      'fe80::5': 'gateway-address',
      '172.17.0.1': 'gateway-address',
      '198.51.100.20': 'gateway-address',
      '10.0.0.6': 'allowed:10.0.0.6',
      'fd12::6': 'allowed:fd12::6',
      '172.17.0.2': 'allowed:172.17.0.2',
    });
    // Allowing the gateway's subnet does not open the gateway itself; allowing the exact address does.
    await assertVerdicts(guardWith({ allowedCidrs: ['10.0.0.0/8', 'fd12::/64'] }, { interfaces }), {
      '10.0.0.5': 'gateway-address',
      'fd12::5': 'gateway-address',
      '10.0.0.6': 'allowed:10.0.0.6',
    });
    assert.equal(
      await verdict(guardWith({ allowedCidrs: ['10.0.0.5/32'] }, { interfaces }), '10.0.0.5'),
      'allowed:10.0.0.5',
    );
    // Loopback stays with the loopback rule, so allowing 127.0.0.0/8 (as the tests do) still works.
    assert.equal(
      await verdict(guardWith({ allowedCidrs: ['127.0.0.0/8'] }, { interfaces }), '127.0.0.1'),
      'allowed:127.0.0.1',
    );
  });

  test('the interface addresses are read again after a few seconds, not kept forever', async () => {
    const clock = new ManualClock();
    let current: NodeJS.Dict<NetworkInterfaceInfo[]> = { eth0: [iface('10.0.0.5', 'IPv4')] };
    let reads = 0;
    const guard = guardWith(
      {},
      {
        clock,
        interfaces: () => {
          reads++;
          return current;
        },
      },
    );
    assert.equal(await verdict(guard, '10.0.0.5'), 'gateway-address');
    assert.equal(await verdict(guard, '10.0.0.9'), 'allowed:10.0.0.9');
    // DHCP moved the gateway to 10.0.0.9 and a new IPv6 address appeared.
    current = { eth0: [iface('10.0.0.9', 'IPv4'), iface('2001:db8::9', 'IPv6')] };
    clock.advance(OWN_ADDRESSES_TTL_MS);
    await assertVerdicts(guard, {
      '10.0.0.9': 'gateway-address',
      '2001:db8::9': 'gateway-address',
      '10.0.0.5': 'allowed:10.0.0.5',
    });
    assert.equal(reads, 2, 'read once per interval, not on every check');
    // A source that fails keeps the last list in force.
    current = null as unknown as NodeJS.Dict<NetworkInterfaceInfo[]>;
    clock.advance(OWN_ADDRESSES_TTL_MS);
    assert.equal(await verdict(guard, '10.0.0.9'), 'gateway-address');
  });

  test('the real interfaces: every non-loopback address of this machine is refused', async (t) => {
    const own = Object.values(networkInterfaces())
      .flatMap((infos) => infos ?? [])
      .filter((i) => !i.internal);
    if (own.length === 0) return t.skip('this machine has no non-loopback interface');
    const guard = new AddressGuard({ allowedCidrs: ['0.0.0.0/0', '::/0'], deniedCidrs: [] });
    for (const info of own) {
      assert.equal(await verdict(guard, info.address), 'gateway-address', info.address);
    }
  });

  test('INSTANCE_DENY_PRIVATE refuses private and other non-public ranges; an allowed block opens one', async () => {
    await assertVerdicts(guardWith({ denyPrivate: true }), {
      '10.1.2.3': 'private',
      '172.16.0.1': 'private',
      '172.31.255.254': 'private',
      '192.168.1.1': 'private',
      '::ffff:192.168.1.1': 'private',
      'fc00::1': 'private',
      'fd12:3456::1': 'private',
      '100.64.0.1': 'non-public',
      '100.127.255.254': 'non-public',
      '198.18.0.1': 'non-public',
      '192.0.2.1': 'non-public',
      '203.0.113.7': 'non-public',
      '240.0.0.1': 'non-public',
      '2001:db8::1': 'non-public',
      '64:ff9b::a01:203': 'private', // NAT64 of 10.1.2.3
      '100.100.100.200': 'metadata',
      '172.32.0.1': 'allowed:172.32.0.1',
      '100.128.0.1': 'allowed:100.128.0.1',
      '8.8.8.8': 'allowed:8.8.8.8',
      '2606:4700::1111': 'allowed:2606:4700::1111',
    });
    await assertVerdicts(guardWith({ denyPrivate: true, allowedCidrs: ['10.0.0.0/8'] }), {
      '10.1.2.3': 'allowed:10.1.2.3',
      '172.16.0.1': 'private',
    });
  });

  test('precedence: the most specific block decides; at equal length INSTANCE_ALLOWED_CIDRS wins', async () => {
    await assertVerdicts(
      guardWith({ allowedCidrs: ['127.0.0.0/8', '10.0.0.0/8'], deniedCidrs: ['10.1.0.0/16', '127.0.0.0/8'] }),
      {
        '127.0.0.1': 'allowed:127.0.0.1', // allow and deny of the same block: allow
        '10.1.2.3': 'denied-by-config', // the deny is narrower
        '10.2.3.4': 'allowed:10.2.3.4',
        '169.254.169.254': 'metadata',
      },
    );
  });
});

describe('address guard at the API: create, update, test and connect', () => {
  /** A TCP listener on one of this machine's own addresses that counts who connects to it. */
  async function listenOn(
    address: string,
  ): Promise<{ server: Server; port: number; connections: () => number }> {
    let connections = 0;
    const server = createServer((socket: Socket) => {
      connections++;
      socket.destroy();
    });
    server.listen(0, address);
    await once(server, 'listening');
    return { server, port: (server.address() as AddressInfo).port, connections: () => connections };
  }

  test("the gateway's own non-loopback address is refused, and the gateway never connects to it", async (t) => {
    const own = Object.values(networkInterfaces())
      .flatMap((infos) => infos ?? [])
      .find((i) => !i.internal && i.family === 'IPv4');
    if (!own) return t.skip('this machine has no non-loopback IPv4 interface');
    const listener = await listenOn(own.address);
    // A name that first resolves to a public address, then (DNS changed, or rebinding) to the gateway.
    let answer = '203.0.113.50';
    const gw = await buildTestGateway({}, { resolver: () => Promise.resolve([answer]) });
    try {
      const user = await newUser(gw);
      const create = (host: string) =>
        gw.app.inject({
          method: 'POST',
          url: '/api/instances',
          headers: user.auth,
          payload: {
            name: 'self',
            host,
            port: listener.port,
            username: 'u',
            auth: { type: 'password', password: 'pw' },
          },
        });
      const refused = await create(own.address);
      assert.equal(refused.statusCode, 422);
      assert.deepEqual(refused.json().error, {
        code: 'INSTANCE_ADDRESS_FORBIDDEN',
        message: `This address is not allowed for an instance: ${own.address} is one of this gateway's own addresses`,
        details: { address: own.address, reason: 'gateway-address' },
      });

      const created = await create('moving.example');
      assert.equal(created.statusCode, 201);
      const id = created.json().data.id as string;
      const patch = await gw.app.inject({
        method: 'PATCH',
        url: `/api/instances/${id}`,
        headers: user.auth,
        payload: { host: own.address },
      });
      assert.equal(patch.statusCode, 422);
      assert.equal(patch.json().error.code, 'INSTANCE_ADDRESS_FORBIDDEN');

      answer = own.address;
      const probe = await gw.app.inject({
        method: 'POST',
        url: `/api/instances/${id}/test`,
        headers: user.auth,
      });
      assert.equal(probe.statusCode, 422);
      assert.equal(probe.json().error.details.reason, 'gateway-address');
      const connect = await gw.app.inject({
        method: 'POST',
        url: '/api/sessions/connect',
        headers: user.auth,
        payload: { instanceId: id, desktopEnvironment: 'openbox' },
      });
      assert.equal(connect.statusCode, 422);
      assert.equal(connect.json().error.details.reason, 'gateway-address');
      assert.equal(listener.connections(), 0, 'the gateway connected to its own address');
    } finally {
      await gw.cleanup();
      listener.server.close();
      await once(listener.server, 'close');
    }
  });
});
