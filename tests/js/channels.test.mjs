// join / leave / members, and the `channels` claim.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { suite, connect, ack, uniq, uniqUser, isErr, ONCE, CONFIGS } from './fixture.mjs';

suite('channels: join, leave, members', (ctx) => {
  it('join answers {ok,channel,members} in both argument forms; joining twice is not an error', async () => {
    const ch = uniq();
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv);
    assert.deepEqual(await ack(a, 'join', ch), { ok: true, channel: ch, members: 1 });
    assert.deepEqual(await ack(b, 'join', { channel: ch }), { ok: true, channel: ch, members: 2 });
    assert.deepEqual(await ack(b, 'join', ch), { ok: true, channel: ch, members: 2 });
  });

  it('members lists MEMBER objects cluster-wide, info null when the token has none', async () => {
    const ch = uniq();
    const subA = uniqUser('m');
    const subB = uniqUser('m');
    const info = { name: 'Bob', tags: ['x', 1], nested: { ok: true } };
    const a = await connect(ctx.srv, { sub: subA });
    const b = await connect(ctx.srv, { sub: subB, claims: { info } });
    const before = Date.now();
    await ack(a, 'join', ch);
    await ack(b, 'join', ch);
    const res = await ack(a, 'members', { channel: ch });
    assert.equal(res.ok, true);
    assert.equal(res.channel, ch);
    assert.equal(res.members.length, 2);
    const bySid = Object.fromEntries(res.members.map((m) => [m.socketId, m]));
    for (const m of res.members) {
      assert.deepEqual(Object.keys(m).sort(), ['info', 'joinedAt', 'socketId', 'userId']);
      assert.equal(typeof m.joinedAt, 'number');
      assert.ok(Math.abs(m.joinedAt - before) < 60_000, `joinedAt is epoch milliseconds: ${m.joinedAt}`);
    }
    assert.deepEqual(bySid[a.id], { ...bySid[a.id], socketId: a.id, userId: subA, info: null });
    assert.deepEqual(bySid[b.id], { ...bySid[b.id], socketId: b.id, userId: subB, info });
    // string form, from a non-member
    const c = await connect(ctx.srv);
    const res2 = await ack(c, 'members', ch);
    assert.equal(res2.members.length, 2);
  });

  it('members of an inactive channel is an empty list', async () => {
    const a = await connect(ctx.srv);
    const ch = uniq('none');
    assert.deepEqual(await ack(a, 'members', ch), { ok: true, channel: ch, members: [] });
  });

  it('leave answers {ok,channel}, removes the member; leaving a channel one is not in is fine', async () => {
    const ch = uniq();
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv);
    await ack(a, 'join', ch);
    await ack(b, 'join', ch);
    assert.deepEqual(await ack(a, 'leave', ch), { ok: true, channel: ch });
    const res = await ack(b, 'members', ch);
    assert.deepEqual(res.members.map((m) => m.socketId), [b.id]);
    assert.deepEqual(await ack(a, 'leave', { channel: ch }), { ok: true, channel: ch });
    const never = uniq('never');
    assert.deepEqual(await ack(a, 'leave', never), { ok: true, channel: never });
  });

  it('a disconnect removes the socket from every channel it was in', async () => {
    const ch1 = uniq();
    const ch2 = uniq();
    const a = await connect(ctx.srv);
    const b = await connect(ctx.srv);
    for (const ch of [ch1, ch2]) { await ack(a, 'join', ch); await ack(b, 'join', ch); }
    a.close();
    for (const ch of [ch1, ch2]) {
      // eventually only b remains
      let res;
      for (let i = 0; i < 500; i += 1) {
        res = await ack(b, 'members', ch);
        if (res.members.length === 1) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(res.members.map((m) => m.socketId), [b.id]);
    }
  });
}, { configs: [CONFIGS[0], CONFIGS[3]] });

suite('channels: the channels claim', (ctx) => {
  const claims = { channels: ['chat:room1', 'news:*'] };

  it('join: allowed for an exact name and inside a prefix, forbidden elsewhere', async () => {
    const s = await connect(ctx.srv, { claims });
    assert.deepEqual(await ack(s, 'join', 'chat:room1'), { ok: true, channel: 'chat:room1', members: 1 });
    assert.equal((await ack(s, 'join', 'news:sports')).ok, true);
    for (const ch of ['chat:room2', 'chat:room1x', 'news', 'other:x']) {
      const res = await ack(s, 'join', ch);
      assert.ok(isErr(res, 'forbidden'), `join ${ch}: ${JSON.stringify(res)}`);
    }
    // a forbidden join does not make the socket a member
    const other = await connect(ctx.srv);
    assert.deepEqual((await ack(other, 'members', 'chat:room2')).members, []);
  });

  it('publish: forbidden outside the allowed channels', async () => {
    const s = await connect(ctx.srv, { claims });
    assert.equal((await ack(s, 'publish', { channel: 'news:a', event: 'e', data: 1 })).ok, true);
    assert.equal((await ack(s, 'publish', { channel: 'chat:room1', event: 'e', data: 1 })).ok, true);
    const res = await ack(s, 'publish', { channel: 'chat:room2', event: 'e', data: 1 });
    assert.ok(isErr(res, 'forbidden'), JSON.stringify(res));
  });

  it('subscribe: exact and contained prefixes allowed, a wider prefix forbidden', async () => {
    const s = await connect(ctx.srv, { claims });
    for (const topic of ['chat:room1', 'news:*', 'news:sports:*', 'news:x']) {
      const res = await ack(s, 'subscribe', { topic });
      assert.equal(res.ok, true, `subscribe ${topic}: ${JSON.stringify(res)}`);
    }
    for (const topic of ['chat:*', 'chat:room2', 'news*', 'ne*', '*', 'other:*']) {
      const res = await ack(s, 'subscribe', { topic });
      assert.ok(isErr(res, 'forbidden'), `subscribe ${topic}: ${JSON.stringify(res)}`);
    }
  });

  it('a forbidden publish is not delivered', async () => {
    const s = await connect(ctx.srv, { claims });
    const member = await connect(ctx.srv);
    const got = [];
    member.on('event', (e) => got.push(e));
    await ack(member, 'join', 'chat:room2');
    await ack(member, 'join', 'chat:room1');
    await ack(s, 'publish', { channel: 'chat:room2', event: 'nope', data: 1 });
    await ack(s, 'publish', { channel: 'chat:room1', event: 'marker', data: 2 });
    for (let i = 0; i < 500 && !got.some((e) => e.event === 'marker'); i += 1) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got.map((e) => e.event), ['marker']);
    await ack(member, 'leave', 'chat:room2');
    await ack(member, 'leave', 'chat:room1');
  });

  it('no channels claim means every channel is allowed', async () => {
    const s = await connect(ctx.srv);
    assert.equal((await ack(s, 'join', uniq('any'))).ok, true);
    assert.equal((await ack(s, 'subscribe', { topic: '*' })).ok, true);
  });
}, { configs: [ONCE] });
