// A hidden tab asks for nothing: noVNC's update requests are held back and continuous updates are
// turned off; coming back asks for one full refresh and turns them on again (issue 13).
import { describe, expect, it } from 'vitest';
import {
  enableContinuousUpdates,
  framebufferUpdateRequest,
  UpdatePause,
} from '../src/viewer/update-pause.js';

const keyEvent = new Uint8Array([4, 1, 0, 0, 0, 0, 0, 0x61]);

describe('UpdatePause', () => {
  it('lets everything through while visible and learns whether noVNC uses continuous updates', () => {
    const p = new UpdatePause();
    expect(p.allow(framebufferUpdateRequest(true, 800, 600))).toBe(true);
    expect(p.continuousUpdates).toBe(false);
    expect(p.allow(enableContinuousUpdates(true, 800, 600))).toBe(true);
    expect(p.continuousUpdates).toBe(true);
  });

  it('while paused drops update requests (and a late enable), not input', () => {
    const p = new UpdatePause();
    p.allow(enableContinuousUpdates(true, 800, 600));
    const sent = p.pause(800, 600);
    expect(sent).toEqual([enableContinuousUpdates(false, 800, 600)]);
    expect(p.paused).toBe(true);
    expect(p.allow(framebufferUpdateRequest(true, 800, 600))).toBe(false);
    expect(p.allow(enableContinuousUpdates(true, 800, 600))).toBe(false);
    expect(p.allow(keyEvent)).toBe(true);
    expect(p.pause(800, 600)).toEqual([]);
  });

  it('on return asks for one full refresh, then continuous updates again', () => {
    const p = new UpdatePause();
    p.allow(enableContinuousUpdates(true, 1280, 800));
    p.pause(1280, 800);
    expect(p.resume(1280, 800)).toEqual([
      framebufferUpdateRequest(false, 1280, 800),
      enableContinuousUpdates(true, 1280, 800),
    ]);
    expect(p.allow(framebufferUpdateRequest(true, 1280, 800))).toBe(true);
    expect(p.resume(1280, 800)).toEqual([]);
  });

  it('without continuous updates only holds the requests back', () => {
    const p = new UpdatePause();
    expect(p.pause(640, 480)).toEqual([]);
    expect(p.resume(640, 480)).toEqual([framebufferUpdateRequest(false, 640, 480)]);
  });

  it('writes the RFB messages byte for byte', () => {
    expect([...framebufferUpdateRequest(false, 1280, 800)]).toEqual([3, 0, 0, 0, 0, 0, 5, 0, 3, 32]);
    expect([...enableContinuousUpdates(true, 1280, 800)]).toEqual([150, 1, 0, 0, 0, 0, 5, 0, 3, 32]);
  });
});
