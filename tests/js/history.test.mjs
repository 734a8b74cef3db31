// Channel history (docs/protocol.md, "Recovery"): the `history` event and
// GET /api/socket/channels/:channel/history answer a channel's recent events, oldest first, with the
// offset of the newest; `limit` and `since` narrow it; a channel keeps its history with no members;
// it is bounded by --history-size and by the recovery window's age; bad arguments are bad_request.
// With Redis, a channel's history is the cluster's: the same answer on every instance (needs a
// Redis at REDIS_URL, default redis://127.0.0.1:6379).
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  startServer, connect, ack, mint, uniq, until, sleep, closeAll, checkEvent, isErr,
  REDIS_URL, redisCmd, dropRedisKeys,
} from './fixture.mjs';
import { rawClient } from './raw.mjs';

const API_KEY = 'history-test-api-key-0123456789';
const SIZE = 20;

async function rest(srv, path, { auth = API_KEY } = {}) {
  const headers = auth ? { Authorization: `Bearer ${auth}` } : {};
  const res = await fetch(srv.url + path, { headers });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, text, json };
}
const historyPath = (ch, q = '') => `/api/socket/channels/${encodeURIComponent(ch)}/history${q}`;

/** Publishes n events { i } to ch from s, one after the other; resolves with their ids. */
async function publishN(s, ch, n, from = 0, event = 'm') {
  const ids = [];
  for (let i = from; i < from + n; i += 1) {
    const r = await ack(s, 'publish', { channel: ch, event, data: { i } });
    assert.equal(r.ok, true, JSON.stringify(r));
    ids.push(r.id);
  }
  return ids;
}

function checkHistory(res, ch, wantIds) {
  assert.equal(res.ok, true, JSON.stringify(res));
  assert.deepEqual(Object.keys(res).sort(), ['channel', 'events', 'offset', 'ok'], JSON.stringify(res));
  assert.equal(res.channel, ch);
  assert.ok(Array.isArray(res.events));
  assert.deepEqual(res.events.map((e) => e.id), wantIds, 'the events, oldest first');
  for (const e of res.events) checkEvent(e, { channel: ch });
  if (wantIds.length) assert.equal(res.offset, wantIds[wantIds.length - 1], 'offset is the newest event\'s');
  return res;
}

describe(`history [shards=2, --history-size ${SIZE}]`, () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--history-size', String(SIZE), '--api-key', API_KEY] });
  });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('answers the channel\'s events oldest first, with the newest offset, on any shard and over REST', async () => {
    const ch = uniq('hist');
    const pub = await connect(srv);
    const ids = await publishN(pub, ch, 5);
    // several askers: the answer does not depend on the shard a socket lives on
    const askers = [];
    for (let k = 0; k < 4; k += 1) askers.push(await connect(srv));
    for (const a of askers) {
      const res = checkHistory(await ack(a, 'history', { channel: ch }), ch, ids);
      assert.deepEqual(res.events.map((e) => e.data.i), [0, 1, 2, 3, 4]);
      assert.equal(res.events[0].from.socketId, pub.id);
      assert.equal(res.events[0].event, 'm');
    }
    const viaEvent = await ack(askers[0], 'history', { channel: ch });
    const r = await rest(srv, historyPath(ch));
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, viaEvent, 'REST answers the same object');
  });

  it('limit: the newest N, still oldest first; since: only those after the offset', async () => {
    const ch = uniq('hist');
    const pub = await connect(srv);
    const ids = await publishN(pub, ch, 10);
    const a = await connect(srv);
    checkHistory(await ack(a, 'history', { channel: ch, limit: 3 }), ch, ids.slice(7));
    checkHistory(await ack(a, 'history', { channel: ch, limit: 100 }), ch, ids);
    checkHistory(await ack(a, 'history', { channel: ch, since: ids[6] }), ch, ids.slice(7));
    const top = (await ack(a, 'history', { channel: ch })).offset;
    assert.equal(typeof top, 'string');
    const none = await ack(a, 'history', { channel: ch, since: top });
    assert.equal(none.ok, true);
    assert.deepEqual(none.events, [], 'nothing after the newest offset');
    assert.equal(none.offset, top, 'the offset stays the newest');
    // catching up from an earlier answer's offset
    const more = await publishN(pub, ch, 2, 10);
    checkHistory(await ack(a, 'history', { channel: ch, since: top }), ch, more);
    // REST takes the same parameters
    const r1 = await rest(srv, historyPath(ch, '?limit=2'));
    assert.equal(r1.status, 200, r1.text);
    checkHistory(r1.json, ch, more);
    const r2 = await rest(srv, historyPath(ch, `?since=${encodeURIComponent(ids[8])}`));
    assert.equal(r2.status, 200, r2.text);
    checkHistory(r2.json, ch, [ids[9], ...more]);
    const r3 = await rest(srv, historyPath(ch, `?since=${encodeURIComponent(ids[4])}&limit=100`));
    checkHistory(r3.json, ch, [...ids.slice(5), ...more]);
  });

  it('a channel with no members keeps its history; REST broadcasts are in it', async () => {
    const ch = uniq('empty');
    const pub = await connect(srv);
    const ids = await publishN(pub, ch, 3);
    const b = await fetch(`${srv.url}/api/socket/broadcast`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel: ch, event: 'news', data: { i: 3 } }),
    });
    assert.equal(b.status, 202);
    const bid = (await b.json()).id;
    pub.close();
    const a = await connect(srv);
    const res = checkHistory(await ack(a, 'history', { channel: ch }), ch, [...ids, bid]);
    assert.equal(res.events[3].from, null, 'a REST broadcast has from null');
    assert.equal(res.events[3].event, 'news');
    // members come and go: the history stays
    await ack(a, 'join', ch);
    await ack(a, 'leave', ch);
    checkHistory(await ack(a, 'history', { channel: ch }), ch, [...ids, bid]);
  });

  it('a channel never published to has an empty history', async () => {
    const ch = uniq('never');
    const a = await connect(srv);
    const res = await ack(a, 'history', { channel: ch });
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.equal(res.channel, ch);
    assert.deepEqual(res.events, []);
    assert.equal(typeof res.offset, 'string', 'the offset is a string even with nothing kept');
    const r = await rest(srv, historyPath(ch));
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, res);
    // that offset, passed back later, gives what came after it
    const pub = await connect(srv);
    const ids = await publishN(pub, ch, 2);
    checkHistory(await ack(a, 'history', { channel: ch, since: res.offset }), ch, ids);
  });

  it(`keeps at most --history-size (${SIZE}) events per channel, the newest`, async () => {
    const ch = uniq('bounded');
    const other = uniq('bounded');
    const pub = await connect(srv);
    const ids = await publishN(pub, ch, SIZE + 10);
    const otherIds = await publishN(pub, other, 3);
    const a = await connect(srv);
    const res = checkHistory(await ack(a, 'history', { channel: ch }), ch, ids.slice(10));
    assert.deepEqual(res.events.map((e) => e.data.i), Array.from({ length: SIZE }, (_, k) => k + 10));
    checkHistory(await ack(a, 'history', { channel: other }), other, otherIds);
    const r = await rest(srv, historyPath(ch));
    checkHistory(r.json, ch, ids.slice(10));
  });

  it('keeps data exactly as sent', async () => {
    const ch = uniq('fidelity');
    const raw = await rawClient(srv, mint());
    const payload = '{"b":1.50,"a":12345678901234567890123,"s":"\\u00e9\\n"}';
    raw.ws.send(`421["publish",{"channel":${JSON.stringify(ch)},"event":"m","data":${payload}}]`);
    await raw.next((m) => m.startsWith('431['));
    const r = await rest(srv, historyPath(ch));
    assert.equal(r.status, 200, r.text);
    assert.ok(r.text.includes(`"data":${payload}`), `REST history relays data as sent: ${r.text}`);
    const ask = await rawClient(srv, mint());
    ask.ws.send(`427["history",{"channel":${JSON.stringify(ch)}}]`);
    const ans = await ask.next((m) => m.startsWith('437['));
    assert.ok(ans.includes(`"data":${payload}`), `history ack relays data as sent: ${ans}`);
    raw.ws.close();
    ask.ws.close();
  });

  it('is allowed like join: the channels claim limits it', async () => {
    const a = await connect(srv, { claims: { channels: ['chat:*'] } });
    const pub = await connect(srv);
    const allowed = `chat:${uniq('x')}`;
    const ids = await publishN(pub, allowed, 2);
    checkHistory(await ack(a, 'history', { channel: allowed }), allowed, ids);
    const denied = uniq('game');
    await publishN(pub, denied, 1);
    assert.ok(isErr(await ack(a, 'history', { channel: denied }), 'forbidden'));
  });

  it('bad arguments are bad_request (or invalid_channel for a bad name)', async () => {
    const a = await connect(srv);
    const ch = uniq('bad');
    for (const arg of [{}, { channel: 42 }, null, 42, [ch], { channel: ch, limit: 'x' }, { channel: ch, limit: -1 },
      { channel: ch, since: 42 }, { channel: ch, since: {} }]) {
      const res = await ack(a, 'history', arg);
      assert.ok(isErr(res, 'bad_request'), `history ${JSON.stringify(arg)}: ${JSON.stringify(res)}`);
    }
    for (const channel of ['', 'x'.repeat(201), 'a\u0000b']) {
      const res = await ack(a, 'history', { channel });
      assert.ok(isErr(res, 'invalid_channel'), `history ${JSON.stringify(channel)}: ${JSON.stringify(res)}`);
    }
    // the socket is still fine
    assert.equal((await ack(a, 'history', { channel: ch })).ok, true);
    // REST
    for (const q of ['?limit=x', '?limit=-1']) {
      const r = await rest(srv, historyPath(ch, q));
      assert.equal(r.status, 400, `${q}: ${r.text}`);
      assert.equal(r.json.error.code, 'bad_request', r.text);
    }
    const bad = await rest(srv, `/api/socket/channels/${encodeURIComponent('a\u0001b')}/history`);
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.json.error.code, 'invalid_channel');
    const noAuth = await rest(srv, historyPath(ch), { auth: null });
    assert.equal(noAuth.status, 401);
    const post = await fetch(srv.url + historyPath(ch), { method: 'POST', headers: { Authorization: `Bearer ${API_KEY}` } });
    assert.equal(post.status, 405);
  });

  it('without an ack, a failure is an error event', async () => {
    const a = await connect(srv);
    const got = new Promise((resolve) => a.once('error', (...args) => resolve(args)));
    a.emit('history', { channel: 42 });
    const args = await Promise.race([got, sleep(5000).then(() => null)]);
    assert.ok(args, 'an error event');
    assert.equal(args.length, 1, 'an error event carries no offset');
    assert.equal(args[0].code, 'bad_request');
  });
});

describe('history: bounded by the recovery window\'s age [--recovery-window 1000]', () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--recovery-window', '1000', '--presence-grace', '500', '--api-key', API_KEY] });
  });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('events older than the window are gone', { timeout: 30000 }, async () => {
    const ch = uniq('aging');
    const pub = await connect(srv);
    const old = await publishN(pub, ch, 3);
    const a = await connect(srv);
    checkHistory(await ack(a, 'history', { channel: ch }), ch, old);
    await sleep(2500);
    const fresh = await publishN(pub, ch, 2, 3);
    await until(async () => {
      const res = await ack(a, 'history', { channel: ch });
      return res.ok && res.events.length === 2;
    }, 'the old events age out', 10000);
    checkHistory(await ack(a, 'history', { channel: ch }), ch, fresh);
    const r = await rest(srv, historyPath(ch));
    checkHistory(r.json, ch, fresh);
  });
});

describe(`history across instances (Redis at ${REDIS_URL}, --history-size ${SIZE})`, () => {
  const prefix = `thist${crypto.randomBytes(4).toString('hex')}`;
  let A;
  let B;
  const node = (name) => startServer({
    shards: 2,
    extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix, '--instance-id', `${name}${crypto.randomBytes(3).toString('hex')}`,
      '--heartbeat-interval', '500', '--instance-expiry', '3000', '--history-size', String(SIZE), '--api-key', API_KEY],
  });
  before(async () => {
    try {
      assert.equal(await redisCmd(REDIS_URL, 'PING'), 'PONG');
    } catch (e) {
      throw new Error(`these tests need a running Redis (REDIS_URL=${REDIS_URL}): ${e.message}`);
    }
    [A, B] = await Promise.all([node('a'), node('b')]);
  });
  after(async () => {
    await Promise.all([A?.stop(), B?.stop()]);
    await dropRedisKeys(REDIS_URL, prefix).catch((e) => console.log(`# could not remove the keys under ${prefix}: ${e.message}`));
  });
  afterEach(() => { closeAll(A); closeAll(B); });

  it('every instance answers the same history: what all of them published, in publish order', async () => {
    const ch = uniq('shared');
    const pa = await connect(A);
    const pb = await connect(B);
    const ids = [];
    for (let i = 0; i < 6; i += 1) {
      const r = await ack(i % 2 ? pb : pa, 'publish', { channel: ch, event: 'm', data: { i } });
      assert.equal(r.ok, true, JSON.stringify(r));
      ids.push(r.id);
    }
    const b = await fetch(`${B.url}/api/socket/broadcast`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel: ch, event: 'news', data: { i: 6 } }),
    });
    assert.equal(b.status, 202);
    ids.push((await b.json()).id);
    const onA = checkHistory(await ack(pa, 'history', { channel: ch }), ch, ids);
    assert.deepEqual(onA.events.map((e) => e.data.i), [0, 1, 2, 3, 4, 5, 6]);
    assert.deepEqual(onA.events.map((e) => e.from && e.from.socketId), [pa.id, pb.id, pa.id, pb.id, pa.id, pb.id, null]);
    const onB = await ack(pb, 'history', { channel: ch });
    assert.deepEqual(onB, onA, 'the same answer on both instances');
    for (const srv of [A, B]) {
      const r = await rest(srv, historyPath(ch));
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, onA, 'REST answers the same on every instance');
    }
    checkHistory(await ack(pb, 'history', { channel: ch, limit: 2 }), ch, ids.slice(5));
    checkHistory(await ack(pa, 'history', { channel: ch, since: ids[3] }), ch, ids.slice(4));
  });

  it(`keeps the newest --history-size (${SIZE}) across instances`, async () => {
    const ch = uniq('bounded');
    const pa = await connect(A);
    const pb = await connect(B);
    const ids = [];
    for (let i = 0; i < SIZE + 5; i += 1) {
      const r = await ack(i % 2 ? pb : pa, 'publish', { channel: ch, event: 'm', data: { i } });
      ids.push(r.id);
    }
    for (const s of [pa, pb]) checkHistory(await ack(s, 'history', { channel: ch }), ch, ids.slice(5));
  });
});
