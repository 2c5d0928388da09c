// Shared setup of the end-to-end tests: a running chatd at CHATD_URL, real
// clients (pusher-js, laravel-echo) and the real server SDK (pusher).
//
// Environment:
//   CHATD_URL         http://127.0.0.1:PORT of a running chatd (required; tests skip without it)
//   CHATD_APP_ID      app id      (default chatd)
//   CHATD_APP_KEY     app key     (default chatd-key)
//   CHATD_APP_SECRET  app secret  (default chatd-secret)
//   CHATD_CLIENT_EVENTS  "0" if the app has client events off (default on)
//   CHATD_SUBSCRIPTION_COUNT  "1" if the app has subscription_count on (default off)

import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import PusherServer from 'pusher';

export const url = process.env.CHATD_URL ? new URL(process.env.CHATD_URL) : null;
export const skip = url ? false : 'CHATD_URL is not set: start chatd and point CHATD_URL at it';
export const appId = process.env.CHATD_APP_ID || 'chatd';
export const key = process.env.CHATD_APP_KEY || 'chatd-key';
export const secret = process.env.CHATD_APP_SECRET || 'chatd-secret';
export const clientEvents = process.env.CHATD_CLIENT_EVENTS !== '0';
export const subscriptionCount = process.env.CHATD_SUBSCRIPTION_COUNT === '1';
export const port = url ? Number(url.port || 80) : 0;

// server returns the server SDK, signing HTTP API calls with secret.
export function server(withSecret = secret) {
  return new PusherServer({ appId, key, secret: withSecret, host: url.hostname, port: String(port), useTLS: false });
}

// unique returns a fresh channel name suffix so tests never share channels.
let counter = 0;
export function unique(prefix) {
  return `${prefix}${process.pid}-${Date.now()}-${++counter}`;
}

// client returns a pusher-js client whose channel authorization is done in
// process by the server SDK's authorizeChannel, as an app server would.
// user is {id, info} for presence channels and signin, with an optional
// watchlist (user IDs) for signin; signWith is the
// SDK used to sign (one with a wrong secret for refusal tests).
export function client({ user, signWith } = {}) {
  const sdk = signWith || server();
  const pusher = new Pusher(key, {
    wsHost: url.hostname,
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          const presence = channelName.startsWith('presence-') && user ? { user_id: user.id, user_info: user.info } : undefined;
          callback(null, sdk.authorizeChannel(socketId, channelName, presence));
        } catch (err) {
          callback(err, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        try {
          const userData = { id: user.id, user_info: user.info };
          if (user.watchlist) userData.watchlist = user.watchlist;
          callback(null, sdk.authenticateUser(socketId, userData));
        } catch (err) {
          callback(err, null);
        }
      },
    },
  });
  return pusher;
}

// echo wraps a pusher-js client in Laravel Echo, as a Laravel front end does.
export function echo(opts) {
  return new Echo({ broadcaster: 'pusher', client: client(opts) });
}

// connected resolves once a pusher-js client is connected.
export function connected(pusher, ms = 5000) {
  if (pusher.connection.state === 'connected') return Promise.resolve();
  return withTimeout(new Promise((resolve) => pusher.connection.bind('connected', resolve)), ms, 'connect');
}

// once resolves with the first argument of the next call of register(cb)
// (pusher-js passes event data first, metadata second).
export function once(register, ms = 5000, what = 'event') {
  return withTimeout(new Promise((resolve) => register((first) => resolve(first))), ms, what);
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// quiet resolves true if register(cb) is not called within ms.
export function quiet(register, ms = 300) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(true), ms);
    register(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
