// Graceful shutdown (issue 8): on SIGTERM/SIGINT the gateway stops accepting, flushes each
// socket's queue, then closes the transport (socket.io-client sees "transport close" and is
// eligible to reconnect), leaves cluster presence at once and exits within --shutdown-timeout;
// a second signal exits at once.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import WebSocket from 'ws';
import {
  startServer, connect, ack, mint, uniq, record, until, sleep, closeAll, io, ARRIVE_MS,
} from './fixture.mjs';

const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

/** Resolves with { code, signal, at } when the process exits. */
function exited(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode, at: Date.now() });
  return new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal, at: Date.now() })));
}

/** A raw websocket member (answers pings) that can stop and resume reading. */
async function rawMember(srv, channel) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`);
  const events = [];
  const texts = [];
  let closed = null;
  ws.on('message', (buf, bin) => {
    if (bin) return;
    const t = buf.toString();
    if (t === '2') { ws.send('3'); return; }
    if (t.startsWith('42["event",')) events.push(JSON.parse(t.slice(2))[1]);
    else texts.push(t);
  });
  ws.on('close', (code) => { closed = { code, at: Date.now() }; });
  ws.on('error', () => {});
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  await until(() => texts.some((t) => t.startsWith('0')), 'OPEN');
  ws.send(`40${JSON.stringify({ token: mint() })}`);
  await until(() => texts.some((t) => t.startsWith('40{')), 'CONNECT');
  ws.send(`421${JSON.stringify(['join', channel])}`);
  await until(() => texts.some((t) => t.startsWith('431[')), 'join ack');
  return { ws, events, texts, get closed() { return closed; } };
}

/** Publishes n numbered events of `size` bytes to a channel, all acked. */
async function publishMany(pub, channel, n, size) {
  const pad = 'q'.repeat(size);
  for (let i = 0; i < n; i += 50) {
    const res = await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, k) => ack(pub, 'publish', { channel, event: 'queued', data: { i: i + k, pad } })));
    assert.ok(res.every((r) => r.ok), JSON.stringify(res.find((r) => !r.ok)));
  }
}

function assertAllInOrder(events, n, who) {
  const got = events.filter((e) => e.event === 'queued').map((e) => e.data.i);
  assert.equal(got.length, n, `${who} received ${got.length} of ${n} queued events before the close`);
  for (let i = 0; i < n; i += 1) if (got[i] !== i) assert.fail(`${who}: event ${i} is ${got[i]}`);
}

describe('graceful shutdown', () => {
  const servers = [];
  after(async () => { for (const s of servers) { closeAll(s); await s.stop(); } });

  it('SIGTERM: every queued message arrives, then a transport close (reconnect-eligible); no new connections; exit within --shutdown-timeout', { timeout: 60000 }, async () => {
    const TIMEOUT = 8000;
    const srv = await startServer({ shards: 1, sendQueue: 100000, extraArgs: ['--send-queue-bytes', '1000000000', '--shutdown-timeout', String(TIMEOUT), '--max-events-per-sec', '0'] });
    servers.push(srv);
    const ch = uniq('drain');
    // a socket.io-client member that may reconnect (it must see "transport close", not "io server disconnect")
    const c = io(srv.url, { transports: ['websocket'], forceNew: true, reconnectionDelay: 60000, reconnectionDelayMax: 60000, auth: { token: mint() } });
    srv.sockets.add(c);
    await new Promise((res, rej) => { c.once('connect', res); c.once('connect_error', rej); });
    await ack(c, 'join', ch);
    const cEvents = record(c, 'event');
    const cEventsAtDisconnect = [];
    let reason = null;
    c.on('disconnect', (r) => { reason = r; cEventsAtDisconnect.push(cEvents.length); });
    // a raw member that stops reading: its messages queue up in the gateway
    const r = await rawMember(srv, ch);
    r.ws._socket.pause();
    const pub = await connect(srv, { transports: ['websocket'] });
    const N = 2000;
    await publishMany(pub, ch, N, 2048);
    const done = exited(srv.proc);
    const t0 = Date.now();
    srv.proc.kill('SIGTERM');
    // stop accepting: a new connection during the drain does not get in
    await sleep(200);
    const late = io(srv.url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 2000, auth: { token: mint() } });
    const lateResult = await new Promise((res) => { late.once('connect', () => res('connected')); late.once('connect_error', (e) => res(`refused: ${e.message}`)); });
    late.close();
    assert.notEqual(lateResult, 'connected', 'a new socket connected during the shutdown');
    // resume reading: everything queued arrives, then the close
    r.ws._socket.resume();
    const ex = await done;
    const took = ex.at - t0;
    console.log(`# SIGTERM → exit in ${took} ms (code ${ex.code}, signal ${ex.signal}); late connect: ${lateResult}; socket.io-client reason "${reason}"; raw close ${JSON.stringify(r.closed)}`);
    await until(() => r.closed && reason !== null, 'both members see the close', 5000);
    assertAllInOrder(r.events, N, 'the raw member that had stopped reading');
    assertAllInOrder(cEvents, N, 'the socket.io-client member');
    assert.equal(cEventsAtDisconnect[0], N, 'socket.io-client had every event before its disconnect');
    assert.equal(reason, 'transport close', 'a transport close, so the client reconnects elsewhere');
    assert.equal(c.active, true, 'socket.io-client is still active (will reconnect)');
    assert.ok(took < TIMEOUT + 1000, `exited ${took} ms after SIGTERM (timeout ${TIMEOUT})`);
    assert.equal(ex.code, 0, `exit code ${ex.code}`);
    c.close();
  });

  it('a client that never reads does not hold the exit past --shutdown-timeout', { timeout: 60000 }, async () => {
    const TIMEOUT = 1500;
    const srv = await startServer({ shards: 1, sendQueue: 100000, extraArgs: ['--send-queue-bytes', '1000000000', '--shutdown-timeout', String(TIMEOUT), '--max-events-per-sec', '0'] });
    servers.push(srv);
    const ch = uniq('stuck');
    const r = await rawMember(srv, ch);
    r.ws._socket.pause();
    const pub = await connect(srv, { transports: ['websocket'] });
    await publishMany(pub, ch, 2000, 4096);
    const done = exited(srv.proc);
    const t0 = Date.now();
    srv.proc.kill('SIGINT');
    const ex = await done;
    const took = ex.at - t0;
    console.log(`# stuck reader: SIGINT → exit in ${took} ms (timeout ${TIMEOUT}), code ${ex.code}`);
    assert.ok(took < TIMEOUT + 1000, `exited ${took} ms after SIGINT`);
    r.ws.terminate();
  });

  it('a second signal exits at once', { timeout: 60000 }, async () => {
    const TIMEOUT = 30000;
    const srv = await startServer({ shards: 1, sendQueue: 100000, extraArgs: ['--send-queue-bytes', '1000000000', '--shutdown-timeout', String(TIMEOUT), '--max-events-per-sec', '0'] });
    servers.push(srv);
    const ch = uniq('second');
    const r = await rawMember(srv, ch);
    r.ws._socket.pause(); // holds the graceful shutdown until the timeout
    const pub = await connect(srv, { transports: ['websocket'] });
    await publishMany(pub, ch, 2000, 4096);
    const done = exited(srv.proc);
    srv.proc.kill('SIGTERM');
    await sleep(500);
    assert.equal(srv.proc.exitCode, null, 'still draining after the first signal');
    const t1 = Date.now();
    srv.proc.kill('SIGTERM');
    const ex = await done;
    console.log(`# second signal → exit in ${ex.at - t1} ms, code ${ex.code}, signal ${ex.signal}`);
    assert.ok(ex.at - t1 < 1000, `exited ${ex.at - t1} ms after the second signal`);
    r.ws.terminate();
  });

  it('with Redis: the stopping instance leaves another instance\'s connections and members views at once', { timeout: 60000 }, async () => {
    const prefix = `sgwshut${process.pid}x${Date.now() % 100000}`;
    const EXPIRY = 10000;
    const node = (id) => startServer({
      shards: 1,
      extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix, '--instance-id', id,
        '--heartbeat-interval', '1000', '--instance-expiry', String(EXPIRY), '--shutdown-timeout', '5000'],
    });
    const idX = `x${process.pid}`;
    const idY = `y${process.pid}`;
    const [X, Y] = await Promise.all([node(idX), node(idY)]);
    servers.push(X, Y);
    try {
      const admin = mint({ role: 'admin' });
      const view = async (p) => (await (await fetch(`${Y.url}${p}`, { headers: { Authorization: `Bearer ${admin}` } })).json());
      const ch = uniq('gone');
      const onX = await connect(X, { transports: ['websocket'] });
      await ack(onX, 'join', ch);
      const onY = await connect(Y, { transports: ['websocket'] });
      await ack(onY, 'join', ch);
      const hasX = async () => {
        const conns = await view('/api/socket/connections');
        const members = await view(`/api/socket/channels/${encodeURIComponent(ch)}/members`);
        return { inConnections: conns.instances.some((i) => i.id === idX), inMembers: members.members.some((m) => m.socketId === onX.id), conns };
      };
      await until(async () => { const h = await hasX(); return h.inConnections && h.inMembers; }, 'Y sees X and its member', ARRIVE_MS);
      const yPresence = record(onY, 'presence');
      const done = exited(X.proc);
      const t0 = Date.now();
      X.proc.kill('SIGTERM');
      let last;
      await until(async () => { last = await hasX(); return !last.inConnections && !last.inMembers; },
        () => `X gone from Y's views (${JSON.stringify(last)})`, EXPIRY);
      const gone = Date.now() - t0;
      const ex = await done;
      console.log(`# X left Y's connections/members views ${gone} ms after SIGTERM (expiry ${EXPIRY}); X exited after ${ex.at - t0} ms; Y saw presence ${JSON.stringify(yPresence.map((p) => p.type))}`);
      assert.ok(gone < 3000, `X left Y's views ${gone} ms after SIGTERM: not at once (expiry ${EXPIRY})`);
      assert.ok(onY.connected, 'Y\'s socket is unaffected');
    } finally {
      try {
        const keys = execFileSync('redis-cli', ['-u', REDIS_URL, '--scan', '--pattern', `${prefix}:*`]).toString().split('\n').filter(Boolean);
        if (keys.length) execFileSync('redis-cli', ['-u', REDIS_URL, 'DEL', ...keys]);
      } catch (e) { console.log(`# could not remove the keys under ${prefix}: ${e.message}`); }
    }
  });
});
