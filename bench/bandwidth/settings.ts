// The settings `npm run bench:bandwidth` measures, as data: what the web client is asked for (its own
// preferences in localStorage), which JPEG-quality/compression levels go on the wire when they are not
// a preset's (noVNC's own defaults), the browser's viewport, the gateway's environment and what is changed
// on the running desktop. A new preset or cap is a new entry here; nothing else in the harness knows them.
//
// A gateway variable the gateway does not read yet, or a preset the web client does not offer yet, is
// reported as such and the setting is not measured: it would only measure the defaults under a new name.

export type Scaling = 'fit' | 'remote';

export interface BandwidthSetting {
  id: string;
  /** Column heading in the report. */
  label: string;
  /** One line: what this setting is and why it is measured. */
  description: string;
  client: {
    /** The web client's quality preset (`clouddesk.prefs` → quality); null = no preference stored. */
    quality: string | null;
    scaling: Scaling;
  };
  /**
   * JPEG quality and compression levels put into the client's SetEncodings instead of the preset's, as
   * another noVNC front end with these levels would send them (the gateway's caps still apply after).
   */
  levels?: { quality: number; compression: number };
  viewport: { width: number; height: number };
  /** Gateway environment this setting is about: every name must be one the gateway reads. */
  gatewayEnv: Record<string, string>;
  /**
   * Gateway environment that asks for today's behaviour explicitly (e.g. `DESKTOP_MAX_FPS=60` for
   * noVNC's defaults): passed when the gateway reads it, and not needed when it does not.
   */
  gatewayEnvIfKnown?: Record<string, string>;
  /** Changed by the harness on the running desktop, as its user could (xfconf). */
  desktop?: { compositing?: boolean };
}

const FIT_1280 = { width: 1280, height: 800 } as const;

export const settings: readonly BandwidthSetting[] = [
  {
    id: 'defaults',
    label: 'Defaults',
    description:
      'what a new user gets: no preference stored (the Automatic preset), the gateway as shipped (SESSION_MAX_KBPS 1500)',
    client: { quality: null, scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: {},
  },
  {
    id: 'no-budget',
    label: 'Defaults, no budget',
    description:
      'the defaults without a downstream budget: the reference for the settings marked "no budget", which each change one thing',
    client: { quality: null, scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'budget-1000',
    label: 'SESSION_MAX_KBPS=1000',
    description: 'the defaults with a 1 Mbit/s downstream budget per session',
    client: { quality: null, scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { SESSION_MAX_KBPS: '1000' },
  },
  {
    id: 'budget-2000',
    label: 'SESSION_MAX_KBPS=2000',
    description:
      'the defaults with a 2 Mbit/s downstream budget per session (target: no phase above 2.1 Mbit/s)',
    client: { quality: null, scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { SESSION_MAX_KBPS: '2000' },
  },
  {
    id: 'novnc-defaults',
    label: 'noVNC defaults',
    description:
      'noVNC’s own defaults: quality 6, compression 2, Xvnc’s 60 fps, xfwm4 compositing on, no budget, the wallpaper kept',
    client: { quality: 'medium', scaling: 'fit' },
    levels: { quality: 6, compression: 2 },
    viewport: FIT_1280,
    gatewayEnv: {},
    gatewayEnvIfKnown: { DESKTOP_MAX_FPS: '60', SESSION_MAX_KBPS: '0', DESKTOP_WALLPAPER: 'keep' },
    desktop: { compositing: true },
  },
  {
    id: 'low',
    label: 'Low, no budget',
    description: 'the web client’s "Low bandwidth" preset',
    client: { quality: 'low', scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'balanced',
    label: 'Balanced, no budget',
    description: 'the web client’s "Balanced" preset',
    client: { quality: 'medium', scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'high',
    label: 'High, no budget',
    description: 'the web client’s "High quality" preset',
    client: { quality: 'high', scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'high-quality-max-6',
    label: 'High, QUALITY_MAX=6, no budget',
    description: 'the High preset clamped by the gateway to JPEG quality 6',
    client: { quality: 'high', scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { QUALITY_MAX: '6', SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'low-quality-min-4',
    label: 'Low, QUALITY_MIN=4, no budget',
    description: 'the Low preset (quality 2) held by the gateway at JPEG quality 4 or more',
    client: { quality: 'low', scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { QUALITY_MIN: '4', SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'compositing-on',
    label: 'Defaults, compositing on, no budget',
    description:
      'the defaults with xfwm4’s compositing turned back on at run time (what the gateway’s --compositor=off saves)',
    client: { quality: null, scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { SESSION_MAX_KBPS: '0' },
    desktop: { compositing: true },
  },
  {
    id: 'wallpaper-keep',
    label: 'DESKTOP_WALLPAPER=keep, no budget',
    description: 'the defaults with the user’s own wallpaper left in place (against the gateway’s plain one)',
    client: { quality: null, scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { DESKTOP_WALLPAPER: 'keep', SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'max-fps-60',
    label: 'DESKTOP_MAX_FPS=60, no budget',
    description: 'the defaults with Xvnc at its own 60 updates per second (against the gateway’s 30)',
    client: { quality: null, scaling: 'fit' },
    viewport: FIT_1280,
    gatewayEnv: { DESKTOP_MAX_FPS: '60', SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'resize-1920',
    label: 'Resize 1920×1080, no budget',
    description:
      'Balanced, the remote desktop resized to a 1920×1080 browser window (against Fit at 1280×800)',
    client: { quality: 'medium', scaling: 'remote' },
    viewport: { width: 1920, height: 1080 },
    gatewayEnv: { SESSION_MAX_KBPS: '0' },
  },
  {
    id: 'max-geometry',
    label: 'Resize, DESKTOP_MAX_GEOMETRY=1280x800, no budget',
    description: 'Resize at 1920×1080 with the gateway’s geometry ceiling at 1280×800',
    client: { quality: 'medium', scaling: 'remote' },
    viewport: { width: 1920, height: 1080 },
    gatewayEnv: { DESKTOP_MAX_GEOMETRY: '1280x800', SESSION_MAX_KBPS: '0' },
  },
];

/** The setting the targets call "the default settings", and the baseline they compare with. */
export const DEFAULT_SETTING = 'defaults';
export const BASELINE_SETTING = 'novnc-defaults';
export const BUDGET_SETTING = 'budget-2000';

export function settingById(id: string): BandwidthSetting | undefined {
  return settings.find((s) => s.id === id);
}
