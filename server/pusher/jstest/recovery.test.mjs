// History and recovery (chatd's, not Pusher's): the recovery plugin that
// chatd serves at /js/chatd-recovery.js, on pusher-js and Laravel Echo,
// through a TCP proxy whose sockets the test cuts; rewind on a first
// subscription; chatd:recovery_failed for positions chatd cannot honour;
// the HTTP API's history call. Events are published by the pusher SDK.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import WebSocket from 'ws';
import { skip, url, key, server, unique, once, sleep, withTimeout } from './helpers.mjs';

// The plugin as chatd serves it, loaded with require() as a Node app would.
async function loadPlugin() {
  const res = await fetch(new URL('/js/chatd-recovery.js', url));
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /javascript/);
  const file = path.join(os.tmpdir(), `chatd-recovery-${process.pid}-${Date.now()}.cjs`);
  fs.writeFileSync(file, await res.text());
  const mod = createRequire(import.meta.url)(file);
  fs.unlinkSync(file);
  return mod;
}

// A TCP proxy to chatd whose connections cut() drops (a blinking network).
function startProxy() {
  const socks = new Set();
  let accepted = 0;
  const srv = net.createServer((c) => {
    accepted++;
    const u = net.connect(Number(url.port), url.hostname);
    socks.add(c);
    socks.add(u);
    const done = () => {
      c.destroy();
      u.destroy();
      socks.delete(c);
      socks.delete(u);
    };
    c.on('error', done).on('close', done);
    u.on('error', done).on('close', done);
    c.pipe(u);
    u.pipe(c);
  });
  return new Promise((resolve) =>
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        port: srv.address().port,
        accepted: () => accepted,
        cut(n = Infinity) {
          let i = 0;
          for (const s of [...socks]) {
            if (i++ >= 2 * n) break;
            s.destroy();
          }
        },
        close() {
          for (const s of socks) s.destroy();
          srv.close();
        },
      }),
    ),
  );
}

function pusherVia(port, opts = {}) {
  const sdk = server();
  return new Pusher(key, {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName)),
    },
    ...opts,
  });
}

test('pusher-js and Echo with the plugin get every event exactly once, in order, across cut connections', { skip }, async () => {
  const ChatdRecovery = await loadPlugin();
  const proxy = await startProxy();
  const name = unique('rec-');
  const channel = `private-${name}`;
  const total = 80;
  const clients = [];
  try {
    // Three pusher-js clients and two Echo ones (broadcaster pusher and reverb).
    for (let i = 0; i < 3; i++) {
      const p = pusherVia(proxy.port);
      ChatdRecovery.attach(p);
      const got = [];
      const ch = p.subscribe(channel);
      ch.bind('n', (d) => got.push(d.n));
      clients.push({ who: `pusher-js ${i}`, got, sub: once((f) => ch.bind('pusher:subscription_succeeded', f)), close: () => p.disconnect() });
    }
    for (const broadcaster of ['pusher', 'reverb']) {
      const sdk = server();
      const e = new Echo({
        broadcaster,
        key,
        wsHost: '127.0.0.1',
        wsPort: proxy.port,
        wssPort: proxy.port,
        forceTLS: false,
        enabledTransports: ['ws'],
        cluster: 'mt1',
        authorizer: (ch) => ({
          authorize: (socketId, cb) => cb(false, sdk.authorizeChannel(socketId, ch.name)),
        }),
        Pusher,
      });
      ChatdRecovery.attach(e.connector.pusher);
      const got = [];
      const ch = e.private(name);
      ch.listen('.n', (d) => got.push(d.n));
      clients.push({ who: `echo ${broadcaster}`, got, sub: once((f) => ch.subscribed(f)), close: () => e.disconnect() });
    }
    await withTimeout(Promise.all(clients.map((c) => c.sub)), 10000, 'subscriptions');

    const api = server();
    for (let n = 1; n <= total; n++) {
      const res = await api.trigger(channel, 'n', { n });
      assert.equal(res.status, 200);
      // Everybody blinks twice, then single clients; each cut waits until
      // the clients are back from the last one, and events go on meanwhile.
      const cuts = { 20: [5, Infinity], 45: [10, Infinity], 60: [15, 1], 70: [16, 1] };
      if (cuts[n]) {
        const [back, how] = cuts[n];
        const until = Date.now() + 10000;
        while (proxy.accepted() < back && Date.now() < until) await sleep(20);
        proxy.cut(how);
      }
      await sleep(15);
    }
    const want = Array.from({ length: total }, (_, i) => i + 1);
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline && clients.some((c) => c.got.length < total)) await sleep(100);
    await sleep(300); // a duplicate would arrive now
    for (const c of clients) assert.deepEqual(c.got, want, `${c.who} got ${c.got.length} events`);
    // 5 first connections, 2 x 5 after the cuts of all, 2 after single ones.
    assert.ok(proxy.accepted() >= 17, `only ${proxy.accepted()} connections through the proxy`);
  } finally {
    for (const c of clients) c.close();
    proxy.close();
  }
});

test('rewind gives a first subscription the last N events, then the live ones; clients without the plugin see plain events', { skip }, async () => {
  const ChatdRecovery = await loadPlugin();
  const channel = unique('rewind-');
  const api = server();
  for (let n = 1; n <= 5; n++) await api.trigger(channel, 'n', { n });

  const withPlugin = pusherVia(Number(url.port));
  ChatdRecovery.attach(withPlugin, { rewind: 3 });
  const plain = pusherVia(Number(url.port));
  try {
    const got = [];
    const plainGot = [];
    const a = withPlugin.subscribe(channel);
    a.bind('n', (d, meta) => got.push(d.n));
    const b = plain.subscribe(channel);
    b.bind('n', (d) => plainGot.push(d));
    await Promise.all([once((f) => a.bind('pusher:subscription_succeeded', f)), once((f) => b.bind('pusher:subscription_succeeded', f))]);
    await api.trigger(channel, 'n', { n: 6 });
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (got.length < 4 || plainGot.length < 1)) await sleep(50);
    await sleep(200);
    assert.deepEqual(got, [3, 4, 5, 6]);
    assert.deepEqual(plainGot, [{ n: 6 }]);
    assert.match(ChatdRecovery.attach(withPlugin).position(channel), /^[A-Za-z0-9._-]+:6$/);
  } finally {
    withPlugin.disconnect();
    plain.disconnect();
  }
});

// raw speaks the protocol with ws, to send positions the plugin never would.
async function rawSubscribe(data) {
  const ws = new WebSocket(`ws://${url.host}/app/${key}?protocol=7`);
  const msgs = [];
  ws.on('message', (b) => msgs.push(JSON.parse(b.toString())));
  await once((f) => ws.once('open', f));
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data }));
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && !msgs.some((m) => m.event === 'pusher_internal:subscription_succeeded')) await sleep(20);
  await sleep(200);
  return { ws, msgs };
}

test('positions chatd cannot honour get chatd:recovery_failed, and the subscription still works', { skip }, async () => {
  const channel = unique('bad-');
  const api = server();
  for (let n = 1; n <= 3; n++) await api.trigger(channel, 'n', { n });
  const { msgs: ok } = await rawSubscribe({ channel, chatd_rewind: 0 });
  const succeeded = ok.find((m) => m.event === 'pusher_internal:subscription_succeeded');
  const [epoch, offset] = succeeded.chatd_position.split(':');
  assert.equal(offset, '3');
  const cases = [
    [{ chatd_since: `zz${epoch}:2` }, 'epoch_changed'],
    [{ chatd_since: `${epoch}:99` }, 'future'],
    [{ chatd_since: 'not a position' }, 'bad_request'],
    [{ chatd_rewind: -4 }, 'bad_request'],
    [{ chatd_rewind: 'lots' }, 'bad_request'],
  ];
  let last = 3;
  for (const [extra, code] of cases) {
    const { ws, msgs } = await rawSubscribe({ channel, ...extra });
    try {
      // (subscription counts, when the app has them on, may come too)
      const events = msgs.map((m) => m.event).filter((e) => e !== 'pusher_internal:subscription_count');
      assert.deepEqual(events, ['pusher:connection_established', 'pusher_internal:subscription_succeeded', 'chatd:recovery_failed'], JSON.stringify(extra));
      const data = JSON.parse(msgs.find((m) => m.event === 'chatd:recovery_failed').data);
      assert.equal(data.code, code, JSON.stringify(extra));
      assert.equal(data.position, `${epoch}:${last}`);
      assert.equal(msgs[1].chatd_position, `${epoch}:${last}`);
      // Still subscribed: live events arrive.
      const live = once((f) => ws.on('message', (b) => { const m = JSON.parse(b.toString()); if (m.event === 'n') f(m); }));
      last++;
      await api.trigger(channel, 'n', { n: last });
      assert.equal((await live).channel, channel);
    } finally {
      ws.close();
    }
  }
  // A good position replays exactly what came after it.
  const { ws, msgs } = await rawSubscribe({ channel, chatd_since: `${epoch}:6` });
  ws.close();
  const replayed = msgs.filter((m) => m.event === 'n').map((m) => [JSON.parse(m.data).n, m.chatd_position]);
  assert.deepEqual(replayed, [[7, `${epoch}:7`], [8, `${epoch}:8`]]);
});

test('a private channel replays nothing without valid auth', { skip }, async () => {
  const channel = `private-${unique('secret-')}`;
  await server().trigger(channel, 'n', { n: 1 });
  const { ws, msgs } = await rawSubscribe({ channel, auth: `${key}:00`, chatd_rewind: 10 });
  ws.close();
  assert.equal(msgs.filter((m) => m.event === 'n').length, 0);
  assert.ok(msgs.some((m) => m.event === 'pusher:subscription_error' || m.event === 'pusher:error'), JSON.stringify(msgs));
});

test('the HTTP API lists a channel history, newest last, with positions', { skip }, async () => {
  const channel = unique('api-');
  const api = server();
  for (let n = 1; n <= 4; n++) await api.trigger(channel, 'n', { n });
  const res = await api.get({ path: `/channels/${channel}/history`, params: { limit: 3 } });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.deepEqual(body.events.map((e) => [e.event, JSON.parse(e.data).n]), [['n', 2], ['n', 3], ['n', 4]]);
  assert.match(body.position, /:4$/);
  assert.equal(body.events[2].position, body.position);
  const bad = await api.get({ path: `/channels/${channel}/history`, params: { limit: -1 } }).catch((e) => e);
  assert.equal(bad.status, 400);
});
