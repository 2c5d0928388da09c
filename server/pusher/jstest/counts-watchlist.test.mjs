// pusher:subscription_count (an app with subscription_count on) and
// watchlist online/offline events (pusher.user.watchlist), as pusher-js
// delivers them to an application.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skip, subscriptionCount, client, connected, once, unique } from './helpers.mjs';

test('pusher:subscription_count follows the subscribers of a channel', { skip: skip || (!subscriptionCount && 'CHATD_SUBSCRIPTION_COUNT is not 1') }, async () => {
  const name = unique('counted-');
  const clients = [client(), client(), client()];
  try {
    const first = clients[0].subscribe(name);
    const counts = [];
    const reached = (n) => once((f) => first.bind('pusher:subscription_count', (d) => { counts.push(d.subscription_count); if (d.subscription_count === n) f(d); }), 10000, `subscription_count ${n}`);
    const three = reached(3);
    clients[1].subscribe(name);
    clients[2].subscribe(name);
    assert.deepEqual(await three, { subscription_count: 3 });
    assert.equal(first.subscriptionCount, 3, 'pusher-js keeps the count on the channel');

    const two = once((f) => first.bind('pusher:subscription_count', (d) => d.subscription_count === 2 && f(d)), 10000, 'subscription_count 2');
    clients[2].disconnect();
    assert.deepEqual(await two, { subscription_count: 2 });
    assert.ok(counts.every((n) => n >= 1 && n <= 3), `counts ${counts}`);
  } finally {
    clients.forEach((c) => c.disconnect());
  }
});

test('watchlist: online and offline of watched users', { skip }, async () => {
  const friend = { id: unique('friend-'), info: {} };
  const away = { id: unique('away-'), info: {} };
  const here = { id: unique('here-'), info: {} };
  const hereClient = client({ user: here });
  const watcher = client({ user: { id: unique('watcher-'), info: {}, watchlist: [friend.id, away.id, here.id] } });
  const tabs = [];
  try {
    await connected(hereClient);
    hereClient.signin();
    await once((f) => hereClient.connection.bind('message', (m) => m.event === 'pusher:signin_success' && f(m)), 5000, 'signin_success');

    const online = [];
    const offline = [];
    watcher.user.watchlist.bind('online', (e) => online.push(e));
    watcher.user.watchlist.bind('offline', (e) => offline.push(e));
    const state = once((f) => watcher.user.watchlist.bind('offline', f), 5000, 'state after signin');
    await connected(watcher);
    watcher.signin();
    assert.deepEqual(await state, { name: 'offline', user_ids: [friend.id, away.id] });
    assert.deepEqual(online, [{ name: 'online', user_ids: [here.id] }]);

    // Two tabs of friend: one online; offline once both are gone.
    const friendOnline = once((f) => watcher.user.watchlist.bind('online', (e) => e.user_ids.includes(friend.id) && f(e)), 5000, 'friend online');
    for (let i = 0; i < 2; i++) {
      const tab = client({ user: friend });
      tabs.push(tab);
      await connected(tab);
      tab.signin();
      await once((f) => tab.connection.bind('message', (m) => m.event === 'pusher:signin_success' && f(m)), 5000, 'friend signin_success');
    }
    assert.deepEqual(await friendOnline, { name: 'online', user_ids: [friend.id] });
    const friendOffline = once((f) => watcher.user.watchlist.bind('offline', (e) => e.user_ids.includes(friend.id) && f(e)), 5000, 'friend offline');
    tabs.forEach((tab) => tab.disconnect());
    assert.deepEqual(await friendOffline, { name: 'offline', user_ids: [friend.id] });
    assert.equal(online.filter((e) => e.user_ids.includes(friend.id)).length, 1, 'a second tab said online again');
  } finally {
    tabs.forEach((tab) => tab.disconnect());
    hereClient.disconnect();
    watcher.disconnect();
  }
});
