// Registered instances: the owner's CRUD, sealing credentials at rest, turning a row into an SSH
// target (credentials opened, address re-checked), testing the login and pinning host keys.
import ssh2 from 'ssh2';
import { AppError, isAppError } from '../errors/errors.js';
import type { AuditSink } from '../audit/audit-log.js';
import type { Clock } from '../lib/clock.js';
import type { IdGenerator } from '../lib/ids.js';
import type { SecretBox } from '../crypto/secret-box.js';
import type { InstanceRepository, InstanceRow } from '../store/instance.repository.js';
import type { DesktopService, DesktopProbe } from '../desktop/desktop.service.js';
import type { SshAuth, SshTarget } from '../ssh/ssh-pool.js';
import type { AddressGuard } from './address-guard.js';

export interface PublicInstance {
  id: string;
  name: string;
  host: string;
  port: number;
  username: string;
  auth: { type: 'password' | 'privateKey' };
  hostKeyFingerprint: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface NewInstance {
  name: string;
  host: string;
  port?: number;
  username: string;
  auth: SshAuth;
  hostKeyFingerprint?: string | null;
}

export type InstancePatch = Partial<NewInstance>;

export interface InstanceTestResult extends DesktopProbe {
  reachable: true;
  hostKeyFingerprint: string;
  hostKeyStatus: 'pinned' | 'new';
}

export class InstanceService {
  constructor(
    private readonly deps: {
      instances: InstanceRepository;
      secrets: SecretBox;
      guard: AddressGuard;
      desktops: Pick<DesktopService, 'probe'>;
      clock: Clock;
      newId: IdGenerator;
      audit: AuditSink;
    },
  ) {}

  async list(userId: string): Promise<PublicInstance[]> {
    return (await this.deps.instances.listByUser(userId)).map(toPublicInstance);
  }

  async get(userId: string, id: string): Promise<PublicInstance> {
    return toPublicInstance(await this.getRow(userId, id));
  }

  async getRow(userId: string, id: string): Promise<InstanceRow> {
    const row = await this.deps.instances.findOwned(userId, id);
    if (!row) throw new AppError('INSTANCE_NOT_FOUND');
    return row;
  }

  async create(userId: string, input: NewInstance): Promise<PublicInstance> {
    await this.deps.guard.check(input.host);
    checkKey(input.auth);
    const now = this.deps.clock.now();
    const id = this.deps.newId();
    const sealed = this.deps.secrets.seal(JSON.stringify(input.auth), sealContext(id));
    const row: InstanceRow = {
      id,
      user_id: userId,
      name: input.name,
      host: input.host,
      port: input.port ?? 22,
      username: input.username,
      auth_type: input.auth.type,
      secret_ciphertext: sealed.ciphertext,
      secret_key_id: sealed.keyId,
      host_key_fingerprint: input.hostKeyFingerprint ?? null,
      created_at: now,
      updated_at: now,
    };
    await this.deps.instances.create(row);
    this.deps.audit.record('instance.created', {
      subjectUserId: userId,
      targetId: id,
      details: {
        name: row.name,
        host: row.host,
        port: row.port,
        username: row.username,
        authType: row.auth_type,
        hostKeyGiven: row.host_key_fingerprint !== null,
      },
    });
    return toPublicInstance(row);
  }

  async update(userId: string, id: string, patch: InstancePatch): Promise<PublicInstance> {
    const current = await this.getRow(userId, id);
    if (patch.host !== undefined) await this.deps.guard.check(patch.host);
    const changes: Partial<InstanceRow> = { updated_at: this.deps.clock.now() };
    if (patch.name !== undefined) changes.name = patch.name;
    if (patch.host !== undefined) changes.host = patch.host;
    if (patch.port !== undefined) changes.port = patch.port;
    if (patch.username !== undefined) changes.username = patch.username;
    if (patch.hostKeyFingerprint !== undefined) changes.host_key_fingerprint = patch.hostKeyFingerprint;
    // A new address or login identity means the old pinned key no longer says anything.
    if ((patch.host !== undefined && patch.host !== current.host) || patch.port !== undefined) {
      if (patch.hostKeyFingerprint === undefined) changes.host_key_fingerprint = null;
    }
    if (patch.auth !== undefined) {
      checkKey(patch.auth);
      const sealed = this.deps.secrets.seal(JSON.stringify(patch.auth), sealContext(id));
      changes.auth_type = patch.auth.type;
      changes.secret_ciphertext = sealed.ciphertext;
      changes.secret_key_id = sealed.keyId;
    }
    if (!(await this.deps.instances.update(userId, id, changes))) throw new AppError('INSTANCE_NOT_FOUND');
    // Which fields, never their values for the credential.
    const fields = Object.keys(patch).filter((k) => patch[k as keyof InstancePatch] !== undefined);
    this.deps.audit.record('instance.changed', {
      subjectUserId: userId,
      targetId: id,
      details: {
        fields,
        ...(patch.host === undefined ? {} : { host: patch.host }),
        ...(patch.auth === undefined ? {} : { authType: patch.auth.type }),
      },
    });
    if (patch.hostKeyFingerprint !== undefined && patch.hostKeyFingerprint !== current.host_key_fingerprint) {
      this.deps.audit.record('host-key.retrusted', {
        subjectUserId: userId,
        targetId: id,
        details: { previous: current.host_key_fingerprint, fingerprint: patch.hostKeyFingerprint },
      });
    }
    return toPublicInstance({ ...current, ...changes });
  }

  async delete(userId: string, id: string): Promise<void> {
    if (!(await this.deps.instances.delete(userId, id))) throw new AppError('INSTANCE_NOT_FOUND');
    this.deps.audit.record('instance.deleted', { subjectUserId: userId, targetId: id });
  }

  /** The SSH target for a row: credentials opened, host re-resolved and re-checked right now. */
  async target(row: InstanceRow): Promise<SshTarget> {
    const address = await this.deps.guard.check(row.host);
    const sealed = { keyId: row.secret_key_id, ciphertext: row.secret_ciphertext };
    const plaintext = this.deps.secrets.open(sealed, sealContext(row.id));
    if (this.deps.secrets.isStale(sealed)) await this.reseal(row, plaintext);
    const auth = JSON.parse(plaintext) as SshAuth;
    return {
      host: address,
      port: row.port,
      username: row.username,
      auth,
      hostKeyFingerprint: row.host_key_fingerprint,
    };
  }

  /** After a key rotation, credentials sealed under an older key are re-sealed as they are used. */
  private async reseal(row: InstanceRow, plaintext: string): Promise<void> {
    const fresh = this.deps.secrets.seal(plaintext, sealContext(row.id));
    await this.deps.instances.update(row.user_id, row.id, {
      secret_ciphertext: fresh.ciphertext,
      secret_key_id: fresh.keyId,
    });
  }

  async pinHostKey(row: InstanceRow, fingerprint: string): Promise<void> {
    if (row.host_key_fingerprint === null) {
      await this.deps.instances.pinHostKey(row.id, fingerprint, this.deps.clock.now());
      this.deps.audit.record('host-key.pinned', {
        subjectUserId: row.user_id,
        targetId: row.id,
        details: { fingerprint },
      });
    }
  }

  /** Audits a refused host key (the instance presented another key than the pinned one). */
  noteHostKeyMismatch(row: InstanceRow, e: unknown): void {
    if (!isAppError(e) || e.code !== 'HOST_KEY_MISMATCH') return;
    const presented = e.details?.actual ?? e.details?.fingerprint;
    this.deps.audit.record('host-key.mismatch', {
      subjectUserId: row.user_id,
      targetId: row.id,
      details: {
        pinned: row.host_key_fingerprint,
        presented: typeof presented === 'string' ? presented : null,
      },
    });
  }

  /** Logs in over SSH and reports the VNC server and desktop environments found. */
  async test(userId: string, id: string): Promise<InstanceTestResult> {
    const row = await this.getRow(userId, id);
    let probe: DesktopProbe;
    try {
      probe = await this.deps.desktops.probe(await this.target(row));
    } catch (e) {
      this.noteHostKeyMismatch(row, e);
      throw e;
    }
    return {
      reachable: true,
      hostKeyFingerprint: probe.hostKeyFingerprint,
      hostKeyStatus: row.host_key_fingerprint === null ? 'new' : 'pinned',
      vncServer: probe.vncServer,
      desktopEnvironments: probe.desktopEnvironments,
    };
  }
}

/** The AEAD context an instance's credentials are sealed under (backup verification opens them too). */
export function sealContext(instanceId: string): string {
  return `instance:${instanceId}`;
}

/** A key that cannot be parsed (or opened with its passphrase) is refused at the door. */
function checkKey(auth: SshAuth): void {
  if (auth.type !== 'privateKey') return;
  const parsed = ssh2.utils.parseKey(auth.privateKey, auth.passphrase);
  if (parsed instanceof Error || (Array.isArray(parsed) && parsed.length === 0)) {
    throw new AppError('INVALID_PRIVATE_KEY');
  }
}

export function toPublicInstance(row: InstanceRow): PublicInstance {
  return {
    id: row.id,
    name: row.name,
    host: row.host,
    port: row.port,
    username: row.username,
    auth: { type: row.auth_type },
    hostKeyFingerprint: row.host_key_fingerprint,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}
