// The JavaScript client package (clients/js, `createRealtime`) against the real gateway: every
// method, errors with codes, lifecycle across a server restart on the same port, token refresh
// before expiry, and reconnection after the server disconnects an expired socket.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import { GATEWAY_BIN, SECRET, ARRIVE_MS, mint, uniq, uniqUser, until, sleep } from './fixture.mjs';
import { createRealtime, RealtimeError, decodeJwt } from '../../clients/js/index.js';

// ---------------------------------------------------------------------------------------------
// a gateway on a chosen port (so it can be restarted on the same one)

// A free port below Linux's ephemeral range (32768+), so the gateways other test files start on
// port 0 cannot take it while ours is restarting.
async function freePort() {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const free = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.unref();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

async function startGateway(port, { leeway } = {}) {
  if (!fs.existsSync(GATEWAY_BIN)) throw new Error(`gateway binary not found at ${GATEWAY_BIN} (set GATEWAY_BIN)`);
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--shards', '2', '--no-pin', '--jwt-secret', SECRET, '--log-level', 'warn'];
  if (leeway !== undefined) args.push('--jwt-leeway', String(leeway));
  for (let attempt = 0; ; attempt++) {
    const proc = spawn(GATEWAY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stderr.on('data', (d) => { err += d; });
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`gateway did not start within 15s\n${out}\n${err}`)), 15000);
        proc.stdout.on('data', (d) => { out += d; if (/listening on http:\/\//.test(out)) { clearTimeout(timer); resolve(); } });
        proc.once('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`gateway exited early (code ${code}, signal ${sig})\n${out}\n${err}`)); });
      });
    } catch (e) {
      // the port may still be held for a moment after a stop: retry a few times
      if (attempt < 20) { try { proc.kill('SIGKILL'); } catch { /* gone */ } await sleep(250); continue; }
      throw e;
    }
    return {
      url: `http://127.0.0.1:${port}`,
      port,
      proc,
      async stop() {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, 5000);
        await exited;
        clearTimeout(t);
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// helpers

const clients = new Set();
const FAST = { reconnectionDelay: 100, reconnectionDelayMax: 500, requestTimeout: ARRIVE_MS };

/** createRealtime, tracked for cleanup; records its connection states and errors. */
function realtimeFor(url, opts = {}) {
  const rt = createRealtime({ url, ...FAST, ...opts });
  rt.states = [];
  rt.errors = [];
  rt.on('connection', ({ state }) => rt.states.push(state));
  rt.on('error', (e) => rt.errors.push(e));
  clients.add(rt);
  return rt;
}

function closeClients() {
  for (const c of clients) { try { c.close(); } catch { /* ignore */ } }
  clients.clear();
}

function next(subscribeFn, pred = () => true, timeout = ARRIVE_MS) {
  return new Promise((resolve, reject) => {
    let off = () => {};
    const t = setTimeout(() => { off(); reject(new Error('timed out waiting for a delivery')); }, timeout);
    off = subscribeFn((v) => { if (pred(v)) { clearTimeout(t); off(); resolve(v); } });
  });
}

function waitState(rt, state, timeout = ARRIVE_MS) {
  if (rt.state === state) return Promise.resolve();
  return next((h) => rt.on('connection', h), (c) => c.state === state, timeout);
}

async function rejectsWith(promise, code) {
  try {
    const v = await promise;
    assert.fail(`expected a rejection with code ${code}, got ${JSON.stringify(v)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(e instanceof Error, 'rejects with an Error');
    assert.ok(e instanceof RealtimeError, 'rejects with a RealtimeError');
    assert.equal(e.code, code, `code (message: ${e.message})`);
    assert.equal(typeof e.message, 'string');
    return e;
  }
}

const now = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------------------------

describe('clients/js: every method', () => {
  let srv;
  before(async () => { srv = await startGateway(await freePort()); });
  after(async () => { closeClients(); await srv?.stop(); });
  afterEach(() => closeClients());

  it('connects (connecting → connected) and exposes socketId', async () => {
    const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a') }) });
    assert.equal(a.state, 'connecting');
    await a.ready();
    assert.deepEqual(a.states, ['connecting', 'connected']);
    assert.equal(typeof a.socketId, 'string');
    assert.equal(a.socketClient.socketId, a.socketId);
    a.close();
    assert.deepEqual(a.states, ['connecting', 'connected', 'disconnected']);
    assert.equal(a.socketId, undefined);
  });

  it("runs the product description's examples as written (no awaits)", async () => {
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    await b.socketClient.joinChannel('chat:room1');
    const targetSocketId = b.socketId;
    const published = next((h) => b.socketClient.onChannel('chat:room1', h));
    const directed = next((h) => b.socketClient.onDirect(h));
    const left = next((h) => b.socketClient.onPresence('chat:room1', h), (p) => p.type === 'leave');

    const realtime = realtimeFor(srv.url, { token: mint({ sub: 'user123' }) });
    const log = [];
    realtime.on('connection', ({ state }) => {
      log.push(`Connection state: ${state}`);
      // 'connecting' | 'connected' | 'disconnected' | 'reconnecting'
    });
    realtime.on('error', (err) => {
      log.push(`Connection error: ${err}`);
    });
    realtime.socketClient.joinChannel('chat:room1');
    realtime.socketClient.publish('chat:room1', 'message', {
      text: 'Hello everyone!',
      sender: 'user123',
    });
    realtime.socketClient.directMessage(targetSocketId, 'notification', {
      text: 'You have a new message',
    });
    realtime.socketClient.leaveChannel('chat:room1');

    const e = await published;
    assert.deepEqual([e.event, e.data, e.from.userId], ['message', { text: 'Hello everyone!', sender: 'user123' }, 'user123']);
    const d = await directed;
    assert.deepEqual([d.event, d.data, d.to], ['notification', { text: 'You have a new message' }, targetSocketId]);
    assert.equal((await left).member.userId, 'user123');
    assert.deepEqual(log, ['Connection state: connecting', 'Connection state: connected']);
    await b.socketClient.leaveChannel('chat:room1');
  });

  it('joinChannel, members, publish, onChannel/onEvent/on(event), presence, leaveChannel', async () => {
    const subA = uniqUser('a');
    const subB = uniqUser('b');
    const a = realtimeFor(srv.url, { token: mint({ sub: subA }) });
    const b = realtimeFor(srv.url, { getToken: () => mint({ sub: subB }) });
    const ch = uniq();
    // calls made before the connection is up wait for it
    const joinA = await a.socketClient.joinChannel(ch);
    assert.deepEqual(joinA, { ok: true, channel: ch, members: 1 });
    assert.deepEqual(a.socketClient.channels, [ch]);
    await b.ready();

    const presence = next((h) => a.socketClient.onPresence(ch, h), (p) => p.type === 'join' && p.member.userId === subB);
    const joinB = await b.socketClient.joinChannel(ch);
    assert.equal(joinB.members, 2);
    const p = await presence;
    assert.equal(p.member.socketId, b.socketId);

    const m = await a.socketClient.members(ch);
    assert.equal(m.ok, true);
    assert.equal(m.channel, ch);
    assert.deepEqual(m.members.map((x) => x.socketId).sort(), [a.socketId, b.socketId].sort());

    // the product description's publish, seen three ways
    const byChannel = next((h) => a.socketClient.onChannel(ch, h));
    const byName = next((h) => a.socketClient.onEvent('message', h));
    const all = next((h) => a.on('event', h), (e) => e.channel === ch);
    const pub = await b.socketClient.publish(ch, 'message', { text: 'Hello everyone!', sender: 'user123' });
    assert.equal(pub.ok, true);
    assert.equal(typeof pub.id, 'string');
    for (const e of await Promise.all([byChannel, byName, all])) {
      assert.equal(e.id, pub.id);
      assert.equal(e.channel, ch);
      assert.equal(e.event, 'message');
      assert.deepEqual(e.data, { text: 'Hello everyone!', sender: 'user123' });
      assert.deepEqual(e.from, { socketId: b.socketId, userId: subB });
    }

    // echo:false skips the publisher's own sockets
    const bGot = [];
    const offB = b.socketClient.onChannel(ch, (e) => bGot.push(e));
    const aGot = next((h) => a.socketClient.onChannel(ch, h), (e) => e.event === 'quiet');
    await b.socketClient.publish(ch, 'quiet', 1, { echo: false });
    await b.socketClient.publish(ch, 'loud', 2);
    await aGot;
    await until(() => bGot.some((e) => e.event === 'loud'), 'b gets its own echo');
    assert.ok(!bGot.some((e) => e.event === 'quiet'), 'echo:false not delivered to the publisher');
    offB();

    // leave: presence leave to the remaining member, and no more deliveries
    const leaveSeen = next((h) => b.on('presence', h), (x) => x.type === 'leave' && x.member.userId === subA);
    assert.deepEqual(await a.socketClient.leaveChannel(ch), { ok: true, channel: ch });
    await leaveSeen;
    assert.deepEqual(a.socketClient.channels, []);
    const after = [];
    a.socketClient.onChannel(ch, (e) => after.push(e));
    await b.socketClient.publish(ch, 'message', 'gone');
    await sleep(200);
    assert.equal(after.length, 0, 'no deliveries after leaving');
  });

  it('directMessage reaches the socket by id (onDirect / onEvent)', async () => {
    const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a') }) });
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    await Promise.all([a.ready(), b.ready()]);
    const direct = next((h) => b.socketClient.onDirect(h));
    const named = next((h) => b.socketClient.onEvent('notification', h));
    const ack = await a.socketClient.directMessage(b.socketId, 'notification', { text: 'You have a new message' });
    assert.equal(ack.ok, true);
    for (const e of await Promise.all([direct, named])) {
      assert.equal(e.channel, null);
      assert.equal(e.to, b.socketId);
      assert.equal(e.event, 'notification');
      assert.deepEqual(e.data, { text: 'You have a new message' });
      assert.equal(e.from.socketId, a.socketId);
    }
  });

  it('subscribe with and without a filter; the handle unsubscribes', async () => {
    const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a') }) });
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    const prefix = uniq('game');
    const all = [];
    const filtered = [];
    const subAll = await a.socketClient.subscribe(`${prefix}:*`, (e) => all.push(e));
    const subF = await a.socketClient.subscribe(`${prefix}:*`, { event: 'score', where: { team: 'red' } }, (e) => filtered.push(e));
    assert.equal(typeof subAll.id, 'string');
    assert.notEqual(subAll.id, subF.id);
    await b.socketClient.publish(`${prefix}:m1`, 'score', { team: 'blue' });
    await b.socketClient.publish(`${prefix}:m2`, 'score', { team: 'red' });
    await b.socketClient.publish(`${prefix}:m2`, 'chat', { team: 'red' });
    await until(() => all.length === 3 && filtered.length === 1, () => `deliveries (all ${all.length}, filtered ${filtered.length})`);
    assert.equal(filtered[0].channel, `${prefix}:m2`);
    assert.equal(filtered[0].subscriptionId, subF.id);
    assert.ok(all.every((e) => e.subscriptionId === subAll.id));
    assert.deepEqual(await subAll.unsubscribe(), { ok: true });
    assert.equal(subAll.active, false);
    await b.socketClient.publish(`${prefix}:m3`, 'score', { team: 'red' });
    await until(() => filtered.length === 2, 'the remaining subscription still delivers');
    await sleep(100);
    assert.equal(all.length, 3, 'no deliveries after unsubscribe');
    assert.deepEqual(await subAll.unsubscribe(), { ok: true }, 'unsubscribing twice is harmless');
  });
});

describe('clients/js: errors carry the protocol codes', () => {
  let srv;
  before(async () => { srv = await startGateway(await freePort()); });
  after(async () => { closeClients(); await srv?.stop(); });
  afterEach(() => closeClients());

  it('rejects requests with RealtimeError codes', async () => {
    const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a'), channels: ['chat:*'] }) });
    await a.ready();
    await rejectsWith(a.socketClient.joinChannel(''), 'invalid_channel');
    await rejectsWith(a.socketClient.joinChannel(42), 'bad_request');
    await rejectsWith(a.socketClient.joinChannel('game:x'), 'forbidden');
    assert.deepEqual(a.socketClient.channels, [], 'a refused join is not remembered');
    await rejectsWith(a.socketClient.publish('chat:x', 'connect', {}), 'bad_request');
    await rejectsWith(a.socketClient.publish('game:x', 'message', {}), 'forbidden');
    await rejectsWith(a.socketClient.directMessage('no-such-socket', 'message', {}), 'not_found');
    await rejectsWith(a.socketClient.subscribe('', () => {}), 'invalid_channel');
    await rejectsWith(a.socketClient.subscribe('chat:*', { nonsense: true }, () => {}), 'bad_request');
    await rejectsWith(a.socketClient.members(null), 'bad_request');
    assert.equal(a.state, 'connected', 'refusals do not disturb the connection');
    a.close();
    await rejectsWith(a.socketClient.joinChannel('chat:x'), 'closed');
  });

  it('a refused connection reports error {code: unauthorized, reason} and ends disconnected', async () => {
    const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a'), exp: now() - 3600 }) });
    const pending = a.socketClient.joinChannel('chat:x');
    await waitState(a, 'disconnected');
    assert.deepEqual(a.states, ['connecting', 'disconnected']);
    assert.equal(a.errors.length, 1);
    assert.equal(a.errors[0].code, 'unauthorized');
    assert.equal(a.errors[0].reason, 'expired');
    const e = await rejectsWith(pending, 'unauthorized');
    assert.equal(e.reason, 'expired');
    await rejectsWith(a.socketClient.members('chat:x'), 'disconnected');
  });

  it('a request with no answer in time rejects with code timeout', async () => {
    // nothing listens on this port: the request waits for a connection that never comes
    const a = realtimeFor(`http://127.0.0.1:${await freePort()}`, { token: mint(), requestTimeout: 300 });
    await rejectsWith(a.socketClient.joinChannel('chat:x'), 'timeout');
    assert.notEqual(a.state, 'connected');
  });
});

describe('clients/js: reconnection across a server restart on the same port', () => {
  let srv;
  let port;
  before(async () => { port = await freePort(); srv = await startGateway(port); });
  after(async () => { closeClients(); await srv?.stop(); });

  it('goes connected → reconnecting → connected, rejoins channels, re-subscribes, messages flow', { timeout: 60000 }, async () => {
    const subA = uniqUser('a');
    let tokensA = 0;
    const a = realtimeFor(srv.url, { getToken: async () => { tokensA += 1; return mint({ sub: subA }); } });
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    const ch = uniq();
    const prefix = uniq('game');
    await a.socketClient.joinChannel(ch);
    await b.socketClient.joinChannel(ch);
    const viaSub = [];
    const sub = await a.socketClient.subscribe(`${prefix}:*`, (e) => viaSub.push(e));
    const firstSubId = sub.id;
    const firstSocketId = a.socketId;
    const got = [];
    a.socketClient.onChannel(ch, (e) => got.push(e));
    await b.socketClient.publish(ch, 'message', 'before');
    await until(() => got.length === 1, 'delivery before the restart');
    assert.deepEqual(a.states, ['connecting', 'connected']);

    await srv.stop();
    await waitState(a, 'reconnecting');
    assert.equal(a.socketId, undefined);
    assert.equal(sub.id, null, 'no server subscription while offline');
    await sleep(300);
    srv = await startGateway(port);
    await Promise.all([waitState(a, 'connected', 30000), waitState(b, 'connected', 30000)]);

    assert.deepEqual(a.states, ['connecting', 'connected', 'reconnecting', 'connected']);
    assert.ok(tokensA >= 2, `getToken asked again for the reconnect (${tokensA})`);
    assert.notEqual(a.socketId, firstSocketId);

    // channels rejoined on the new server
    const m = await b.socketClient.members(ch);
    assert.deepEqual(m.members.map((x) => x.socketId).sort(), [a.socketId, b.socketId].sort());
    // messages flow again, through the membership and the re-established subscription
    await b.socketClient.publish(ch, 'message', 'after');
    await until(() => got.some((e) => e.data === 'after'), 'channel delivery after the restart');
    assert.equal(typeof sub.id, 'string');
    assert.notEqual(sub.id, null);
    await b.socketClient.publish(`${prefix}:m1`, 'score', 7);
    await until(() => viaSub.length === 1, 'subscription delivery after the restart');
    assert.equal(viaSub[0].subscriptionId, sub.id);
    assert.ok(firstSubId !== undefined);
    // the handle unsubscribes the new server subscription
    assert.deepEqual(await sub.unsubscribe(), { ok: true });
    await b.socketClient.publish(`${prefix}:m1`, 'score', 8);
    await b.socketClient.publish(ch, 'message', 'sync');
    await until(() => got.some((e) => e.data === 'sync'), 'sync');
    await sleep(100);
    assert.equal(viaSub.length, 1, 'unsubscribed after the restart');
    assert.deepEqual(a.errors.filter((e) => e.code !== 'connect_error'), [], 'no errors besides failed connection attempts');
  });
});

describe('clients/js: reconnection: false', () => {
  it('a dropped connection ends in disconnected, pending requests reject', { timeout: 30000 }, async () => {
    const own = await startGateway(await freePort());
    try {
      const a = realtimeFor(own.url, { token: mint(), reconnection: false, requestTimeout: 300 });
      await a.ready();
      await own.stop();
      await waitState(a, 'disconnected');
      assert.deepEqual(a.states, ['connecting', 'connected', 'disconnected']);
      await rejectsWith(a.socketClient.joinChannel('chat:x'), 'disconnected');
    } finally {
      closeClients();
      await own.stop();
    }
  });
});

describe('clients/js: tokens (--jwt-leeway 0)', () => {
  let srv;
  before(async () => { srv = await startGateway(await freePort(), { leeway: 0 }); });
  after(async () => { closeClients(); await srv?.stop(); });
  afterEach(() => closeClients());

  it('refreshes the token before it expires and stays connected past the first exp', { timeout: 30000 }, async () => {
    const sub = uniqUser('short');
    const issued = [];
    const a = realtimeFor(srv.url, {
      getToken: () => { const t = mint({ sub, exp: now() + 3 }); issued.push(t); return t; },
    });
    const refreshed = [];
    a.on('refresh', (r) => refreshed.push(r));
    const disconnects = [];
    a.socket.on('disconnect', (r) => disconnects.push(r));
    const ch = uniq();
    await a.socketClient.joinChannel(ch);
    const firstExp = decodeJwt(issued[0]).exp;
    // well past the first token's exp (+ leeway 0 + 1s)
    await until(() => now() > firstExp + 3, 'time to pass', 15000);
    assert.deepEqual(disconnects, [], 'never disconnected');
    assert.deepEqual(a.states, ['connecting', 'connected']);
    assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
    assert.ok(refreshed.every((r) => typeof r.exp === 'number'));
    const got = next((h) => a.socketClient.onChannel(ch, h));
    await a.socketClient.publish(ch, 'message', 'still here');
    assert.equal((await got).data, 'still here');
    assert.deepEqual(a.errors, []);
  });

  it('after the server disconnects an expired socket, reconnects with a fresh token and rejoins', { timeout: 30000 }, async () => {
    const sub = uniqUser('expiring');
    let tokens = 0;
    const a = realtimeFor(srv.url, {
      refreshMarginSeconds: false, // no refresh: let the token expire
      getToken: () => { tokens += 1; return mint({ sub, exp: now() + (tokens === 1 ? 2 : 3600) }); },
    });
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    const reasons = [];
    a.on('connection', (c) => { if (c.state === 'reconnecting') reasons.push(c.reason); });
    const ch = uniq();
    await a.socketClient.joinChannel(ch);
    const firstId = a.socketId;
    await waitState(a, 'reconnecting', 10000);
    assert.equal(reasons[0], 'io server disconnect');
    await waitState(a, 'connected', 10000);
    assert.deepEqual(a.states.slice(0, 4), ['connecting', 'connected', 'reconnecting', 'connected']);
    assert.ok(tokens >= 2);
    assert.notEqual(a.socketId, firstId);
    const m = await b.socketClient.members(ch);
    assert.ok(m.members.some((x) => x.socketId === a.socketId), 'rejoined after the reconnect');
    a.close();
  });
});
