import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_TEST_URL
if (!baseUrl) throw new Error("set CONFORMANCE_TEST_URL, e.g. http://127.0.0.1:4437")

runConformanceTests({ baseUrl: baseUrl.replace(/\/+$/, "") })
