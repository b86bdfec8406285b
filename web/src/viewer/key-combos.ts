// Key combinations a browser (or the local OS) would keep for itself, sent to the desktop on request.
// Keysyms from X11's keysymdef.h; codes are KeyboardEvent.code values (noVNC uses them for QEMU's
// extended key events).

export interface KeyCombo {
  id: string;
  label: string;
  keys: Array<{ keysym: number; code: string }>;
}

const K = {
  ControlL: { keysym: 0xffe3, code: 'ControlLeft' },
  AltL: { keysym: 0xffe9, code: 'AltLeft' },
  SuperL: { keysym: 0xffeb, code: 'MetaLeft' },
  ShiftL: { keysym: 0xffe1, code: 'ShiftLeft' },
  Delete: { keysym: 0xffff, code: 'Delete' },
  Tab: { keysym: 0xff09, code: 'Tab' },
  Escape: { keysym: 0xff1b, code: 'Escape' },
  F4: { keysym: 0xffc1, code: 'F4' },
  Print: { keysym: 0xff61, code: 'PrintScreen' },
  T: { keysym: 0x0074, code: 'KeyT' },
  BackSpace: { keysym: 0xff08, code: 'Backspace' },
} as const;

export const keyCombos: KeyCombo[] = [
  { id: 'ctrl-alt-del', label: 'Ctrl + Alt + Del', keys: [K.ControlL, K.AltL, K.Delete] },
  { id: 'alt-tab', label: 'Alt + Tab', keys: [K.AltL, K.Tab] },
  { id: 'alt-f4', label: 'Alt + F4', keys: [K.AltL, K.F4] },
  { id: 'ctrl-esc', label: 'Ctrl + Esc', keys: [K.ControlL, K.Escape] },
  { id: 'ctrl-alt-t', label: 'Ctrl + Alt + T', keys: [K.ControlL, K.AltL, K.T] },
  { id: 'super', label: 'Super (Windows key)', keys: [K.SuperL] },
  { id: 'print', label: 'Print Screen', keys: [K.Print] },
  { id: 'escape', label: 'Esc', keys: [K.Escape] },
  { id: 'ctrl-shift-esc', label: 'Ctrl + Shift + Esc', keys: [K.ControlL, K.ShiftL, K.Escape] },
  { id: 'ctrl-backspace', label: 'Ctrl + Backspace', keys: [K.ControlL, K.BackSpace] },
];

/** Presses the keys in order and releases them in reverse, like fingers do. */
export function sendCombo(
  combo: KeyCombo,
  send: (keysym: number, code: string, down: boolean) => void,
): void {
  for (const k of combo.keys) send(k.keysym, k.code, true);
  for (const k of [...combo.keys].reverse()) send(k.keysym, k.code, false);
}
