// The JavaScript client package (clients/js, `createRealtime`) against the real gateway: every
// method, errors with codes, lifecycle across a server restart on the same port, recovery after a
// cut connection (nothing redone, nothing missed, nothing twice), token refresh before expiry, and
// reconnection after the server disconnects an expired socket. One file for the one package: its
// cases share the gateway it starts (hence its length).
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { GATEWAY_BIN, SECRET, ARRIVE_MS, mint, uniq, uniqUser, until, sleep, freeLowPort } from './fixture.mjs';
import { startProxy } from './proxy.mjs';
import { createRealtime, RealtimeError, decodeJwt } from '../../clients/js/index.js';

// ---------------------------------------------------------------------------------------------
// a gateway on a chosen port (so it can be restarted on the same one)

// A free port below Linux's ephemeral range (32768+), so the gateways other test files start on
// port 0 cannot take it while ours is restarting.
const freePort = () => freeLowPort();

async function startGateway(port, { leeway, extraArgs = [] } = {}) {
  if (!fs.existsSync(GATEWAY_BIN)) throw new Error(`gateway binary not found at ${GATEWAY_BIN} (set GATEWAY_BIN)`);
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--shards', '2', '--no-pin', '--jwt-secret', SECRET, '--log-level', 'warn'];
  if (leeway !== undefined) args.push('--jwt-leeway', String(leeway));
  args.push(...extraArgs);
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

/** createRealtime, tracked for cleanup; records its connection states (and events) and errors. */
function realtimeFor(url, opts = {}) {
  const rt = createRealtime({ url, ...FAST, ...opts });
  rt.states = [];
  rt.connections = [];
  rt.errors = [];
  rt.on('connection', (c) => { rt.states.push(c.state); rt.connections.push(c); });
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

  it('a failed call nobody awaits goes to error, never to an unhandled rejection; an awaited one does not', async () => {
    const unhandled = [];
    const onUnhandled = (reason) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a'), channels: ['chat:*'] }) });
      await a.ready();
      // statements, as in the product description's examples
      a.socketClient.joinChannel('game:x');
      a.socketClient.publish('game:x', 'message', {});
      a.socketClient.members(null);
      await rejectsWith(a.socketClient.joinChannel(''), 'invalid_channel');
      const viaThen = await a.socketClient.directMessage('no-such-socket', 'm', 1).then(() => 'resolved', (e) => e.code);
      assert.equal(viaThen, 'not_found');
      await until(() => a.errors.length >= 3, () => `errors reported (${a.errors.length}/3)`);
      await sleep(100);
      assert.deepEqual(a.errors.map((e) => [e instanceof RealtimeError, e.code]).sort(),
        [[true, 'bad_request'], [true, 'forbidden'], [true, 'forbidden']], 'the three ignored failures, and only those');
      // a call ignored as the client closes: the caller closed it, nothing to report
      a.socketClient.publish('chat:x', 'message', 1);
      a.close();
      a.socketClient.publish('chat:x', 'message', 2);
      await sleep(100);
      assert.equal(a.errors.length, 3, 'closing reports nothing');
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
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
    assert.equal(a.connections.at(-1).recovered, false, 'a restarted gateway cannot recover the socket');
    assert.equal(a.recovered, false);
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

describe('clients/js: recovery through a cut connection', () => {
  let srv;
  let proxy = null;
  before(async () => { srv = await startGateway(await freePort()); });
  // closeClients() sends DISCONNECTs: let them through before the proxy cuts everything
  after(async () => { closeClients(); await sleep(100); await proxy?.close(); await srv?.stop(); });
  afterEach(async () => { closeClients(); if (proxy) { await sleep(100); await proxy.close(); } proxy = null; });

  /** Cut every connection through the proxy and keep the client out until proxy.resume(). */
  async function cut(rt) {
    proxy.pause();
    proxy.cutAll();
    await waitState(rt, 'reconnecting');
  }

  it('a recovered reconnect keeps the socket id and subscription ids, redoes nothing, and delivers what was missed once, payload only', { timeout: 60000 }, async () => {
    proxy = await startProxy(srv.port);
    const a = realtimeFor(proxy.url, { token: mint({ sub: uniqUser('a') }), transports: ['websocket'] });
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    const ch = uniq();
    const prefix = uniq('game');
    await a.socketClient.joinChannel(ch);
    await b.ready();
    const onCh = [];
    const viaSub = [];
    const direct = [];
    const presence = [];
    const all = [];
    const sub = await a.socketClient.subscribe(`${prefix}:*`, (...args) => viaSub.push(args));
    a.socketClient.onChannel(ch, (...args) => onCh.push(args));
    a.socketClient.onDirect((...args) => direct.push(args));
    a.socketClient.onPresence(ch, (...args) => presence.push(args));
    a.on('event', (...args) => all.push(args));
    await b.socketClient.publish(ch, 'message', { i: 0 });
    await until(() => onCh.length === 1, 'a delivery before the cut');
    const id0 = a.socketId;
    const subId0 = sub.id;
    const out = [];
    a.socket.onAnyOutgoing((event) => out.push(event));

    await cut(a);
    assert.equal(a.socketId, undefined);
    assert.equal(sub.id, null, 'no usable subscription id while offline');
    for (let i = 1; i <= 5; i += 1) await b.socketClient.publish(ch, 'message', { i });
    for (let i = 0; i < 3; i += 1) await b.socketClient.publish(`${prefix}:x`, 'score', { i });
    for (let i = 0; i < 2; i += 1) assert.equal((await b.socketClient.directMessage(id0, 'note', { i })).ok, true, 'a direct message to the away socket is accepted');
    const c = realtimeFor(srv.url, { token: mint({ sub: uniqUser('c') }) });
    await c.socketClient.joinChannel(ch);
    proxy.resume();
    await waitState(a, 'connected', 30000);

    assert.deepEqual(a.states, ['connecting', 'connected', 'reconnecting', 'connected']);
    assert.deepEqual(a.connections.at(-1), { state: 'connected', recovered: true });
    assert.equal(a.recovered, true);
    assert.equal(a.socketId, id0, 'the same socket id');
    assert.equal(sub.id, subId0, 'the same subscription id');
    assert.deepEqual(a.socketClient.channels, [ch]);
    await until(() => onCh.length === 6 && viaSub.length === 3 && direct.length === 2 && presence.some(([p]) => p.member.socketId === c.socketId),
      () => `missed deliveries (channel ${onCh.length}/6, subscription ${viaSub.length}/3, direct ${direct.length}/2, presence ${presence.length})`);
    assert.deepEqual(out.filter((e) => e === 'join' || e === 'subscribe'), [], 'nothing rejoined or re-subscribed');
    for (const args of [...onCh, ...viaSub, ...direct, ...presence, ...all]) assert.equal(args.length, 1, `handlers get the payload only: ${JSON.stringify(args)}`);
    assert.deepEqual(onCh.map(([e]) => e.data.i), [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(viaSub.map(([e]) => [e.data.i, e.subscriptionId]), [[0, subId0], [1, subId0], [2, subId0]]);
    assert.deepEqual(direct.map(([e]) => [e.data.i, e.to]), [[0, id0], [1, id0]]);
    // still live afterwards
    await b.socketClient.publish(`${prefix}:y`, 'score', { i: 3 });
    await until(() => viaSub.length === 4, 'the subscription delivers after the recovery');
    await sleep(100);
    assert.equal(onCh.length, 6, 'each channel delivery once');
    assert.deepEqual(a.errors.filter((e) => e.code !== 'connect_error'), []);
  });

  it('drops a delivery that arrives twice (same id, same subscription), within a bounded memory', async () => {
    const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a') }) });
    const ch = uniq();
    await a.socketClient.joinChannel(ch);
    const onCh = [];
    const viaSub = [];
    a.socketClient.onChannel(ch, (e) => onCh.push(e));
    const sub = await a.socketClient.subscribe(ch, (e) => viaSub.push(e));
    const all = [];
    a.on('event', (e) => all.push(e));
    const pub = await a.socketClient.publish(ch, 'message', { i: 1 });
    await until(() => onCh.length === 1 && viaSub.length === 1, 'the membership and the subscription delivery: same id, both delivered');
    assert.equal(onCh[0].id, pub.id);
    assert.equal(viaSub[0].id, pub.id);
    assert.equal(viaSub[0].subscriptionId, sub.id);
    // As a recovered socket may get them again: through socket.io-client's own listener, with an offset.
    const listeners = a.socket.listeners('event');
    assert.equal(listeners.length, 1);
    const deliver = (e) => listeners[0](e, e.id);
    deliver(onCh[0]);
    deliver(viaSub[0]);
    assert.equal(onCh.length, 1, 'the membership copy is not delivered twice');
    assert.equal(viaSub.length, 1, 'the subscription copy is not delivered twice');
    assert.equal(all.length, 2);
    // another id passes; the memory of ids is bounded: long after, an id is new again
    deliver({ ...onCh[0], id: `${pub.id}-other` });
    assert.equal(onCh.length, 2);
    for (let k = 0; k < 5000; k += 1) deliver({ ...onCh[0], id: `filler-${k}` });
    assert.equal(onCh.length, 5002);
    deliver(onCh[0]);
    assert.equal(onCh.length, 5003, 'recent ids only');
  });

  it('unsubscribe and leaveChannel while offline take effect on the recovered socket', { timeout: 60000 }, async () => {
    proxy = await startProxy(srv.port);
    const a = realtimeFor(proxy.url, { token: mint({ sub: uniqUser('a') }), transports: ['websocket'] });
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    const stay = uniq();
    const go = uniq();
    const topic = uniq('topic');
    await a.socketClient.joinChannel(stay);
    await a.socketClient.joinChannel(go);
    const viaSub = [];
    const sub = await a.socketClient.subscribe(topic, (e) => viaSub.push(e));
    const subId0 = sub.id;
    const all = [];
    a.on('event', (e) => all.push(e));
    const out = [];
    a.socket.onAnyOutgoing((event, arg) => out.push([event, arg]));
    await b.ready();
    await b.socketClient.publish(stay, 'message', 'offset');
    await until(() => all.length === 1, 'an offset');

    await cut(a);
    assert.deepEqual(await sub.unsubscribe(), { ok: true }, 'unsubscribing offline resolves');
    const left = a.socketClient.leaveChannel(go);
    assert.deepEqual(a.socketClient.channels, [stay]);
    proxy.resume();
    await waitState(a, 'connected', 30000);
    assert.equal(a.connections.at(-1).recovered, true);
    assert.deepEqual(await left, { ok: true, channel: go });
    await until(() => out.some(([e, arg]) => e === 'unsubscribe' && arg.subscriptionId === subId0), 'the old subscription dropped on the server');
    await sleep(200); // the unsubscribe is not awaited by anyone: let it land
    assert.ok(!(await b.socketClient.members(go)).members.some((m) => m.socketId === a.socketId), 'left');
    await b.socketClient.publish(topic, 'x', 1);
    await b.socketClient.publish(go, 'x', 2);
    await b.socketClient.publish(stay, 'message', 'marker');
    await until(() => all.some((e) => e.data === 'marker'), 'the marker');
    await sleep(200);
    assert.deepEqual(viaSub, []);
    assert.deepEqual(all.filter((e) => e.event === 'x'), [], 'nothing from the dropped subscription or the left channel');
  });

  it('recover: false — every reconnect is a new socket: rejoined and re-subscribed, recovered false', { timeout: 60000 }, async () => {
    proxy = await startProxy(srv.port);
    const a = realtimeFor(proxy.url, { token: mint({ sub: uniqUser('a') }), transports: ['websocket'], recover: false });
    const b = realtimeFor(srv.url, { token: mint({ sub: uniqUser('b') }) });
    const ch = uniq();
    const topic = uniq('topic');
    await a.socketClient.joinChannel(ch);
    const viaSub = [];
    const sub = await a.socketClient.subscribe(topic, (e) => viaSub.push(e));
    assert.equal(a.socket._pid, undefined, 'the gateway gave no pid');
    assert.deepEqual(a.connections.at(-1), { state: 'connected', recovered: false });
    const id0 = a.socketId;
    const subId0 = sub.id;
    const out = [];
    a.socket.onAnyOutgoing((event) => out.push(event));
    await cut(a);
    proxy.resume();
    await waitState(a, 'connected', 30000);
    assert.deepEqual(a.connections.at(-1), { state: 'connected', recovered: false });
    assert.equal(a.recovered, false);
    assert.notEqual(a.socketId, id0);
    assert.notEqual(sub.id, subId0);
    assert.deepEqual(out.filter((e) => e === 'join' || e === 'subscribe').sort(), ['join', 'subscribe']);
    await b.ready();
    assert.ok((await b.socketClient.members(ch)).members.some((m) => m.socketId === a.socketId), 'rejoined');
    await b.socketClient.publish(topic, 'x', 1);
    await until(() => viaSub.length === 1, 're-subscribed');
    assert.equal(viaSub[0].subscriptionId, sub.id);
  });

  it('history(channel, { limit, since }) answers the channel\'s recent events', async () => {
    const a = realtimeFor(srv.url, { token: mint({ sub: uniqUser('a') }) });
    const ch = uniq();
    const ids = [];
    for (let i = 0; i < 4; i += 1) ids.push((await a.socketClient.publish(ch, 'message', { i })).id);
    const h = await a.socketClient.history(ch);
    assert.equal(h.ok, true);
    assert.equal(h.channel, ch);
    assert.deepEqual(h.events.map((e) => e.id), ids);
    assert.deepEqual(h.events.map((e) => e.data.i), [0, 1, 2, 3]);
    assert.equal(h.offset, ids[3]);
    assert.deepEqual((await a.socketClient.history(ch, { limit: 2 })).events.map((e) => e.id), ids.slice(2));
    assert.deepEqual((await a.socketClient.history(ch, { since: ids[0] })).events.map((e) => e.id), ids.slice(1));
    assert.deepEqual((await a.socketClient.history(ch, { since: h.offset })).events, []);
    await rejectsWith(a.socketClient.history(42), 'bad_request');
    await rejectsWith(a.socketClient.history(''), 'invalid_channel');
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
