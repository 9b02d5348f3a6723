import { test } from 'tap'
import { Redis } from 'ioredis'
import type { FastifyInstance } from 'fastify'
import { buildApp, type TestApp } from './app.js'
import { G1, G2, U1, U2, fakeClock } from './helpers.js'
import { REDIS_URL, eventually, namespace, redisAvailable, redisProxy } from './redis-helpers.js'
import type { Decision } from '../lib/types.js'

const available = await redisAvailable()
if (available === false) {
  test('Redis tests', { skip: `no Redis at ${REDIS_URL}: start one, or set REDIS_URL, to run the multi-instance tests` }, () => {})
} else {
  const routes = (app: FastifyInstance): void => {
    app.get('/generations/:generationId', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => ({ ok: true }))
  }

  type Ns = ReturnType<typeof namespace>
  async function instances (t: Parameters<typeof buildApp>[0], n: number, extra: (i: number) => Record<string, unknown> = () => ({})): Promise<{ apps: TestApp[], table: Map<string, Decision | null>, ns: Ns }> {
    const ns = namespace()
    t.teardown(ns.cleanup)
    const table = new Map<string, Decision | null>()
    const apps: TestApp[] = []
    for (let i = 0; i < n; i++) {
      const { redis, ...rest } = extra(i) as { redis?: Record<string, unknown> }
      apps.push(await buildApp(t, { redis: { url: REDIS_URL, keyPrefix: ns.keyPrefix, channel: ns.channel, ...redis }, ...rest }, routes, table))
    }
    return { apps, table, ns }
  }

  const get = (x: TestApp, generationId = G1, user = U1): Promise<number> =>
    x.app.inject({ url: `/generations/${generationId}`, headers: x.auth(user) }).then((r) => r.statusCode)

  test('a revoke on A makes B and C reload on their next request', async (t) => {
    const { apps: [a, b, c], table } = await instances(t, 3)
    table.set(`generation:${G1}:${U1}`, { granted: true })
    for (const x of [a, b, c]) t.equal(await get(x), 200)
    t.equal(a.db.calls.length + b.db.calls.length + c.db.calls.length, 1, 'one resolver call in all: B and C read L2')

    table.set(`generation:${G1}:${U1}`, { granted: false })
    await a.app.authz.invalidateUserAuthorizationCache(U1)
    t.ok(await eventually(() => b.app.authz.getStats().totalEntries === 0 && c.app.authz.getStats().totalEntries === 0), 'B and C applied it')
    for (const x of [b, c]) t.equal(await get(x), 403, 'the revocation holds on every instance')
    t.equal(await get(a), 403)
    const stats = (await a.app.inject({ url: '/_authz/stats', headers: a.auth('ops', { scope: 'authz:admin' }) })).json()
    t.equal(stats.redis.connected, true)
    t.ok(stats.redis.published >= 1)
    t.ok(b.app.authz.getStats().invalidations >= 1)
  })

  test('an L1 miss on B is served from L2 without calling B resolver', async (t) => {
    const { apps: [a, b], table, ns } = await instances(t, 2)
    table.set(`generation:${G1}:${U1}`, { granted: true, access: ['read'], mediaUrls: ['x.png'] })
    t.equal(await get(a), 200)
    t.equal(a.db.calls.length, 1)
    const raw = await ns.raw.getBuffer(`${ns.keyPrefix}v:auth:gen:${G1}:user:${U1}:access`)
    t.ok(raw, 'A wrote the decision to L2 before answering')
    t.equal(await get(b), 200)
    t.equal(b.db.calls.length, 0, 'B did not call its resolver')
    t.same(b.app.authz.getGenerationAccess(G1, U1).value, { granted: true, access: ['read'], mediaUrls: ['x.png'] }, 'and keeps it in L1')
    const stats = (await b.app.inject({ url: '/_authz/stats', headers: b.auth('ops', { scope: 'authz:admin' }) })).json()
    t.equal(stats.redis.l2Hits, 1)
    t.same(b.app.authz.getStats().redis, stats.redis, 'app.authz.getStats() carries the same redis block')
  })

  test('admin invalidations, patterns and all reach L2 and every instance', async (t) => {
    const { apps: [a, b], table, ns } = await instances(t, 2)
    table.set(`generation:${G1}:${U1}`, { granted: true })
    table.set(`generation:${G2}:${U2}`, { granted: true, tags: ['project:p1'] })
    t.equal(await get(a, G1, U1), 200)
    t.equal(await get(a, G2, U2), 200)
    const res = await b.app.inject({ method: 'POST', url: '/_authz/invalidate', headers: b.auth('ops', { scope: 'authz:admin' }), payload: { tags: ['project:p1'] } })
    t.equal(res.statusCode, 200)
    t.equal(await ns.raw.exists(`${ns.keyPrefix}v:auth:gen:${G2}:user:${U2}:access`), 0, 'gone from L2')
    t.ok(await eventually(() => a.app.authz.getGenerationAccess(G2, U2).hit === false), 'gone from A')
    t.equal(a.app.authz.getGenerationAccess(G1, U1).hit, true, 'the rest stays')
    await b.app.authz.invalidate({ pattern: `auth:gen:*:user:${U1}:*` })
    t.equal(await ns.raw.exists(`${ns.keyPrefix}v:auth:gen:${G1}:user:${U1}:access`), 0, 'pattern reached L2')
    t.ok(await eventually(() => a.app.authz.getStats().totalEntries === 0))
    t.equal(await get(a, G1, U1), 200)
    await a.app.authz.invalidate({ all: true })
    t.same(await ns.raw.keys(`${ns.keyPrefix}v:*`), [], 'all: L2 emptied')
  })

  for (const bBus of [true, false]) {
    test(`the fence holds across instances (B bus ${bBus ? 'on' : 'off'}): a load on B from before A's invalidation stores nothing`, async (t) => {
      const { apps: [a, b], table, ns } = await instances(t, 2, (i) => i === 1 ? { redis: { bus: bBus } } : {})
      table.set(`generation:${G1}:${U1}`, { granted: true })
      const gate = b.db.hold()
      const pending = get(b)
      t.ok(await eventually(() => b.db.calls.length === 1), 'B read L2 (a miss) and called its resolver, which now hangs')
      table.set(`generation:${G1}:${U1}`, { granted: false })
      await a.app.authz.invalidateUserAuthorizationCache(U1)
      if (bBus) {
        t.ok(await eventually(async () => (await b.app.inject({ url: '/_authz/stats', headers: b.auth('ops', { scope: 'authz:admin' }) })).json().redis.received === 1),
          'B heard the invalidation while its load was in flight')
      }
      gate.resolve()
      t.equal(await pending, 200, 'the request from before the revocation gets the answer of its time')
      t.equal(await ns.raw.exists(`${ns.keyPrefix}v:auth:gen:${G1}:user:${U1}:access`), 0, 'the stale grant never reached L2')
      t.equal(b.app.authz.getGenerationAccess(G1, U1).hit, false, 'nor B L1')
      b.db.gate = undefined
      t.equal(await get(b), 403, 'B next request reloads the revoked answer')
      t.equal(await get(a), 403)
    })
  }

  test('invalidations of other users do not fence a load in flight', async (t) => {
    const { apps: [a, b], table, ns } = await instances(t, 2)
    table.set(`generation:${G1}:${U1}`, { granted: true, tags: ['project:p1'] })
    const gate = b.db.hold()
    const pending = get(b)
    t.ok(await eventually(() => b.db.calls.length === 1))
    for (let i = 0; i < 20; i++) await a.app.authz.invalidateUserAuthorizationCache(`someone-else-${i}`)
    await a.app.authz.invalidate({ tags: ['project:p2'], teamId: 't9' })
    gate.resolve()
    t.equal(await pending, 200)
    t.equal(await ns.raw.exists(`${ns.keyPrefix}v:auth:gen:${G1}:user:${U1}:access`), 1, 'written to L2')
    t.equal(b.app.authz.getGenerationAccess(G1, U1).hit, true, 'and to B L1')
  })

  test('a decision tag invalidated during the load fences it across instances', async (t) => {
    const { apps: [a, b], table, ns } = await instances(t, 2, (i) => i === 1 ? { redis: { bus: false } } : {})
    table.set(`generation:${G1}:${U1}`, { granted: true, tags: ['project:p1'] })
    const gate = b.db.hold()
    const pending = get(b)
    t.ok(await eventually(() => b.db.calls.length === 1))
    await a.app.authz.invalidate({ projectId: 'p1' })
    gate.resolve()
    t.equal(await pending, 200)
    t.equal(await ns.raw.exists(`${ns.keyPrefix}v:auth:gen:${G1}:user:${U1}:access`), 0, 'refused by L2: the tag moved on')
    t.equal(b.app.authz.getGenerationAccess(G1, U1).hit, false)
  })

  test('Redis unreachable at start: the instance boots and answers through its resolvers', async (t) => {
    const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true }]])
    const x = await buildApp(t, { redis: { url: 'redis://127.0.0.1:1', commandTimeoutMs: 50 } }, routes, table)
    t.equal(await get(x), 200)
    t.equal(x.db.calls.length, 1)
    const stats = (await x.app.inject({ url: '/_authz/stats', headers: x.auth('ops', { scope: 'authz:admin' }) })).json()
    t.equal(stats.redis.connected, false)
    t.equal(stats.redis.l2Hits + stats.redis.l2Misses, 0, 'nothing is read from L2 while the bus is down')
    const res = await x.app.inject({ method: 'POST', url: '/_authz/invalidate', headers: x.auth('ops', { scope: 'authz:admin' }), payload: { userId: U1 } })
    t.equal(res.statusCode, 503, 'the caller learns the other instances were not told')
    t.equal(res.json().code, 'FST_AUTHZ_BUS_FAILED')
    t.equal(x.app.authz.getStats().totalEntries, 0, 'but the invalidation applied here')
    await t.rejects(x.app.authz.invalidateGenerationAuthorizationCache(G1), { code: 'FST_AUTHZ_BUS_FAILED', statusCode: 503 })
    t.equal(x.app.authz.invalidateUserData(U1), 0, 'the synchronous methods apply locally and do not throw')
  })

  test('bus outage: no L1 entry older than the bound is served, and L1 is dropped on reconnect', async (t) => {
    const proxy = await redisProxy()
    t.teardown(proxy.close)
    const ns = namespace()
    t.teardown(ns.cleanup)
    const clock = fakeClock(Date.now())
    const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true }], [`generation:${G2}:${U1}`, { granted: true }]])
    const x = await buildApp(t, { now: clock.now, redis: { url: proxy.url, keyPrefix: ns.keyPrefix, channel: ns.channel, busOutageMaxStalenessSeconds: 5, commandTimeoutMs: 100 } }, routes, table)
    t.equal(await get(x), 200)
    t.equal(x.db.calls.length, 1)
    t.equal(x.app.authz.getStats().totalEntries, 1)

    await proxy.cut()
    t.ok(await eventually(() => x.app.authz.busIsDown), 'the instance noticed the bus is gone')
    clock.tick(4000)
    t.equal(await get(x), 200)
    t.equal(x.db.calls.length, 1, 'a 4 s old entry is still served during the outage')
    clock.tick(1001)
    table.set(`generation:${G1}:${U1}`, { granted: false })
    t.equal(await get(x), 403, 'past the bound: not served, the resolver answers (and the request succeeds)')
    t.equal(x.db.calls.length, 2)
    t.equal(await get(x, G2), 200, 'new loads work during the outage')
    t.ok(x.app.authz.getStats().totalEntries >= 1)

    await proxy.restore()
    t.ok(await eventually(() => !x.app.authz.busIsDown, 10_000), 'the bus came back')
    t.equal(x.app.authz.getStats().totalEntries, 0, 'every L1 entry from before the reconnect was dropped')
    const stats = (await x.app.inject({ url: '/_authz/stats', headers: x.auth('ops', { scope: 'authz:admin' }) })).json()
    t.equal(stats.redis.outages, 1)
    t.equal(stats.redis.connected, true)
  })

  test('a client you pass is used and left open; the subscriber the plugin made is closed', async (t) => {
    const ns = namespace()
    t.teardown(ns.cleanup)
    const client = new Redis(REDIS_URL)
    t.teardown(() => client.quit())
    const table = new Map<string, Decision | null>([[`generation:${G1}:${U1}`, { granted: true, mediaUrls: Array.from({ length: 60 }, (_, i) => `https://cdn.example.com/${G1}/${i}.png`) }]])
    const x = await buildApp(t, { compressionEnabled: true, redis: { client, keyPrefix: ns.keyPrefix, channel: ns.channel } }, routes, table)
    t.equal(await get(x), 200)
    const raw = await ns.raw.getBuffer(`${ns.keyPrefix}v:auth:gen:${G1}:user:${U1}:access`)
    t.equal(raw?.[(raw?.indexOf(10) ?? -2) + 1], 1, 'a large value is stored compressed in L2 (the format byte after its header line)')
    const clientsBefore = (await ns.raw.client('LIST') as string).split('\n').filter(Boolean).length
    await x.app.close()
    t.equal(client.status, 'ready', 'the passed client stays open')
    t.equal(await client.ping(), 'PONG')
    t.ok(await eventually(async () => (await ns.raw.client('LIST') as string).split('\n').filter(Boolean).length === clientsBefore - 1), 'the subscriber connection is gone')
  })
}
