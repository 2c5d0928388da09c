// The publish hook with pusher-js and Laravel Echo whispers: not picked up
// by `npm test` (it needs a chatd whose app has publish_hook_url set to a
// receiver that answers as server/publishhook_test.go's does); run by
// `go test -run TestPusherPublishHook ./server`.
//
// A whispers allow / rewrite / reject / stall / fail / allow on a private
// channel: B receives them in order, the rewritten one replaced, the
// rejected one not at all, the stalled and failed ones as the policy says
// (CHATD_HOOK_POLICY open or closed); A alone gets a pusher:error for the
// rejected one. Meanwhile C's whisper on another channel reaches D while
// A's stalled event waits.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skip, echo, once, sleep, unique, withTimeout } from './helpers.mjs';

const policy = process.env.CHATD_HOOK_POLICY || 'open';

test(`publish hook decides client events (fail-${policy})`, { skip }, async () => {
  const room = unique('hook-');
  const other = unique('hook-other-');
  const [a, b, c, d] = ['ann', 'bob', 'cid', 'dee'].map((id) => echo({ user: { id } }));
  try {
    const [ca, cb, cc, cd] = [a.private(room), b.private(room), c.private(other), d.private(other)];
    await Promise.all([ca, cb, cc, cd].map((ch) => once((f) => ch.subscribed(f))));
    const got = [];
    cb.listenForWhisper('msg', (m) => got.push(m.text));
    const errors = [];
    a.connector.pusher.connection.bind('error', (e) => errors.push(e));
    const echoed = [];
    ca.listenForWhisper('msg', (m) => echoed.push(m.text));

    for (const text of ['allow 1', 'rewrite 2', 'reject 3', 'allow 4', 'stall 5', 'fail 6', 'allow 7']) {
      ca.whisper('msg', { text });
    }
    // While A's stall 5 waits (the hook's timeout is 1 s), C's whisper
    // reaches D at once.
    await sleep(300);
    const t0 = Date.now();
    const meanwhile = once((f) => cd.listenForWhisper('msg', f), 5000, 'other channel whisper');
    cc.whisper('msg', { text: 'meanwhile' });
    assert.deepEqual(await meanwhile, { text: 'meanwhile' });
    const took = Date.now() - t0;
    assert.ok(took < 500, `another channel's whisper took ${took} ms behind a stalled one`);

    const want = policy === 'open'
      ? ['allow 1', 'rewritten 2', 'allow 4', 'stall 5', 'fail 6', 'allow 7']
      : ['allow 1', 'rewritten 2', 'allow 4', 'allow 7'];
    await withTimeout((async () => {
      while (got.length < want.length) await sleep(20);
    })(), 10000, `whispers (got ${JSON.stringify(got)})`);
    await sleep(200);
    assert.deepEqual(got, want);
    assert.deepEqual(echoed, [], 'the sender received its own client event');
    const rejected = errors.filter((e) => JSON.stringify(e).includes('not on this server'));
    assert.equal(rejected.length, 1, `pusher:error for the rejected whisper: ${JSON.stringify(errors)}`);
    assert.match(JSON.stringify(rejected[0]), /client-msg/);
  } finally {
    for (const e of [a, b, c, d]) e.disconnect();
  }
});
