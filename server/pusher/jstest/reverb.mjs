// A Laravel app set up for Reverb (`php artisan install:broadcasting`,
// BROADCAST_CONNECTION=reverb), pointed at chatd instead of Reverb without
// changing the app: Laravel Echo 2 with `broadcaster: 'reverb'`, configured
// exactly as the generated resources/js/echo.js does from the .env's
// REVERB_* values, next to the same app on `broadcaster: 'pusher'`.
// Public, private and presence channels, whispers, and the app's backend:
// a small HTTP server playing Laravel's /broadcasting/auth and its
// broadcaster (the pusher SDK, as Laravel's ReverbBroadcaster uses the
// Pusher PHP SDK, configured as config/broadcasting.php's 'reverb'
// connection is).
//
// Not picked up by a plain `node --test` (the name has no .test.): the Go
// test TestChatdLaravelReverb (cmd/chatd) starts a chatd process with the
// app's id, key and secret and runs this file.
//
// Environment, the names of a Laravel app's .env (all required):
//   REVERB_APP_ID, REVERB_APP_KEY, REVERB_APP_SECRET
//   REVERB_HOST, REVERB_PORT, REVERB_SCHEME (http here)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import PusherServer from 'pusher';
import { once, quiet, sleep } from './helpers.mjs';

const env = {};
for (const name of ['REVERB_APP_ID', 'REVERB_APP_KEY', 'REVERB_APP_SECRET', 'REVERB_HOST', 'REVERB_PORT', 'REVERB_SCHEME']) {
  if (!process.env[name]) throw new Error(`${name} is not set (see the comment at the top of reverb.mjs)`);
  env[name] = process.env[name];
}

// What Vite hands the front end: the .env's VITE_REVERB_* lines, which
// install:broadcasting writes as VITE_REVERB_APP_KEY="${REVERB_APP_KEY}" etc.
const importMetaEnv = {
  VITE_REVERB_APP_KEY: env.REVERB_APP_KEY,
  VITE_REVERB_HOST: env.REVERB_HOST,
  VITE_REVERB_PORT: env.REVERB_PORT,
  VITE_REVERB_SCHEME: env.REVERB_SCHEME,
};

// resources/js/echo.js needs window.Pusher (it sets it from pusher-js).
globalThis.window = { Pusher };

// The backend's users, by bearer token (a Sanctum-style SPA token; in a
// browser the session cookie does the same).
const users = {
  'token-ann': { id: 1, name: 'Ann' },
  'token-bob': { id: 2, name: 'Bob' },
  'token-eve': { id: 3, name: 'Eve' },
};

// routes/channels.php: who may join what. Orders are their owner's (and
// everyone but Eve's in this shop); chat rooms are open to all users.
function authorizeChannel(user, channel) {
  if (channel.startsWith('private-orders.')) return user.name !== 'Eve';
  if (channel.startsWith('private-chat.')) return true;
  if (channel.startsWith('presence-chat.')) return { id: user.id, name: user.name };
  return false;
}

// config/broadcasting.php's 'reverb' connection, as the PHP SDK gets it.
const broadcaster = new PusherServer({
  appId: env.REVERB_APP_ID,
  key: env.REVERB_APP_KEY,
  secret: env.REVERB_APP_SECRET,
  host: env.REVERB_HOST,
  port: env.REVERB_PORT,
  useTLS: env.REVERB_SCHEME === 'https',
});

let backend;
let backendURL;
before(async () => {
  // POST /broadcasting/auth, form-encoded socket_id and channel_name, as
  // Laravel's BroadcastController answers it.
  backend = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const user = users[(req.headers.authorization || '').replace(/^Bearer /, '')];
      const form = new URLSearchParams(body);
      const channel = form.get('channel_name');
      const allowed = req.method === 'POST' && req.url === '/broadcasting/auth' && user ? authorizeChannel(user, channel) : false;
      if (!allowed) {
        res.writeHead(403).end();
        return;
      }
      const presence = channel.startsWith('presence-') ? { user_id: String(user.id), user_info: allowed } : undefined;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(broadcaster.authorizeChannel(form.get('socket_id'), channel, presence)));
    });
  });
  await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve));
  backendURL = `http://127.0.0.1:${backend.address().port}`;
});
after(() => backend?.close());

// The two front ends. 'reverb' is install:broadcasting's echo.js for
// Reverb, line for line; 'pusher' is the same app on the pusher
// broadcaster pointed at the same host. Both get authEndpoint made
// absolute and a bearer token: in a browser the page's origin is the app
// (Echo's default '/broadcasting/auth') and the session says who is who.
// (A fresh auth object each: Echo's bearerToken option writes into a
// default auth object all Echo instances of a page share.)
const frontEnds = {
  reverb: (token) =>
    new Echo({
      broadcaster: 'reverb',
      key: importMetaEnv.VITE_REVERB_APP_KEY,
      wsHost: importMetaEnv.VITE_REVERB_HOST,
      wsPort: importMetaEnv.VITE_REVERB_PORT ?? 80,
      wssPort: importMetaEnv.VITE_REVERB_PORT ?? 443,
      forceTLS: (importMetaEnv.VITE_REVERB_SCHEME ?? 'https') === 'https',
      enabledTransports: ['ws', 'wss'],
      authEndpoint: `${backendURL}/broadcasting/auth`,
      auth: { headers: { Authorization: `Bearer ${token}` } },
    }),
  pusher: (token) =>
    new Echo({
      broadcaster: 'pusher',
      key: importMetaEnv.VITE_REVERB_APP_KEY,
      cluster: 'mt1',
      wsHost: importMetaEnv.VITE_REVERB_HOST,
      wsPort: importMetaEnv.VITE_REVERB_PORT ?? 80,
      wssPort: importMetaEnv.VITE_REVERB_PORT ?? 443,
      forceTLS: (importMetaEnv.VITE_REVERB_SCHEME ?? 'https') === 'https',
      enabledTransports: ['ws', 'wss'],
      authEndpoint: `${backendURL}/broadcasting/auth`,
      auth: { headers: { Authorization: `Bearer ${token}` } },
    }),
};

let counter = 0;
const unique = (p) => `${p}${process.pid}-${Date.now()}-${++counter}`;
const byName = (list) => [...list].sort((x, y) => x.name.localeCompare(y.name));

for (const [name, echo] of Object.entries(frontEnds)) {
  test(`${name}: connects with the .env's host, port and scheme`, async () => {
    const e = echo('token-ann');
    try {
      const pusher = e.connector.pusher;
      await once((f) => pusher.connection.bind('connected', f), 5000, 'connected');
      assert.match(e.socketId(), /^\d+\.\d+$/);
      assert.equal(pusher.connection.connection.transport.name, 'ws');
      assert.equal(pusher.config.wsHost, env.REVERB_HOST);
    } finally {
      e.disconnect();
    }
  });

  test(`${name}: public channel gets a Laravel event broadcast by the backend`, async () => {
    const e = echo('token-ann');
    try {
      const channel = unique('news.');
      const ch = e.channel(channel);
      await once((f) => ch.subscribed(f), 5000, 'subscription');
      // Echo's listen('OrderShipped') is the event App\Events\OrderShipped.
      const got = once((f) => ch.listen('NewsPublished', f), 5000, 'NewsPublished');
      const res = await broadcaster.trigger(channel, 'App\\Events\\NewsPublished', { title: 'hello' });
      assert.equal(res.status, 200);
      assert.deepEqual(await got, { title: 'hello' });
    } finally {
      e.disconnect();
    }
  });

  test(`${name}: private channel: authorized through /broadcasting/auth, refused with 403, toOthers() leaves the sender out`, async () => {
    const ann = echo('token-ann');
    const bob = echo('token-bob');
    const eve = echo('token-eve');
    try {
      const order = unique('orders.');
      const ca = ann.private(order);
      const cb = bob.private(order);
      const refused = once((f) => eve.private(order).error(f), 5000, 'error on a refused subscription');
      await Promise.all([once((f) => ca.subscribed(f), 5000, 'ann subscribed'), once((f) => cb.subscribed(f), 5000, 'bob subscribed')]);
      const err = await refused;
      assert.equal(err.status, 403, `refused subscription: ${JSON.stringify(err)}`);

      const annQuiet = quiet((f) => ca.listen('OrderShipped', f), 500);
      const bobGot = once((f) => cb.listen('OrderShipped', f), 5000, 'OrderShipped on bob');
      // broadcast(new OrderShipped($order))->toOthers() from Ann's request:
      // Echo's X-Socket-ID header becomes the socket_id left out.
      await broadcaster.trigger(`private-${order}`, 'App\\Events\\OrderShipped', { id: 7 }, { socket_id: ann.socketId() });
      assert.deepEqual(await bobGot, { id: 7 });
      assert.equal(await annQuiet, true, 'toOthers(): the sender received the event');
    } finally {
      for (const e of [ann, bob, eve]) e.disconnect();
    }
  });

  test(`${name}: presence channel: here, joining, leaving`, async () => {
    const room = unique('chat.');
    const ann = echo('token-ann');
    const bob = echo('token-bob');
    try {
      const pa = ann.join(room);
      assert.deepEqual(await once((f) => pa.here(f), 5000, 'ann here'), [{ id: 1, name: 'Ann' }]);
      const joining = once((f) => pa.joining(f), 5000, 'joining');
      const pb = bob.join(room);
      assert.deepEqual(byName(await once((f) => pb.here(f), 5000, 'bob here')), [{ id: 1, name: 'Ann' }, { id: 2, name: 'Bob' }]);
      assert.deepEqual(await joining, { id: 2, name: 'Bob' });
      const users = await (await broadcaster.get({ path: `/channels/presence-${room}/users` })).json();
      assert.deepEqual(users, { users: [{ id: '1' }, { id: '2' }] });
      const leaving = once((f) => pa.leaving(f), 5000, 'leaving');
      bob.leave(room);
      assert.deepEqual(await leaving, { id: 2, name: 'Bob' });
    } finally {
      ann.disconnect();
      bob.disconnect();
    }
  });

  test(`${name}: whispers on private and presence channels reach the others, not the sender`, async () => {
    const room = unique('chat.');
    const ann = echo('token-ann');
    const bob = echo('token-bob');
    try {
      const ca = ann.private(room);
      const cb = bob.private(room);
      await Promise.all([once((f) => ca.subscribed(f)), once((f) => cb.subscribed(f))]);
      const echoed = quiet((f) => ca.listenForWhisper('typing', f), 500);
      const got = once((f) => cb.listenForWhisper('typing', f), 5000, 'whisper');
      ca.whisper('typing', { name: 'Ann' });
      assert.deepEqual(await got, { name: 'Ann' });
      assert.equal(await echoed, true, 'the sender received its own whisper');

      const pa = ann.join(room);
      const pb = bob.join(room);
      await Promise.all([once((f) => pa.here(f)), once((f) => pb.here(f))]);
      const seen = once((f) => pb.listenForWhisper('wave', f), 5000, 'presence whisper');
      await sleep(50);
      pa.whisper('wave', { hi: 1 });
      assert.deepEqual(await seen, { hi: 1 });
    } finally {
      ann.disconnect();
      bob.disconnect();
    }
  });
}
