// Authentication: where the token is found, every refusal reason, algorithms, refresh, expiry.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  startServer, connect, connectError, mint, unsignedToken, ack, uniq, uniqUser, waitFor, until,
  sleep, isErr, KEYS_DIR, ONCE, io, ARRIVE_MS,
} from './fixture.mjs';

const now = () => Math.floor(Date.now() / 1000);

function assertRefused(err, reason) {
  assert.ok(err instanceof Error, `expected a connect_error, got ${err}`);
  assert.equal(err.message, 'unauthorized', `connect_error message (data: ${JSON.stringify(err.data)})`);
  assert.deepEqual(err.data, { reason }, `connect_error data for ${reason}`);
}

describe(`auth: where the token is found [${ONCE.name}]`, () => {
  let srv;
  before(async () => { srv = await startServer({ shards: ONCE.shards }); });
  after(async () => { await srv?.stop(); });

  it('accepts the token in the auth payload and uses sub as userId', async () => {
    const sub = uniqUser('auth');
    const s = await connect(srv, { sub });
    const ch = uniq();
    const res = await ack(s, 'members', ch);
    assert.equal(res.ok, true);
    const j = await ack(s, 'join', ch);
    assert.deepEqual(j, { ok: true, channel: ch, members: 1 });
    const m = await ack(s, 'members', ch);
    assert.equal(m.members.length, 1);
    assert.equal(m.members[0].userId, sub);
    assert.equal(m.members[0].socketId, s.id);
  });

  for (const transports of [['polling'], ['websocket']]) {
    it(`accepts an Authorization: Bearer header (transports ${transports})`, async () => {
      const sub = uniqUser('bearer');
      const token = mint({ sub });
      const s = await connect(srv, { token: null, transports, extraHeaders: { Authorization: `Bearer ${token}` } });
      const ch = uniq();
      await ack(s, 'join', ch);
      const m = await ack(s, 'members', ch);
      assert.equal(m.members[0].userId, sub);
    });
  }

  for (const transports of [undefined, ['websocket']]) {
    it(`accepts a ?token= query parameter (transports ${transports ?? 'default'})`, async () => {
      const sub = uniqUser('query');
      const s = await connect(srv, { token: null, transports, query: { token: mint({ sub }) } });
      const ch = uniq();
      await ack(s, 'join', ch);
      const m = await ack(s, 'members', ch);
      assert.equal(m.members[0].userId, sub);
    });
  }

  it('prefers the auth payload over the header and the query', async () => {
    const sub = uniqUser('prefer');
    // good auth payload, garbage elsewhere: connects as the auth payload's sub
    const s = await connect(srv, {
      token: mint({ sub }),
      query: { token: 'garbage' },
      transports: ['polling'],
      extraHeaders: { Authorization: 'Bearer garbage' },
    });
    const ch = uniq();
    await ack(s, 'join', ch);
    const m = await ack(s, 'members', ch);
    assert.equal(m.members[0].userId, sub);
    // garbage auth payload, good query: refused as malformed (the payload's token is the one used)
    const err = await connectError(srv, { token: 'garbage', query: { token: mint() } });
    assertRefused(err, 'malformed');
  });

  it('prefers the Bearer header over the query', async () => {
    const err = await connectError(srv, {
      token: null, transports: ['polling'],
      extraHeaders: { Authorization: 'Bearer garbage' }, query: { token: mint() },
    });
    assertRefused(err, 'malformed');
  });
});

describe(`auth: refusal reasons [${ONCE.name}]`, () => {
  let srv;
  before(async () => { srv = await startServer({ shards: ONCE.shards }); });
  after(async () => { await srv?.stop(); });

  const cases = [
    ['missing_token', () => ({ token: null })],
    ['missing_token (empty auth object)', () => ({ auth: {} }), 'missing_token'],
    ['malformed', () => ({ token: 'not-a-jwt' })],
    ['malformed (three garbage parts)', () => ({ token: 'a.b.c' }), 'malformed'],
    ['malformed (info over 4 KiB)', () => ({ token: mint({ info: { blob: 'x'.repeat(5000) } }) }), 'malformed'],
    ['bad_signature', () => ({ token: mint({}, { secret: 'some-other-secret' }) })],
    ['bad_signature (tampered payload)', () => {
      const t = mint({ sub: 'alice' }).split('.');
      const p = JSON.parse(Buffer.from(t[1], 'base64url'));
      p.sub = 'mallory';
      t[1] = Buffer.from(JSON.stringify(p)).toString('base64url');
      return { token: t.join('.') };
    }, 'bad_signature'],
    ['expired', () => ({ token: mint({ exp: now() - 3600 }) })],
    ['not_yet_valid', () => ({ token: mint({ nbf: now() + 3600 }) })],
    ['wrong_algorithm', () => ({ token: mint({}, { algorithm: 'HS384' }) })],
    ['wrong_algorithm (HS512)', () => ({ token: mint({}, { algorithm: 'HS512' }) }), 'wrong_algorithm'],
    ['wrong_algorithm (alg none)', () => ({ token: unsignedToken() }), 'wrong_algorithm'],
    ['missing_claim (no sub)', () => ({ token: mint({ sub: undefined }) }), 'missing_claim'],
    ['missing_claim (no exp)', () => ({ token: mint({ exp: undefined }) }), 'missing_claim'],
  ];
  for (const [name, opts, reason = name] of cases) {
    it(`refuses with reason ${name}`, async () => {
      const err = await connectError(srv, opts());
      assertRefused(err, reason);
    });
  }

  it('refuses over websocket-only too, and sends nothing else to the refused client', async () => {
    const s = io(srv.url, { transports: ['websocket'], reconnection: false, forceNew: true, auth: { token: mint({ exp: now() - 3600 }) } });
    srv.sockets.add(s);
    const seen = [];
    s.onAny((ev) => seen.push(ev));
    let connected = false;
    s.on('connect', () => { connected = true; });
    const err = await waitFor(s, 'connect_error');
    assertRefused(err, 'expired');
    await sleep(300);
    assert.equal(connected, false);
    assert.deepEqual(seen, []);
  });

  it('refuses an expired token only beyond the leeway (default 5s): 2s past exp still connects', async () => {
    const s = await connect(srv, { token: mint({ exp: now() - 2 }) });
    assert.ok(s.connected);
  });
});

describe('auth: issuer and audience', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 1, issuer: 'https://issuer.test', audience: 'gateway-tests' }); });
  after(async () => { await srv?.stop(); });

  it('accepts the configured iss and aud', async () => {
    const s = await connect(srv, { token: mint({ iss: 'https://issuer.test', aud: 'gateway-tests' }) });
    assert.ok(s.connected);
  });
  it('refuses another issuer as wrong_issuer', async () => {
    assertRefused(await connectError(srv, { token: mint({ iss: 'https://evil.test', aud: 'gateway-tests' }) }), 'wrong_issuer');
  });
  it('refuses another audience as wrong_audience', async () => {
    assertRefused(await connectError(srv, { token: mint({ iss: 'https://issuer.test', aud: 'other' }) }), 'wrong_audience');
  });
});

for (const [alg, priv, pub] of [['RS256', 'rsa_private.pem', 'rsa_public.pem'], ['ES256', 'ec_private.pem', 'ec_public.pem']]) {
  describe(`auth: ${alg} with a public key file`, () => {
    let srv;
    const privPath = path.join(KEYS_DIR, priv);
    const pubPath = path.join(KEYS_DIR, pub);
    before(async () => {
      srv = await startServer({ shards: 1, algorithm: alg, publicKey: pubPath });
    });
    after(async () => { await srv?.stop(); });

    it(`accepts a ${alg} token signed with the matching private key`, async () => {
      const key = fs.readFileSync(privPath);
      const s = await connect(srv, { token: mint({}, { algorithm: alg, key }) });
      assert.ok(s.connected);
    });
    it(`refuses an HS256 token on a ${alg} server as wrong_algorithm`, async () => {
      assertRefused(await connectError(srv, { token: mint({}) }), 'wrong_algorithm');
    });
    it(`refuses a ${alg} token with a bad signature`, async () => {
      const key = fs.readFileSync(privPath);
      const t = mint({}, { algorithm: alg, key }).split('.');
      const other = mint({}, { algorithm: alg, key }).split('.');
      // payload of one token, signature of another
      assertRefused(await connectError(srv, { token: [t[0], t[1], other[2]].join('.') }), 'bad_signature');
    });
  });
}

describe(`auth: refresh [${ONCE.name}]`, () => {
  let srv;
  before(async () => { srv = await startServer({ shards: ONCE.shards }); });
  after(async () => { await srv?.stop(); });

  it('accepts a fresh token for the same sub and answers its exp', async () => {
    const sub = uniqUser('refresh');
    const s = await connect(srv, { sub });
    const exp = now() + 7200;
    const res = await ack(s, 'refresh', { token: mint({ sub, exp }) });
    assert.deepEqual(res, { ok: true, exp });
  });

  it('answers unauthorized for a token that fails a handshake check', async () => {
    const sub = uniqUser('refresh');
    const s = await connect(srv, { sub });
    for (const token of [
      mint({ sub, exp: now() - 3600 }),
      mint({ sub }, { secret: 'wrong-secret' }),
      'garbage',
      mint({ sub }, { algorithm: 'HS512' }),
    ]) {
      const res = await ack(s, 'refresh', { token });
      assert.ok(isErr(res, 'unauthorized'), `refresh with a bad token: ${JSON.stringify(res)}`);
    }
    assert.ok(s.connected, 'a failed refresh does not disconnect');
  });

  it('answers forbidden for a valid token of another sub', async () => {
    const s = await connect(srv, { sub: uniqUser('refresh') });
    const res = await ack(s, 'refresh', { token: mint({ sub: uniqUser('other') }) });
    assert.ok(isErr(res, 'forbidden'), JSON.stringify(res));
  });

  it('answers bad_request for a refresh without a token', async () => {
    const s = await connect(srv);
    const res = await ack(s, 'refresh', {});
    assert.ok(isErr(res, 'bad_request'), JSON.stringify(res));
  });
});

describe('auth: disconnect on token expiry (--jwt-leeway 0)', () => {
  let srv;
  before(async () => { srv = await startServer({ shards: 2, leeway: 0 }); });
  after(async () => { await srv?.stop(); });

  it('disconnects a socket when its token expires, unless it refreshed first', { timeout: 40000 }, async () => {
    const expA = now() + 3;
    const subA = uniqUser('exp');
    const subB = uniqUser('exp');
    const a = await connect(srv, { token: mint({ sub: subA, exp: expA }) });
    const b = await connect(srv, { token: mint({ sub: subB, exp: expA }) });
    const ch = uniq();
    await ack(a, 'join', ch);
    await ack(b, 'join', ch);
    const goneA = waitFor(a, 'disconnect', () => true, (expA - now() + 1 + 8) * 1000);
    let bDisconnected = false;
    b.on('disconnect', () => { bDisconnected = true; });
    const fresh = now() + 3600;
    const r = await ack(b, 'refresh', { token: mint({ sub: subB, exp: fresh }) });
    assert.deepEqual(r, { ok: true, exp: fresh });
    const reason = await goneA;
    assert.equal(reason, 'io server disconnect', 'the server sends a Socket.IO DISCONNECT');
    // b refreshed: it stays connected well past the old expiry (+ leeway + 1s)
    await until(() => now() >= expA + 3, 'time to pass the old expiry', 20000);
    assert.equal(bDisconnected, false, 'refreshed socket must stay connected');
    const m = await ack(b, 'members', ch);
    assert.deepEqual(m.members.map((x) => x.userId), [subB], 'expired socket left the channel');
  });
});
