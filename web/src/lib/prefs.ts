// Preferences kept in localStorage. Nothing secret lives here: no token, no key, no password — only
// display choices and whether this browser was signed in (to say "your session expired" rather
// than a bare sign-in page after a reload).

export type Scaling = 'fit' | 'remote' | 'native';
export type Quality = 'low' | 'medium' | 'high';

export interface Prefs {
  scaling: Scaling;
  quality: Quality;
  /** Last desktop environment chosen per instance id. */
  lastDesktop: Record<string, string>;
  wasSignedIn: boolean;
}

const KEY = 'clouddesk.prefs';
const defaults: Prefs = { scaling: 'fit', quality: 'medium', lastDesktop: {}, wasSignedIn: false };

export function loadPrefs(storage: Pick<Storage, 'getItem'> | null = safeStorage()): Prefs {
  try {
    const raw = storage?.getItem(KEY);
    if (!raw) return { ...defaults, lastDesktop: {} };
    const parsed = JSON.parse(raw) as Partial<Prefs>;
    return {
      scaling: parsed.scaling === 'remote' || parsed.scaling === 'native' ? parsed.scaling : 'fit',
      quality: parsed.quality === 'low' || parsed.quality === 'high' ? parsed.quality : 'medium',
      lastDesktop:
        typeof parsed.lastDesktop === 'object' && parsed.lastDesktop !== null
          ? { ...parsed.lastDesktop }
          : {},
      wasSignedIn: parsed.wasSignedIn === true,
    };
  } catch {
    return { ...defaults, lastDesktop: {} };
  }
}

export function savePrefs(prefs: Prefs, storage: Pick<Storage, 'setItem'> | null = safeStorage()): void {
  try {
    storage?.setItem(KEY, JSON.stringify(prefs));
  } catch {
    // storage full or disabled: preferences are a convenience
  }
}

function safeStorage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null;
  }
}
