// A private Redis Cluster on free local ports (3 primaries + 3 replicas by default), for the tests
// that run gateway instances on a cluster. Real redis-server processes (`--cluster-enabled yes`),
// joined with `redis-cli --cluster create`; it throws (the test fails) when redis-server or
// redis-cli is missing. A short `cluster-node-timeout` so a killed primary's replica takes over
// within a couple of seconds.
//
// Run alone it starts a cluster and prints its URL until killed:
//   node redis_cluster.mjs            → redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { redisCmd, freeLowPort } from './fixture.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A port for a node whose cluster bus port (+10000) is free too, both below 32768. */
const freePort = (taken) => freeLowPort({ from: 21000, span: 1700, skip: taken, alsoFree: [10000] });

function need(tool) {
  const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`${tool} is needed for the Redis Cluster tests and could not run: ${r.error?.message || r.stderr}`);
  }
}

/** Parsed `CLUSTER NODES` of the node at `port`: [{id, addr, port, flags, primaryId, slots}]. */
export async function clusterNodes(port) {
  const text = await redisCmd(`redis://127.0.0.1:${port}`, 'CLUSTER', 'NODES');
  return text.trim().split('\n').map((line) => {
    const f = line.split(' ');
    const addr = f[1].split('@')[0];
    return {
      id: f[0],
      addr,
      port: Number(addr.split(':')[1]),
      flags: f[2].split(','),
      primaryId: f[3] === '-' ? null : f[3],
      slots: f.slice(8),
    };
  });
}

/** The port of the primary holding `slot`, as the node at `port` sees it. */
export async function primaryOf(port, slot) {
  const slots = await redisCmd(`redis://127.0.0.1:${port}`, 'CLUSTER', 'SLOTS');
  for (const [from, to, [, p]] of slots) if (slot >= from && slot <= to) return Number(p);
  return null;
}

/** The hash slot of a key or shard channel (asked of the cluster itself). */
export async function keySlot(port, key) {
  return Number(await redisCmd(`redis://127.0.0.1:${port}`, 'CLUSTER', 'KEYSLOT', key));
}

/**
 * Starts a Redis Cluster; resolves with {url, ports, primaries(), kill(port), stop()} once every
 * node reports `cluster_state:ok` and agrees on the slots.
 */
export async function startRedisCluster({ primaries = 3, replicas = 1, nodeTimeout = 1000 } = {}) {
  need('redis-server');
  need('redis-cli');
  const n = primaries * (1 + replicas);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sgw-rcluster-'));
  const ports = [];
  const procs = new Map();
  const stop = () => {
    for (const p of procs.values()) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
    procs.clear();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  try {
    // A node that does not come up (its port taken after all) is started again on another.
    const taken = new Set();
    for (let i = 0; i < n; i += 1) {
      for (let attempt = 1; ; attempt += 1) {
        const port = await freePort(taken);
        taken.add(port);
        let stderr = '';
        const proc = spawn('redis-server', [
          '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
          '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', String(nodeTimeout),
          '--save', '', '--appendonly', 'no', '--dir', dir,
          // replicas in sync at once (not after the default 5 s), so a failover can happen right away
          '--repl-diskless-sync-delay', '0',
        ], { stdio: ['ignore', 'pipe', 'pipe'] });
        proc.once('error', () => {});
        proc.stdout.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
        proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
        procs.set(port, proc);
        let up = false;
        for (let k = 0; k <= 100 && proc.exitCode === null; k += 1) {
          try { if (await redisCmd(`redis://127.0.0.1:${port}`, 'PING') === 'PONG') { up = true; break; } } catch { /* not yet */ }
          await sleep(50);
        }
        if (up) { ports.push(port); break; }
        try { proc.kill('SIGKILL'); } catch { /* gone */ }
        procs.delete(port);
        if (attempt === 3) throw new Error(`redis-server did not start (3 ports tried, the last ${port}):\n${stderr}`);
      }
    }
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas', String(replicas), '--cluster-yes'], { encoding: 'utf8', timeout: 30000 });
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed:\n${create.stdout}\n${create.stderr}`);
    await waitHealthy(ports, primaries, replicas);
  } catch (e) {
    stop();
    throw e;
  }
  return {
    ports,
    dir,
    url: `redis+cluster://${ports.slice(0, 2).map((p) => `127.0.0.1:${p}`).join(',')}`,
    /** Ports of the current primaries. */
    async primaries() {
      const live = [...procs.keys()];
      for (const port of live) {
        try {
          return (await clusterNodes(port))
            .filter((x) => x.flags.includes('master') && !x.flags.includes('fail') && x.slots.length > 0)
            .map((x) => x.port);
        } catch { /* try another */ }
      }
      return [];
    },
    /** Kills the node on `port` (SIGKILL, like a crash). */
    kill(port) {
      const p = procs.get(port);
      if (p) { p.kill('SIGKILL'); procs.delete(port); }
    },
    alive: () => [...procs.keys()],
    stop,
  };
}

/** Waits until every node answers cluster_state:ok and sees the same number of primaries and replicas. */
export async function waitHealthy(ports, primaries, replicas, timeout = 30000) {
  const t0 = Date.now();
  for (;;) {
    let ok = true;
    for (const port of ports) {
      try {
        const info = await redisCmd(`redis://127.0.0.1:${port}`, 'CLUSTER', 'INFO');
        if (!/cluster_state:ok/.test(info)) { ok = false; break; }
        const nodes = await clusterNodes(port);
        const m = nodes.filter((x) => x.flags.includes('master') && x.slots.length).length;
        const s = nodes.filter((x) => x.flags.includes('slave')).length;
        if (m !== primaries || s !== primaries * replicas) { ok = false; break; }
        const repl = await redisCmd(`redis://127.0.0.1:${port}`, 'INFO', 'replication');
        // a replica can only take over once it has synced (else its data counts as too old)
        if (/role:slave/.test(repl) && !/master_link_status:up/.test(repl)) { ok = false; break; }
      } catch { ok = false; break; }
    }
    if (ok) return;
    if (Date.now() - t0 > timeout) throw new Error('the Redis Cluster did not become healthy in time');
    await sleep(100);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const c = await startRedisCluster();
  console.log(c.url);
  process.on('SIGINT', () => { c.stop(); process.exit(0); });
  process.on('SIGTERM', () => { c.stop(); process.exit(0); });
  setInterval(() => {}, 1 << 30);
}
