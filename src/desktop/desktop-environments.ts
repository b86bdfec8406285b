// The allow-list of desktop environments a user may ask for, and how each is found and started on an
// instance. Only ids from this list ever reach the instance (as an argument of the constant remote script),
// and only the programs named here are ever run for them.

interface DesktopEnvironmentSpec {
  label: string;
  /** Candidate session commands, best first; the first one installed is used. Constant words only. */
  commands: readonly (readonly string[])[];
  /**
   * Started beside the session when installed, for a desktop that otherwise opens empty (openbox is a
   * black screen until right-click): candidate programs, best first, constant words only.
   */
  companion?: readonly string[];
  /** Arguments for the companion (constant words): where it opens, out of the way of what comes later. */
  companionArgs?: readonly string[];
}

export const desktopEnvironments = {
  xfce: { label: 'Xfce', commands: [['startxfce4'], ['xfce4-session']] },
  openbox: {
    label: 'Openbox',
    commands: [['openbox-session'], ['openbox']],
    companion: ['xterm'],
    companionArgs: ['-geometry', '80x24-0-0'],
  },
  mate: { label: 'MATE', commands: [['mate-session']] },
  lxqt: { label: 'LXQt', commands: [['startlxqt'], ['lxqt-session']] },
  icewm: { label: 'IceWM', commands: [['icewm-session'], ['icewm']] },
} as const satisfies Record<string, DesktopEnvironmentSpec>;

export type DesktopEnvironmentId = keyof typeof desktopEnvironments;

export const desktopEnvironmentIds = Object.keys(desktopEnvironments) as DesktopEnvironmentId[];

export function isDesktopEnvironmentId(value: unknown): value is DesktopEnvironmentId {
  return typeof value === 'string' && Object.hasOwn(desktopEnvironments, value);
}

// Words that may appear in a command above: checked once at load, so a typo can never become shell syntax.
const safeWord = /^[A-Za-z0-9._-]+$/;
for (const [id, spec] of Object.entries(desktopEnvironments)) {
  if (!safeWord.test(id)) throw new Error(`desktop environment id ${id} is not a safe word`);
  const companion: readonly string[] = 'companion' in spec ? [...spec.companion, ...spec.companionArgs] : [];
  for (const word of [...spec.commands.flat(), ...companion])
    if (!safeWord.test(word)) throw new Error(`unsafe word in ${id}: ${word}`);
}
