// publish, RealtimeEvent, echo:false and ids. Runs on the full matrix.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import {
  suite, connect, ack, uniq, uniqUser, record, until, waitFor, checkEvent,
} from './fixture.mjs';

suite('publish', (ctx) => {
  it('delivers a RealtimeEvent to members; the publisher need not be a member', async () => {
    const ch = uniq();
    const subP = uniqUser('pub');
    const a = await connect(ctx.srv);
    const p = await connect(ctx.srv, { sub: subP });
    await ack(a, 'join', ch);
    const got = waitFor(a, 'event');
    const data = { text: 'Hello everyone!', n: 1.5, list: [1, 'two', null, { deep: true }] };
    const res = await ack(p, 'publish', { channel: ch, event: 'message', data });
    assert.equal(res.ok, true);
    assert.deepEqual(Object.keys(res).sort(), ['id', 'ok']);
    assert.equal(typeof res.id, 'string');
    const e = checkEvent(await got, { channel: ch, event: 'message', data, from: { socketId: p.id, userId: subP } });
    assert.equal(e.id, res.id, 'the delivered id is the acked id');
  });

  it('echoes to the publisher when it is a member; data of any JSON type; omitted data is null', async () => {
    const ch = uniq();
    const sub = uniqUser('echo');
    const p = await connect(ctx.srv, { sub });
    await ack(p, 'join', ch);
    const got = record(p, 'event');
    const values = ['str', 42, true, null, [1, 2], { a: { b: 'c' } }];
    for (const data of values) await ack(p, 'publish', { channel: ch, event: 'v', data });
    await ack(p, 'publish', { channel: ch, event: 'nodata' });
    await until(() => got.length >= values.length + 1, () => `${values.length + 1} events, got ${got.length}`);
    values.forEach((data, i) => checkEvent(got[i], { channel: ch, event: 'v', data, from: { socketId: p.id, userId: sub } }));
    checkEvent(got[values.length], { channel: ch, event: 'nodata', data: null });
  });

  it('echo:false skips every socket of the publisher\'s userId, and only those', async () => {
    const ch = uniq();
    const u = uniqUser('same');
    const p1 = await connect(ctx.srv, { sub: u });
    const p2 = await connect(ctx.srv, { sub: u });
    const q = await connect(ctx.srv);
    for (const s of [p1, p2, q]) await ack(s, 'join', ch);
    const r1 = record(p1, 'event');
    const r2 = record(p2, 'event');
    const rq = record(q, 'event');
    assert.equal((await ack(p1, 'publish', { channel: ch, event: 'skipped', data: 1, echo: false })).ok, true);
    await ack(p1, 'publish', { channel: ch, event: 'marker', data: 2 });
    // order per publisher: once the marker arrived, the earlier event would have arrived before it
    await until(() => [r1, r2, rq].every((r) => r.some((e) => e.event === 'marker')), 'marker everywhere');
    assert.deepEqual(rq.map((e) => e.event), ['skipped', 'marker']);
    assert.deepEqual(r1.map((e) => e.event), ['marker']);
    assert.deepEqual(r2.map((e) => e.event), ['marker']);
  });

  it('ids are unique strings, and later ids of one publisher sort after earlier ones', async () => {
    const ch = uniq();
    const p = await connect(ctx.srv);
    const m = await connect(ctx.srv);
    await ack(m, 'join', ch);
    const got = record(m, 'event');
    const ids = [];
    for (let i = 0; i < 60; i += 1) ids.push((await ack(p, 'publish', { channel: ch, event: 'n', data: i })).id);
    // a direct from the same publisher shares the id space
    ids.push((await ack(p, 'direct', { to: m.id, event: 'd', data: 0 })).id);
    assert.equal(new Set(ids).size, ids.length, 'ids are unique');
    for (let i = 1; i < ids.length; i += 1) {
      assert.ok(Buffer.compare(Buffer.from(ids[i - 1]), Buffer.from(ids[i])) < 0, `id ${i} (${ids[i]}) sorts after ${ids[i - 1]}`);
    }
    await until(() => got.length >= 61, 'all 60 events and the direct');
    const chanEvents = got.filter((e) => e.event === 'n');
    assert.deepEqual(chanEvents.map((e) => e.id), ids.slice(0, 60));
    assert.deepEqual(chanEvents.map((e) => e.data), [...Array(60).keys()]);
    assert.equal(got.find((e) => e.event === 'd').id, ids[60]);
  });

  it('ids are unique across publishers', async () => {
    const ch = uniq();
    const pubs = await Promise.all([0, 1, 2, 3].map(() => connect(ctx.srv)));
    const acks = await Promise.all(pubs.flatMap((p) => [0, 1, 2, 3, 4].map((i) => ack(p, 'publish', { channel: ch, event: 'e', data: i }))));
    const ids = acks.map((a) => a.id);
    assert.equal(new Set(ids).size, ids.length);
  });

  it('a publish from any socket reaches members on every shard (8 clients, all pairs)', async () => {
    const ch = uniq();
    const n = 8;
    const subs = [...Array(n).keys()].map(() => uniqUser('fan'));
    const clients = [];
    for (const sub of subs) clients.push(await connect(ctx.srv, { sub }));
    for (const c of clients) await ack(c, 'join', ch);
    const recs = clients.map((c) => record(c, 'event'));
    await Promise.all(clients.map((c, i) => ack(c, 'publish', { channel: ch, event: 'hello', data: { from: i } })));
    await until(() => recs.every((r) => r.length >= n), () => `every client gets ${n} events; got ${recs.map((r) => r.length)}`);
    recs.forEach((r, j) => {
      assert.equal(r.length, n, `client ${j} got exactly ${n}`);
      const senders = r.map((e) => e.data.from).sort((x, y) => x - y);
      assert.deepEqual(senders, [...Array(n).keys()], `client ${j} got one event from each publisher`);
      for (const e of r) checkEvent(e, { channel: ch, event: 'hello', from: { socketId: clients[e.data.from].id, userId: subs[e.data.from] } });
    });
    // cluster-wide members and the join count agree
    const m = await ack(clients[0], 'members', ch);
    assert.deepEqual(m.members.map((x) => x.socketId).sort(), clients.map((c) => c.id).sort());
  });

  it('after leave, a socket gets no more events of that channel', async () => {
    const ch = uniq();
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv);
    await ack(a, 'join', ch);
    await ack(b, 'join', ch);
    const ra = record(a, 'event');
    const rb = record(b, 'event');
    await ack(b, 'publish', { channel: ch, event: 'before', data: 1 });
    await until(() => ra.length === 1, 'a gets the first event');
    await ack(a, 'leave', ch);
    await ack(b, 'publish', { channel: ch, event: 'after', data: 2 });
    await until(() => rb.length === 2, 'b gets both');
    await ack(a, 'members', ch); // a round trip on a
    assert.deepEqual(ra.map((e) => e.event), ['before']);
  });
});
