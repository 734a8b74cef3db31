// `serve --config FILE` (TOML, keys = the serve flags without `--`) and `config --print-default`,
// with the real binary: the default file round-trips, a file sets a flag, a flag and an
// environment variable override it, and an unknown key stops the start with the key named.
import net from 'node:net';
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

/** Starts the binary with `args` and resolves once it says it listens on `port`; { stop() }. */
async function listening(args, port) {
  const p = spawn(GATEWAY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => p.once('exit', r));
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no "listening" line within 15 s: ${out} ${err}`)), 15000);
    p.stdout.on('data', (d) => {
      out += d;
      if (new RegExp(`listening on http://\\S+:${port}`).test(out)) { clearTimeout(t); resolve(); }
    });
    p.once('exit', (code) => { clearTimeout(t); reject(new Error(`exited with ${code}: ${err}`)); });
  });
  return {
    running: () => p.exitCode === null && p.signalCode === null,
    async stop() { p.kill('SIGTERM'); await exited; },
  };
}

describe('the port: a second process on it is refused unless --share-port', () => {
  const servers = [];
  after(async () => { for (const s of servers) await s.stop(); });

  it('a second instance on a port another process listens on stops (after its grace), naming the port; the first is undisturbed', { timeout: 60000 }, async () => {
    const A = await startServer();
    servers.push(A);
    const a = await connect(A);
    for (const listen of [`127.0.0.1:${A.port}`, `0.0.0.0:${A.port}`]) {
      const second = await run(['serve', '--listen', listen, '--no-pin', '--shards', '1', '--jwt-secret', A.secret]);
      assert.equal(second.code, 2, second.stderr);
      assert.match(second.stderr, new RegExp(`${listen.replace(/\./g, '\\.')} is taken: another process listens on 127\\.0\\.0\\.1:${A.port}`));
      assert.match(second.stderr, /--share-port/);
    }
    assert.ok(a.connected, 'the first instance\'s socket is still connected');
    for (let i = 0; i < 5; i += 1) {
      const s = await connect(A);
      assert.ok(s.connected);
      s.close();
    }
    // Another address on the same port is no conflict.
    const other = await listening(['serve', '--listen', `127.0.0.2:${A.port}`, '--no-pin', '--shards', '1', '--jwt-secret', A.secret], A.port);
    servers.push(other);
    assert.ok(other.running());
  });

  it('a listener that goes away within the grace (a stopped process\'s, lingering) does not stop the new instance', { timeout: 60000 }, async () => {
    const holder = net.createServer();
    await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address();
    setTimeout(() => holder.close(), 1000);
    const started = Date.now();
    const B = await listening(['serve', '--listen', `127.0.0.1:${port}`, '--no-pin', '--shards', '1', '--jwt-secret', 'grace-secret'], port);
    servers.push(B);
    assert.ok(B.running());
    assert.ok(Date.now() - started >= 900, 'it waited for the old listener to go');
  });

  it('with --share-port the second instance starts on the same port', { timeout: 60000 }, async () => {
    const A = await startServer();
    servers.push(A);
    const B = await listening(['serve', '--listen', `127.0.0.1:${A.port}`, '--share-port', '--no-pin', '--shards', '1', '--jwt-secret', A.secret], A.port);
    servers.push(B);
    assert.ok(B.running(), 'still running');
    // Websocket only: with two processes on one port, the requests of one polling session may
    // land on either (the reason a second process is refused by default).
    for (let i = 0; i < 5; i += 1) {
      const s = await connect(A, { transports: ['websocket'] });
      assert.ok(s.connected);
      s.close();
    }
  });
});
