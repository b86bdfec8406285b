// One system call per turn of the event loop for an SSH connection, instead of one per SSH packet.
//
// ssh2 writes every packet it builds straight to the socket: a keystroke, a FramebufferUpdateRequest or a
// window adjust for each of up to 64 channels on one connection is a write(2) of its own, and on a busy
// gateway those calls were its largest single CPU cost (profiled: a quarter of the main thread at 600
// viewers). Corking the socket at the first packet of a turn and uncorking it once the turn's I/O callbacks
// have run (setImmediate) sends them all in one writev(2). A packet waits at most for the rest of the
// current turn.
import type { Socket } from 'node:net';

export function coalesceWrites(sock: Socket): void {
  let corked = false;
  const flush = (): void => {
    corked = false;
    sock.uncork();
  };
  const write = sock.write.bind(sock) as (...args: unknown[]) => boolean;
  sock.write = (...args: unknown[]): boolean => {
    if (!corked) {
      corked = true;
      sock.cork();
      setImmediate(flush);
    }
    return write(...args);
  };
}
