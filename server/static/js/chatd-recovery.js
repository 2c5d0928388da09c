/*
 * chatd-recovery.js: exact recovery after a reconnect, and rewind on join,
 * for pusher-js 8 and Laravel Echo 2 (broadcasters "pusher" and "reverb")
 * against chatd. One file, no build step:
 *
 *   <script src="https://chat.example.com/js/chatd-recovery.js"></script>
 *   ChatdRecovery.attach(pusher, { rewind: 20 });            // pusher-js
 *   ChatdRecovery.attach(window.Echo.connector.pusher, {});   // Echo
 *
 *   const ChatdRecovery = require('./chatd-recovery.js');    // Node
 *
 * chatd sends every event of a channel that keeps history with its position
 * ("chatd_position":"EPOCH:OFFSET", a top-level field pusher-js ignores),
 * and the channel's position in pusher_internal:subscription_succeeded. The
 * plugin remembers the last position per channel and, whenever pusher-js
 * subscribes again (after a reconnect), asks chatd for what came after it
 * (chatd_since); on a channel's first subscription it asks for the last
 * `rewind` events (chatd_rewind). chatd replays exactly the missed events,
 * in order, before the live ones. When it cannot (the position is too old,
 * chatd restarted, history is off), the channel gets the event
 * "chatd:recovery_failed" (data: {code, reason, position}): reload the
 * channel's state from your backend. Unsubscribing forgets the channel.
 *
 * Options: rewind (events to ask for on a first subscription, default 0),
 * onRecoveryFailed(channelName, data) (called besides the channel event).
 */
(function (root, factory) {
  var api = factory();
  if (typeof module === 'object' && module.exports) {
    module.exports = api;
  }
  if (root) {
    root.ChatdRecovery = api;
  }
})(typeof window !== 'undefined' ? window : typeof self !== 'undefined' ? self : null, function () {
  'use strict';

  var FIELD = '"chatd_position"';

  function attach(pusher, options) {
    if (!pusher || typeof pusher.send_event !== 'function' || !pusher.connection) {
      throw new Error('ChatdRecovery.attach: want a pusher-js 8 instance (new Pusher(...), or echo.connector.pusher)');
    }
    if (pusher.__chatdRecovery) {
      return pusher.__chatdRecovery;
    }
    options = options || {};
    var rewind = Math.max(0, Math.floor(Number(options.rewind) || 0));
    var positions = Object.create(null); // channel name -> "EPOCH:OFFSET"

    // Every pusher:subscribe goes through send_event: add what to replay.
    var send = pusher.send_event;
    pusher.send_event = function (name, data, channel) {
      if (data && typeof data.channel === 'string') {
        if (name === 'pusher:subscribe') {
          var extra = {};
          for (var k in data) {
            if (Object.prototype.hasOwnProperty.call(data, k)) extra[k] = data[k];
          }
          var pos = positions[data.channel];
          if (pos) {
            extra.chatd_since = pos;
          } else if (rewind > 0) {
            extra.chatd_rewind = rewind;
          }
          data = extra;
        } else if (name === 'pusher:unsubscribe') {
          delete positions[data.channel];
        }
      }
      return send.call(pusher, name, data, channel);
    };

    // pusher-js hands applications a copy of each message without chatd's
    // field, so positions are read from the transport's raw messages.
    function onRaw(ev) {
      var text = ev && ev.data;
      if (typeof text !== 'string' || text.indexOf(FIELD) < 0) return;
      var msg;
      try {
        msg = JSON.parse(text);
      } catch (e) {
        return;
      }
      if (!msg || typeof msg.channel !== 'string' || typeof msg.chatd_position !== 'string') return;
      positions[msg.channel] = msg.chatd_position;
      if (msg.event === 'chatd:recovery_failed' && typeof options.onRecoveryFailed === 'function') {
        var data = msg.data;
        try {
          data = JSON.parse(data);
        } catch (e) {}
        options.onRecoveryFailed(msg.channel, data);
      }
    }
    var bound = null;
    function bindTransport() {
      var conn = pusher.connection && pusher.connection.connection;
      var transport = conn && conn.transport;
      if (!transport || transport === bound || typeof transport.bind !== 'function') return;
      transport.bind('message', onRaw);
      bound = transport;
    }
    // pusher-js subscribes again from its own 'connected' handler, bound
    // before this one; answers come later, by which time this is bound.
    pusher.connection.bind('connected', bindTransport);
    bindTransport();

    var handle = {
      position: function (channel) {
        return positions[channel];
      },
      positions: function () {
        var out = {};
        for (var k in positions) out[k] = positions[k];
        return out;
      },
    };
    pusher.__chatdRecovery = handle;
    return handle;
  }

  return { attach: attach, version: 1 };
});
