// "Type the clipboard": characters become X11 keysyms.
import { describe, expect, it } from 'vitest';
import { keysymsFor } from '../src/viewer/typed-text.js';

describe('keysymsFor', () => {
  it('maps ASCII and Latin-1 to themselves, other Unicode to 0x01000000 + code point', () => {
    expect(keysymsFor('aZ ~')).toEqual([0x61, 0x5a, 0x20, 0x7e]);
    expect(keysymsFor('é')).toEqual([0xe9]);
    expect(keysymsFor('€')).toEqual([0x010020ac]);
    expect(keysymsFor('😀')).toEqual([0x0101f600]);
  });

  it('types newlines as Return (once for CRLF), tabs as Tab, and skips other control characters', () => {
    expect(keysymsFor('a\r\nb\nc\rd')).toEqual([0x61, 0xff0d, 0x62, 0xff0d, 0x63, 0xff0d, 0x64]);
    expect(keysymsFor('\tx')).toEqual([0xff09, 0x78]);
    expect(keysymsFor('\u0007\u001b[200~x\u0085')).toEqual([0x5b, 0x32, 0x30, 0x30, 0x7e, 0x78]);
  });
});
