// Redis commands per join, recovery on or off: one instance (1 shard) with --redis-url, 500
// socket.io-client sockets, each joining one of 50 channels; Redis's commandstats are reset
// before the joins and printed after.
// Usage: node loadtest/scripts/redis-per-join.mjs on|off [port]   (GATEWAY_BIN, REDIS_URL)
// Needs `npm ci --prefix tests/js` (socket.io-client, jsonwebtoken) and redis-cli.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(path.join(root, 'tests/js/package.json'));
const { io } = require('socket.io-client');
const jwt = require('jsonwebtoken');

const mode = process.argv[2] === 'off' ? 'off' : 'on';
const port = Number(process.argv[3] || 47611);
const bin = process.env.GATEWAY_BIN || path.join(root, 'target/release/socket-gateway');
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const N = 500;
const prefix = `rpj${mode}${process.pid}`;

const redis = (...args) => new Promise((res) => {
  const p = spawn('redis-cli', ['-u', redisUrl, ...args]);
  let out = '';
  p.stdout.on('data', (d) => { out += d; });
  p.on('close', () => res(out));
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const extra = mode === 'off' ? ['--recovery-window', '0'] : [];
const gw = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--jwt-secret', 'bench-secret', '--shards', '1',
  '--log-level', 'warn', '--redis-url', redisUrl, '--redis-prefix', prefix, ...extra], { stdio: ['ignore', 'ignore', 'inherit'] });
await sleep(1000);
const token = (i) => jwt.sign({ sub: `u${i}`, exp: Math.floor(Date.now() / 1000) + 600 }, 'bench-secret');
const socks = [];
for (let i = 0; i < N; i += 1) {
  const s = io(`http://127.0.0.1:${port}`, { transports: ['websocket'], auth: { token: token(i) }, reconnection: false });
  await new Promise((r) => s.once('connect', r));
  socks.push(s);
}
await sleep(1500);
await redis('CONFIG', 'RESETSTAT');
await Promise.all(socks.map((s, i) => s.timeout(5000).emitWithAck('join', `room${i % 50}`)));
await sleep(1000);
const stats = await redis('INFO', 'commandstats');
const lines = stats.split('\n').filter((l) => l.startsWith('cmdstat_')).map((l) => l.trim().replace(/,usec_per_call.*$/, ''));
console.log(`recovery ${mode}: ${N} joins over 50 channels\n${lines.join('\n')}`);
for (const s of socks) s.close();
gw.kill('SIGINT');
await new Promise((r) => gw.once('exit', r));
const keys = (await redis('--scan', '--pattern', `${prefix}*`)).split('\n').filter(Boolean);
for (let i = 0; i < keys.length; i += 500) await redis('DEL', ...keys.slice(i, i + 500));
