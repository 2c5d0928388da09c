// What must be refused: wrong signatures (channel auth and HTTP API), an
// unknown app key, a missing protocol version; and user sign-in with
// sendToUser and terminateUserConnections.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { skip, url, key, echo, client, connected, once, server, unique, withTimeout } from './helpers.mjs';

test('a private channel signed with the wrong secret is refused', { skip }, async () => {
  const e = echo({ signWith: server('not-the-secret') });
  try {
    const ch = e.private(unique('vault-'));
    const err = await once((f) => ch.error(f), 5000, 'subscription error');
    assert.equal(err.type, 'AuthError');
    assert.equal(err.status, 401);
  } finally {
    e.disconnect();
  }
});

test('a presence channel with tampered channel_data is refused', { skip }, async () => {
  const pusher = client({ user: { id: 'mallory', info: {} } });
  try {
    await connected(pusher);
    const name = `presence-${unique('p-')}`;
    const sig = server().authorizeChannel(pusher.connection.socket_id, name, { user_id: 'mallory' });
    pusher.send_event('pusher:subscribe', { channel: name, auth: sig.auth, channel_data: JSON.stringify({ user_id: 'admin' }) });
    const err = await once((f) => pusher.connection.bind('message', (m) => m.event === 'pusher:subscription_error' && f(m)), 5000, 'subscription_error');
    assert.equal(err.channel, name);
    assert.equal(err.data.status, 401);
  } finally {
    pusher.disconnect();
  }
});

test('the HTTP API refuses a request signed with the wrong secret', { skip }, async () => {
  await assert.rejects(server('not-the-secret').trigger('news', 'x', {}), (err) => {
    assert.equal(err.status, 401);
    assert.match(err.body, /auth_signature/);
    return true;
  });
});

function closeCode(path) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const ws = new WebSocket(new URL(path, url.href.replace(/^http/, 'ws')));
      const messages = [];
      ws.on('message', (m) => messages.push(JSON.parse(m.toString())));
      ws.on('close', (code) => resolve({ code, messages }));
      ws.on('error', reject);
    }),
    5000,
    `close of ${path}`,
  );
}

test('an unknown app key is closed with 4001', { skip }, async () => {
  const { code, messages } = await closeCode('/app/no-such-key?protocol=7');
  assert.equal(code, 4001);
  assert.equal(messages[0]?.event, 'pusher:error');
  assert.equal(messages[0]?.data.code, 4001);
});

test('a missing protocol version is closed with 4008, an unsupported one with 4007', { skip }, async () => {
  assert.equal((await closeCode(`/app/${key}`)).code, 4008);
  assert.equal((await closeCode(`/app/${key}?protocol=3`)).code, 4007);
});

test('signin, sendToUser and terminateUserConnections', { skip }, async () => {
  const user = { id: unique('user-'), info: { name: 'Uma' } };
  const pusher = client({ user });
  try {
    await connected(pusher);
    pusher.signin();
    await once((f) => pusher.connection.bind('message', (m) => m.event === 'pusher:signin_success' && f(m)), 5000, 'signin_success');
    const note = once((f) => pusher.user.bind('note', f), 5000, 'note to user');
    // pusher-js subscribes to the user's channel right after signin_success.
    const sdk = server();
    for (let i = 0; i < 50 && !pusher.user.serverToUserChannel?.subscribed; i++) await new Promise((r) => setTimeout(r, 20));
    await sdk.sendToUser(user.id, 'note', { text: 'for you' });
    assert.deepEqual(await note, { text: 'for you' });

    const closed = once((f) => pusher.connection.bind('state_change', (s) => s.current !== 'connected' && f(s)), 5000, 'termination');
    await sdk.terminateUserConnections(user.id);
    await closed;
  } finally {
    pusher.disconnect();
  }
});
