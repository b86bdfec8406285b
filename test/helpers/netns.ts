// Test fixture: a network namespace of our own with veth links to the host, so a test can run a
// process "on another machine" and cut that machine off by link, then heal it. Root only (`ip`,
// `tc`). Only private test addresses (10.213.<n>.x/30) and nothing that routes off the machine.
//
// A cut drops packets silently in both directions (tc's `blackhole` qdisc on each end; `netem` is not
// in this kernel), as a real partition does: no reset, no ICMP, no "network unreachable". Connections
// already open stay open and stall; new ones wait for an answer that does not come. Neighbour entries
// are pinned (`nud permanent`), so a cut does not turn into a fast "no route to host" once ARP gives up.
//
// Everything created is removed by `dispose()`, and also by a synchronous handler on process exit if a
// test failed before reaching its own cleanup. Names carry this process's id, so concurrent runs do not
// collide.
import { execFile, execFileSync } from 'node:child_process';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface NetnsLink {
  label: string;
  /** Interface names: on the host, and inside the namespace. */
  hostIf: string;
  nsIf: string;
  /** The host end's address (reachable from inside the namespace) and the namespace end's. */
  hostAddress: string;
  nsAddress: string;
  isCut(): boolean;
  /** Drops every packet on the link, both ways, from now on. */
  cut(): Promise<void>;
  heal(): Promise<void>;
}

export interface NetnsFixture {
  name: string;
  /** A /16 CIDR holding every address of this fixture (for INSTANCE_ALLOWED_CIDRS and the like). */
  cidr: string;
  link(label: string): NetnsLink;
  /** The argv prefix that runs a command inside the namespace: `['ip', 'netns', 'exec', name]`. */
  execPrefix(): string[];
  dispose(): Promise<void>;
}

const live = new Set<{ ns: string; hostIfs: string[] }>();
let exitHandlerInstalled = false;

function removeSync(entry: { ns: string; hostIfs: string[] }): void {
  // Deleting the namespace deletes the veth ends inside it and, with them, their host peers; the
  // explicit deletes cover a namespace that never got its end.
  for (const i of entry.hostIfs) {
    try {
      execFileSync('ip', ['link', 'del', i], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  try {
    execFileSync('ip', ['netns', 'del', entry.ns], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  process.on('exit', () => {
    for (const entry of live) removeSync(entry);
  });
}

async function ip(args: string[]): Promise<string> {
  const { stdout } = await execFileP('ip', args);
  return stdout;
}

async function tc(ns: string | null, args: string[]): Promise<void> {
  if (ns === null) await execFileP('tc', args);
  else await execFileP('ip', ['netns', 'exec', ns, 'tc', ...args]);
}

async function macOf(ns: string | null, ifName: string): Promise<string> {
  const out = await ip([...(ns ? ['-n', ns] : []), '-j', 'link', 'show', 'dev', ifName]);
  const [info] = JSON.parse(out) as { address: string }[];
  if (!info) throw new Error(`no such interface ${ifName}`);
  return info.address;
}

/** A second octet block not used by any address on the host yet (10.213.<n>.0/24). */
async function freeSubnet(): Promise<number> {
  const used = await ip(['-4', '-o', 'addr', 'show']);
  const start = (process.pid % 200) + 20;
  for (let k = 0; k < 200; k++) {
    const n = ((start + k) % 250) + 1;
    if (!used.includes(`10.213.${n}.`)) return n;
  }
  throw new Error('no free 10.213.x.0/24 subnet for a test namespace');
}

/**
 * A namespace with one veth link per label, each a /30: host end 10.213.n.(4i+1), namespace end
 * 10.213.n.(4i+2). Loopback inside the namespace is up.
 */
export async function createNetns(labels: readonly string[]): Promise<NetnsFixture> {
  installExitHandler();
  const tag = `${process.pid % 100_000}${Math.floor(Math.random() * 36 ** 2).toString(36)}`;
  const name = `cdpt-${tag}`;
  const entry = { ns: name, hostIfs: [] as string[] };
  live.add(entry);
  const links = new Map<string, NetnsLink>();
  try {
    await ip(['netns', 'add', name]);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    const subnet = await freeSubnet();
    for (const [i, label] of labels.entries()) {
      // Interface names are at most 15 characters.
      const hostIf = `cdh${tag}${i}`.slice(0, 15);
      const nsIf = `cdn${tag}${i}`.slice(0, 15);
      const hostAddress = `10.213.${subnet}.${4 * i + 1}`;
      const nsAddress = `10.213.${subnet}.${4 * i + 2}`;
      await ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
      entry.hostIfs.push(hostIf);
      await ip(['link', 'set', nsIf, 'netns', name]);
      await ip(['addr', 'add', `${hostAddress}/30`, 'dev', hostIf]);
      await ip(['-n', name, 'addr', 'add', `${nsAddress}/30`, 'dev', nsIf]);
      await ip(['link', 'set', hostIf, 'up']);
      await ip(['-n', name, 'link', 'set', nsIf, 'up']);
      const [hostMac, nsMac] = await Promise.all([macOf(null, hostIf), macOf(name, nsIf)]);
      await ip(['neigh', 'replace', nsAddress, 'lladdr', nsMac, 'dev', hostIf, 'nud', 'permanent']);
      await ip([
        '-n',
        name,
        'neigh',
        'replace',
        hostAddress,
        'lladdr',
        hostMac,
        'dev',
        nsIf,
        'nud',
        'permanent',
      ]);
      let cut = false;
      links.set(label, {
        label,
        hostIf,
        nsIf,
        hostAddress,
        nsAddress,
        isCut: () => cut,
        async cut() {
          if (cut) return;
          await tc(null, ['qdisc', 'replace', 'dev', hostIf, 'root', 'blackhole']);
          await tc(name, ['qdisc', 'replace', 'dev', nsIf, 'root', 'blackhole']);
          cut = true;
        },
        async heal() {
          if (!cut) return;
          await tc(null, ['qdisc', 'del', 'dev', hostIf, 'root']);
          await tc(name, ['qdisc', 'del', 'dev', nsIf, 'root']);
          cut = false;
        },
      });
    }
  } catch (e) {
    removeSync(entry);
    live.delete(entry);
    throw e;
  }
  let disposed: Promise<void> | null = null;
  return {
    name,
    cidr: '10.213.0.0/16',
    link(label) {
      const l = links.get(label);
      if (!l) throw new Error(`no link ${label} in ${name}`);
      return l;
    },
    execPrefix: () => ['ip', 'netns', 'exec', name],
    dispose: () =>
      (disposed ??= (async () => {
        for (const i of entry.hostIfs) await ip(['link', 'del', i]).catch(() => '');
        await ip(['netns', 'del', name]).catch(() => '');
        live.delete(entry);
      })()),
  };
}

/** Names of the namespaces that exist now (to assert a test left none behind). */
export async function listNetns(): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.length > 0);
}

export interface TcpForwarder {
  host: string;
  port: number;
  /** Connections open now. */
  open(): number;
  close(): Promise<void>;
}

/**
 * A plain TCP forwarder: listens on `listenHost` (a free port) and joins each connection to `target`,
 * with backpressure both ways (pipe). How a process in the namespace reaches a server that listens on
 * the host's loopback only (the shared PostgreSQL, the sshd fixture) through a link the test can cut.
 */
export async function startTcpForwarder(
  listenHost: string,
  target: { host: string; port: number },
): Promise<TcpForwarder> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection(target);
    sockets.add(client).add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listenHost, port: 0 }, () => resolve());
  });
  const a = server.address();
  const port = typeof a === 'object' && a !== null ? a.port : 0;
  return {
    host: listenHost,
    port,
    open: () => sockets.size / 2,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
