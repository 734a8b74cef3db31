// subscribe / unsubscribe, filters, subscription deliveries.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { suite, connect, ack, uniq, uniqUser, record, until, checkEvent, isErr, CONFIGS } from './fixture.mjs';

async function settle(sock) { await ack(sock, 'members', 'settle:x'); }

/** JSON with sorted object keys: key order carries no meaning in JSON. */
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

suite('subscribe', (ctx) => {
  it('an exact subscription delivers with subscriptionId, other channels not', async () => {
    const ch = uniq();
    const subP = uniqUser('p');
    const s = await connect(ctx.srv);
    const p = await connect(ctx.srv, { sub: subP });
    const res = await ack(s, 'subscribe', { topic: ch });
    assert.equal(res.ok, true);
    assert.equal(typeof res.subscriptionId, 'string');
    assert.deepEqual(Object.keys(res).sort(), ['ok', 'subscriptionId']);
    const got = record(s, 'event');
    await ack(p, 'publish', { channel: `${ch}x`, event: 'other', data: 0 });
    const pub = await ack(p, 'publish', { channel: ch, event: 'hit', data: { v: 1 } });
    await until(() => got.length >= 1, 'subscription delivery');
    await settle(s);
    assert.equal(got.length, 1, JSON.stringify(got));
    const e = checkEvent(got[0], { channel: ch, event: 'hit', data: { v: 1 }, from: { socketId: p.id, userId: subP }, subscriptionId: res.subscriptionId });
    assert.equal(e.id, pub.id);
  });

  it('a prefix pattern chat:* matches every channel starting with chat:', async () => {
    const base = uniq('pfx');
    const s = await connect(ctx.srv);
    const p = await connect(ctx.srv);
    const { subscriptionId } = await ack(s, 'subscribe', { topic: `${base}:*` });
    const got = record(s, 'event');
    for (const ch of [`${base}x:no`, `${base}:a`, 'other:no', `${base}:b:c`, `${base}:`]) {
      await ack(p, 'publish', { channel: ch, event: 'e', data: ch });
    }
    await until(() => got.length >= 2, 'two matching deliveries');
    await ack(p, 'publish', { channel: `${base}:z`, event: 'marker', data: 'm' });
    await until(() => got.some((e) => e.event === 'marker'), 'marker');
    await settle(s);
    const chans = got.filter((e) => e.event === 'e').map((e) => e.channel).sort();
    // `${base}:` (the bare prefix) may or may not match; the non-matching ones must not
    assert.ok(chans.includes(`${base}:a`) && chans.includes(`${base}:b:c`), JSON.stringify(chans));
    for (const c of chans) assert.ok(c.startsWith(`${base}:`), `unexpected delivery for ${c}`);
    for (const e of got) assert.equal(e.subscriptionId, subscriptionId);
  });

  it('filter by event (a name or a list) and by where dot-paths; all conditions hold', async () => {
    const ch = uniq();
    const s = await connect(ctx.srv);
    const p = await connect(ctx.srv);
    const one = (await ack(s, 'subscribe', { topic: ch, filter: { event: 'message' } })).subscriptionId;
    const list = (await ack(s, 'subscribe', { topic: ch, filter: { event: ['a', 'b'] } })).subscriptionId;
    const where = (await ack(s, 'subscribe', { topic: ch, filter: { where: { 'user.id': 7, kind: 'x' } } })).subscriptionId;
    const both = (await ack(s, 'subscribe', { topic: ch, filter: { event: 'message', where: { 'meta.tags': ['t1', 't2'] } } })).subscriptionId;
    for (const id of [one, list, where, both]) assert.equal(typeof id, 'string');
    assert.equal(new Set([one, list, where, both]).size, 4, 'subscription ids are distinct');
    const got = record(s, 'event');
    const pubs = [
      ['message', { text: 'hi' }], // one
      ['a', null], // list
      ['b', 5], // list
      ['c', { user: { id: 7 }, kind: 'x' }], // where
      ['c', { user: { id: 7 }, kind: 'y' }], // none
      ['c', { user: { id: '7' }, kind: 'x' }], // none: JSON equality
      ['message', { meta: { tags: ['t1', 't2'] }, user: { id: 7 }, kind: 'x' }], // one, where, both
      ['message', { meta: { tags: ['t2', 't1'] } }], // one
    ];
    for (const [event, data] of pubs) await ack(p, 'publish', { channel: ch, event, data });
    // marker: a subscription for 'end', then an 'end' from the same publisher (ordered after the rest)
    await ack(s, 'subscribe', { topic: ch, filter: { event: 'end' } });
    await ack(p, 'publish', { channel: ch, event: 'end', data: 'marker' });
    await until(() => got.some((e) => e.event === 'end'), 'the marker');
    await settle(s);
    const seen = got.filter((e) => e.event !== 'end').map((e) => `${e.subscriptionId === one ? 'one' : e.subscriptionId === list ? 'list' : e.subscriptionId === where ? 'where' : e.subscriptionId === both ? 'both' : '?'}:${e.event}:${canon(e.data)}`).sort();
    const want = [
      `one:message:${canon(pubs[0][1])}`,
      'list:a:null',
      'list:b:5',
      `where:c:${canon(pubs[3][1])}`,
      `one:message:${canon(pubs[6][1])}`,
      `where:message:${canon(pubs[6][1])}`,
      `both:message:${canon(pubs[6][1])}`,
      `one:message:${canon(pubs[7][1])}`,
    ].sort();
    assert.deepEqual(seen, want);
  });

  it('a member with matching subscriptions gets one delivery per membership and per subscription', async () => {
    const ch = uniq('both');
    const s = await connect(ctx.srv);
    const p = await connect(ctx.srv);
    await ack(s, 'join', ch);
    const s1 = (await ack(s, 'subscribe', { topic: ch })).subscriptionId;
    const s2 = (await ack(s, 'subscribe', { topic: `${ch.split(':')[0]}:*` })).subscriptionId;
    const s3 = (await ack(s, 'subscribe', { topic: ch, filter: { event: 'nomatch' } })).subscriptionId;
    assert.equal(new Set([s1, s2, s3]).size, 3);
    const got = record(s, 'event');
    const pub = await ack(p, 'publish', { channel: ch, event: 'e', data: 1 });
    await until(() => got.length >= 3, 'three deliveries');
    await ack(p, 'publish', { channel: ch, event: 'marker', data: 2 });
    await until(() => got.filter((e) => e.event === 'marker').length >= 3, 'three markers');
    await settle(s);
    const first = got.filter((e) => e.event === 'e');
    assert.equal(first.length, 3, JSON.stringify(first));
    assert.deepEqual(first.map((e) => e.subscriptionId ?? 'member').sort(), ['member', s1, s2].sort());
    for (const e of first) assert.equal(e.id, pub.id, 'the same event id on every delivery');
  });

  it('unsubscribe stops deliveries; unknown or foreign ids are unknown_subscription', async () => {
    const ch = uniq();
    const s = await connect(ctx.srv);
    const other = await connect(ctx.srv);
    const p = await connect(ctx.srv);
    const sub1 = (await ack(s, 'subscribe', { topic: ch })).subscriptionId;
    const keep = (await ack(s, 'subscribe', { topic: ch, filter: { event: 'marker' } })).subscriptionId;
    const foreign = (await ack(other, 'subscribe', { topic: ch })).subscriptionId;
    const got = record(s, 'event');
    assert.deepEqual(await ack(s, 'unsubscribe', { subscriptionId: sub1 }), { ok: true });
    await ack(p, 'publish', { channel: ch, event: 'e', data: 1 });
    await ack(p, 'publish', { channel: ch, event: 'marker', data: 2 });
    await until(() => got.length >= 1, 'marker');
    await settle(s);
    assert.deepEqual(got.map((e) => `${e.event}:${e.subscriptionId}`), [`marker:${keep}`]);
    assert.ok(isErr(await ack(s, 'unsubscribe', { subscriptionId: sub1 }), 'unknown_subscription'), 'twice');
    assert.ok(isErr(await ack(s, 'unsubscribe', { subscriptionId: 'nope' }), 'unknown_subscription'), 'made up');
    assert.ok(isErr(await ack(s, 'unsubscribe', { subscriptionId: foreign }), 'unknown_subscription'), 'another socket\'s');
    // the foreign subscription still works
    const go = record(other, 'event');
    await ack(p, 'publish', { channel: ch, event: 'x', data: 3 });
    await until(() => go.some((e) => e.event === 'x'), 'foreign subscription intact');
  });

  it('subscriptions reach subscribers on every shard', async () => {
    const ch = uniq();
    const subs = [];
    for (let i = 0; i < 8; i += 1) subs.push(await connect(ctx.srv));
    const ids = [];
    for (const s of subs) ids.push((await ack(s, 'subscribe', { topic: ch })).subscriptionId);
    const recs = subs.map((s) => record(s, 'event'));
    const p = await connect(ctx.srv);
    await ack(p, 'publish', { channel: ch, event: 'e', data: 'x' });
    await until(() => recs.every((r) => r.length >= 1), () => `got ${recs.map((r) => r.length)}`);
    recs.forEach((r, i) => assert.equal(r[0].subscriptionId, ids[i]));
  });

  it('refuses bad subscribe and unsubscribe arguments', async () => {
    const s = await connect(ctx.srv);
    const cases = [
      [{}, 'bad_request'],
      [{ topic: 42 }, 'bad_request'],
      [null, 'bad_request'],
      [{ topic: '' }, 'invalid_channel'],
      [{ topic: 'x'.repeat(201) }, 'invalid_channel'],
      [{ topic: 'chat:\u0001' }, 'invalid_channel'],
      [{ topic: 'chat:x', filter: 42 }, 'bad_request'],
      [{ topic: 'chat:x', filter: { event: 5 } }, 'bad_request'],
      [{ topic: 'chat:x', filter: { where: 'x' } }, 'bad_request'],
      [{ topic: 'chat:x', filter: { event: [1, 2] } }, 'bad_request'],
    ];
    for (const [arg, code] of cases) {
      const res = await ack(s, 'subscribe', arg);
      assert.ok(isErr(res, code), `subscribe ${JSON.stringify(arg)}: want ${code}, got ${JSON.stringify(res)}`);
    }
    for (const arg of [{}, { subscriptionId: 5 }, null]) {
      const res = await ack(s, 'unsubscribe', arg);
      assert.ok(isErr(res, 'bad_request'), `unsubscribe ${JSON.stringify(arg)}: ${JSON.stringify(res)}`);
    }
  });
}, { configs: [CONFIGS[1], CONFIGS[2]] });
