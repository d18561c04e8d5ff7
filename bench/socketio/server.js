// The Socket.IO side of the fan-out comparison (bench/run_all.py): the idiomatic Socket.IO chat.
// Each client joins the room of its webinar on connect; every message POSTed to /send gets the next
// seq and is broadcast with `io.to(room).emit(...)` — one event per message, as Socket.IO apps do.
// The event carries the same fields (and so about the same bytes) as a webinar-chat INSERT event.
// No database: this favours Socket.IO, whose CPU is spent on fan-out alone.
// Usage: node server.js PORT
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 3000);
const seqs = new Map();
let nextId = 1;

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    return reply(res, 200, { success: true, status: "ok" });
  }
  if (req.method === "POST" && req.url === "/send") {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch (e) {
        return reply(res, 400, { success: false, error: "invalid JSON" });
      }
      const webinarId = body.webinarId || 1;
      const seq = (seqs.get(webinarId) || 0) + 1;
      seqs.set(webinarId, seq);
      const message = {
        id: nextId++,
        webinar_id: webinarId,
        user_id: body.userId || 1,
        content: String(body.content),
        created_at: new Date().toISOString(),
        hidden: false,
        client_msg_id: body.clientMsgId || null,
        seq,
        user: { display_name: body.displayName || "Sender" },
      };
      io.to(`webinar:${webinarId}`).emit("message", { seq, type: "INSERT", new: message, old: null });
      reply(res, 200, { success: true, message });
    });
    return undefined;
  }
  return reply(res, 404, { success: false, error: "Not found" });
});

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

const io = new Server(server, {
  transports: ["websocket"], // like our clients: no long-polling upgrade dance
  perMessageDeflate: false, // off on our side too (costs GBs at thousands of sockets)
  httpCompression: false,
  serveClient: false,
  // Engine.IO's defaults; the bench clients answer pings, as ours send heartbeats.
  pingInterval: 25000,
  pingTimeout: 20000,
});

io.on("connection", (socket) => {
  const webinarId = Number(socket.handshake.query.webinar || 1);
  socket.join(`webinar:${webinarId}`);
});

// A backlog as large as the kernel allows: thousands of clients connect within a second.
server.listen(port, "127.0.0.1", 4096);
process.on("SIGTERM", () => process.exit(0));
