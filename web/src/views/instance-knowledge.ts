// What the last connection test found out about an instance (its desktop environments, with the host
// key it saw pinned), kept in the preferences so Connect can start a desktop in one click instead of
// testing again every time (issue 14 point 10). Stale knowledge is harmless: a connect that fails for
// a reason the test explains forgets it and runs the test.
import type { ConnectionTestResult, Instance } from '../api/types.js';
import type { AppContext } from '../app-context.js';

export function rememberInstance(ctx: AppContext, instanceId: string, result: ConnectionTestResult): void {
  if (result.desktopEnvironments.length === 0) return forgetInstance(ctx, instanceId);
  ctx.prefs.known[instanceId] = {
    desktops: [...result.desktopEnvironments],
    hostKeyFingerprint: result.hostKeyFingerprint,
  };
  ctx.savePrefs();
}

export function forgetInstance(ctx: AppContext, instanceId: string): void {
  if (!(instanceId in ctx.prefs.known)) return;
  delete ctx.prefs.known[instanceId];
  ctx.savePrefs();
}

/** The desktops to offer without a test, or null when the instance must be tested first. */
export function knownDesktops(ctx: AppContext, instance: Instance): string[] | null {
  const known = ctx.prefs.known[instance.id];
  if (!known || instance.hostKeyFingerprint === null) return null;
  // The key was re-trusted (or changed) since that test: what it found may be another machine's.
  if (known.hostKeyFingerprint !== instance.hostKeyFingerprint) return null;
  return known.desktops;
}

/** The desktop Connect starts: the last one chosen for this instance if it is still there, else the first. */
export function preferredDesktop(ctx: AppContext, instanceId: string, desktops: string[]): string | null {
  const last = ctx.prefs.lastDesktop[instanceId];
  return last !== undefined && desktops.includes(last) ? last : (desktops[0] ?? null);
}
