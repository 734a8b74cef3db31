// Running several instances (and the cluster-wide views): real gateway processes
// forming a cluster through a real Redis, real socket.io-client sockets on each instance.
//
// Needs a Redis at REDIS_URL (default redis://127.0.0.1:6379; `.ci/run` starts one) and
// `redis-server` on PATH for the outage test, which runs its own private Redis on a free port
// and never touches the shared one. Every test uses its own key prefix. Long because every
// cluster-wide behaviour is here, sharing one set of instance helpers; its three-instance part
// also runs on a Redis Cluster.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import {
  startServer, connect, ack, mint, uniq, uniqUser, record, until, sleep, isErr, checkEvent, REDIS_URL, redisCmd, api,
  freeLowPort,
} from './fixture.mjs';
import { startRedisCluster, primaryOf, keySlot } from './redis_cluster.mjs';
const rand = () => crypto.randomBytes(4).toString('hex');
const MSG_METRIC = 'socket_gateway_cluster_messages_received_total';

// Every child process this file starts, killed on exit whatever happens.
const children = new Set();
const killChildren = () => { for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } } };
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => { killChildren(); process.exit(128 + 2); });
const alive = (proc) => proc.exitCode === null && proc.signalCode === null;

// ---------------------------------------------------------------------------------------------
// Redis

/** Sends PING (after AUTH if the URL has a password); resolves with the reply line or throws. */
function redisPing(url, timeout = 2000) {
  const u = new URL(url);
  const port = Number(u.port || 6379);
  const host = u.hostname || '127.0.0.1';
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    let buf = '';
    const t = setTimeout(() => { s.destroy(); reject(new Error(`no answer from Redis at ${host}:${port} within ${timeout} ms`)); }, timeout);
    s.on('connect', () => {
      let cmd = '';
      if (u.password) {
        const user = decodeURIComponent(u.username || '');
        const pass = decodeURIComponent(u.password);
        cmd += user ? `AUTH ${user} ${pass}\r\n` : `AUTH ${pass}\r\n`;
      }
      s.write(`${cmd}PING\r\n`);
    });
    s.on('data', (d) => {
      buf += d;
      const lines = buf.split('\r\n').filter(Boolean);
      const want = u.password ? 2 : 1;
      if (lines.length >= want) {
        clearTimeout(t);
        s.destroy();
        const last = lines[lines.length - 1];
        if (last === '+PONG') resolve(last);
        else reject(new Error(`Redis at ${host}:${port} answered ${JSON.stringify(lines)}`));
      }
    });
    s.on('error', (e) => { clearTimeout(t); reject(new Error(`cannot reach Redis at ${host}:${port}: ${e.message}`)); });
  });
}

/** How many connections are SUBSCRIBEd to a pub/sub channel. */
async function numsub(url, topic) {
  const r = await redisCmd(url, 'PUBSUB', 'NUMSUB', topic);
  return Number(r[1]);
}

/** Deletes every key under `prefix:` (the shared Redis is left as it was found). */
async function dropPrefix(url, prefix) {
  let cursor = '0';
  do {
    const [next, keys] = await redisCmd(url, 'SCAN', cursor, 'MATCH', `${prefix}:*`, 'COUNT', '1000');
    cursor = next;
    if (keys.length) await redisCmd(url, 'DEL', ...keys);
  } while (cursor !== '0');
}

async function requireRedis(url) {
  try {
    await redisPing(url);
  } catch (e) {
    throw new Error(`The cluster tests need a running Redis (REDIS_URL=${url}); ${e.message}. `
      + 'Start one (`redis-server --save "" --appendonly no &`) or run through `.ci/run`.');
  }
}

/** A port nobody listens on now, for a private redis-server. */
const freePort = () => freeLowPort({ from: 23000, span: 7000 });

/** A private redis-server on `port`; resolves once it answers PING. */
async function startRedis(port, { password } = {}) {
  const extra = password ? ['--requirepass', password] : [];
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  proc.stdout.on('data', (d) => { out += d; if (out.length > 100_000) out = out.slice(-50_000); });
  proc.stderr.on('data', (d) => { out += d; });
  const spawnErr = new Promise((_, reject) => proc.once('error', (e) => reject(new Error(`cannot start redis-server (is it on PATH?): ${e.message}`))));
  const url = password ? `redis://:${encodeURIComponent(password)}@127.0.0.1:${port}` : `redis://127.0.0.1:${port}`;
  await Promise.race([spawnErr, until(async () => {
    if (!alive(proc)) throw new Error(`redis-server exited (${proc.exitCode ?? proc.signalCode}):\n${out}`);
    try { await redisPing(url, 500); return true; } catch { return false; }
  }, `private redis-server on port ${port}`, 10000)]);
  return {
    proc, url, port,
    signal(sig) { if (alive(proc)) proc.kill(sig); },
    async kill(sig = 'SIGKILL') {
      if (!alive(proc)) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill(sig);
      await gone;
      children.delete(proc);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// instances

/** One gateway instance of the cluster `prefix` on `redisUrl`. */
async function startNode(id, prefix, redisUrl = REDIS_URL, { heartbeat = 500, expiry = 3000 } = {}) {
  const srv = await startServer({
    shards: 2,
    extraArgs: ['--redis-url', redisUrl, '--redis-prefix', prefix, '--instance-id', id,
      '--heartbeat-interval', String(heartbeat), '--instance-expiry', String(expiry)],
  });
  children.add(srv.proc);
  srv.proc.once('exit', () => children.delete(srv.proc));
  srv.id = id;
  return srv;
}

async function readyz(srv) {
  const r = await fetch(`${srv.url}/readyz`);
  return { status: r.status, body: await r.json().catch(() => null) };
}


/** Sum of every series of a Prometheus metric, or null when the metric is not exported. */
async function metric(srv, name) {
  const r = await fetch(`${srv.url}/metrics`);
  const text = await r.text();
  let sum = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

async function requireMetric(srv, name) {
  const v = await metric(srv, name);
  assert.notEqual(v, null, `${srv.id}: /metrics does not export ${name}`);
  return v;
}

const count = (arr, pred) => arr.filter(pred).length;
const sids = (members) => members.map((m) => m.socketId).sort();

// ---------------------------------------------------------------------------------------------

/**
 * The cluster suite, on `backend`: one Redis server, or a Redis Cluster (tests/js/redis_cluster.mjs)
 * where channel traffic is sharded pub/sub. backend: {title, start() → url, numsub(url, prefix,
 * channel) → subscriptions of the channel's topic, drop(url, prefix), stop()}.
 */
function threeInstances(backend) {
describe(`cluster: three instances on ${backend.title}`, () => {
  const prefix = `t${rand()}`;
  let A; let B; let C;
  const nodes = [];

  let url;

  before(async () => {
    url = await backend.start();
    // Pod-style ids (Deployment pod names with a namespace suffix: `-` and `.` inside), so every
    // test of this suite checks that socket ids embedding them route and parse back.
    [A, B, C] = await Promise.all(['a', 'b', 'c'].map((n) => startNode(`gateway-7d9f8-${n}${rand().slice(0, 5)}.ns`, prefix, url)));
    nodes.push(A, B, C);
    for (const n of nodes) await until(async () => (await readyz(n)).status === 200, `${n.id} ready`);
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    // Gracefully stopped instances leave their presence keys behind: remove them.
    await backend.drop(url, prefix).catch((e) => console.log(`# could not remove the keys under ${prefix}: ${e.message}`));
    await backend.stop();
  });

  it('a publish on one instance reaches the members on every instance, exactly once each', async () => {
    const ch = uniq('cl');
    const pubUser = uniqUser('pub');
    const a1 = await connect(A, { sub: pubUser });
    const a2 = await connect(A, { transports: ['websocket'] });
    const b1 = await connect(B, { transports: ['websocket'] });
    const c1 = await connect(C);
    const c2 = await connect(C, { transports: ['websocket'] }); // not a member
    const socks = [a1, a2, b1, c1];
    const recs = socks.map((s) => record(s, 'event'));
    const outsider = record(c2, 'event');
    for (const s of socks) assert.equal((await ack(s, 'join', ch)).ok, true);
    const res = await ack(a1, 'publish', { channel: ch, event: 'msg', data: { n: 1 } });
    assert.equal(res.ok, true, JSON.stringify(res));
    await until(() => recs.every((r) => r.length >= 1), () => `every member gets it: ${JSON.stringify(recs.map((r) => r.length))}`);
    await sleep(400);
    for (const [i, r] of recs.entries()) {
      assert.equal(r.length, 1, `socket ${socks[i].id} got ${r.length} copies: ${JSON.stringify(r)}`);
      checkEvent(r[0], { channel: ch, event: 'msg', data: { n: 1 }, from: { socketId: a1.id, userId: pubUser } });
      assert.equal(r[0].id, res.id);
    }
    assert.equal(outsider.length, 0, 'a socket that is not a member gets nothing');

    // and from the other direction: a non-member publisher on C
    const res2 = await ack(c2, 'publish', { channel: ch, event: 'msg', data: { n: 2 } });
    assert.equal(res2.ok, true);
    await until(() => recs.every((r) => r.length >= 2), 'the second publish reaches every member');
    await sleep(300);
    assert.deepEqual(recs.map((r) => r.length), [2, 2, 2, 2]);
    assert.equal(outsider.length, 0, 'the non-member publisher gets nothing');
  });

  it('a REST broadcast on one instance reaches the members on every instance', async () => {
    const ch = uniq('clrest');
    const a1 = await connect(A);
    const b1 = await connect(B, { transports: ['websocket'] });
    const c1 = await connect(C);
    const socks = [a1, b1, c1];
    const recs = socks.map((s) => record(s, 'event'));
    for (const s of socks) await ack(s, 'join', ch);
    const r = await api(B, 'POST', '/api/socket/broadcast', { channel: ch, event: 'notice', data: { hi: true } });
    assert.equal(r.status, 202, `broadcast status ${r.status}: ${r.text}`);
    assert.equal(r.json?.ok, true);
    await until(() => recs.every((x) => x.length >= 1), () => `every member gets the broadcast: ${JSON.stringify(recs.map((x) => x.length))}`);
    await sleep(300);
    for (const x of recs) {
      assert.equal(x.length, 1);
      checkEvent(x[0], { channel: ch, event: 'notice', data: { hi: true }, from: null });
      assert.equal(x[0].id, r.json.id);
    }
  });

  it('direct messages cross instances; not_found for an unknown socket of a live instance and for an unknown instance', async () => {
    const ua = uniqUser('da');
    const a1 = await connect(A, { sub: ua });
    const b1 = await connect(B, { transports: ['websocket'] });
    const c1 = await connect(C);
    const rb = record(b1, 'event');
    const rc = record(c1, 'event');
    for (const [sock, node] of [[a1, A], [b1, B], [c1, C]]) {
      assert.ok(sock.id.startsWith(`${node.id}-`), `socket id ${sock.id} embeds the instance id ${node.id}`);
      assert.match(sock.id.slice(node.id.length), /^-[0-9a-f]{1,2}-[0-9a-f]{16}$/);
    }
    const res = await ack(a1, 'direct', { to: c1.id, event: 'dm', data: { x: 1 } });
    assert.equal(res.ok, true, JSON.stringify(res));
    await until(() => rc.length === 1, 'c1 gets the direct');
    checkEvent(rc[0], { channel: null, to: c1.id, event: 'dm', data: { x: 1 }, from: { socketId: a1.id, userId: ua } });
    assert.equal(rc[0].id, res.id);

    const res2 = await ack(c1, 'direct', { to: b1.id, event: 'dm', data: 'back' });
    assert.equal(res2.ok, true, JSON.stringify(res2));
    await until(() => rb.length === 1, 'b1 gets the direct');
    checkEvent(rb[0], { channel: null, to: b1.id, event: 'dm', data: 'back' });

    // ids that look right but name no connected socket
    const [inst, shard] = [C.id, 1];
    for (const to of [`${inst}-${shard}-fffff`, `${inst}-0-fffff`, `${inst}-9-1`, `nosuch${rand()}-0-1`,
      `${inst}-${shard}-00000000000fffff`, `${inst}-0${shard}-00000000000fffff`, `${inst.split('.')[0]}-0-0000000000000001`,
      `nosuch-${rand()}.ns-0-0000000000000001`]) {
      const r = await ack(a1, 'direct', { to, event: 'dm', data: null });
      assert.ok(isErr(r, 'not_found'), `direct to ${to}: ${JSON.stringify(r)}`);
    }
    await sleep(200);
    assert.equal(rb.length + rc.length, 2, 'nothing else delivered');
  });

  it('presence join/leave reach members on every instance; join acks and members acks count the cluster', async () => {
    const ch = uniq('clpres');
    const users = [uniqUser('pa'), uniqUser('pb'), uniqUser('pc')];
    const info = { name: 'Cee' };
    const a1 = await connect(A, { sub: users[0] });
    const b1 = await connect(B, { sub: users[1], transports: ['websocket'] });
    const c1 = await connect(C, { sub: users[2], claims: { info } });
    const [ra, rb, rc] = [a1, b1, c1].map((s) => record(s, 'presence'));
    assert.deepEqual(await ack(a1, 'join', ch), { ok: true, channel: ch, members: 1 });
    assert.deepEqual(await ack(b1, 'join', ch), { ok: true, channel: ch, members: 2 });
    assert.deepEqual(await ack(c1, 'join', { channel: ch }), { ok: true, channel: ch, members: 3 });
    const joins = (r, s) => count(r, (p) => p.type === 'join' && p.member?.socketId === s.id);
    await until(() => joins(ra, b1) === 1 && joins(ra, c1) === 1 && joins(rb, c1) === 1 && joins(rc, c1) === 1,
      () => `joins arrive: a=${JSON.stringify(ra)} b=${JSON.stringify(rb)}`);
    const pc = ra.find((p) => p.type === 'join' && p.member.socketId === c1.id);
    assert.equal(pc.channel, ch);
    assert.equal(pc.member.userId, users[2]);
    assert.deepEqual(pc.member.info, info);

    for (const s of [a1, b1, c1]) {
      const m = await ack(s, 'members', ch);
      assert.equal(m.ok, true);
      assert.deepEqual(sids(m.members), sids([a1, b1, c1].map((x) => ({ socketId: x.id }))), `members from ${s.id}: ${JSON.stringify(m)}`);
      const mc = m.members.find((x) => x.socketId === c1.id);
      assert.equal(mc.userId, users[2]);
      assert.deepEqual(mc.info, info);
      assert.equal(typeof mc.joinedAt, 'number');
      assert.equal(m.members.find((x) => x.socketId === a1.id).info, null);
    }

    // leave on B reaches A and C
    await ack(b1, 'leave', ch);
    const leaves = (r, s) => count(r, (p) => p.type === 'leave' && p.member?.socketId === s.id);
    await until(() => leaves(ra, b1) === 1 && leaves(rc, b1) === 1, 'a and c see b leave');
    // a disconnect on C reaches A (socket.io-client forgets socket.id on disconnect: keep it)
    const c1gone = { id: c1.id };
    c1.close();
    await until(() => leaves(ra, c1gone) === 1, 'a sees c disconnect');
    await until(async () => (await ack(a1, 'members', ch)).members.length === 1, 'members shrinks to a1 alone');
    assert.equal(leaves(rb, c1gone), 0, 'b, no longer a member, gets no leave');
  });

  it('echo:false skips every socket of the publisher\'s user on every instance', async () => {
    const ch = uniq('clecho');
    const u = uniqUser('echo');
    const u1 = await connect(A, { sub: u });
    const u2 = await connect(B, { sub: u, transports: ['websocket'] });
    const u3 = await connect(C, { sub: u });
    const o = await connect(C, { transports: ['websocket'] });
    const [r1, r2, r3, ro] = [u1, u2, u3, o].map((s) => record(s, 'event'));
    for (const s of [u1, u2, u3, o]) await ack(s, 'join', ch);
    assert.equal((await ack(u1, 'publish', { channel: ch, event: 'quiet', data: 1, echo: false })).ok, true);
    await until(() => ro.length === 1, 'the other user gets it');
    // marker from the other user: once it arrives everywhere, the first publish would have too
    await ack(o, 'publish', { channel: ch, event: 'marker', data: 2 });
    await until(() => [r1, r2, r3].every((r) => r.some((e) => e.event === 'marker')), 'marker arrives');
    for (const r of [r1, r2, r3]) {
      assert.deepEqual(r.map((e) => e.event), ['marker'], `the publisher's user got ${JSON.stringify(r)}`);
    }
  });

  it('1,000 messages from one publisher on A reach a subscriber on B in order, none lost', async () => {
    const ch = uniq('clorder');
    const pub = await connect(A); // default transports
    const member = await connect(B, { transports: ['websocket'] });
    const subscriber = await connect(B);
    await ack(member, 'join', ch);
    const s = await ack(subscriber, 'subscribe', { topic: ch });
    assert.equal(s.ok, true);
    const got = [];
    const gotSub = [];
    const ids = [];
    member.on('event', (e) => { got.push(e.data.n); ids.push(e.id); });
    subscriber.on('event', (e) => gotSub.push(e.data.n));
    const N = 1000;
    const acks = [];
    for (let i = 0; i < N; i += 1) {
      acks.push(ack(pub, 'publish', { channel: ch, event: 'seq', data: { n: i } }));
      if (i % 100 === 99) await Promise.all(acks.splice(0));
    }
    await Promise.all(acks);
    await until(() => got.length >= N && gotSub.length >= N, () => `all ${N} arrive (member ${got.length}, subscription ${gotSub.length})`, 20000);
    await sleep(200);
    const want = Array.from({ length: N }, (_, i) => i);
    assert.deepEqual(got, want, 'member: every message once, in order');
    assert.deepEqual(gotSub, want, 'subscription: every message once, in order');
    for (let i = 1; i < N; i += 1) {
      assert.ok(Buffer.compare(Buffer.from(ids[i - 1]), Buffer.from(ids[i])) < 0, `ids sort in publish order: ${ids[i - 1]} then ${ids[i]}`);
    }
  });

  it('an instance with no members or subscriptions in a channel receives none of its traffic', async () => {
    const ch = uniq('clinterest');
    const a1 = await connect(A);
    const b1 = await connect(B, { transports: ['websocket'] });
    const c1 = await connect(C); // connected to C, but not in the channel
    await ack(a1, 'join', ch);
    await ack(b1, 'join', ch);
    const rb = record(b1, 'event');
    const rc = record(c1, 'event');
    await sleep(300); // let the presence traffic of the joins settle
    const [b0, c0] = [await requireMetric(B, MSG_METRIC), await requireMetric(C, MSG_METRIC)];
    const N = 100;
    const acks = [];
    for (let i = 0; i < N; i += 1) acks.push(ack(a1, 'publish', { channel: ch, event: 'x', data: i }));
    await Promise.all(acks);
    await until(() => rb.length >= N, () => `B's member gets all ${N} (${rb.length})`);
    await sleep(500);
    const [b1n, c1n] = [await requireMetric(B, MSG_METRIC), await requireMetric(C, MSG_METRIC)];
    assert.ok(b1n - b0 >= N, `B received ${b1n - b0} messages from Redis, want >= ${N}`);
    assert.ok(c1n - c0 < 5, `C, with no interest in ${ch}, received ${c1n - c0} messages from Redis`);
    assert.equal(rc.length, 0);
  });

  it('prefix subscriptions and filters match across instances; exact+pattern interest on one instance delivers once', async () => {
    const base = `${uniq('clsub')}[x]?`; // glob characters must match literally
    const ch = `${base}room`;
    const lookalike = `${base.slice(0, -4)}x1room`; // what an unescaped glob "…[x]?*" would match
    const pub = await connect(A);
    const m = await connect(B, { transports: ['websocket'] });
    const both = await connect(B);
    const sub = await connect(C);
    const sub2 = await connect(C, { transports: ['websocket'] });
    await ack(m, 'join', ch);
    await ack(both, 'join', ch);
    const sBoth = await ack(both, 'subscribe', { topic: `${base}*` });
    const sSub = await ack(sub, 'subscribe', { topic: `${base}*`, filter: { event: 'keep' } });
    const sSub2 = await ack(sub2, 'subscribe', { topic: ch, filter: { where: { k: 1 } } });
    for (const r of [sBoth, sSub, sSub2]) assert.equal(r.ok, true, JSON.stringify(r));
    const [rm, rboth, rsub, rsub2] = [m, both, sub, sub2].map((x) => record(x, 'event'));
    await ack(pub, 'publish', { channel: lookalike, event: 'keep', data: { k: 1 } });
    await ack(pub, 'publish', { channel: ch, event: 'keep', data: { k: 1 } });
    await ack(pub, 'publish', { channel: ch, event: 'drop', data: { k: 2 } });
    await ack(pub, 'publish', { channel: ch, event: 'marker', data: { k: 1 } });
    await until(() => rm.length >= 3 && rboth.length >= 6 && rsub.length >= 1 && rsub2.length >= 2,
      () => `deliveries: m ${rm.length} both ${rboth.length} sub ${rsub.length} sub2 ${rsub2.length}`);
    await sleep(400);
    assert.deepEqual(rm.map((e) => e.event), ['keep', 'drop', 'marker'], 'member');
    const bothMember = rboth.filter((e) => !('subscriptionId' in e));
    const bothSub = rboth.filter((e) => e.subscriptionId === sBoth.subscriptionId);
    assert.deepEqual(bothMember.map((e) => e.event), ['keep', 'drop', 'marker'], `member+subscriber, membership: ${JSON.stringify(rboth)}`);
    assert.deepEqual(bothSub.map((e) => e.event), ['keep', 'drop', 'marker'], `member+subscriber, subscription: ${JSON.stringify(rboth)}`);
    assert.equal(rboth.length, 6, `no duplicates: ${JSON.stringify(rboth)}`);
    assert.deepEqual(rsub.map((e) => [e.channel, e.event, e.subscriptionId]), [[ch, 'keep', sSub.subscriptionId]], 'event filter, prefix topic');
    assert.deepEqual(rsub2.map((e) => [e.event, e.subscriptionId]), [['keep', sSub2.subscriptionId], ['marker', sSub2.subscriptionId]], 'where filter, exact topic');
    checkEvent(rsub2[0], { channel: ch, event: 'keep', data: { k: 1 }, subscriptionId: sSub2.subscriptionId, from: { socketId: pub.id, userId: rsub2[0].from.userId } });
  });

  it('overlapping prefix subscriptions on an instance with no exact interest deliver once each', async () => {
    // A fresh instance, so that its only Redis interest is the two patterns below.
    const G = await startNode(`g${rand()}`, prefix, url);
    nodes.push(G);
    try {
      await until(async () => (await readyz(G)).status === 200, 'G ready');
      const base = uniq('clov');
      const pub = await connect(A);
      const s1 = await connect(G);
      const s2 = await connect(G, { transports: ['websocket'] });
      const id1 = (await ack(s1, 'subscribe', { topic: `${base}*` })).subscriptionId;
      const id2 = (await ack(s2, 'subscribe', { topic: `${base}:x*` })).subscriptionId;
      const id3 = (await ack(s2, 'subscribe', { topic: `${base}*` })).subscriptionId;
      const [r1, r2] = [s1, s2].map((x) => record(x, 'event'));
      await ack(pub, 'publish', { channel: `${base}:x1`, event: 'one', data: null });
      await ack(pub, 'publish', { channel: `${base}:y1`, event: 'two', data: null });
      await until(() => r1.length >= 2 && r2.length >= 3, () => `deliveries: s1 ${JSON.stringify(r1)} s2 ${JSON.stringify(r2)}`);
      await sleep(400);
      assert.deepEqual(r1.map((e) => [e.event, e.subscriptionId]), [['one', id1], ['two', id1]], `s1: ${JSON.stringify(r1)}`);
      assert.deepEqual(r2.map((e) => [e.event, e.subscriptionId]).sort(), [['one', id2], ['one', id3], ['two', id3]].sort(), `s2: ${JSON.stringify(r2)}`);
    } finally {
      await G.stop();
    }
  });

  it('binary attachments cross instances in publishes and directs', async () => {
    const ch = uniq('clbin');
    const a1 = await connect(A);
    const b1 = await connect(B, { transports: ['websocket'] });
    const c1 = await connect(C);
    await ack(b1, 'join', ch);
    const rb = record(b1, 'event');
    const rc = record(c1, 'event');
    const blob = Buffer.from([0, 1, 2, 253, 254, 255]);
    assert.equal((await ack(a1, 'publish', { channel: ch, event: 'bin', data: { name: 'x', blob, list: [blob, 1] } })).ok, true);
    assert.equal((await ack(a1, 'direct', { to: c1.id, event: 'bin', data: blob })).ok, true);
    await until(() => rb.length === 1 && rc.length === 1, 'both arrive');
    assert.equal(rb[0].data.name, 'x');
    assert.ok(Buffer.from(rb[0].data.blob).equals(blob), `publish blob: ${JSON.stringify(rb[0].data)}`);
    assert.ok(Buffer.from(rb[0].data.list[0]).equals(blob));
    assert.equal(rb[0].data.list[1], 1);
    assert.ok(Buffer.from(rc[0].data).equals(blob), `direct blob: ${JSON.stringify(rc[0].data)}`);
  });

  it('interest: an instance SUBSCRIBEs in Redis on its first local member and UNSUBSCRIBEs after its last', async () => {
    // Counted with PUBSUB NUMSUB on the channel's topic (<prefix>:ch:<channel>), or on a Redis
    // Cluster with PUBSUB SHARDNUMSUB on its slot's primary (<prefix>:ch:{<channel>}).
    const ch = uniq('clnumsub');
    const numsubOf = () => backend.numsub(url, prefix, ch);
    const a1 = await connect(A);
    const a2 = await connect(A, { transports: ['websocket'] });
    const b1 = await connect(B);
    await connect(C); // connected, never a member
    assert.equal(await numsubOf(), 0);
    await ack(a1, 'join', ch);
    assert.equal(await numsubOf(), 1, 'subscribed once the join is acked');
    await ack(a2, 'join', ch); // same instance: no second subscription
    await ack(b1, 'join', ch);
    assert.equal(await numsubOf(), 2, 'one subscription per interested instance');
    await ack(b1, 'leave', ch);
    await until(async () => (await numsubOf()) === 1, 'B unsubscribes after its last member leaves');
    await ack(a1, 'leave', ch);
    await sleep(200);
    assert.equal(await numsubOf(), 1, 'A keeps its subscription while a2 is a member');
    a2.close();
    await until(async () => (await numsubOf()) === 0, 'A unsubscribes after its last member disconnects');
  });

  it('clusters with other prefixes on the same Redis are isolated', async () => {
    const xPrefix = `t${rand()}`;
    const X = await startNode(`x${rand()}`, xPrefix, url);
    nodes.push(X);
    try {
      await until(async () => (await readyz(X)).status === 200, 'X ready');
      const ch = uniq('cliso');
      const a1 = await connect(A);
      const b1 = await connect(B);
      const x1 = await connect(X);
      await ack(a1, 'join', ch);
      await ack(b1, 'join', ch);
      assert.equal((await ack(x1, 'join', ch)).members, 1, 'the other cluster\'s members do not count');
      const [ra, rx] = [a1, x1].map((s) => record(s, 'event'));
      const rb = record(b1, 'event');
      await ack(a1, 'publish', { channel: ch, event: 'mine', data: null });
      await ack(x1, 'publish', { channel: ch, event: 'theirs', data: null });
      await until(() => rb.length === 1 && rx.length === 1, 'each cluster delivers its own');
      await sleep(300);
      assert.deepEqual(ra.map((e) => e.event), ['mine']);
      assert.deepEqual(rb.map((e) => e.event), ['mine']);
      assert.deepEqual(rx.map((e) => e.event), ['theirs']);
      assert.deepEqual(sids((await ack(x1, 'members', ch)).members), [x1.id]);
      assert.deepEqual(sids((await ack(b1, 'members', ch)).members), [a1.id, b1.id].sort());
      assert.ok(isErr(await ack(x1, 'direct', { to: a1.id, event: 'dm', data: null }), 'not_found'));
    } finally {
      await X.stop();
      await backend.drop(url, xPrefix).catch(() => {});
    }
  });

  it('an instance killed with SIGKILL leaves members, channels and connections within 15 s', async () => {
    const D = await startNode(`d${rand()}`, prefix, url);
    nodes.push(D);
    await until(async () => (await readyz(D)).status === 200, 'D ready');
    const ch = uniq('clkill');
    const a1 = await connect(A);
    const d1 = await connect(D);
    const d2 = await connect(D, { transports: ['websocket'] });
    await ack(a1, 'join', ch);
    await ack(d1, 'join', ch);
    assert.equal((await ack(d2, 'join', ch)).members, 3);
    const ra = record(a1, 'event');

    // D is in every view first
    const m0 = await ack(a1, 'members', ch);
    assert.deepEqual(sids(m0.members), [a1.id, d1.id, d2.id].sort());
    const views = async () => {
      const [chs, mem, conns] = await Promise.all([
        api(A, 'GET', `/api/socket/channels?prefix=${encodeURIComponent(ch)}`),
        api(B, 'GET', `/api/socket/channels/${encodeURIComponent(ch)}/members`),
        api(C, 'GET', '/api/socket/connections'),
      ]);
      return { chs, mem, conns };
    };
    let last = null;
    let v = await until(async () => {
      last = await views();
      // connection counts travel with the heartbeats: allow them a moment
      return last.conns.json?.instances?.some((i) => i.id === D.id && i.connections === 2)
        && last.chs.json?.channels?.[0]?.members === 3 ? last : null;
    }, () => `REST views show D: ${JSON.stringify(last)}`, 5000).catch((e) => e);
    const restOk = !(v instanceof Error);
    if (restOk) {
      assert.equal(v.mem.json.members.length, 3, JSON.stringify(v.mem.json));
      const di = v.conns.json.instances.find((i) => i.id === D.id);
      assert.equal(di.connections, 2, JSON.stringify(v.conns.json));
    }

    const d1id = d1.id; // socket.io-client forgets socket.id on disconnect
    D.proc.kill('SIGKILL');
    const t0 = Date.now();
    let lastM = null;
    await until(async () => {
      const m = await ack(a1, 'members', ch);
      lastM = m;
      return m.ok && m.members.length === 1 && m.members[0].socketId === a1.id;
    }, () => `D's members leave the members ack: ${JSON.stringify(lastM)}`, 15000);
    const tMembers = Date.now() - t0;
    assert.equal((await ack(a1, 'join', ch)).members, 1, 'join ack counts only live instances');
    // d1 is recoverable (for the recovery window, on any instance): a direct to it is kept for it.
    const kept = await ack(a1, 'direct', { to: d1id, event: 'dm', data: null });
    assert.equal(kept.ok, true, `direct to a recoverable socket of a dead instance: ${JSON.stringify(kept)}`);
    const dead = await ack(a1, 'direct', { to: `${D.id}-0-0000000000000001`, event: 'dm', data: null });
    assert.ok(isErr(dead, 'not_found'), `direct to no socket of a dead instance: ${JSON.stringify(dead)}`);
    // publishing still works for the survivors
    await ack(a1, 'publish', { channel: ch, event: 'after', data: null });
    await until(() => ra.length === 1, 'a1 still gets its own channel traffic');

    if (v instanceof Error) throw v; // REST views never showed D: report it after the socket checks
    await until(async () => {
      v = await views();
      return v.chs.json?.channels?.[0]?.members === 1 && v.mem.json?.members?.length === 1
        && !v.conns.json?.instances?.some((i) => i.id === D.id);
    }, () => `REST views drop D: ${JSON.stringify(v)}`, Math.max(1000, 15000 - (Date.now() - t0)));
    assert.ok(Date.now() - t0 <= 15000);
    console.log(`# killed instance left the members view after ${tMembers} ms, every view after ${Date.now() - t0} ms`);
  });
});
}

threeInstances({
  title: 'one Redis',
  start: async () => { await requireRedis(REDIS_URL); return REDIS_URL; },
  numsub: (url, prefix, ch) => numsub(url, `${prefix}:ch:${ch}`),
  drop: dropPrefix,
  stop: async () => {},
});

// The same suite on a private Redis Cluster: channels SSUBSCRIBEd on their slot's primary only.
let redisCluster = null;
threeInstances({
  title: 'a Redis Cluster (3 primaries + 3 replicas, sharded pub/sub)',
  start: async () => { redisCluster = await startRedisCluster(); return redisCluster.url; },
  numsub: async (url, prefix, ch) => {
    const topic = `${prefix}:ch:{${ch}}`;
    const port = redisCluster.ports[0];
    const owner = await primaryOf(port, await keySlot(port, topic));
    let n = 0;
    for (const p of await redisCluster.primaries()) {
      const [, k] = await redisCmd(`redis://127.0.0.1:${p}`, 'PUBSUB', 'SHARDNUMSUB', topic);
      if (p !== owner) assert.equal(Number(k), 0, `${topic} subscribed on ${p}, which does not own its slot (${owner} does)`);
      else n = Number(k);
    }
    return n;
  },
  drop: async () => {}, // private, stopped after
  stop: async () => redisCluster?.stop(),
});

describe('cluster: Redis stopped and restarted mid-traffic', () => {
  const prefix = `t${rand()}`;
  let redis; let E; let F;

  before(async () => {
    redis = await startRedis(await freePort());
    [E, F] = await Promise.all([startNode(`e${rand()}`, prefix, redis.url), startNode(`f${rand()}`, prefix, redis.url)]);
    for (const n of [E, F]) await until(async () => (await readyz(n)).status === 200, `${n.id} ready`);
  });
  after(async () => {
    await Promise.all([E?.stop(), F?.stop()]);
    await redis?.kill();
  });

  it('no crash, local delivery throughout, /readyz 503 then 200, cross-instance delivery and presence back within 5 s', async () => {
    const ch = uniq('cloutage');
    const ch2 = uniq('cloutage2');
    const e1 = await connect(E);
    const e2 = await connect(E, { transports: ['websocket'] });
    const f1 = await connect(F, { transports: ['websocket'] });
    const f2 = await connect(F);
    for (const s of [e1, e2, f1]) await ack(s, 'join', ch);
    await ack(f2, 'join', ch2); // E has no interest in ch2 yet
    const ep = await connect(E, { transports: ['websocket'] });
    const pat = (await ack(ep, 'subscribe', { topic: `${ch}:*` })).subscriptionId; // a Redis pattern subscription
    const rep = record(ep, 'event');
    const re2 = []; const rf1 = []; const re1 = [];
    e2.on('event', (e) => { if (e.from?.socketId === e1.id) re2.push({ n: e.data, at: Date.now() }); });
    f1.on('event', (e) => { if (e.from?.socketId === e1.id) rf1.push({ n: e.data, at: Date.now() }); });
    e1.on('event', (e) => { if (e.from?.socketId === f1.id) re1.push({ n: e.data, at: Date.now() }); });

    // steady traffic both ways
    let n = 0;
    let stop = false;
    const traffic = (async () => {
      while (!stop) {
        n += 1;
        e1.emit('publish', { channel: ch, event: 'tick', data: n });
        f1.emit('publish', { channel: ch, event: 'tock', data: n });
        await sleep(50);
      }
    })();
    try {
      await until(() => rf1.length >= 5 && re1.length >= 5 && re2.length >= 5, 'traffic flows both ways before the outage');

      await redis.kill('SIGKILL');
      const tDown = Date.now();
      for (const s of [E, F]) {
        const r = await until(async () => { const x = await readyz(s); return x.status === 503 ? x : null; }, `${s.id} /readyz says 503`, 10000);
        assert.equal(r.body?.status, 'unavailable', JSON.stringify(r.body));
        assert.equal(typeof r.body?.reason, 'string');
        assert.ok(r.body.reason.length > 0);
      }
      // local delivery during the outage
      const localBefore = re2.length;
      await sleep(1500);
      assert.ok(re2.length - localBefore >= 10, `E's own member keeps receiving E's publishes during the outage (${re2.length - localBefore} in 1.5 s)`);
      assert.ok(alive(E.proc) && alive(F.proc), 'both instances alive');
      // members ack and join during the outage answer from the local view
      const m = await ack(e2, 'members', ch);
      assert.equal(m.ok, true, JSON.stringify(m));
      assert.ok(m.members.some((x) => x.socketId === e1.id), JSON.stringify(m));
      // the REST views answer from the instance's own view meanwhile
      const rc = await api(E, 'GET', `/api/socket/channels/${encodeURIComponent(ch)}/members`);
      assert.equal(rc.status, 200, rc.text);
      assert.deepEqual(sids(rc.json.members), [e1.id, e2.id].sort(), `E's own members during the outage: ${rc.text}`);
      const cc = await api(E, 'GET', '/api/socket/connections');
      assert.equal(cc.status, 200, cc.text);
      assert.ok(cc.json.instances.some((i) => i.id === E.id), cc.text);
      const e3 = await connect(E);
      const re3 = record(e3, 'event');
      const j = await ack(e3, 'join', ch2);
      assert.equal(j.ok, true, JSON.stringify(j));
      const direct = await ack(e1, 'direct', { to: f1.id, event: 'dm', data: null });
      assert.equal(direct.ok, false, `a direct to another instance cannot cross during the outage: ${JSON.stringify(direct)}`);
      const pubDown = await ack(e1, 'publish', { channel: ch, event: 'tick', data: -1 });
      assert.equal(pubDown.ok, true, 'a publish still succeeds locally');
      console.log(`# outage: ${Date.now() - tDown} ms`);

      // Redis back on the same port (empty: no persistence)
      redis = await startRedis(redis.port);
      const tUp = Date.now();
      const fBefore = rf1.length;
      const eBefore = re1.length;
      await until(() => rf1.length > fBefore && re1.length > eBefore, 'cross-instance delivery resumes both ways', 5000);
      const tCross = Date.now() - tUp;
      // a topic of interest gained during the outage is subscribed too
      await until(async () => {
        await ack(f2, 'publish', { channel: ch2, event: 'late', data: null });
        return re3.some((e) => e.event === 'late');
      }, 'a channel joined during the outage gets cross-instance traffic', Math.max(500, 5000 - (Date.now() - tUp)));
      await until(async () => {
        await ack(f2, 'publish', { channel: `${ch}:sub`, event: 'pat', data: null });
        return rep.some((e) => e.event === 'pat' && e.subscriptionId === pat);
      }, 'a prefix subscription made before the outage gets cross-instance traffic again', Math.max(500, 5000 - (Date.now() - tUp)));
      for (const s of [E, F]) {
        await until(async () => (await readyz(s)).status === 200, `${s.id} /readyz 200 again`, Math.max(500, 5000 - (Date.now() - tUp)));
      }
      // presence rewritten into the empty Redis: cluster-wide again
      const want = [e1.id, e2.id, f1.id].sort();
      let lastMs = null;
      await until(async () => {
        const [me, mf] = await Promise.all([ack(e1, 'members', ch), ack(f1, 'members', ch)]);
        lastMs = { E: me, F: mf };
        return me.ok && mf.ok && JSON.stringify(sids(me.members)) === JSON.stringify(want)
          && JSON.stringify(sids(mf.members)) === JSON.stringify(want);
      }, () => `members cluster-wide again: ${JSON.stringify(lastMs)}`, 5000);
      assert.equal((await ack(f2, 'join', ch2)).members, 2, 'join ack counts E\'s member joined during the outage');
      const d2 = await ack(e1, 'direct', { to: f1.id, event: 'dm', data: null });
      assert.equal(d2.ok, true, `direct crosses again: ${JSON.stringify(d2)}`);
      console.log(`# cross-instance delivery back ${tCross} ms after Redis restarted`);
      assert.ok(alive(E.proc) && alive(F.proc), 'both instances alive');
    } finally {
      stop = true;
      await traffic;
    }
  });
});

describe('cluster: a Redis that stops answering (SIGSTOP, like a network partition)', () => {
  const prefix = `t${rand()}`;
  let redis; let E; let F;

  before(async () => {
    redis = await startRedis(await freePort());
    [E, F] = await Promise.all([startNode(`e${rand()}`, prefix, redis.url), startNode(`f${rand()}`, prefix, redis.url)]);
    for (const n of [E, F]) await until(async () => (await readyz(n)).status === 200, `${n.id} ready`);
  });
  after(async () => {
    redis?.signal('SIGCONT');
    await Promise.all([E?.stop(), F?.stop()]);
    await redis?.kill();
  });

  it('/readyz says 503 within 10 s, local delivery continues, and all is back within 5 s of Redis answering again', async () => {
    const ch = uniq('clhang');
    const e1 = await connect(E);
    const e2 = await connect(E, { transports: ['websocket'] });
    const f1 = await connect(F);
    for (const s of [e1, e2, f1]) await ack(s, 'join', ch);
    const [re2, rf1] = [e2, f1].map((s) => record(s, 'event'));
    redis.signal('SIGSTOP');
    let contd = false;
    try {
      const t0 = Date.now();
      let n = 0;
      const r = await until(async () => {
        n += 1;
        e1.emit('publish', { channel: ch, event: 'tick', data: n });
        const x = await readyz(E);
        return x.status === 503 ? x : null;
      }, () => `${E.id} /readyz says 503 while Redis does not answer (still 200 after ${n} polls)`, 10000).catch((e) => e);
      // local delivery regardless
      await until(() => re2.length >= Math.min(n, 5), `E's own member keeps receiving (${re2.length} of ${n})`, 5000);
      const j = Date.now();
      const ja = await ack(e2, 'join', uniq('clhang2'));
      const joinMs = Date.now() - j;
      if (r instanceof Error) throw new Error(`${r.message}; a join took ${joinMs} ms meanwhile (${JSON.stringify(ja)})`);
      assert.equal(typeof r.body?.reason, 'string');
      console.log(`# unresponsive Redis: /readyz 503 after ${Date.now() - t0} ms; a join took ${joinMs} ms`);
    } finally {
      redis.signal('SIGCONT');
      contd = true;
    }
    assert.ok(contd);
    const t1 = Date.now();
    const before = rf1.length;
    await until(() => {
      e1.emit('publish', { channel: ch, event: 'tock', data: null });
      return rf1.length > before;
    }, 'cross-instance delivery resumes', 5000);
    await until(async () => (await readyz(E)).status === 200, '/readyz 200 again', Math.max(500, 5000 - (Date.now() - t1)));
  });
});

describe('cluster: an instance that stalls longer than the expiry and then resumes', () => {
  const prefix = `t${rand()}`;
  let H1; let H2;
  const timing = { heartbeat: 200, expiry: 1000 }; // peers forget a silent instance after 4 expiries

  before(async () => {
    await requireRedis(REDIS_URL);
    [H1, H2] = await Promise.all([startNode(`h${rand()}`, prefix, REDIS_URL, timing), startNode(`h${rand()}`, prefix, REDIS_URL, timing)]);
    for (const n of [H1, H2]) await until(async () => (await readyz(n)).status === 200, `${n.id} ready`);
  });
  after(async () => {
    H2?.proc.kill('SIGCONT');
    await Promise.all([H1?.stop(), H2?.stop()]);
    await dropPrefix(REDIS_URL, prefix).catch((e) => console.log(`# could not remove the keys under ${prefix}: ${e.message}`));
  });

  it('its members come back into the cluster views once its heartbeats resume', async () => {
    const ch = uniq('clstall');
    const h1 = await connect(H1, { transports: ['websocket'] });
    const h2 = await connect(H2, { transports: ['websocket'] });
    await ack(h1, 'join', ch);
    assert.equal((await ack(h2, 'join', ch)).members, 2);
    const h2id = h2.id;
    H2.proc.kill('SIGSTOP');
    try {
      await until(async () => (await ack(h1, 'members', ch)).members.length === 1, 'the stalled instance leaves the views', 5000);
      await sleep(4 * timing.expiry + 1000); // long enough for H1 to forget H2 entirely
      assert.equal(await redisCmd(REDIS_URL, 'ZSCORE', `${prefix}:instances`, H2.id), null, 'H1 collected the stalled H2');
      assert.equal(await redisCmd(REDIS_URL, 'EXISTS', `${prefix}:i:${H2.id}:m:${ch}`), 0, 'with its member list');
    } finally {
      H2.proc.kill('SIGCONT');
    }
    const rh1 = record(h1, 'event');
    await until(() => {
      h2.emit('publish', { channel: ch, event: 'alive', data: null });
      return rh1.length > 0;
    }, 'H2 delivers across again');
    let last = null;
    await until(async () => {
      last = await ack(h1, 'members', ch);
      return last.members.length === 2;
    }, () => `H2's member ${h2id} back in H1's members view: ${JSON.stringify(last)}`, 5000);
    assert.equal((await ack(h1, 'join', ch)).members, 2);
    // H2 was stopped right after its socket connected: its count must not lag behind its member.
    const conns = await api(H1, 'GET', '/api/socket/connections');
    const byId = Object.fromEntries((conns.json?.instances ?? []).map((i) => [i.id, i.connections]));
    assert.deepEqual(byId, { [H1.id]: 1, [H2.id]: 1 }, conns.text);
    assert.equal(conns.json.connections, 2, conns.text);
    // Every per-instance key is bounded by a TTL (nothing is left forever if no peer collects it).
    for (const k of ['info', 'ch', 'keys', `m:${ch}`]) {
      const ttl = await redisCmd(REDIS_URL, 'PTTL', `${prefix}:i:${H2.id}:${k}`);
      assert.ok(ttl > 0, `${k}: PTTL ${ttl}`);
    }
  });
});

describe('cluster: a Redis that requires a password', () => {
  const prefix = `t${rand()}`;
  const password = `pw-${rand()}`;
  let redis; let P; let Q; let W;

  before(async () => {
    redis = await startRedis(await freePort(), { password });
  });
  after(async () => {
    await Promise.all([P?.stop(), Q?.stop(), W?.stop()]);
    await redis?.kill();
  });

  it('instances with the password in the URL form a cluster; a wrong password is reported by /readyz', async () => {
    [P, Q] = await Promise.all([startNode(`p${rand()}`, prefix, redis.url), startNode(`q${rand()}`, prefix, redis.url)]);
    for (const n of [P, Q]) await until(async () => (await readyz(n)).status === 200, `${n.id} ready`);
    const ch = uniq('clauth');
    const p1 = await connect(P);
    const q1 = await connect(Q, { transports: ['websocket'] });
    await ack(p1, 'join', ch);
    assert.equal((await ack(q1, 'join', ch)).members, 2);
    const rq = record(q1, 'event');
    await ack(p1, 'publish', { channel: ch, event: 'hello', data: null });
    await until(() => rq.length === 1, 'the publish crosses');

    W = await startNode(`w${rand()}`, prefix, `redis://:wrong-${rand()}@127.0.0.1:${redis.port}`);
    const r = await until(async () => { const x = await readyz(W); return x.status === 503 ? x : null; }, 'wrong password: /readyz 503', 5000);
    assert.equal(r.body?.status, 'unavailable');
    assert.ok(typeof r.body?.reason === 'string' && r.body.reason.length > 0, JSON.stringify(r.body));
    assert.ok(alive(W.proc), 'a wrong password does not stop the instance');
    const w1 = await connect(W);
    const j = await ack(w1, 'join', ch);
    assert.deepEqual(j, { ok: true, channel: ch, members: 1 }, 'it serves its own sockets alone');
  });
});

describe('cluster: an instance killed with SIGKILL under load', () => {
  const prefix = `t${rand()}`;
  let A; let B; let D;
  before(async () => {
    await requireRedis(REDIS_URL);
    [A, B, D] = await Promise.all(['a', 'b', 'd'].map((n) => startNode(`${n}${rand()}`, prefix)));
    for (const n of [A, B, D]) await until(async () => (await readyz(n)).status === 200, `${n.id} ready`);
  });
  after(async () => {
    await Promise.all([A, B, D].map((n) => n?.stop()));
    await dropPrefix(REDIS_URL, prefix).catch((e) => console.log(`# could not remove the keys under ${prefix}: ${e.message}`));
  });

  const rssKiB = (srv) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${srv.proc.pid}/status`, 'utf8'))[1]);

  it('the survivors keep delivering in order with nothing lost, and their memory stays bounded', async () => {
    const ch = uniq('clload');
    const pub = await connect(A, { transports: ['websocket'] });
    const b1 = await connect(B, { transports: ['websocket'] });
    const ds = await Promise.all([0, 1, 2].map(() => connect(D, { transports: ['websocket'] })));
    await ack(b1, 'join', ch);
    for (const d of ds) await ack(d, 'join', ch);
    const got = record(b1, 'event');
    const rss0 = { A: rssKiB(A), B: rssKiB(B) };
    // Steady traffic from A: 2,000 publishes in windows of 50; D is killed a third of the way in.
    const N = 2000;
    for (let i = 0; i < N; i += 50) {
      if (i === 650) D.proc.kill('SIGKILL');
      await Promise.all(Array.from({ length: 50 }, (_, j) => ack(pub, 'publish', { channel: ch, event: 'load', data: i + j })));
    }
    await until(() => got.length >= N, () => `B received ${got.length} of ${N}`, 15000);
    const seqs = got.map((e) => e.data);
    assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i), 'in order, none lost, none duplicated');
    // D leaves the views; A and B are alive and answer.
    await until(async () => (await ack(pub, 'members', ch)).members.length === 1, "D's members leave the view", 15000);
    for (const n of [A, B]) assert.equal((await readyz(n)).status, 200);
    const rss1 = { A: rssKiB(A), B: rssKiB(B) };
    console.log(`# RSS KiB before/after: A ${rss0.A}/${rss1.A}, B ${rss0.B}/${rss1.B}`);
    for (const k of ['A', 'B']) assert.ok(rss1[k] - rss0[k] < 64 * 1024, `${k} grew by ${rss1[k] - rss0[k]} KiB`);
  });
});
