// HTTP Range / If-Range for downloads (RFC 9110 §14): one `bytes=` range; anything else is served whole.

export type RangeDecision =
  { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/** A strong validator for a remote file: its size and mtime (all SFTP v3 tells us). */
export function etagOf(size: number, mtimeSeconds: number): string {
  return `"${size.toString(16)}-${mtimeSeconds.toString(16)}"`;
}

export function lastModifiedOf(mtimeSeconds: number): string {
  return new Date(mtimeSeconds * 1000).toUTCString();
}

export function decideRange(
  rangeHeader: string | undefined,
  ifRange: string | undefined,
  size: number,
  etag: string,
  lastModified: string,
): RangeDecision {
  if (rangeHeader === undefined) return { kind: 'full' };
  // A Range whose If-Range names another version of the file gets the whole (new) file.
  if (ifRange !== undefined && ifRange.trim() !== etag && ifRange.trim() !== lastModified)
    return { kind: 'full' };
  const m = /^bytes=(\d*)-(\d*)$/.exec(rangeHeader.trim());
  // Several ranges, other units or bad syntax: ignoring Range is what the RFC allows.
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'full' };
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return { kind: 'unsatisfiable' };
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return { kind: 'full' };
  }
  if (!Number.isSafeInteger(start) || start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end };
}
