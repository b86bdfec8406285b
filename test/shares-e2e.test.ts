// Sharing through a real relay to a real desktop (OpenSSH sshd, TigerVNC Xvnc + openbox, an xterm whose
// keystrokes land in a file) with raw RFB clients: a view-only guest's keys, pointer moves and clipboard
// never reach the VNC server while the owner's do (read back on the instance: the file, xdotool, xclip);
// a control guest's do; the owner sees the live guests; a guest that sends garbage is closed and the
// owner carries on; revoking closes the guest (4002) at once and leaves the owner; ending the session
// closes its guests (4000). "Reached the server" is settled without sleeping: Xvnc handles one client's
// messages in order, so once it answers a FramebufferUpdateRequest sent after them, it has had them.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { listenTestGateway, newInstance, newUser, type TestGateway } from './helpers/builders.js';
import { startSshd, type SshdFixture } from './helpers/sshd.js';
import { RfbTestClient } from './helpers/rfb-client.js';
import { clientCutText, keyEvent, pointerEvent } from './helpers/rfb-messages.js';

const RETURN = 0xff0d;

describe('sharing end to end (sshd + TigerVNC)', () => {
  let sshd: SshdFixture;
  let gw: TestGateway & { base: string };

  before(async () => {
    sshd = await startSshd({ users: 1 });
    gw = await listenTestGateway({ WS_MAX_CONNECTS_PER_MINUTE: '1000' });
  });
  after(async () => {
    await gw?.cleanup();
    await sshd?.stop();
  });

  const open = (url: string) => RfbTestClient.open(`ws://${gw.base}${url}`, { origin: `http://${gw.base}` });

  /** Sends `messages`, then waits until Xvnc has handled them (its answer to a request sent after them). */
  async function deliver(viewer: RfbTestClient, messages: Buffer[]): Promise<void> {
    for (const m of messages) viewer.send(m);
    viewer.requestUpdate(false);
    await viewer.readFramebufferUpdate();
  }

  const typing = (text: string): Buffer[] =>
    [...text].flatMap((c) => {
      const keysym = c === '\n' ? RETURN : c.charCodeAt(0);
      return [keyEvent(keysym, true), keyEvent(keysym, false)];
    });

  async function setUp() {
    const alice = await newUser(gw);
    const bob = await newUser(gw);
    const instance = await newInstance(gw, alice, { host: sshd.host, port: sshd.port, user: sshd.users[0]! });
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/sessions/connect',
      headers: alice.auth,
      payload: { instanceId: instance.id, desktopEnvironment: 'openbox' },
    });
    assert.equal(res.statusCode, 201, res.body);
    const { sessionId, websocketUrl, display } = res.json().data as {
      sessionId: string;
      websocketUrl: string;
      display: number;
    };
    const target = await gw.instances.target(await gw.instances.getRow(alice.id, instance.id));
    // The desktop's files are named <display>-<pid>; an earlier desktop on the same display may linger.
    const pid = (
      await gw.store.db
        .selectFrom('sessions')
        .select('desktop_pid')
        .where('id', '=', sessionId)
        .executeTakeFirstOrThrow()
    ).desktop_pid;
    const file = `typed-${sessionId}.txt`;
    /** Runs a shell command on the instance, on this desktop's display. */
    const onDesktop = async (command: string): Promise<string> => {
      const r = await gw.sshPool.exec(
        target,
        `export DISPLAY=:${display} XAUTHORITY="/tmp/clouddesk-$(id -u)/${display}-${pid}.xauth"; cd; ${command}`,
      );
      assert.equal(r.code, 0, `${command}: ${r.stderr}`);
      return r.stdout;
    };
    // A focused xterm whose keystrokes go to a file line by line (the tty is canonical): what the file
    // holds is exactly what was typed into the desktop.
    // The openbox desktop opens an xterm of its own: wait for it first, so it cannot take the focus later.
    await onDesktop(
      `timeout 20 xdotool search --sync --onlyvisible --class xterm >/dev/null;` +
        ` : > ${file}; setsid xterm -title sink-${display} -e sh -c 'stty -echo; exec cat > ${file}' </dev/null >/dev/null 2>&1 &` +
        ` w=$(timeout 20 xdotool search --sync --onlyvisible --name sink-${display} | head -n 1);` +
        ` xdotool windowactivate --sync "$w" 2>/dev/null || xdotool windowfocus --sync "$w"`,
    );
    const typed = () => onDesktop(`cat ${file}`);
    const waitTyped = (text: string) =>
      onDesktop(`timeout 10 sh -c 'until grep -qx "${text}" ${file}; do sleep 0.05; done'; cat ${file}`);
    const pointer = async () => {
      const out = await onDesktop('xdotool getmouselocation --shell');
      return { x: Number(/X=(\d+)/.exec(out)?.[1]), y: Number(/Y=(\d+)/.exec(out)?.[1]) };
    };
    const clipboard = () => onDesktop('timeout 5 xclip -o -selection clipboard 2>/dev/null || true');

    const owner = await open(websocketUrl);
    await owner.handshake();
    const shareOf = async (mode: 'view' | 'control') => {
      const created = await gw.app.inject({
        method: 'POST',
        url: `/api/sessions/${sessionId}/shares`,
        headers: alice.auth,
        payload: { mode },
      });
      assert.equal(created.statusCode, 201, created.body);
      return created.json().data as { id: string; url: string };
    };
    const join = async (share: { url: string }) => {
      const token = share.url.split('#')[1]!;
      const t = await gw.app.inject({
        method: 'POST',
        url: `/api/shares/${token}/ticket`,
        headers: bob.auth,
      });
      assert.equal(t.statusCode, 200, t.body);
      const guest = await open(t.json().data.websocketUrl as string);
      await guest.handshake();
      return guest;
    };
    return { alice, bob, sessionId, owner, shareOf, join, typed, waitTyped, pointer, clipboard };
  }

  test("a view-only guest's keys, pointer and clipboard never reach the desktop; the owner's and a control guest's do", async () => {
    const s = await setUp();
    const viewShare = await s.shareOf('view');
    const guest = await s.join(viewShare);

    const start = await s.pointer();
    await deliver(guest, [
      ...typing('guest\n'),
      pointerEvent(11, 22),
      pointerEvent(12, 23, 1),
      pointerEvent(12, 23, 0),
      clientCutText('guest-clip'),
    ]);
    assert.equal(await s.typed(), '', 'nothing the guest typed arrived');
    assert.deepEqual(await s.pointer(), start, 'the pointer did not move');
    assert.notEqual((await s.clipboard()).trim(), 'guest-clip', 'the clipboard is not the guest’s');
    // The guest still watches: it gets updates like any viewer.
    guest.requestUpdate(false);
    assert.ok((await guest.readFramebufferUpdate()).bytes > 0);

    await deliver(s.owner, [...typing('owner\n'), pointerEvent(33, 44), clientCutText('owner-clip')]);
    assert.equal(await s.waitTyped('owner'), 'owner\n', "the owner's typing arrived, and only it");
    assert.deepEqual(await s.pointer(), { x: 33, y: 44 });
    assert.equal((await s.clipboard()).trim(), 'owner-clip');

    // A control guest drives the desktop like its owner.
    const driver = await s.join(await s.shareOf('control'));
    await deliver(driver, [...typing('ctl\n'), pointerEvent(55, 66), clientCutText('control-clip')]);
    assert.equal(await s.waitTyped('ctl'), 'owner\nctl\n');
    assert.deepEqual(await s.pointer(), { x: 55, y: 66 });
    assert.equal((await s.clipboard()).trim(), 'control-clip');

    // The owner sees who is watching, through which share and on which node.
    const listed = await gw.app.inject({
      method: 'GET',
      url: `/api/sessions/${s.sessionId}/shares`,
      headers: s.alice.auth,
    });
    const byShare = new Map(
      (listed.json().data as { id: string; mode: string; guests: { name: string; node: string }[] }[]).map(
        (x) => [x.id, x.guests.map((g) => [g.name, g.node])],
      ),
    );
    assert.deepEqual(byShare.get(viewShare.id), [[s.bob.email, gw.config.cluster.nodeId]]);

    // Revoked: the view-only guest is closed with 4002; the owner and the control guest carry on.
    const revoked = await gw.app.inject({
      method: 'DELETE',
      url: `/api/shares/${viewShare.id}`,
      headers: s.alice.auth,
    });
    assert.equal(revoked.statusCode, 204);
    assert.equal(await guest.closed, 4002);
    s.owner.requestUpdate(false);
    assert.ok((await s.owner.readFramebufferUpdate()).bytes > 0, 'the owner still gets updates');

    // The session ends: its guests with it.
    await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/disconnect/${s.sessionId}`,
      headers: s.alice.auth,
    });
    assert.equal(await driver.closed, 4000);
    assert.equal(await s.owner.closed, 4000);
  });

  test('a guest that sends garbage is closed with 1002; the owner is unaffected', async () => {
    const s = await setUp();
    const guest = await s.join(await s.shareOf('view'));
    guest.send([7, 0, 0, 0]); // no such client message
    assert.equal(await guest.closed, 1002);
    await deliver(s.owner, typing('still\n'));
    assert.equal(await s.waitTyped('still'), 'still\n');
    await gw.app.inject({
      method: 'POST',
      url: `/api/sessions/disconnect/${s.sessionId}`,
      headers: s.alice.auth,
    });
    assert.equal(await s.owner.closed, 4000);
  });
});
