// The floor: viewers connect over TCP straight to the simulator. No gateway, nothing charged.
import type { RunningStack, SimulatorHandle } from './stack.js';

export function directStack(sim: SimulatorHandle): RunningStack {
  return {
    name: 'direct',
    target: { kind: 'tcp', host: '127.0.0.1', port: sim.tcpPort },
    gateway: { name: 'none', pids: () => [] },
    sshd: null,
    accounting: 'no gateway: viewers talk TCP to the simulator',
    stop: () => Promise.resolve(),
  };
}
