import { io } from 'socket.io-client';
import { startServer, mint } from './fixture.mjs';
import { startProxy } from './proxy.mjs';
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
const prefix = `s4${Date.now()}`;
const cl = ['--redis-url', 'redis://127.0.0.1:6379', '--redis-prefix', prefix];
const A = await startServer({ shards: 2, extraArgs: [...cl, '--instance-id', 'A'] });
const B = await startServer({ shards: 2, extraArgs: [...cl, '--instance-id', 'B'] });
const proxy = await startProxy(A.port);
const a = io(proxy.url, { auth: { token: mint({ sub: 'alice' }) }, transports: ['websocket'], reconnectionDelay: 200, reconnectionDelayMax: 500 });
const got = [];
a.on('event', (e) => got.push(e.data));
await new Promise(r => a.on('connect', r));
const id1 = a.id;
await new Promise(r => a.emit('join', 'room:1', r));
await new Promise(r => a.emit('subscribe', { topic: 'room:2' }, r));
const b = io(B.url, { auth: { token: mint({ sub: 'bob' }) }, transports: ['websocket'] });
await new Promise(r => b.on('connect', r));
await new Promise(r => b.emit('publish', { channel: 'room:1', event: 'm', data: 0 }, r));
await sleep(300);
proxy.pause(); proxy.cutAll();
const oa = io(A.url, { auth: { token: mint({ sub: 'olga' }) }, transports: ['websocket'] });
await new Promise(r => oa.on('connect', r));
const acks = await Promise.all([
  ...Array.from({length: 20}, (_, i) => new Promise(r => oa.emit('publish', { channel: 'room:1', event: 'm', data: 'a'+i }, r))),
  ...Array.from({length: 20}, (_, i) => new Promise(r => b.emit('publish', { channel: 'room:1', event: 'm', data: 'b'+i }, r))),
  ...Array.from({length: 10}, (_, i) => new Promise(r => b.emit('publish', { channel: 'room:2', event: 't', data: 't'+i }, r))),
  ...Array.from({length: 10}, (_, i) => new Promise(r => b.emit('direct', { to: id1, event: 'dm', data: 'd'+i }, r))),
]);
console.log(acks.filter(a => !a.ok));
proxy.retarget(B.port); proxy.resume();
await new Promise(r => a.once('connect', r));
await sleep(500);
const m = await (await fetch(B.url + '/metrics')).text();
console.log({ recovered: a.recovered, got: got.join(','), m: m.split('\n').filter(l => l.includes('recoveries_total')).join('\n') });
process.exit(0);
