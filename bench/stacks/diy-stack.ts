// The do-it-yourself peer a team would build instead of CloudDesk: Debian's websockify (Python, one
// forked process per WebSocket) in front of one OpenSSH `ssh -N -L` tunnel (key auth, loopback only)
// to the simulator's TCP port behind the benchmark's sshd. Every viewer is one websockify child, one
// TCP connection into the local forward and one direct-tcpip channel on the single SSH connection.
//
// Charged as its gateway: websockify with all its children, plus the ssh client — the two programs
// that stand where CloudDesk stands. The sshd serving the tunnel is reported apart, as it is for
// CloudDesk.
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/helpers/free-port.js';
import { gatewayPrefix, type PinPlan } from '../lib/pinning.js';
import { onCleanup, stopChild, trackChild } from '../lib/process-registry.js';
import { startBenchSshd } from './bench-sshd.js';
import { groupOf, waitForPort, type RunningStack, type SimulatorHandle } from './stack.js';

/** `pin`: websockify and the ssh client stand where the gateway stands, so they get its CPU. */
export async function diyStack(sim: SimulatorHandle, pin: PinPlan | null = null): Promise<RunningStack> {
  const onGatewayCpu = (cmd: string, args: string[]): [string, string[]] => {
    const [c, ...rest] = [...gatewayPrefix(pin), cmd, ...args];
    return [c!, rest];
  };
  const sshd = await startBenchSshd();
  const user = sshd.fixture.users[0]!;
  const dir = await mkdtemp(join(tmpdir(), 'clouddesk-bench-diy-'));
  const removeDir = onCleanup('diy temp dir', () => rm(dir, { recursive: true, force: true }));
  const keyPath = join(dir, 'id_ed25519');
  await writeFile(keyPath, user.privateKey, { mode: 0o600 });
  await chmod(keyPath, 0o600);

  const tunnelPort = await freePort();
  const ssh = trackChild(
    spawn(
      ...onGatewayCpu('ssh', [
        '-N',
        '-o',
        'BatchMode=yes',
        '-o',
        'ExitOnForwardFailure=yes',
        '-o',
        'StrictHostKeyChecking=no',
        '-o',
        'UserKnownHostsFile=/dev/null',
        '-o',
        'LogLevel=ERROR',
        '-o',
        'ServerAliveInterval=10',
        '-i',
        keyPath,
        '-p',
        String(sshd.fixture.port),
        '-L',
        `127.0.0.1:${tunnelPort}:127.0.0.1:${sim.tcpPort}`,
        `${user.username}@127.0.0.1`,
      ]),
      { stdio: ['ignore', 'ignore', 'inherit'] },
    ),
  );
  await waitForPort(tunnelPort, 30_000, 'ssh -L');

  const wsPort = await freePort();
  const websockify = trackChild(
    spawn(...onGatewayCpu('websockify', [`127.0.0.1:${wsPort}`, `127.0.0.1:${tunnelPort}`]), {
      stdio: ['ignore', 'ignore', 'ignore'],
    }),
  );
  await waitForPort(wsPort, 30_000, 'websockify');

  return {
    name: 'diy',
    target: { kind: 'websocket', url: `ws://127.0.0.1:${wsPort}/` },
    gateway: groupOf('websockify+ssh', () => [websockify.pid, ssh.pid]),
    sshd: sshd.group,
    accounting:
      'gateway = websockify (+ its forked children) + the ssh -L client; sshd = the sshd listener and its per-connection processes',
    stop: async () => {
      await stopChild(websockify);
      await stopChild(ssh);
      await sshd.stop();
      await removeDir();
    },
  };
}
