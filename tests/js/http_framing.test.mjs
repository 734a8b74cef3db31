// HTTP framing and CORS (issue 12, items 3 and 6), over raw TCP sockets against the real binary.
//
// Framing: a request whose length another parser could read differently (Transfer-Encoding,
// several or malformed Content-Length, a body on GET/HEAD/OPTIONS, a bare LF line end) gets 400
// and the connection closes, so the bytes that follow it on that connection — in front of a
// proxy that reuses upstream connections, another user's request — never become part of a
// request. After each attack a well-behaved client is still served: a member socket receives a
// REST broadcast, and two pipelined requests on one keep-alive connection are both answered.
//
// CORS: `--cors-origin '*'` answers `*` without credentials; a list echoes listed origins only,
// with credentials and `Vary: Origin`; the origin `null` is never allowed, even when listed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, connect, ack, uniq, record, until, sleep, closeAll } from './fixture.mjs';

const KEY = 'framing-test-api-key-0123456789';

/** Every complete HTTP response in `buf`, framed by its Content-Length. */
function parseResponses(buf) {
  const out = [];
  let rest = buf;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return out;
    const lines = rest.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1]);
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    if (rest.length < end + 4 + len) return out;
    out.push({ status, headers, body: rest.subarray(end + 4, end + 4 + len).toString() });
    rest = rest.subarray(end + 4 + len);
  }
}

/**
 * Writes `parts` on one TCP connection, `gap` ms apart (the later parts stand for what a proxy
 * would send next on a reused upstream connection), then waits up to `wait` ms for the server
 * to close it. Resolves with the responses read and whether the server closed the connection.
 */
async function exchange(port, parts, { gap = 150, wait = 3000 } = {}) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
  let data = Buffer.alloc(0);
  sock.on('data', (d) => { data = Buffer.concat([data, d]); });
  sock.on('error', () => {}); // writes after the server closed: EPIPE / ECONNRESET
  const closed = new Promise((r) => sock.once('close', () => r(true)));
  for (const [i, p] of parts.entries()) {
    if (i) await sleep(gap);
    if (sock.writable) sock.write(p);
  }
  const wasClosed = await Promise.race([closed, sleep(wait).then(() => false)]);
  sock.destroy();
  return { responses: parseResponses(data), closed: wasClosed, raw: data.toString('latin1') };
}

/** One 400 answer, nothing after it, and the connection closed by the server. */
function assertRefused(r, what) {
  assert.deepEqual(r.responses.map((x) => x.status), [400], `${what}: answers ${JSON.stringify(r.raw.slice(0, 600))}`);
  assert.match(r.responses[0].headers.connection ?? '', /close/i, what);
  assert.equal(r.closed, true, `${what}: the server closes the connection`);
}

const broadcastBody = (channel, event, data) => JSON.stringify({ channel, event, data });

/** A REST broadcast head with the API key (and `extra` header lines), before its body. */
const broadcastHead = (extra) => `POST /api/socket/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\n${extra}\r\n`;

describe('HTTP framing [shards=1]', () => {
  let srv;
  let member;
  let got;
  let ch;
  let n = 0;
  before(async () => {
    srv = await startServer({ shards: 1, extraArgs: ['--api-key', KEY] });
    ch = uniq('framing');
    member = await connect(srv, { transports: ['websocket'] });
    assert.equal((await ack(member, 'join', ch)).ok, true);
    got = record(member, 'event');
  });
  after(async () => { closeAll(srv); await srv?.stop(); });

  /** A polling Engine.IO session's sid. */
  async function pollingSid() {
    const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 200);
    const t = await res.text();
    return JSON.parse(t.slice(t.indexOf('{'))).sid;
  }

  /**
   * A well-behaved client is still served: two pipelined requests on one keep-alive connection
   * (a polling handshake and a broadcast) are both answered, and the member socket receives the
   * broadcast — and, since it arrives after everything sent before, no event named `smuggled`.
   */
  async function stillServed(what) {
    n += 1;
    const marker = `served#${n}`;
    const body = broadcastBody(ch, 'legit', marker);
    const r = await exchange(srv.port, [
      'GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n'
        + `${broadcastHead(`Content-Length: ${Buffer.byteLength(body)}\r\n`)}${body}`,
    ], { wait: 1000 });
    assert.deepEqual(r.responses.map((x) => x.status), [200, 202], `after ${what}: ${r.raw.slice(0, 600)}`);
    assert.match(r.responses[0].body, /"sid"/);
    assert.equal(r.closed, false, `after ${what}: a keep-alive connection stays open`);
    await until(() => got.some((e) => e.event === 'legit' && e.data === marker), `the member receives the broadcast after ${what}`);
    assert.deepEqual(got.filter((e) => e.event === 'smuggled'), [], `after ${what}: no smuggled broadcast ran`);
    assert.ok(member.connected);
  }

  it('a GET body cannot smuggle a request that runs with the next request\'s Authorization', async () => {
    // The attacker's handshake GET carries, as its "body", the start of a broadcast whose head
    // is left open; the victim's request (next on the connection) would complete that head with
    // its Authorization, and the attacker's next bytes would be its body.
    const evil = broadcastBody(ch, 'smuggled', 'ran with the victim\'s key');
    const prefix = `POST /api/socket/broadcast HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(evil)}\r\nX-Smuggled: `;
    const attacker = `GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(prefix)}\r\n\r\n${prefix}`;
    const victim = `GET /api/socket/channels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n\r\n`;
    const r = await exchange(srv.port, [attacker, victim, evil]);
    assertRefused(r, 'a GET handshake with a body');
    await stillServed('GET body smuggling');
  });

  it('several Content-Length headers (different, equal, or a list) get 400 and close', async () => {
    const body = broadcastBody(ch, 'smuggled', 'duplicate content-length');
    const len = Buffer.byteLength(body);
    for (const cl of [
      `Content-Length: ${len}\r\nContent-Length: ${len}\r\n`,
      `Content-Length: 5\r\nContent-Length: ${len}\r\n`,
      `Content-Length: ${len}\r\nContent-Length: 0\r\n`,
      `Content-Length: ${len}, ${len}\r\n`,
    ]) {
      assertRefused(await exchange(srv.port, [broadcastHead(cl) + body]), `REST broadcast with ${JSON.stringify(cl)}`);
    }
    const sid = await pollingSid();
    const poll = `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\n`;
    assertRefused(await exchange(srv.port, [`${poll}Content-Length: 1\r\nContent-Length: 23\r\n\r\n6GET /healthz HTTP/1.1\r\n\r\n`]), 'polling POST with two Content-Length');
    await stillServed('duplicate Content-Length');
  });

  it('a malformed Content-Length (+36, -1, " 3 4", overflow, hex) gets 400 and close', async () => {
    const body = broadcastBody(ch, 'smuggled', 'malformed content-length');
    const len = Buffer.byteLength(body);
    for (const v of [`+${len}`, '-1', ` ${String(len).split('').join(' ')}`, '99999999999999999999999', `0x${len.toString(16)}`]) {
      assertRefused(await exchange(srv.port, [broadcastHead(`Content-Length: ${v}\r\n`) + body]), `Content-Length: ${v}`);
    }
    await stillServed('malformed Content-Length');
  });

  it('Transfer-Encoding (any value) on a polling POST or a REST broadcast gets 400 and close', async () => {
    const body = broadcastBody(ch, 'smuggled', 'transfer-encoding');
    const len = Buffer.byteLength(body);
    const chunked = `${len.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    for (const [te, payload] of [
      ['Transfer-Encoding: chunked\r\n', chunked],
      // The last of two wins in a lax parser; a proxy may take the first.
      [`Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: ${len}\r\n`, body],
      [`Transfer-Encoding: gzip\r\nContent-Length: ${len}\r\n`, body],
      [`Content-Length: ${len}\r\nTransfer-Encoding: chunked\r\n`, body],
    ]) {
      assertRefused(await exchange(srv.port, [broadcastHead(te) + payload]), `REST broadcast with ${JSON.stringify(te)}`);
    }
    const sid = await pollingSid();
    const poll = `POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain;charset=UTF-8\r\n`;
    for (const [te, payload] of [
      ['Transfer-Encoding: chunked\r\n', '1\r\n6\r\n0\r\n\r\n'],
      ['Transfer-Encoding: identity\r\nContent-Length: 1\r\n', '6'],
    ]) {
      assertRefused(await exchange(srv.port, [`${poll}${te}\r\n${payload}`]), `polling POST with ${JSON.stringify(te)}`);
    }
    await stillServed('Transfer-Encoding');
  });

  it('a body on a CORS preflight (Engine.IO or REST) gets 400 and close', async () => {
    const next = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    for (const path of ['/socket.io/?EIO=4&transport=polling', '/api/socket/broadcast']) {
      const pre = `OPTIONS ${path} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nContent-Length: ${next.length}\r\n\r\n${next}`;
      assertRefused(await exchange(srv.port, [pre]), `OPTIONS ${path} with a body`);
    }
    await stillServed('a body on a preflight');
  });

  it('a body on a GET handshake or a HEAD gets 400 and close; an empty one is fine', async () => {
    const next = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    for (const line of ['GET /socket.io/?EIO=4&transport=polling', 'GET /healthz', 'HEAD /healthz']) {
      const req = `${line} HTTP/1.1\r\nHost: x\r\nContent-Length: ${next.length}\r\n\r\n${next}`;
      assertRefused(await exchange(srv.port, [req]), `${line} with a body`);
    }
    const zero = await exchange(srv.port, [`GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n${next}`], { wait: 500 });
    assert.deepEqual(zero.responses.map((x) => x.status), [200, 200], zero.raw);
    await stillServed('a body on a GET');
  });

  it('a head with a bare LF line end gets 400 and close', async () => {
    const body = broadcastBody(ch, 'smuggled', 'bare LF');
    const head = `POST /api/socket/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
    assertRefused(await exchange(srv.port, [head + body]), 'a bare LF inside the head');
    assertRefused(await exchange(srv.port, ['GET /healthz HTTP/1.1\nHost: x\n\n']), 'a head of bare LFs');
    await stillServed('bare LF');
  });
});

describe('CORS', () => {
  const A = 'https://app.example';
  const B = 'https://other.example';
  const ROUTES = [
    ['GET', '/socket.io/?EIO=4&transport=polling'],
    ['OPTIONS', '/socket.io/?EIO=4&transport=polling'],
    ['GET', '/api/socket/channels'],
    ['OPTIONS', '/api/socket/broadcast'],
    ['GET', '/healthz'],
  ];
  const ask = (srv, method, path, origin) => fetch(srv.url + path, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, Origin: origin, 'Access-Control-Request-Method': 'POST' },
  });

  describe("--cors-origin '*'", () => {
    let srv;
    before(async () => { srv = await startServer({ shards: 1, extraArgs: ['--api-key', KEY, '--cors-origin', '*'] }); });
    after(async () => { await srv?.stop(); });

    it('answers * without credentials, and nothing to the origin null', async () => {
      for (const [method, path] of ROUTES) {
        for (const origin of [A, B]) {
          const r = await ask(srv, method, path, origin);
          assert.ok(r.status < 300, `${method} ${path}: ${r.status}`);
          assert.equal(r.headers.get('access-control-allow-origin'), '*', `${method} ${path} from ${origin}`);
          assert.equal(r.headers.get('access-control-allow-credentials'), null, `${method} ${path} from ${origin}`);
        }
        const nul = await ask(srv, method, path, 'null');
        assert.equal(nul.headers.get('access-control-allow-origin'), null, `${method} ${path} from null`);
        assert.equal(nul.headers.get('access-control-allow-credentials'), null, `${method} ${path} from null`);
      }
    });
  });

  describe('--cors-origin with a list (null listed too)', () => {
    let srv;
    before(async () => { srv = await startServer({ shards: 1, extraArgs: ['--api-key', KEY, '--cors-origin', `${A},null`] }); });
    after(async () => { await srv?.stop(); });

    it('echoes a listed origin with credentials and Vary: Origin; unlisted and null get no CORS headers', async () => {
      for (const [method, path] of ROUTES) {
        const ok = await ask(srv, method, path, A);
        assert.ok(ok.status < 300, `${method} ${path}: ${ok.status}`);
        assert.equal(ok.headers.get('access-control-allow-origin'), A, `${method} ${path}`);
        assert.equal(ok.headers.get('access-control-allow-credentials'), 'true', `${method} ${path}`);
        assert.ok((ok.headers.get('vary') ?? '').split(/,\s*/).includes('Origin'), `${method} ${path}: Vary ${ok.headers.get('vary')}`);
        for (const origin of [B, 'null']) {
          const no = await ask(srv, method, path, origin);
          assert.equal(no.headers.get('access-control-allow-origin'), null, `${method} ${path} from ${origin}`);
          assert.equal(no.headers.get('access-control-allow-credentials'), null, `${method} ${path} from ${origin}`);
        }
      }
    });
  });
});
