// Channel history as kept by one instance: the `history` event and the REST route answer the same
// object `{ok, channel, events, offset}` from the channel's home shard, for channels with or
// without members, published from sockets on either shard; limit, since, the offset of the newest
// event, the --history-size and age bounds, the token's `channels` claim and bad arguments.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, connect, ack, mint, uniq, until, sleep, isErr, closeAll, checkEvent, record,
} from './fixture.mjs';

const API_KEY = 'history-store-key-0123456789';

/** The shard a socket lives on: its id is `<instance>-<shard hex>-<64 random bits hex>`. */
const shardOf = (s) => parseInt(s.id.split('-').at(-2), 16);

/** The home shard of a channel, as the gateway computes it (FNV-1a 64 of the name, mod shards). */
function home(channel, shards) {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(channel)) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return Number(h % BigInt(shards));
}

/** A fresh channel whose home is `shard` of 2. */
function homed(prefix, shard) {
  for (;;) {
    const c = uniq(prefix);
    if (home(c, 2) === shard) return c;
  }
}

/** Sockets until one sits on each shard (the kernel spreads connections over them). */
async function onEachShard(srv, opts = {}) {
  const by = new Map();
  for (let i = 0; i < 64 && by.size < 2; i += 1) {
    const s = await connect(srv, opts);
    if (!by.has(shardOf(s))) by.set(shardOf(s), s);
  }
  assert.equal(by.size, 2, 'sockets on both shards');
  return [by.get(0), by.get(1)];
}

async function rest(srv, path, auth = API_KEY) {
  const res = await fetch(srv.url + path, { headers: auth ? { Authorization: `Bearer ${auth}` } : {} });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, text, json };
}

const history = (s, arg) => ack(s, 'history', arg);
const publish = async (s, channel, data, event = 'm') => {
  const r = await ack(s, 'publish', { channel, event, data });
  assert.equal(r.ok, true, JSON.stringify(r));
  return r.id;
};

function isPage(r, channel) {
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.deepEqual(Object.keys(r).sort(), ['channel', 'events', 'offset', 'ok']);
  assert.equal(r.channel, channel);
  assert.ok(Array.isArray(r.events));
  assert.equal(typeof r.offset, 'string');
  return r;
}

describe('channel history [shards=2]', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 2, extraArgs: ['--api-key', API_KEY] }); });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('keeps the events of a channel nobody is in, oldest first, as their RealtimeEvents', async () => {
    const [p0] = await onEachShard(srv);
    for (const shard of [0, 1]) {
      const ch = homed('hist-empty', shard);
      const ids = [];
      for (let i = 0; i < 3; i += 1) ids.push(await publish(p0, ch, { i, s: 'é' }));
      const r = isPage(await history(p0, { channel: ch }), ch);
      assert.deepEqual(r.events.map((e) => e.id), ids);
      r.events.forEach((e, i) => checkEvent(e, {
        channel: ch, event: 'm', data: { i, s: 'é' }, from: { socketId: p0.id, userId: e.from.userId },
      }));
      assert.equal(r.offset, ids[2], 'offset: the newest event');
    }
  });

  it('an unknown channel: no events and an empty offset, which as since gives everything', async () => {
    const s = await connect(srv);
    const ch = uniq('hist-none');
    const r = isPage(await history(s, ch), ch);
    assert.deepEqual(r.events, []);
    assert.equal(r.offset, '');
    const ids = [await publish(s, ch, 1), await publish(s, ch, 2)];
    const again = isPage(await history(s, { channel: ch, since: r.offset }), ch);
    assert.deepEqual(again.events.map((e) => e.id), ids);
  });

  it('limit gives the newest N (oldest first); since gives what came after an id; the offset stays the newest', async () => {
    const s = await connect(srv);
    const ch = uniq('hist-limit');
    const ids = [];
    for (let i = 0; i < 6; i += 1) ids.push(await publish(s, ch, { i }));
    const last2 = isPage(await history(s, { channel: ch, limit: 2 }), ch);
    assert.deepEqual(last2.events.map((e) => e.data.i), [4, 5]);
    assert.equal(last2.offset, ids[5]);
    const after = isPage(await history(s, { channel: ch, since: ids[2] }), ch);
    assert.deepEqual(after.events.map((e) => e.id), ids.slice(3));
    const both = isPage(await history(s, { channel: ch, since: ids[1], limit: 1 }), ch);
    assert.deepEqual(both.events.map((e) => e.id), [ids[5]]);
    const none = isPage(await history(s, { channel: ch, since: ids[5] }), ch);
    assert.deepEqual(none.events, []);
    assert.equal(none.offset, ids[5]);
    const big = isPage(await history(s, { channel: ch, limit: 1e6 }), ch);
    assert.equal(big.events.length, 6, 'a limit above --history-size is capped, not refused');
    // The offset a member received with the event works as `since` too.
    const m = await connect(srv);
    await ack(m, 'join', ch);
    const offsets = [];
    m.on('event', (e, offset) => offsets.push(offset));
    const id7 = await publish(s, ch, { i: 6 });
    await until(() => offsets.length === 1, 'the member gets the event');
    assert.equal(offsets[0], id7);
    const id8 = await publish(s, ch, { i: 7 });
    const fromOffset = isPage(await history(m, { channel: ch, since: offsets[0] }), ch);
    assert.deepEqual(fromOffset.events.map((e) => e.id), [id8]);
  });

  it('keeps events only: no presence, nothing of direct messages', async () => {
    const s = await connect(srv);
    const t = await connect(srv);
    const ch = uniq('hist-presence');
    await ack(t, 'join', ch);
    await ack(s, 'join', ch);
    await ack(s, 'direct', { to: t.id, event: 'dm', data: 1 });
    await ack(s, 'leave', ch);
    const id = await publish(s, ch, 'x');
    const r = isPage(await history(t, ch), ch);
    assert.deepEqual(r.events.map((e) => e.id), [id]);
  });

  it('publishes from sockets on both shards, members on either: one history, the same from both shards', async () => {
    const [a, b] = await onEachShard(srv);
    const [m0, m1] = await onEachShard(srv);
    const cases = [
      ['home 0, no member', homed('hist-x', 0), []],
      ['home 1, no member', homed('hist-x', 1), []],
      ['home 0, member on shard 1', homed('hist-x', 0), [m1]],
      ['home 1, member on shard 0', homed('hist-x', 1), [m0]],
      ['home 1, members on both', homed('hist-x', 1), [m0, m1]],
    ];
    for (const [what, ch, members] of cases) {
      for (const m of members) await ack(m, 'join', ch);
      const ids = [];
      for (let i = 0; i < 4; i += 1) ids.push(await publish(i % 2 ? b : a, ch, { i }));
      for (const asker of [a, b]) {
        const r = isPage(await history(asker, { channel: ch }), ch);
        assert.deepEqual(r.events.map((e) => e.id), ids, `${what}, asked on shard ${shardOf(asker)}`);
        assert.deepEqual(r.events.map((e) => e.from.socketId), [a.id, b.id, a.id, b.id]);
        assert.equal(r.offset, ids[3]);
      }
    }
  });

  it('holds what a member received, data alike, in publish order (an acked publish before the next)', async () => {
    const [p0, p1] = await onEachShard(srv);
    const ch = uniq('hist-same');
    const m = await connect(srv);
    await ack(m, 'join', ch);
    const got = record(m, 'event');
    const sent = [{ n: 1.5, deep: { list: [1, 'two', null, true] } }, 'text', null, 12345, [{}]];
    const ids = [];
    for (const [i, data] of sent.entries()) ids.push(await publish(i % 2 ? p1 : p0, ch, data, `e${i}`));
    await until(() => got.length === sent.length, 'every event delivered');
    const r = isPage(await history(m, ch), ch);
    assert.deepEqual(r.events.map((e) => e.id), ids);
    // Each publisher's events reach a member in its order; two publishers' events may interleave
    // differently on a shard that is not the channel's home.
    const byId = (list) => [...list].sort((x, y) => (x.id < y.id ? -1 : 1));
    assert.deepEqual(byId(r.events), byId(got));
  });

  it('REST GET /api/socket/channels/:channel/history answers the same object, data byte for byte', async () => {
    const s = await connect(srv);
    const ch = uniq('hist-rest');
    const enc = encodeURIComponent(ch);
    const raw = '{"price":1.50,"big":12345678901234567890123,"s":"\\u00e9"}';
    // A publish's data goes into the frame as the publisher's JSON text: send it through REST
    // broadcast, whose body is relayed as written, and see it come back unchanged.
    const bc = await fetch(`${srv.url}/api/socket/broadcast`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
      body: `{"channel":${JSON.stringify(ch)},"event":"price","data":${raw}}`,
    });
    assert.equal(bc.status, 202);
    const id2 = await publish(s, ch, { k: 2 });
    const id3 = await publish(s, ch, { k: 3 });
    const viaRest = await rest(srv, `/api/socket/channels/${enc}/history`);
    assert.equal(viaRest.status, 200, viaRest.text);
    assert.ok(viaRest.text.includes(`"data":${raw},"from":null`), viaRest.text);
    const viaSocket = await history(s, ch);
    assert.deepEqual(viaRest.json, viaSocket);
    isPage(viaRest.json, ch);
    assert.equal(viaRest.json.events.length, 3);
    const q = await rest(srv, `/api/socket/channels/${enc}/history?limit=1&since=${encodeURIComponent(id2)}`);
    assert.equal(q.status, 200, q.text);
    assert.deepEqual(q.json, await history(s, { channel: ch, limit: 1, since: id2 }));
    assert.deepEqual(q.json.events.map((e) => e.id), [id3]);
    const empty = await rest(srv, `/api/socket/channels/${enc}/history?limit=&since=`);
    assert.equal(empty.json.events.length, 3, 'empty parameters are none');
  });

  it('REST: credentials first, then 400 for a bad limit or channel; 405 for another method', async () => {
    const ch = encodeURIComponent(uniq('hist-rest'));
    const unauth = await rest(srv, `/api/socket/channels/${ch}/history`, null);
    assert.equal(unauth.status, 401);
    assert.equal((await rest(srv, `/api/socket/channels/${ch}/history`, mint({}))).status, 401, 'a user token is not enough');
    assert.equal((await rest(srv, `/api/socket/channels/${ch}/history`, mint({ role: 'admin' }))).status, 200);
    for (const l of ['0', '-1', 'x', '2.5']) {
      const r = await rest(srv, `/api/socket/channels/${ch}/history?limit=${l}`);
      assert.equal(r.status, 400, l);
      assert.equal(r.json.error.code, 'bad_request');
    }
    const long = await rest(srv, `/api/socket/channels/${'x'.repeat(201)}/history`);
    assert.equal(long.status, 400);
    assert.equal(long.json.error.code, 'invalid_channel');
    const post = await fetch(`${srv.url}/api/socket/channels/${ch}/history`, { method: 'POST', headers: { Authorization: `Bearer ${API_KEY}` } });
    assert.equal(post.status, 405);
    assert.match(post.headers.get('allow'), /GET/);
  });

  it('allowed like join: the token\'s channels claim decides, forbidden elsewhere', async () => {
    const open = uniq('hist-grant');
    const s = await connect(srv, { claims: { channels: [`${open.split(':')[0]}:*`] } });
    const other = `secret:${open}`;
    const w = await connect(srv);
    await publish(w, other, 'hidden');
    await publish(w, open, 'shown');
    const ok = isPage(await history(s, { channel: open }), open);
    assert.deepEqual(ok.events.map((e) => e.data), ['shown']);
    const no = await history(s, { channel: other });
    assert.ok(isErr(no, 'forbidden'), JSON.stringify(no));
    // Without an ack, the refusal is an `error` event.
    const errors = record(s, 'error');
    s.emit('history', { channel: other });
    await until(() => errors.length === 1, 'an error event');
    assert.equal(errors[0].code, 'forbidden');
  });

  it('bad arguments are bad_request (invalid_channel for a bad name)', async () => {
    const s = await connect(srv);
    const ch = uniq('hist-bad');
    for (const arg of [
      { channel: ch, limit: 0 }, { channel: ch, limit: -1 }, { channel: ch, limit: 1.5 },
      { channel: ch, limit: '3' }, { channel: ch, limit: true }, { channel: ch, since: 5 },
      { channel: ch, since: {} }, { channel: 42 }, { limit: 3 }, null, 7, [ch],
    ]) {
      const r = await history(s, arg);
      assert.ok(isErr(r, 'bad_request'), `${JSON.stringify(arg)} → ${JSON.stringify(r)}`);
    }
    for (const channel of ['', 'x'.repeat(201), 'a\u0007b']) {
      assert.ok(isErr(await history(s, { channel }), 'invalid_channel'), JSON.stringify(channel));
    }
    assert.ok(isErr(await ack(s, 'history'), 'bad_request'), 'no argument');
  });

  it('an event with binary attachments is kept with its placeholders, not its bytes', async () => {
    const s = await connect(srv);
    const ch = uniq('hist-bin');
    await publish(s, ch, { name: 'f', blob: Buffer.from([1, 2, 3]) });
    const r = isPage(await history(s, ch), ch);
    assert.equal(r.events.length, 1);
    assert.deepEqual(r.events[0].data, { name: 'f', blob: { _placeholder: true, num: 0 } });
  });

  it('/metrics samples each shard\'s history bytes', async () => {
    const s = await connect(srv);
    await publish(s, uniq('hist-metrics'), 'x'.repeat(1000));
    await until(async () => {
      const text = await (await fetch(`${srv.url}/metrics`)).text();
      return [...text.matchAll(/^socket_gateway_history_bytes\{[^}]*\} (\d+)/gm)].some((m) => Number(m[1]) > 1000);
    }, 'socket_gateway_history_bytes above the event\'s size');
  });
});

describe('channel history bounds: --history-size 5, --recovery-window 1500 [shards=2]', () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--history-size', '5', '--recovery-window', '1500', '--presence-grace', '500'] });
  });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('keeps the newest --history-size events per channel, each channel apart', async () => {
    const [a, b] = await onEachShard(srv);
    const ch = uniq('hist-size');
    const quiet = uniq('hist-size');
    const quietId = await publish(b, quiet, 'q');
    const ids = [];
    for (let i = 0; i < 8; i += 1) ids.push(await publish(i % 2 ? b : a, ch, { i }));
    const r = isPage(await history(a, ch), ch);
    assert.deepEqual(r.events.map((e) => e.id), ids.slice(3));
    assert.equal(r.offset, ids[7]);
    assert.equal((await history(a, { channel: ch, limit: 50 })).events.length, 5);
    assert.deepEqual((await history(b, quiet)).events.map((e) => e.id), [quietId]);
    // `since` an id that fell out: the events whose id sorts after it, i.e. everything kept.
    assert.deepEqual((await history(b, { channel: ch, since: ids[0] })).events.map((e) => e.id), ids.slice(3));
  });

  it('drops events older than the recovery window, channels with members or not', async () => {
    const s = await connect(srv);
    const m = await connect(srv);
    const ch = uniq('hist-age');
    const lonely = uniq('hist-age');
    await ack(m, 'join', ch);
    await publish(s, ch, 1);
    await publish(s, lonely, 1);
    assert.equal((await history(s, ch)).events.length, 1);
    await sleep(1700);
    const id = await publish(s, ch, 2);
    const r = isPage(await history(s, ch), ch);
    assert.deepEqual(r.events.map((e) => e.id), [id]);
    const gone = isPage(await history(s, lonely), lonely);
    assert.deepEqual(gone.events, []);
    assert.equal(gone.offset, '');
  });
});

describe('channel history off: --history-size 0 [shards=1]', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 1, extraArgs: ['--history-size', '0'] }); });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('answers an empty history', async () => {
    const s = await connect(srv);
    const ch = uniq('hist-off');
    await publish(s, ch, 1);
    const r = isPage(await history(s, ch), ch);
    assert.deepEqual(r.events, []);
    assert.equal(r.offset, '');
  });
});
