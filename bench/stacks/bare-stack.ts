// The bare ws → ssh2 prototype as a stack (bare-relay-main.ts): the floor for what CloudDesk's own work
// costs, measured in the same sitting instead of quoted from another machine's run. One sshd like the
// do-it-yourself stack's, channels to the simulator's TCP port, 64 channels per SSH connection (the
// gateway's SSH_MAX_CHANNELS_PER_CONNECTION default).
//
// Charged as its gateway: the one relay process. The sshd is reported apart, as for the other stacks.
import { spawn } from 'node:child_process';
import { gatewayPrefix, type PinPlan } from '../lib/pinning.js';
import { stopChild, trackChild } from '../lib/process-registry.js';
import { startBenchSshd } from './bench-sshd.js';
import { benchDir, groupOf, nextMessage, type RunningStack, type SimulatorHandle } from './stack.js';

export async function bareStack(sim: SimulatorHandle, pin: PinPlan | null = null): Promise<RunningStack> {
  const sshd = await startBenchSshd();
  const user = sshd.fixture.users[0]!;
  const [command, ...prefixArgs] = [...gatewayPrefix(pin), process.execPath];
  const relay = trackChild(
    spawn(command, [...prefixArgs, '--import', 'tsx', `${benchDir}stacks/bare-relay-main.ts`], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    }),
  );
  try {
    const ready = nextMessage(
      relay,
      (m): m is { type: 'ready'; port: number } =>
        typeof m === 'object' && m !== null && (m as { type?: unknown }).type === 'ready',
      30_000,
    );
    relay.send({
      type: 'start',
      sshPort: sshd.fixture.port,
      username: user.username,
      privateKey: user.privateKey,
      vncPort: sim.tcpPort,
      channelsPerConnection: 64,
    });
    const { port } = await ready;
    return {
      name: 'bare',
      target: { kind: 'websocket', url: `ws://127.0.0.1:${port}/` },
      gateway: groupOf('bare relay', () => [relay.pid]),
      sshd: sshd.group,
      accounting:
        'gateway = the bare ws → ssh2 relay process; sshd = the sshd listener and its per-connection processes',
      stop: async () => {
        await stopChild(relay);
        await sshd.stop();
      },
    };
  } catch (e) {
    await stopChild(relay);
    await sshd.stop();
    throw e;
  }
}
