// A smaller SSH receive window for the gateway's stream channels (the ones a viewer's bytes go through).
//
// ssh2 opens every channel with a fixed 2 MiB window, tops it up to 2 MiB whenever it falls below 1 MiB,
// and keeps doing so while a paused channel's readable buffer is below its own 2 MiB high-water mark. So a
// viewer that stops reading could pin ~4 MiB in the gateway before sshd stops sending: SSH's flow control,
// not ours, would decide what a stalled viewer costs. ssh2 has no option for this, so for the channels the
// pool opens as byte streams this module (through ssh2's internal protocol object, checked at run time):
//   - asks for `windowBytes` in the channel-open request instead of 2 MiB,
//   - grants more only when the instance's remaining window is at most half of it, and only up to it
//     (ssh2's own bookkeeping is set to match, so it never believes the instance may send more than it may),
//   - lowers the channel's readable high-water mark to `bufferBytes`: a paused channel stops granting
//     window once that much is buffered.
// A stalled channel then holds at most windowBytes + bufferBytes. If ssh2's internals ever change shape,
// `supportsStreamWindow` is false, the pool logs it once and the channel keeps ssh2's defaults;
// test/ssh-pool.test.ts shows the bound on the installed version.
//
// A stream read under a viewer's budget (SESSION_MAX_KBPS) gets a smaller window still, sized from the
// budget (streamWindowFor): what is in flight when the budget pauses the channel is what the viewer
// sees late, so it is kept to about a quarter second of the budget.
import type { Client as Ssh2Client, ClientChannel } from 'ssh2';

/** ssh2's own receive window, which a window of 0 ("not capped") leaves in place. */
export const SSH2_DEFAULT_WINDOW_BYTES = 2 * 1024 * 1024;
/** How much of a budgeted stream may be in flight, in seconds of its budget. */
export const BUDGET_WINDOW_SECONDS = 0.25;
/** The smallest window worth asking for: two full 32 KiB SSH packets, so a grant never stalls a packet. */
export const MIN_STREAM_WINDOW_BYTES = 64 * 1024;

export interface StreamWindow {
  windowBytes: number;
  bufferBytes: number;
}

/**
 * The window and buffer of a stream whose reader takes at most `budgetKbps` (0: no budget, the configured
 * ones). A budget pause stops the reader, but what the instance may still send — the window plus the
 * buffer — keeps arriving, and is older by the time it is sent: a 512 KiB window under a 2 Mbit/s budget
 * is ~2 s of stale frames. So a budgeted stream gets about BUDGET_WINDOW_SECONDS of its budget (at
 * least MIN_STREAM_WINDOW_BYTES, never more than configured) and a buffer of a quarter of that.
 */
export function streamWindowFor(budgetKbps: number, configured: StreamWindow): StreamWindow {
  if (budgetKbps <= 0) return configured;
  const ceiling = configured.windowBytes > 0 ? configured.windowBytes : SSH2_DEFAULT_WINDOW_BYTES;
  const wanted = Math.round(((budgetKbps * 1000) / 8) * BUDGET_WINDOW_SECONDS);
  const windowBytes = Math.min(ceiling, Math.max(MIN_STREAM_WINDOW_BYTES, wanted));
  return { windowBytes, bufferBytes: Math.min(configured.bufferBytes, windowBytes >> 2) };
}

interface ProtocolInternals {
  channelWindowAdjust(remoteId: number, amount: number): void;
  openssh_directStreamLocal(localId: number, window: number, packetSize: number, cfg: unknown): void;
  directTcpip(localId: number, window: number, packetSize: number, cfg: unknown): void;
}

interface ChannelInternals {
  incoming?: { window?: unknown };
  outgoing?: { id?: unknown };
  _readableState?: { highWaterMark?: unknown };
}

interface WindowState {
  /** Window size the next stream-channel open asks for (set just around that call), or null. */
  openWindow: number | null;
  /** Stream channels with a capped window, by the instance's id for them (what window adjusts carry). */
  capped: Map<number, { channel: ChannelInternals; windowBytes: number }>;
}

const states = new WeakMap<Ssh2Client, WindowState>();

function protocolOf(client: Ssh2Client): ProtocolInternals | null {
  const p = (client as unknown as { _protocol?: Partial<ProtocolInternals> })._protocol;
  if (
    p &&
    typeof p.channelWindowAdjust === 'function' &&
    typeof p.openssh_directStreamLocal === 'function' &&
    typeof p.directTcpip === 'function'
  )
    return p as ProtocolInternals;
  return null;
}

/** True when this ssh2 client exposes what the window cap needs (call once the client is connected). */
export function supportsStreamWindow(client: Ssh2Client): boolean {
  return protocolOf(client) !== null;
}

function stateOf(client: Ssh2Client): WindowState | null {
  const existing = states.get(client);
  if (existing) return existing;
  const proto = protocolOf(client);
  if (!proto) return null;
  const state: WindowState = { openWindow: null, capped: new Map() };
  const channelWindowAdjust = proto.channelWindowAdjust.bind(proto);
  const openStreamLocal = proto.openssh_directStreamLocal.bind(proto);
  const directTcpip = proto.directTcpip.bind(proto);
  proto.openssh_directStreamLocal = (localId, window, packetSize, cfg) =>
    openStreamLocal(localId, state.openWindow ?? window, packetSize, cfg);
  proto.directTcpip = (localId, window, packetSize, cfg) =>
    directTcpip(localId, state.openWindow ?? window, packetSize, cfg);
  proto.channelWindowAdjust = (remoteId, amount) => {
    const entry = state.capped.get(remoteId);
    if (!entry) {
      channelWindowAdjust(remoteId, amount);
      return;
    }
    // ssh2 has already added `amount` to its count of what the instance may send; take it back and grant
    // our own amount (or nothing) instead.
    const incoming = entry.channel.incoming as { window: number };
    const remaining = incoming.window - amount;
    if (remaining > entry.windowBytes >> 1) {
      incoming.window = remaining;
      return;
    }
    const grant = entry.windowBytes - remaining;
    incoming.window = remaining + grant;
    channelWindowAdjust(remoteId, grant);
  };
  states.set(client, state);
  return state;
}

/**
 * Opens a stream channel with `open` (which must call ssh2's forwardOut / openssh_forwardOutStreamLocal
 * synchronously) asking for a `windowBytes` window, and caps the channel once it is open. Returns false,
 * opening nothing, when this client cannot be capped: the caller then opens the channel plainly.
 */
export function openWithStreamWindow(
  client: Ssh2Client,
  windowBytes: number,
  bufferBytes: number,
  open: (cb: (err: Error | undefined, channel: ClientChannel) => void) => void,
  cb: (err: Error | undefined, channel: ClientChannel) => void,
): boolean {
  const state = stateOf(client);
  if (!state) return false;
  state.openWindow = windowBytes;
  try {
    // The open confirmation calls back synchronously from ssh2's packet handler, before any data for the
    // channel can be handled, so ssh2's count is corrected before it counts a single byte.
    open((err, channel) => {
      if (!err) capChannel(state, channel, windowBytes, bufferBytes);
      cb(err, channel);
    });
  } finally {
    state.openWindow = null;
  }
  return true;
}

function capChannel(
  state: WindowState,
  channel: ClientChannel,
  windowBytes: number,
  bufferBytes: number,
): void {
  const c = channel as unknown as ChannelInternals;
  const remoteId = c.outgoing?.id;
  if (typeof remoteId !== 'number' || typeof c.incoming?.window !== 'number') return;
  c.incoming.window = windowBytes;
  if (c._readableState && typeof c._readableState.highWaterMark === 'number') {
    c._readableState.highWaterMark = bufferBytes;
  }
  const entry = { channel: c, windowBytes };
  state.capped.set(remoteId, entry);
  // The instance may reuse the id for a later channel: only remove our own entry.
  channel.once('close', () => {
    if (state.capped.get(remoteId) === entry) state.capped.delete(remoteId);
  });
}
