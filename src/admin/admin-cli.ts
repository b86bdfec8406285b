// `clouddesk admin create --email E --password-stdin` and `clouddesk admin promote EMAIL`: the
// operator's way in on any install (a cluster has no "first account becomes admin"). They use the
// configured store (SQLite or PostgreSQL), run its migrations like a gateway does, and audit as
// `system` with `via: cli`.
import { AuthService, normalizeEmail } from '../auth/auth.service.js';
import type { Config } from '../config/config.js';
import { AppError } from '../errors/errors.js';
import { systemClock } from '../lib/clock.js';
import { randomId } from '../lib/ids.js';
import type { Logger } from '../observability/logger.js';
import { openStore } from '../store/database.js';
import { AuditRepository } from '../store/audit.repository.js';
import { UserRepository } from '../store/user.repository.js';
import { AuditLog } from '../audit/audit-log.js';

export class CliError extends Error {}

export async function adminCreate(
  config: Config,
  logger: Logger,
  email: string,
  password: string,
): Promise<string> {
  if (password.length < 8 || password.length > 256)
    throw new CliError('the password must be 8 to 256 characters');
  return withStore(config, logger, async ({ users, audit }) => {
    const auth = new AuthService(
      { users, clock: systemClock, newId: randomId, audit },
      {
        accessSecret: config.secrets.jwtAccessSecret,
        refreshSecret: config.secrets.jwtRefreshSecret,
        accessTtlSeconds: config.auth.accessTtlSeconds,
        refreshTtlSeconds: config.auth.refreshTtlSeconds,
        refreshReuseGraceMs: config.auth.refreshReuseGraceMs,
      },
    );
    try {
      const row = await auth.createAccount(email, password, 'admin');
      audit.record('auth.register', {
        actor: 'system',
        subjectUserId: row.id,
        targetId: row.id,
        details: { email: row.email, role: 'admin', via: 'cli' },
      });
      return `admin ${row.email} created (id ${row.id})`;
    } catch (e) {
      if (e instanceof AppError && e.code === 'EMAIL_TAKEN')
        throw new CliError(
          `an account with ${normalizeEmail(email)} exists: use \`clouddesk admin promote\``,
        );
      throw e;
    }
  });
}

export async function adminPromote(config: Config, logger: Logger, email: string): Promise<string> {
  return withStore(config, logger, async ({ users, audit }) => {
    const row = await users.findByEmail(normalizeEmail(email));
    if (!row) throw new CliError(`no account with ${normalizeEmail(email)}`);
    if (row.role === 'admin') return `${row.email} is already an admin`;
    await users.setRole(row.id, 'admin');
    audit.record('user.role-changed', {
      actor: 'system',
      subjectUserId: row.id,
      targetId: row.id,
      details: { from: row.role, to: 'admin', via: 'cli' },
    });
    return `${row.email} is now an admin`;
  });
}

async function withStore<T>(
  config: Config,
  logger: Logger,
  fn: (deps: { users: UserRepository; audit: AuditLog }) => Promise<T>,
): Promise<T> {
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: 2 });
  const audit = new AuditLog(
    { repo: new AuditRepository(store), clock: systemClock, logger },
    { nodeId: `cli-${process.pid}` },
  );
  try {
    const result = await fn({ users: new UserRepository(store), audit });
    await audit.flush();
    return result;
  } finally {
    await store.close();
  }
}
