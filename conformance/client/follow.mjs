// Follows a Durable Streams JSON stream with the official client until it has a number of
// items, printing one JSON line per batch, then a final line with every item and the offset
// to resume from.
//
// usage: node follow.mjs <stream-url> <long-poll|sse> <offset> <count>
import { stream } from "@durable-streams/client"

const [url, live, offset, count] = process.argv.slice(2)
if (!count) {
  console.error("usage: node follow.mjs <stream-url> <long-poll|sse> <offset> <count>")
  process.exit(2)
}

const res = await stream({ url, offset, live })
const items = []
let last = offset
await new Promise((resolve, reject) => {
  res.subscribeJson(async (batch) => {
    items.push(...batch.items)
    last = batch.offset
    console.log(JSON.stringify({ items: batch.items, offset: batch.offset, upToDate: batch.upToDate }))
    if (items.length >= Number(count)) resolve()
  })
  res.closed.then(resolve, reject)
})
res.cancel()
console.log(JSON.stringify({ done: true, items, offset: last }))
process.exit(0)
