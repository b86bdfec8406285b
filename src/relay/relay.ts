// The hot path: one viewer's WebSocket piped into one SSH channel to its desktop, with backpressure
// both ways and every buffer bounded.
//
//   desktop → viewer: channel 'data' → ws.send. Above `highWaterBytes` of ws.bufferedAmount the channel
//     is paused (ssh2 then stops re-opening the SSH window, so sshd stops reading Xvnc); each completed
//     send re-checks and resumes below half of it. Paused for longer than `stallTimeoutMs` → the viewer
//     is closed with STALLED: a browser that stopped reading must not pin memory forever.
//   viewer → desktop: ws 'message' → channel.write; when it returns false the WebSocket is paused
//     (ws stops reading its socket) until the channel drains.
//   Before the channel is open, what the viewer sends is buffered (up to `preOpenBufferBytes`), not
//   dropped: a VNC client may speak first.
//
// Per chunk the relay allocates nothing of its own: callbacks are bound once, counters are plain
// numbers that the metrics read on scrape. Per viewer it keeps little (issue 9, bench:viewer-memory): the
// options object is the gateway's one, shared by every relay, and the timers' callbacks are module
// functions handed the relay, not closures of their own.
import type { Duplex } from 'node:stream';
import type { WebSocket, RawData } from 'ws';
import { permissivePolicy, type ViewerPolicy } from '../rfb/viewer-policy.js';
import {
  RfbProtocolError,
  ViewerStreamParser,
  type ViewerStreamOptions,
} from '../rfb/viewer-stream-parser.js';
import { CloseCode } from './close-codes.js';
import { TokenBucket } from './token-bucket.js';

export interface RelayOptions {
  highWaterBytes: number;
  stallTimeoutMs: number;
  preOpenBufferBytes: number;
  /** Largest ClientCutText the viewer may send (the WebSocket's own payload limit). */
  maxCutTextBytes: number;
  /** Monotonic milliseconds for the budget; default performance.now. */
  now?: () => number;
  /** Told about a failure that is not the viewer's fault (a bug): the viewer is closed with INTERNAL. */
  onInternalError?: (e: unknown, relay: Relay) => void;
}

/** What this one viewer is: its policy, and where its RFB stream starts. */
export interface RelayViewer {
  policy: ViewerPolicy;
  /** 'client-init' when the gateway played the server's handshake itself (the tcp transport). */
  streamStart: ViewerStreamOptions['start'];
}

const defaultViewer: RelayViewer = { policy: permissivePolicy, streamStart: 'version' };

export interface RelayStats {
  bytesToViewer: number;
  bytesFromViewer: number;
}

const SEND_OPTIONS = Object.freeze({ binary: true, compress: false });
const defaultNow = (): number => performance.now();

export class Relay implements RelayStats {
  bytesToViewer = 0;
  bytesFromViewer = 0;
  /** Times the budget paused the channel. */
  budgetPauses = 0;
  /** Set when the relay ended; the code/reason it closed the viewer with (if it did). */
  closed = false;

  private channel: Duplex | null = null;
  /** Consumes the viewer's first bytes (a gateway-served handshake) until it returns the rest. */
  private preamble: ((chunk: Buffer) => Buffer | null) | null = null;
  private preambleTimer: NodeJS.Timeout | null = null;
  private pending: Buffer[] | null = [];
  private pendingBytes = 0;
  private channelPaused = false;
  /** Paused because the viewer's WebSocket is full (the stall deadline runs). */
  private backpressured = false;
  /** Paused because the budget is spent (until budgetTimer). */
  private budgetHeld = false;
  private budgetTimer: NodeJS.Timeout | null = null;
  private stallTimer: NodeJS.Timeout | null = null;
  private readonly lowWaterBytes: number;
  private readonly parser: ViewerStreamParser;
  private readonly bucket: TokenBucket | null;
  private readonly now: () => number;

  constructor(
    private readonly ws: WebSocket,
    private readonly options: RelayOptions,
    private readonly onEnd: (relay: Relay) => void,
    viewer: RelayViewer = defaultViewer,
  ) {
    this.lowWaterBytes = options.highWaterBytes >> 1;
    this.now = options.now ?? defaultNow;
    this.parser = new ViewerStreamParser(
      viewer.policy,
      { start: viewer.streamStart, maxCutTextBytes: options.maxCutTextBytes },
      this.forwardToDesktop,
    );
    this.bucket = viewer.policy.maxKbps > 0 ? TokenBucket.forKbps(viewer.policy.maxKbps, this.now()) : null;
    ws.on('message', this.onViewerMessage);
    ws.on('close', this.onViewerClose);
    ws.on('error', noop);
  }

  /** Connects the viewer to the desktop's byte stream; anything the viewer sent so far goes first. */
  attach(channel: Duplex): void {
    if (this.closed) {
      channel.destroy();
      return;
    }
    this.channel = channel;
    channel.on('data', this.onDesktopData);
    channel.on('drain', this.onChannelDrain);
    channel.on('close', this.onChannelClose);
    channel.on('end', this.onChannelClose);
    channel.on('error', noop);
    const pending = this.pending!;
    this.pending = null;
    this.pendingBytes = 0;
    for (const chunk of pending) this.writeToChannel(chunk);
    // A stream handed over explicitly paused (e.g. after the gateway's own VNC authentication) does
    // not start flowing just because a 'data' listener was added.
    channel.resume();
  }

  /**
   * Routes the viewer's bytes through `feed` first, until it returns what is left past its end (see
   * rfb-viewer-handshake.ts); a throw or `timeoutMs` passing closes the viewer.
   */
  setPreamble(feed: (chunk: Buffer) => Buffer | null, timeoutMs: number): void {
    this.preamble = feed;
    this.preambleTimer = setTimeout(onPreambleTimeout, timeoutMs, this);
    this.preambleTimer.unref();
  }

  /** Messages the viewer's policy dropped (view-only). */
  get droppedMessages(): number {
    return this.parser.dropped;
  }

  /** Ends the relay: the viewer is closed with `code` (if still open) and the channel destroyed. */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimers();
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) {
      this.ws.close(code, reason);
    }
    this.channel?.destroy();
    this.onEnd(this);
  }

  private readonly onViewerMessage = (data: RawData, isBinary: boolean): void => {
    if (this.closed) return;
    if (!isBinary) {
      this.close(CloseCode.PROTOCOL_ERROR, 'binary frames only');
      return;
    }
    let chunk = data as Buffer; // binaryType is 'nodebuffer' (the default)
    this.bytesFromViewer += chunk.length;
    if (this.preamble !== null) {
      let rest: Buffer | null;
      try {
        rest = this.preamble(chunk);
      } catch {
        this.close(CloseCode.PROTOCOL_ERROR, 'bad RFB handshake');
        return;
      }
      if (rest === null) return;
      this.preamble = null;
      clearTimeout(this.preambleTimer!);
      if (rest.length === 0) return;
      chunk = rest;
    }
    try {
      this.parser.push(chunk);
    } catch (e) {
      if (e instanceof RfbProtocolError) {
        this.close(CloseCode.PROTOCOL_ERROR, `RFB: ${e.message}`);
        return;
      }
      this.options.onInternalError?.(e, this);
      this.close(CloseCode.INTERNAL, 'internal error');
    }
  };

  /** The parser's output: whole messages, after the viewer's policy. */
  private readonly forwardToDesktop = (bytes: Buffer): void => {
    if (this.closed) return;
    if (this.pending !== null) {
      this.pendingBytes += bytes.length;
      if (this.pendingBytes > this.options.preOpenBufferBytes) {
        this.close(CloseCode.PROTOCOL_ERROR, 'too much data before the desktop answered');
        return;
      }
      this.pending.push(bytes);
      return;
    }
    this.writeToChannel(bytes);
  };

  private writeToChannel(chunk: Buffer): void {
    if (!this.channel!.write(chunk)) this.ws.pause();
  }

  private readonly onChannelDrain = (): void => {
    this.ws.resume();
  };

  private readonly onDesktopData = (chunk: Buffer): void => {
    this.bytesToViewer += chunk.length;
    this.ws.send(chunk, SEND_OPTIONS, this.onSent);
    if (!this.backpressured && this.ws.bufferedAmount > this.options.highWaterBytes) {
      this.backpressured = true;
      this.stallTimer = setTimeout(onStalled, this.options.stallTimeoutMs, this);
      this.stallTimer.unref();
      this.updateFlow();
    }
    if (this.bucket !== null) {
      const waitMs = this.bucket.take(chunk.length, this.now());
      if (waitMs > 0 && !this.budgetHeld) {
        this.budgetHeld = true;
        this.budgetPauses++;
        this.holdForBudget(waitMs);
        this.updateFlow();
      }
    }
  };

  private holdForBudget(waitMs: number): void {
    this.budgetTimer = setTimeout(onBudgetRefilled, waitMs, this);
    this.budgetTimer.unref();
  }

  /** @internal the budget timer's callback (onBudgetRefilled below). */
  budgetRefilled(): void {
    this.budgetTimer = null;
    if (this.closed) return;
    const waitMs = this.bucket!.waitAt(this.now());
    if (waitMs > 0) {
      this.holdForBudget(waitMs);
      return;
    }
    this.budgetHeld = false;
    this.updateFlow();
  }

  /** Pauses or resumes the channel: paused while backpressure or the budget holds it. */
  private updateFlow(): void {
    const hold = this.backpressured || this.budgetHeld;
    if (hold === this.channelPaused || this.closed) return;
    this.channelPaused = hold;
    if (hold) this.channel!.pause();
    else this.channel!.resume();
  }

  private readonly onSent = (err?: Error): void => {
    if (err || !this.backpressured || this.closed) return;
    if (this.ws.bufferedAmount <= this.lowWaterBytes) {
      this.backpressured = false;
      this.clearStall();
      this.updateFlow();
    }
  };

  /** @internal the stall timer's callback (onStalled below). */
  stalled(): void {
    this.stallTimer = null;
    if (this.backpressured) this.close(CloseCode.STALLED, 'viewer stopped reading');
  }

  private clearStall(): void {
    if (this.stallTimer) {
      clearTimeout(this.stallTimer);
      this.stallTimer = null;
    }
  }

  private clearTimers(): void {
    this.clearStall();
    if (this.budgetTimer) clearTimeout(this.budgetTimer);
    this.budgetTimer = null;
    if (this.preambleTimer) clearTimeout(this.preambleTimer);
  }

  private readonly onChannelClose = (): void => {
    this.close(CloseCode.DESKTOP_UNREACHABLE, 'desktop connection closed');
  };

  private readonly onViewerClose = (): void => {
    if (this.closed) return;
    this.closed = true;
    this.clearTimers();
    this.channel?.destroy();
    this.onEnd(this);
  };
}

function noop(): void {}

function onStalled(relay: Relay): void {
  relay.stalled();
}

function onBudgetRefilled(relay: Relay): void {
  relay.budgetRefilled();
}

function onPreambleTimeout(relay: Relay): void {
  relay.close(CloseCode.PROTOCOL_ERROR, 'handshake timed out');
}
