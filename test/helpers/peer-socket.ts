// What the other end of a loopback TCP connection has set on its socket: finds the socket by its ports in
// /proc/net/tcp, the process holding it by inode, and reads the option through a duplicate of its
// descriptor (pidfd_getfd, Linux ≥ 5.6, root). Used to show what sshd does on its side, which no SSH
// message reports.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

interface TcpEntry {
  localPort: number;
  remotePort: number;
  inode: string;
}

function loopbackEntries(): TcpEntry[] {
  const lines = readFileSync('/proc/net/tcp', 'utf8').trim().split('\n').slice(1);
  const entries: TcpEntry[] = [];
  for (const line of lines) {
    const f = line.trim().split(/\s+/);
    const [, localPort] = f[1]!.split(':');
    const [, remotePort] = f[2]!.split(':');
    if (f[3] !== '01') continue; // ESTABLISHED only
    entries.push({
      localPort: parseInt(localPort!, 16),
      remotePort: parseInt(remotePort!, 16),
      inode: f[9]!,
    });
  }
  return entries;
}

/** Local ports of this process's established connections to `port`. */
export function ownPortsTo(port: number): Set<number> {
  const mine = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) mine.add(m[1]!);
    } catch {
      // closed while listing
    }
  }
  return new Set(
    loopbackEntries()
      .filter((e) => e.remotePort === port && mine.has(e.inode))
      .map((e) => e.localPort),
  );
}

const READ_NODELAY = `
import ctypes, os, socket, sys
pid, fd = int(sys.argv[1]), int(sys.argv[2])
pidfd = os.pidfd_open(pid)
libc = ctypes.CDLL(None, use_errno=True)
dup = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
if dup < 0:
    raise OSError(ctypes.get_errno(), 'pidfd_getfd')
s = socket.socket(fileno=dup)
print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
`;

/** Whether the process serving `serverPort` has TCP_NODELAY on its end of the connection from `clientPort`. */
export function peerNoDelay(serverPort: number, clientPort: number): boolean {
  const entry = loopbackEntries().find((e) => e.localPort === serverPort && e.remotePort === clientPort);
  if (!entry) throw new Error(`no established connection ${clientPort} → ${serverPort}`);
  const link = `socket:[${entry.inode}]`;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== link) continue;
      } catch {
        continue;
      }
      const out = execFileSync('python3', ['-c', READ_NODELAY, pid, fd], { encoding: 'utf8' });
      return out.trim() !== '0';
    }
  }
  throw new Error(`no process holds ${link}`);
}
