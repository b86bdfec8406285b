// What every page gets from the application shell (app.ts): the API client, who is signed in, the
// preferences, navigation and the hand-offs between pages. Its own module so that views depend on
// this contract and not on the shell that mounts them (the shell imports the views; issue 14 point 16).
import type { ApiClient } from './api/api-client.js';
import type { User } from './api/types.js';
import type { Prefs } from './lib/prefs.js';

export interface View {
  element: HTMLElement;
  title: string;
  /** Pages without the app header (the desktop viewer fills the window). */
  immersive?: boolean;
  destroy?(): void;
}

export interface Flash {
  message: string;
  tone: 'info' | 'error';
}

/** A session the connect dialog just started: the viewer uses its ticket instead of asking again. */
export interface PendingConnect {
  websocketUrl: string;
  instanceName: string;
  desktopEnvironment: string;
  display: number;
}

export interface AppContext {
  api: ApiClient;
  user: User | null;
  prefs: Prefs;
  go(path: string, options?: { replace?: boolean }): void;
  savePrefs(): void;
  /** A message for the next page to show once (e.g. "Your session has expired"). */
  setFlash(flash: Flash): void;
  takeFlash(): Flash | null;
  pendingConnects: Map<string, PendingConnect>;
  signedIn(user: User): void;
  signOut(): Promise<void>;
}
