// Large channels: above --presence-max-members, joins and leaves send no per-member presence; the
// members get a presence `count` at most once per --presence-interval while the count changes,
// and a channel that shrinks back goes back to per-member events after one count.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, connect, ack, uniq, record, until, sleep, REDIS_URL, dropRedisKeys } from './fixture.mjs';

const MAX = 5;
const INTERVAL = 300;
const perMember = (r) => r.filter((p) => p.type === 'join' || p.type === 'leave');
const counts = (r) => r.filter((p) => p.type === 'count');

describe(`presence of large channels [shards=2, --presence-max-members ${MAX}, --presence-interval ${INTERVAL}]`, () => {
  let srv;
  before(async () => {
    srv = await startServer({ shards: 2, extraArgs: ['--presence-max-members', String(MAX), '--presence-interval', String(INTERVAL)] });
  });
  after(async () => { await srv?.stop(); });

  it('above the threshold: counts instead of joins and leaves; below it again: per-member events', async () => {
    const ch = uniq('big');
    const socks = [];
    let all = null;
    for (let i = 0; i < MAX; i += 1) {
      const s = await connect(srv);
      socks.push(s);
      if (i === 0) all = record(s, 'presence');
      assert.equal((await ack(s, 'join', ch)).ok, true);
    }
    // the last per-member join (at the threshold) travels between shards: wait for it before
    // looking at what the channel sends above the threshold
    const lastId = socks[MAX - 1].id;
    await until(() => perMember(all).some((p) => p.type === 'join' && p.member.socketId === lastId), 'the join at the threshold', 2000);
    const mark = all.length;
    const seen = () => all.slice(mark);
    const extra = [];
    for (let i = 0; i < 4; i += 1) {
      const s = await connect(srv);
      extra.push(s);
      assert.equal((await ack(s, 'join', ch)).members, MAX + i + 1);
    }
    await until(() => counts(seen()).some((p) => p.count === MAX + 4), () => `a count of ${MAX + 4}: ${JSON.stringify(seen())}`, 3000);
    assert.deepEqual(perMember(seen()), [], 'no per-member presence above the threshold');
    const c = counts(seen()).at(-1);
    assert.deepEqual(Object.keys(c).sort(), ['channel', 'count', 'ts', 'type']);
    assert.equal(c.channel, ch);
    assert.ok(counts(seen()).length <= 3, `counts are rate-limited: ${counts(seen()).length}`);
    const m = await ack(socks[0], 'members', ch);
    assert.equal(m.members.length, MAX + 4, 'members still lists everyone');

    // shrink back: the leaves that leave it above or at the threshold are counted, then per-member
    for (const s of extra) assert.equal((await ack(s, 'leave', ch)).ok, true);
    await until(() => counts(seen()).some((p) => p.count === MAX), () => `a count of ${MAX}: ${JSON.stringify(counts(seen()))}`, 3000);
    assert.deepEqual(perMember(seen()), []);
    await sleep(INTERVAL * 2);
    assert.equal((await ack(socks[4], 'leave', ch)).ok, true);
    await until(() => perMember(seen()).some((p) => p.type === 'leave' && p.member.socketId === socks[4].id), 'a per-member leave below the threshold', 2000);
  });

  it('a small channel behaves as before: every join reaches every member at once', async () => {
    const ch = uniq('small');
    const a = await connect(srv);
    const r = record(a, 'presence');
    await ack(a, 'join', ch);
    const b = await connect(srv);
    await ack(b, 'join', ch);
    await until(() => r.filter((p) => p.type === 'join').length === 2, 'both joins', 1000);
    assert.deepEqual(counts(r), []);
  });
});

describe(`presence counts across two instances through Redis [--presence-max-members ${MAX}, --presence-interval ${INTERVAL}]`, () => {
  const prefix = `pc${process.pid}${Date.now()}`;
  let a;
  let b;
  before(async () => {
    const node = (id) => startServer({
      shards: 2,
      extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix, '--instance-id', id,
        '--presence-max-members', String(MAX), '--presence-interval', String(INTERVAL)],
    });
    [a, b] = await Promise.all([node('pcA'), node('pcB')]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await dropRedisKeys(REDIS_URL, prefix);
  });

  it('each member gets at most one count per interval, and the cluster\'s count, whichever instance changed', async () => {
    const ch = uniq('bigc');
    const onA = [];
    const onB = [];
    for (let i = 0; i < 4; i += 1) {
      onA.push(await connect(a));
      onB.push(await connect(b));
    }
    for (const s of [...onA, ...onB]) assert.equal((await ack(s, 'join', ch)).ok, true);
    const ra = record(onA[0], 'presence');
    const rb = record(onB[0], 'presence');
    await until(() => counts(ra).some((p) => p.count === 8) && counts(rb).some((p) => p.count === 8), () => `both see 8: ${JSON.stringify([counts(ra), counts(rb)])}`, 5000);
    const from = [ra.length, rb.length];

    // changes on both instances, spread over several intervals
    const more = [];
    for (let i = 0; i < 6; i += 1) {
      const s = await connect(i % 2 ? b : a);
      more.push(s);
      assert.equal((await ack(s, 'join', ch)).ok, true);
      await sleep(INTERVAL / 3);
    }
    const total = 8 + more.length;
    await until(() => counts(ra).some((p) => p.count === total) && counts(rb).some((p) => p.count === total), () => `both see ${total}: ${JSON.stringify([counts(ra), counts(rb)])}`, 5000);
    await sleep(INTERVAL * 2);
    for (const [r, start] of [[ra, from[0]], [rb, from[1]]]) {
      const seen = r.slice(start);
      assert.deepEqual(perMember(seen), [], 'no per-member presence in a large channel');
      const c = counts(seen);
      assert.equal(c.at(-1).count, total, 'the last count is the cluster\'s');
      // stamped by one home shard's timer: never two within one interval (with two instances
      // each sending, some pair would be at most half an interval apart)
      for (let i = 1; i < c.length; i += 1) {
        assert.ok(c[i].ts - c[i - 1].ts >= INTERVAL / 2, `counts ${JSON.stringify(c.map((p) => [p.count, p.ts]))}`);
      }
    }
  });
});
