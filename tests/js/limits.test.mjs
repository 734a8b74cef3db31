// Per-user and memory limits: --max-connections-per-user refuses a user's next CONNECT
// (`too_many_connections`) and frees the slot when one of its sockets goes; --max-memory makes new
// handshakes 503 once the process's resident memory is above it, while connected sockets keep
// working.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import WebSocket from 'ws';
import { startServer, connect, connectError, ack, mint, uniq, uniqUser, until, sleep, REDIS_URL, dropRedisKeys } from './fixture.mjs';

const rss = (pid) => Number(fs.readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * 4096;

describe('limits', () => {
  const servers = [];
  after(async () => { for (const s of servers) await s.stop(); });

  it('--max-connections-per-user: the next CONNECT is refused, another user is not, a freed slot is reusable', { timeout: 60000 }, async () => {
    const srv = await startServer({ shards: 2, extraArgs: ['--max-connections-per-user', '2'] });
    servers.push(srv);
    const user = uniqUser('capped');
    const a = await connect(srv, { sub: user });
    const b = await connect(srv, { sub: user });
    const e = await connectError(srv, { sub: user });
    assert.equal(e.message, 'unauthorized');
    assert.equal(e.data?.reason, 'too_many_connections');
    const other = await connect(srv, { sub: uniqUser('free') });
    assert.ok(other.connected);
    a.close();
    const c = await until(async () => {
      try { return await connect(srv, { sub: user, reconnection: true, reconnectionDelay: 50 }); } catch { await sleep(50); return null; }
    }, 'the freed slot is taken again');
    assert.ok(c.connected && b.connected);
    // Recovery: a dropped socket that comes back is counted once.
    const ch = uniq('capped');
    await ack(c, 'join', ch);
    const id = c.id;
    c.io.engine.close(); // a transport close: recoverable
    const back = await Promise.race([
      new Promise((resolve) => c.once('connect', () => resolve(c))),
      sleep(10000).then(() => { throw new Error('no reconnect'); }),
    ]);
    assert.equal(back.recovered, true);
    assert.equal(back.id, id);
    assert.equal((await connectError(srv, { sub: user })).data?.reason, 'too_many_connections');
    for (const s of [b, c, other]) s.close();
  });

  it('--max-connections-per-user counts the user\'s sockets on every instance (two instances through Redis)', { timeout: 60000 }, async () => {
    const prefix = `lim${process.pid}${Date.now()}`;
    const node = (id) => startServer({
      shards: 2,
      extraArgs: ['--max-connections-per-user', '2', '--redis-url', REDIS_URL, '--redis-prefix', prefix,
        '--instance-id', id, '--heartbeat-interval', '500', '--instance-expiry', '3000'],
    });
    const [A, B] = await Promise.all([node(`limA-${process.pid}`), node(`limB-${process.pid}`)]);
    servers.push(A, B);
    const user = uniqUser('capped2');
    const a = await connect(A, { sub: user });
    const b = await connect(B, { sub: user });
    for (const srv of [A, B]) {
      const e = await connectError(srv, { sub: user });
      assert.equal(e.data?.reason, 'too_many_connections', `refused on ${srv === A ? 'A' : 'B'}: ${JSON.stringify(e.data)}`);
    }
    assert.ok((await connect(B, { sub: uniqUser('free') })).connected, 'another user is not limited');
    // a socket gone on B frees a slot for A
    b.disconnect();
    const c = await until(async () => {
      try { return await connect(A, { sub: user }); } catch { await sleep(50); return null; }
    }, 'the slot freed on B is taken on A');
    assert.ok(c.connected && a.connected);
    await dropRedisKeys(REDIS_URL, prefix);
  });

  it('--max-memory: above it new handshakes get 503 while connected sockets keep working', { timeout: 60000 }, async () => {
    // Start without a limit to learn the process's size, then with the limit a little above it.
    const probe = await startServer({ shards: 1 });
    await sleep(300);
    const base = rss(probe.proc.pid);
    await probe.stop();
    const limit = base + 48 * 1024 * 1024;
    const srv = await startServer({
      shards: 1,
      extraArgs: ['--max-memory', String(limit), '--send-queue-bytes', String(512 * 1024 * 1024), '--send-queue', '100000',
        '--max-events-per-sec', '0'],
    });
    servers.push(srv);
    const ch = uniq('mem');
    const pub = await connect(srv, { transports: ['websocket'] });
    await ack(pub, 'join', ch);
    // A raw member that stops reading: what is published to it stays queued in the gateway.
    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`);
    const texts = [];
    ws.on('message', (buf) => { const t = buf.toString(); if (t === '2') ws.send('3'); else texts.push(t); });
    await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
    await until(() => texts.some((t) => t.startsWith('0')), 'OPEN');
    ws.send(`40${JSON.stringify({ token: mint() })}`);
    await until(() => texts.some((t) => t.startsWith('40{')), 'CONNECT');
    ws.send(`421${JSON.stringify(['join', ch])}`);
    await until(() => texts.some((t) => t.startsWith('431[')), 'join ack');
    ws._socket.pause();
    const big = 'm'.repeat(900 * 1024);
    let i = 0;
    while (rss(srv.proc.pid) <= limit + 4 * 1024 * 1024 && i < 400) {
      const r = await ack(pub, 'publish', { channel: ch, event: 'big', data: { i, big } });
      assert.equal(r.ok, true, JSON.stringify(r));
      i += 1;
    }
    assert.ok(rss(srv.proc.pid) > limit, `the gateway grew past the limit (${i} publishes)`);
    await sleep(300); // the gateway samples its memory every 100 ms
    const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 503);
    assert.match(await res.text(), /memory limit/);
    const e = await connectError(srv, { transports: ['websocket'] });
    assert.ok(e, 'a new socket.io-client cannot connect');
    // The connected socket keeps working.
    const r = await ack(pub, 'publish', { channel: uniq('mem-other'), event: 'small', data: 1 });
    assert.equal(r.ok, true);
    assert.equal((await ack(pub, 'join', uniq('mem-join'))).ok, true);
    console.log(`# base RSS ${(base / 1048576).toFixed(1)} MiB, limit ${(limit / 1048576).toFixed(1)} MiB, reached after ${i} publishes of 0.9 MB`);
    ws.terminate();
    pub.close();
  });
});
