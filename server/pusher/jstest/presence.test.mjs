// Presence channels with Laravel Echo: several tabs of one user are one
// member; client events (whispers) between two clients.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skip, clientEvents, echo, once, quiet, server, sleep, unique } from './helpers.mjs';

const ann = { id: 'ann', info: { name: 'Ann' } };
const bob = { id: 'bob', info: { name: 'Bob' } };

test('presence: here, joining and leaving count users, not tabs', { skip }, async () => {
  const room = unique('room-');
  const bobTab = echo({ user: bob });
  const annTab1 = echo({ user: ann });
  const annTab2 = echo({ user: ann });
  try {
    const bobCh = bobTab.join(room);
    assert.deepEqual(await once((f) => bobCh.here(f), 5000, 'bob here'), [bob.info]);

    const joined = [];
    const left = [];
    bobCh.joining((info) => joined.push(info));
    bobCh.leaving((info) => left.push(info));

    const here1 = await once((f) => annTab1.join(room).here(f), 5000, 'ann tab 1 here');
    assert.deepEqual(sortByName(here1), [ann.info, bob.info]);
    const here2 = await once((f) => annTab2.join(room).here(f), 5000, 'ann tab 2 here');
    assert.deepEqual(sortByName(here2), [ann.info, bob.info]);
    await sleep(300);
    assert.deepEqual(joined, [ann.info], 'a second tab of the same user announced a new member');

    const sdk = server();
    const users = await (await sdk.get({ path: `/channels/presence-${room}/users` })).json();
    assert.deepEqual(users, { users: [{ id: 'ann' }, { id: 'bob' }] });
    const count = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
    assert.equal(count.channels[`presence-${room}`].user_count, 2);

    annTab1.disconnect();
    await sleep(300);
    assert.deepEqual(left, [], 'member_removed while the user still had a tab open');
    const gone = once((f) => bobCh.leaving(f), 5000, 'leaving');
    annTab2.disconnect();
    assert.deepEqual(await gone, ann.info);
  } finally {
    for (const e of [bobTab, annTab1, annTab2]) e.disconnect();
  }
});

test('client events (whisper) reach the other subscriber, not the sender', { skip: skip || (!clientEvents && 'client events are off') }, async () => {
  const room = unique('chat-');
  const a = echo({ user: ann });
  const b = echo({ user: bob });
  try {
    const ca = a.private(room);
    const cb = b.private(room);
    await Promise.all([once((f) => ca.subscribed(f)), once((f) => cb.subscribed(f))]);
    const echoed = quiet((f) => ca.listenForWhisper('typing', f), 500);
    const got = once((f) => cb.listenForWhisper('typing', f), 5000, 'whisper');
    ca.whisper('typing', { name: 'Ann', typing: true });
    assert.deepEqual(await got, { name: 'Ann', typing: true });
    assert.equal(await echoed, true, 'the sender received its own client event');

    // On presence channels the receiver learns who sent it.
    const pa = a.join(room);
    const pb = b.join(room);
    await Promise.all([once((f) => pa.here(f)), once((f) => pb.here(f))]);
    const meta = once((f) => b.connector.pusher.channel(`presence-${room}`).bind('client-wave', (data, metadata) => f([data, metadata])), 5000, 'wave');
    pa.whisper('wave', { hi: 1 });
    const [data, metadata] = await meta;
    assert.deepEqual(data, { hi: 1 });
    assert.equal(metadata.user_id, 'ann');
  } finally {
    a.disconnect();
    b.disconnect();
  }
});
function sortByName(list) {
  return [...list].sort((x, y) => x.name.localeCompare(y.name));
}
