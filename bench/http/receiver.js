// A webhook receiver for bench/run-http.sh: answers every request `200 ok` at once, so that
// deliveries succeed and cost Pier what a fast receiver would.
//
//   node bench/http/receiver.js 18090
const http = require("http");

const port = Number(process.argv[2] || 18090);
http
  .createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok");
    });
  })
  .listen(port, "127.0.0.1");
