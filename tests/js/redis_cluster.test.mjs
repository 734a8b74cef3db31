// Gateway instances on a Redis Cluster (docs/protocol.md, "On a Redis Cluster"): real redis-server
// processes in cluster mode (3 primaries + 3 replicas, tests/js/redis_cluster.mjs, started and torn
// down by this file; it fails when redis-server or redis-cli is missing), real gateway processes,
// real socket.io-client sockets. The three-instance cluster suite and the recovery-across-instances
// suite also run on a Redis Cluster (cluster.test.mjs, recovery.test.mjs); this file covers what
// only a cluster has: where keys and subscriptions live, a primary that dies, a slot that moves.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import {
  startServer, connect, ack, uniq, record, until, sleep, isErr, redisCmd,
} from './fixture.mjs';
import { startRedisCluster, clusterNodes, primaryOf, keySlot } from './redis_cluster.mjs';

const rand = () => crypto.randomBytes(4).toString('hex');

async function startNode(id, prefix, url, extra = []) {
  const srv = await startServer({
    shards: 2,
    extraArgs: ['--redis-url', url, '--redis-prefix', prefix, '--instance-id', id,
      '--heartbeat-interval', '500', '--instance-expiry', '3000', ...extra],
  });
  srv.id = id;
  return srv;
}

async function ready(srv) {
  await until(async () => (await fetch(`${srv.url}/readyz`)).status === 200, `${srv.id} ready`);
}

/** CRC16/XMODEM, the Redis Cluster's key hash. */
function crc16(buf) {
  let crc = 0;
  for (const b of buf) {
    crc ^= b << 8;
    for (let k = 0; k < 8; k += 1) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}
const slotOfTag = (tag) => crc16(Buffer.from(tag)) % 16384;

/** A channel name (made of `base`) whose slot satisfies `pred`. */
function channelWhere(base, pred) {
  for (let k = 0; ; k += 1) {
    const ch = `${base}-${k}`;
    if (pred(slotOfTag(ch))) return ch;
  }
}

describe('Redis Cluster: two instances (--redis-cluster with a plain redis:// seed)', () => {
  const prefix = `rc${rand()}`;
  let cluster;
  let A;
  let B;
  before(async () => {
    cluster = await startRedisCluster();
    const seed = `redis://127.0.0.1:${cluster.ports[0]}`;
    [A, B] = await Promise.all([
      startNode(`a${rand()}`, prefix, seed, ['--redis-cluster']),
      startNode(`b${rand()}`, prefix, seed, ['--redis-cluster']),
    ]);
    await ready(A);
    await ready(B);
  });
  after(async () => {
    await Promise.all([A, B].filter(Boolean).map((n) => n.stop()));
    cluster?.stop();
  });

  it('publish, direct and members cross instances; many channels spread over every primary, each subscribed only where its slot lives', async () => {
    const a = await connect(A);
    const b = await connect(B, { transports: ['websocket'] });
    const channels = Array.from({ length: 12 }, () => uniq('rc'));
    for (const ch of channels) {
      assert.equal((await ack(a, 'join', ch)).ok, true);
      assert.equal((await ack(b, 'join', ch)).members, 2);
    }
    const rb = record(b, 'event');
    for (const ch of channels) assert.equal((await ack(a, 'publish', { channel: ch, event: 'm', data: ch })).ok, true);
    await until(() => rb.length === channels.length, () => `b got ${rb.length} of ${channels.length}`);
    // one each (order holds within a channel; these are 12 channels on different primaries)
    assert.deepEqual(rb.map((e) => e.data).sort(), [...channels].sort(), 'one each');

    const ra = record(a, 'event');
    const d = await ack(b, 'direct', { to: a.id, event: 'dm', data: 1 });
    assert.equal(d.ok, true, JSON.stringify(d));
    await until(() => ra.length === 1, 'the direct crosses');
    assert.ok(isErr(await ack(b, 'direct', { to: `${A.id}-0-00000000000000ff`, event: 'dm', data: 1 }), 'not_found'));

    const m = await ack(b, 'members', channels[0]);
    assert.deepEqual(m.members.map((x) => x.socketId).sort(), [a.id, b.id].sort());

    // Where each channel's topic is subscribed: on its slot's primary only, by both instances;
    // with 12 channels every primary holds some (they spread by slot).
    const primaries = await cluster.primaries();
    assert.equal(primaries.length, 3);
    const used = new Set();
    for (const ch of channels) {
      const topic = `${prefix}:ch:{${ch}}`;
      const owner = await primaryOf(cluster.ports[0], await keySlot(cluster.ports[0], topic));
      used.add(owner);
      for (const p of primaries) {
        const [, n] = await redisCmd(`redis://127.0.0.1:${p}`, 'PUBSUB', 'SHARDNUMSUB', topic);
        assert.equal(Number(n), p === owner ? 2 : 0, `${topic} on ${p} (owner ${owner})`);
      }
      // its history stream shares the slot, on the same primary
      const hist = `${prefix}:h:{${ch}}`;
      assert.equal(await keySlot(cluster.ports[0], hist), await keySlot(cluster.ports[0], topic));
      assert.equal(await redisCmd(`redis://127.0.0.1:${owner}`, 'EXISTS', hist), 1, `${hist} on ${owner}`);
    }
    assert.ok(used.size >= 2, `channels spread over the primaries: ${[...used]}`);
  });

  it("an instance's presence keys share one slot, and a recoverable socket's keys theirs", async () => {
    const a = await connect(A);
    const ch = uniq('rckeys');
    await ack(a, 'join', ch);
    const slot = slotOfTag(A.id);
    const owner = await primaryOf(cluster.ports[0], slot);
    await until(async () => (await redisCmd(`redis://127.0.0.1:${owner}`, 'EXISTS', `${prefix}:i:{${A.id}}:m:${ch}`)) === 1,
      'the member hash, on the instance slot\'s primary');
    for (const k of ['ch', 'keys', 'info', 'beat']) {
      assert.equal(await redisCmd(`redis://127.0.0.1:${owner}`, 'EXISTS', `${prefix}:i:{${A.id}}:${k}`), 1, k);
    }
    const rs = `${prefix}:rs:{${a.id}}`;
    const rsOwner = await primaryOf(cluster.ports[0], slotOfTag(a.id));
    await until(async () => (await redisCmd(`redis://127.0.0.1:${rsOwner}`, 'EXISTS', rs)) === 1, `${rs} kept`);
  });

  it('a stopped instance takes its presence with it (the two-step collection works across slots)', async () => {
    const X = await startNode(`x${rand()}`, prefix, `redis://127.0.0.1:${cluster.ports[1]}`, ['--redis-cluster']);
    await ready(X);
    const ch = uniq('rcgone');
    const x = await connect(X);
    const a = await connect(A);
    await ack(x, 'join', ch);
    assert.equal((await ack(a, 'join', ch)).members, 2);
    const xid = X.id;
    X.proc.kill('SIGKILL');
    await until(async () => (await ack(a, 'members', ch)).members.length === 1, 'the killed instance leaves the view', 10000);
    const owner = await primaryOf(cluster.ports[0], slotOfTag(xid));
    await until(async () => (await redisCmd(`redis://127.0.0.1:${owner}`, 'EXISTS', `${prefix}:i:{${xid}}:keys`)) === 0,
      'a peer collects its keys after four expiries', 20000);
    const instances = await redisCmd(`redis://127.0.0.1:${await primaryOf(cluster.ports[0], await keySlot(cluster.ports[0], `${prefix}:instances`))}`,
      'ZRANGE', `${prefix}:instances`, 0, -1);
    assert.ok(!instances.includes(xid), `unlisted: ${instances}`);
  });
});

/** Sum of every series of a Prometheus metric. */
async function metric(srv, name) {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) sum += Number(m[3]);
  }
  return sum;
}

describe('Redis Cluster: a primary dies, a slot moves', () => {
  const prefix = `rf${rand()}`;
  let cluster;
  let A;
  let B;
  let C;
  before(async () => {
    cluster = await startRedisCluster();
    [A, B, C] = await Promise.all([startNode(`a${rand()}`, prefix, cluster.url), startNode(`b${rand()}`, prefix, cluster.url),
      startNode(`c${rand()}`, prefix, cluster.url, ['--redis-outage-buffer', '0'])]);
    for (const n of [A, B, C]) await ready(n);
  });
  after(async () => {
    await Promise.all([A, B, C].filter(Boolean).map((n) => n.stop()));
    cluster?.stop();
  });

  it('the primary of a channel killed: its replica takes over, cross-instance delivery is back within 5 s, and what was published meanwhile arrives, in order (held up to --redis-outage-buffer)', { timeout: 60000 }, async () => {
    const ch = uniq('rcfail');
    const topic = `${prefix}:ch:{${ch}}`;
    const a = await connect(A);
    const b = await connect(B);
    const c = await connect(C);
    const other = uniq('rcfail-other');
    for (const s of [a, b]) { await ack(s, 'join', ch); await ack(s, 'join', other); }
    await ack(c, 'join', `${ch}-c`);
    await ack(b, 'join', `${ch}-c`);
    const dropped0 = await metric(C, 'socket_gateway_cluster_publishes_dropped_total');
    const rb = record(b, 'event');
    await ack(a, 'publish', { channel: ch, event: 'before', data: 0 });
    await until(() => rb.length === 1, 'delivered before');
    const victim = await primaryOf(cluster.ports[0], await keySlot(cluster.ports[0], topic));
    const t0 = Date.now();
    cluster.kill(victim);
    // publish every 100 ms until one crosses
    let n = 0;
    let back = null;
    while (Date.now() - t0 < 15000) {
      n += 1;
      await ack(a, 'publish', { channel: ch, event: 'after', data: n });
      await ack(c, 'publish', { channel: `${ch}-c`, event: 'unheld', data: n });
      await sleep(100);
      if (rb.some((e) => e.event === 'after')) { back = Date.now() - t0; break; }
    }
    assert.ok(back !== null, 'delivery never came back');
    // A held what it published while the cluster was away and sent it when it came back
    await until(() => rb.filter((e) => e.event === 'after').length >= n, () => `b got ${rb.filter((e) => e.event === 'after').length} of ${n}`);
    assert.deepEqual(rb.filter((e) => e.event === 'after').map((e) => e.data), Array.from({ length: n }, (_, i) => i + 1), 'all, once, in order');
    // C (--redis-outage-buffer 0) dropped and counted its own instead
    const dropped = (await metric(C, 'socket_gateway_cluster_publishes_dropped_total')) - dropped0;
    const unheld = rb.filter((e) => e.event === 'unheld').length;
    assert.ok(dropped > 0, 'C counted drops');
    assert.ok(unheld + dropped >= n && unheld < n, `C: ${unheld} delivered, ${dropped} dropped of ${n}`);
    const survivor = cluster.alive()[0];
    const promoted = await primaryOf(survivor, await keySlot(survivor, topic));
    assert.notEqual(promoted, victim, 'a replica took the slot');
    console.log(`# primary ${victim} killed; its replica ${promoted} took over; cross-instance delivery back after ${back} ms`);
    assert.ok(back <= 5000, `back after ${back} ms`);
    // direct messages and the cluster views work again too
    const ra = record(a, 'event');
    await until(async () => (await ack(b, 'direct', { to: a.id, event: 'dm', data: 1 })).ok === true, 'a direct crosses', 5000);
    await until(() => ra.length >= 1, 'a gets the direct');
    assert.deepEqual((await ack(b, 'members', ch)).members.map((x) => x.socketId).sort(), [a.id, b.id].sort());
    // and from B to A on the other channel
    const rother = record(a, 'event');
    await ack(b, 'publish', { channel: other, event: 'x', data: 1 });
    await until(() => rother.some((e) => e.channel === other), 'B → A');
  });

  it('a slot moved under traffic (redis-cli --cluster reshard): MOVED followed, subscriptions moved, nothing lost or reordered', { timeout: 90000 }, async () => {
    // A channel in the first slot of a primary: `reshard --cluster-slots 1` moves exactly that one.
    const nodes = await clusterNodes(cluster.alive()[0]);
    const primaries = nodes.filter((x) => x.flags.includes('master') && !x.flags.includes('fail') && x.slots.length);
    const src = primaries[0];
    const dst = primaries[1];
    const first = Number(src.slots[0].split('-')[0]);
    const ch = channelWhere(uniq('rcmove'), (s) => s === first);
    const topic = `${prefix}:ch:{${ch}}`;
    assert.equal(await keySlot(src.port, topic), first);
    const a = await connect(A);
    const b = await connect(B);
    await ack(a, 'join', ch);
    await ack(b, 'join', ch);
    const rb = record(b, 'event');
    const ra = record(a, 'event');
    let stop = false;
    let sent = 0;
    const pub = (async () => {
      while (!stop) {
        sent += 1;
        const r = await ack(a, 'publish', { channel: ch, event: 'm', data: sent });
        assert.equal(r.ok, true, JSON.stringify(r));
        await sleep(5);
      }
    })();
    await sleep(500);
    const r = spawnSync('redis-cli', ['--cluster', 'reshard', `127.0.0.1:${src.port}`, '--cluster-from', src.id,
      '--cluster-to', dst.id, '--cluster-slots', '1', '--cluster-yes'], { encoding: 'utf8', timeout: 30000 });
    assert.equal(r.status, 0, `reshard: ${r.stdout}\n${r.stderr}`);
    await until(async () => (await primaryOf(dst.port, first)) === dst.port, 'the slot moved');
    await sleep(1500);
    stop = true;
    await pub;
    await until(() => rb.length === sent && ra.length === sent, () => `b got ${rb.length}, a ${ra.length} of ${sent}`, 10000)
      .catch((e) => {
        const got = new Set(rb.map((x) => x.data));
        const missing = Array.from({ length: sent }, (_, i) => i + 1).filter((i) => !got.has(i));
        throw new Error(`${e.message}; b misses ${JSON.stringify(missing)}`);
      });
    assert.deepEqual(rb.map((x) => x.data), Array.from({ length: sent }, (_, i) => i + 1), 'in order, once each');
    // B's subscription now lives on the new primary only
    const [, onDst] = await redisCmd(`redis://127.0.0.1:${dst.port}`, 'PUBSUB', 'SHARDNUMSUB', topic);
    const [, onSrc] = await redisCmd(`redis://127.0.0.1:${src.port}`, 'PUBSUB', 'SHARDNUMSUB', topic);
    assert.deepEqual([Number(onSrc), Number(onDst)], [0, 2], 'both instances subscribed on the new primary only');
    console.log(`# slot ${first} moved ${src.port} → ${dst.port} under ${sent} publishes; none lost`);
  });
});
