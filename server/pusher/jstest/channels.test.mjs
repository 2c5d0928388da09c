// Public, private and cache channels with Laravel Echo, events published
// through the HTTP API by the pusher server SDK.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skip, echo, client, connected, once, quiet, server, unique } from './helpers.mjs';

test('connection_established gives a socket id', { skip }, async () => {
  const pusher = client();
  try {
    await connected(pusher);
    assert.match(pusher.connection.socket_id, /^\d+\.\d+$/);
  } finally {
    pusher.disconnect();
  }
});

test('public channel receives an event triggered through the HTTP API', { skip }, async () => {
  const e = echo();
  try {
    const name = unique('news-');
    const ch = e.channel(name);
    await once((cb) => ch.subscribed(cb), 5000, 'subscription');
    const got = once((cb) => ch.listen('.greeting', cb), 5000, 'greeting');
    const res = await server().trigger(name, 'greeting', { text: 'hello', n: 1 });
    assert.equal(res.status, 200);
    assert.deepEqual(await got, { text: 'hello', n: 1 });
  } finally {
    e.disconnect();
  }
});

test('private channel receives an event; socket_id excludes a recipient', { skip }, async () => {
  const a = echo();
  const b = echo();
  try {
    const name = unique('orders-');
    const ca = a.private(name);
    const cb = b.private(name);
    await Promise.all([once((f) => ca.subscribed(f)), once((f) => cb.subscribed(f))]);
    const aQuiet = quiet((f) => ca.listen('.shipped', f), 500);
    const bGot = once((f) => cb.listen('.shipped', f), 5000, 'shipped on b');
    await server().trigger(`private-${name}`, 'shipped', { id: 7 }, { socket_id: a.socketId() });
    assert.deepEqual(await bGot, { id: 7 });
    assert.equal(await aQuiet, true, 'the excluded socket received the event');
  } finally {
    a.disconnect();
    b.disconnect();
  }
});

test('batch events and multi-channel trigger', { skip }, async () => {
  const e = echo();
  try {
    const one = unique('b1-');
    const two = unique('b2-');
    const c1 = e.channel(one);
    const c2 = e.channel(two);
    await Promise.all([once((f) => c1.subscribed(f)), once((f) => c2.subscribed(f))]);
    const got1 = once((f) => c1.listen('.multi', f));
    const got2 = once((f) => c2.listen('.multi', f));
    await server().trigger([one, two], 'multi', { ok: true });
    assert.deepEqual(await got1, { ok: true });
    assert.deepEqual(await got2, { ok: true });
    const batch1 = once((f) => c1.listen('.batched', f));
    const batch2 = once((f) => c2.listen('.batched', f));
    await server().triggerBatch([
      { channel: one, name: 'batched', data: { i: 1 } },
      { channel: two, name: 'batched', data: { i: 2 } },
    ]);
    assert.deepEqual(await batch1, { i: 1 });
    assert.deepEqual(await batch2, { i: 2 });
  } finally {
    e.disconnect();
  }
});

test('cache channel replays the last event to a new subscriber', { skip }, async () => {
  const name = unique('cache-score-');
  const first = client();
  const second = client();
  try {
    const ch = first.subscribe(name);
    const miss = once((f) => ch.bind('pusher:cache_miss', f), 5000, 'cache_miss');
    await once((f) => ch.bind('pusher:subscription_succeeded', f));
    await miss;
    await server().trigger(name, 'score', { home: 2, away: 1 });
    const late = second.subscribe(name);
    assert.deepEqual(await once((f) => late.bind('score', f), 5000, 'replayed score'), { home: 2, away: 1 });
  } finally {
    first.disconnect();
    second.disconnect();
  }
});

test('HTTP API channel queries', { skip }, async () => {
  const e = echo();
  try {
    const name = unique('q-');
    const ch = e.channel(name);
    await once((f) => ch.subscribed(f));
    const sdk = server();
    const list = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: name } })).json();
    assert.deepEqual(list, { channels: { [name]: {} } });
    const info = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, subscription_count: 1 });
  } finally {
    e.disconnect();
  }
});
