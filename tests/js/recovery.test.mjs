// Connection state recovery (docs/protocol.md, "Recovery"): real socket.io-client sockets behind
// a TCP proxy that cuts their connections abruptly (an RST, no close frame, no DISCONNECT), against
// the real gateway. A socket that reconnects within the window gets its id, memberships and
// subscriptions back and every missed event and presence exactly once, in order, before anything
// newer; presence does not flap within the grace; recovery that cannot be complete is a new socket;
// `recover: false` and `--recovery-window 0` leave the wire exactly as without recovery. With Redis,
// a socket recovers on another instance, also after its own was SIGKILLed (needs a Redis at
// REDIS_URL, default redis://127.0.0.1:6379). One file for the whole feature (hence its length):
// its suites share the proxy, the tapes and the cluster helpers.
//
// Two shards by default: a reconnect lands on either shard (SO_REUSEPORT picks one per TCP
// connection), so the tests that reconnect several sockets at once take both the same-shard and
// the other-shard path.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  startServer, connect, ack, mint, uniq, uniqUser, until, sleep, closeAll, checkEvent, ARRIVE_MS,
  REDIS_URL, redisCmd, dropRedisKeys,
} from './fixture.mjs';
import { rawClient } from './raw.mjs';
import { startProxy } from './proxy.mjs';
import { startRedisCluster } from './redis_cluster.mjs';

const GRACE = 2000;
// Fast, fixed backoff so a resumed proxy is noticed within half a second.
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 400, randomizationFactor: 0 };

// ---------------------------------------------------------------------------------------------
// helpers

const proxies = new Set();
async function proxyFor(srv) {
  const p = await startProxy(srv.port);
  proxies.add(p);
  return p;
}
async function closeProxies() {
  // Let the clients' DISCONNECT through first: cut before it, a socket would be kept recoverable.
  if (proxies.size) await sleep(100);
  await Promise.all([...proxies].map((p) => p.close()));
  proxies.clear();
}

/** A reconnecting websocket socket.io-client socket that reaches srv through proxy. */
function connectVia(srv, proxy, opts = {}) {
  return connect(srv, { url: proxy.url, transports: ['websocket'], ...RECONNECT, ...opts });
}

/**
 * Everything a socket receives, in arrival order: { kind: 'event'|'presence', v, rest } where
 * rest holds the arguments after the payload (the offset).
 */
function tape(socket) {
  const log = [];
  socket.on('event', (v, ...rest) => log.push({ kind: 'event', v, rest }));
  socket.on('presence', (v, ...rest) => log.push({ kind: 'presence', v, rest }));
  return {
    log,
    events: () => log.filter((x) => x.kind === 'event').map((x) => x.v),
    presence: () => log.filter((x) => x.kind === 'presence').map((x) => x.v),
    mark: () => log.length,
  };
}

/** A delivery's identity: the event id, and the subscription it came through (or the membership/direct). */
const keyOf = (e) => `${e.id}|${e.subscriptionId ?? '-'}`;

/** Resolves on the socket's next `connect` with { id, recovered, pid, at } read at that moment. */
function nextConnect(socket, timeout = 30000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { socket.off('connect', on); reject(new Error('timed out waiting for the reconnect')); }, timeout);
    const on = () => { clearTimeout(t); resolve({ id: socket.id, recovered: socket.recovered, pid: socket._pid, at: Date.now() }); };
    socket.once('connect', on);
  });
}

/** Cuts every connection of the proxy and keeps new ones out until resume(). */
async function cut(proxy, sockets) {
  proxy.pause();
  proxy.cutAll();
  await until(() => sockets.every((s) => !s.connected), 'the clients see their connection cut');
}

const publish = (s, channel, event, data) => ack(s, 'publish', { channel, event, data });
const direct = (s, to, event, data) => ack(s, 'direct', { to, event, data });
const okAll = (acks, what) => {
  for (const a of acks) assert.equal(a.ok, true, `${what}: ${JSON.stringify(a)}`);
  return acks;
};

/** Every delivery exactly once: throws listing the duplicates. */
function assertOnce(events, what) {
  const seen = new Map();
  for (const e of events) seen.set(keyOf(e), (seen.get(keyOf(e)) ?? 0) + 1);
  const dupes = [...seen].filter(([, n]) => n > 1);
  assert.deepEqual(dupes, [], `${what}: deliveries received more than once`);
  return seen;
}

/** Each stream (one sender, one channel or direct target, one subscription) in sending order. */
function assertStreamsInOrder(events, what) {
  const streams = new Map();
  for (const e of events) {
    if (!e.data || typeof e.data.i !== 'number') continue;
    const k = `${e.from ? e.from.socketId : 'rest'}|${e.channel ?? `to:${e.to}`}|${e.subscriptionId ?? '-'}`;
    if (!streams.has(k)) streams.set(k, []);
    streams.get(k).push(e.data.i);
  }
  for (const [k, seq] of streams) {
    for (let j = 1; j < seq.length; j += 1) assert.ok(seq[j - 1] < seq[j], `${what}: stream ${k} out of order: ${seq.join(',')}`);
  }
  return streams;
}

/** The offset argument: exactly one extra argument, a string (an event's is its id). */
function assertOffsets(t, what) {
  for (const x of t.log) {
    assert.equal(x.rest.length, 1, `${what}: ${x.kind} ${JSON.stringify(x.v)} carries ${x.rest.length} extra arguments`);
    assert.equal(typeof x.rest[0], 'string', `${what}: the offset of ${JSON.stringify(x.v)} is a string`);
    if (x.kind === 'event') assert.equal(x.rest[0], x.v.id, `${what}: an event's offset is its id`);
  }
}

const presenceOf = (list, type, sid) => list.filter((p) => p.type === type && p.member && p.member.socketId === sid);
const memberIds = async (s, ch) => {
  const r = await ack(s, 'members', ch);
  assert.equal(r.ok, true, JSON.stringify(r));
  return r.members.map((m) => m.socketId);
};

// ---------------------------------------------------------------------------------------------

describe(`recovery [shards=2 websocket, --presence-grace ${GRACE}]`, () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--presence-grace', String(GRACE)] });
  });
  after(async () => { await closeProxies(); await srv?.stop(); });
  afterEach(async () => { closeAll(srv); await closeProxies(); });

  it('a CONNECT is answered with a pid; events and presence carry an offset, acks and errors do not', async () => {
    const a = await rawClient(srv, null, { connectNsp: false });
    a.ws.send(`40${JSON.stringify({ token: mint() })}`);
    const conn = JSON.parse((await a.next((m) => m.startsWith('40'))).slice(2));
    assert.deepEqual(Object.keys(conn).sort(), ['pid', 'sid'], JSON.stringify(conn));
    assert.equal(typeof conn.pid, 'string');
    assert.ok(conn.pid.length >= 22, `a pid holds at least 128 random bits: ${conn.pid}`);
    assert.notEqual(conn.pid, conn.sid);
    a.sid = conn.sid;
    const ch = uniq('wire');
    const j = await a.emitAck('join', ch);
    assert.equal(j.ok, true);
    const pres = JSON.parse((await a.next((m) => m.startsWith('42["presence"'))).slice(2));
    assert.equal(pres.length, 3, JSON.stringify(pres));
    assert.equal(typeof pres[2], 'string');
    // an ack has its single argument only
    const ackId = 77;
    a.ws.send(`42${ackId}${JSON.stringify(['publish', { channel: ch, event: 'm', data: 1 }])}`);
    const ackFrame = JSON.parse((await a.next((m) => m.startsWith(`43${ackId}[`))).slice(2 + String(ackId).length));
    assert.equal(ackFrame.length, 1, JSON.stringify(ackFrame));
    const ev = JSON.parse((await a.next((m) => m.startsWith('42["event"'))).slice(2));
    assert.equal(ev.length, 3, JSON.stringify(ev));
    assert.equal(ev[2], ev[1].id, 'an event\'s offset is its id');
    assert.equal(ev[2], ackFrame[0].id);
    // a failed event without an ack: the `error` event has no offset
    a.ws.send(`42${JSON.stringify(['join', ''])}`);
    const err = JSON.parse((await a.next((m) => m.startsWith('42["error"'))).slice(2));
    assert.equal(err.length, 2, JSON.stringify(err));
    assert.equal(err[1].code, 'invalid_channel');
    // a direct message carries one too
    const d = await a.emitAck('direct', { to: a.sid, event: 'self', data: null });
    const dm = JSON.parse((await a.next((m) => m.startsWith('42["event"') && m.includes(d.id))).slice(2));
    assert.equal(dm.length, 3);
    assert.equal(dm[2], d.id);
    a.ws.close();
  });

  it('(1) a member with a prefix subscription, cut while 200 events are published, gets each exactly once, in order, before anything newer', { timeout: 120000 }, async () => {
    const proxy = await proxyFor(srv);
    const prefix = uniq('rec');
    const C = `${prefix}:room`; // also matched by the subscription: two deliveries per event
    const [A, B, Cc] = ['a', 'b', 'c'].map((x) => `${prefix}:${x}`);
    const r = await connectVia(srv, proxy, { sub: uniqUser('recoverer') });
    const pubA = await connect(srv);
    const pubB = await connect(srv);
    const pubD = await connect(srv);
    const joiner = await connect(srv);
    const t = tape(r);
    assert.equal((await ack(r, 'join', C)).ok, true);
    const sub = await ack(r, 'subscribe', { topic: `${prefix}:*` });
    assert.equal(sub.ok, true);
    const warm = await publish(pubA, C, 'warm', { i: -1 });
    await until(() => t.events().length === 2, 'the warm-up event, twice (membership and subscription)');
    const id0 = r.id;
    const pid0 = r._pid;
    assert.equal(typeof pid0, 'string', 'the gateway gave a pid');
    assert.equal(r._lastOffset, warm.id, 'socket.io-client keeps the last offset');

    await cut(proxy, [r]);
    const cutAt = Date.now();

    // 200 events while it is away: 60 to C (two publishers), 100 to other channels under the
    // prefix, 40 direct messages; and a member joins C. Each publisher fires without waiting.
    const plan = [];
    for (let i = 0; i < 50; i += 1) plan.push(publish(pubA, C, 'm', { i })); // acks 0..49
    for (let i = 0; i < 40; i += 1) plan.push(publish(pubA, A, 'm', { i })); // 50..89
    for (let i = 0; i < 30; i += 1) plan.push(publish(pubB, B, 'm', { i })); // 90..119
    for (let i = 0; i < 10; i += 1) plan.push(publish(pubB, C, 'm', { i })); // 120..129
    for (let i = 0; i < 30; i += 1) plan.push(publish(pubB, Cc, 'm', { i })); // 130..159
    for (let i = 0; i < 40; i += 1) plan.push(direct(pubD, id0, 'dm', { i })); // 160..199
    assert.equal(plan.length, 200);
    const joined = ack(joiner, 'join', C);
    const acks = okAll(await Promise.all(plan), 'published while the socket is away');
    assert.equal((await joined).ok, true);
    const during = new Set(acks.map((a) => a.id));

    // pubA goes on publishing to C while the socket comes back, and after.
    const reconnected = nextConnect(r);
    let back = null;
    reconnected.then((c) => { back = c; }, () => {});
    proxy.resume();
    const live = [];
    for (let i = 50, after = 0; after < 10; i += 1) {
      if (back === null && live.length >= 25) await reconnected; // stay well within the history
      const wasBack = back !== null;
      live.push({ ack: await publish(pubA, C, 'm', { i }), afterConnect: wasBack });
      if (wasBack) after += 1;
      await sleep(20);
    }
    const c = await reconnected;
    assert.equal(c.recovered, true, 'socket.recovered');
    assert.equal(c.id, id0, 'the same socket id');
    assert.ok(c.at - cutAt < 60000);
    // newer than all of it: published once it is back
    const newer = okAll(await Promise.all([
      publish(pubB, B, 'newer', { i: 1000 }),
      direct(pubD, id0, 'newer', { i: 1000 }),
    ]), 'published after the reconnect');
    okAll(live.map((x) => x.ack), 'live');

    // what it must hold: every membership delivery on C, every subscription delivery under the
    // prefix, every direct message, and the joiner's presence
    const want = new Set();
    const cIds = [warm.id, ...acks.filter((_, k) => k < 50 || (k >= 120 && k < 130)).map((a) => a.id), ...live.map((x) => x.ack.id)];
    for (const id of cIds) { want.add(`${id}|-`); want.add(`${id}|${sub.subscriptionId}`); }
    for (const a of acks.slice(50, 90)) want.add(`${a.id}|${sub.subscriptionId}`); // A
    for (const a of acks.slice(90, 120)) want.add(`${a.id}|${sub.subscriptionId}`); // B
    for (const a of acks.slice(130, 160)) want.add(`${a.id}|${sub.subscriptionId}`); // Cc
    for (const a of acks.slice(160, 200)) want.add(`${a.id}|-`); // direct
    want.add(`${newer[0].id}|${sub.subscriptionId}`);
    want.add(`${newer[1].id}|-`);
    await until(() => t.events().length >= want.size && presenceOf(t.presence(), 'join', joiner.id).length >= 1,
      () => `all ${want.size} deliveries; got ${t.events().length}`, 30000);
    await sleep(300); // anything extra would show up now

    const evs = t.events();
    const seen = assertOnce(evs, 'recovered socket');
    const missing = [...want].filter((k) => !seen.has(k));
    assert.deepEqual(missing, [], `missing deliveries (${missing.length} of ${want.size})`);
    const extra = [...seen.keys()].filter((k) => !want.has(k));
    assert.deepEqual(extra, [], 'unexpected deliveries');
    assert.equal(evs.length, want.size);
    assertStreamsInOrder(evs, 'recovered socket');
    // pubA's C stream is one sequence across the cut and the reconnect: -1, 0..49, 50.. (live)
    const aOnC = evs.filter((e) => e.channel === C && e.from.socketId === pubA.id && e.subscriptionId === undefined).map((e) => e.data.i);
    assert.deepEqual(aOnC, [-1, ...Array.from({ length: 50 + live.length }, (_, k) => k)]);
    // the missed ones (and the joiner's presence) come before anything newer
    const pos = (pred) => t.log.findIndex(pred);
    const lastMissed = Math.max(
      ...t.log.map((x, k) => (x.kind === 'event' && during.has(x.v.id) ? k : -1)),
      pos((x) => x.kind === 'presence' && x.v.type === 'join' && x.v.member.socketId === joiner.id),
    );
    for (const n of newer) {
      const k = pos((x) => x.kind === 'event' && x.v.id === n.id);
      assert.ok(k > lastMissed, `an event published after the reconnect (at ${k}) came before a missed one (at ${lastMissed})`);
    }
    for (const x of live.filter((y) => y.afterConnect)) {
      const k = pos((y) => y.kind === 'event' && y.v.id === x.ack.id && y.v.subscriptionId === undefined);
      assert.ok(k > lastMissed, `a live event published after the reconnect (at ${k}) came before a missed one (at ${lastMissed})`);
    }
    assertOffsets(t, 'recovered socket');
    // shapes are those of any delivery
    checkEvent(evs.find((e) => e.to === id0 && e.data.i === 0), { channel: null, to: id0, event: 'dm', data: { i: 0 } });
    checkEvent(evs.find((e) => e.channel === B && e.data.i === 0), { channel: B, event: 'm', data: { i: 0 }, subscriptionId: sub.subscriptionId });
    checkEvent(evs.find((e) => e.channel === C && e.data.i === 0 && e.from.socketId === pubB.id && e.subscriptionId === undefined), { channel: C, event: 'm', data: { i: 0 } });
    assert.equal(presenceOf(t.presence(), 'join', joiner.id).length, 1, 'the joiner\'s presence, once');

    // still a member, subscription unchanged
    assert.deepEqual((await memberIds(pubA, C)).filter((x) => x === id0), [id0], 'listed once as a member');
    const later = await publish(pubA, Cc, 'later', { i: 2000 });
    await until(() => t.events().some((e) => e.id === later.id && e.subscriptionId === sub.subscriptionId), 'the subscription still delivers');
    assert.equal((await ack(r, 'unsubscribe', { subscriptionId: sub.subscriptionId })).ok, true, 'the subscription id is still this socket\'s');
  });

  it('(1b) eight sockets cut at once recover, twice, on whichever shard they land', { timeout: 120000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('multi');
    const topic = uniq('topic');
    const n = 8;
    const socks = [];
    for (let k = 0; k < n; k += 1) socks.push(await connectVia(srv, proxy));
    const tapes = socks.map(tape);
    const subs = [];
    for (const s of socks) {
      assert.equal((await ack(s, 'join', ch)).ok, true);
      const sb = await ack(s, 'subscribe', { topic });
      assert.equal(sb.ok, true);
      subs.push(sb.subscriptionId);
    }
    const ids = socks.map((s) => s.id);
    const pub = await connect(srv);
    const peer = await connect(srv);
    // everyone has an offset before the first cut
    const warm = await publish(pub, ch, 'warm', { i: -1 });
    await until(() => tapes.every((t) => t.events().some((e) => e.id === warm.id)), 'warm-up delivered');
    const wantPerSock = socks.map(() => new Set([`${warm.id}|-`]));
    let seq = 0;
    for (const round of [1, 2]) {
      await cut(proxy, socks);
      const acks = okAll(await Promise.all([
        ...Array.from({ length: 20 }, () => publish(pub, ch, 'm', { i: seq++ })),
        ...Array.from({ length: 10 }, () => publish(pub, topic, 't', { i: seq++ })),
      ]), `round ${round}`);
      const dms = okAll(await Promise.all(ids.map((id, k) => direct(peer, id, 'dm', { i: 100 * round + k }))), `round ${round} directs`);
      for (let k = 0; k < n; k += 1) {
        for (const a of acks.slice(0, 20)) wantPerSock[k].add(`${a.id}|-`);
        for (const a of acks.slice(20)) wantPerSock[k].add(`${a.id}|${subs[k]}`);
        wantPerSock[k].add(`${dms[k].id}|-`);
      }
      const back = socks.map((s) => nextConnect(s));
      proxy.resume();
      const cs = await Promise.all(back);
      cs.forEach((c, k) => {
        assert.equal(c.recovered, true, `round ${round}: socket ${k} recovered`);
        assert.equal(c.id, ids[k], `round ${round}: socket ${k} keeps its id`);
      });
      await until(() => tapes.every((t, k) => t.events().length >= wantPerSock[k].size),
        () => `round ${round}: deliveries ${tapes.map((t) => t.events().length)} of ${wantPerSock.map((w) => w.size)}`, 30000);
    }
    // after both rounds: routing by id and membership work wherever each socket now lives
    const finalDms = okAll(await Promise.all(ids.map((id, k) => direct(peer, id, 'after', { i: 1000 + k }))), 'directs after');
    const finalPub = await publish(pub, ch, 'after', { i: seq++ });
    for (let k = 0; k < n; k += 1) { wantPerSock[k].add(`${finalDms[k].id}|-`); wantPerSock[k].add(`${finalPub.id}|-`); }
    await until(() => tapes.every((t, k) => t.events().length >= wantPerSock[k].size), 'final deliveries', 30000);
    await sleep(300);
    tapes.forEach((t, k) => {
      const seen = assertOnce(t.events(), `socket ${k}`);
      assert.deepEqual([...wantPerSock[k]].filter((x) => !seen.has(x)), [], `socket ${k}: missing`);
      assert.deepEqual([...seen.keys()].filter((x) => !wantPerSock[k].has(x)), [], `socket ${k}: unexpected`);
      assertStreamsInOrder(t.events(), `socket ${k}`);
      assertOffsets(t, `socket ${k}`);
    });
    const members = await memberIds(pub, ch);
    assert.deepEqual(members.slice().sort(), ids.slice().sort(), 'each socket listed once');
  });

  it('a cut in the middle of a stream loses nothing: every event, in order; a repeat only of one received before the cut', { timeout: 90000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('stream');
    const socks = [];
    // eight, so that some come back on the other shard while the stream goes on
    for (let k = 0; k < 8; k += 1) socks.push(await connectVia(srv, proxy));
    const tapes = socks.map(tape);
    for (const s of socks) assert.equal((await ack(s, 'join', ch)).ok, true);
    const pub = await connect(srv);
    const n = 300;
    const ids = [];
    let cutAfter = null;
    const cutDone = (async () => {
      await until(() => ids.length >= 100, 'a third of the stream', 30000);
      proxy.pause();
      proxy.cutAll();
      cutAfter = tapes.map((t) => t.events().length);
      await sleep(300);
      proxy.resume();
    })();
    for (let i = 0; i < n; i += 1) {
      const r = await publish(pub, ch, 'm', { i });
      assert.equal(r.ok, true, JSON.stringify(r));
      ids.push(r.id);
      await sleep(2);
    }
    await cutDone;
    await until(() => socks.every((s) => s.connected), 'all back', 30000);
    assert.ok(socks.every((s) => s.recovered === true), 'all recovered');
    // a shortfall is reported below, with what is missing
    await until(() => tapes.every((t) => new Set(t.events().map((e) => e.id)).size >= n), 'every event', 15000).catch(() => {});
    await sleep(300);
    tapes.forEach((t, k) => {
      const evs = t.events();
      const got = new Set(evs.map((e) => e.data.i));
      const missing = Array.from({ length: n }, (_, i) => i).filter((i) => !got.has(i));
      assert.deepEqual(missing, [], `socket ${k} (cut after its ${cutAfter[k]}th event) lost events`);
      const firstSeen = new Map();
      evs.forEach((e, pos) => {
        if (!firstSeen.has(e.id)) { firstSeen.set(e.id, pos); return; }
        assert.ok(firstSeen.get(e.id) < cutAfter[k] && pos >= cutAfter[k], `socket ${k}: ${e.id} (i ${e.data.i}) repeated, but it was not received before the cut`);
      });
      const once = evs.filter((e, pos) => firstSeen.get(e.id) === pos);
      assert.deepEqual(once.map((e) => e.data.i), Array.from({ length: n }, (_, i) => i), `socket ${k}: every event, in order`);
      assertOffsets(t, `socket ${k}`);
    });
  });

  it('(1c) a socket that reconnects before receiving anything (pid, no offset) recovers and gets everything since it connected', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const topic = uniq('quiet');
    const r = await connectVia(srv, proxy);
    const t = tape(r);
    const sb = await ack(r, 'subscribe', { topic });
    assert.equal(sb.ok, true);
    const id0 = r.id;
    assert.equal(typeof r._pid, 'string', 'the gateway gave a pid');
    assert.equal(r._lastOffset, undefined, 'nothing received yet');
    const pub = await connect(srv);
    await cut(proxy, [r]);
    const acks = okAll(await Promise.all([
      ...Array.from({ length: 5 }, (_, i) => publish(pub, topic, 'm', { i })),
      direct(pub, id0, 'dm', { i: 0 }),
      direct(pub, id0, 'dm', { i: 1 }),
    ]), 'while away');
    const back = nextConnect(r);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true);
    assert.equal(c.id, id0);
    await until(() => t.events().length >= 7, () => `7 deliveries; got ${t.events().length}`);
    await sleep(200);
    const evs = t.events();
    assertOnce(evs, 'no-offset recovery');
    assert.deepEqual(evs.map((e) => e.id).sort(), acks.map((a) => a.id).sort());
    assert.deepEqual(evs.filter((e) => e.channel === topic).map((e) => e.data.i), [0, 1, 2, 3, 4]);
    assert.ok(evs.filter((e) => e.channel === topic).every((e) => e.subscriptionId === sb.subscriptionId));
    assert.deepEqual(evs.filter((e) => e.channel === null).map((e) => e.data.i), [0, 1]);
    assertOffsets(t, 'no-offset recovery');
  });

  it('a subscription made after the last event received: the first event it carries is replayed', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const first = uniq('first');
    const topic = uniq('topic');
    const r = await connectVia(srv, proxy);
    const t = tape(r);
    await ack(r, 'join', first);
    await until(() => t.presence().length === 1, 'an offset (its own join)');
    const id0 = r.id;
    // after the offset: a subscription (no presence: nothing is sent or logged for it)
    const sb = await ack(r, 'subscribe', { topic });
    assert.equal(sb.ok, true);
    const pub = await connect(srv);
    await cut(proxy, [r]);
    const e1 = await publish(pub, topic, 'm', { i: 0 });
    const e2 = await publish(pub, first, 'm', { i: 1 });
    const back = nextConnect(r);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true);
    assert.equal(c.id, id0);
    await until(() => t.events().length >= 2, () => `2 events; got ${JSON.stringify(t.events().map((e) => e.data))}`);
    assert.deepEqual(t.events().map(keyOf).sort(), [`${e1.id}|${sb.subscriptionId}`, `${e2.id}|-`].sort());
  });

  it('recovers with the default transports (polling, then the upgrade) too', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('poll');
    const r = await connectVia(srv, proxy, { transports: ['polling', 'websocket'] });
    const t = tape(r);
    assert.equal((await ack(r, 'join', ch)).ok, true);
    await until(() => r.io.engine && r.io.engine.transport.name === 'websocket', 'the upgrade to websocket');
    await until(() => t.presence().length === 1, 'its own join');
    const id0 = r.id;
    const pub = await connect(srv);
    await cut(proxy, [r]);
    const acks = okAll(await Promise.all(Array.from({ length: 10 }, (_, i) => publish(pub, ch, 'm', { i }))), 'while away');
    const back = nextConnect(r);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true);
    assert.equal(c.id, id0);
    await until(() => t.events().length >= 10, () => `10 events; got ${t.events().length}`);
    await sleep(200);
    assertOnce(t.events(), 'polling recovery');
    assert.deepEqual(t.events().map((e) => e.id), acks.map((a) => a.id));
    assertOffsets(t, 'polling recovery');
  });

  it('(2a) a cut shorter than the presence grace: no leave, no join, still listed meanwhile', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('grace');
    const o = await connect(srv);
    const m = await connectVia(srv, proxy);
    const to = tape(o);
    const tm = tape(m);
    await ack(o, 'join', ch);
    await ack(m, 'join', ch);
    await until(() => presenceOf(to.presence(), 'join', m.id).length === 1 && presenceOf(tm.presence(), 'join', m.id).length === 1, 'the joins');
    const mid = m.id;
    const oMark = to.mark();
    const mMark = tm.mark();
    await cut(proxy, [m]);
    const cutAt = Date.now();
    await sleep(300);
    assert.ok((await memberIds(o, ch)).includes(mid), 'still listed by members during the grace');
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.ok(c.at - cutAt < GRACE, `back within the grace (${c.at - cutAt} ms); the machine is too slow for this test otherwise`);
    assert.equal(c.recovered, true);
    assert.equal(c.id, mid);
    // well past the grace, then a marker
    await sleep(Math.max(0, cutAt + GRACE + 1000 - Date.now()));
    const x = await connect(srv);
    await ack(x, 'join', ch);
    await until(() => presenceOf(to.presence(), 'join', x.id).length === 1 && presenceOf(tm.presence(), 'join', x.id).length === 1, 'the marker join');
    const sinceO = to.log.slice(oMark).filter((y) => y.kind === 'presence').map((y) => `${y.v.type}:${y.v.member.socketId}`);
    const sinceM = tm.log.slice(mMark).filter((y) => y.kind === 'presence').map((y) => `${y.v.type}:${y.v.member.socketId}`);
    assert.deepEqual(sinceO, [`join:${x.id}`], 'the other member saw no leave/join for the short cut');
    assert.deepEqual(sinceM, [`join:${x.id}`], 'the recovered member saw no leave/join of its own');
    assert.deepEqual((await memberIds(o, ch)).filter((y) => y === mid), [mid]);
  });

  it('(2b) a cut longer than the grace: exactly one leave when the grace ends, one join on recovery', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('grace');
    const o = await connect(srv);
    const m = await connectVia(srv, proxy);
    const to = tape(o);
    const tm = tape(m);
    await ack(o, 'join', ch);
    await ack(m, 'join', ch);
    await until(() => presenceOf(to.presence(), 'join', m.id).length === 1, 'the join');
    const mid = m.id;
    const oMark = to.mark();
    await cut(proxy, [m]);
    const cutAt = Date.now();
    await until(() => presenceOf(to.presence(), 'leave', mid).length === 1, 'the leave after the grace', GRACE + ARRIVE_MS);
    const leftAfter = Date.now() - cutAt;
    assert.ok(leftAfter >= GRACE - 500, `the leave came ${leftAfter} ms after the cut, before the grace of ${GRACE} ms`);
    assert.ok(!(await memberIds(o, ch)).includes(mid), 'no longer listed after the grace');
    const mMark = tm.mark();
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true, 'still recoverable within the window');
    assert.equal(c.id, mid);
    const presenceSince = (t, mark) => t.log.slice(mark).filter((y) => y.kind === 'presence').map((y) => y.v);
    await until(() => presenceOf(presenceSince(to, oMark), 'join', mid).length === 1 && presenceOf(presenceSince(tm, mMark), 'join', mid).length === 1,
      'the join again, to the others and itself');
    const x = await connect(srv);
    await ack(x, 'join', ch);
    await until(() => presenceOf(to.presence(), 'join', x.id).length === 1 && presenceOf(tm.presence(), 'join', x.id).length === 1, 'the marker join');
    const sinceO = to.log.slice(oMark).filter((y) => y.kind === 'presence').map((y) => `${y.v.type}:${y.v.member.socketId}`);
    assert.deepEqual(sinceO, [`leave:${mid}`, `join:${mid}`, `join:${x.id}`]);
    const sinceM = tm.log.slice(mMark).filter((y) => y.kind === 'presence' && y.v.member.socketId === mid).map((y) => y.v.type);
    assert.deepEqual(sinceM, ['join'], 'the recovered member gets its own join, not its leave');
    assert.deepEqual((await memberIds(o, ch)).filter((y) => y === mid), [mid], 'listed again, once');
    const e = await publish(o, ch, 'm', { i: 0 });
    await until(() => tm.events().some((y) => y.id === e.id), 'a member again');
  });

  it('the token of a recovering socket is checked like any handshake: expired is refused, then a valid one recovers', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('expired');
    const user = uniqUser('exp');
    const m = await connectVia(srv, proxy, { sub: user });
    const tm = tape(m);
    await ack(m, 'join', ch);
    await until(() => tm.presence().length === 1, 'an offset');
    const id0 = m.id;
    const pub = await connect(srv);
    await cut(proxy, [m]);
    const e = await publish(pub, ch, 'm', { i: 0 });
    m.auth = { token: mint({ sub: user, exp: Math.floor(Date.now() / 1000) - 3600 }) };
    const refused = new Promise((resolve) => m.once('connect_error', resolve));
    proxy.resume();
    const err = await refused;
    assert.equal(err.message, 'unauthorized');
    assert.equal(err.data && err.data.reason, 'expired');
    // socket.io-client stops after a CONNECT_ERROR; connecting again sends the pid again
    m.auth = { token: mint({ sub: user }) };
    const back = nextConnect(m);
    m.connect();
    const c = await back;
    assert.equal(c.recovered, true, 'a refused attempt does not end the recoverable socket');
    assert.equal(c.id, id0);
    await until(() => tm.events().some((x) => x.id === e.id), 'the missed event');
  });

  it('(3) an unknown pid: a new socket, recovered false, no memberships', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('unknown');
    const o = await connect(srv);
    const m = await connectVia(srv, proxy);
    const tm = tape(m);
    await ack(m, 'join', ch);
    await ack(o, 'join', ch);
    const id0 = m.id;
    const pid0 = m._pid;
    await cut(proxy, [m]);
    const bogus = crypto.randomBytes(16).toString('base64url');
    m._pid = bogus; // what socket.io-client sends as `pid` with the next CONNECT
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, false);
    assert.notEqual(c.id, id0, 'a new socket id');
    assert.equal(typeof c.pid, 'string');
    assert.notEqual(c.pid, bogus);
    assert.notEqual(c.pid, pid0);
    await assertNotMember(o, m, tm, ch);
  });

  it('(3) another user\'s token with this pid: a new socket of that user, recovered false', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('thief');
    const o = await connect(srv);
    const victim = uniqUser('victim');
    const m = await connectVia(srv, proxy, { sub: victim });
    const tm = tape(m);
    await ack(m, 'join', ch);
    await ack(o, 'join', ch);
    const warm = await publish(o, ch, 'warm', { i: 0 });
    await until(() => tm.events().some((e) => e.id === warm.id), 'an offset');
    const id0 = m.id;
    await cut(proxy, [m]);
    await publish(o, ch, 'missed', { i: 1 });
    const other = uniqUser('other');
    m.auth = { token: mint({ sub: other }) }; // the pid and offset still go with it
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, false);
    assert.notEqual(c.id, id0);
    const members = (await ack(o, 'members', ch)).members;
    assert.ok(!members.some((x) => x.socketId === c.id), 'the new socket is no member');
    assert.ok(!members.some((x) => x.userId === other), 'no member of the other user');
    await assertNotMember(o, m, tm, ch);
  });

  it('/metrics: recoveries by result, frames replayed, sockets held', { timeout: 60000 }, async () => {
    const metrics = async () => (await fetch(`${srv.url}/metrics`)).text();
    const sum = (text, name, label = '') => [...text.matchAll(new RegExp(`^socket_gateway_${name}\\{[^}]*${label}[^}]*\\} (\\d+)`, 'gm'))]
      .reduce((n, m) => n + Number(m[1]), 0);
    const before = await metrics();
    const proxy = await proxyFor(srv);
    const ch = uniq('metrics');
    const user = uniqUser('metrics');
    const m = await connectVia(srv, proxy, { sub: user });
    const tm = tape(m);
    await ack(m, 'join', ch);
    await until(() => tm.presence().length === 1, 'an offset');
    const pub = await connect(srv);
    await cut(proxy, [m]);
    await until(async () => sum(await metrics(), 'recoverable_sockets') >= 1, 'the held socket is counted');
    okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(pub, ch, 'm', { i }))), 'while away');
    let back = nextConnect(m);
    proxy.resume();
    assert.equal((await back).recovered, true);
    await until(() => tm.events().length >= 3, 'the missed events');
    // then one refused for another user's token, and one for an unknown pid
    await cut(proxy, [m]);
    m.auth = { token: mint({ sub: uniqUser('other') }) };
    back = nextConnect(m);
    proxy.resume();
    assert.equal((await back).recovered, false);
    await cut(proxy, [m]);
    m._pid = `${m.id}.${'0'.repeat(31)}1`;
    back = nextConnect(m);
    proxy.resume();
    assert.equal((await back).recovered, false);
    const after = await metrics();
    const delta = (name, label) => sum(after, name, label) - sum(before, name, label);
    assert.equal(delta('recoveries_total', 'result="recovered"'), 1, 'one recovered');
    assert.equal(delta('recoveries_total', 'result="other_user"'), 1, 'one refused: another user');
    assert.equal(delta('recoveries_total', 'result="unknown_pid"'), 1, 'one refused: unknown pid');
    assert.equal(delta('recoveries_total'), 3, 'three attempts');
    assert.ok(delta('recovery_replayed_total') >= 3, `the three missed events were replayed: ${delta('recovery_replayed_total')}`);
  });
});

/**
 * The socket `m` (a new socket after a failed recovery) is no member of `ch`: not listed, and a
 * publish there does not reach it while a direct message sent afterwards does.
 */
async function assertNotMember(o, m, tm, ch) {
  assert.ok(!(await memberIds(o, ch)).includes(m.id), 'the new socket is no member');
  const mark = tm.mark();
  const e = await publish(o, ch, 'not-for-you', { i: 99 });
  const d = await direct(o, m.id, 'probe', null);
  await until(() => tm.events().some((x) => x.id === d.id), 'the probe');
  await sleep(200);
  const got = tm.log.slice(mark).filter((x) => x.kind === 'event').map((x) => x.v);
  assert.ok(!got.some((x) => x.id === e.id), 'a publish to the old channel does not reach the new socket');
  const replayed = tm.events().filter((x) => x.channel === ch && x.event !== 'warm');
  assert.deepEqual(replayed, [], 'nothing of the old socket\'s channel reaches the new socket');
}

describe('recovery: what is kept is bounded [--recovery-log-bytes 65536]', () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--recovery-log-bytes', '65536'] });
  });
  after(async () => { await closeProxies(); await srv?.stop(); });
  afterEach(async () => { closeAll(srv); await closeProxies(); });

  it('(3) the offset is no longer kept: a new socket, and none of its channels back (whole or nothing)', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const busy = uniq('busy');
    const calm = uniq('calm');
    const o = await connect(srv);
    const m = await connectVia(srv, proxy);
    const tm = tape(m);
    await ack(m, 'join', busy);
    await ack(m, 'join', calm);
    await ack(o, 'join', calm);
    const warm = await publish(o, busy, 'warm', { i: -1 });
    await until(() => tm.events().some((e) => e.id === warm.id), 'an offset');
    const id0 = m.id;
    await cut(proxy, [m]);
    // 150 events of 1 KiB on the busy channel: more than --history-size (100) and than the
    // 64 KiB the shard may keep, whichever bounds what is kept for the socket
    const pad = 'x'.repeat(1024);
    okAll(await Promise.all(Array.from({ length: 150 }, (_, i) => publish(o, busy, 'm', { i, pad }))), 'flood');
    okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(o, calm, 'm', { i }))), 'calm');
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, false, 'recovery is whole or not at all');
    assert.notEqual(c.id, id0);
    const mark = tm.mark();
    await sleep(300);
    assert.deepEqual(tm.log.slice(mark).filter((x) => x.kind === 'event').map((x) => x.v.id), [], 'nothing replayed to a new socket');
    await assertNotMember(o, m, tm, calm);
    assert.ok(!(await memberIds(o, busy)).includes(c.id));
  });
});

describe('recovery: the window [--recovery-window 1500 --presence-grace 500]', () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--recovery-window', '1500', '--presence-grace', '500'] });
  });
  after(async () => { await closeProxies(); await srv?.stop(); });
  afterEach(async () => { closeAll(srv); await closeProxies(); });

  it('(3) reconnecting after the window is a new socket; the old one is gone', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('late');
    const o = await connect(srv);
    const m = await connectVia(srv, proxy);
    const to = tape(o);
    const tm = tape(m);
    await ack(o, 'join', ch);
    await ack(m, 'join', ch);
    const sb = await ack(m, 'subscribe', { topic: ch });
    assert.equal(sb.ok, true);
    const warm = await publish(o, ch, 'warm', { i: 0 });
    await until(() => tm.events().filter((e) => e.id === warm.id).length === 2, 'an offset');
    const id0 = m.id;
    await cut(proxy, [m]);
    const cutAt = Date.now();
    await until(() => presenceOf(to.presence(), 'leave', id0).length === 1, 'the leave after the grace');
    await publish(o, ch, 'missed', { i: 1 });
    await sleep(Math.max(0, cutAt + 3000 - Date.now()));
    // a direct message to the old id is refused once the window is over
    let res;
    await until(async () => { res = await direct(o, id0, 'x', null); return res.ok === false; }, 'direct to the expired socket is refused', 10000);
    assert.equal(res.error.code, 'not_found');
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, false);
    assert.notEqual(c.id, id0);
    await assertNotMember(o, m, tm, ch); // nor through the subscription (topic ch)
  });

  it('a reconnect within the short window still recovers', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('quick');
    const o = await connect(srv);
    const m = await connectVia(srv, proxy);
    const tm = tape(m);
    await ack(m, 'join', ch);
    const id0 = m.id;
    await cut(proxy, [m]);
    const e = await publish(o, ch, 'm', { i: 0 });
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true);
    assert.equal(c.id, id0);
    await until(() => tm.events().some((x) => x.id === e.id), 'the missed event');
  });
});

describe('recovery: opting out and turning it off', () => {
  let srv;
  let off;
  before(async () => {
    [srv, off] = await Promise.all([
      startServer({ shards: 2 }),
      startServer({ shards: 2, extraArgs: ['--recovery-window', '0'] }),
    ]);
  });
  after(async () => { await closeProxies(); await srv?.stop(); await off?.stop(); });
  afterEach(async () => { closeAll(srv); closeAll(off); await closeProxies(); });

  /** A raw client's CONNECT with this auth payload; the frames of a join, a publish and a direct. */
  async function rawFrames(server, auth) {
    const a = await rawClient(server, null, { connectNsp: false });
    a.ws.send(`40${JSON.stringify(auth)}`);
    const conn = JSON.parse((await a.next((m) => m.startsWith('40'))).slice(2));
    const ch = uniq('optout');
    assert.equal((await a.emitAck('join', ch)).ok, true);
    const presence = JSON.parse((await a.next((m) => m.startsWith('42["presence"'))).slice(2));
    const p = await a.emitAck('publish', { channel: ch, event: 'm', data: { i: 1 } });
    const event = JSON.parse((await a.next((m) => m.startsWith('42["event"'))).slice(2));
    const d = await a.emitAck('direct', { to: conn.sid, event: 'dm', data: null });
    const dm = JSON.parse((await a.next((m) => m.startsWith('42["event"') && m.includes(d.id))).slice(2));
    a.ws.close();
    return { conn, presence, event, dm, p };
  }

  it('(4) `recover: false` in the CONNECT auth: no pid, frames exactly as without recovery', async () => {
    const f = await rawFrames(srv, { token: mint(), recover: false });
    assert.deepEqual(Object.keys(f.conn), ['sid'], `CONNECT answer ${JSON.stringify(f.conn)}`);
    assert.equal(f.presence.length, 2, JSON.stringify(f.presence));
    assert.equal(f.event.length, 2, JSON.stringify(f.event));
    assert.equal(f.event[1].id, f.p.id);
    assert.equal(f.dm.length, 2, JSON.stringify(f.dm));
  });

  it('(4) socket.io-client with `auth: {token, recover: false}`: handlers get one argument, a reconnect is a new socket', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('optout');
    const m = await connectVia(srv, proxy, { auth: { token: mint(), recover: false } });
    assert.equal(m._pid, undefined, 'no pid');
    const t = tape(m);
    await ack(m, 'join', ch);
    const o = await connect(srv);
    const e = await publish(o, ch, 'm', { i: 0 });
    await until(() => t.events().some((x) => x.id === e.id), 'the event');
    for (const x of t.log) assert.deepEqual(x.rest, [], `no extra argument on ${x.kind}`);
    const id0 = m.id;
    await cut(proxy, [m]);
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.ok(!c.recovered, 'not recovered');
    assert.notEqual(c.id, id0);
    assert.ok(!(await memberIds(o, ch)).includes(c.id));
  });

  it('--recovery-window 0: no pid, no offsets, a reconnect is a new socket', { timeout: 60000 }, async () => {
    const f = await rawFrames(off, { token: mint() });
    assert.deepEqual(Object.keys(f.conn), ['sid'], `CONNECT answer ${JSON.stringify(f.conn)}`);
    assert.equal(f.presence.length, 2, JSON.stringify(f.presence));
    assert.equal(f.event.length, 2, JSON.stringify(f.event));
    assert.equal(f.dm.length, 2, JSON.stringify(f.dm));
    const proxy = await proxyFor(off);
    const m = await connectVia(off, proxy);
    assert.equal(m._pid, undefined);
    const id0 = m.id;
    await cut(proxy, [m]);
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.ok(!c.recovered);
    assert.notEqual(c.id, id0);
  });
});

// ---------------------------------------------------------------------------------------------
// across instances: history and recoverable sockets live in Redis


/**
 * Recovery across instances, on `backend`: one Redis server or a Redis Cluster (history streams,
 * socket states and direct streams hash-tagged into their channel's or socket's slot).
 * backend: {title, start() → url, drop(url, prefix), stop()}.
 */
function acrossInstances(backend) {
describe(`recovery across instances (${backend.title}, --presence-grace ${GRACE})`, () => {
  const prefix = `trec${crypto.randomBytes(4).toString('hex')}`;
  const nodes = [];
  const startNode = async (name) => {
    const node = await startServer({
      shards: 2,
      // Pod-style ids: the pid (`<socket id>.<secret>`) of a socket whose instance id holds `-`
      // and `.` must still name the right instance.
      extraArgs: ['--redis-url', url, '--redis-prefix', prefix, '--instance-id', `gw-${name}-${crypto.randomBytes(3).toString('hex')}.prod`,
        '--heartbeat-interval', '500', '--instance-expiry', '3000', '--presence-grace', String(GRACE)],
    });
    nodes.push(node);
    return node;
  };
  let A;
  let B;
  let url;
  before(async () => {
    url = await backend.start();
    [A, B] = await Promise.all([startNode('a'), startNode('b')]);
  });
  after(async () => {
    await closeProxies();
    await Promise.all(nodes.map((n) => n.stop()));
    await backend.drop(url, prefix).catch((e) => console.log(`# could not remove the keys under ${prefix}: ${e.message}`));
    await backend.stop();
  });
  afterEach(async () => { for (const n of nodes) closeAll(n); await closeProxies(); });

  it('a socket cut from one instance recovers on another: same id, its channel and subscription, everything missed once and in order, no presence flap', { timeout: 90000 }, async () => {
    const proxy = await proxyFor(A);
    const ch = uniq('moving');
    const topic = uniq('moving');
    const m = await connectVia(A, proxy);
    const tm = tape(m);
    const oA = await connect(A);
    const oB = await connect(B);
    const toB = tape(oB);
    await ack(m, 'join', ch);
    const sb = await ack(m, 'subscribe', { topic });
    assert.equal(sb.ok, true);
    await ack(oB, 'join', ch);
    // m's own copy of oB's join too: it crosses instances, and had it come after `warm` its offset
    // would be m's last, and the recovery would give `warm` again (allowed, not what this tests).
    await until(() => presenceOf(toB.presence(), 'join', oB.id).length === 1
      && presenceOf(tm.presence(), 'join', oB.id).length === 1, 'the joins');
    const warm = await publish(oA, ch, 'warm', { i: -1 });
    await until(() => tm.events().some((e) => e.id === warm.id), 'an offset');
    const id0 = m.id;
    const markB = toB.mark();

    await cut(proxy, [m]);
    const acks = okAll(await Promise.all([
      ...Array.from({ length: 20 }, (_, i) => publish(oA, ch, 'm', { i })),
      ...Array.from({ length: 20 }, (_, i) => publish(oB, ch, 'm', { i })),
      ...Array.from({ length: 10 }, (_, i) => publish(oB, topic, 't', { i })),
      ...Array.from({ length: 10 }, (_, i) => direct(oB, id0, 'dm', { i })),
    ]), 'while away');
    proxy.retarget(B.port);
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true, 'recovered on the other instance');
    assert.equal(c.id, id0);
    const newer = await publish(oA, ch, 'newer', { i: 1000 });
    const want = new Set([`${warm.id}|-`, `${newer.id}|-`]);
    acks.slice(0, 40).forEach((a) => want.add(`${a.id}|-`));
    acks.slice(40, 50).forEach((a) => want.add(`${a.id}|${sb.subscriptionId}`));
    acks.slice(50).forEach((a) => want.add(`${a.id}|-`));
    await until(() => tm.events().length >= want.size, () => `deliveries ${tm.events().length} of ${want.size}`, 30000);
    await sleep(300);
    const evs = tm.events();
    const seen = assertOnce(evs, 'moved socket');
    assert.deepEqual([...want].filter((k) => !seen.has(k)), [], 'missing');
    assert.deepEqual([...seen.keys()].filter((k) => !want.has(k)), [], 'unexpected');
    assertStreamsInOrder(evs, 'moved socket');
    const k = evs.findIndex((e) => e.id === newer.id);
    assert.equal(k, evs.length - 1, 'the event published after the recovery comes last');
    assertOffsets(tm, 'moved socket');
    // no leave/join for a cut shorter than the grace, and listed once, cluster-wide
    const x = await connect(A);
    await ack(x, 'join', ch);
    await until(() => presenceOf(toB.presence(), 'join', x.id).length === 1, 'the marker join');
    assert.deepEqual(toB.log.slice(markB).filter((y) => y.kind === 'presence').map((y) => `${y.v.type}:${y.v.member.socketId}`), [`join:${x.id}`]);
    // its old instance lets it go: listed once, by every instance (given a moment to settle)
    for (const s of [oA, oB]) {
      let last;
      await until(async () => { last = (await memberIds(s, ch)).filter((y) => y === id0); return last.length === 1; },
        () => `listed once by members on ${s === oA ? 'A' : 'B'} (listed ${last.length} times)`, 10000);
    }
    // routed to its new instance now
    const d = await direct(oA, id0, 'after', null);
    assert.equal(d.ok, true);
    await until(() => tm.events().some((e) => e.id === d.id), 'a direct message reaches it on its new instance');
  });

  it('a socket whose instance was SIGKILLed recovers on another instance', { timeout: 90000 }, async () => {
    const K = await startNode('k');
    const proxy = await proxyFor(K);
    const ch = uniq('killed');
    const m = await connectVia(K, proxy);
    const tm = tape(m);
    const oB = await connect(B);
    await ack(m, 'join', ch);
    await ack(oB, 'join', ch);
    const warm = await publish(oB, ch, 'warm', { i: -1 });
    await until(() => tm.events().some((e) => e.id === warm.id), 'an offset');
    const id0 = m.id;
    proxy.pause();
    const gone = new Promise((r) => K.proc.once('exit', r));
    K.proc.kill('SIGKILL');
    await gone;
    await until(() => !m.connected, 'the client sees its instance die');
    const acks = okAll(await Promise.all(Array.from({ length: 10 }, (_, i) => publish(oB, ch, 'm', { i }))), 'while away');
    const dm = await direct(oB, id0, 'dm', { i: 0 });
    assert.equal(dm.ok, true, `direct to a socket of a killed instance, within the window: ${JSON.stringify(dm)}`);
    proxy.retarget(B.port);
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true, 'recovered on the surviving instance');
    assert.equal(c.id, id0);
    await until(() => tm.events().length >= 12, () => `deliveries ${tm.events().length} of 12`, 30000);
    await sleep(300);
    const evs = tm.events();
    assertOnce(evs, 'after SIGKILL');
    assert.deepEqual(evs.filter((e) => e.channel === ch).map((e) => e.id), [warm.id, ...acks.map((a) => a.id)]);
    assert.deepEqual(evs.filter((e) => e.channel === null).map((e) => e.id), [dm.id]);
    // the killed instance's member lists leave the views when it expires (--instance-expiry 3000)
    let last;
    await until(async () => { last = (await memberIds(oB, ch)).filter((y) => y === id0); return last.length === 1; },
      () => `listed once by members (listed ${last.length} times)`, 10000);
  });
});
}

acrossInstances({
  title: `Redis at ${REDIS_URL}`,
  async start() {
    try {
      assert.equal(await redisCmd(REDIS_URL, 'PING'), 'PONG');
    } catch (e) {
      throw new Error(`these tests need a running Redis (REDIS_URL=${REDIS_URL}): ${e.message}`);
    }
    return REDIS_URL;
  },
  drop: dropRedisKeys,
  stop: async () => {},
});

let redisCluster = null;
acrossInstances({
  title: 'a private Redis Cluster, 3 primaries + 3 replicas',
  start: async () => { redisCluster = await startRedisCluster(); return redisCluster.url; },
  drop: async () => {}, // private, stopped after
  stop: async () => redisCluster?.stop(),
});

describe('recovery across instances of a socket connected longer than the window [--recovery-window 3000]', () => {
  const prefix = `trecw${crypto.randomBytes(4).toString('hex')}`;
  const WINDOW = 3000;
  const nodes = [];
  const startNode = async (name) => {
    const node = await startServer({
      shards: 2,
      extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix, '--instance-id', `gw-${name}-${crypto.randomBytes(3).toString('hex')}`,
        '--heartbeat-interval', '500', '--instance-expiry', '3000', '--recovery-window', String(WINDOW), '--presence-grace', '500'],
    });
    nodes.push(node);
    return node;
  };
  let B;
  before(async () => { B = await startNode('b'); });
  after(async () => {
    await closeProxies();
    await Promise.all(nodes.map((n) => n.stop()));
    await dropRedisKeys(REDIS_URL, prefix).catch(() => {});
  });
  afterEach(async () => { for (const n of nodes) closeAll(n); await closeProxies(); });

  // Its state in Redis must outlive its last join, leave or subscribe while it is connected: a
  // socket idle for longer than the window whose instance is then killed still recovers.
  it('idle past the window, its instance SIGKILLed: recovers on another instance with what it missed', { timeout: 60000 }, async () => {
    const K = await startNode('k');
    const proxy = await proxyFor(K);
    const ch = uniq('idle');
    const m = await connectVia(K, proxy);
    const tm = tape(m);
    const oB = await connect(B);
    await ack(m, 'join', ch);
    await ack(oB, 'join', ch);
    const warm = await publish(oB, ch, 'warm', { i: -1 });
    await until(() => tm.events().some((e) => e.id === warm.id), 'an offset');
    const id0 = m.id;
    await sleep(WINDOW + 1500); // connected and idle: no checkpoint by join, leave or subscribe
    proxy.pause();
    const gone = new Promise((r) => K.proc.once('exit', r));
    K.proc.kill('SIGKILL');
    await gone;
    await until(() => !m.connected, 'the client sees its instance die');
    const acks = okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(oB, ch, 'm', { i }))), 'while away');
    const dm = await direct(oB, id0, 'dm', { i: 0 });
    assert.equal(dm.ok, true, `direct to a socket of a killed instance, within the window: ${JSON.stringify(dm)}`);
    proxy.retarget(B.port);
    const back = nextConnect(m);
    proxy.resume();
    const c = await back;
    assert.equal(c.recovered, true, 'recovered on the surviving instance');
    assert.equal(c.id, id0);
    await until(() => tm.events().length >= 5, () => `deliveries ${tm.events().length} of 5`, 10000);
    await sleep(300);
    const evs = tm.events();
    assertOnce(evs, 'after SIGKILL');
    assert.deepEqual(evs.filter((e) => e.channel === ch).map((e) => e.id), [warm.id, ...acks.map((a) => a.id)]);
    assert.deepEqual(evs.filter((e) => e.channel === null).map((e) => e.id), [dm.id]);
  });
});

// Whole or nothing across instances: what Redis cannot prove complete is refused, not replayed in
// part. A small --history-size so that `MAXLEN ~` trims for real (it drops whole stream nodes,
// 100 entries each by default, so only after a couple of hundred entries).
describe('recovery across instances: whole or nothing [--history-size 10]', () => {
  const prefix = `trecx${crypto.randomBytes(4).toString('hex')}`;
  const nodes = [];
  const startNode = async (name) => {
    const node = await startServer({
      shards: 2,
      extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix, '--instance-id', `gw-${name}-${crypto.randomBytes(3).toString('hex')}`,
        '--heartbeat-interval', '500', '--instance-expiry', '3000', '--presence-grace', String(GRACE), '--history-size', '10'],
    });
    nodes.push(node);
    return node;
  };
  let B;
  before(async () => { B = await startNode('b'); });
  after(async () => {
    await closeProxies();
    await Promise.all(nodes.map((n) => n.stop()));
    await dropRedisKeys(REDIS_URL, prefix).catch(() => {});
  });
  afterEach(async () => { for (const n of nodes) closeAll(n); await closeProxies(); });

  const metrics = async (srv) => (await fetch(`${srv.url}/metrics`)).text();
  const sum = (text, name, label = '') => [...text.matchAll(new RegExp(`^socket_gateway_${name}\\{[^}]*${label}[^}]*\\} (\\d+)`, 'gm'))]
    .reduce((n, m) => n + Number(m[1]), 0);

  /**
   * A socket `m` on a fresh instance K, a member of a channel (and `setup(m)` done), whose last
   * offset is the event `last(oB, ch, m.id)` sends from B (by default `warm`, published to the
   * channel); `then(m)` runs once it has that offset; then K is SIGKILLed and the client kept
   * away until reconnect().
   */
  async function awayFromKilled(setup = async () => {}, last = (oB, ch) => publish(oB, ch, 'warm', { i: -1 }), then = async () => {}) {
    const K = await startNode('k');
    const proxy = await proxyFor(K);
    const ch = uniq('whole');
    const m = await connectVia(K, proxy);
    const tm = tape(m);
    const oB = await connect(B);
    await ack(m, 'join', ch);
    await setup(m, K);
    await ack(oB, 'join', ch);
    await until(() => presenceOf(tm.presence(), 'join', oB.id).length === 1, 'the other member\'s join');
    const id0 = m.id;
    const warm = await last(oB, ch, id0, K);
    assert.equal(warm.ok, true, JSON.stringify(warm));
    await until(() => tm.events().some((e) => e.id === warm.id), 'an offset');
    await then(m);
    proxy.pause();
    const gone = new Promise((r) => K.proc.once('exit', r));
    K.proc.kill('SIGKILL');
    await gone;
    await until(() => !m.connected, 'the client sees its instance die');
    const reconnect = async () => {
      proxy.retarget(B.port);
      const back = nextConnect(m);
      proxy.resume();
      return back;
    };
    return { m, tm, oB, ch, id0, warm, reconnect };
  }

  it('a socket with a prefix subscription whose instance was SIGKILLed is a new socket on another instance', { timeout: 60000 }, async () => {
    const topic = uniq('wholepfx');
    let sub;
    const before0 = await metrics(B);
    const { m, tm, oB, ch, id0, reconnect } = await awayFromKilled(async (s) => {
      sub = await ack(s, 'subscribe', { topic: `${topic}:*` });
      assert.equal(sub.ok, true, JSON.stringify(sub));
    });
    // What the prefix matches meanwhile is in the stream of `<topic>:x`, which its state does not name.
    okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(oB, `${topic}:x`, 'p', { i }))), 'while away');
    okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(oB, ch, 'm', { i }))), 'while away');
    const c = await reconnect();
    assert.equal(c.recovered, false, 'not recovered: its prefix subscription cannot be replayed whole here');
    assert.notEqual(c.id, id0, 'a new socket');
    await assertNotMember(oB, m, tm, ch);
    assert.ok(!tm.events().some((e) => e.subscriptionId === sub.subscriptionId), 'nothing through the old prefix subscription');
    const after0 = await metrics(B);
    const delta = (name, label) => sum(after0, name, label) - sum(before0, name, label);
    assert.equal(delta('recoveries_total', 'result="prefix_subscription"'), 1, 'counted with its own reason');
    assert.equal(delta('recoveries_total', 'result="recovered"'), 0, 'not counted as recovered');
  });

  // The offset names an entry of a stream; on another instance that entry must still be there.
  const streamKey = (ch) => `${prefix}:h:{${ch}}`;
  /** The reconnect made a new socket: not recovered, another id, not back in `ch`. */
  async function assertNewSocket(c, { m, tm, oB, ch, id0 }, why) {
    assert.equal(c.recovered, false, why);
    assert.notEqual(c.id, id0);
    await assertNotMember(oB, m, tm, ch);
  }

  it('the offset\'s entry trimmed from its channel\'s stream (250 events past --history-size 10): a new socket', { timeout: 60000 }, async () => {
    const { m, tm, oB, ch, id0, reconnect } = await awayFromKilled();
    for (let b = 0; b < 5; b += 1) {
      okAll(await Promise.all(Array.from({ length: 50 }, (_, i) => publish(oB, ch, 'm', { i: b * 50 + i }))), 'while away');
    }
    // 253 entries went in (two joins, `warm`, 250 events): `MAXLEN ~` dropped at least its first node.
    const len = await redisCmd(REDIS_URL, 'XLEN', streamKey(ch));
    assert.ok(len < 200, `the stream was trimmed (XLEN ${len})`);
    await assertNewSocket(await reconnect(), { m, tm, oB, ch, id0 }, 'the offset is gone from the stream: not recovered');
  });

  it('the channel\'s stream deleted while the socket was away, then more published: a new socket, not a partial replay', { timeout: 60000 }, async () => {
    const { m, tm, oB, ch, id0, reconnect } = await awayFromKilled();
    okAll(await Promise.all(Array.from({ length: 2 }, (_, i) => publish(oB, ch, 'lost', { i }))), 'while away, then lost');
    assert.equal(await redisCmd(REDIS_URL, 'DEL', streamKey(ch)), 1, 'the stream deleted');
    okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(oB, ch, 'm', { i }))), 'while away');
    await assertNewSocket(await reconnect(), { m, tm, oB, ch, id0 }, 'the offset\'s entry is not in the stream: not recovered');
  });

  it('the channel\'s stream deleted and nothing published since: a new socket (the stream is gone, not empty)', { timeout: 60000 }, async () => {
    const { m, tm, oB, ch, id0, reconnect } = await awayFromKilled();
    assert.equal(await redisCmd(REDIS_URL, 'DEL', streamKey(ch)), 1, 'the stream deleted');
    await assertNewSocket(await reconnect(), { m, tm, oB, ch, id0 });
  });

  it('another channel\'s stream (not the offset\'s) deleted while the socket was away, then more published there: a new socket, not a partial replay', { timeout: 60000 }, async () => {
    const other = uniq('wholeother');
    const { m, tm, oB, ch, id0, reconnect } = await awayFromKilled(async (s) => {
      assert.equal((await ack(s, 'join', other)).ok, true);
      // A stream begun again within 100 ms of the join passes for the one the join began.
      await sleep(300);
    });
    // The offset (`warm`) is in `ch`'s stream, which is whole; `other` loses two events with its stream.
    okAll(await Promise.all(Array.from({ length: 2 }, (_, i) => publish(oB, other, 'lost', { i }))), 'while away, then lost');
    assert.equal(await redisCmd(REDIS_URL, 'DEL', streamKey(other)), 1, 'the other stream deleted');
    okAll(await Promise.all(Array.from({ length: 2 }, (_, i) => publish(oB, other, 'm', { i }))), 'while away');
    okAll(await Promise.all(Array.from({ length: 2 }, (_, i) => publish(oB, ch, 'm', { i }))), 'while away');
    await assertNewSocket(await reconnect(), { m, tm, oB, ch, id0 }, 'the other stream begins after the socket needs it: not recovered');
    assert.ok(!tm.events().some((e) => e.event === 'lost' || (e.channel === other && e.event === 'm')), 'nothing replayed from either channel');
  });

  it('another channel\'s stream deleted and nothing published there since: a new socket', { timeout: 60000 }, async () => {
    const other = uniq('wholeother');
    const { m, tm, oB, ch, id0, reconnect } = await awayFromKilled(async (s) => {
      assert.equal((await ack(s, 'join', other)).ok, true);
    });
    okAll(await Promise.all(Array.from({ length: 2 }, (_, i) => publish(oB, other, 'lost', { i }))), 'while away, then lost');
    assert.equal(await redisCmd(REDIS_URL, 'DEL', streamKey(other)), 1, 'the other stream deleted');
    await assertNewSocket(await reconnect(), { m, tm, oB, ch, id0 });
  });

  it('a subscription to a channel with no stream yet, made after the offset, recovers what was published there meanwhile (its stream was begun for it)', { timeout: 60000 }, async () => {
    const topic = uniq('wholefresh');
    let sub;
    const { tm, oB, ch, id0, warm, reconnect } = await awayFromKilled(undefined, undefined, async (s) => {
      // Nothing was ever published to `topic`, and a subscription announces no presence: only the
      // marker written for the subscription makes its stream reach back to where it is needed.
      assert.equal(await redisCmd(REDIS_URL, 'EXISTS', streamKey(topic)), 0, 'no stream before the subscription');
      sub = await ack(s, 'subscribe', { topic });
      assert.equal(sub.ok, true, JSON.stringify(sub));
      await until(async () => (await redisCmd(REDIS_URL, 'EXISTS', streamKey(topic))) === 1, 'the stream begun for the subscription');
    });
    const acks = okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(oB, topic, 'f', { i }))), 'while away');
    const c = await reconnect();
    assert.equal(c.recovered, true, 'recovered: the subscription\'s stream reaches back to when it was needed');
    assert.equal(c.id, id0);
    await until(() => tm.events().filter((e) => e.subscriptionId === sub.subscriptionId).length >= 3, () => `deliveries ${tm.events().length}`);
    await sleep(300);
    const evs = tm.events();
    assertOnce(evs, 'after SIGKILL');
    assert.deepEqual(evs.filter((e) => e.subscriptionId === sub.subscriptionId).map((e) => e.id), acks.map((a) => a.id));
    assert.deepEqual(evs.filter((e) => e.channel === ch).map((e) => e.id), [warm.id], 'its channel: the offset\'s event, once');
  });

  it('an offset kept in the socket\'s direct stream (a direct message from another instance) recovers', { timeout: 60000 }, async () => {
    const { tm, oB, ch, id0, warm: dm, reconnect } = await awayFromKilled(undefined, (o, _ch, to) => direct(o, to, 'dm', { i: 0 }));
    const acks = okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(oB, ch, 'm', { i }))), 'while away');
    const c = await reconnect();
    assert.equal(c.recovered, true, 'recovered: the offset is in its direct stream');
    assert.equal(c.id, id0);
    await until(() => tm.events().length >= 4, () => `deliveries ${tm.events().length} of 4`);
    await sleep(300);
    const evs = tm.events();
    assertOnce(evs, 'after SIGKILL');
    assert.deepEqual(evs.filter((e) => e.channel === ch).map((e) => e.id), acks.map((a) => a.id));
    assert.deepEqual(evs.filter((e) => e.channel === null).map((e) => e.id), [dm.id]);
  });

  it('an offset that never went through Redis (a direct between two sockets of the killed instance) recovers: its channel\'s stream reaches back before it', { timeout: 60000 }, async () => {
    const { tm, oB, ch, id0, warm: dm, reconnect } = await awayFromKilled(undefined, async (_o, _ch, to, K) => {
      const k2 = await connect(K);
      // The stream's entries (the joins) must be older than the offset by more than the two
      // seconds of clock slack the reading allows.
      await sleep(2300);
      return direct(k2, to, 'local', { i: 0 });
    });
    const acks = okAll(await Promise.all(Array.from({ length: 3 }, (_, i) => publish(oB, ch, 'm', { i }))), 'while away');
    const c = await reconnect();
    assert.equal(c.recovered, true, 'recovered: the channel\'s stream was kept all along');
    assert.equal(c.id, id0);
    await until(() => tm.events().filter((e) => e.channel === ch).length >= 3, () => `deliveries ${tm.events().length}`);
    await sleep(300);
    const evs = tm.events();
    assertOnce(evs, 'after SIGKILL');
    assert.deepEqual(evs.filter((e) => e.channel === ch).map((e) => e.id), acks.map((a) => a.id));
    assert.deepEqual(evs.filter((e) => e.channel === null).map((e) => e.id), [dm.id], 'the local direct once, before the cut');
  });
});

describe('recovery of a large channel\'s presence [--presence-max-members 3, --presence-interval 200]', () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--presence-max-members', '3', '--presence-interval', '200'] });
  });
  after(async () => { await closeProxies(); await srv?.stop(); });
  afterEach(async () => { closeAll(srv); await closeProxies(); });

  it('a recovered member is replayed the latest count only, not every count it missed', { timeout: 60000 }, async () => {
    const proxy = await proxyFor(srv);
    const ch = uniq('bigr');
    const m = await connectVia(srv, proxy);
    const o = await connect(srv);
    await ack(m, 'join', ch);
    await ack(o, 'join', ch);
    for (let i = 0; i < 2; i += 1) await ack(await connect(srv), 'join', ch);
    const tm = tape(m);
    const to = tape(o);
    await cut(proxy, [m]);
    const oMark = to.mark();
    // five more join, each in its own interval: five counts go out while m is away
    for (let i = 0; i < 5; i += 1) {
      await ack(await connect(srv), 'join', ch);
      await sleep(300);
    }
    await until(() => to.presence().some((p) => p.type === 'count' && p.count === 9), 'the other member sees 9');
    const sent = to.log.slice(oMark).filter((x) => x.kind === 'presence' && x.v.type === 'count');
    assert.ok(sent.length >= 3, `several counts went out meanwhile: ${sent.length}`);
    const mMark = tm.mark();
    const back = nextConnect(m);
    proxy.resume();
    assert.equal((await back).recovered, true);
    okAll([await publish(o, ch, 'after', { i: 1 })], 'publish');
    await until(() => tm.events().some((e) => e.event === 'after'), 'the event after the recovery');
    const got = tm.log.slice(mMark).filter((x) => x.kind === 'presence').map((x) => x.v);
    assert.deepEqual(got.map((p) => [p.type, p.count]), [['count', 9]], 'one count: the latest');
  });
});
