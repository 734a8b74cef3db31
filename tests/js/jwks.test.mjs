// JWT key rotation: two --jwt-secret values, and a JSON Web Key Set served by a tiny local HTTP
// server (keys made with node's crypto, exported as JWK). Tokens naming a current kid are
// accepted (RS256, ES256, EdDSA); a key added to the set is picked up without a restart; an
// unknown kid is refused (`unknown_key`) without hammering the server; with the server down,
// connected sockets are unaffected and /readyz and /metrics say so.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import { startServer, connect, connectError, ack, mint, uniq, until, sleep } from './fixture.mjs';

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A key pair of `kind` with its public JWK under `kid`. */
function keyPair(kind, kid) {
  const { privateKey, publicKey } = kind === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : kind === 'ES256'
      ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : crypto.generateKeyPairSync('ed25519');
  return { kind, kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: kind } };
}

/** A token signed with `key` (header names its kid). */
function sign(key, claims = {}, header = {}) {
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64({ alg: key.kind, typ: 'JWT', kid: key.kid, ...header })}.${b64({ sub: `jwks-${crypto.randomUUID()}`, exp: now + 600, ...claims })}`;
  const data = Buffer.from(input);
  const sig = key.kind === 'RS256'
    ? crypto.sign('sha256', data, key.privateKey)
    : key.kind === 'ES256'
      ? crypto.sign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
      : crypto.sign(null, data, key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

async function metric(srv, name) {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  return line ? Number(line.split(/\s+/).pop()) : null;
}

describe('JWKS and key rotation', () => {
  const keys = {
    rs: keyPair('RS256', 'rs-1'),
    es: keyPair('ES256', 'es-1'),
    ed: keyPair('EdDSA', 'ed-1'),
    next: keyPair('RS256', 'rs-2'),
  };
  let served = [keys.rs.jwk, keys.es.jwk, keys.ed.jwk];
  let hits = 0;
  let down = false;
  let jwksServer;
  let url;
  let srv;

  before(async () => {
    jwksServer = http.createServer((req, res) => {
      hits += 1;
      if (down) { res.writeHead(503); res.end('down'); return; }
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' });
      res.end(JSON.stringify({ keys: served }));
    });
    await new Promise((r) => jwksServer.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${jwksServer.address().port}/.well-known/jwks.json`;
    srv = await startServer({
      secret: 'current-secret-0123456789',
      extraArgs: ['--jwt-secret', 'previous-secret-0123456789', '--jwks-url', url, '--jwks-min-interval', '2'],
    });
  });
  after(async () => {
    await srv?.stop();
    await new Promise((r) => jwksServer.close(r));
  });

  it('two --jwt-secret values: tokens signed with either are accepted, others refused', async () => {
    for (const secret of ['current-secret-0123456789', 'previous-secret-0123456789']) {
      const s = await connect(srv, { token: mint({}, { secret }) });
      assert.ok(s.connected, secret);
      s.close();
    }
    const e = await connectError(srv, { token: mint({}, { secret: 'some-other-secret-0123456789' }) });
    assert.equal(e.data?.reason, 'bad_signature', JSON.stringify(e.data));
  });

  it('tokens with a current kid are accepted: RS256, ES256 and EdDSA; a wrong alg or signature is refused', async () => {
    for (const k of [keys.rs, keys.es, keys.ed]) {
      const s = await connect(srv, { token: sign(k, { sub: `user-${k.kid}` }) });
      const ch = uniq('jwks');
      assert.equal((await ack(s, 'join', ch)).ok, true, k.kind);
      s.close();
    }
    const wrongAlg = await connectError(srv, { token: sign(keys.rs, {}, { alg: 'ES256' }) });
    assert.equal(wrongAlg.data?.reason, 'wrong_algorithm');
    const forged = sign(keys.es).replace(/\.[^.]+$/, `.${crypto.randomBytes(64).toString('base64url')}`);
    assert.equal((await connectError(srv, { token: forged })).data?.reason, 'bad_signature');
    assert.equal(await metric(srv, 'socket_gateway_jwks_keys'), 3);
    assert.equal(await metric(srv, 'socket_gateway_jwks_up'), 1);
  });

  it('a key added to the set is picked up without a restart; unknown kids do not hammer the server', async () => {
    served = [...served, keys.next.jwk];
    const before = hits;
    const s = await until(async () => {
      try { return await connect(srv, { token: sign(keys.next) }); } catch (e) {
        assert.equal(e.data?.reason, 'unknown_key', JSON.stringify(e.data));
        await sleep(200);
        return null;
      }
    }, 'the rotated key is accepted', 10000);
    assert.ok(s.connected);
    s.close();
    // 30 tokens with unknown kids within a second: refused, and at most one fetch for them
    // (--jwks-min-interval 2 s).
    const hitsBefore = hits;
    const ghost = keyPair('ES256', 'nobody');
    const refusals = await Promise.all(Array.from({ length: 30 }, () => connectError(srv, { token: sign(ghost) })));
    assert.ok(refusals.every((e) => e.data?.reason === 'unknown_key'));
    await sleep(2500);
    console.log(`# rotation picked up after ${hits - before} fetch(es); 30 unknown kids caused ${hits - hitsBefore}`);
    assert.ok(hits - hitsBefore <= 2, `${hits - hitsBefore} fetches for 30 unknown kids`);
    assert.ok(await metric(srv, 'socket_gateway_jwks_unknown_kid_total') >= 30);
  });

  it('the JWKS server down: connected sockets are unaffected, cached keys still work, /readyz and metrics say so', async () => {
    const s = await connect(srv, { token: sign(keys.rs) });
    const r = await connect(srv, { token: sign(keys.ed) });
    const ch = uniq('jwksdown');
    await ack(s, 'join', ch);
    await ack(r, 'join', ch);
    down = true;
    // An unknown kid forces a fetch, which fails.
    await connectError(srv, { token: sign(keyPair('RS256', 'forces-a-fetch')) });
    await until(async () => (await metric(srv, 'socket_gateway_jwks_up')) === 0, 'jwks_up drops to 0', 10000);
    assert.ok(await metric(srv, 'socket_gateway_jwks_fetch_failures_total') >= 1);
    const ready = await fetch(`${srv.url}/readyz`);
    const body = await ready.json();
    assert.equal(ready.status, 200, 'keys are cached: still ready');
    assert.match(body.warnings[0], /jwks refresh failed/);
    const got = new Promise((res) => r.once('event', res));
    assert.equal((await ack(s, 'publish', { channel: ch, event: 'still', data: 1 })).ok, true);
    assert.equal((await got).event, 'still');
    const again = await connect(srv, { token: sign(keys.es) });
    assert.ok(again.connected, 'a cached kid still connects');
    for (const x of [s, r, again]) x.close();
    down = false;
  });

  it('a gateway whose key set never loaded is not ready', async () => {
    const dead = await startServer({ extraArgs: ['--jwks-url', 'http://127.0.0.1:9/jwks.json'] });
    try {
      const res = await fetch(`${dead.url}/readyz`);
      assert.equal(res.status, 503);
      assert.match((await res.json()).reason, /jwks not loaded/);
    } finally {
      await dead.stop();
    }
  });
});
