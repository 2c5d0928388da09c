// Pusher across the nodes of a chatd cluster, with the real clients:
// laravel-echo / pusher-js connected to different nodes, the pusher server
// SDK publishing to and querying yet another node. Not picked up by a
// plain `node --test` (the name has no .test.): the Go test
// TestClusterPusherJSClients starts the cluster and runs this file.
//
// Environment: CHATD_URLS, comma-separated http://127.0.0.1:PORT of the
// nodes (three); the default app (chatd, chatd-key, chatd-secret).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import PusherServer from 'pusher';
import { once, quiet, sleep } from './helpers.mjs';

const urls = (process.env.CHATD_URLS || '').split(',').filter(Boolean).map((u) => new URL(u));
const skip = urls.length >= 3 ? false : 'CHATD_URLS must name three chatd nodes';
const [appId, key, secret] = ['chatd', 'chatd-key', 'chatd-secret'];

// sdk is the server SDK talking to node n.
function sdk(n) {
  return new PusherServer({ appId, key, secret, host: urls[n].hostname, port: urls[n].port, useTLS: false });
}

// client is pusher-js on node n, signing channels in process as an app
// server would (with the SDK of another node: the secret is the app's).
function client(n, user) {
  const signer = sdk((n + 1) % urls.length);
  return new Pusher(key, {
    wsHost: urls[n].hostname,
    wsPort: Number(urls[n].port),
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith('presence-') && user ? { user_id: user.id, user_info: user.info } : undefined;
        callback(null, signer.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
}

const echo = (n, user) => new Echo({ broadcaster: 'pusher', client: client(n, user) });
let counter = 0;
const unique = (p) => `${p}${process.pid}-${Date.now()}-${++counter}`;
const byName = (list) => [...list].sort((x, y) => x.name.localeCompare(y.name));
const ann = { id: 'ann', info: { name: 'Ann' } };
const bob = { id: 'bob', info: { name: 'Bob' } };

test('presence spans nodes: here, joining and leaving count users across nodes, not tabs', { skip }, async () => {
  const room = unique('room-');
  const annE = echo(0, ann);
  const bob1 = echo(1, bob);
  const bob2 = echo(2, bob);
  try {
    const annCh = annE.join(room);
    assert.deepEqual(await once((f) => annCh.here(f), 5000, 'ann here'), [ann.info]);
    const joined = [];
    const left = [];
    annCh.joining((info) => joined.push(info));
    annCh.leaving((info) => left.push(info));

    const here1 = await once((f) => bob1.join(room).here(f), 5000, 'bob on node 1 here');
    assert.deepEqual(byName(here1), [ann.info, bob.info]);
    const here2 = await once((f) => bob2.join(room).here(f), 5000, 'bob on node 2 here');
    assert.deepEqual(byName(here2), [ann.info, bob.info]);
    await sleep(300);
    assert.deepEqual(joined, [bob.info], 'bob announced once, though he has tabs on two nodes');

    const users = await (await sdk(2).get({ path: `/channels/presence-${room}/users` })).json();
    assert.deepEqual(users, { users: [{ id: 'ann' }, { id: 'bob' }] });
    const info = await (await sdk(0).get({ path: `/channels/presence-${room}`, params: { info: 'user_count,subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 3 });

    bob1.disconnect();
    await sleep(300);
    assert.deepEqual(left, [], 'member_removed while bob still had a tab on another node');
    const gone = once((f) => annCh.leaving(f), 5000, 'leaving');
    bob2.disconnect();
    assert.deepEqual(await gone, bob.info);
  } finally {
    for (const e of [annE, bob1, bob2]) e.disconnect();
  }
});

test('the SDK publishing to one node reaches pusher-js on the others, socket_id excluded across nodes', { skip }, async () => {
  const channel = unique('news-');
  const a = client(0);
  const b = client(1);
  try {
    const ca = a.subscribe(channel);
    const cb = b.subscribe(channel);
    await Promise.all([once((f) => ca.bind('pusher:subscription_succeeded', f)), once((f) => cb.bind('pusher:subscription_succeeded', f))]);
    await sleep(200); // the nodes' interest reaches NATS
    const gotA = once((f) => ca.bind('flash', f), 5000, 'flash on node 0');
    const gotB = once((f) => cb.bind('flash', f), 5000, 'flash on node 1');
    await sdk(2).trigger(channel, 'flash', { n: 1 });
    assert.deepEqual(await gotA, { n: 1 });
    assert.deepEqual(await gotB, { n: 1 });

    const notB = quiet((f) => cb.bind('second', f), 1000);
    const gotA2 = once((f) => ca.bind('second', f), 5000, 'second on node 0');
    await sdk(2).trigger(channel, 'second', { n: 2 }, { socket_id: b.connection.socket_id });
    assert.deepEqual(await gotA2, { n: 2 });
    assert.equal(await notB, true, 'the excluded socket on node 1 got the event');
  } finally {
    a.disconnect();
    b.disconnect();
  }
});

test('whispers cross nodes and are not echoed; cache channels replay the cluster\'s last event', { skip }, async () => {
  const room = unique('chat-');
  const a = echo(0, ann);
  const b = echo(2, bob);
  try {
    const ca = a.private(room);
    const cb = b.private(room);
    await Promise.all([once((f) => ca.subscribed(f)), once((f) => cb.subscribed(f))]);
    await sleep(200);
    const echoed = quiet((f) => ca.listenForWhisper('typing', f), 1000);
    const got = once((f) => cb.listenForWhisper('typing', f), 5000, 'whisper');
    ca.whisper('typing', { name: 'Ann' });
    assert.deepEqual(await got, { name: 'Ann' });
    assert.equal(await echoed, true, 'the sender received its own client event');

    const cache = unique('cache-');
    await sdk(0).trigger(cache, 'price', { v: 42 });
    await sleep(300);
    const late = client(1);
    try {
      const ch = late.subscribe(cache);
      assert.deepEqual(await once((f) => ch.bind('price', f), 5000, 'cached price on node 1'), { v: 42 });
    } finally {
      late.disconnect();
    }
  } finally {
    a.disconnect();
    b.disconnect();
  }
});
