// What a token lets a socket see and hold: subscription filters are bounded, `refresh` narrows
// what the socket is in, `members` obeys the `channels` claim, and socket ids cannot be guessed.
// Every case runs on one shard, so the witness shares the shard with the attacker.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, connect, ack, mint, uniq, uniqUser, record, until, sleep, isErr, closeAll,
} from './fixture.mjs';
import { rssKiB, witness } from './raw.mjs';


describe('subscription filters are bounded', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 1, transports: ['websocket'] }); });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('takes 32 conditions, 32 event names and 4 KiB, and refuses one more as bad_request', async () => {
    const s = await connect(srv);
    const where = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    const events = (n) => Array.from({ length: n }, (_, i) => `e${i}`);
    const sub = (filter) => ack(s, 'subscribe', { topic: uniq(), filter });
    assert.equal((await sub({ where: where(32) })).ok, true);
    assert.ok(isErr(await sub({ where: where(33) }), 'bad_request'));
    assert.equal((await sub({ event: events(32) })).ok, true);
    assert.ok(isErr(await sub({ event: events(33) }), 'bad_request'));
    const fixed = JSON.stringify({ where: { a: '' } }).length;
    assert.equal((await sub({ where: { a: 'x'.repeat(4096 - fixed) } })).ok, true);
    assert.ok(isErr(await sub({ where: { a: 'x'.repeat(4096 - fixed + 1) } }), 'bad_request'));
  });

  it('20 subscriptions with 1 MB filters of 68k conditions: refused, RSS bounded, the shard serves', async () => {
    const w = await witness(srv);
    const s = await connect(srv);
    // 68,000 conditions, ~1 MB of JSON: under the default --max-payload (1,000,000 bytes).
    const where = {};
    for (let i = 0; i < 68_000; i += 1) where[`key_${i}`] = i % 10;
    const filter = { where };
    const size = JSON.stringify(filter).length;
    assert.ok(size > 900_000 && size < 990_000, `filter of ${size} bytes`);
    const before = rssKiB(srv.proc.pid);
    for (let i = 0; i < 20; i += 1) {
      const res = await ack(s, 'subscribe', { topic: uniq(), filter });
      assert.ok(isErr(res, 'bad_request'), `a 1 MB filter is refused: ${JSON.stringify(res)}`);
    }
    const grown = rssKiB(srv.proc.pid) - before;
    // Before the bound, each such subscription held ~13 MiB (269 MiB for these 20). Now nothing
    // is held; what remains is the transient parse of one 1 MB event, which the allocator may
    // keep for reuse.
    assert.ok(grown < 40 * 1024, `RSS grew by ${grown} KiB for 20 refused 1 MB filters`);
    assert.ok(s.connected, 'a refused subscribe does not disconnect');
    await w.roundTrip('filter flood');
    w.close();
  });
});

describe('refresh narrows, members obey the claim, socket ids are random', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 1 }); });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('after a refresh to channels ["chat:…"] the socket leaves admin channels and loses refused subscriptions', async () => {
    const sub = uniqUser('narrow');
    const admin = uniq('admin');
    const room = uniq('chat');
    const s = await connect(srv, { sub });
    const other = await connect(srv, { claims: { channels: [admin] } });
    const pub = await connect(srv);
    assert.equal((await ack(other, 'join', admin)).ok, true);
    assert.equal((await ack(s, 'join', admin)).ok, true);
    assert.equal((await ack(s, 'join', room)).ok, true);
    const all = await ack(s, 'subscribe', { topic: '*' });
    const exact = await ack(s, 'subscribe', { topic: room });
    const wide = await ack(s, 'subscribe', { topic: 'chat:*' });
    for (const r of [all, exact, wide]) assert.equal(r.ok, true);
    const presence = record(other, 'presence');
    const got = record(s, 'event');

    const res = await ack(s, 'refresh', { token: mint({ sub, channels: [room] }) });
    assert.equal(res.ok, true, JSON.stringify(res));
    await until(() => presence.some((p) => p.type === 'leave' && p.member.socketId === s.id),
      'the remaining member sees the narrowed socket leave');
    const members = await ack(other, 'members', admin);
    assert.deepEqual(members.members.map((m) => m.socketId), [other.id]);

    assert.equal((await ack(pub, 'publish', { channel: admin, event: 'secret', data: 1 })).ok, true);
    assert.equal((await ack(pub, 'publish', { channel: room, event: 'open', data: 2 })).ok, true);
    // The room event arrives through the membership and the exact subscription only.
    await until(() => got.filter((e) => e.event === 'open').length >= 2, 'the room event');
    await sleep(300);
    assert.deepEqual(got.filter((e) => e.event === 'secret'), [], 'nothing from the channel the token no longer allows');
    const open = got.filter((e) => e.event === 'open');
    assert.deepEqual(open.map((e) => e.subscriptionId ?? null).sort(), [exact.subscriptionId, null].sort());
    assert.ok(isErr(await ack(s, 'unsubscribe', { subscriptionId: all.subscriptionId }), 'unknown_subscription'));
    assert.ok(isErr(await ack(s, 'unsubscribe', { subscriptionId: wide.subscriptionId }), 'unknown_subscription'));
    assert.equal((await ack(s, 'unsubscribe', { subscriptionId: exact.subscriptionId })).ok, true);
    // And it cannot join back.
    assert.ok(isErr(await ack(s, 'join', admin), 'forbidden'));
  });

  it('a refresh without a channels claim keeps everything', async () => {
    const sub = uniqUser('keep');
    const ch = uniq('chat');
    const s = await connect(srv, { sub, claims: { channels: ['chat:*'] } });
    assert.equal((await ack(s, 'join', ch)).ok, true);
    assert.equal((await ack(s, 'refresh', { token: mint({ sub }) })).ok, true);
    const members = await ack(s, 'members', ch);
    assert.deepEqual(members.members.map((m) => m.socketId), [s.id]);
  });

  it('members is forbidden outside the channels claim', async () => {
    const secret = uniq('admin');
    const inside = uniq('chat');
    const owner = await connect(srv, { claims: { info: { email: 'ada@example.com' } } });
    assert.equal((await ack(owner, 'join', secret)).ok, true);
    const s = await connect(srv, { claims: { channels: ['chat:*'] } });
    const res = await ack(s, 'members', secret);
    assert.ok(isErr(res, 'forbidden'), JSON.stringify(res));
    assert.ok(!JSON.stringify(res).includes('ada@example.com'));
    assert.ok(isErr(await ack(s, 'members', { channel: secret }), 'forbidden'));
    const ok = await ack(s, 'members', inside);
    assert.equal(ok.ok, true);
    // direct is not limited by the claim.
    const d = await ack(s, 'direct', { to: owner.id, event: 'hi', data: 1 });
    assert.equal(d.ok, true);
  });

  it('socket ids carry 64 random bits: no two of 50 sockets are close', async () => {
    const socks = [];
    for (let i = 0; i < 50; i += 1) socks.push(await connect(srv, { transports: ['websocket'] }));
    const tails = socks.map((s) => {
      const m = /-([0-9a-f]{16})$/.exec(s.id);
      assert.ok(m, `socket id ${s.id} ends with 16 hex digits`);
      return BigInt(`0x${m[1]}`);
    }).sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
    // Sequential or counter-based ids sit within a few of each other; 64 random bits put 50 ids
    // more than 2^32 apart but with a probability of about 2^-20.
    for (let i = 1; i < tails.length; i += 1) {
      assert.ok(tails[i] - tails[i - 1] > 2n ** 32n, `ids too close: ${tails[i - 1].toString(16)} ${tails[i].toString(16)}`);
    }
    // A guessed id is not_found.
    const near = socks[0].id.replace(/[0-9a-f]$/, (c) => (c === '0' ? '1' : '0'));
    assert.ok(isErr(await ack(socks[1], 'direct', { to: near, event: 'x', data: 1 }), 'not_found'));
  });
});
