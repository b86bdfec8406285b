// The process's open-file limit, for a warning at start: a gateway holds one descriptor per viewer, so a
// low limit (1024 is the common default soft limit; Node raises the soft limit to the hard one at start)
// caps how many viewers one process can take, and the viewers past it fail with EMFILE at accept.
import { readFileSync } from 'node:fs';

/** Below this many open files, the start warns (the plan puts a process's practical maximum at 10–15k viewers). */
export const OPEN_FILES_WANTED = 16_384;

/** The soft "Max open files" of a /proc/<pid>/limits text; null when absent or unlimited. */
export function parseOpenFilesLimit(limits: string): number | null {
  const m = /^Max open files\s+(\S+)/m.exec(limits);
  if (!m || m[1] === 'unlimited') return null;
  const n = Number(m[1]);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

/** This process's soft open-file limit (Linux), or null where it cannot be read. */
export function openFilesLimit(
  read: () => string = () => readFileSync('/proc/self/limits', 'utf8'),
): number | null {
  try {
    return parseOpenFilesLimit(read());
  } catch {
    return null;
  }
}
