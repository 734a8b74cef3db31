#!/usr/bin/env node
// Reconnect storm after an instance is killed, or drained: connection state recovery across
// instances.
//
// With --drain MS, A is started with `--drain-period MS` and sent SIGTERM instead of SIGKILL: it
// closes its sockets in batches over MS, and they reconnect to B. With --stayers K, K more sockets
// are connected to B from the start (joined like the others); their delivery latency (publish
// sent → event received, one clock) is reported for the steady window and for the storm.
//
// Starts two release gateways A and B clustered through Redis (a fresh --redis-prefix, 2 shards,
// unpinned), connects N socket.io-client sockets (websocket only, one Manager each, reconnection
// on with a random 100-1000 ms first delay) to A, each joined to one of C channels, while one
// publisher on B publishes R events/s round robin over the channels for the whole run. Then every
// client's Manager is pointed at B (`socket.io.uri`, which Manager#open passes to each new Engine,
// so the next reconnection goes there, as behind a load balancer) and A is SIGKILLed. Measured:
//   - time from the kill until every socket is connected again (and the percentiles);
//   - how many came back `recovered === true` with their old socket id;
//   - per socket, by event id, what it missed or got twice: every event of its channel published
//     (emit sent) after its join was acknowledged must arrive, duplicates must share an id;
//     a socket that came back new re-joins, and what it missed between is counted apart;
//   - Redis CPU (INFO cpu, used_cpu_sys + used_cpu_user) and commands (INFO stats
//     total_commands_processed, and INFO commandstats by command) during the storm, against the
//     same rates over a steady window before the kill;
//   - gateway B's RSS before the kill and after the storm, B's CPU and this process's CPU (the
//     clients share the machine: if this process is near 1 s of CPU per second, the client, not
//     the gateway, set the pace), and B's recovery counters from /metrics.
// Redis counters are server-wide: anything else using the same Redis shows up in them.
// Prints a JSON summary (also written to --json FILE); exits 1 when a socket did not come back,
// an event it was owed never arrived, or an event id that was never published arrived.
//
// Needs: `cargo build --release -p socket-gateway`, `npm ci --prefix tests/js` (socket.io-client
// and jsonwebtoken are loaded from tests/js/node_modules), redis-cli, a Redis, and an open-file
// limit above N (+ some) for this process and each gateway.
//
// Usage: node loadtest/scripts/recovery-storm.mjs [--clients 10000] [--channels 100] [--rate 50]
//   [--warm 5] [--tail 3] [--timeout 120] [--min-delay 100] [--max-delay 1000] [--concurrency 200]
//   [--shards 2] [--redis-url redis://127.0.0.1:6379] [--bin target/release/socket-gateway]
//   [--json FILE] [--gateway-arg ARG]... [--drain MS] [--stayers K]
//   (or loadtest/scripts/recovery-storm.sh, same flags)

import { spawn, execFile, fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { promisify } from 'node:util';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(path.join(ROOT, 'tests/js/package.json'));
const { io } = require('socket.io-client');
const jwt = require('jsonwebtoken');
const run = promisify(execFile);

// ---------------------------------------------------------------------------------------------
// options

const opt = {
  clients: 10000, channels: 100, rate: 50, warm: 5, tail: 3, timeout: 120,
  'min-delay': 100, 'max-delay': 1000, concurrency: 200, shards: 2, drain: 0, stayers: 0, 'stayer-child': '',
  'redis-url': 'redis://127.0.0.1:6379', bin: path.join(ROOT, 'target/release/socket-gateway'),
  json: '', 'gateway-arg': [],
};
for (let a = process.argv.slice(2); a.length;) {
  const k = a.shift().replace(/^--/, '');
  if (!(k in opt)) { console.error(`unknown option --${k}`); process.exit(2); }
  const v = a.shift();
  if (v === undefined) { console.error(`--${k} needs a value`); process.exit(2); }
  if (Array.isArray(opt[k])) opt[k].push(v);
  else opt[k] = typeof opt[k] === 'number' ? Number(v) : v;
}
const N = opt.clients, C = opt.channels;
const SECRET = 'storm-secret';
const PREFIX = `storm${process.pid}x${Date.now() % 100000}`;
const now = () => performance.now();
// Comparable across this machine's processes (the stayers run in their own).
const wall = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[${(now() / 1000).toFixed(1)}s]`, ...a);
const token = (sub) => jwt.sign({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET, { algorithm: 'HS256' });
const channel = (k) => `storm:c${k}`;

async function until(cond, ms, what) {
  const end = now() + ms;
  while (!cond()) {
    if (now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

// ---------------------------------------------------------------------------------------------
// gateways, Redis, /proc

const gateways = [];
process.on('exit', () => { for (const g of gateways) try { g.proc.kill('SIGKILL'); } catch {} });
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));

function startGateway(id, extra = []) {
  const args = ['serve', '--listen', '127.0.0.1:0', '--shards', String(opt.shards), '--no-pin',
    '--jwt-secret', SECRET, '--redis-url', opt['redis-url'], '--redis-prefix', PREFIX,
    '--instance-id', id, '--log-level', 'warn', ...opt['gateway-arg'], ...extra];
  const proc = spawn(opt.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const g = { id, proc, out: '', err: '' };
  gateways.push(g);
  proc.stderr.on('data', (d) => { g.err = (g.err + d).slice(-4000); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway ${id} not listening after 15 s: ${g.err}`)), 15000);
    proc.stdout.on('data', (d) => {
      g.out += d;
      const m = /listening on http:\/\/[^\s:]+:(\d+)/.exec(g.out);
      if (m && !g.url) { clearTimeout(timer); g.url = `http://127.0.0.1:${m[1]}`; resolve(g); }
    });
    proc.once('exit', (code, sig) => { if (!g.url) { clearTimeout(timer); reject(new Error(`gateway ${id} exited (${code ?? sig}): ${g.err}`)); } });
  });
}

const redis = async (...args) => (await run('redis-cli', ['-u', opt['redis-url'], ...args], { maxBuffer: 64 << 20 })).stdout;
function infoFields(text) {
  const o = {};
  for (const line of text.split(/\r?\n/)) { const i = line.indexOf(':'); if (i > 0) o[line.slice(0, i)] = line.slice(i + 1); }
  return o;
}
async function redisSample() {
  const f = infoFields(await redis('info', 'all'));
  const calls = {};
  for (const [k, v] of Object.entries(f)) if (k.startsWith('cmdstat_')) calls[k.slice(8)] = Number(/calls=(\d+)/.exec(v)[1]);
  return { t: now(), cpu: Number(f.used_cpu_sys) + Number(f.used_cpu_user), cmds: Number(f.total_commands_processed), calls };
}
function redisDelta(a, b) {
  const s = (b.t - a.t) / 1000;
  const byCmd = {};
  for (const [k, v] of Object.entries(b.calls)) { const d = v - (a.calls[k] ?? 0); if (d > 0) byCmd[k] = d; }
  return { seconds: s, cpuSeconds: b.cpu - a.cpu, cpuPerSec: (b.cpu - a.cpu) / s, commands: b.cmds - a.cmds, commandsPerSec: (b.cmds - a.cmds) / s, byCmd };
}
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
// utime + stime, in seconds (USER_HZ is 100 on Linux).
const procCpu = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const selfCpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

// ---------------------------------------------------------------------------------------------
// clients and publisher

const published = new Map(); // event id -> {ch, seq, t}
const pubs = Array.from({ length: C }, () => []); // per channel, in publish order
const pub = { sent: 0, acked: 0, failed: 0, inFlight: 0, maxAckMs: 0, stormMaxAckMs: 0, stop: false };
let phase = 'setup'; // setup | steady | storm | after
let killT = Infinity;
let backCount = 0;

const clients = [];
class Client {
  constructor(i, url) {
    this.i = i; this.ch = i % C; this.got = new Map(); // event id -> times received, in arrival order
    this.joinT = Infinity; this.rejoinT = Infinity; this.firstId = null;
    this.connects = 0; this.reconnectMs = null; this.recovered = null; this.sameId = null;
    this.presence = 0; this.presenceAfterKill = 0; this.errors = 0; this.failedAttempts = 0;
    const delay = opt['min-delay'] + Math.random() * (opt['max-delay'] - opt['min-delay']);
    this.sock = io(url, {
      transports: ['websocket'], forceNew: true, auth: { token: token(`storm-u${i}`) },
      reconnectionDelay: delay, reconnectionDelayMax: 5000, randomizationFactor: 0, timeout: 20000,
    });
    this.sock.on('event', (e) => this.onEvent(e));
    this.sock.on('presence', () => { this.presence++; if (phase !== 'setup' && phase !== 'steady') this.presenceAfterKill++; });
    this.sock.on('error', () => { this.errors++; });
    this.sock.on('connect', () => this.onConnect());
    this.sock.io.on('reconnect_error', () => { this.failedAttempts++; });
  }
  onEvent(e) {
    this.got.set(e.id, (this.got.get(e.id) ?? 0) + 1);
  }
  async join() {
    const r = await this.sock.timeout(15000).emitWithAck('join', channel(this.ch));
    if (!r?.ok) throw new Error(`join refused: ${JSON.stringify(r)}`);
    return now();
  }
  onConnect() {
    this.connects++;
    if (this.connects === 1) { this.firstId = this.sock.id; return; }
    // Not expected before the kill, nor twice after it: counted as extra connects.
    if (phase === 'setup' || phase === 'steady' || this.reconnectMs !== null) return;
    this.reconnectMs = now() - killT;
    backCount++;
    this.recovered = this.sock.recovered === true; // undefined when the server gave no pid
    this.sameId = this.sock.id === this.firstId;
    if (!this.recovered) {
      // A new socket has no memberships: re-join, as an application would.
      this.join().then((t) => { this.rejoinT = t; }, () => { this.errors++; });
    }
  }
}

// Sockets on B from the start: what the storm costs those already there. They run in a child
// process of their own, so that the 10,000 reconnecting clients of this one (whose event loop the
// storm saturates) do not delay what they measure.
function startStayers(url) {
  const child = fork(fileURLToPath(import.meta.url), ['--stayer-child', url, '--stayers', String(opt.stayers), '--channels', String(C)], { stdio: 'inherit' });
  const replies = [];
  child.on('message', (m) => replies.push(m));
  const next = () => until(() => replies.length, 60000, 'the stayers').then(() => replies.shift());
  return {
    ready: next,
    phase: (p) => child.send({ phase: p }),
    report: async () => { child.send({ report: true }); const r = await next(); child.kill(); return r; },
  };
}

async function stayerChild(url) {
  const lat = {};
  let ph = 'setup';
  const socks = [];
  for (let i = 0; i < Number(opt.stayers); i += 1) {
    const s = io(url, { transports: ['websocket'], forceNew: true, auth: { token: token(`storm-stay${i}`) } });
    s.on('event', (e) => { if (typeof e.data?.t === 'number') (lat[ph] ??= []).push(wall() - e.data.t); });
    await until(() => s.connected, 10000, `stayer ${i} connect`);
    const r = await s.timeout(15000).emitWithAck('join', channel(i % C));
    if (!r?.ok) throw new Error(`stayer join refused: ${JSON.stringify(r)}`);
    socks.push(s);
  }
  process.on('message', (m) => {
    if (m.phase) ph = m.phase;
    if (m.report) {
      const stats = {};
      for (const [k, xs] of Object.entries(lat)) {
        xs.sort((a, b) => a - b);
        stats[k] = { n: xs.length, p50Ms: r1(pct(xs, 50)), p99Ms: r1(pct(xs, 99)), maxMs: r1(xs.at(-1)) };
      }
      process.send({ sockets: socks.length, ...stats });
    }
  });
  process.send({ ready: socks.length });
}

async function connectAll(url) {
  let next = 0, failed = 0;
  const worker = async () => {
    while (next < N) {
      const c = new Client(next++, url);
      clients.push(c);
      try {
        await until(() => c.sock.connected, 30000, `client ${c.i} connect`);
        c.joinT = await c.join();
      } catch (e) { failed++; if (failed <= 3) log(`client ${c.i}: ${e.message}`); }
    }
  };
  await Promise.all(Array.from({ length: opt.concurrency }, worker));
  return failed;
}

async function publisher(url) {
  const s = io(url, { transports: ['websocket'], forceNew: true, auth: { token: token('storm-publisher') } });
  await until(() => s.connected, 10000, 'publisher connect');
  const start = now();
  const seq = new Array(C).fill(0);
  (async () => {
    // Catch up on the clock so that a busy event loop does not lower the rate.
    while (!pub.stop) {
      while (!pub.stop && pub.sent < ((now() - start) / 1000) * opt.rate) {
        const ch = pub.sent % C, sq = seq[ch]++;
        pub.sent++; pub.inFlight++;
        const t = now(), inStorm = phase === 'storm';
        s.timeout(10000).emitWithAck('publish', { channel: channel(ch), event: 'tick', data: { sq, t: wall() } })
          .then((r) => {
            if (!r?.ok) throw new Error(JSON.stringify(r));
            const rec = { ch, seq: sq, t };
            published.set(r.id, rec); pubs[ch].push({ id: r.id, ...rec });
            pub.acked++;
            const ms = now() - t;
            pub.maxAckMs = Math.max(pub.maxAckMs, ms);
            if (inStorm) pub.stormMaxAckMs = Math.max(pub.stormMaxAckMs, ms);
          })
          .catch(() => { pub.failed++; })
          .finally(() => { pub.inFlight--; });
      }
      await sleep(5);
    }
  })();
  return s;
}

// ---------------------------------------------------------------------------------------------
// the run

const pct = (xs, p) => xs.length ? xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] : null;
const r1 = (x) => (x == null ? null : Math.round(x * 10) / 10);

async function main() {
  log(`N=${N} channels=${C} rate=${opt.rate}/s prefix=${PREFIX} bin=${opt.bin}`);
  const drain = Number(opt.drain);
  const [A, B] = [await startGateway('A', drain ? ['--drain-period', String(drain)] : []), await startGateway('B')];
  log(`A ${A.url} (pid ${A.proc.pid}), B ${B.url} (pid ${B.proc.pid})`);
  const pubSock = await publisher(B.url);

  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const c0 = now();
  const failed = await connectAll(A.url);
  const stayers = opt.stayers > 0 ? startStayers(B.url) : null;
  if (stayers) log(`${(await stayers.ready()).ready} stayers on B`);
  const connectS = (now() - c0) / 1000;
  log(`${N - failed}/${N} connected to A and joined in ${connectS.toFixed(1)} s (${failed} failed); A RSS ${rssMiB(A.proc.pid).toFixed(0)} MiB`);

  phase = 'steady';
  stayers?.phase('steady');
  const base0 = await redisSample();
  await sleep(opt.warm * 1000);
  const base1 = await redisSample();
  const live = clients.filter((c) => c.sock.connected).length;
  const before = { aRssMiB: rssMiB(A.proc.pid), bRssMiB: rssMiB(B.proc.pid), connected: live };
  log(`steady ${opt.warm} s: ${live} connected; B RSS ${before.bRssMiB.toFixed(0)} MiB`);

  // Everyone's next reconnection goes to B, as a load balancer would send it.
  for (const c of clients) { c.sock.io.uri = B.url; c.liveAtKill = c.sock.connected; }
  const bCpu0 = procCpu(B.proc.pid), self0 = selfCpu();
  lag.reset();
  phase = 'storm';
  stayers?.phase('storm');
  const storm0 = await redisSample();
  killT = now();
  A.proc.kill(drain ? 'SIGTERM' : 'SIGKILL');
  const pubAtKill = pub.sent;
  log(drain ? `A sent SIGTERM (--drain-period ${drain})` : 'A killed');

  const back = () => backCount;
  let timedOut = false;
  try {
    let shown = 0;
    await until(() => {
      if (now() - killT > shown + 5000) { shown += 5000; log(`  ${back()}/${before.connected} back`); }
      return back() >= before.connected;
    }, opt.timeout * 1000, 'every socket back');
  } catch (e) { timedOut = true; log(e.message); }
  const storm1 = await redisSample();
  const stormS = (now() - killT) / 1000;
  const bCpu1 = procCpu(B.proc.pid), self1 = selfCpu();
  const lagMaxMs = lag.max / 1e6, lagP99Ms = lag.percentile(99) / 1e6;
  const pubInStorm = pub.sent - pubAtKill;
  const bRssStorm = rssMiB(B.proc.pid);
  log(`${back()}/${before.connected} back after ${stormS.toFixed(2)} s; B RSS ${bRssStorm.toFixed(0)} MiB`);

  phase = 'after';
  stayers?.phase('after');
  await sleep(opt.tail * 1000);
  pub.stop = true;
  await until(() => pub.inFlight === 0, 15000, 'publisher acks').catch((e) => log(e.message));
  await sleep(2000); // the last deliveries
  const bRssEnd = rssMiB(B.proc.pid);
  const metrics = await fetch(`${B.url}/metrics`).then((r) => r.text()).catch(() => '');
  const recoveryMetrics = metrics.split('\n').filter((l) => /^socket_gateway_(recover|recoveries|cluster_publishes)/.test(l));

  // ------------------------------------------------------------------------------ accounting
  const byResult = { recoveredSameId: 0, recoveredOtherId: 0, newSocket: 0, notBack: 0, notLiveAtKill: 0 };
  let missed = 0, missedNew = 0, lostByNew = 0, missedNotBack = 0, dup = 0, dupSockets = 0, unknown = 0;
  const missedSamples = [];
  let failedAttempts = 0, socketsMissing = 0, presence = 0, presenceAfterKill = 0, extraConnects = 0, errors = 0, expectedTotal = 0, outOfOrder = 0;
  for (const c of clients) {
    if (!c.liveAtKill) byResult.notLiveAtKill++;
    else if (c.reconnectMs === null) byResult.notBack++;
    else if (c.recovered) byResult[c.sameId ? 'recoveredSameId' : 'recoveredOtherId']++;
    else byResult.newSocket++;
    presence += c.presence; presenceAfterKill += c.presenceAfterKill; errors += c.errors;
    if (c.connects > 2) extraConnects += c.connects - 2;
    failedAttempts += c.failedAttempts;
    let m = 0;
    for (const p of pubs[c.ch]) {
      if (p.t <= c.joinT) continue;
      const newGap = c.recovered === false && p.t <= c.rejoinT;
      if (!newGap) expectedTotal++;
      if (c.got.has(p.id)) continue;
      if (newGap) lostByNew++;
      else if (c.recovered === false) missedNew++;
      else if (c.reconnectMs === null && p.t > killT) missedNotBack++;
      else {
        m++;
        if (missedSamples.length < 10) {
          missedSamples.push({ socket: c.i, socketId: c.firstId, channel: c.ch, seq: p.seq, id: p.id, publishedAfterJoinMs: r1(p.t - c.joinT), publishedAfterKillMs: r1(p.t - killT), reconnectMs: r1(c.reconnectMs), recovered: c.recovered, received: c.got.size });
        }
      }
    }
    missed += m; if (m) socketsMissing++;
    // First arrivals, in order: a channel's events must come in publish order (replay included).
    let d = 0, maxSeq = -1;
    for (const [id, n] of c.got) {
      if (n > 1) d += n - 1;
      const p = published.get(id);
      if (!p) { unknown++; continue; }
      if (p.seq < maxSeq) outOfOrder++; else maxSeq = p.seq;
    }
    dup += d; if (d) dupSockets++;
  }
  const times = clients.map((c) => c.reconnectMs).filter((x) => x !== null).sort((a, b) => a - b);
  const storm = redisDelta(storm0, storm1), base = redisDelta(base0, base1);
  const topCmds = Object.entries(storm.byCmd).sort((a, b) => b[1] - a[1]).slice(0, 12);
  const stayersOnB = stayers ? await stayers.report() : null;
  const result = {
    clients: N, channels: C, rate: opt.rate, shards: opt.shards, prefix: PREFIX, publisherId: pubSock.id,
    end: drain ? `drained over ${drain} ms (SIGTERM)` : 'killed (SIGKILL)',
    stayersOnB,
    initialConnect: { seconds: r1(connectS), failed },
    reconnect: {
      timedOut, allBackSeconds: timedOut || !times.length ? null : +(times.at(-1) / 1000).toFixed(2),
      p50Ms: r1(pct(times, 50)), p90Ms: r1(pct(times, 90)), p99Ms: r1(pct(times, 99)), maxMs: r1(times.at(-1)),
      ...byResult, extraConnects, failedAttempts,
    },
    events: {
      published: pub.acked, publishFailed: pub.failed, publishedDuringStorm: pubInStorm,
      publishAckMaxMs: r1(pub.maxAckMs), publishAckMaxMsDuringStorm: r1(pub.stormMaxAckMs),
      expectedDeliveries: expectedTotal, missed, socketsMissing, missedAfterRejoinByNewSockets: missedNew,
      lostByNewSockets: lostByNew, missedBySocketsNotBack: missedNotBack, duplicates: dup, socketsWithDuplicates: dupSockets,
      unknownIds: unknown, outOfOrder, presenceFrames: presence, presenceFramesAfterKill: presenceAfterKill, errorEvents: errors,
      missedSamples,
    },
    redis: {
      storm: { seconds: r1(storm.seconds), cpuSeconds: +storm.cpuSeconds.toFixed(3), cpuPerSec: +storm.cpuPerSec.toFixed(3), commands: storm.commands, commandsPerSec: Math.round(storm.commandsPerSec), perReconnect: +(storm.commands / Math.max(1, back())).toFixed(2), top: Object.fromEntries(topCmds) },
      steady: { seconds: r1(base.seconds), cpuPerSec: +base.cpuPerSec.toFixed(3), commandsPerSec: Math.round(base.commandsPerSec) },
    },
    gatewayB: { rssMiBBefore: r1(before.bRssMiB), rssMiBAfterStorm: r1(bRssStorm), rssMiBEnd: r1(bRssEnd), cpuSecondsInStorm: +(bCpu1 - bCpu0).toFixed(2), recoveryMetrics },
    gatewayA: { rssMiBBeforeKill: r1(before.aRssMiB) },
    client: { cpuSecondsInStorm: +(self1 - self0).toFixed(2), stormSeconds: r1(stormS), eventLoopLagMaxMs: r1(lagMaxMs), eventLoopLagP99Ms: r1(lagP99Ms) },
    loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
  };
  console.log(JSON.stringify(result, null, 2));
  if (opt.json) writeFileSync(opt.json, JSON.stringify(result, null, 2));

  pubSock.close();
  for (const c of clients) c.sock.io.reconnection(false);
  B.proc.kill('SIGKILL');
  // The prefix is this run's own: drop what the cluster left in Redis.
  const keys = (await redis('--scan', '--pattern', `${PREFIX}:*`)).split('\n').filter(Boolean);
  for (let i = 0; i < keys.length; i += 500) await redis('unlink', ...keys.slice(i, i + 500));
  log(`removed ${keys.length} Redis keys`);
  process.exit(timedOut || missed || unknown ? 1 : 0);
}

if (opt['stayer-child']) stayerChild(opt['stayer-child']).catch((e) => { console.error(e); process.exit(1); });
else main().catch((e) => { console.error(e); process.exit(1); });
