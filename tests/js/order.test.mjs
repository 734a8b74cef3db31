// Order: events from one publisher to one channel arrive in publish order.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { suite, connect, ack, uniq, record, until, CONFIGS } from './fixture.mjs';

suite('order', (ctx) => {
  it('1,000 messages from one publisher reach members and subscribers in order', { timeout: 60000 }, async () => {
    const ch = uniq('order');
    const n = 1000;
    const members = [];
    for (let i = 0; i < 4; i += 1) members.push(await connect(ctx.srv));
    for (const m of members) await ack(m, 'join', ch);
    const sub = await connect(ctx.srv);
    await ack(sub, 'subscribe', { topic: ch });
    const recs = [...members, sub].map((s) => record(s, 'event'));
    const p = await connect(ctx.srv);
    const acks = [];
    // fire without waiting, then collect all acks
    for (let i = 0; i < n; i += 1) acks.push(ack(p, 'publish', { channel: ch, event: 'seq', data: { i } }));
    const res = await Promise.all(acks);
    assert.ok(res.every((r) => r.ok === true));
    await until(() => recs.every((r) => r.length >= n), () => `all ${n}; got ${recs.map((r) => r.length)}`, 30000);
    const want = [...Array(n).keys()];
    recs.forEach((r, j) => {
      assert.equal(r.length, n, `recipient ${j} got each message once`);
      assert.deepEqual(r.map((e) => e.data.i), want, `recipient ${j} in order`);
      for (let i = 1; i < n; i += 1) assert.ok(r[i - 1].id < r[i].id, `ids increase (${j}, ${i})`);
    });
  });
}, { configs: [CONFIGS[2], CONFIGS[1]] });
