// "Type the clipboard": text sent to the desktop as key presses, as Guacamole offers, for programs
// where pasting does not work or arrives mangled (xterm's Ctrl+Shift+V, a login prompt, a VM console).
// Each character becomes its X11 keysym: Latin-1 maps to itself, any other Unicode character to
// 0x01000000 + its code point (TigerVNC's Xvnc adds the Shift or AltGr a keysym needs), newline to
// Return and tab to Tab. Other control characters are skipped.

/** More than this is refused: a runaway paste must not queue minutes of key presses. */
export const MAX_TYPED_CHARACTERS = 10_000;

const RETURN = 0xff0d;
const TAB = 0xff09;

export function keysymsFor(text: string): number[] {
  const out: number[] = [];
  const normalized = text.replace(/\r\n?/g, '\n');
  for (const ch of normalized) {
    const cp = ch.codePointAt(0)!;
    if (ch === '\n') out.push(RETURN);
    else if (ch === '\t') out.push(TAB);
    else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) continue;
    else if (cp <= 0xff) out.push(cp);
    else out.push(0x01000000 + cp);
  }
  return out;
}
