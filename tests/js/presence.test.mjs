// presence, joining twice / leaving. Runs on the full matrix.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { suite, connect, ack, uniq, uniqUser, record, until } from './fixture.mjs';

function checkPresence(p, { channel, type, socketId, userId, info }) {
  const msg = `presence ${JSON.stringify(p)}`;
  assert.equal(p.channel, channel, msg);
  assert.equal(p.type, type, msg);
  assert.equal(typeof p.ts, 'number', msg);
  assert.ok(Math.abs(p.ts - Date.now()) < 120_000, msg);
  assert.equal(p.member.socketId, socketId, msg);
  assert.equal(p.member.userId, userId, msg);
  assert.deepEqual(p.member.info, info, msg);
  for (const k of Object.keys(p)) assert.ok(['channel', 'type', 'member', 'ts'].includes(k), `unexpected key ${k} in ${msg}`);
}

const of = (recs, type, sid) => recs.filter((p) => p.type === type && p.member?.socketId === sid);

suite('presence', (ctx) => {
  it('join is sent to every member, the joining member included, with info', async () => {
    const ch = uniq();
    const subA = uniqUser('pa');
    const subB = uniqUser('pb');
    const info = { name: 'Bea', avatar: 'b.png' };
    const a = await connect(ctx.srv, { sub: subA });
    const b = await connect(ctx.srv, { sub: subB, claims: { info } });
    const ra = record(a, 'presence');
    const rb = record(b, 'presence');
    await ack(a, 'join', ch);
    await until(() => ra.length >= 1, 'a sees its own join');
    checkPresence(ra[0], { channel: ch, type: 'join', socketId: a.id, userId: subA, info: null });
    await ack(b, 'join', ch);
    await until(() => ra.length >= 2 && rb.length >= 1, 'both see b join');
    checkPresence(ra[1], { channel: ch, type: 'join', socketId: b.id, userId: subB, info });
    checkPresence(rb[0], { channel: ch, type: 'join', socketId: b.id, userId: subB, info });
    assert.equal(rb.length, 1, 'b does not get a join for members already present');
  });

  it('joining twice sends no second join', async () => {
    const ch = uniq();
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv);
    const ra = record(a, 'presence');
    await ack(a, 'join', ch);
    await ack(b, 'join', ch);
    await ack(b, 'join', ch);
    await ack(b, 'join', { channel: ch });
    const c = await connect(ctx.srv);
    await ack(c, 'join', ch); // a later join acts as a marker
    await until(() => of(ra, 'join', c.id).length === 1, 'a sees c join');
    assert.equal(of(ra, 'join', b.id).length, 1, `one join for b: ${JSON.stringify(ra)}`);
    assert.equal(ra.length, 3);
  });

  it('leave goes to the remaining members only; leaving a channel one is not in sends nothing', async () => {
    const ch = uniq();
    const subB = uniqUser('leaver');
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv, { sub: subB });
    const c = await connect(ctx.srv);
    const ra0 = record(a, 'presence');
    const rb0 = record(b, 'presence');
    const rc = record(c, 'presence');
    await ack(a, 'join', ch);
    await ack(b, 'join', ch);
    await until(() => of(ra0, 'join', b.id).length === 1 && of(rb0, 'join', b.id).length === 1, 'the joins arrive');
    const ra = [];
    const rb = [];
    a.on('presence', (p) => ra.push(p));
    b.on('presence', (p) => rb.push(p));
    await ack(b, 'leave', ch);
    await until(() => of(ra, 'leave', b.id).length === 1, 'a sees b leave');
    checkPresence(of(ra, 'leave', b.id)[0], { channel: ch, type: 'leave', socketId: b.id, userId: subB, info: null });
    await ack(b, 'leave', ch); // not in it any more: nothing
    await ack(c, 'leave', ch); // never in it: nothing
    await ack(b, 'members', ch);
    await ack(c, 'members', ch);
    // marker: a new join after those leaves
    const d = await connect(ctx.srv);
    await ack(d, 'join', ch);
    await until(() => of(ra, 'join', d.id).length === 1, 'a sees d join');
    assert.deepEqual(ra.map((p) => `${p.type}:${p.member.socketId}`), [`leave:${b.id}`, `join:${d.id}`]);
    assert.deepEqual(rb, [], 'the leaver gets no leave');
    assert.deepEqual(rc, [], 'a non-member gets nothing');
  });

  it('a disconnect produces a leave for each channel the socket was in', async () => {
    const ch1 = uniq();
    const ch2 = uniq();
    const sub = uniqUser('gone');
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv, { sub });
    for (const ch of [ch1, ch2]) { await ack(a, 'join', ch); await ack(b, 'join', ch); }
    const ra = record(a, 'presence');
    const bid = b.id;
    b.disconnect();
    await until(() => of(ra, 'leave', bid).length >= 2, 'a sees two leaves');
    const leaves = of(ra, 'leave', bid);
    assert.equal(leaves.length, 2);
    assert.deepEqual(leaves.map((p) => p.channel).sort(), [ch1, ch2].sort());
    for (const p of leaves) checkPresence(p, { channel: p.channel, type: 'leave', socketId: bid, userId: sub, info: null });
  });

  it('presence crosses shards: 8 members each see every join', async () => {
    const ch = uniq();
    const n = 8;
    const clients = [];
    for (let i = 0; i < n; i += 1) clients.push(await connect(ctx.srv));
    const recs = clients.map((c) => record(c, 'presence'));
    for (const c of clients) await ack(c, 'join', ch);
    // client i sees the joins of clients i..n-1, each once. A join made on another shard just
    // before client i's may reach it too: that shard's presence and client i's join race to
    // client i's shard (it is a member by then either way).
    const ids = (r) => r.map((p) => p.member.socketId);
    await until(() => recs.every((r, i) => clients.slice(i).every((c) => ids(r).includes(c.id))), () => `joins seen: ${recs.map((r) => r.length)}`);
    recs.forEach((r, i) => {
      assert.equal(new Set(ids(r)).size, r.length, `client ${i} sees each join once`);
      assert.ok(ids(r).every((id) => clients.some((c) => c.id === id)), `client ${i} sees only the channel's joins`);
    });
    clients[n - 1].disconnect();
    await until(() => recs.slice(0, n - 1).every((r) => r.some((p) => p.type === 'leave')), 'everyone sees the leave');
  });

  it('subscribing produces no presence', async () => {
    const ch = uniq();
    const a = await connect(ctx.srv);
    const s = await connect(ctx.srv);
    await ack(a, 'join', ch);
    const ra = record(a, 'presence');
    assert.equal((await ack(s, 'subscribe', { topic: ch })).ok, true);
    const m = await connect(ctx.srv);
    await ack(m, 'join', ch);
    await until(() => ra.length >= 1, 'marker join');
    assert.deepEqual(ra.map((p) => p.member.socketId), [m.id]);
    const members = await ack(a, 'members', ch);
    assert.deepEqual(members.members.map((x) => x.socketId).sort(), [a.id, m.id].sort());
  });
});
