// Starts the Node reference server of Durable Streams for the bench, in memory or on its file
// store in a data directory: `node serve.mjs <long-poll timeout in ms> [<data directory>]`. It listens on a free loopback port and prints
// `<port> <pid>` on its first line, answers `GET /stats` on a second port with the number of
// long polls it holds, and exits when its standard input closes (the bench went away).
import { createServer } from "node:http"
import { DurableStreamTestServer } from "@durable-streams/server"

// The file store logs its recovery to standard output, where the bench reads the ports: send
// every log line to standard error instead.
console.log = console.info = (...args) => console.error(...args)

const longPollTimeout = Number(process.argv[2] ?? 600000)
const dataDir = process.argv[3]
const server = new DurableStreamTestServer({
  port: 0,
  host: "127.0.0.1",
  longPollTimeout,
  dataDir,
  // The other servers answer small bodies uncompressed; so does this one.
  compression: false,
})
const url = await server.start()
// Node closes a request after 300 s and idle keep-alive connections after 5 s by default;
// the bench holds polls longer and keeps its append connections open.
server.server.requestTimeout = 0
server.server.headersTimeout = 0
server.server.keepAliveTimeout = 600000
server.server.maxRequestsPerSocket = 0

const stats = createServer((req, res) => {
  const body = `${server.store.pendingLongPolls?.length ?? 0} 0`
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length })
  res.end(body)
})
await new Promise((resolve) => stats.listen(0, "127.0.0.1", resolve))

process.stdout.write(`${new URL(url).port} ${stats.address().port}\n`)
process.stdin.resume()
process.stdin.on("end", () => process.exit(0))
process.stdin.on("close", () => process.exit(0))
