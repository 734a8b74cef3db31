// The OpenAPI document at /api/socket/openapi.json is true to the server: every documented
// operation is called over real HTTP (valid requests, then without credentials, with another
// method, and with the documented bad bodies), and every answer's status must be documented for
// that operation and its body must validate against the documented schema.
// (An extra, optional recipe with schemathesis from PyPI is in README.md.)
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, connect, ack, uniq, closeAll } from './fixture.mjs';

const API_KEY = 'openapi-test-key-0123456789';
const MAX_PAYLOAD = 4096;

/** A small JSON-schema (OpenAPI 3.0 subset) validator: returns a list of problems. */
function validate(doc, schema, value, where = '$') {
  if (schema.$ref) {
    const target = schema.$ref.replace(/^#\//, '').split('/').reduce((o, k) => o[k], doc);
    assert.ok(target, `unresolved ${schema.$ref}`);
    return validate(doc, target, value, where);
  }
  const errs = [];
  if (value === null) return schema.nullable || !schema.type ? [] : [`${where}: null`];
  const typeOf = (v) => (Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v);
  if (schema.type) {
    const t = typeOf(value);
    const ok = schema.type === t || (schema.type === 'number' && t === 'integer');
    if (!ok) return [`${where}: ${t}, want ${schema.type}`];
  }
  if (schema.enum && !schema.enum.some((e) => e === value)) errs.push(`${where}: ${JSON.stringify(value)} not in enum`);
  if (schema.minimum !== undefined && value < schema.minimum) errs.push(`${where}: below minimum`);
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) errs.push(`${where}: too short`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) errs.push(`${where}: too long`);
  }
  if (schema.type === 'object' || schema.properties) {
    for (const k of schema.required || []) if (!(k in value)) errs.push(`${where}: missing ${k}`);
    for (const [k, v] of Object.entries(value)) {
      if (schema.properties && k in schema.properties) errs.push(...validate(doc, schema.properties[k], v, `${where}.${k}`));
      else if (schema.additionalProperties === false) errs.push(`${where}: unexpected ${k}`);
    }
  }
  if (schema.type === 'array' && schema.items) value.forEach((v, i) => errs.push(...validate(doc, schema.items, v, `${where}[${i}]`)));
  return errs;
}

describe('OpenAPI document vs the server [shards=2]', () => {
  let srv;
  let doc;
  const auth = { Authorization: `Bearer ${API_KEY}` };
  let channel;
  let sockets;

  before(async () => {
    srv = await startServer({ shards: 2, maxPayload: MAX_PAYLOAD, extraArgs: ['--api-key', API_KEY] });
    const res = await fetch(`${srv.url}/api/socket/openapi.json`, { headers: auth });
    assert.equal(res.status, 200);
    doc = await res.json();
    // Something to list: two sockets in a channel.
    channel = uniq('openapi');
    const a = await connect(srv);
    const b = await connect(srv);
    await ack(a, 'join', channel);
    await ack(b, 'join', channel);
    sockets = { a, b };
  });
  after(async () => { closeAll(srv); await srv?.stop(); });

  const operations = () => Object.entries(doc.paths).flatMap(([p, item]) => Object.entries(item).map(([method, op]) => ({ path: p, method: method.toUpperCase(), op })));

  /** Calls and checks the answer against the operation's documented responses. */
  async function check(o, { url, method = o.method, headers = {}, body } = {}) {
    const res = await fetch(srv.url + (url ?? o.path), { method, headers, body });
    const text = await res.text();
    const documented = o.op.responses[String(res.status)];
    assert.ok(documented, `${method} ${url ?? o.path}: status ${res.status} is not documented for ${o.method} ${o.path}\n${text}`);
    const resp = documented.$ref ? documented.$ref.replace(/^#\//, '').split('/').reduce((x, k) => x[k], doc) : documented;
    const [mediaType, media] = Object.entries(resp.content || {})[0] || [];
    if (mediaType) {
      assert.ok(res.headers.get('content-type').startsWith(mediaType), `${res.headers.get('content-type')} vs ${mediaType}`);
      if (mediaType === 'application/json') {
        const problems = validate(doc, media.schema, JSON.parse(text));
        assert.deepEqual(problems, [], `${method} ${o.path} ${res.status}: ${text}`);
      }
    }
    return { status: res.status, text };
  }

  /** A valid request for an operation, from its parameters and request body schema. */
  function validRequest(o) {
    // Moderation acts on real sockets: `b` leaves the channel, `a` is disconnected (the
    // document lists those operations after the views).
    const target = o.path.includes('/members/') ? sockets.b : sockets.a;
    let url = o.path.replace('{channel}', encodeURIComponent(channel))
      .replace('{socketId}', encodeURIComponent(target.id ?? 'gone-0-0000000000000001'))
      .replace('{userId}', 'openapi-user');
    const q = (o.op.parameters || []).filter((p) => p.in === 'query');
    const value = (p) => (p.schema.type === 'integer' ? '10' : p.schema.type === 'boolean' ? 'false' : encodeURIComponent(channel.slice(0, 5)));
    if (q.length) url += `?${q.map((p) => `${p.name}=${value(p)}`).join('&')}`;
    const headers = o.op.security?.length === 0 ? {} : { ...auth };
    let body;
    if (o.op.requestBody) {
      headers['Content-Type'] = 'application/json';
      const media = o.op.requestBody.content['application/json'];
      body = JSON.stringify(media.example ?? { channel, event: 'openapi', data: { n: 1 } });
    }
    return { url, headers, body };
  }

  it('is OpenAPI 3 with the documented routes', () => {
    assert.match(doc.openapi, /^3\.0\./);
    for (const p of ['/api/socket/channels', '/api/socket/channels/{channel}/members', '/api/socket/channels/{channel}/history', '/api/socket/connections', '/api/socket/broadcast', '/api/socket/openapi.json',
      '/api/socket/connections/{socketId}', '/api/socket/users/{userId}/disconnect', '/api/socket/channels/{channel}/members/{socketId}']) {
      assert.ok(doc.paths[p], p);
    }
    assert.equal(doc.components.securitySchemes.bearer.scheme, 'bearer');
  });

  it('every operation answers a valid request with a documented success and body', async () => {
    for (const o of operations()) {
      const r = await check(o, validRequest(o));
      assert.ok(r.status < 300, `${o.method} ${o.path}: ${r.status} ${r.text}`);
    }
  });

  it('every operation with security answers 401 as documented, without credentials', async () => {
    for (const o of operations().filter((x) => x.op.security?.length !== 0)) {
      const { url, body, headers } = validRequest(o);
      delete headers.Authorization;
      const r = await check(o, { url, body, headers });
      assert.equal(r.status, 401);
    }
  });

  it('documented 4xx answers: bad query, bad channel, bad body, 413, 415', async () => {
    const find = (p, m) => operations().find((o) => o.path === p && o.method === m);
    const list = find('/api/socket/channels', 'GET');
    assert.equal((await check(list, { url: '/api/socket/channels?limit=x', headers: auth })).status, 400);
    const members = find('/api/socket/channels/{channel}/members', 'GET');
    assert.equal((await check(members, { url: `/api/socket/channels/${'x'.repeat(201)}/members`, headers: auth })).status, 400);
    const history = find('/api/socket/channels/{channel}/history', 'GET');
    assert.equal((await check(history, { url: `/api/socket/channels/${'x'.repeat(201)}/history`, headers: auth })).status, 400);
    assert.equal((await check(history, { url: '/api/socket/channels/a/history?limit=0', headers: auth })).status, 400);
    const bc = find('/api/socket/broadcast', 'POST');
    const json = { ...auth, 'Content-Type': 'application/json' };
    for (const body of ['{', '{}', '{"channel":"a","event":"connect"}', '{"channel":"","event":"x"}']) {
      assert.equal((await check(bc, { headers: json, body })).status, 400, body);
    }
    assert.equal((await check(bc, { headers: json, body: JSON.stringify({ channel: 'a', event: 'x', data: 'y'.repeat(MAX_PAYLOAD) }) })).status, 413);
    assert.equal((await check(bc, { headers: { ...auth, 'Content-Type': 'text/plain' }, body: '{}' })).status, 415);
  });

  it('an undocumented method on a documented path is 405 with Allow naming the documented ones', async () => {
    for (const [p, item] of Object.entries(doc.paths)) {
      const methods = Object.keys(item).map((m) => m.toUpperCase());
      const other = methods.includes('GET') ? 'DELETE' : 'GET';
      const url = p.replace('{channel}', 'x').replace('{socketId}', 'i-0-0000000000000001').replace('{userId}', 'u');
      const res = await fetch(srv.url + url, { method: other, headers: auth });
      if (p === '/healthz' || p === '/readyz') continue; // served by the server's health routes
      assert.equal(res.status, 405, `${other} ${p}`);
      const allow = res.headers.get('allow').split(/,\s*/);
      for (const m of methods) assert.ok(allow.includes(m), `${p}: Allow ${allow} lacks ${m}`);
      const problems = validate(doc, { $ref: '#/components/schemas/Error' }, await res.json());
      assert.deepEqual(problems, []);
    }
  });
});
