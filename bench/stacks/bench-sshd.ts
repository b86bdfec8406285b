// The benchmark's instance: the test suite's real OpenSSH sshd fixture, with MaxStartups raised so a
// thousand viewers arriving in a ramp are not dropped at the handshake (OpenSSH's default 10:30:100
// refuses connections once 10 are unauthenticated), and the processes that serve it found by PID.
import { dirname, join } from 'node:path';
import { startSshd, type SshdFixture } from '../../test/helpers/sshd.js';
import { pidsWithCmdline } from '../lib/proc-stats.js';
import { onCleanup, trackPid } from '../lib/process-registry.js';
import { groupOf } from './stack.js';
import type { ProcessGroup } from '../lib/proc-stats.js';

export const BENCH_MAX_STARTUPS = '1000:30:2000';

export interface BenchSshd {
  fixture: SshdFixture;
  listenerPid: number;
  /** The listener and every per-connection sshd (and what they run) below it. */
  group: ProcessGroup;
  stop(): Promise<void>;
}

/** One sshd with one test user (cdtest1 unless `username` names another `cdtest…` user). */
export async function startBenchSshd(extraConfig: string[] = [], username = 'cdtest1'): Promise<BenchSshd> {
  const fixture = await startSshd({ usernames: [username], maxStartups: BENCH_MAX_STARTUPS, extraConfig });
  const stop = onCleanup('sshd', () => fixture.stop());
  const configPath = join(dirname(fixture.logPath), 'sshd_config');
  const listenerPid = pidsWithCmdline(`-f ${configPath}`)[0];
  if (listenerPid === undefined) {
    await stop();
    throw new Error('could not find the sshd listener process');
  }
  const untrack = trackPid(listenerPid);
  return {
    fixture,
    listenerPid,
    group: groupOf('sshd', () => [listenerPid]),
    stop: async () => {
      await stop();
      untrack();
    },
  };
}
