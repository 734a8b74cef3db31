// Bounds on what one session can make the node hold, before and after its Socket.IO CONNECT:
// nothing but CONNECT before a namespace is connected (attachments included), binary attachments
// bounded in count (--max-attachments) and bytes (--max-payload), sessions that never CONNECT
// counted apart from connections (--max-pending-sessions, --connect-timeout), and a send queue
// bounded in bytes (--send-queue-bytes). Every server runs one shard, so the witness that must
// still be served after each attack shares the attacked shard.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';
import { startServer, connect, ack, mint, uniq, record, until, sleep, closeAll, io } from './fixture.mjs';
import { rssKiB, witness } from './raw.mjs';

const MiB = 1024 * 1024;
const MAX_PAYLOAD = 1_000_000;
const SEND_QUEUE_BYTES = 1_048_576;

/** Samples the server's VmRSS every few ms until stop(); returns the peak in KiB. */
function rssWatch(srv) {
  let peak = rssKiB(srv.proc.pid);
  const t = setInterval(() => { try { peak = Math.max(peak, rssKiB(srv.proc.pid)); } catch { /* exited */ } }, 5);
  return { stop() { clearInterval(t); peak = Math.max(peak, rssKiB(srv.proc.pid)); return peak; } };
}

async function metricSum(srv, name, labels = '') {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name && (m[2] ?? '').includes(labels)) sum += Number(m[3]);
  }
  return sum;
}

/** A raw websocket Engine.IO client; with a token, also the Socket.IO CONNECT. */
async function rawWs(srv, token) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket.io/?EIO=4&transport=websocket`, { maxPayload: 0 });
  const inbox = [];
  let closed = null;
  ws.on('message', (buf, isBinary) => {
    if (isBinary) return;
    const t = buf.toString();
    if (t === '2') { ws.send('3'); return; }
    inbox.push(t);
  });
  ws.on('close', (code) => { closed = { code, at: Date.now() }; });
  ws.on('error', () => {});
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  await until(() => inbox.some((m) => m.startsWith('0{')), 'the Engine.IO OPEN');
  const c = { ws, inbox, get closed() { return closed; }, openedAt: Date.now() };
  c.whenClosed = (ms, what = 'the server closes the websocket') => until(() => closed, what, ms);
  if (token) {
    ws.send(`40${JSON.stringify({ token, recover: false })}`);
    const conn = await until(() => inbox.find((m) => m.startsWith('40') || m.startsWith('44')), 'the CONNECT answer');
    assert.ok(conn.startsWith('40{'), `CONNECT answered ${conn}`);
    c.sid = JSON.parse(conn.slice(2)).sid;
  }
  return c;
}

const placeholders = (n) => Array.from({ length: n }, (_, num) => ({ _placeholder: true, num }));

/** Sends binary frames while the socket is open; resolves when all are handed to `ws` or it closed. */
async function sendFrames(ws, count, size) {
  const frame = Buffer.alloc(size, 0x5a);
  for (let i = 0; i < count && ws.readyState === WebSocket.OPEN; i += 1) {
    ws.send(frame);
    // Let the socket drain so node does not buffer everything at once.
    while (ws.bufferedAmount > 4 * size && ws.readyState === WebSocket.OPEN) await sleep(1);
  }
}

describe('session bounds: before CONNECT, binary attachments, slow readers [shards=1]', () => {
  let srv;
  let w;
  before(async () => {
    srv = await startServer({
      shards: 1,
      maxPayload: MAX_PAYLOAD,
      extraArgs: ['--send-queue-bytes', String(SEND_QUEUE_BYTES),
        '--connect-timeout', '10000', '--max-events-per-sec', '0'],
    });
    w = await witness(srv);
  });
  after(async () => { w?.close(); closeAll(srv); await srv?.stop(); });

  it('before CONNECT: a BINARY_EVENT header announcing 10,000 attachments, then 150 frames of ~1 MB, closes the session at once; memory stays flat', { timeout: 60000 }, async () => {
    const c = await rawWs(srv, null);
    const rss0 = rssKiB(srv.proc.pid);
    const watch = rssWatch(srv);
    const t0 = Date.now();
    c.ws.send(`4510000-${JSON.stringify(['publish', { channel: 'x', event: 'e', data: placeholders(3) }])}`);
    await sendFrames(c.ws, 150, MAX_PAYLOAD - 1000);
    await c.whenClosed(5000, 'the unauthenticated session is closed');
    await sleep(200);
    const peak = watch.stop();
    console.log(`# pre-CONNECT binary: closed ${c.closed.at - t0} ms after the header (code ${c.closed.code}); VmRSS ${rss0} KiB before, peak ${peak} KiB (+${peak - rss0} KiB)`);
    assert.ok(c.closed.at - t0 < 3000, `closed ${c.closed.at - t0} ms after the header`);
    // At most one ~1 MB message is ever read (tungstenite's buffer) before the close: 8 MiB is
    // that plus allocator slack; the unbounded collection grew by ~143 MiB.
    assert.ok(peak - rss0 < 8 * 1024, `VmRSS grew by ${peak - rss0} KiB`);
    await w.roundTrip('a pre-CONNECT binary flood');
  });

  it('before CONNECT: a plain EVENT (or an ACK) closes the session; so does an EVENT for a namespace not connected', async () => {
    for (const packet of ['42["publish",{"channel":"x","event":"e","data":1}]', '43[1]', '41']) {
      const c = await rawWs(srv, null);
      const t0 = Date.now();
      c.ws.send(packet);
      await c.whenClosed(3000, `the session closes on ${packet} before CONNECT (--connect-timeout is 10 s)`);
      assert.ok(c.closed.at - t0 < 2000, `${packet}: closed after ${c.closed.at - t0} ms`);
    }
    const c = await rawWs(srv, mint());
    c.ws.send('42/other,["publish",{"channel":"x","event":"e","data":1}]');
    await c.whenClosed(3000, 'an EVENT for /other (only / is connected) closes the session');
    const b = await rawWs(srv, mint());
    b.ws.send(`451-/other,${JSON.stringify(['publish', { channel: 'x', event: 'e', data: placeholders(1) }])}`);
    await b.whenClosed(3000, 'a BINARY_EVENT header for /other closes the session before its attachment');
    await w.roundTrip('packets before CONNECT');
  });

  it('before CONNECT: a websocket may send 32 KiB at most (a CONNECT and its token, twice the HTTP head limit), so a pending session never holds a --max-payload message', async () => {
    // a CONNECT with a 20 KB token field still gets its answer (refused: the token is no JWT)
    const ok = await rawWs(srv, null);
    ok.ws.send(`40${JSON.stringify({ token: 'x'.repeat(20_000) })}`);
    const answer = await until(() => ok.inbox.find((m) => m.startsWith('44')), 'the CONNECT_ERROR for a 20 KB token');
    assert.match(answer, /unauthorized/);
    assert.equal(ok.closed, null);
    // a 900 KB CONNECT is cut while it is read: no answer, the session closes
    const c = await rawWs(srv, null);
    const rss0 = rssKiB(srv.proc.pid);
    const watch = rssWatch(srv);
    const t0 = Date.now();
    c.ws.send(`40${JSON.stringify({ token: 'x'.repeat(900_000) })}`);
    await c.whenClosed(3000, 'a 900 KB message before CONNECT closes the session');
    const peak = watch.stop();
    console.log(`# 900 KB CONNECT: closed after ${c.closed.at - t0} ms; VmRSS +${peak - rss0} KiB`);
    assert.ok(!c.inbox.some((m) => m.startsWith('44')), 'never read whole, never answered');
    ok.ws.close();
    await w.roundTrip('an oversized CONNECT');
  });

  it('after CONNECT: 11 attachments announced close the session (default --max-attachments 10), so do attachments beyond --max-payload; 10 within it relay intact to a default client', { timeout: 60000 }, async () => {
    const ch = uniq('att');
    // 11 announced: closed on the header, no attachment sent
    const c11 = await rawWs(srv, mint());
    c11.ws.send(`4511-${JSON.stringify(['publish', { channel: ch, event: 'e', data: placeholders(11) }])}`);
    await c11.whenClosed(3000, 'a header announcing 11 attachments closes the session');

    // 10 announced, ~1 MB each: the second takes the total past --max-payload
    const big = await rawWs(srv, mint());
    const rss0 = rssKiB(srv.proc.pid);
    const watch = rssWatch(srv);
    big.ws.send(`4510-${JSON.stringify(['publish', { channel: ch, event: 'e', data: placeholders(10) }])}`);
    await sendFrames(big.ws, 10, MAX_PAYLOAD - 1000);
    await big.whenClosed(5000, 'attachments beyond --max-payload close the session');
    await sleep(200);
    const peak = watch.stop();
    console.log(`# attachments past --max-payload: VmRSS ${rss0} KiB before, peak ${peak} KiB (+${peak - rss0} KiB)`);
    // Held at most: the assembly (<= max-payload) + the message being read (<= max-payload),
    // ~2 MB, plus allocator slack; all 10 would be ~10 MB.
    assert.ok(peak - rss0 < 8 * 1024, `VmRSS grew by ${peak - rss0} KiB`);

    // 10 attachments, ~90 KB each (~0.9 MB with the header), through a default socket.io-client:
    // its decoder takes at most 10 attachments (socket.io-parser's maxAttachments), which is why
    // the gateway's default is 10 too.
    const m = await connect(srv, { transports: ['websocket'] });
    const p = await connect(srv, { transports: ['websocket'] });
    await ack(m, 'join', ch);
    const got = record(m, 'event');
    const parts = Array.from({ length: 10 }, (_, i) => Buffer.alloc(90_000, i + 1));
    const res = await ack(p, 'publish', { channel: ch, event: 'ten', data: parts });
    assert.equal(res.ok, true, JSON.stringify(res));
    await until(() => got.length === 1, 'the 10-attachment event arrives');
    assert.equal(got[0].data.length, 10);
    got[0].data.forEach((b, i) => assert.ok(Buffer.from(b).equals(parts[i]), `attachment ${i} intact`));
    await w.roundTrip('binary attachments');
  });

  it('a socket that stops reading while 200 direct messages of 900 KB come its way is cut as slow_consumer; memory stays bounded', { timeout: 120000 }, async () => {
    const slow = await rawWs(srv, mint({ sub: 'stops-reading' }));
    const sender = await connect(srv, { transports: ['websocket'] });
    const cut0 = await metricSum(srv, 'socket_gateway_disconnects_total', 'reason="slow_consumer"');
    slow.ws._socket.pause(); // stop reading: the kernel buffers fill, then the send queue
    const rss0 = rssKiB(srv.proc.pid);
    const watch = rssWatch(srv);
    const payload = 'q'.repeat(900_000);
    const answers = [];
    for (let i = 0; i < 200; i += 1) {
      answers.push(await ack(sender, 'direct', { to: slow.sid, event: 'big', data: { i, payload } }));
    }
    await until(async () => (await metricSum(srv, 'socket_gateway_disconnects_total', 'reason="slow_consumer"')) > cut0,
      'the socket that stopped reading is cut as slow_consumer', 10000);
    const peak = watch.stop();
    const delivered = answers.filter((a) => a.ok).length;
    console.log(`# slow reader: ${delivered} of 200 directs accepted before the cut (then ${answers.find((a) => !a.ok)?.error?.code}); VmRSS ${rss0} KiB before, peak ${peak} KiB (+${peak - rss0} KiB)`);
    // After the cut the target is gone: later directs are not_found.
    assert.ok(delivered < 200, 'the target is cut before all 200 are accepted');
    assert.equal(answers[199].ok, false);
    assert.equal(answers[199].error.code, 'not_found');
    // Kernel socket buffers are not in the process's RSS. The process holds at most: the send
    // queue (--send-queue-bytes, or one packet when larger) + the batch being written when the
    // kernel stopped taking it (one more queue's worth, copied) + the sender's message being read
    // and decoded (a few copies of max-payload while it is parsed and encoded: ~4 MB). 16 MiB is
    // that with allocator slack; the packet-only bound held all 200 (~173 MiB).
    const bound = 2 * SEND_QUEUE_BYTES + 4 * MAX_PAYLOAD + 8 * MiB;
    assert.ok((peak - rss0) * 1024 < bound, `VmRSS grew by ${peak - rss0} KiB (bound ${bound / 1024} KiB)`);
    slow.ws._socket.resume();
    await slow.whenClosed(10000, 'the cut socket closes once read again');
    // the sender is still served
    const ch = uniq('after');
    assert.equal((await ack(sender, 'join', ch)).ok, true);
    const got = record(sender, 'event');
    assert.equal((await ack(sender, 'publish', { channel: ch, event: 'e', data: 'still here' })).ok, true);
    await until(() => got.some((e) => e.data === 'still here'), 'the sender receives its own publish');
    sender.close();
    await w.roundTrip('a slow reader');
  });
});

/** Polling handshakes over one keep-alive TCP connection; resolves with each answer's status and body. */
function pollingHandshakes(port, n) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const answers = [];
    let buf = '';
    const req = 'GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n';
    sock.on('connect', () => { for (let i = 0; i < n; i += 1) sock.write(req); });
    sock.on('data', (d) => {
      buf += d;
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        const len = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        answers.push({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)[1]), body: buf.slice(end + 4, end + 4 + len) });
        buf = buf.slice(end + 4 + len);
        if (answers.length === n) { sock.destroy(); resolve(answers); }
      }
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(answers));
  });
}

describe('session bounds: pending sessions do not count as connections (--max-connections 50) [shards=1]', () => {
  let srv;
  let w;
  before(async () => {
    srv = await startServer({ shards: 1, maxConnections: 50, extraArgs: ['--max-pending-sessions', '10000', '--connect-timeout', '10000'] });
    w = await witness(srv);
  });
  after(async () => { w?.close(); closeAll(srv); await srv?.stop(); });

  it('300 polling handshakes that never CONNECT, over one keep-alive connection: a real client still connects', async () => {
    const answers = await pollingHandshakes(srv.port, 300);
    assert.equal(answers.length, 300);
    assert.deepEqual([...new Set(answers.map((a) => a.status))], [200], `statuses ${JSON.stringify(answers.find((a) => a.status !== 200))}`);
    assert.equal(await metricSum(srv, 'socket_gateway_pending_sessions'), 300);
    const s = await connect(srv);
    assert.ok(s.connected);
    assert.equal(await metricSum(srv, 'socket_gateway_pending_sessions'), 300);
    s.close();
    await w.roundTrip('a flood of pending sessions');
  });
});

describe('session bounds: --max-pending-sessions 100 --connect-timeout 2000 [shards=1]', () => {
  const CONNECT_TIMEOUT = 2000;
  let srv;
  let w;
  before(async () => {
    srv = await startServer({
      shards: 1, maxConnections: 50,
      extraArgs: ['--max-pending-sessions', '100', '--connect-timeout', String(CONNECT_TIMEOUT)],
    });
    w = await witness(srv);
  });
  after(async () => { w?.close(); closeAll(srv); await srv?.stop(); });

  it('the 101st pending handshake gets 503; connected clients are untouched; pending sessions end after --connect-timeout, and a real client then connects', { timeout: 30000 }, async () => {
    const t0 = Date.now();
    const answers = await pollingHandshakes(srv.port, 100);
    assert.deepEqual([...new Set(answers.map((a) => a.status))], [200]);
    const sid0 = JSON.parse(answers[0].body.slice(answers[0].body.indexOf('{'))).sid;
    const [over] = await pollingHandshakes(srv.port, 1);
    assert.equal(over.status, 503);
    assert.deepEqual(JSON.parse(over.body), { code: 3, message: 'Server at max pending sessions' });
    // the flood keeps out new handshakes, never the connected: the witness is served
    await w.roundTrip('pending sessions at their bound');
    // A real client first makes a pending session too, so while the bound is full it is refused;
    // socket.io-client retries, and connects once the flood's sessions reach --connect-timeout.
    const s = io(srv.url, { auth: { token: mint() }, reconnectionDelay: 200, reconnectionDelayMax: 500, forceNew: true });
    srv.sockets.add(s);
    await until(() => s.connected, 'the real client connects once the pending sessions timed out', 15000);
    const connectedAfter = Date.now() - t0;
    console.log(`# real client connected ${connectedAfter} ms after the flood (--connect-timeout ${CONNECT_TIMEOUT})`);
    assert.ok(connectedAfter >= CONNECT_TIMEOUT - 200, `connected after ${connectedAfter} ms, before the flood timed out`);
    // every pending session of the flood was closed by the connect timeout
    await until(async () => (await metricSum(srv, 'socket_gateway_pending_sessions')) === 0, 'no pending session left');
    const r = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling&sid=${sid0}`);
    assert.equal(r.status, 400, 'a timed-out pending session is gone');
    await r.text();
    s.close();
    await w.roundTrip('pending sessions timed out');
  });
});
