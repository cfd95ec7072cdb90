// The official Socket.IO client (the one browsers run) against a Keel server.
// Usage: node client.mjs URL TOKEN_A TOKEN_B ROOM  -> one JSON object on stdout with what happened.
import { io } from "socket.io-client";

const [url, tokenA, tokenB, room] = process.argv.slice(2);
const result = {};
const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms));
const once = (socket, event, what) => Promise.race([new Promise((resolve) => socket.once(event, resolve)), timeout(5000, what)]);
const connect = (auth) => {
  const socket = io(url, { transports: ["websocket"], auth, reconnection: false, forceNew: true });
  return Promise.race([
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", (err) => { socket.close(); reject(err); });
    }),
    timeout(5000, "connect"),
  ]);
};

try {
  // A refused connect: the reason is in err.data (err.message is its message).
  try {
    await connect({ token: "not-a-token" });
    result.refused = null;
  } catch (err) {
    result.refused = { message: err.message, data: err.data };
  }

  const a = await connect({ token: tokenA });
  const b = await connect({ token: tokenB });
  result.joinedA = await a.timeout(5000).emitWithAck("join_room", { room });
  const presence = once(a, "presence", "presence joined");
  result.joinedB = await b.timeout(5000).emitWithAck("join_room", { room });
  result.presenceJoined = await presence;

  const received = once(a, "room_message", "room_message");
  result.sent = await b.timeout(5000).emitWithAck("room_message", { room, message: { text: "hello from js" } });
  result.received = await received;
  result.forbidden = await b.timeout(5000).emitWithAck("room_message", { room: "not-joined", message: "x" });

  const left = once(a, "presence", "presence left");
  b.close();
  result.presenceLeft = await left;
  a.close();
  console.log(JSON.stringify(result));
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ ...result, failure: String(err) }));
  process.exit(1);
}
