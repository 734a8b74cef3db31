// `members` a page at a time: the socket event with {channel, limit?, after?} and the REST route with
// ?limit=&after=, ordered by socket id, `next` while more remain; bad arguments; and the pages of a
// channel whose members are on two instances of a cluster through a real Redis.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  startServer, connect, ack, mint, uniq, until, closeAll, isErr, REDIS_URL, dropRedisKeys,
} from './fixture.mjs';
import { createRealtime } from '../../clients/js/index.js';

const ADMIN = mint({ role: 'admin' });
const rand = () => crypto.randomBytes(4).toString('hex');
// Socket ids are ASCII, so JavaScript's default sort is their byte order.
const sorted = (ids) => [...ids].sort();

async function rest(srv, path) {
  const r = await fetch(`${srv.url}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}

const membersPath = (ch, q = '') => `/api/socket/channels/${encodeURIComponent(ch)}/members${q}`;

/** Connects n sockets and joins them all to ch; their ids. */
async function joinMany(srv, ch, n) {
  const socks = await Promise.all(Array.from({ length: n }, () => connect(srv)));
  for (const s of socks) assert.equal((await ack(s, 'join', ch)).ok, true);
  return socks.map((s) => s.id);
}

/**
 * Walks every page with `get(after)` (one page's answer); checks each page's shape, order and
 * `next`, and returns the socket ids in the order the pages gave them.
 */
async function walk(get, limit, { ok = true, maxPages = 100 } = {}) {
  const seen = [];
  let after;
  for (let i = 0; i < maxPages; i += 1) {
    const page = await get(after);
    const keys = ['channel', 'members', ...(ok ? ['ok'] : []), ...('next' in page ? ['next'] : [])];
    assert.deepEqual(Object.keys(page).sort(), keys.sort(), JSON.stringify(page));
    if (ok) assert.equal(page.ok, true);
    const ids = page.members.map((m) => m.socketId);
    assert.ok(ids.length <= limit, `at most ${limit}: ${ids.length}`);
    assert.deepEqual(ids, sorted(ids), 'a page is ordered by socket id');
    if (after !== undefined) assert.ok(ids.every((id) => id > after), 'only ids after `after`');
    seen.push(...ids);
    if (!('next' in page)) return seen;
    assert.equal(ids.length, limit, 'a page with a next is full');
    assert.equal(page.next, ids[ids.length - 1], 'next is the last id of the page');
    after = page.next;
  }
  throw new Error(`more than ${maxPages} pages`);
}

describe('members pages [shards=2]', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 2 }); });
  after(async () => { await srv?.stop(); });
  afterEach(() => closeAll(srv));

  it('30 members walked 7 at a time by the socket event: every member once, in socket id order', async () => {
    const ch = uniq('pages');
    const ids = await joinMany(srv, ch, 30);
    const asker = await connect(srv);
    let pages = 0;
    const seen = await walk(async (afterId) => {
      pages += 1;
      return ack(asker, 'members', { channel: ch, limit: 7, ...(afterId === undefined ? {} : { after: afterId }) });
    }, 7);
    assert.equal(pages, 5);
    assert.deepEqual(seen, sorted(ids));

    // The plain channel name: every member (fewer than 1000), ordered, no next.
    const all = await ack(asker, 'members', ch);
    assert.deepEqual(Object.keys(all).sort(), ['channel', 'members', 'ok']);
    assert.deepEqual(all.members.map((m) => m.socketId), sorted(ids));
    const obj = await ack(asker, 'members', { channel: ch, limit: null, after: null });
    assert.deepEqual(obj, all);
  });

  it('limit at or above the count, a capped limit, after the last id, an empty channel', async () => {
    const ch = uniq('pages');
    const ids = sorted(await joinMany(srv, ch, 3));
    const a = await connect(srv);
    const exact = await ack(a, 'members', { channel: ch, limit: 3 });
    assert.deepEqual(exact.members.map((m) => m.socketId), ids);
    assert.ok(!('next' in exact), JSON.stringify(exact));
    const big = await ack(a, 'members', { channel: ch, limit: 1_000_000 });
    assert.deepEqual(big.members.map((m) => m.socketId), ids);
    assert.ok(!('next' in big));
    const one = await ack(a, 'members', { channel: ch, limit: 1, after: ids[0] });
    assert.deepEqual(one, { ...one, ok: true, channel: ch, next: ids[1] });
    assert.deepEqual(one.members.map((m) => m.socketId), [ids[1]]);
    assert.deepEqual(await ack(a, 'members', { channel: ch, after: ids[2] }), { ok: true, channel: ch, members: [] });
    assert.deepEqual(await ack(a, 'members', { channel: ch, after: '' }), await ack(a, 'members', ch));
    const none = uniq('none');
    assert.deepEqual(await ack(a, 'members', { channel: none, limit: 7 }), { ok: true, channel: none, members: [] });
  });

  it('REST: ?limit=7&after= walks the same pages', async () => {
    const ch = uniq('pages');
    const ids = await joinMany(srv, ch, 30);
    const seen = await walk(async (afterId) => {
      const q = `?limit=7${afterId === undefined ? '' : `&after=${encodeURIComponent(afterId)}`}`;
      const r = await rest(srv, membersPath(ch, q));
      assert.equal(r.status, 200, r.text);
      return r.json;
    }, 7, { ok: false });
    assert.deepEqual(seen, sorted(ids));
    const all = await rest(srv, membersPath(ch));
    assert.deepEqual(Object.keys(all.json).sort(), ['channel', 'members']);
    assert.deepEqual(all.json.members.map((m) => m.socketId), sorted(ids));
    const empty = await rest(srv, membersPath(ch, '?limit=&after='));
    assert.deepEqual(empty.json, all.json, 'empty parameters are absent ones');
  });

  it('clients/js: members(channel, {limit, after}) walks the pages; members(channel) is unchanged', async () => {
    const ch = uniq('pages');
    const ids = await joinMany(srv, ch, 9);
    const rt = createRealtime({ url: srv.url, token: mint({}), reconnection: false });
    try {
      await rt.ready();
      const seen = await walk((afterId) => rt.socketClient.members(ch, { limit: 4, after: afterId }), 4);
      assert.deepEqual(seen, sorted(ids));
      assert.deepEqual((await rt.socketClient.members(ch)).members.map((m) => m.socketId), sorted(ids));
    } finally {
      rt.close();
    }
  });

  it('bad limit or after: bad_request from the event and 400 bad_request from REST', async () => {
    const ch = uniq('pages');
    const a = await connect(srv);
    await ack(a, 'join', ch);
    for (const arg of [
      { channel: ch, limit: 0 }, { channel: ch, limit: -1 }, { channel: ch, limit: 2.5 },
      { channel: ch, limit: '7' }, { channel: ch, limit: true }, { channel: ch, after: 5 },
      { channel: ch, after: ['x'] }, { channel: ch, after: 'x'.repeat(161) }, { limit: 7 },
    ]) {
      const r = await ack(a, 'members', arg);
      assert.ok(isErr(r, 'bad_request'), `${JSON.stringify(arg)} → ${JSON.stringify(r)}`);
    }
    for (const q of ['?limit=0', '?limit=-1', '?limit=x', '?limit=1.5', `?after=${'x'.repeat(161)}`]) {
      const r = await rest(srv, membersPath(ch, q));
      assert.equal(r.status, 400, `${q}: ${r.text}`);
      assert.equal(r.json.error.code, 'bad_request', q);
    }
    assert.equal((await ack(a, 'members', ch)).members.length, 1, 'the socket still works');
  });
});

describe('members pages across two instances through Redis', () => {
  const prefix = `mp${rand()}`;
  const nodes = [];

  before(async () => {
    for (const n of ['a', 'b']) {
      nodes.push(await startServer({
        shards: 2,
        extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix, '--instance-id', `${n}${rand()}`,
          '--heartbeat-interval', '500', '--instance-expiry', '3000'],
      }));
    }
    for (const n of nodes) {
      await until(async () => (await fetch(`${n.url}/readyz`)).status === 200, 'instance ready');
    }
  });
  after(async () => {
    for (const n of nodes) closeAll(n);
    await Promise.all(nodes.map((n) => n.stop()));
    await dropRedisKeys(REDIS_URL, prefix).catch((e) => console.log(`# could not remove ${prefix}:*: ${e.message}`));
  });

  it('pages hold the members of both instances, in one socket id order', async () => {
    const [A, B] = nodes;
    const ch = uniq('pages');
    const ids = sorted([...await joinMany(A, ch, 5), ...await joinMany(B, ch, 6)]);
    const asker = await connect(A);
    await until(async () => (await ack(asker, 'members', ch)).members.length === 11, 'both instances listed');
    const seen = await walk((afterId) => ack(asker, 'members', {
      channel: ch, limit: 3, ...(afterId === undefined ? {} : { after: afterId }),
    }), 3);
    assert.deepEqual(seen, ids);
    const viaB = await walk(async (afterId) => {
      const r = await rest(B, membersPath(ch, `?limit=4${afterId === undefined ? '' : `&after=${encodeURIComponent(afterId)}`}`));
      assert.equal(r.status, 200, r.text);
      return r.json;
    }, 4, { ok: false });
    assert.deepEqual(viaB, ids);
  });
});
