// Raw clients and observation helpers for the tests that play a hostile or low-level client:
// websocket frames built by hand, Engine.IO/Socket.IO over a bare TCP socket, raw HTTP, the
// gateway's metrics and RSS, and a witness pair that proves a shard still serves.
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import fs from 'node:fs';
import WebSocket from 'ws';
import { connect, ack, mint, uniq, record, until, ARRIVE_MS } from './fixture.mjs';

// ---------------------------------------------------------------------------------------------
// observation helpers

export async function metrics(srv) {
  const res = await fetch(`${srv.url}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}
/** Sum of every child of a metric family (gauge or counter) in the Prometheus text. */
export function metricSum(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) sum += Number(m[3]);
  }
  return sum;
}
export const sessions = async (srv) => metricSum(await metrics(srv), 'socket_gateway_engineio_sessions');
export const memberships = async (srv) => metricSum(await metrics(srv), 'socket_gateway_memberships');

export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * A witness pair on the server: `a` is a member of a channel, `b` publishes to it. check()
 * proves the shard still serves (a publish/receive round trip) and the session count is back
 * to the baseline taken when the witness was made.
 */
export async function witness(srv, extra = 0) {
  const ch = uniq('witness');
  const a = await connect(srv, { transports: ['websocket'] });
  const b = await connect(srv, { transports: ['websocket'] });
  srv.sockets.delete(a); srv.sockets.delete(b); // survive closeAll() between cases
  assert.equal((await ack(a, 'join', ch)).ok, true);
  const got = record(a, 'event');
  await until(async () => (await sessions(srv)) === 2 + extra, 'the witness sessions counted');
  const baseline = await sessions(srv);
  const baseMembers = await memberships(srv);
  let n = 0;
  return {
    a, b, baseline,
    async roundTrip(what) {
      assert.ok(srv.proc.exitCode === null && srv.proc.signalCode === null, `the gateway is still running after ${what}`);
      n += 1;
      const marker = `${what}#${n}`;
      const res = await ack(b, 'publish', { channel: ch, event: 'witness', data: marker });
      assert.equal(res.ok, true, `witness publish after ${what}: ${JSON.stringify(res)}`);
      await until(() => got.some((e) => e.data === marker), `the witness receives its round trip after ${what}`);
      assert.ok(a.connected && b.connected, `the witness sockets are still connected after ${what}`);
    },
    async check(what) {
      await this.roundTrip(what);
      let last;
      await until(async () => { last = await sessions(srv); return last === baseline; },
        () => `engine.io sessions back to the baseline ${baseline} after ${what} (now ${last})`, 15000);
      let lastM;
      await until(async () => { lastM = await memberships(srv); return lastM === baseMembers; },
        () => `memberships back to the baseline ${baseMembers} after ${what} (now ${lastM})`, 15000);
    },
    close() { a.close(); b.close(); },
  };
}

// ---------------------------------------------------------------------------------------------
// raw clients

/** A raw Engine.IO/Socket.IO client over `ws` (answers pings unless told not to). */
export async function rawClient(srv, token, { answerPings = true, connectNsp = true, port = srv.port, wsOptions } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, wsOptions);
  const inbox = [];
  const waiters = [];
  let closed = null;
  ws.on('message', (buf, isBinary) => {
    const text = isBinary ? null : buf.toString();
    if (text === '2') { if (answerPings) ws.send('3'); return; }
    inbox.push(text);
    for (const w of waiters.splice(0)) w();
  });
  ws.on('close', (code, reason) => { closed = { code, reason: reason.toString(), at: Date.now() }; for (const w of waiters.splice(0)) w(); });
  ws.on('error', () => {});
  const next = async (pred, timeout = ARRIVE_MS) => {
    const deadline = Date.now() + timeout;
    for (;;) {
      const i = inbox.findIndex((m) => m !== null && pred(m));
      if (i >= 0) return inbox.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`raw client: nothing matching; inbox ${JSON.stringify(inbox.slice(0, 5))}; closed ${JSON.stringify(closed)}`);
      await new Promise((r) => { waiters.push(r); setTimeout(r, 50); });
    }
  };
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); ws.once('unexpected-response', (_q, r) => rej(new Error(`HTTP ${r.statusCode}`))); });
  const openedAt = Date.now();
  const open = JSON.parse((await next((m) => m.startsWith('0'))).slice(1));
  const c = {
    ws, open, openedAt, inbox, next,
    get closed() { return closed; },
    whenClosed: (timeout = ARRIVE_MS) => until(() => closed, 'the raw websocket closes', timeout),
  };
  if (connectNsp) {
    ws.send(`40${JSON.stringify({ token, recover: false })}`);
    const conn = await next((m) => m.startsWith('40') || m.startsWith('44'));
    assert.ok(conn.startsWith('40'), `CONNECT answered ${conn}`);
    c.sid = JSON.parse(conn.slice(2)).sid;
  }
  let ackId = 0;
  c.emitAck = async (event, arg) => {
    ackId += 1;
    const id = ackId;
    ws.send(`42${id}${JSON.stringify([event, arg])}`);
    const a = await next((m) => m.startsWith(`43${id}[`));
    return JSON.parse(a.slice(2 + String(id).length))[0];
  };
  return c;
}

/** One websocket frame as a client sends it (masked unless mask: false). */
export function wsFrame(opcode, payload, { fin = true, mask = true, claimLen } = {}) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = claimLen ?? body.length;
  let head;
  if (len < 126) { head = Buffer.alloc(2); head[1] = len; }
  else if (len < 65536) { head = Buffer.alloc(4); head[1] = 126; head.writeUInt16BE(len, 2); }
  else { head = Buffer.alloc(10); head[1] = 127; head.writeBigUInt64BE(BigInt(len), 2); }
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) return Buffer.concat([head, body]);
  head[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.from(body);
  for (let i = 0; i < masked.length; i += 1) masked[i] ^= key[i % 4];
  return Buffer.concat([head, key, masked]);
}

/**
 * A websocket client on a bare TCP socket: does the upgrade by hand and parses server frames.
 * Resolves with { sock, frames, texts, closed, send(buf), waitText(pred), whenEnded() }.
 */
export async function rawTcpWs(srv) {
  const sock = net.connect(srv.port, '127.0.0.1');
  await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
  const key = crypto.randomBytes(16).toString('base64');
  sock.write(`GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  let buf = Buffer.alloc(0);
  let upgraded = false;
  const c = { sock, frames: [], ended: false, status: null };
  sock.on('error', () => {});
  sock.on('close', () => { c.ended = true; });
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (!upgraded) {
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      c.status = Number(/^HTTP\/1\.1 (\d+)/.exec(buf.subarray(0, i).toString())?.[1]);
      buf = buf.subarray(i + 4);
      upgraded = true;
    }
    for (;;) {
      if (buf.length < 2) return;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + len) return;
      const f = { fin: !!(buf[0] & 0x80), opcode: buf[0] & 0x0f, payload: buf.subarray(off, off + len) };
      buf = buf.subarray(off + len);
      if (f.opcode === 0x1 && f.payload.toString() === '2') { sock.write(wsFrame(0x1, '3')); continue; }
      c.frames.push(f);
    }
  });
  c.send = (b) => sock.write(b);
  c.texts = () => c.frames.filter((f) => f.opcode === 0x1).map((f) => f.payload.toString());
  c.waitText = (pred, msg = 'a text frame') => until(() => c.texts().find(pred), msg);
  c.closeFrame = () => {
    const f = c.frames.find((x) => x.opcode === 0x8);
    return f ? { code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null, reason: f.payload.subarray(2).toString() } : null;
  };
  c.whenEnded = (timeout = ARRIVE_MS) => until(() => c.ended || c.closeFrame(), 'the server closes the connection', timeout);
  await until(() => upgraded, 'the 101 answer');
  assert.equal(c.status, 101);
  await c.waitText((t) => t.startsWith('0'), 'the engine.io OPEN');
  return c;
}

/** rawTcpWs + Socket.IO CONNECT. */
export async function rawTcpSio(srv) {
  const c = await rawTcpWs(srv);
  c.send(wsFrame(0x1, `40${JSON.stringify({ token: mint(), recover: false })}`));
  await c.waitText((t) => t.startsWith('40{'), 'the Socket.IO CONNECT answer');
  return c;
}

/** Raw HTTP over TCP; resolves with the status line's code (null if closed without an answer). */
export function rawHttp(port, head, body = '') {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.write(head); if (body) s.write(body); });
    let data = '';
    s.on('data', (d) => { data += d; const m = /^HTTP\/1\.1 (\d+)/.exec(data); if (m) { resolve({ status: Number(m[1]), text: () => data, sock: s }); } });
    s.on('error', () => resolve({ status: null, text: () => data }));
    s.on('close', () => resolve({ status: null, text: () => data }));
  });
}

/** A polling Engine.IO handshake; resolves with the sid. */
export async function pollingOpen(srv) {
  const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling`);
  assert.equal(res.status, 200);
  const t = await res.text();
  return JSON.parse(t.slice(t.indexOf('{'))).sid;
}

