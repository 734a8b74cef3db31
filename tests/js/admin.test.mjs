// The admin page at /socket in real headless Chromium (Debian's `chromium`, driven by
// playwright-core): sign in, see a channel real socket.io-client sockets joined with its member
// count, open its members, broadcast to it (a connected client receives it), watch the connection
// count change. Saves a screenshot to tests/artifacts/admin.png (not committed).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, connect, ack, mint, uniq, waitFor, checkEvent, REPO_ROOT, ARRIVE_MS } from './fixture.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const API_KEY = 'admin-page-api-key-0123456789';
const ARTIFACTS = path.join(REPO_ROOT, 'tests', 'artifacts');
const T = { timeout: ARRIVE_MS };

describe('admin page [shards=2, chromium]', () => {
  let srv;
  let browser;
  before(async () => {
    // The 10,000-channel test joins 2,500 channels per socket, quickly:
    // lift the per-socket limits it is not about.
    srv = await startServer({
      shards: 2,
      extraArgs: ['--api-key', API_KEY, '--max-channels-per-socket', '5000', '--max-events-per-sec', '0', '--max-joins-per-sec', '0'],
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
  });
  after(async () => {
    await browser?.close();
    await srv?.stop();
  });

  async function openPage() {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e));
    await page.goto(`${srv.url}/socket`);
    return { context, page, errors };
  }

  const text = (page, sel) => page.locator(sel).textContent();
  const num = async (page, sel) => Number((await text(page, sel)).replace(/,/g, ''));

  it('refuses a wrong key, signs in with an admin token and keeps it for the tab', async () => {
    const { context, page, errors } = await openPage();
    await page.locator('#signin').waitFor({ state: 'visible', ...T });
    await page.fill('#credential', 'wrong-key');
    await page.click('#signin-form button[type=submit]');
    await page.waitForFunction(() => document.getElementById('signin-error').textContent.includes('Refused'), null, T);
    assert.equal(await page.locator('#app').isHidden(), true);
    await page.fill('#credential', mint({ role: 'admin' }));
    await page.click('#signin-form button[type=submit]');
    await page.locator('#app').waitFor({ state: 'visible', ...T });
    await page.reload();
    await page.locator('#app').waitFor({ state: 'visible', ...T });
    await page.click('#signout');
    await page.locator('#signin').waitFor({ state: 'visible', ...T });
    assert.deepEqual(errors, []);
    await context.close();
  });

  it('shows channels, members, live connections; broadcasts to a connected client', async () => {
    const { context, page, errors } = await openPage();
    await page.fill('#credential', API_KEY);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#app').waitFor({ state: 'visible', ...T });
    await page.waitForFunction(() => /^\d/.test(document.getElementById('conn-total').textContent), null, T);
    const before = await num(page, '#conn-total');

    // Three real sockets; two join the channel.
    const ch = uniq('admin');
    const alice = await connect(srv, { sub: 'alice', claims: { info: { name: 'Alice' } } });
    const bob = await connect(srv, { sub: 'bob' });
    const carol = await connect(srv, { sub: 'carol' });
    await ack(alice, 'join', ch);
    await ack(bob, 'join', ch);
    await page.waitForFunction((n) => Number(document.getElementById('conn-total').textContent.replace(/,/g, '')) === n,
      before + 3, T);
    await page.waitForFunction(() => document.querySelectorAll('#instances tbody .shard-chip').length === 2, null, T);

    // Find the channel by prefix; its member count shows.
    await page.fill('#channel-filter', ch.split(':')[0] + ':');
    const row = page.locator(`#channels tbody tr[data-channel="${ch}"]`);
    await row.waitFor(T);
    await page.waitForFunction((name) => {
      const tr = document.querySelector(`#channels tbody tr[data-channel="${name}"]`);
      return tr && tr.cells[1].textContent === '2';
    }, ch, T);

    // Its members.
    await row.click();
    await page.waitForFunction(() => document.querySelectorAll('#members tbody tr[data-socket-id]').length === 2, null, T);
    const members = await page.locator('#members tbody tr[data-socket-id]').evaluateAll((trs) => trs.map((tr) => ({
      socketId: tr.dataset.socketId, userId: tr.cells[0].textContent, info: tr.cells[2].textContent,
    })));
    members.sort((a, b) => a.userId.localeCompare(b.userId));
    assert.deepEqual(members, [
      { socketId: alice.id, userId: 'alice', info: '{"name":"Alice"}' },
      { socketId: bob.id, userId: 'bob', info: '—' },
    ]);
    assert.equal(await page.inputValue('#bc-channel'), ch);

    // Broadcast: a member receives it; the page shows the 202 answer.
    const got = waitFor(bob, 'event', (e) => e.channel === ch);
    await page.fill('#bc-event', 'notice');
    await page.fill('#bc-data', '{"text": "from the admin page", "n": 42}');
    await page.click('#bc-send');
    const e = checkEvent(await got, { channel: ch, event: 'notice', data: { text: 'from the admin page', n: 42 }, from: null });
    await page.waitForFunction(() => document.getElementById('bc-result').textContent.startsWith('202'), null, T);
    assert.match(await text(page, '#bc-result'), new RegExp(`"id":"${e.id}"`));

    // The channel's recent events list the broadcast, then a publish above it (newest first).
    await page.locator(`#events tbody tr[data-event-id="${e.id}"]`).waitFor(T);
    assert.equal(await text(page, '#events-channel'), ch);
    const row0 = page.locator('#events tbody tr').first();
    assert.deepEqual(await row0.locator('td').evaluateAll((tds) => tds.slice(1).map((td) => td.textContent)),
      ['notice', 'REST broadcast', '{"text":"from the admin page","n":42}']);
    const chat = await ack(alice, 'publish', { channel: ch, event: 'chat', data: 'hi' });
    await page.waitForFunction((id) => document.querySelector('#events tbody tr')?.dataset.eventId === id, chat.id, T);
    assert.equal(await page.locator('#events tbody tr').count(), 2);

    // The events in / deliveries out rates move; the chart draws.
    await page.waitForFunction(() => Number(document.getElementById('rate-out').textContent.replace(/,/g, '')) > 0, null, T);
    await page.waitForFunction(() => document.querySelectorAll('#chart-conn polyline, #chart-rate polyline').length === 3, null, T);

    // Errors are shown: a reserved event name, then data that is not JSON.
    await page.fill('#bc-event', 'connect');
    await page.click('#bc-send');
    await page.waitForFunction(() => document.getElementById('bc-result').textContent.includes('bad_request'), null, T);
    await page.fill('#bc-event', 'notice');
    await page.fill('#bc-data', '{nope');
    await page.click('#bc-send');
    await page.waitForFunction(() => document.getElementById('bc-result').textContent.includes('not JSON'), null, T);
    await page.fill('#bc-data', '{"text": "Hello everyone!"}');

    // More clients connect: the count follows.
    const more = await Promise.all([0, 1, 2].map(() => connect(srv)));
    await page.waitForFunction((n) => Number(document.getElementById('conn-total').textContent.replace(/,/g, '')) === n,
      before + 6, T);
    for (const s of more) s.close();
    carol.close();
    await page.waitForFunction((n) => Number(document.getElementById('conn-total').textContent.replace(/,/g, '')) === n,
      before + 2, T);

    await page.waitForTimeout(1500);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'admin.png'), fullPage: true });
    assert.deepEqual(errors, []);
    alice.close();
    bob.close();
    await context.close();
  });

  it('moderates from the members table: remove from the channel, disconnect a socket, disconnect a user', async () => {
    const { context, page, errors } = await openPage();
    await page.fill('#credential', API_KEY);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#app').waitFor({ state: 'visible', ...T });
    const ch = uniq('admin-mod');
    const opts = { transports: ['websocket'], reconnection: true, reconnectionDelay: 50 };
    const ann = await connect(srv, { sub: 'ann', ...opts });
    const ben = await connect(srv, { sub: 'ben', ...opts });
    const cy = await connect(srv, { sub: 'cy', ...opts });
    const cyElsewhere = await connect(srv, { sub: 'cy', ...opts }); // not in the channel
    for (const s of [ann, ben, cy]) await ack(s, 'join', ch);
    await page.fill('#events-input', ch);
    await page.click('#events-open button[type=submit]');
    const rows = '#members tbody tr[data-socket-id]';
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 3, rows, T);
    const button = (id, action) => page.locator(`#members tbody tr[data-socket-id="${id}"] button[data-action="${action}"]`);

    // Remove ann from the channel, with a reason: she is told, stays connected, leaves the list.
    const annError = waitFor(ann, 'error');
    await page.fill('#mod-reason', 'off-topic');
    await button(ann.id, 'remove').click();
    assert.deepEqual(await annError, { code: 'removed', channel: ch, message: 'off-topic' });
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 2, rows, T);
    assert.match(await text(page, '#mod-result'), /^200 /);
    assert.ok(ann.connected);

    // Disconnect ben: a server DISCONNECT, socket.io-client stays away.
    const benGone = waitFor(ben, 'disconnect');
    await button(ben.id, 'disconnect').click();
    assert.equal(await benGone, 'io server disconnect');
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 1, rows, T);

    // Disconnect user cy, letting the client reconnect: both of cy's sockets are cut.
    await page.fill('#mod-reason', '');
    await page.check('#mod-reconnect');
    const cyGone = [waitFor(cy, 'disconnect'), waitFor(cyElsewhere, 'disconnect')];
    await button(cy.id, 'disconnect-user').click();
    assert.deepEqual(await Promise.all(cyGone), ['transport close', 'transport close']);
    await page.waitForFunction(() => /"disconnected":2/.test(document.getElementById('mod-result').textContent), null, T);
    await page.waitForTimeout(300);
    assert.equal(ben.active, false, 'ben does not come back');
    assert.deepEqual(errors, []);
    for (const s of [ann, ben, cy, cyElsewhere]) s.close();
    await context.close();
  });

  it('opens the recent events of a channel nobody is in, by name', async () => {
    const { context, page, errors } = await openPage();
    await page.fill('#credential', API_KEY);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#app').waitFor({ state: 'visible', ...T });
    const ch = uniq('admin-lonely');
    const s = await connect(srv, { sub: 'dora' });
    const ids = [];
    for (let i = 0; i < 3; i += 1) ids.push((await ack(s, 'publish', { channel: ch, event: 'tick', data: { i } })).id);
    await page.fill('#events-input', ch);
    await page.click('#events-open button[type=submit]');
    await page.waitForFunction(() => document.querySelectorAll('#events tbody tr[data-event-id]').length === 3, null, T);
    const rows = await page.locator('#events tbody tr[data-event-id]').evaluateAll((trs) => trs.map((tr) => [tr.dataset.eventId, tr.cells[2].textContent, tr.cells[3].textContent]));
    assert.deepEqual(rows, [...ids].reverse().map((id, k) => [id, 'dora', `{"i":${2 - k}}`]));
    assert.equal(await text(page, '#events-note'), '3 newest events kept');
    assert.equal(await page.locator('#members tbody td.empty').count(), 1, 'no member');
    assert.deepEqual(errors, []);
    s.close();
    await context.close();
  });

  it('stays usable with 10,000 channels: renders a page, filters by prefix', async () => {
    const base = uniq('bulk');
    const sockets = await Promise.all([0, 1, 2, 3].map(() => connect(srv, { transports: ['websocket'] })));
    const names = Array.from({ length: 10000 }, (_, i) => `${base}:${String(i).padStart(5, '0')}`);
    await Promise.all(sockets.map(async (s, k) => {
      for (let i = k; i < names.length; i += sockets.length) {
        // Joins are acked; keep a window of them in flight per socket.
        if (i % 200 === k) await ack(s, 'join', names[i]);
        else s.emit('join', names[i]);
      }
      await ack(s, 'join', names[k]);
    }));
    const { context, page, errors } = await openPage();
    await page.fill('#credential', API_KEY);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#app').waitFor({ state: 'visible', ...T });
    await page.fill('#channel-filter', `${base}:`);
    await page.waitForFunction(() => /showing 200 of 10,000/.test(document.getElementById('channels-note').textContent), null, { timeout: 30000 });
    assert.equal(await page.locator('#channels tbody tr').count(), 200);
    await page.click('#channels-more');
    await page.waitForFunction(() => document.querySelectorAll('#channels tbody tr').length === 400, null, T);
    await page.fill('#channel-filter', `${base}:0999`);
    await page.waitForFunction(() => document.getElementById('channels-note').textContent === '10 channels', null, T);
    assert.deepEqual(errors, []);
    for (const s of sockets) s.close();
    await context.close();
  });
});
