// How times, durations and rates read in the interface.

/** "just now", "4 min", "2 h 5 min", "3 days". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 1) return 'less than a minute';
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const rest = minutes % 60;
    return rest === 0 ? `${hours} h` : `${hours} h ${rest} min`;
  }
  const days = Math.floor(hours / 24);
  return `${days} day${days === 1 ? '' : 's'}`;
}

/** "4 min ago" relative to now. */
export function formatAgo(iso: string | null, now: number): string {
  if (iso === null) return '—';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '—';
  const d = now - t;
  if (d < 60_000) return 'just now';
  return `${formatDuration(d)} ago`;
}

/** Local date and time, for titles and tooltips. */
export function formatDateTime(iso: string | null): string {
  if (iso === null) return '';
  const t = Date.parse(iso);
  return Number.isNaN(t) ? '' : new Date(t).toLocaleString();
}

/** Bits per second → "840 kbit/s" / "12.4 Mbit/s". */
export function formatRate(bitsPerSecond: number | null): string {
  if (bitsPerSecond === null || !Number.isFinite(bitsPerSecond) || bitsPerSecond < 0) return '—';
  const kbit = bitsPerSecond / 1000;
  if (kbit < 1000) return `${Math.round(kbit)} kbit/s`;
  return `${(kbit / 1000).toFixed(kbit < 10_000 ? 1 : 0)} Mbit/s`;
}

export function formatRtt(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '—';
  return `${Math.round(ms)} ms`;
}

/** "openbox" → "Openbox", "xfce" → "Xfce". */
export function desktopLabel(id: string): string {
  const known: Record<string, string> = {
    openbox: 'Openbox',
    xfce: 'Xfce',
    lxqt: 'LXQt',
    mate: 'MATE',
    kde: 'KDE Plasma',
    gnome: 'GNOME',
    icewm: 'IceWM',
    fluxbox: 'Fluxbox',
  };
  return known[id] ?? id.charAt(0).toUpperCase() + id.slice(1);
}

/** Bytes → "0 B", "12.3 KB", "4.5 MB", "1.2 GB" (decimal units, as transfer sizes are usually given). */
export function formatBytes(bytes: number | null): string {
  if (bytes === null || !Number.isFinite(bytes) || bytes < 0) return '—';
  if (bytes < 1000) return `${Math.round(bytes)} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Why a session ended, in words (the gateway's end reasons). */
export function endReasonLabel(reason: string | null): string {
  const known: Record<string, string> = {
    disconnected: 'Ended by you',
    'idle-timeout': 'Idle too long',
    admin: 'Ended by an admin',
    'instance-deleted': 'Instance deleted',
    'desktop-gone': 'Desktop had stopped',
    'start-failed': 'Did not start',
    'start-abandoned': 'Start abandoned',
  };
  return reason === null ? '—' : (known[reason] ?? reason);
}
