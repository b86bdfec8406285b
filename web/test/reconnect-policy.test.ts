// When the viewer reconnects, and that it never opens WebSockets faster than the gateway allows.
import { describe, expect, it } from 'vitest';
import {
  classifyClose,
  defaultReconnectOptions,
  describeClose,
  ReconnectSchedule,
} from '../src/viewer/reconnect-policy.js';

function clock(start = 0) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('classifyClose', () => {
  it('stops on an ended session or a sign-out, retries drops and drains', () => {
    expect(classifyClose(4000)).toBe('ended');
    expect(classifyClose(4001)).toBe('signed-out');
    for (const code of [4010, 4011, 4012, 4013, 1001, 1006, 1011, 1005])
      expect(classifyClose(code)).toBe('reconnect');
    for (const code of [1002, 1003, 1007, 1009]) expect(classifyClose(code)).toBe('fatal');
  });
});

describe('describeClose', () => {
  it("tells a guest whether the share ended, expired or the owner ended just them (4002's reason)", () => {
    expect(describeClose(4002, 'share revoked')).toEqual({
      kind: 'ended',
      message: 'The owner stopped sharing this desktop.',
    });
    expect(describeClose(4002, 'share expired').message).toBe('This share link has expired.');
    expect(describeClose(4002, 'removed by the owner')).toEqual({
      kind: 'ended',
      message: 'The owner ended your view of this desktop.',
    });
    expect(describeClose(4003, 'viewers full').kind).toBe('ended');
  });
});

describe('ReconnectSchedule', () => {
  const noJitter = () => 0.5;

  it('backs off exponentially within one outage', () => {
    const c = clock();
    const s = new ReconnectSchedule(c.now, noJitter);
    s.dropped();
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      delays.push(s.nextOpenDelay());
      c.advance(delays[delays.length - 1]!);
      s.opened();
    }
    expect(delays).toEqual([300, 1000, 2000, 4000, 8000, 15000, 15000]);
  });

  it('keeps jitter within the configured spread', () => {
    const low = new ReconnectSchedule(
      () => 0,
      () => 0,
    );
    const high = new ReconnectSchedule(
      () => 0,
      () => 0.999999,
    );
    expect(low.nextOpenDelay()).toBe(240);
    expect(high.nextOpenDelay()).toBe(360);
  });

  it('never opens more WebSockets in a minute than the budget, even with no backoff at all', () => {
    const c = clock(1_000_000);
    const options = { ...defaultReconnectOptions, backoffMs: [0], jitter: 0 };
    const s = new ReconnectSchedule(c.now, noJitter, options);
    const opens: number[] = [];
    // A connection that connects and drops at once, over and over, for five minutes.
    while (c.now() < 1_000_000 + 5 * 60_000) {
      s.dropped();
      c.advance(s.nextOpenDelay());
      s.opened();
      opens.push(c.now());
      s.connected();
      c.advance(10);
    }
    expect(opens.length).toBeGreaterThan(30);
    for (const t of opens) {
      const inWindow = opens.filter((o) => o > t - 60_000 && o <= t).length;
      expect(inWindow).toBeLessThanOrEqual(options.maxOpensPerWindow);
    }
  });

  it('stays under the gateway limit of 10 WebSocket opens a minute by default', () => {
    expect(defaultReconnectOptions.maxOpensPerWindow).toBeLessThan(10);
    expect(defaultReconnectOptions.windowMs).toBe(60_000);
  });

  it('starts a fresh backoff after a connection that stayed up', () => {
    const c = clock();
    const s = new ReconnectSchedule(c.now, noJitter);
    s.dropped();
    for (let i = 0; i < 4; i++) {
      c.advance(s.nextOpenDelay());
      s.opened();
    }
    s.connected();
    c.advance(defaultReconnectOptions.stableAfterMs);
    s.dropped();
    expect(s.nextOpenDelay()).toBe(300);
  });

  it('keeps backing off when connections do not stay up', () => {
    const c = clock();
    const s = new ReconnectSchedule(c.now, noJitter);
    s.dropped();
    for (let i = 0; i < 3; i++) {
      c.advance(s.nextOpenDelay());
      s.opened();
    }
    s.connected();
    c.advance(1_000);
    s.dropped();
    expect(s.nextOpenDelay()).toBe(4000);
  });

  it('gives up after the bounded time and can be reset', () => {
    const c = clock();
    const s = new ReconnectSchedule(c.now, noJitter);
    s.dropped();
    c.advance(defaultReconnectOptions.giveUpAfterMs - 1);
    expect(s.expired()).toBe(false);
    c.advance(1);
    expect(s.expired()).toBe(true);
    s.reset();
    expect(s.expired()).toBe(false);
  });

  it('measures the outage from the first drop, not from each failed attempt', () => {
    const c = clock();
    const s = new ReconnectSchedule(c.now, noJitter);
    s.dropped();
    c.advance(60_000);
    s.opened();
    s.dropped();
    expect(s.remainingMs()).toBe(defaultReconnectOptions.giveUpAfterMs - 60_000);
  });
});

describe('ticket retries while the gateway is down', () => {
  it('back off to every 5 s instead of hammering it every second', () => {
    const s = new ReconnectSchedule(
      () => 0,
      () => 0.5,
    );
    expect([1, 2, 3, 4, 5, 9].map((n) => s.ticketRetryDelay(n))).toEqual([
      1000, 2000, 3000, 5000, 5000, 5000,
    ]);
  });
});
