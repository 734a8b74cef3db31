// One socket cannot amplify presence: joins and leaves have their own rate (--max-joins-per-sec),
// and what one socket's toggling makes every other member receive is at most one join and one
// leave per second, the members seeing its final state within a second.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, connect, ack, mint, uniq, record, until, sleep } from './fixture.mjs';
import { rawClient } from './raw.mjs';

const of = (recs, type, sid) => recs.filter((p) => p.type === type && p.member?.socketId === sid);

describe('presence bounds [shards=2]', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 2 }); });
  after(async () => { await srv?.stop(); });

  it('joins and leaves beyond --max-joins-per-sec (50, bursts of 100) are refused as rate_limited', async () => {
    const t = await connect(srv);
    const chs = Array.from({ length: 160 }, () => uniq('burst'));
    const acks = await Promise.all(chs.map((ch) => ack(t, 'join', ch)));
    const limited = acks.filter((a) => a.ok === false && a.error?.code === 'rate_limited');
    const ok = acks.filter((a) => a.ok === true);
    assert.ok(ok.length >= 100 && ok.length < 160, `about a burst of 100 admitted: ${ok.length}`);
    assert.equal(limited.length + ok.length, 160);
    assert.match(limited[0].error.message, /--max-joins-per-sec/);
    // other events are not counted against it
    assert.equal((await ack(t, 'publish', { channel: chs[0], event: 'e', data: 1 })).ok, true);
    assert.ok(t.connected);
  });

  it('a socket toggling join/leave as fast as it may: the other members get at most one join and one leave per second, and its final state', async () => {
    const ch = uniq('toggle');
    const watchers = await Promise.all([0, 1, 2].map(() => connect(srv)));
    const recs = watchers.map((w) => record(w, 'presence'));
    for (const w of watchers) assert.equal((await ack(w, 'join', ch)).ok, true);
    const t = await connect(srv);
    await sleep(300);
    const start = Date.now();
    let toggles = 0;
    while (Date.now() - start < 3000) {
      const j = await ack(t, 'join', ch);
      const l = await ack(t, 'leave', ch);
      if (j.ok && l.ok) toggles += 1;
      await sleep(40); // about 25 toggles (50 joins and leaves) a second: the limit
    }
    assert.ok(toggles >= 40, `it toggled ${toggles} times`);
    // it ends as a member: every watcher sees it joined within a second and a half
    assert.equal((await ack(t, 'join', ch)).ok, true);
    const secs = (Date.now() - start) / 1000;
    await sleep(1500);
    for (const [i, r] of recs.entries()) {
      const joins = of(r, 'join', t.id).length;
      const leaves = of(r, 'leave', t.id).length;
      const bound = Math.ceil(secs) + 2;
      assert.ok(joins <= bound && leaves <= bound, `watcher ${i}: ${joins} joins, ${leaves} leaves over ${secs.toFixed(1)} s (bound ${bound} each)`);
      const last = r.filter((p) => p.member?.socketId === t.id).at(-1);
      assert.equal(last?.type, 'join', `watcher ${i} sees the final state`);
      assert.ok(watchers[i].connected);
    }
    const m = await ack(watchers[0], 'members', ch);
    assert.ok(m.members.some((x) => x.socketId === t.id));
  });

  it('on a 999-member channel: a socket toggling at its limit reaches each member with at most one join and one leave per second, and nobody is cut', { timeout: 120000 }, async () => {
    const ch = uniq('toggle999');
    const watchers = await Promise.all([0, 1, 2].map(() => connect(srv)));
    const recs = watchers.map((w) => record(w, 'presence'));
    for (const w of watchers) assert.equal((await ack(w, 'join', ch)).ok, true);
    // 995 more members over bare websockets (cheap to hold), joined in batches
    const crowd = [];
    for (let i = 0; i < 995; i += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, 995 - i) }, (_, k) => rawClient(srv, mint({ sub: `crowd-${i + k}` }))));
      const acks = await Promise.all(batch.map((c) => c.emitAck('join', ch)));
      assert.ok(acks.every((a) => a.ok), JSON.stringify(acks.find((a) => !a.ok)));
      crowd.push(...batch);
    }
    const t = await connect(srv);
    assert.equal((await ack(t, 'join', ch)).members, 999);
    await sleep(1500);
    for (const c of crowd) c.inbox.length = 0;
    const start = Date.now();
    let toggles = 0;
    while (Date.now() - start < 3000) {
      const l = await ack(t, 'leave', ch);
      const j = await ack(t, 'join', ch);
      if (j.ok && l.ok) toggles += 1;
      await sleep(40);
    }
    assert.ok(toggles >= 40, `it toggled ${toggles} times`);
    const secs = (Date.now() - start) / 1000;
    await sleep(1500);
    // the bound: per member, ceil(seconds) + 2 of each kind (a second's first change at once, the
    // final state a second after the last)
    const bound = Math.ceil(secs) + 2;
    const about = (m) => m?.startsWith('42["presence"') && m.includes(`"socketId":"${t.id}"`);
    let total = 0;
    for (const [i, c] of crowd.entries()) {
      const mine = c.inbox.filter(about).map((m) => JSON.parse(m.slice(2))[1].type);
      const joins = mine.filter((x) => x === 'join').length;
      const leaves = mine.filter((x) => x === 'leave').length;
      total += mine.length;
      assert.ok(joins <= bound && leaves <= bound, `member ${i}: ${joins} joins, ${leaves} leaves over ${secs.toFixed(1)} s (bound ${bound} each)`);
      assert.equal(c.closed, null, `member ${i} is still connected`);
    }
    assert.ok(total <= 995 * 2 * bound, `${total} presence frames to 995 members`);
    for (const [i, r] of recs.entries()) {
      assert.equal(r.filter((p) => p.member?.socketId === t.id).at(-1)?.type, 'join', `watcher ${i} sees the final state`);
      assert.ok(watchers[i].connected);
    }
    for (const c of crowd) c.ws.close();
  });

  it('a plain join then leave still reach the members at once', async () => {
    const ch = uniq('plain');
    const w = await connect(srv);
    const r = record(w, 'presence');
    await ack(w, 'join', ch);
    const t = await connect(srv);
    await ack(t, 'join', ch);
    await until(() => of(r, 'join', t.id).length === 1, 'the join', 500);
    await ack(t, 'leave', ch);
    await until(() => of(r, 'leave', t.id).length === 1, 'the leave', 500);
  });
});
