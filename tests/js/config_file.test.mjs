// `serve --config FILE` (TOML, keys = the serve flags without `--`) and `config --print-default`,
// with the real binary: the default file round-trips, a file sets a flag, a flag and an
// environment variable override it, and an unknown key stops the start with the key named.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import {
  GATEWAY_BIN, startServer, connect, connectError, tempFile,
} from './fixture.mjs';

/** Runs the binary to its exit; resolves with { code, stdout, stderr }. */
function run(args, env = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(GATEWAY_BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.once('error', reject);
    p.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('configuration file', () => {
  const servers = [];
  after(async () => { for (const s of servers) await s.stop(); });

  it('config --print-default prints every serve flag; serving from it behaves like the defaults', async () => {
    const text = execFileSync(GATEWAY_BIN, ['config', '--print-default']).toString();
    for (const key of ['listen', 'drain-period', 'instance-id', 'redis-url', 'jwt-secret', 'max-connections', 'recovery-window']) {
      assert.match(text, new RegExp(`^(# )?${key} = `, 'm'), `the default file has ${key}`);
    }
    assert.match(text, /^max-connections = 1000000$/m);
    // The defaults, with a test port and secret given as flags (they override the file).
    const file = tempFile('default.toml', text);
    const srv = await startServer({ extraArgs: ['--config', file] });
    servers.push(srv);
    const s = await connect(srv);
    assert.ok(s.connected);
    s.close();
  });

  it('a file sets a flag; a flag and an environment variable override it', async () => {
    const file = tempFile('limits.toml', 'max-connections = 1\n# a comment\nping-interval = 25000\n');
    const one = await startServer({ extraArgs: ['--config', file] });
    servers.push(one);
    const a = await connect(one);
    const e = await connectError(one);
    assert.match(e.message, /max connections|websocket error|xhr poll error/i, e.message);
    a.close();

    const two = await startServer({ extraArgs: ['--config', file, '--max-connections', '2'] });
    servers.push(two);
    const b1 = await connect(two);
    const b2 = await connect(two);
    assert.ok(b1.connected && b2.connected, 'the flag overrides the file');
    b1.close(); b2.close();
  });

  it('the environment overrides the file', async () => {
    const file = tempFile('env.toml', 'listen = "127.0.0.1:1"\n');
    // The file's port 1 is not bindable; the environment's ephemeral port is.
    const p = spawn(GATEWAY_BIN, ['serve', '--config', file, '--jwt-secret', 'x', '--shards', '1', '--no-pin'], {
      env: { ...process.env, SOCKET_GATEWAY_LISTEN: '127.0.0.1:0' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = await new Promise((resolve, reject) => {
      let buf = '';
      const t = setTimeout(() => reject(new Error(`no listening line: ${buf}`)), 15000);
      p.stdout.on('data', (d) => { buf += d; if (/listening on/.test(buf)) { clearTimeout(t); resolve(buf); } });
      p.once('exit', (code) => { clearTimeout(t); reject(new Error(`exited ${code}: ${buf}`)); });
    });
    assert.match(out, /listening on http:\/\/127\.0\.0\.1:\d+/);
    assert.doesNotMatch(out, /127\.0\.0\.1:1 /);
    p.kill('SIGKILL');
  });

  it('an unknown key, or a value of the wrong type, stops the start and names the key', async () => {
    const bad = await run(['serve', '--config', tempFile('bad.toml', 'listen = "127.0.0.1:0"\ndrain-perod = 5\n')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown key `drain-perod`/);
    const wrong = await run(['serve', '--config', tempFile('wrong.toml', 'no-pin = 3\n')]);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /`no-pin`/);
    const missing = await run(['serve', '--config', '/nonexistent/gateway.toml']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /\/nonexistent\/gateway\.toml/);
  });
});
