// Which addresses an instance may have. By default the gateway refuses loopback, link-local (which
// includes the cloud metadata endpoint 169.254.169.254) and unspecified addresses, so a user cannot
// point it at the gateway host itself. INSTANCE_ALLOWED_CIDRS wins over every deny (tests allow
// 127.0.0.0/8); INSTANCE_DENIED_CIDRS adds denies. Names are resolved and every address is checked,
// and the SSH connection then goes to the checked address (no DNS rebinding in between).
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { AppError } from '../errors/errors.js';

const defaultDenied = ['127.0.0.0/8', '0.0.0.0/8', '169.254.0.0/16', '::1/128', '::/128', 'fe80::/10'];

export type Resolver = (host: string) => Promise<string[]>;

export const dnsResolver: Resolver = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

function toBlockList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [net, prefix] = cidr.split('/') as [string, string];
    list.addSubnet(net, Number(prefix), isIP(net) === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}

/** ::ffff:127.0.0.1 is 127.0.0.1: check IPv4-mapped IPv6 addresses as IPv4. */
function unmap(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

export class AddressGuard {
  private readonly allowed: BlockList;
  private readonly denied: BlockList;

  constructor(
    options: { allowedCidrs: readonly string[]; deniedCidrs: readonly string[] },
    private readonly resolve: Resolver = dnsResolver,
  ) {
    this.allowed = toBlockList(options.allowedCidrs);
    this.denied = toBlockList([...defaultDenied, ...options.deniedCidrs]);
  }

  isAllowedAddress(address: string): boolean {
    const a = unmap(address);
    const family = isIP(a) === 6 ? 'ipv6' : 'ipv4';
    if (this.allowed.check(a, family)) return true;
    return !this.denied.check(a, family);
  }

  /** Resolves `host` and returns the first address, refusing if any address is forbidden. */
  async check(host: string): Promise<string> {
    let addresses: string[];
    if (isIP(host)) {
      addresses = [host];
    } else {
      try {
        addresses = await this.resolve(host);
      } catch {
        throw new AppError('INSTANCE_HOST_UNRESOLVABLE');
      }
    }
    if (addresses.length === 0) throw new AppError('INSTANCE_HOST_UNRESOLVABLE');
    for (const a of addresses) {
      if (!this.isAllowedAddress(a)) throw new AppError('INSTANCE_ADDRESS_FORBIDDEN');
    }
    return unmap(addresses[0]!);
  }
}
