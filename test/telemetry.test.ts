/**
 * Telemetry in the forms users already collect: diagnostics_channel
 * (tracing of every resolver call, invalidations, the feeds) and a
 * prom-client registry (every stats metric, and two histograms), and the
 * shipped Grafana dashboard queries only metrics that exist.
 */
import diagnostics from 'node:diagnostics_channel'
import { readFileSync } from 'node:fs'
import { test } from 'tap'
import pino from 'pino'
import { Registry } from 'prom-client'
import { AuthzCache } from '../lib/cache.js'
import { BUS_CHANNEL, INVALIDATE_CHANNEL, LOAD_CHANNEL, type BusMessage, type InvalidateMessage, type LoadMessage } from '../lib/telemetry.js'
import { prometheusText, registerMetrics } from '../lib/metrics.js'
import { buildApp } from './app.js'
import { G1, G2, U1, U2 } from './helpers.js'
import { namespace, redisAvailable } from './redis-helpers.js'

type Event = [string, LoadMessage]

/** Subscribes to the load tracing channel for the test; answers the events seen, in order. */
function traceLoads (t: { teardown: (fn: () => void) => void }): Event[] {
  const events: Event[] = []
  const channel = diagnostics.tracingChannel(LOAD_CHANNEL)
  const handlers = {
    start: (m: unknown) => events.push(['start', m as LoadMessage]),
    end: (m: unknown) => events.push(['end', m as LoadMessage]),
    asyncStart: (m: unknown) => events.push(['asyncStart', m as LoadMessage]),
    asyncEnd: (m: unknown) => events.push(['asyncEnd', m as LoadMessage]),
    error: (m: unknown) => events.push(['error', m as LoadMessage])
  }
  channel.subscribe(handlers)
  t.teardown(() => channel.unsubscribe(handlers))
  return events
}

function listen<T> (t: { teardown: (fn: () => void) => void }, name: string): T[] {
  const seen: T[] = []
  const onMessage = (message: unknown): void => { seen.push(message as T) }
  diagnostics.subscribe(name, onMessage)
  t.teardown(() => diagnostics.unsubscribe(name, onMessage))
  return seen
}

test('the load channel traces every resolver call, single and batch, with its outcome and no token', async (t) => {
  const events = traceLoads(t)
  let fail = false
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    loaderTimeoutMs: 50,
    resolvers: {
      generation: {
        one: async ({ id }) => { if (fail) throw new Error('down'); return { granted: id === G1 } },
        many: async ({ ids }) => new Map(ids.map((id) => [id, { granted: true }]))
      }
    }
  })
  t.teardown(() => cache.close())
  await cache.getOrLoad('generation', U1, G1)
  t.same(events.map(([name]) => name), ['start', 'end', 'asyncStart', 'asyncEnd'])
  const [, message] = events[0]
  t.equal(message.cache, cache, 'which cache called')
  t.same({ kind: message.kind, userId: message.userId, ids: message.ids, batch: message.batch }, { kind: 'generation', userId: U1, ids: [G1], batch: false })
  t.same(message.result, { value: { granted: true }, json: '{"granted":true}' }, 'the accepted answer')
  t.ok(events.every(([, m]) => m === message), 'one context object through the trace')

  events.length = 0
  await cache.getOrLoad('generation', U1, G1)
  t.same(events, [], 'a hit calls nothing, traces nothing')

  await cache.getOrLoadMany('generation', U2, [G1, G2])
  const batch = events.find(([name]) => name === 'start')?.[1]
  t.same({ ids: batch?.ids, batch: batch?.batch, userId: batch?.userId }, { ids: [G1, G2], batch: true, userId: U2 })

  events.length = 0
  fail = true
  await t.rejects(cache.getOrLoad('generation', U2, 'g-fails'), { code: 'FST_AUTHZ_RESOLVER_FAILED' })
  t.same(events.map(([name]) => name), ['start', 'end', 'error', 'asyncStart', 'asyncEnd'])
  t.equal((events[2][1].error as { code?: string }).code, 'FST_AUTHZ_RESOLVER_FAILED', 'the 503 error, not the resolver\'s')
  t.notMatch(JSON.stringify(events.map(([, m]) => ({ ...m, cache: undefined }))), /eyJ|Bearer/, 'no token anywhere')
})

test('the invalidate and bus channels: local and remote invalidations, a feed down and up', async (t) => {
  const invalidations = listen<InvalidateMessage>(t, INVALIDATE_CHANNEL)
  const bus = listen<BusMessage>(t, BUS_CHANNEL)
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => ({ granted: true }) } })
  t.teardown(() => cache.close())
  await cache.getOrLoad('generation', U1, G1)
  await cache.invalidate({ userId: U1 })
  t.same(invalidations.map(({ request, removed, origin }) => ({ request, removed, origin })), [{ request: { userId: U1 }, removed: 1, origin: 'local' }])
  t.equal(invalidations[0].cache, cache)
  const feed = cache.attachFeed('test-feed')
  feed.down()
  feed.down()
  feed.up()
  t.same(bus.map((m) => ({ event: m.event, feed: 'feed' in m ? m.feed : undefined })), [{ event: 'down', feed: 'test-feed' }, { event: 'up', feed: 'test-feed' }], 'one message per change')
  t.same(invalidations.at(-1)?.request, { all: true }, 'a feed back drops L1, and says so')
  t.equal(invalidations.at(-1)?.origin, 'remote')
})

test('metrics: { registry } registers every stats metric and the two histograms on a prom-client registry', async (t) => {
  const registry = new Registry()
  const { app, auth } = await buildApp(t, { metrics: { registry } }, (app) => {
    app.get('/g/:id', { config: { authz: { generation: 'id', access: 'read' } } }, async () => 'ok')
  })
  for (let i = 0; i < 3; i++) await app.inject({ url: `/g/${G1}`, headers: auth(U1) })
  await app.inject({ url: `/g/${G2}`, headers: auth(U1) })
  await app.authz.invalidate({ userId: U1 })
  const text = await registry.metrics()
  t.match(text, 'authz_cache_hits_total{kind="generation"} 2\n')
  t.match(text, 'authz_cache_misses_total{kind="generation"} 2\n')
  t.match(text, 'authz_cache_loads_total 2\n')
  t.match(text, '# TYPE authz_cache_hits_total counter')
  t.match(text, '# TYPE authz_cache_entries gauge')
  t.match(text, 'authz_cache_invalidations_total 2\n')
  t.match(text, /authz_cache_resolver_duration_seconds_count\{kind="generation"\} 2\n/, 'two resolver calls timed')
  t.match(text, /authz_cache_resolver_duration_seconds_bucket\{le="\+Inf",kind="generation"\} 2\n/)
  t.match(text, '# TYPE authz_cache_invalidation_propagation_seconds histogram', 'registered without Redis too (no observation)')
  t.match(text, 'authz_cache_warming_predicted_total 0\n')
  // The admin route's text keeps working beside it.
  const res = await app.inject({ url: '/_authz/stats', headers: { ...auth(U2, { scope: 'authz:admin' }), accept: 'text/plain' } })
  t.match(res.body, 'authz_cache_hits_total{kind="generation"} 2\n')

  await app.close()
  t.equal((await registry.getMetricsAsJSON()).length, 0, 'close() removes them from the registry')
})

test('metrics: a bad registry, a registry already holding them, or no prom-client fail the boot naming the option', async (t) => {
  await t.rejects(buildApp(t, { metrics: { registry: {} } }), { code: 'FST_AUTHZ_OPTIONS', message: /metrics\.registry/ })
  await t.rejects(buildApp(t, { metrics: {} as { registry: unknown } }), { code: 'FST_AUTHZ_OPTIONS', message: /metrics\.registry/ })
  await t.rejects(buildApp(t, { metrics: { registry: new Registry(), extra: 1 } as { registry: unknown } }), { code: 'FST_AUTHZ_OPTIONS', message: /metrics\.extra/ })
  const registry = new Registry()
  await buildApp(t, { metrics: { registry } })
  await t.rejects(buildApp(t, { metrics: { registry } }), { code: 'FST_AUTHZ_OPTIONS', message: /already has a metric named authz_cache_/ })
})

test('two caches in one process: each registry counts its own cache\'s resolver calls only', async (t) => {
  const caches = [0, 1].map(() => new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => ({ granted: true }) } }))
  const registries = [new Registry(), new Registry()]
  const handles = await Promise.all(caches.map((cache, i) => registerMetrics(cache, registries[i])))
  t.teardown(() => { for (const h of handles) h.close(); for (const c of caches) c.close() })
  await caches[0].getOrLoad('generation', U1, G1)
  await caches[0].getOrLoad('generation', U1, G2)
  await caches[1].getOrLoad('generation', U1, G1)
  t.match(await registries[0].metrics(), /authz_cache_resolver_duration_seconds_count\{kind="generation"\} 2\n/)
  t.match(await registries[1].metrics(), /authz_cache_resolver_duration_seconds_count\{kind="generation"\} 1\n/)
})

const redisUrl = await redisAvailable()

test('with Redis, the propagation histogram times each invalidation until every instance acknowledged', { skip: redisUrl === false ? 'no Redis at 127.0.0.1:6379' : false }, async (t) => {
  const url = redisUrl as string
  const ns = namespace()
  t.teardown(() => ns.cleanup())
  const registry = new Registry()
  const { app } = await buildApp(t, { metrics: { registry }, redis: { url, keyPrefix: ns.keyPrefix, channel: ns.channel } })
  const { app: other } = await buildApp(t, { redis: { url, keyPrefix: ns.keyPrefix, channel: ns.channel } })
  t.ok(other.authz)
  const published = listen<BusMessage>(t, BUS_CHANNEL)
  for (let i = 0; i < 3; i++) await app.authz.invalidateUserAuthorizationCache(`${U1}-${i}`)
  const text = await registry.metrics()
  t.match(text, 'authz_cache_invalidation_propagation_seconds_count 3\n')
  const mine = published.filter((m) => m.event === 'published' && m.cache === app.authz)
  t.equal(mine.length, 3)
  t.ok(mine.every((m) => m.event === 'published' && m.instances === 2 && m.acknowledged === 2 && m.durationMs >= 0), 'both instances acknowledged each')
  t.match(text, 'authz_cache_redis_connected 1\n', 'the Redis families are registered when Redis is configured')
})

test('the Grafana dashboard queries only metrics the cache exposes', async (t) => {
  const url = redisUrl
  const registry = new Registry()
  const dashboard = JSON.parse(readFileSync(new URL('../examples/grafana-dashboard.json', import.meta.url), 'utf8')) as { panels: Array<{ targets: Array<{ expr: string }> }> }
  const queried = new Set<string>()
  for (const panel of dashboard.panels) for (const target of panel.targets) for (const name of target.expr.match(/authz_cache_\w+/g) ?? []) queried.add(name)
  t.ok(queried.size >= 20, `${queried.size} metrics queried`)
  const ns = namespace()
  t.teardown(() => ns.cleanup())
  // Redis and PostgreSQL families exist only when those are configured: a fake feed stands in for PostgreSQL's stats.
  const { app } = await buildApp(t, { metrics: { registry }, ...(url === false ? {} : { redis: { url, keyPrefix: ns.keyPrefix, channel: ns.channel } }) })
  const exposed = new Set((await registry.getMetricsAsJSON()).map((m) => m.name))
  t.ok(app.authz.getStats().hits >= 0)
  const known = new Set<string>()
  for (const name of exposed) {
    known.add(name)
    for (const suffix of ['_bucket', '_count', '_sum']) known.add(name + suffix)
  }
  // PostgreSQL's families, as the text route names them with a feed attached.
  const withFeed = new AuthzCache({ resolvers: {} })
  withFeed.attachFeed('postgres', () => ({ connected: true, received: 0, malformed: 0, outages: 0 }))
  for (const line of prometheusText(withFeed.getStats()).split('\n')) {
    const name = /^authz_cache_\w+/.exec(line)?.[0]
    if (name !== undefined) known.add(name)
  }
  withFeed.close()
  const missing = [...queried].filter((name) => !known.has(name) && !(url === false && name.startsWith('authz_cache_redis_')))
  t.same(missing, [], 'every queried metric exists')
})

test('the engine alone logs through a pino logger: resolver failures at error, invalidations at info; a bad logger fails', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
  const cache = new AuthzCache({ logger, cleanupIntervalSeconds: 0, resolvers: { generation: async () => { throw new Error('db down') } } })
  t.teardown(() => cache.close())
  await t.rejects(cache.getOrLoad('generation', U1, G1), { code: 'FST_AUTHZ_RESOLVER_FAILED' })
  cache.invalidateUserData(U1)
  t.same(lines.map((l) => [l.level, l.msg]), [
    [50, 'authz resolver failed; the check is denied with 503 and nothing is cached'],
    [30, 'authz cache invalidated']
  ])
  t.same({ kind: lines[0].kind, id: lines[0].id, userId: lines[0].userId }, { kind: 'generation', id: G1, userId: U1 })
  t.match(lines[0].err, { message: 'db down' })
  t.same(lines[1].authzInvalidation, { userId: U1 })
  t.throws(() => new AuthzCache({ logger: { info: () => {} } as never }), { code: 'FST_AUTHZ_OPTIONS', message: /logger/ })
})
