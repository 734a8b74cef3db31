// Drain on SIGTERM (a rolling deploy): /readyz turns 503 at once, the instance's sockets are
// closed in batches over --drain-period (never all at once), they reconnect — through a TCP
// proxy acting as the load balancer, which sends new connections to the instance whose /readyz
// answers 200 — to the other instance of the cluster, and recover there: same socket id,
// `recovered` true, and no event published meanwhile is lost.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import {
  startServer, connect, ack, uniq, until, sleep, REDIS_URL, redisCmd, dropRedisKeys,
} from './fixture.mjs';
import { startProxy } from './proxy.mjs';

const DRAIN = 6000;
const INTERVAL = 1000;
const N = Number(process.env.DRAIN_CLIENTS || 2000);

function exited(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve({ code: proc.exitCode, at: Date.now() });
  return new Promise((r) => proc.once('exit', (code) => r({ code, at: Date.now() })));
}

async function readyz(srv) {
  try {
    const r = await fetch(`${srv.url}/readyz`);
    return { status: r.status, body: await r.json().catch(() => null) };
  } catch (e) {
    return { status: 0, error: e.message };
  }
}

describe('drain on SIGTERM: batches over --drain-period, recovery on the other instance', () => {
  const prefix = `tdrain${crypto.randomBytes(4).toString('hex')}`;
  const nodes = [];
  let proxy;
  const node = (name) => startServer({
    shards: Number(process.env.DRAIN_SHARDS || 2),
    extraArgs: ['--redis-url', REDIS_URL, '--redis-prefix', prefix,
      '--instance-id', `gateway-${name}-${crypto.randomBytes(3).toString('hex')}.drain`,
      '--heartbeat-interval', '500', '--instance-expiry', '3000',
      '--drain-period', String(DRAIN), '--drain-interval', String(INTERVAL),
      '--max-events-per-sec', '0', '--history-size', '5000'],
  });

  before(async () => {
    await redisCmd(REDIS_URL, 'PING'); // fails (not skips) without a redis-server
  });
  after(async () => {
    if (proxy) await proxy.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await dropRedisKeys(REDIS_URL, prefix).catch(() => {});
  });

  it(`${N} sockets leave A in batches, reconnect to B through the load balancer and lose nothing`, { timeout: 120000 }, async () => {
    const [A, B] = await Promise.all([node('a'), node('b')]);
    nodes.push(A, B);
    proxy = await startProxy(A.port);
    const ch = uniq('drain');

    const clients = [];
    for (let i = 0; i < N; i += 50) {
      clients.push(...await Promise.all(Array.from({ length: Math.min(50, N - i) }, () => connect(A, {
        url: proxy.url, transports: ['websocket'], reconnection: true,
        reconnectionDelay: 100, reconnectionDelayMax: 500, randomizationFactor: 0.5,
      }))));
    }
    const idOf = new Map();
    const state = clients.map((c) => {
      const st = { ids: new Set(), firstId: c.id, disconnects: [], reconnects: [] };
      c.on('event', (e) => { if (e.channel === ch) { st.ids.add(e.data.i); st.lastI = e.data.i; idOf.set(e.data.i, e.id); } });
      c.on('disconnect', (reason) => st.disconnects.push({ reason, at: Date.now(), offset: c._lastOffset, lastI: st.lastI }));
      c.on('connect', () => st.reconnects.push({ at: Date.now(), recovered: c.recovered, id: c.id }));
      return st;
    });
    for (let i = 0; i < N; i += 100) await Promise.all(clients.slice(i, i + 100).map((c) => ack(c, 'join', ch)));
    assert.ok(clients.every((c) => c.id.startsWith('gateway-a-')), 'every client is on A');

    // A publisher on B publishes throughout, acked one after another.
    const pub = await connect(B, { transports: ['websocket'] });
    let published = 0;
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        const r = await ack(pub, 'publish', { channel: ch, event: 'tick', data: { i: published } });
        assert.equal(r.ok, true, JSON.stringify(r));
        published += 1;
        await sleep(10);
      }
    })();
    await until(() => published >= 20 && state.every((s) => s.ids.size >= 10), 'every client receives before the drain');

    // The load balancer: new connections go to an instance whose /readyz says 200. A process of
    // its own polls A's /readyz back to back (this one is busy with 2,000 clients) and says when
    // it first saw 503.
    const watcher = spawn(process.execPath, ['-e', `
      const url = process.argv[1];
      (async () => {
        let said = false;
        for (;;) {
          const r = await fetch(url).catch(() => null);
          if (r && r.status === 200 && !said) { said = true; console.log('ready'); }
          if (r && r.status === 503) { console.log(JSON.stringify({ at: Date.now() })); process.exit(0); }
        }
      })();`, `${A.url}/readyz`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let watched = '';
    watcher.stdout.on('data', (d) => { watched += d; });
    await until(() => watched.includes('ready'), 'the /readyz watcher sees 200');
    const done = exited(A.proc);
    const t0 = Date.now();
    A.proc.kill('SIGTERM');
    await until(() => watched.includes('{'), 'the watcher sees A /readyz 503', 2000);
    const notReadyAfter = JSON.parse(watched.slice(watched.indexOf('{'))).at - t0;
    const r = await readyz(A);
    assert.equal(r.status, 503);
    assert.equal(r.body.status, 'draining', JSON.stringify(r.body));
    assert.equal((await readyz(B)).status, 200);
    proxy.retarget(B.port);
    // The flag flips when the signal arrives; what a load balancer needs is that /readyz says 503
    // before the first socket is moved (the first batch waits one interval). The watcher's own
    // clock and a host loaded by 2,000 clients make the exact figure noisy (a CI run saw 201 ms),
    // so the bound is half an interval, not a figure this host cannot keep.
    assert.ok(notReadyAfter <= INTERVAL / 2, `A's /readyz turned 503 ${notReadyAfter} ms after SIGTERM`);

    await until(() => state.every((s) => s.reconnects.length > 0), () => `every client reconnects (${state.filter((s) => s.reconnects.length > 0).length}/${N})`, DRAIN + 20000);
    const ex = await done;
    publishing = false;
    await publisher;
    const last = published;
    const m = await (await fetch(`${B.url}/metrics`)).text();
    console.log(`# B: ${m.split('\n').filter((l) => l.startsWith('socket_gateway_recoveries_total')).join('; ')}`);
    await until(() => state.every((s) => s.ids.size >= last), () => {
      const short = state.filter((s) => s.ids.size < last);
      const e = short[0];
      console.log(`# short: ${JSON.stringify(short.slice(0, 3).map((x) => ({ miss: [...Array(last).keys()].filter((k) => !x.ids.has(k)).map((k) => [k, idOf.get(k)]), dc: x.disconnects[0], lastId: idOf.get(x.disconnects[0].lastI), rc: x.reconnects[x.reconnects.length - 1].at - t0 })))}`);
      return `every client has all ${last} events (${short.length} short, e.g. ${e && JSON.stringify({ n: e.ids.size, missing: [...Array(last).keys()].filter((k) => !e.ids.has(k)), id: e.firstId, rc: e.reconnects, dc: e.disconnects.map((d) => ({ ...d, at: d.at - t0 })) })})`;
    }, 20000);

    // Batches: the disconnects spread over the drain period, never all in one interval.
    const at = state.map((s) => s.disconnects[0].at - t0).sort((a, b) => a - b);
    const windows = new Map();
    for (const t of at) windows.set(Math.floor(t / INTERVAL), (windows.get(Math.floor(t / INTERVAL)) ?? 0) + 1);
    const biggest = Math.max(...windows.values());
    console.log(`# /readyz 503 after ${notReadyAfter} ms; disconnects from ${at[0]} to ${at[at.length - 1]} ms in ${windows.size} windows of ${INTERVAL} ms (largest ${biggest}); A exited after ${ex.at - t0} ms (code ${ex.code}); ${last} events published`);
    assert.ok(at[0] >= INTERVAL - 100, `the first batch waits one interval (first disconnect at ${at[0]} ms)`);
    assert.ok(notReadyAfter < at[0], `/readyz said 503 (${notReadyAfter} ms) before the first socket was closed (${at[0]} ms)`);
    // Seen from this process, whose event loop the 2,000 clients keep busy: a batch may be seen
    // late, and two batches together. What must hold: never all in one second, never most in one
    // interval, and spread over most of the period.
    let inOneSecond = 0;
    for (let i = 0, j = 0; i < at.length; i += 1) {
      while (at[i] - at[j] > 1000) j += 1;
      inOneSecond = Math.max(inOneSecond, i - j + 1);
    }
    assert.ok(inOneSecond < N * 0.75, `never (nearly) all in one second: at most ${inOneSecond} of ${N}`);
    assert.ok(biggest <= N / 2, `no interval holds most sockets (largest ${biggest} of ${N})`);
    assert.ok(windows.size >= DRAIN / INTERVAL / 2, `closed in batches: ${windows.size} windows`);
    assert.ok(at[at.length - 1] - at[0] >= DRAIN / 2, `spread over the period (${at[0]} to ${at[at.length - 1]} ms)`);
    assert.ok(at[at.length - 1] <= DRAIN + 3000, `all closed within the drain period, give or take this process's lateness (last at ${at[at.length - 1]} ms)`);
    assert.ok(state.every((s) => s.disconnects[0].reason === 'transport close'), 'a transport close: the client reconnects by itself');
    assert.equal(ex.code, 0);

    // Every client recovered on B: same id, `recovered`, nothing lost.
    for (const [i, s] of state.entries()) {
      const rc = s.reconnects[s.reconnects.length - 1];
      assert.equal(rc.recovered, true, `client ${i} recovered`);
      assert.equal(rc.id, s.firstId, `client ${i} kept its socket id`);
      assert.equal(clients[i].connected, true);
      for (let k = 0; k < last; k += 1) if (!s.ids.has(k)) assert.fail(`client ${i} lost event ${k}`);
    }
    for (const c of clients) c.close();
    pub.close();
  });
});
