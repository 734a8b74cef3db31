// direct, direct RealtimeEvent shape, not_found.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { suite, connect, ack, uniq, uniqUser, record, until, waitFor, checkEvent, isErr } from './fixture.mjs';

suite('direct', (ctx) => {
  it('delivers to the target socket only, with channel null and "to"', async () => {
    const subA = uniqUser('dm');
    const a = await connect(ctx.srv, { sub: subA });
    const b = await connect(ctx.srv);
    const c = await connect(ctx.srv);
    const rc = record(c, 'event');
    const got = waitFor(b, 'event');
    const data = { text: 'You have a new message' };
    const res = await ack(a, 'direct', { to: b.id, event: 'notification', data });
    assert.equal(res.ok, true);
    assert.deepEqual(Object.keys(res).sort(), ['id', 'ok']);
    const e = checkEvent(await got, { channel: null, to: b.id, event: 'notification', data, from: { socketId: a.id, userId: subA } });
    assert.equal(e.id, res.id);
    await ack(c, 'members', uniq()); // round trip on c
    assert.deepEqual(rc, []);
  });

  it('reaches every socket from every socket across shards (8 clients, ring)', async () => {
    const n = 8;
    const clients = [];
    for (let i = 0; i < n; i += 1) clients.push(await connect(ctx.srv));
    const recs = clients.map((c) => record(c, 'event'));
    await Promise.all(clients.map((c, i) => ack(c, 'direct', { to: clients[(i + 1) % n].id, event: 'ring', data: i })));
    await until(() => recs.every((r) => r.length >= 1), () => `each gets one; got ${recs.map((r) => r.length)}`);
    recs.forEach((r, j) => {
      assert.equal(r.length, 1);
      checkEvent(r[0], { channel: null, to: clients[j].id, event: 'ring', data: (j + n - 1) % n, from: { socketId: clients[(j + n - 1) % n].id, userId: r[0].from.userId } });
    });
  });

  it('keeps order and acks every message when a socket sends many without waiting, across shards', async () => {
    // Socket ids are <instance>-<shard hex>-<seq hex>: pick b on another shard than a when there is one.
    const shardOf = (s) => s.id.split('-')[1];
    const a = await connect(ctx.srv);
    let b = await connect(ctx.srv);
    const spare = [];
    for (let i = 0; i < 8 && shardOf(b) === shardOf(a); i += 1) { spare.push(b); b = await connect(ctx.srv); }
    const rb = record(b, 'event');
    const n = 300;
    const acks = [];
    for (let i = 0; i < n; i += 1) acks.push(ack(a, 'direct', { to: b.id, event: 'seq', data: i }));
    const res = await Promise.all(acks);
    assert.ok(res.every((r) => r.ok === true), JSON.stringify(res.find((r) => r.ok !== true)));
    assert.equal(new Set(res.map((r) => r.id)).size, n);
    await until(() => rb.length >= n, () => `b got ${rb.length} of ${n}`);
    assert.deepEqual(rb.map((e) => e.data), [...Array(n).keys()]);
    spare.forEach((s) => s.close());
  });

  it('to oneself works; omitted data is null', async () => {
    const a = await connect(ctx.srv);
    const got = waitFor(a, 'event');
    assert.equal((await ack(a, 'direct', { to: a.id, event: 'self' })).ok, true);
    checkEvent(await got, { channel: null, to: a.id, event: 'self', data: null });
  });

  it('answers not_found for an unknown id, a channel name, and a disconnected socket', async () => {
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv);
    const ch = uniq();
    await ack(b, 'join', ch);
    const goneId = b.id;
    b.close();
    for (const to of ['no-such-socket-id', ch, 'AAAAAAAAAAAAAAAAAAAA', goneId]) {
      let res;
      for (let i = 0; i < 200; i += 1) { // a just-closed socket disappears eventually
        res = await ack(a, 'direct', { to, event: 'x', data: 1 });
        if (res.ok === false) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(isErr(res, 'not_found'), `direct to ${to}: ${JSON.stringify(res)}`);
    }
  });
}, { configs: undefined });
