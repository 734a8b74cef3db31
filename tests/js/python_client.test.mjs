// python-socketio (a client whose handlers take exactly the packet's arguments) against the
// gateway with recovery on: `"recover": false` gives it the frames unchanged, and a handler that
// takes the rest of the arguments sees the offset. The Python side is tests/python/recover_opt_out.py;
// `.ci/run` installs python-socketio. A missing python3 or python-socketio fails this test.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, mint } from './fixture.mjs';

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'python', 'recover_opt_out.py');

function run(args, timeoutMs = 30000) {
  return new Promise((resolve) => {
    const p = spawn(process.env.PYTHON || 'python3', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (e) => { clearTimeout(t); resolve({ code: -1, out: `${out}${e.message}` }); });
    p.on('close', (code) => { clearTimeout(t); resolve({ code, out }); });
  });
}

describe('python-socketio with recovery on [shards=2]', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 2 }); });
  after(async () => { await srv?.stop(); });

  it('opts out with recover:false (one-parameter handlers), or takes the offset with *rest', async () => {
    const r = await run([srv.url, mint({ sub: 'py-a' }), mint({ sub: 'py-b' })]);
    assert.equal(r.code, 0, `python-socketio client: ${r.out}`);
    assert.match(r.out, /^ok$/m);
  });
});
