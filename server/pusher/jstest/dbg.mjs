import WebSocket from 'ws';
import PusherServer from 'pusher';
const port = process.argv[2], since = process.argv[3], pub = process.argv[4];
const ws = new WebSocket(`ws://127.0.0.1:${port}/app/chatd-key?protocol=7`);
ws.on('message', (b) => console.log('got', b.toString()));
await new Promise(r => ws.once('open', r));
const d = {channel:'news2'}; if (since) d.chatd_since = since;
ws.send(JSON.stringify({event:'pusher:subscribe', data: d}));
await new Promise(r => setTimeout(r, 500));
if (pub) { const api = new PusherServer({appId:'chatd', key:'chatd-key', secret:'chatd-secret', host:'127.0.0.1', port:pub, useTLS:false});
console.log('trigger', (await api.trigger('news2','e','x'+Date.now())).status); }
await new Promise(r => setTimeout(r, 1000));
process.exit(0);
