// Memory per idle socket that connected the way browsers do by default: HTTP long-polling first,
// then the upgrade to a websocket (the `connect` scenario of `loadtest` opens websockets
// directly). Starts a gateway, opens N real socket.io-client connections with the default
// transports from PROCS client processes, waits until every one has upgraded, and reports the
// gateway's RSS per connection.
//
//   node loadtest/scripts/idle-upgraded.mjs [N=5000]
//   env: GATEWAY_BIN (target/release/socket-gateway), TRANSPORTS=websocket (websocket only, the
//   same clients without the polling start, to compare), SETTLE_MS (3000: the wait before the
//   memory sample), PROCS (1: client processes; one process may hold at most ~19,000 sockets
//   where a process is limited to 20,000 files), PORT (3931)
//
// Needs the test suite's npm packages (`npm ci --prefix tests/js`).
import { spawn, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const self = fileURLToPath(import.meta.url);
const root = path.resolve(path.dirname(self), '../..');
const require = createRequire(path.join(root, 'tests/js/package.json'));
const SECRET = 'idle-upgraded-secret';
const WS_ONLY = process.env.TRANSPORTS === 'websocket';
const PORT = Number(process.env.PORT || 3931);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (process.argv[2] === '--client') {
  // One client process: sockets [from, from + count), at most `inflight` handshakes at once.
  const [from, count, inflight] = process.argv.slice(3).map(Number);
  const { io } = require('socket.io-client');
  const jwt = require('jsonwebtoken');
  const sockets = [];
  let upgraded = 0;
  for (let i = 0; i < count; i++) {
    const token = jwt.sign({ sub: `idle-${from + i}`, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
    const s = io(`http://127.0.0.1:${PORT}`, {
      auth: { token }, reconnection: false, forceNew: true, ...(WS_ONLY ? { transports: ['websocket'] } : {}),
    });
    if (WS_ONLY) s.once('connect', () => { upgraded += 1; });
    else s.io.engine.once('upgrade', () => { upgraded += 1; });
    sockets.push(s);
    // Paced like browsers arriving, not a storm.
    if (i % inflight === inflight - 1) while (upgraded < i - inflight) await sleep(20);
  }
  const start = Date.now();
  while (upgraded < count && Date.now() - start < 120_000) await sleep(100);
  process.send({ upgraded });
  process.on('message', (m) => {
    if (m === 'count') {
      const connected = sockets.filter((s) => s.connected && s.io.engine.transport.name === 'websocket').length;
      process.send({ connected });
    } else {
      for (const s of sockets) s.close();
      process.exit(0);
    }
  });
} else {
  const N = Number(process.argv[2] || 5000);
  const PROCS = Math.max(1, Number(process.env.PROCS || 1));
  const BIN = process.env.GATEWAY_BIN || path.join(root, 'target/release/socket-gateway');
  const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
  const gw = spawn(BIN, ['serve', '--listen', `127.0.0.1:${PORT}`, '--shards', '2', '--jwt-secret', SECRET,
    '--log-level', 'warn', '--max-events-per-sec', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => gw.stdout.on('data', (d) => { if (String(d).includes('listening on')) resolve(); }));
  await sleep(1000);
  const before = rss(gw.pid);
  const inflight = Math.max(1, Math.floor(500 / PROCS));
  const clients = [];
  for (let p = 0; p < PROCS; p++) {
    const from = Math.floor((N * p) / PROCS);
    const count = Math.floor((N * (p + 1)) / PROCS) - from;
    clients.push(fork(self, ['--client', String(from), String(count), String(inflight)]));
  }
  const ask = (c, m) => new Promise((resolve) => { c.once('message', resolve); if (m) c.send(m); });
  await Promise.all(clients.map((c) => ask(c)));
  await sleep(Number(process.env.SETTLE_MS || 3000));
  const after = rss(gw.pid);
  // Descriptors the gateway holds: one per websocket, plus any keep-alive polling connection the
  // client left open after the upgrade (the server closes those after --head-timeout).
  const fds = fs.readdirSync(`/proc/${gw.pid}/fd`).length;
  const connected = (await Promise.all(clients.map((c) => ask(c, 'count')))).reduce((a, m) => a + m.connected, 0);
  console.log(JSON.stringify({
    transports: WS_ONLY ? 'websocket' : 'polling, then websocket', connections: N, client_processes: PROCS,
    upgraded_and_connected: connected, rss_before: before, rss_after: after,
    per_connection: Math.round((after - before) / N), gateway_fds: fds,
  }));
  for (const c of clients) c.send('exit');
  gw.kill('SIGKILL');
  process.exit(connected === N ? 0 : 1);
}
