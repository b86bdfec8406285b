// The budget's token bucket and the SSH window a budgeted stream gets: pure arithmetic, with time passed in.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MIN_BURST_BYTES, TokenBucket } from '../src/relay/token-bucket.js';
import { MIN_STREAM_WINDOW_BYTES, streamWindowFor } from '../src/ssh/stream-window.js';

describe('token bucket', () => {
  test('a budget in kbit/s refills at its rate, with half a second (at least 64 KiB) of burst', () => {
    const b = TokenBucket.forKbps(2000, 0); // 250 000 bytes/s
    assert.equal(b.capacity, 125_000);
    assert.equal(TokenBucket.forKbps(200, 0).capacity, MIN_BURST_BYTES);
    assert.equal(b.take(125_000, 0), 0, 'the full burst passes at once');
    assert.equal(b.take(25_000, 0), 100, '25 KB owed at 250 B/ms: 100 ms');
    assert.equal(b.waitAt(60), 40);
    assert.equal(b.waitAt(100), 0);
    assert.equal(b.balance, 0);
  });

  test('small updates under the budget never wait; a sustained stream averages the rate', () => {
    const b = TokenBucket.forKbps(2000, 0);
    // Typing: 1 KB every 200 ms (40 kbit/s) for a minute.
    for (let t = 0; t < 60_000; t += 200) assert.equal(b.take(1000, t), 0);
    // A stream far above the budget, sent whenever the bucket lets it: 10 s of it carry 10 s of budget plus the burst.
    const c = TokenBucket.forKbps(2000, 0);
    let t = 0;
    let sent = 0;
    while (t < 10_000) {
      sent += 32 * 1024;
      t += c.take(32 * 1024, t);
    }
    assert.ok(sent <= 250_000 * 10 + 125_000 + 32 * 1024, `sent ${sent}`);
    assert.ok(sent >= 250_000 * 10, `sent ${sent}`);
  });

  test('idle time refills no further than the burst allowance, and time never runs backwards', () => {
    const b = TokenBucket.forKbps(1000, 0);
    b.take(b.capacity, 0);
    b.waitAt(3_600_000);
    assert.equal(b.balance, b.capacity);
    b.take(b.capacity, 3_600_000);
    assert.equal(b.waitAt(1000), 0, 'an earlier time changes nothing');
    assert.equal(b.balance, 0);
  });
});

describe('stream window of a budgeted stream', () => {
  const configured = { windowBytes: 512 * 1024, bufferBytes: 64 * 1024 };

  test('no budget: the configured window and buffer', () => {
    assert.deepEqual(streamWindowFor(0, configured), configured);
  });

  test('a quarter second of the budget, at least 64 KiB, at most the configured window; a quarter of it buffered', () => {
    assert.deepEqual(streamWindowFor(2000, configured), {
      windowBytes: MIN_STREAM_WINDOW_BYTES,
      bufferBytes: 16 * 1024,
    });
    assert.deepEqual(streamWindowFor(8000, configured), { windowBytes: 250_000, bufferBytes: 62_500 });
    assert.deepEqual(streamWindowFor(100_000, configured), {
      windowBytes: 512 * 1024,
      bufferBytes: 64 * 1024,
    });
    assert.equal(
      streamWindowFor(8000, { windowBytes: 0, bufferBytes: 64 * 1024 }).windowBytes,
      250_000,
      'also under ssh2 defaults',
    );
  });
});
