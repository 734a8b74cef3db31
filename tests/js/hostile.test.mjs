// Hostile clients (issue 8): oversized frames and bodies, invalid UTF-8, truncated and interleaved
// websocket frames, event floods, join floods, a client that never reads, half-open connections,
// connection floods, handshakes that never finish, forged tokens and the channels claim.
// After each case a witness pair of sockets on the same (single) shard must still be served (a
// publish/receive round trip) and the Engine.IO session count must be back to its baseline.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import {
  startServer, connect, connectError, ack, mint, unsignedToken, uniq, uniqUser, record, until, waitFor,
  sleep, isErr, closeAll, KEYS_DIR, ARRIVE_MS,
} from './fixture.mjs';
import {
  metrics, sessions, rssKiB, percentile, witness, rawClient, wsFrame, rawTcpSio, rawHttp, pollingOpen,
} from './raw.mjs';

// ---------------------------------------------------------------------------------------------

describe('hostile clients: frames, bodies, floods, slow readers [shards=1]', () => {
  const MAX_PAYLOAD = 16384;
  const MAX_CHANNELS = 100;
  let srv;
  let w;
  // Started before everything else, checked by the last case: a head that never completes,
  // and one trickled a byte every 2 s (the head timeout is 30 s).
  const slow = { half: null, trickle: null, startedAt: 0 };
  before(async () => {
    srv = await startServer({
      shards: 1, maxPayload: MAX_PAYLOAD, sendQueue: 256, pingInterval: 120000, pingTimeout: 120000,
      extraArgs: ['--max-channels-per-socket', String(MAX_CHANNELS), '--max-events-per-sec', '0', '--max-joins-per-sec', '0', '--connect-timeout', '500'],
    });
    w = await witness(srv);
    slow.startedAt = Date.now();
    const open = (onConnect) => {
      const s = net.connect(srv.port, '127.0.0.1', () => onConnect(s));
      s.closedAt = null;
      s.on('close', () => { s.closedAt = Date.now(); });
      s.on('error', () => {});
      return s;
    };
    slow.half = open((s) => s.write('GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n'));
    const line = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n';
    let i = 0;
    slow.trickle = open((s) => {
      slow.timer = setInterval(() => { if (!s.destroyed && i < line.length) { s.write(line[i]); i += 1; } }, 2000);
    });
  });
  after(async () => {
    clearInterval(slow.timer);
    slow.half?.destroy(); slow.trickle?.destroy();
    w?.close(); closeAll(srv); await srv?.stop();
  });
  afterEach(() => { closeAll(srv); });

  it('an oversized websocket message gets an error event too_large, then a clean close (1009)', async () => {
    const c = await rawClient(srv, mint());
    c.ws.send(`42${JSON.stringify(['publish', { channel: uniq(), event: 'big', data: 'x'.repeat(MAX_PAYLOAD * 2) }])}`);
    const err = await c.next((m) => m.startsWith('42["error"'));
    const [, body] = JSON.parse(err.slice(2));
    assert.equal(body.code, 'too_large', JSON.stringify(body));
    assert.equal(typeof body.message, 'string');
    const closed = await c.whenClosed();
    assert.equal(closed.code, 1009, `close code ${JSON.stringify(closed)}`);
    await w.check('an oversized websocket message');
  });

  it('an oversized frame announced by its header alone (64-bit length, no payload) is refused without waiting for it', async () => {
    const c = await rawTcpSio(srv);
    c.send(wsFrame(0x1, Buffer.alloc(0), { claimLen: 2 ** 40 }));
    await c.whenEnded();
    console.log(`# header-only 1 TiB frame: close frame ${JSON.stringify(c.closeFrame())}, TCP ended ${c.ended}`);
    const cf = c.closeFrame();
    if (cf) assert.ok([1009, 1002].includes(cf.code), `close code ${cf.code}`);
    c.sock.destroy();
    await w.check('a 1 TiB frame header');
  });

  it('a polling body over --max-payload is answered HTTP 413', async () => {
    const sid = await pollingOpen(srv);
    const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: 'POST', headers: { 'Content-Type': 'text/plain;charset=UTF-8' }, body: `4${'x'.repeat(MAX_PAYLOAD * 2)}`,
    });
    assert.equal(res.status, 413);
    // a body announced larger than the limit is refused from its head, before it is sent
    const sid2 = await pollingOpen(srv);
    const r = await rawHttp(srv.port, `POST /socket.io/?EIO=4&transport=polling&sid=${sid2} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000000000\r\n\r\n`);
    assert.equal(r.status, 413, r.text());
    r.sock?.destroy();
    await w.check('an oversized polling body');
  });

  it('invalid UTF-8 in a text frame closes that connection only', async () => {
    const c = await rawTcpSio(srv);
    c.send(wsFrame(0x1, Buffer.from([0x34, 0x32, 0x5b, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x5d])));
    await c.whenEnded();
    const cf = c.closeFrame();
    console.log(`# invalid UTF-8: close frame ${JSON.stringify(cf)}, TCP ended ${c.ended}`);
    if (cf) assert.equal(cf.code, 1007, 'RFC 6455: invalid UTF-8 is close code 1007');
    c.sock.destroy();
    await w.check('invalid UTF-8');
  });

  it('a message trickled one byte per TCP write is reassembled and answered', async () => {
    const c = await rawTcpSio(srv);
    const frame = wsFrame(0x1, `421${JSON.stringify(['join', uniq('trickle')])}`);
    for (const b of frame) { c.send(Buffer.from([b])); await sleep(2); }
    const a = await c.waitText((t) => t.startsWith('431['), 'the ack of the trickled join');
    assert.equal(JSON.parse(a.slice(3))[0].ok, true, a);
    c.sock.destroy();
    await w.check('a trickled frame');
  });

  it('a truncated frame (header and half a payload, then silence, then the peer goes) leaks nothing', async () => {
    const c = await rawTcpSio(srv);
    const frame = wsFrame(0x1, `42${JSON.stringify(['join', uniq('trunc')])}`);
    c.send(frame.subarray(0, Math.floor(frame.length / 2)));
    await sleep(300);
    await w.roundTrip('a half frame in flight (connection still open)');
    c.sock.destroy();
    await w.check('a truncated frame');
  });

  it('a fragmented message with a ping between its fragments: pong, then the reassembled message', async () => {
    const c = await rawTcpSio(srv);
    const ch = uniq('frag');
    const text = `427${JSON.stringify(['join', { channel: ch }])}`;
    c.send(wsFrame(0x1, text.slice(0, 5), { fin: false }));
    c.send(wsFrame(0x9, 'hello'));
    c.send(wsFrame(0x0, text.slice(5, 12), { fin: false }));
    c.send(wsFrame(0x0, text.slice(12), { fin: true }));
    const ackText = await c.waitText((t) => t.startsWith('437['), 'the ack of the fragmented join');
    assert.deepEqual(JSON.parse(ackText.slice(3))[0], { ok: true, channel: ch, members: 1 });
    const pong = c.frames.find((f) => f.opcode === 0xa);
    assert.ok(pong, 'a pong answers the ping sent between fragments');
    assert.equal(pong.payload.toString(), 'hello');
    c.sock.destroy();
    await w.check('a fragmented message');
  });

  for (const [name, frames] of [
    ['a new text frame inside a fragmented message', () => [wsFrame(0x1, '42["jo', { fin: false }), wsFrame(0x1, '42["join","x"]')]],
    ['a continuation frame with nothing to continue', () => [wsFrame(0x0, '42["join","x"]')]],
    ['a fragmented control frame', () => [wsFrame(0x9, 'ab', { fin: false })]],
    ['an unmasked client frame', () => [wsFrame(0x1, '42["join","x"]', { mask: false })]],
    ['a reserved opcode', () => [wsFrame(0x3, 'zz')]],
  ]) {
    it(`protocol violation: ${name} closes that connection only`, async () => {
      const c = await rawTcpSio(srv);
      for (const f of frames()) c.send(f);
      await c.whenEnded();
      const cf = c.closeFrame();
      console.log(`# ${name}: close frame ${JSON.stringify(cf)}, TCP ended ${c.ended}`);
      if (cf) assert.equal(cf.code, 1002, 'RFC 6455: a protocol error is close code 1002');
      c.sock.destroy();
      await w.check(name);
    });
  }

  it('garbage bytes instead of an HTTP head are answered 400 and closed', async () => {
    const r = await rawHttp(srv.port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]));
    assert.ok(r.status === 400 || r.status === null, `status ${r.status}`);
    r.sock?.destroy();
    await w.check('garbage bytes');
  });

  it(`thousands of joins from one socket: at most --max-channels-per-socket, then forbidden naming the limit`, async () => {
    const s = await connect(srv, { transports: ['websocket'] });
    const names = Array.from({ length: 3000 }, (_, i) => `flood:${process.pid}:${i}`);
    const results = [];
    for (let i = 0; i < names.length; i += 500) {
      results.push(...await Promise.all(names.slice(i, i + 500).map((ch) => ack(s, 'join', ch))));
    }
    const ok = results.filter((r) => r.ok === true);
    const forbidden = results.filter((r) => isErr(r, 'forbidden'));
    assert.equal(ok.length, MAX_CHANNELS, `joins accepted: ${ok.length}`);
    assert.equal(forbidden.length, names.length - MAX_CHANNELS, `other answers: ${JSON.stringify(results.find((r) => !r.ok && !isErr(r, 'forbidden')))}`);
    assert.match(forbidden[0].error.message, new RegExp(`\\b${MAX_CHANNELS}\\b`), 'the message names the limit');
    // joining a channel it is already in is not a new channel
    assert.equal((await ack(s, 'join', names[0])).ok, true);
    // leaving one makes room for one
    assert.equal((await ack(s, 'leave', names[0])).ok, true);
    assert.equal((await ack(s, 'join', names[2999])).ok, true);
    assert.ok(isErr(await ack(s, 'join', names[2998]), 'forbidden'));
    // subscriptions have the same bound
    const subs = await Promise.all(Array.from({ length: MAX_CHANNELS + 50 }, (_, i) => ack(s, 'subscribe', { topic: `sub:${i}` })));
    assert.equal(subs.filter((r) => r.ok).length, MAX_CHANNELS);
    assert.ok(subs.slice(MAX_CHANNELS).every((r) => isErr(r, 'forbidden')), JSON.stringify(subs[MAX_CHANNELS]));
    s.close();
    await w.check('thousands of joins');
  });

  it('a client that never reads is disconnected as a slow consumer, memory stays bounded, the others are still served', { timeout: 180000 }, async () => {
    const ch = uniq('slow');
    const slowC = await rawClient(srv, mint({ sub: 'never-reads' }));
    assert.equal((await slowC.emitAck('join', ch)).ok, true);
    const good = await connect(srv, { transports: ['websocket'] });
    const goodPresence = record(good, 'presence');
    await ack(good, 'join', ch);
    const lat = [];
    let received = 0;
    good.on('event', (e) => { received += 1; lat.push(Date.now() - e.ts); });
    const pub = await connect(srv, { transports: ['websocket'] });
    const rssBefore = rssKiB(srv.proc.pid);
    slowC.ws._socket.pause(); // stop reading: the kernel buffers fill, then the server's bounded queue
    const slowLeft = () => goodPresence.some((p) => p.type === 'leave' && p.member.socketId === slowC.sid);
    const payload = 'z'.repeat(8192);
    let sent = 0;
    let rssPeak = rssBefore;
    while (!slowLeft() && sent < 8000) {
      const window = [];
      for (let i = 0; i < 20; i += 1) { window.push(ack(pub, 'publish', { channel: ch, event: 'flood', data: { i: sent, payload } })); sent += 1; }
      const res = await Promise.all(window);
      assert.ok(res.every((r) => r.ok === true), `publishes succeed: ${JSON.stringify(res.find((r) => !r.ok))}`);
      rssPeak = Math.max(rssPeak, rssKiB(srv.proc.pid));
    }
    await until(slowLeft, `the slow socket is disconnected (sent ${sent} x 8 KiB while it did not read)`, 30000);
    await until(() => received >= sent, () => `the good member gets all ${sent}; got ${received}`, 30000);
    const rssAfter = rssKiB(srv.proc.pid);
    lat.sort((x, y) => x - y);
    console.log(`# slow consumer: cut after ${sent} publishes of 8 KiB; gateway VmRSS ${rssBefore} KiB before, peak ${rssPeak} KiB, ${rssAfter} KiB after; other member's delivery latency p50 ${percentile(lat, 50)} ms, p99 ${percentile(lat, 99)} ms, max ${lat[lat.length - 1]} ms over ${lat.length} events`);
    // bounded: the queue is 256 packets of ~8 KiB (2 MiB) plus socket buffers; 64 MiB is generous
    assert.ok(rssPeak - rssBefore < 64 * 1024, `VmRSS grew by ${rssPeak - rssBefore} KiB while a client did not read`);
    assert.ok(good.connected, 'the other member is still connected');
    slowC.ws._socket.resume();
    await slowC.whenClosed(30000);
    good.close(); pub.close();
    await w.check('a client that never reads');
  });

  it('a websocket session that never sends the Socket.IO CONNECT is closed after --connect-timeout', async () => {
    const c = await rawClient(srv, null, { connectNsp: false });
    const closed = await c.whenClosed(10000);
    const after = closed.at - c.openedAt;
    console.log(`# no CONNECT: closed ${after} ms after the handshake (--connect-timeout 500), code ${closed.code}`);
    assert.ok(after >= 400, `closed after ${after} ms, before the timeout`);
    await w.check('a session without CONNECT');
  });

  it('a polling session that never sends CONNECT is closed after --connect-timeout too', async () => {
    await pollingOpen(srv);
    await pollingOpen(srv);
    await w.check('polling sessions without CONNECT');
  });

  // Last: the heads started in before() have had the whole file's time.
  it('handshakes that never finish: half a request head, and a head trickled byte by byte, are closed by the 30 s head timeout', { timeout: 60000 }, async () => {
    const deadline = slow.startedAt + 45000;
    await until(() => slow.half.closedAt, 'the half head is closed', Math.max(1000, deadline - Date.now()));
    const halfAfter = slow.half.closedAt - slow.startedAt;
    console.log(`# half head closed after ${halfAfter} ms`);
    await until(() => slow.trickle.closedAt, () => `the trickled head is closed (still open ${Math.round((Date.now() - slow.startedAt) / 1000)} s after its start: the head timeout is per read, not per head)`, Math.max(1000, deadline - Date.now()));
    const trickleAfter = slow.trickle.closedAt - slow.startedAt;
    console.log(`# half head closed after ${halfAfter} ms; trickled head closed after ${trickleAfter} ms`);
    assert.ok(halfAfter >= 25000, `the half head closed after ${halfAfter} ms`);
    await w.check('unfinished handshakes');
  });
});

describe('hostile clients: event floods (--max-events-per-sec 50) [shards=1]', () => {
  const RATE = 50;
  let srv;
  let w;
  before(async () => {
    srv = await startServer({ shards: 1, extraArgs: ['--max-events-per-sec', String(RATE)] });
    w = await witness(srv);
  });
  after(async () => { w?.close(); closeAll(srv); await srv?.stop(); });

  it('a burst beyond 2×N is answered rate_limited (ack, or error event), the bucket refills, a socket that keeps flooding is disconnected', { timeout: 60000 }, async () => {
    const s = await connect(srv, { transports: ['websocket'] });
    const ch = uniq('flood');
    // 1. with acks: a burst of 2N passes, beyond it rate_limited
    const res = await Promise.all(Array.from({ length: 2 * RATE + 20 }, (_, i) => ack(s, 'publish', { channel: ch, event: 'e', data: i })));
    const ok = res.filter((r) => r.ok).length;
    const limited = res.filter((r) => isErr(r, 'rate_limited'));
    assert.ok(ok >= 2 * RATE && ok <= 2 * RATE + 15, `accepted in the burst: ${ok} (burst ${2 * RATE}, plus what refilled meanwhile)`);
    assert.equal(ok + limited.length, res.length, JSON.stringify(res.find((r) => !r.ok && !isErr(r, 'rate_limited'))));
    assert.ok(s.connected, 'a burst is not a flood');
    // 2. it refills at N per second
    await sleep(1000);
    const again = await Promise.all(Array.from({ length: RATE / 2 }, () => ack(s, 'join', ch)));
    assert.ok(again.every((r) => r.ok), `after 1 s: ${JSON.stringify(again.find((r) => !r.ok))}`);
    // 3. without acks: error events rate_limited
    await sleep(2100);
    const errors = record(s, 'error');
    for (let i = 0; i < 2 * RATE + 30; i += 1) s.emit('publish', { channel: ch, event: 'e', data: i });
    await until(() => errors.length >= 5, () => `error events rate_limited (got ${errors.length})`);
    assert.ok(errors.every((e) => e.code === 'rate_limited' && typeof e.message === 'string'), JSON.stringify(errors[0]));
    assert.ok(s.connected);
    // 4. a flood that goes on: disconnected
    const gone = waitFor(s, 'disconnect', () => true, 10000);
    for (let i = 0; i < 20 * RATE; i += 1) s.emit('publish', { channel: ch, event: 'e', data: i });
    const reason = await gone;
    console.log(`# flooding socket disconnected, client reason "${reason}"`);
    const m = await metrics(srv);
    console.log(`# ${m.split('\n').filter((l) => l.startsWith('socket_gateway_disconnects_total')).join(' | ')}`);
    await w.check('an event flood');
  });
});

describe('hostile clients: half-open connections and missing PONGs (--ping-interval 300 --ping-timeout 300)', () => {
  let srv;
  let w;
  before(async () => {
    srv = await startServer({ shards: 1, pingInterval: 300, pingTimeout: 300 });
    w = await witness(srv);
  });
  after(async () => { w?.close(); closeAll(srv); await srv?.stop(); });

  it('a websocket client that stops answering PINGs is closed after about pingInterval + pingTimeout', async () => {
    const c = await rawClient(srv, mint(), { answerPings: false });
    const closed = await c.whenClosed(10000);
    const after = closed.at - c.openedAt;
    console.log(`# no PONG (websocket): closed ${after} ms after the handshake (interval 300 + timeout 300)`);
    assert.ok(after >= 500 && after < 5000, `closed after ${after} ms`);
    await w.check('missing PONGs');
  });

  it('a half-open peer (TCP alive, reads and writes nothing) is closed too', async () => {
    const c = await rawClient(srv, mint());
    c.ws._socket.pause();
    c.ws.send = () => {};
    const t0 = Date.now();
    await until(async () => (await sessions(srv)) === w.baseline, 'the half-open session is closed', 10000);
    console.log(`# half-open peer: session gone ${Date.now() - t0} ms after it went silent`);
    c.ws._socket.destroy();
    await w.check('a half-open peer');
  });

  it('a polling client that stops polling is closed', async () => {
    const sid = await pollingOpen(srv);
    const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: 'POST', headers: { 'Content-Type': 'text/plain;charset=UTF-8' }, body: `40${JSON.stringify({ token: mint(), recover: false })}`,
    });
    assert.equal(res.status, 200);
    await w.check('a polling client that stops polling');
  });
});

describe('hostile clients: connection floods past --max-connections 6', () => {
  let srv;
  let w;
  before(async () => {
    srv = await startServer({ shards: 1, maxConnections: 6 });
    w = await witness(srv);
  });
  after(async () => { w?.close(); closeAll(srv); await srv?.stop(); });

  it('handshakes beyond the limit get HTTP 503 before any upgrade; room comes back when sockets go', async () => {
    const held = [];
    // 2 witness + 4 more fill the instance
    for (let i = 0; i < 4; i += 1) held.push(await connect(srv, { transports: ['websocket'] }));
    const statuses = [];
    const flood = Array.from({ length: 200 }, () => new Promise((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`);
      let done = false;
      const end = (v) => { if (!done) { done = true; statuses.push(v); resolve(); } };
      ws.on('unexpected-response', (_req, res) => { end(res.statusCode); res.resume(); ws.terminate(); });
      ws.on('open', () => { end(101); ws.terminate(); });
      ws.on('error', (e) => end(`error ${e.message}`));
    }));
    await Promise.all(flood);
    assert.deepEqual([...new Set(statuses)], [503], `answers to 200 upgrades past the limit: ${JSON.stringify(statuses.slice(0, 10))}`);
    const r = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(r.status, 503, 'a polling handshake past the limit');
    const body = await r.text();
    console.log(`# 503 body: ${body.slice(0, 200)}`);
    // the raw answer is a plain HTTP 503, never a 101
    const raw = await rawHttp(srv.port, `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    assert.equal(raw.status, 503, raw.text());
    raw.sock?.destroy();
    // other routes still answer
    assert.equal((await fetch(`${srv.url}/healthz`)).status, 200);
    for (const s of held) s.close();
    await w.check('a connection flood');
    const late = await connect(srv, { transports: ['websocket'] });
    assert.ok(late.connected, 'room again once sockets left');
    late.close();
  });
});

describe('hostile clients: forged tokens (those auth.test.mjs does not cover)', () => {
  const rsPub = path.join(KEYS_DIR, 'rsa_public.pem');
  const rsPriv = fs.readFileSync(path.join(KEYS_DIR, 'rsa_private.pem'));
  const ecPriv = fs.readFileSync(path.join(KEYS_DIR, 'ec_private.pem'));
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = () => Math.floor(Date.now() / 1000);
  let rs;
  let hs;
  let wRs;
  let wHs;
  before(async () => {
    rs = await startServer({ shards: 1, algorithm: 'RS256', publicKey: rsPub });
    hs = await startServer({ shards: 1 });
    // the witnesses need tokens their server accepts
    rs.mintOk = (claims = {}) => mint(claims, { algorithm: 'RS256', key: rsPriv });
    const origConnect = connect;
    wRs = await (async () => {
      const ch = uniq('witness');
      const a = await origConnect(rs, { transports: ['websocket'], token: rs.mintOk() });
      const b = await origConnect(rs, { transports: ['websocket'], token: rs.mintOk() });
      rs.sockets.delete(a); rs.sockets.delete(b);
      await ack(a, 'join', ch);
      const got = record(a, 'event');
      await until(async () => (await sessions(rs)) === 2, 'witness sessions');
      let n = 0;
      return {
        async check(what) {
          n += 1;
          const marker = `${what}#${n}`;
          assert.equal((await ack(b, 'publish', { channel: ch, event: 'w', data: marker })).ok, true);
          await until(() => got.some((e) => e.data === marker), `round trip after ${what}`);
          await until(async () => (await sessions(rs)) === 2, `sessions back to 2 after ${what}`);
        },
        close() { a.close(); b.close(); },
      };
    })();
    wHs = await witness(hs);
  });
  after(async () => { wRs?.close(); wHs?.close(); closeAll(rs); closeAll(hs); await rs?.stop(); await hs?.stop(); });

  const refused = (err, reason) => {
    assert.equal(err.message, 'unauthorized', `connect_error ${err.message} ${JSON.stringify(err.data)}`);
    assert.deepEqual(err.data, { reason });
  };

  const rsCases = [
    ['HS/RS confusion: HS256 signed with the server\'s RSA public key as the HMAC secret', () => mint({}, { algorithm: 'HS256', secret: fs.readFileSync(rsPub) }), 'wrong_algorithm'],
    ['HS/RS confusion: header says RS256, signature is an HMAC with the public key', () => {
      const h = b64({ alg: 'RS256', typ: 'JWT' });
      const p = b64({ sub: uniqUser(), exp: now() + 3600 });
      const sig = crypto.createHmac('sha256', fs.readFileSync(rsPub)).update(`${h}.${p}`).digest('base64url');
      return `${h}.${p}.${sig}`;
    }, 'bad_signature'],
    ['RS256 signed with another RSA key (wrong key)', () => {
      const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      return mint({}, { algorithm: 'RS256', key: privateKey.export({ type: 'pkcs8', format: 'pem' }) });
    }, 'bad_signature'],
    ['RS256 with a tampered payload (sub changed, signature kept)', () => {
      const t = rs.mintOk({ sub: 'alice' }).split('.');
      t[1] = b64({ sub: 'mallory', exp: now() + 3600 });
      return t.join('.');
    }, 'bad_signature'],
    ['RS256 with a tampered payload (channels claim widened)', () => {
      const t = rs.mintOk({ sub: 'alice', channels: ['chat:a'] }).split('.');
      const p = JSON.parse(Buffer.from(t[1], 'base64url'));
      p.channels = ['*'];
      t[1] = b64(p);
      return t.join('.');
    }, 'bad_signature'],
    ['RS256 expired', () => rs.mintOk({ exp: now() - 3600 }), 'expired'],
    ['ES256 token on an RS256 server', () => mint({}, { algorithm: 'ES256', key: ecPriv }), 'wrong_algorithm'],
    ['alg none on an RS256 server', () => unsignedToken(), 'wrong_algorithm'],
    ['RS256 with the signature stripped', () => { const t = rs.mintOk().split('.'); return `${t[0]}.${t[1]}.`; }, 'bad_signature'],
  ];
  for (const [name, token, reason] of rsCases) {
    it(`RS256 server refuses: ${name} → ${reason}`, async () => {
      refused(await connectError(rs, { token: token() }), reason);
      await wRs.check(name);
    });
  }

  const hsCases = [
    ['alg "None" (capitalised)', () => `${b64({ alg: 'None', typ: 'JWT' })}.${b64({ sub: uniqUser(), exp: now() + 3600 })}.`, 'wrong_algorithm'],
    ['alg "NONE" with an HS256 signature appended', () => {
      const h = b64({ alg: 'NONE' });
      const p = b64({ sub: uniqUser(), exp: now() + 3600 });
      return `${h}.${p}.${crypto.createHmac('sha256', hs.secret).update(`${h}.${p}`).digest('base64url')}`;
    }, 'wrong_algorithm'],
    ['header re-labelled HS384 over a valid HS256 signature', () => {
      const t = mint().split('.');
      t[0] = b64({ alg: 'HS384', typ: 'JWT' });
      return t.join('.');
    }, 'wrong_algorithm'],
    ['HS256 with the signature stripped', () => { const t = mint().split('.'); return `${t[0]}.${t[1]}.`; }, 'bad_signature'],
    ['HS256 with an empty secret', () => {
      const h = b64({ alg: 'HS256', typ: 'JWT' });
      const p = b64({ sub: uniqUser(), exp: now() + 3600 });
      return `${h}.${p}.${crypto.createHmac('sha256', '').update(`${h}.${p}`).digest('base64url')}`;
    }, 'bad_signature'],
    ['tampered exp (extended a year), signature kept', () => {
      const t = mint({ exp: now() - 3600 }).split('.');
      const p = JSON.parse(Buffer.from(t[1], 'base64url'));
      p.exp = now() + 365 * 86400;
      t[1] = b64(p);
      return t.join('.');
    }, 'bad_signature'],
    ['tampered role (admin added), signature kept', () => {
      const t = mint({ sub: 'eve' }).split('.');
      const p = JSON.parse(Buffer.from(t[1], 'base64url'));
      p.role = 'admin';
      t[1] = b64(p);
      return t.join('.');
    }, 'bad_signature'],
    ['expired long ago (exp 1)', () => mint({ exp: 1 }), 'expired'],
    ['exp as a string', () => {
      const h = b64({ alg: 'HS256', typ: 'JWT' });
      const p = b64({ sub: uniqUser(), exp: String(now() + 3600) });
      return `${h}.${p}.${crypto.createHmac('sha256', hs.secret).update(`${h}.${p}`).digest('base64url')}`;
    }, null],
    ['a 100 KiB token', () => `${b64({ alg: 'HS256' })}.${'A'.repeat(100 * 1024)}.sig`, 'malformed'],
    ['four segments', () => `${mint()}.extra`, 'malformed'],
    ['a payload that is not JSON', () => `${b64({ alg: 'HS256' })}.${Buffer.from('{not json').toString('base64url')}.x`, 'malformed'],
  ];
  for (const [name, token, reason] of hsCases) {
    it(`HS256 server refuses: ${name}${reason ? ` → ${reason}` : ''}`, async () => {
      const err = await connectError(hs, { token: token() });
      if (reason) refused(err, reason);
      else {
        assert.equal(err.message, 'unauthorized');
        console.log(`# ${name}: refused as ${JSON.stringify(err.data)}`);
      }
      await wHs.check(name);
    });
  }

  it('a forged admin token is refused by the REST API (401) and a user token without role admin too', async () => {
    const t = mint({ sub: 'eve' }).split('.');
    const p = JSON.parse(Buffer.from(t[1], 'base64url'));
    p.role = 'admin';
    t[1] = b64(p);
    for (const bearer of [t.join('.'), mint({ sub: 'eve' }), unsignedToken({ role: 'admin' })]) {
      const r = await fetch(`${hs.url}/api/socket/connections`, { headers: { Authorization: `Bearer ${bearer}` } });
      assert.equal(r.status, 401);
    }
    const ok = await fetch(`${hs.url}/api/socket/connections`, { headers: { Authorization: `Bearer ${mint({ role: 'admin' })}` } });
    assert.equal(ok.status, 200);
    await wHs.check('forged admin tokens');
  });

  it('forged tokens over the polling handshake (query, Bearer header) leave no session behind', async () => {
    for (let i = 0; i < 20; i += 1) {
      const err = await connectError(hs, { token: null, transports: ['polling'], query: { token: unsignedToken() } });
      refused(err, 'wrong_algorithm');
      const err2 = await connectError(hs, { token: null, transports: ['polling'], extraHeaders: { Authorization: `Bearer ${mint({}, { secret: 'x' })}` } });
      refused(err2, 'bad_signature');
    }
    await wHs.check('forged tokens over polling');
  });
});

describe('hostile clients: joining outside the channels claim', () => {
  let srv;
  let w;
  before(async () => { srv = await startServer({ shards: 1 }); w = await witness(srv); });
  after(async () => { w?.close(); closeAll(srv); await srv?.stop(); });

  it('look-alike names, object forms and wider patterns are forbidden, and a refused join receives nothing', async () => {
    const claims = { channels: ['team:a:*', 'lobby'] };
    const s = await connect(srv, { claims, transports: ['websocket'] });
    const got = record(s, 'event');
    for (const ch of ['team:a:x', 'team:a:', 'lobby']) assert.equal((await ack(s, 'join', ch)).ok, true, ch);
    const outside = ['team:b:x', 'team:a', 'TEAM:a:x', 'team：a:x', 'lobby ', ' lobby', 'lobby2', 'Lobby', 'team:a\u200b:x', 'lobby\u0301'];
    for (const ch of outside) {
      assert.ok(isErr(await ack(s, 'join', ch), 'forbidden'), `join ${JSON.stringify(ch)}`);
      assert.ok(isErr(await ack(s, 'join', { channel: ch }), 'forbidden'), `join {channel: ${JSON.stringify(ch)}}`);
      assert.ok(isErr(await ack(s, 'publish', { channel: ch, event: 'e', data: 1 }), 'forbidden'), `publish ${JSON.stringify(ch)}`);
    }
    for (const topic of ['team:*', 'team:a*', 'lobby*', '*', 'team:b:*']) {
      assert.ok(isErr(await ack(s, 'subscribe', { topic }), 'forbidden'), `subscribe ${topic}`);
    }
    // names with control characters are invalid before they are forbidden
    assert.ok(isErr(await ack(s, 'join', 'team:a:\u0000x'), 'invalid_channel'));
    // the refused channels deliver nothing to it
    const other = await connect(srv, { transports: ['websocket'] });
    for (const ch of outside) await ack(other, 'join', ch);
    for (const ch of outside) await ack(other, 'publish', { channel: ch, event: 'leak', data: ch });
    await ack(other, 'publish', { channel: 'lobby', event: 'marker', data: 1 });
    await until(() => got.some((e) => e.event === 'marker'), 'the marker on an allowed channel');
    assert.deepEqual(got.filter((e) => e.event === 'leak'), []);
    const mine = (await ack(other, 'members', 'team:b:x')).members.map((m) => m.socketId);
    assert.ok(!mine.includes(s.id), 'not a member of a refused channel');
    s.close(); other.close();
    await w.check('joins outside the channels claim');
  });
});
