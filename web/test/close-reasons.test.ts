// What a closed viewer socket tells the person, and whether the viewer tries again (issue 14 point 6):
// errors that will not heal by themselves stop at once with the real cause.
import { describe, expect, it } from 'vitest';
import { describeClose } from '../src/viewer/reconnect-policy.js';

describe('describeClose', () => {
  it('stops at once, with the cause, when the desktop cannot come back by itself', () => {
    const login = describeClose(4012, 'SSH_AUTH_FAILED');
    expect(login.kind).toBe('fatal');
    expect(login.message).toMatch(/refused the SSH login/);
    expect(login.message).not.toMatch(/dropped|Reconnecting/);
    expect(describeClose(4012, 'HOST_KEY_MISMATCH')).toMatchObject({ kind: 'fatal' });
    expect(describeClose(4012, 'HOST_KEY_MISMATCH').message).toMatch(/host key changed.*Test connection/);
    expect(describeClose(4012, 'VNC_SERVER_MISSING').message).toMatch(/tigervnc-standalone-server/);
    expect(describeClose(4012, 'DESKTOP_ENVIRONMENT_MISSING').kind).toBe('fatal');
    expect(describeClose(4012, 'INSTANCE_ADDRESS_FORBIDDEN').kind).toBe('fatal');
  });

  it('retries what can heal, saying what happened', () => {
    expect(describeClose(4012, 'SSH_UNREACHABLE')).toMatchObject({ kind: 'reconnect' });
    expect(describeClose(4012, 'SSH_UNREACHABLE').message).toMatch(/cannot be reached over SSH/);
    expect(describeClose(4012, 'SSH_TIMEOUT').kind).toBe('reconnect');
    expect(describeClose(4012, 'desktop connection closed')).toMatchObject({ kind: 'reconnect' });
    expect(describeClose(4010, 'server restarting; reconnect').message).toMatch(/restarting/);
    expect(describeClose(4011).message).toMatch(/fell behind/);
    expect(describeClose(4013).message).toMatch(/stopped answering/);
    for (const code of [1001, 1005, 1006, 1011, 4999]) expect(describeClose(code).kind).toBe('reconnect');
  });

  it('ends on an ended session, a deleted instance or a sign-out', () => {
    expect(describeClose(4000)).toEqual({ kind: 'ended', message: 'This session has ended.' });
    expect(describeClose(4012, 'INSTANCE_NOT_FOUND').kind).toBe('ended');
    expect(describeClose(4001).kind).toBe('signed-out');
  });

  it('stops on a refused protocol, quoting the reason', () => {
    for (const code of [1002, 1003, 1007, 1009]) expect(describeClose(code).kind).toBe('fatal');
    expect(describeClose(1002, 'binary frames only').message).toMatch(/code 1002: binary frames only/);
  });
});
