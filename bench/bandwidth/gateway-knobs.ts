// Which environment variables this checkout's gateway reads: its own config parser, run over an
// environment that records every name asked for. A setting that needs a variable the gateway does not
// read yet is reported as "not known to this gateway" instead of being measured as the default.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.js';

export function gatewayVariables(): Set<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'clouddesk-bw-knobs-'));
  const seen = new Set<string>();
  // Secrets given, so the parser generates nothing into the data folder.
  const env: Record<string, string> = {
    DATA_DIR: dataDir,
    JWT_ACCESS_SECRET: 'k'.repeat(43),
    JWT_REFRESH_SECRET: 'r'.repeat(43),
    ENCRYPTION_KEY: '0'.repeat(64),
  };
  const recording = new Proxy(env, {
    get(target, name) {
      if (typeof name === 'string') seen.add(name);
      return target[name as string];
    },
  });
  try {
    loadConfig(recording);
  } catch {
    // only the names matter
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
  return seen;
}
