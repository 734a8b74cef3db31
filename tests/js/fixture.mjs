// Shared helpers for the end-to-end suite: start the real gateway binary, mint tokens,
// connect real socket.io-client sockets, and wait for things to arrive.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import { describe, before, after, afterEach } from 'node:test';
import jwt from 'jsonwebtoken';
import { io, Manager } from 'socket.io-client';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..');
export const GATEWAY_BIN =
  process.env.GATEWAY_BIN || path.resolve(here, '../../target/debug/socket-gateway');
export const KEYS_DIR = path.join(REPO_ROOT, 'tests', 'keys');
export const SECRET = 'node-suite-secret-0123456789abcdef';

// What a test process started and must not leave behind: a process stopped by a signal (the
// runner cancelling a file, Ctrl-C) exits through process.exit, so that the 'exit' handlers run:
// this one kills the gateways started here, redis_cluster.mjs's stops its Redis Cluster.
const children = new Set();
process.on('exit', () => { for (const p of children) { try { p.kill('SIGKILL'); } catch { /* gone */ } } });
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => process.exit(128 + os.constants.signals[sig]));
}

/** Generous "it arrives" timeout. Never used to assert speed. */
export const ARRIVE_MS = Number(process.env.ARRIVE_MS || 10000);

export { io, Manager, jwt };

// ---------------------------------------------------------------------------------------------
// server

/**
 * Start the gateway. Resolves to { url, port, proc, stop(), secret, output() }.
 * opts: shards, secret, algorithm, publicKey, issuer, audience, leeway, pingInterval, pingTimeout,
 * maxPayload, sendQueue, maxConnections, extraArgs, transports (stored for connect()).
 */
export async function startServer(opts = {}) {
  const secret = opts.secret ?? SECRET;
  const args = ['serve', '--listen', '127.0.0.1:0', '--shards', String(opts.shards ?? 1), '--no-pin',
    '--jwt-secret', secret, '--log-level', opts.logLevel ?? 'warn'];
  const flag = (name, v) => { if (v !== undefined && v !== null) args.push(name, String(v)); };
  flag('--jwt-algorithm', opts.algorithm);
  flag('--jwt-public-key', opts.publicKey);
  flag('--jwt-issuer', opts.issuer);
  flag('--jwt-audience', opts.audience);
  flag('--jwt-leeway', opts.leeway);
  flag('--ping-interval', opts.pingInterval);
  flag('--ping-timeout', opts.pingTimeout);
  flag('--max-payload', opts.maxPayload);
  flag('--send-queue', opts.sendQueue);
  flag('--max-connections', opts.maxConnections);
  if (opts.extraArgs) args.push(...opts.extraArgs);

  if (!fs.existsSync(GATEWAY_BIN)) throw new Error(`gateway binary not found at ${GATEWAY_BIN} (set GATEWAY_BIN)`);
  const proc = spawn(GATEWAY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => { err += d; if (err.length > 200_000) err = err.slice(-100_000); });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not print its address within 15s\nargs: ${args.join(' ')}\nstdout: ${out}\nstderr: ${err}`)), 15000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on http:\/\/[^\s:]+:(\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.once('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`gateway exited early (code ${code}, signal ${sig})\nargs: ${args.join(' ')}\nstdout: ${out}\nstderr: ${err}`)); });
    proc.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
  const sockets = new Set();
  const srv = {
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    secret,
    transports: opts.transports,
    sockets,
    output: () => `stdout:\n${out}\nstderr:\n${err}`,
    async stop() {
      for (const s of sockets) { try { s.close(); } catch { /* ignore */ } }
      sockets.clear();
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, 5000);
      await exited;
      clearTimeout(t);
    },
  };
  return srv;
}

// ---------------------------------------------------------------------------------------------
// tokens

let userSeq = 0;
export function uniqUser(prefix = 'user') { userSeq += 1; return `${prefix}-${process.pid}-${userSeq}`; }
let chanSeq = 0;
export function uniq(prefix = 'chat') { chanSeq += 1; return `${prefix}:t${process.pid}x${chanSeq}`; }

/** Mint an HS256 token. claims: sub (default unique), exp (default now+1h), anything else. */
export function mint(claims = {}, { secret = SECRET, algorithm = 'HS256', key, header } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { sub: uniqUser(), exp: now + 3600, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  return jwt.sign(payload, key ?? secret, { algorithm, noTimestamp: true, ...(header ? { header } : {}) });
}

/** A token with alg "none" (unsigned). */
export function unsignedToken(claims = {}) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: uniqUser(), exp: now + 3600, ...claims })}.`;
}

// ---------------------------------------------------------------------------------------------
// sockets

/**
 * Connect a socket.io-client socket. Resolves with the connected socket or rejects with the
 * connect_error. opts: token (null = none), sub, claims, auth, transports, url (another address
 * for srv, e.g. a proxy in front of it), and any io() option.
 */
export function connect(srv, opts = {}) {
  const { token: tok, sub, claims, auth, transports, url, ...rest } = opts;
  const token = tok === undefined ? mint({ ...(sub ? { sub } : {}), ...(claims || {}) }) : tok;
  const ioOpts = {
    transports: transports ?? srv.transports,
    reconnection: false,
    forceNew: true,
    timeout: ARRIVE_MS,
    ...rest,
  };
  if (auth !== undefined) ioOpts.auth = auth;
  else if (token !== null) ioOpts.auth = { token };
  if (ioOpts.transports === undefined) delete ioOpts.transports;
  const socket = io(url ?? srv.url, ioOpts);
  srv.sockets.add(socket);
  return new Promise((resolve, reject) => {
    const onConnect = () => { socket.off('connect_error', onErr); resolve(socket); };
    const onErr = (e) => { socket.off('connect', onConnect); socket.close(); reject(e); };
    socket.once('connect', onConnect);
    socket.once('connect_error', onErr);
  });
}

/** Connect and return the connect_error (fails if it connects instead). */
export async function connectError(srv, opts = {}) {
  try {
    const s = await connect(srv, opts);
    s.close();
  } catch (e) {
    return e;
  }
  throw new Error('expected the connection to be refused, but it connected');
}

/** Emit with an ack (generous timeout). */
export function ack(socket, event, ...args) {
  return socket.timeout(ARRIVE_MS).emitWithAck(event, ...args);
}

/** Record the first argument of every emission of an event on a socket into an array. */
export function record(socket, event) {
  const arr = [];
  socket.on(event, (a0) => arr.push(a0));
  return arr;
}

/** Poll until fn() is truthy; reject with msg after timeout. */
export async function until(fn, msg = 'condition', timeout = ARRIVE_MS) {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeout) throw new Error(`timed out after ${timeout}ms waiting for ${typeof msg === 'function' ? msg() : msg}`);
    await sleep(10);
  }
}

/** Wait for one event (optionally matching pred on its first argument); resolves with that argument. */
export function waitFor(emitter, event, pred = () => true, timeout = ARRIVE_MS) {
  return new Promise((resolve, reject) => {
    const handler = (v) => {
      if (!pred(v)) return;
      clearTimeout(t);
      emitter.off(event, handler);
      resolve(v);
    };
    const t = setTimeout(() => { emitter.off(event, handler); reject(new Error(`timed out waiting for "${event}"`)); }, timeout);
    emitter.on(event, handler);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A port in [from, from + span) that nobody listens on now, and `port + d` free too for each `d`
 * of `alsoFree` (a Redis Cluster node's bus port), none in `skip`. Keep the range below Linux's
 * ephemeral range (32768+): a port in it can become the local port of a concurrent test's
 * outgoing connection between this check and the server's bind.
 */
export async function freeLowPort({ from = 20000, span = 12000, skip = new Set(), alsoFree = [] } = {}) {
  const free = (port) => new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
  for (;;) {
    const port = from + Math.floor(Math.random() * span);
    if (skip.has(port) || !(await free(port))) continue;
    let all = true;
    for (const d of alsoFree) if (!(await free(port + d))) { all = false; break; }
    if (all) return port;
  }
}

/** Assert the standard failure ack and return it. */
export function isErr(res, code) {
  return res && res.ok === false && res.error && res.error.code === code && typeof res.error.message === 'string';
}

// ---------------------------------------------------------------------------------------------
// matrix

export const CONFIGS = [
  { name: 'shards=1 transports=default', shards: 1, transports: undefined },
  { name: 'shards=1 transports=websocket', shards: 1, transports: ['websocket'] },
  { name: 'shards=2 transports=default', shards: 2, transports: undefined },
  // The smallest read buffer: client frames arrive split across reads and must reassemble.
  { name: 'shards=2 transports=websocket read-buffer=256', shards: 2, transports: ['websocket'],
    extraArgs: ['--ws-read-buffer', '256'] },
];
/** The configuration for tests that run once. */
export const ONCE = { name: 'shards=2 transports=default', shards: 2, transports: undefined };

/**
 * describe() a block once per configuration (or once with `configs`), starting one server per
 * block. body(ctx, cfg) gets ctx.srv after before().
 */
export function suite(title, body, { configs = CONFIGS, server = {} } = {}) {
  for (const cfg of configs) {
    describe(`${title} [${cfg.name}]`, () => {
      const ctx = {};
      before(async () => {
        const extraArgs = [...(cfg.extraArgs ?? []), ...(server.extraArgs ?? [])];
        ctx.srv = await startServer({ shards: cfg.shards, transports: cfg.transports, ...server, extraArgs });
      });
      after(async () => { await ctx.srv?.stop(); });
      afterEach(() => { closeAll(ctx.srv); });
      body(ctx, cfg);
    });
  }
}

/** Close every client socket opened on srv so far. */
export function closeAll(srv) {
  if (!srv) return;
  for (const s of srv.sockets) { try { s.close(); } catch { /* ignore */ } }
  srv.sockets.clear();
}

/** Write a file in a temp dir (for keys etc.). */
export function tempFile(name, contents) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sgw-'));
  const p = path.join(dir, name);
  fs.writeFileSync(p, contents);
  return p;
}

/**
 * Check a RealtimeEvent against expectations: { channel, event, data, from, to, subscriptionId }.
 * `from` is { socketId, userId } (or null). Checks id and ts shapes too.
 */
export function checkEvent(e, want) {
  const fail = (m) => { throw new Error(`${m}\nevent: ${JSON.stringify(e)}\nwant: ${JSON.stringify(want)}`); };
  if (!e || typeof e !== 'object') fail('event is not an object');
  const allowed = new Set(['id', 'channel', 'event', 'data', 'from', 'ts', 'to', 'subscriptionId']);
  for (const k of Object.keys(e)) if (!allowed.has(k)) fail(`unexpected key ${k}`);
  for (const k of ['id', 'channel', 'event', 'data', 'from', 'ts']) if (!(k in e)) fail(`missing key ${k}`);
  if (typeof e.id !== 'string' || e.id.length === 0) fail('id must be a non-empty string');
  if (typeof e.ts !== 'number' || !Number.isInteger(e.ts) || Math.abs(e.ts - Date.now()) > 120_000) fail('ts must be epoch milliseconds');
  if ('channel' in want && e.channel !== want.channel) fail('channel');
  if ('event' in want && e.event !== want.event) fail('event');
  if ('data' in want && !deepEq(e.data, want.data)) fail('data');
  if ('from' in want && !deepEq(e.from, want.from)) fail('from');
  if (want.channel === null) {
    if (e.to !== want.to) fail('to');
  } else if ('to' in e) fail('a channel event carries no "to"');
  if ('subscriptionId' in want) {
    if (e.subscriptionId !== want.subscriptionId) fail('subscriptionId');
  } else if ('subscriptionId' in e) fail('a membership delivery carries no subscriptionId');
  return e;
}

export function deepEq(a, b) {
  if (a === b) return true;
  if (Buffer.isBuffer(a) || Buffer.isBuffer(b) || a instanceof ArrayBuffer || b instanceof ArrayBuffer) {
    const ba = Buffer.from(a instanceof ArrayBuffer ? new Uint8Array(a) : a);
    const bb = Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b);
    return Buffer.isBuffer(ba) && Buffer.isBuffer(bb) && ba.equals(bb);
  }
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEq(a[k], b[k]));
}

// ---------------------------------------------------------------------------------------------
// Redis (for tests that run instances as a cluster)

export const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

/** Runs one Redis command (ASCII arguments) on a fresh connection and resolves with its reply. */
export function redisCmd(url, ...args) {
  const u = new URL(url);
  const enc = (a) => `*${a.length}\r\n${a.map((x) => `$${Buffer.byteLength(String(x))}\r\n${x}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: u.hostname || '127.0.0.1', port: Number(u.port || 6379) });
    let buf = '';
    let replies = [];
    const cmds = [];
    if (u.password) cmds.push(u.username ? ['AUTH', decodeURIComponent(u.username), decodeURIComponent(u.password)] : ['AUTH', decodeURIComponent(u.password)]);
    cmds.push(args);
    const t = setTimeout(() => { s.destroy(); reject(new Error(`Redis ${args[0]} timed out`)); }, 3000);
    s.on('connect', () => s.write(cmds.map(enc).join('')));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const x = parseResp(buf);
        if (!x) break;
        replies.push(x[0]);
        [, buf] = x;
      }
      if (replies.length === cmds.length) {
        clearTimeout(t);
        s.destroy();
        const last = replies[replies.length - 1];
        replies = [];
        if (last instanceof Error) reject(last); else resolve(last);
      }
    });
    s.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

/** One RESP reply from the start of buf: [value, rest], or null while incomplete. */
function parseResp(buf) {
  const nl = buf.indexOf('\r\n');
  if (nl < 0) return null;
  const [head, line, rest] = [buf[0], buf.slice(1, nl), buf.slice(nl + 2)];
  if (head === '+') return [line, rest];
  if (head === '-') return [new Error(line), rest];
  if (head === ':') return [Number(line), rest];
  if (head === '$') {
    const n = Number(line);
    if (n < 0) return [null, rest];
    return Buffer.byteLength(rest, 'latin1') < n + 2 ? null : [rest.slice(0, n), rest.slice(n + 2)];
  }
  if (head === '*') {
    const items = [];
    let r = rest;
    for (let k = 0; k < Number(line); k += 1) {
      const x = parseResp(r);
      if (!x) return null;
      items.push(x[0]);
      [, r] = x;
    }
    return [items, r];
  }
  return [new Error(`unexpected Redis reply ${JSON.stringify(buf.slice(0, 20))}`), ''];
}

/** Deletes every key under `prefix:`, so a test leaves a shared Redis as it found it. */
export async function dropRedisKeys(url, prefix) {
  let cursor = '0';
  do {
    const [next, keys] = await redisCmd(url, 'SCAN', cursor, 'MATCH', `${prefix}:*`, 'COUNT', '1000');
    cursor = next;
    if (keys.length) await redisCmd(url, 'DEL', ...keys);
  } while (cursor !== '0');
}

/** A REST call with an admin token: { status, json (null when not JSON), text }. */
export async function api(srv, method, path, body) {
  const headers = { authorization: `Bearer ${mint({ role: 'admin' })}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(`${srv.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}
