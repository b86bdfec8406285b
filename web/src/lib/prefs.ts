// Preferences kept in localStorage under `clouddesk.prefs`. Nothing secret lives here: no token, no
// key, no password — only display choices, what the last connection test of each instance found (so
// Connect needs no new test), which one-time hints were shown, and whether this browser was signed
// in (to say "your session expired" rather than a bare sign-in page after a reload, and to skip the
// refresh call on a first visit). A benchmark or a person may set `quality` to any preset name of
// viewer/quality.ts before the page loads.
import { isQualityName, type QualityName } from '../viewer/quality.js';

export type Scaling = 'fit' | 'remote' | 'native';
export type Quality = QualityName;

export interface KnownInstance {
  /** Desktop environments the last successful test (or connect) found, in the gateway's order. */
  desktops: string[];
  /** The host key that test saw pinned: knowledge about another key is stale. */
  hostKeyFingerprint: string;
}

export interface Prefs {
  scaling: Scaling;
  quality: Quality;
  /** Last desktop environment chosen per instance id. */
  lastDesktop: Record<string, string>;
  /** What the last connection test found, per instance id. */
  known: Record<string, KnownInstance>;
  /** One-time hints already shown (e.g. 'openbox-menu'). */
  hintsShown: string[];
  wasSignedIn: boolean;
  /** 2 since Resize and Automatic became the defaults. */
  version: number;
}

const KEY = 'clouddesk.prefs';
const VERSION = 2; // since Resize and Automatic became the defaults

export function defaultPrefs(): Prefs {
  // Resize: the remote desktop matches the window, so text is drawn 1:1 and sharp (issue 14 point 11);
  // Automatic: quality follows the measured link (issue 13).
  return {
    scaling: 'remote',
    quality: 'auto',
    lastDesktop: {},
    known: {},
    hintsShown: [],
    wasSignedIn: false,
    version: VERSION,
  };
}

export function loadPrefs(storage: Pick<Storage, 'getItem'> | null = safeStorage()): Prefs {
  const prefs = defaultPrefs();
  try {
    const raw = storage?.getItem(KEY);
    if (!raw) return prefs;
    const parsed = JSON.parse(raw) as Record<string, unknown>;
    if (parsed.scaling === 'fit' || parsed.scaling === 'remote' || parsed.scaling === 'native')
      prefs.scaling = parsed.scaling;
    if (typeof parsed.quality === 'string' && isQualityName(parsed.quality)) prefs.quality = parsed.quality;
    prefs.lastDesktop = stringRecord(parsed.lastDesktop);
    prefs.known = knownRecord(parsed.known);
    if (Array.isArray(parsed.hintsShown))
      prefs.hintsShown = parsed.hintsShown.filter((x): x is string => typeof x === 'string');
    prefs.wasSignedIn = parsed.wasSignedIn === true;
    // Earlier clients saved their defaults (Fit, Balanced) as if chosen, always with `lastDesktop` and
    // no `version`: those become the new defaults; a choice that differed from them is kept. (A
    // benchmark that sets only `quality` gets exactly that preset.)
    if (parsed.version === undefined && 'lastDesktop' in parsed) {
      if (prefs.scaling === 'fit') prefs.scaling = 'remote';
      if (prefs.quality === 'medium') prefs.quality = 'auto';
    }
  } catch {
    // unreadable: start from the defaults
  }
  return prefs;
}

export function savePrefs(prefs: Prefs, storage: Pick<Storage, 'setItem'> | null = safeStorage()): void {
  try {
    storage?.setItem(KEY, JSON.stringify(prefs));
  } catch {
    // storage full or disabled: preferences are a convenience
  }
}

function stringRecord(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof value !== 'object' || value === null) return out;
  for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  return out;
}

function knownRecord(value: unknown): Record<string, KnownInstance> {
  const out: Record<string, KnownInstance> = {};
  if (typeof value !== 'object' || value === null) return out;
  for (const [id, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'object' || v === null) continue;
    const { desktops, hostKeyFingerprint } = v as Record<string, unknown>;
    if (!Array.isArray(desktops) || typeof hostKeyFingerprint !== 'string') continue;
    const list = desktops.filter((d): d is string => typeof d === 'string');
    if (list.length > 0) out[id] = { desktops: list, hostKeyFingerprint };
  }
  return out;
}

function safeStorage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null;
  }
}
