// Exact recovery across a chatd cluster with the clients people use:
// pusher-js and Laravel Echo (broadcasters pusher and reverb) with chatd's
// recovery plugin, connected through a load balancer to three nodes that
// the Go test (cmd/chatd TestChatdClusterRecovery) kills with SIGKILL,
// restarts one by one with SIGTERM and whose client connections it cuts,
// while it publishes numbered events through the HTTP API. Not a
// `node --test` file: the Go test runs it, reads READY from its output
// once every client is subscribed, and its exit status at the end.
//
// Environment: CHATD_LB (http://127.0.0.1:PORT of the balancer),
// CHATD_CHANNEL (a private channel), CHATD_EVENTS (how many), CHATD_WAIT_MS
// (how long to wait for them all).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import PusherServer from 'pusher';

const lb = new URL(process.env.CHATD_LB);
const channel = process.env.CHATD_CHANNEL;
const total = Number(process.env.CHATD_EVENTS);
const waitMs = Number(process.env.CHATD_WAIT_MS || 120000);
const [appId, key, secret] = ['chatd', 'chatd-key', 'chatd-secret'];
const sdk = new PusherServer({ appId, key, secret, host: lb.hostname, port: lb.port, useTLS: false });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const res = await fetch(new URL('/js/chatd-recovery.js', lb));
const file = path.join(os.tmpdir(), `chatd-recovery-cluster-${process.pid}.cjs`);
fs.writeFileSync(file, await res.text());
const ChatdRecovery = createRequire(import.meta.url)(file);
fs.unlinkSync(file);

const opts = {
  key,
  wsHost: lb.hostname,
  wsPort: Number(lb.port),
  wssPort: Number(lb.port),
  forceTLS: false,
  enabledTransports: ['ws'],
  cluster: 'mt1',
};
const clients = [];
const failed = [];
for (let i = 0; i < 3; i++) {
  const p = new Pusher(key, {
    ...opts,
    channelAuthorization: { customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName)) },
  });
  ChatdRecovery.attach(p, { onRecoveryFailed: (ch, why) => failed.push(`pusher-js ${i}: ${JSON.stringify(why)}`) });
  const got = [];
  const ch = p.subscribe(channel);
  ch.bind('n', (d) => got.push(d.n));
  const sub = new Promise((r) => ch.bind('pusher:subscription_succeeded', r));
  clients.push({ who: `pusher-js ${i}`, got, sub, close: () => p.disconnect() });
}
for (const broadcaster of ['pusher', 'reverb', 'reverb']) {
  const i = clients.length;
  const e = new Echo({
    broadcaster,
    ...opts,
    authorizer: (ch) => ({ authorize: (socketId, cb) => cb(false, sdk.authorizeChannel(socketId, ch.name)) }),
    Pusher,
  });
  ChatdRecovery.attach(e.connector.pusher, { onRecoveryFailed: (ch, why) => failed.push(`echo ${i}: ${JSON.stringify(why)}`) });
  const got = [];
  const ch = e.private(channel.replace(/^private-/, ''));
  ch.listen('.n', (d) => got.push(d.n));
  const sub = new Promise((r) => ch.subscribed(r));
  clients.push({ who: `echo ${broadcaster} ${i}`, got, sub, close: () => e.disconnect() });
}
await Promise.all(clients.map((c) => c.sub));
console.log('READY');

const deadline = Date.now() + waitMs;
while (Date.now() < deadline && clients.some((c) => c.got.length < total)) await sleep(100);
await sleep(500); // a duplicate would arrive now
let ok = true;
for (const c of clients) {
  const good = c.got.length === total && c.got.every((n, i) => n === i + 1);
  ok = ok && good;
  console.log(`${good ? 'ok' : 'FAIL'} ${c.who}: ${c.got.length} events${good ? '' : ': ' + JSON.stringify(c.got)}`);
}
for (const f of failed) console.log(`recovery_failed ${f}`);
for (const c of clients) c.close();
process.exit(ok && failed.length === 0 ? 0 : 1);
