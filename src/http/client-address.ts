// The client's address behind a load balancer, decided one way for HTTP and for WebSockets: TRUST_PROXY
// is compiled once into a proxy-addr trust function (the library and the rule Fastify itself uses for
// request.ip), which Fastify and the viewer upgrade both take, so an audit event or a rate limit sees
// the same address for an API call and for a viewer's upgrade.
import type { IncomingMessage } from 'node:http';
import proxyAddr from '@fastify/proxy-addr';

/** TRUST_PROXY: false (no proxy), true (every hop), or the proxies' addresses (IP, CIDR, `loopback`, …). */
export type TrustProxy = boolean | readonly string[];

/** Whether the hop at `address` (0 = the socket's peer) is a proxy whose X-Forwarded-For is believed. */
export type ProxyTrust = (address: string, hop: number) => boolean;

export function compileProxyTrust(trust: TrustProxy): ProxyTrust {
  if (trust === true) return () => true;
  if (trust === false) return () => false;
  return proxyAddr.compile([...trust]);
}

/** The nearest address that is not a trusted proxy (Fastify's request.ip); null once the socket is gone. */
export function clientAddress(req: IncomingMessage, trust: ProxyTrust): string | null {
  if (req.socket.remoteAddress === undefined) return null;
  return proxyAddr(req, trust);
}
