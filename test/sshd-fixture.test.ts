// The sshd test fixture itself: a caller's own `SetEnv` must not cost a login the fixture's marker,
// which `stop()` relies on to find what the tests left running.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from 'ssh2';
import { startSshd, type SshdFixture } from './helpers/sshd.js';

/** The environment a login of `fixture` sees, as `env -0` prints it. */
async function loginEnvironment(fixture: SshdFixture): Promise<string[]> {
  const user = fixture.users[0]!;
  const client = new Client();
  try {
    const output = await new Promise<string>((resolve, reject) => {
      client.once('error', reject);
      client.once('ready', () => {
        client.exec('env -0', (err, stream) => {
          if (err) return reject(err);
          let text = '';
          stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
          stream.stderr.resume();
          stream.once('close', () => resolve(text));
        });
      });
      client.connect({
        host: fixture.host,
        port: fixture.port,
        username: user.username,
        privateKey: user.privateKey,
      });
    });
    return output.split('\0').filter((e) => e !== '');
  } finally {
    client.end();
  }
}

void describe('sshd fixture', () => {
  let sshd: SshdFixture;

  before(async () => {
    sshd = await startSshd({
      extraConfig: ['SetEnv FOO=bar LANG_TEST="two words"', 'SetEnv BAZ=qux FOO=ignored'],
    });
  });
  after(() => sshd?.stop());

  void it("a caller's SetEnv lines and the fixture's marker all reach a login", async () => {
    const env = await loginEnvironment(sshd);
    assert.ok(env.includes(sshd.envMarker), `the marker ${sshd.envMarker} is missing`);
    assert.ok(env.includes('FOO=bar'), 'the first SetEnv line');
    assert.ok(env.includes('LANG_TEST=two words'), 'a quoted value');
    assert.ok(env.includes('BAZ=qux'), 'a later SetEnv line');
    assert.ok(!env.includes('FOO=ignored'), 'the first value of a name wins, as in sshd');
  });
});
