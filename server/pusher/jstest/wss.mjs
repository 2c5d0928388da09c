// pusher-js over wss:// through a TLS-terminating proxy in front of chatd
// (server/proxy_test.go starts nginx and runs this script; it is not one of
// the node --test files). Exits 0 when every check passed, 1 otherwise.
//
// Environment:
//   CHATD_TLS_URL        https://127.0.0.1:PORT of the proxy (required)
//   NODE_EXTRA_CA_CERTS  the proxy certificate's CA (Node reads it at start)

import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const url = new URL(process.env.CHATD_TLS_URL);
const port = Number(url.port || 443);
const appId = 'chatd';
const key = 'chatd-key';
const secret = 'chatd-secret';
const sdk = new PusherServer({ appId, key, secret, host: url.hostname, port: String(port), useTLS: true });

function client(user) {
  return new Pusher(key, {
    wsHost: url.hostname,
    wssPort: port,
    forceTLS: true,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith('presence-') ? { user_id: user.id, user_info: user.info } : undefined;
        callback(null, sdk.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
}

function within(ms, what, register) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const suffix = `${process.pid}-${Date.now()}`;
const ann = client({ id: 'ann', info: { name: 'Ann' } });
const bob = client({ id: 'bob', info: { name: 'Bob' } });
try {
  await within(30000, 'ann connected', (f) => ann.connection.bind('connected', f));
  await within(30000, 'bob connected', (f) => bob.connection.bind('connected', f));
  check(ann.connection.socket_id, 'no socket_id');

  // A private channel: subscription authorized, an event through the
  // HTTP API (over https, through the proxy) arrives.
  const priv = ann.subscribe(`private-tls-${suffix}`);
  await within(10000, 'private subscription', (f) => priv.bind('pusher:subscription_succeeded', f));
  const got = within(10000, 'private event', (f) => priv.bind('greeting', f));
  const res = await sdk.trigger(`private-tls-${suffix}`, 'greeting', { text: 'over wss' });
  check(res.status === 200, `HTTP API trigger: status ${res.status}`);
  const ev = await got;
  check(ev.text === 'over wss', `private event data ${JSON.stringify(ev)}`);

  // A presence channel: both members, member_added, and the HTTP API's
  // user list.
  const name = `presence-tls-${suffix}`;
  const pa = ann.subscribe(name);
  await within(10000, 'ann presence subscription', (f) => pa.bind('pusher:subscription_succeeded', f));
  const added = within(10000, 'member_added', (f) => pa.bind('pusher:member_added', f));
  const pb = bob.subscribe(name);
  const members = await within(10000, 'bob presence subscription', (f) => pb.bind('pusher:subscription_succeeded', f));
  check(members.count === 2, `presence count ${members.count}, want 2`);
  const m = await added;
  check(m.id === 'bob' && m.info.name === 'Bob', `member_added ${JSON.stringify(m)}`);
  const users = await (await sdk.get({ path: `/channels/${name}/users` })).json();
  check(JSON.stringify(users) === JSON.stringify({ users: [{ id: 'ann' }, { id: 'bob' }] }), `users ${JSON.stringify(users)}`);

  // A client event from Ann reaches Bob.
  const whisper = within(10000, 'client event', (f) => pb.bind('client-typing', f));
  check(pa.trigger('client-typing', { typing: true }), 'client event not sent');
  const w = await whisper;
  check(w.typing === true, `client event data ${JSON.stringify(w)}`);

  console.log('wss: private and presence channels, HTTP API and client events over TLS: ok');
  ann.disconnect();
  bob.disconnect();
  process.exit(0);
} catch (err) {
  console.error('wss:', err.message);
  ann.disconnect();
  bob.disconnect();
  process.exit(1);
}
