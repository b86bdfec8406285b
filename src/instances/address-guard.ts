// Which addresses an instance may have, so a user cannot point the gateway at the gateway host
// itself, at a cloud's metadata service or (opt-in) at the private network around it (issue 14.2).
//
// Refused by default: loopback, unspecified, link-local (169.254/16 holds most clouds' metadata
// endpoint), multicast and broadcast, the other clouds' metadata endpoints, and every address of the
// gateway's own interfaces (re-read every few seconds: addresses come and go). INSTANCE_DENY_PRIVATE
// adds the private and other non-public ranges; INSTANCE_DENIED_CIDRS adds the operator's own.
//
// Precedence: the most specific block that holds the address decides, as in a routing table. An
// INSTANCE_ALLOWED_CIDRS block overrides every deny that is as wide or wider: allowing 10.0.0.0/8
// opens the private range but not the gateway's own 10.0.0.5 (a /32) or Alibaba's metadata
// endpoint inside 100.64/10; allowing exactly that address does.
//
// Address forms: IPv4-mapped and SIIT IPv6 are checked as the IPv4 address they carry; NAT64,
// 6to4 and Teredo addresses are refused if the IPv4 address they embed is; IPv4 spelt other than
// as four decimal numbers (2130706433, 0x7f.1, 0177.0.0.1, 127.1) is refused, since parsers
// disagree on what it means. Names are resolved, every address is checked, and the SSH connection
// then goes to the checked address (no DNS rebinding in between). The check runs at create, update,
// test and every connect, so a name that changes its answer later is caught then.
import { lookup } from 'node:dns/promises';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { AppError } from '../errors/errors.js';
import { systemClock, type Clock } from '../lib/clock.js';

export type Resolver = (host: string) => Promise<string[]>;

export const dnsResolver: Resolver = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/** The gateway's interfaces, as `os.networkInterfaces()` reports them (injected in tests). */
export type InterfaceSource = () => NodeJS.Dict<NetworkInterfaceInfo[]>;

/** How long the interface addresses are trusted before they are read again. */
export const OWN_ADDRESSES_TTL_MS = 5_000;

/** Why an address is refused: a stable token (in the error's details) and the words for a person. */
export type RefusalReason =
  | 'loopback'
  | 'unspecified'
  | 'link-local'
  | 'metadata'
  | 'gateway-address'
  | 'multicast'
  | 'broadcast'
  | 'ipv4-compatible'
  | 'private'
  | 'non-public'
  | 'denied-by-config'
  | 'non-standard-form';

const reasonWords: Record<RefusalReason, string> = {
  loopback: 'a loopback address (the gateway host itself)',
  unspecified: 'an unspecified address (the gateway host itself)',
  'link-local': 'a link-local address (where cloud metadata services live)',
  metadata: "a cloud provider's instance metadata endpoint",
  'gateway-address': "one of this gateway's own addresses",
  multicast: 'a multicast address, not a single machine',
  broadcast: 'the broadcast address, not a single machine',
  'ipv4-compatible': 'a deprecated IPv4-compatible IPv6 address',
  private: 'a private network address, refused on this gateway (INSTANCE_DENY_PRIVATE)',
  'non-public':
    'a reserved, shared or documentation address, refused on this gateway (INSTANCE_DENY_PRIVATE)',
  'denied-by-config': 'in a range this gateway refuses (INSTANCE_DENIED_CIDRS)',
  'non-standard-form': 'not a standard IPv4 address: write it as four decimal numbers, e.g. 203.0.113.10',
};

type Ip = ipaddr.IPv4 | ipaddr.IPv6;

interface Rule {
  net: Ip;
  bits: number;
  /** null: an INSTANCE_ALLOWED_CIDRS block. */
  reason: RefusalReason | null;
}

const defaultDenied: [string, RefusalReason][] = [
  ['0.0.0.0/8', 'unspecified'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  // ::a.b.c.d, deprecated since RFC 4291: no real host has one.
  ['::/96', 'ipv4-compatible'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
  // Metadata endpoints outside link-local (169.254.169.254 itself, used by AWS, GCP, Azure, Oracle,
  // DigitalOcean, OpenStack, …, and Tencent's 169.254.0.23 are link-local already).
  ['169.254.169.254/32', 'metadata'],
  ['fd00:ec2::254/128', 'metadata'], // AWS instance metadata, IPv6
  ['fd00:ec2::23/128', 'metadata'], // AWS EKS Pod Identity agent, IPv6
  ['fd20:ce::254/128', 'metadata'], // Google Cloud metadata server, IPv6
  ['100.100.100.200/32', 'metadata'], // Alibaba Cloud
  ['168.63.129.16/32', 'metadata'], // Azure WireServer
  ['192.0.0.192/32', 'metadata'], // Oracle Cloud (classic)
  ['fd00:42::42/128', 'metadata'], // Scaleway, IPv6
];

/** INSTANCE_DENY_PRIVATE: everything IANA marks as not globally reachable, for all-public fleets. */
const privateDenied: [string, RefusalReason][] = [
  ['10.0.0.0/8', 'private'],
  ['172.16.0.0/12', 'private'],
  ['192.168.0.0/16', 'private'],
  ['fc00::/7', 'private'], // unique local (ULA)
  ['fec0::/10', 'private'], // site-local, deprecated
  ['100.64.0.0/10', 'non-public'], // carrier-grade NAT (RFC 6598)
  ['192.0.0.0/24', 'non-public'], // IETF protocol assignments
  ['192.0.2.0/24', 'non-public'], // documentation
  ['198.51.100.0/24', 'non-public'],
  ['203.0.113.0/24', 'non-public'],
  ['198.18.0.0/15', 'non-public'], // benchmarking
  ['240.0.0.0/4', 'non-public'], // reserved
  ['64:ff9b:1::/48', 'non-public'], // local-use NAT64
  ['100::/64', 'non-public'], // discard-only
  ['2001:2::/48', 'non-public'], // benchmarking
  ['2001:db8::/32', 'non-public'], // documentation
  ['3fff::/20', 'non-public'],
];

/** A CIDR block as config accepts it: an IP address in its standard form, `/`, a prefix length. */
export function isCidr(text: string): boolean {
  const slash = text.indexOf('/');
  if (slash < 0) return false;
  const net = text.slice(0, slash);
  const family = isIP(net);
  if (family === 0 || !/^\d{1,3}$/.test(text.slice(slash + 1))) return false;
  return Number(text.slice(slash + 1)) <= (family === 4 ? 32 : 128);
}

function rule(cidr: string, reason: RefusalReason | null): Rule {
  const slash = cidr.indexOf('/');
  const net = parseIp(cidr.slice(0, slash));
  const bits = Number(cidr.slice(slash + 1));
  const v4 = normalize(net);
  // ::ffff:10.0.0.0/104 is 10.0.0.0/8: addresses are compared in their IPv4 form.
  if (v4 !== net && bits >= 96) return { net: v4, bits: bits - 96, reason };
  return { net, bits, reason };
}

/** An address Node's isIP() accepted, parsed. */
function parseIp(text: string): Ip {
  // ipaddr.js reads ::a.b.c.d as ::ffff:a.b.c.d; the kernel (and RFC 4291) read it as IPv4-compatible
  // ::a.b.c.d. Spelling the IPv4 tail in hex first makes the two agree.
  const m = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (!m) return ipaddr.parse(text);
  const [a, b, c, d] = [m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number];
  return ipaddr.parse(`${m[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`);
}

/** IPv4-mapped (::ffff:a.b.c.d) and SIIT (::ffff:0:a.b.c.d) addresses reach the IPv4 address. */
function normalize(ip: Ip): Ip {
  if (ip.kind() === 'ipv4') return ip;
  const v6 = ip as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address();
  const p = v6.parts;
  if (p[0] === 0 && p[1] === 0 && p[2] === 0 && p[3] === 0 && p[4] === 0xffff && p[5] === 0) {
    return ipv4FromParts(p[6]!, p[7]!);
  }
  return v6;
}

function ipv4FromParts(high: number, low: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff]);
}

const nat64 = ipaddr.IPv6.parse('64:ff9b::');
const nat64Local = ipaddr.IPv6.parse('64:ff9b:1::');
const sixToFour = ipaddr.IPv6.parse('2002::');
const teredo = ipaddr.IPv6.parse('2001::');

/** The IPv4 address an IPv6 address carries to a translator or relay, if any. */
function embeddedIpv4(ip: ipaddr.IPv6): { v4: ipaddr.IPv4; form: string } | null {
  const p = ip.parts;
  // NAT64: the well-known prefix (/96), and local-use prefixes, which may be shorter; the /96 form
  // is the common one.
  if (ip.match(nat64, 96) || ip.match(nat64Local, 48))
    return { v4: ipv4FromParts(p[6]!, p[7]!), form: 'NAT64' };
  // 6to4: 2002:AABB:CCDD::/48.
  if (ip.match(sixToFour, 16)) return { v4: ipv4FromParts(p[1]!, p[2]!), form: '6to4' };
  // Teredo: 2001:0:server:flags:port:client, the client's bits inverted.
  if (ip.match(teredo, 32)) return { v4: ipv4FromParts(~p[6]! & 0xffff, ~p[7]! & 0xffff), form: 'Teredo' };
  return null;
}

/** 2130706433, 0x7f.1, 0177.0.0.1, 127.1, 01.2.3.4: numbers that are not a standard dotted quad. */
function isNonStandardIpv4(host: string): boolean {
  return isIP(host) === 0 && host.split('.').every((label) => /^(0x[0-9a-f]*|\d+)$/i.test(label));
}

export interface AddressGuardOptions {
  allowedCidrs: readonly string[];
  deniedCidrs: readonly string[];
  denyPrivate?: boolean;
}

export class AddressGuard {
  private readonly rules: Rule[];
  private readonly resolve: Resolver;
  private readonly interfaces: InterfaceSource;
  private readonly clock: Clock;
  private own: { rules: Rule[]; readAt: number } | null = null;

  constructor(
    options: AddressGuardOptions,
    deps: { resolve?: Resolver; interfaces?: InterfaceSource; clock?: Clock } = {},
  ) {
    this.resolve = deps.resolve ?? dnsResolver;
    this.interfaces = deps.interfaces ?? networkInterfaces;
    this.clock = deps.clock ?? systemClock;
    this.rules = [
      ...defaultDenied.map(([c, r]) => rule(c, r)),
      ...(options.denyPrivate ? privateDenied.map(([c, r]) => rule(c, r)) : []),
      ...options.deniedCidrs.map((c) => rule(c, 'denied-by-config')),
      ...options.allowedCidrs.map((c) => rule(c, null)),
    ];
  }

  /**
   * Resolves `host` and returns the address to connect to (the first one), refusing with
   * INSTANCE_ADDRESS_FORBIDDEN, and the reason in words, if any of its addresses is forbidden.
   */
  async check(host: string): Promise<string> {
    const literal = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
    if (isNonStandardIpv4(literal)) throw forbidden(literal, literal, 'non-standard-form');
    let addresses: string[];
    if (isIP(literal)) {
      addresses = [literal];
    } else {
      try {
        addresses = await this.resolve(literal);
      } catch {
        throw new AppError('INSTANCE_HOST_UNRESOLVABLE');
      }
    }
    if (addresses.length === 0) throw new AppError('INSTANCE_HOST_UNRESOLVABLE');
    const checked: string[] = [];
    for (const a of addresses) {
      if (isIP(a) === 0) throw new AppError('INSTANCE_HOST_UNRESOLVABLE');
      const ip = normalize(parseIp(a));
      const refusal = this.refusal(ip);
      if (refusal) throw forbidden(literal, ip.toString(), refusal.reason, refusal.via);
      checked.push(ip.toString());
    }
    return checked[0]!;
  }

  /** Why this address (and whatever IPv4 address it embeds) is refused, or null. */
  private refusal(ip: Ip): { reason: RefusalReason; via?: string } | null {
    const own = this.ownAddressRules();
    const reason = this.decide(ip, own);
    if (reason) return { reason };
    if (ip.kind() === 'ipv6') {
      const embedded = embeddedIpv4(ip as ipaddr.IPv6);
      const inner = embedded && this.decide(embedded.v4, own);
      if (inner) return { reason: inner, via: `${embedded.v4.toString()} inside a ${embedded.form} address` };
    }
    return null;
  }

  /** Longest prefix wins; at equal length an allow wins over a deny. */
  private decide(ip: Ip, own: readonly Rule[]): RefusalReason | null {
    let best: Rule | null = null;
    for (const r of [...this.rules, ...own]) {
      if (r.net.kind() !== ip.kind() || !ip.match(r.net, r.bits)) continue;
      if (best === null || r.bits > best.bits || (r.bits === best.bits && r.reason === null)) best = r;
    }
    return best?.reason ?? null;
  }

  /**
   * Every address of the gateway's interfaces as a single-address deny, read again once
   * OWN_ADDRESSES_TTL_MS has passed (DHCP, a new IPv6 address, a container network). Loopback
   * addresses are left to the loopback rule, so that allowing 127.0.0.0/8 (tests) still works.
   * If the interfaces cannot be read, the last list read stays in force.
   */
  private ownAddressRules(): Rule[] {
    const now = this.clock.now();
    if (this.own && now - this.own.readAt < OWN_ADDRESSES_TTL_MS) return this.own.rules;
    let rules: Rule[] = [];
    try {
      for (const infos of Object.values(this.interfaces())) {
        for (const info of infos ?? []) {
          if (isIP(info.address) === 0) continue;
          const ip = normalize(parseIp(info.address));
          if (ip.range() === 'loopback') continue;
          rules.push({ net: ip, bits: ip.kind() === 'ipv4' ? 32 : 128, reason: 'gateway-address' });
        }
      }
    } catch {
      rules = this.own?.rules ?? [];
    }
    this.own = { rules, readAt: now };
    return rules;
  }
}

function forbidden(host: string, address: string, reason: RefusalReason, via?: string): AppError {
  const what = via ? `${reasonWords[reason]} (${via})` : reasonWords[reason];
  let message: string;
  if (reason === 'non-standard-form') message = `${host} is ${what}`;
  else if (host === address) message = `This address is not allowed for an instance: ${address} is ${what}`;
  else if (isIP(host))
    message = `This address is not allowed for an instance: ${host} (${address}) is ${what}`;
  else
    message = `This address is not allowed for an instance: ${host} resolves to ${address}, which is ${what}`;
  return new AppError('INSTANCE_ADDRESS_FORBIDDEN', { message, details: { address, reason } });
}
