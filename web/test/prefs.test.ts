// Preferences: the new defaults (Resize, Automatic), preset names a benchmark may set, and bad input.
import { describe, expect, it } from 'vitest';
import { defaultPrefs, loadPrefs } from '../src/lib/prefs.js';

const storage = (value: unknown) => ({
  getItem: () => (typeof value === 'string' ? value : JSON.stringify(value)),
});

describe('loadPrefs', () => {
  it('defaults to Resize and Automatic', () => {
    expect(loadPrefs(null)).toEqual(defaultPrefs());
    expect(defaultPrefs()).toMatchObject({ scaling: 'remote', quality: 'auto' });
  });

  it('takes any preset of the table by name, and nothing else', () => {
    for (const quality of ['auto', 'low', 'medium', 'high', 'novnc'])
      expect(loadPrefs(storage({ quality })).quality).toBe(quality);
    expect(loadPrefs(storage({ quality: 'ultra' })).quality).toBe('auto');
    expect(loadPrefs(storage({ quality: 'toString' })).quality).toBe('auto');
  });

  it('keeps what tests found, dropping malformed entries', () => {
    const prefs = loadPrefs(
      storage({
        known: {
          a: { desktops: ['openbox', 7], hostKeyFingerprint: 'SHA256:x' },
          b: { desktops: [], hostKeyFingerprint: 'SHA256:y' },
          c: 'nope',
        },
        hintsShown: ['openbox-menu', 3],
      }),
    );
    expect(prefs.known).toEqual({ a: { desktops: ['openbox'], hostKeyFingerprint: 'SHA256:x' } });
    expect(prefs.hintsShown).toEqual(['openbox-menu']);
  });

  it('moves what earlier clients saved as their defaults to the new ones, keeping real choices', () => {
    expect(loadPrefs(storage({ scaling: 'fit', quality: 'medium', lastDesktop: {} }))).toMatchObject({
      scaling: 'remote',
      quality: 'auto',
    });
    expect(loadPrefs(storage({ scaling: 'native', quality: 'low', lastDesktop: {} }))).toMatchObject({
      scaling: 'native',
      quality: 'low',
    });
    expect(loadPrefs(storage({ scaling: 'fit', quality: 'medium', version: 2 }))).toMatchObject({
      scaling: 'fit',
      quality: 'medium',
    });
  });

  it('survives garbage', () => {
    expect(loadPrefs(storage('{not json'))).toEqual(defaultPrefs());
    expect(loadPrefs(storage('null'))).toEqual(defaultPrefs());
  });
});
