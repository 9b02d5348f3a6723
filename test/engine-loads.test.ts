import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import type { Decision, ResolverContext } from '../lib/types.js'
import { G1, G2, U1, U2, deferred, fakeClock, tableResolver } from './helpers.js'

function setup (extra: Record<string, unknown> = {}): { cache: AuthzCache, db: ReturnType<typeof tableResolver> } {
  const db = tableResolver()
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: db.resolver, project: db.resolver, team: db.resolver, document: db.resolver }, ...extra })
  return { cache, db }
}

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

test('a miss loads once, stores, and the next read is a hit', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  db.table.set(`generation:${G1}:${U1}`, { granted: true, access: ['read'] })
  t.same(await cache.getOrLoad('generation', U1, G1), { granted: true, access: ['read'] })
  t.same(await cache.getOrLoad('generation', U1, G1), { granted: true, access: ['read'] })
  t.equal(db.calls.length, 1)
  t.same(db.calls[0].kind, 'generation')
  t.equal(db.calls[0].id, G1)
  t.equal(db.calls[0].userId, U1)
  t.ok(db.calls[0].signal instanceof AbortSignal)
  t.same(await cache.getOrLoad('generation', U2, G1), { granted: false }, 'unknown resource: a denial, never null')
  t.equal(cache.getStats().loads, 2)
})

test('200 concurrent misses on one key make one resolver call', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  const gate = db.hold()
  const waiters = Array.from({ length: 200 }, () => cache.getOrLoad('generation', U1, G1))
  await flush()
  gate.resolve()
  const results = await Promise.all(waiters)
  t.equal(db.calls.length, 1)
  t.ok(results.every((r) => r.granted))
  t.equal(cache.getStats().coalesced, 199)
})

test('resolver errors reject every waiter, are not cached, and the next call retries', async (t) => {
  let fail = true
  let calls = 0
  const failures: string[] = []
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    resolvers: {
      generation: async () => {
        calls++
        await flush()
        if (fail) throw new Error('db down')
        return { granted: true }
      }
    }
  })
  cache.observer = { loaderFailed: (kind, id, userId, error) => failures.push(`${kind} ${id} ${userId} ${error.message}`) }
  t.teardown(() => cache.close())
  const results = await Promise.allSettled([cache.getOrLoad('generation', U1, G1), cache.getOrLoad('generation', U1, G1)])
  for (const r of results) {
    t.equal(r.status, 'rejected')
    t.equal((r as PromiseRejectedResult).reason.code, 'FST_AUTHZ_RESOLVER_FAILED')
    t.equal((r as PromiseRejectedResult).reason.statusCode, 503)
    t.equal((r as PromiseRejectedResult).reason.cause.message, 'db down')
  }
  t.equal(calls, 1)
  t.equal(cache.getGenerationAccess(G1, U1).hit, false, 'the failure was not cached')
  t.same(failures, [`generation ${G1} ${U1} db down`])
  fail = false
  t.same(await cache.getOrLoad('generation', U1, G1), { granted: true })
  t.equal(calls, 2)
  t.equal(cache.getStats().loaderErrors, 1)
})

test('a resolver that answers something not a Decision fails closed', async (t) => {
  const answers: unknown[] = ['yes', 1, true, [], { granted: 'true' }, { granted: true, access: 'read' }, { granted: true, tags: [1] }, { granted: true, role: 5 }, { granted: true, ttlSeconds: -3 }, new Map()]
  for (const answer of answers) {
    const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => answer as Decision } })
    await t.rejects(cache.getOrLoad('generation', U1, G1), { code: 'FST_AUTHZ_RESOLVER_FAILED' }, `answer ${JSON.stringify(answer)}`)
    t.equal(cache.getStats().totalEntries, 0)
    cache.close()
  }
  const sync = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: () => { throw new Error('sync throw') } } })
  await t.rejects(sync.getOrLoad('generation', U1, G1), { code: 'FST_AUTHZ_RESOLVER_FAILED' })
  sync.close()
})

test('a slow resolver times out with its signal aborted, and is not cached', async (t) => {
  let seen: AbortSignal | undefined
  let release!: () => void
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    loaderTimeoutMs: 20,
    resolvers: {
      generation: ({ signal }: ResolverContext) => {
        seen = signal
        return new Promise<Decision>((resolve) => { release = () => resolve({ granted: true }) })
      }
    }
  })
  t.teardown(() => cache.close())
  await t.rejects(cache.getOrLoad('generation', U1, G1), { code: 'FST_AUTHZ_RESOLVER_TIMEOUT', statusCode: 503 })
  t.equal(seen?.aborted, true)
  release()
  await flush()
  t.equal(cache.getGenerationAccess(G1, U1).hit, false, 'the late answer is not stored')
  t.equal(cache.getStats().loaderTimeouts, 1)
})

test('an invalidation during a load wins: the load stores nothing and later callers reload', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  const gate = db.hold()
  const early = cache.getOrLoad('generation', U1, G1)
  await flush()
  t.equal(db.calls.length, 1, 'the load has read the old answer and is in flight')

  // The permission is revoked in the database, then the cache is told.
  db.table.set(`generation:${G1}:${U1}`, { granted: false })
  db.gate = undefined
  cache.invalidateUserData(U1)

  const late = cache.getOrLoad('generation', U1, G1)
  t.same(await late, { granted: false }, 'a caller after the invalidation does not join the old load')
  t.equal(db.calls.length, 2)
  gate.resolve()
  t.same(await early, { granted: true }, 'the caller from before the invalidation gets the answer of its time')
  await flush()
  t.same(cache.getGenerationAccess(G1, U1).value, { granted: false }, 'the stale grant was never stored over the new answer')
  t.same(await cache.getOrLoad('generation', U1, G1), { granted: false })
  t.equal(db.calls.length, 2)
})

test('every kind of invalidation fences a load in flight', async (t) => {
  const ops: Array<[string, (c: AuthzCache) => unknown]> = [
    ['user', (c) => c.invalidateUserData(U1)],
    ['generation', (c) => c.invalidateGenerationData(G1)],
    ['tag', (c) => c.invalidateByTags([`generation:${G1}`])],
    ['pattern', (c) => c.invalidateByPattern(`auth:gen:${G1}:*`)],
    ['key', (c) => c.invalidateKeys([`auth:gen:${G1}:user:${U1}:access`])],
    ['all', (c) => c.clear()],
    ['async', (c) => c.invalidateGenerationAuthorizationCache(G1)],
    ['direct set', (c) => c.setGenerationAccess(G1, U1, { granted: false })]
  ]
  for (const [name, op] of ops) {
    const { cache, db } = setup()
    db.table.set(`generation:${G1}:${U1}`, { granted: true })
    const gate = db.hold()
    const pending = cache.getOrLoad('generation', U1, G1)
    await flush()
    await op(cache)
    gate.resolve()
    await pending
    await flush()
    t.not(cache.getGenerationAccess(G1, U1).value?.granted, true, `${name}: the stale grant was not stored`)
    cache.close()
  }
})

test('an invalidation that does not touch the key leaves the load alone', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  const gate = db.hold()
  const pending = cache.getOrLoad('generation', U1, G1)
  await flush()
  cache.invalidateUserData(U2)
  cache.invalidateGenerationData(G2)
  const joined = cache.getOrLoad('generation', U1, G1)
  gate.resolve()
  await Promise.all([pending, joined])
  t.equal(db.calls.length, 1, 'the second caller joined')
  t.equal(cache.getGenerationAccess(G1, U1).hit, true, 'and the result was stored')
})

test('a tag the decision brings along fences the load, and callers who joined after it reload', async (t) => {
  let answer: Decision = { granted: true, tags: ['team:t1'] }
  let calls = 0
  const gates = [deferred<void>(), deferred<void>()]
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    resolvers: {
      project: async () => {
        const mine = answer
        await gates[calls++].promise
        return mine
      }
    }
  })
  t.teardown(() => cache.close())
  const before = cache.getOrLoad('project', U1, 'p1')
  await flush()
  // Nothing yet says this load concerns team t1: only its answer will.
  answer = { granted: false, tags: ['team:t1'] }
  cache.invalidateByTags(['team:t1'])
  const after = cache.getOrLoad('project', U1, 'p1')
  await flush()
  gates[0].resolve()
  t.same(await before, { granted: true, tags: ['team:t1'] })
  await flush()
  t.equal(cache.getProjectAccess('p1', U1).hit, false, 'the fenced answer was not stored')
  gates[1].resolve()
  t.same(await after, { granted: false, tags: ['team:t1'] }, 'the late caller reloaded instead of taking the old answer')
  t.equal(calls, 2)
  t.same(cache.getProjectAccess('p1', U1).value, { granted: false, tags: ['team:t1'] })
})

test('fresh skips the cache, reloads and stores', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  await cache.getOrLoad('generation', U1, G1)
  db.table.set(`generation:${G1}:${U1}`, { granted: false })
  t.same(await cache.getOrLoad('generation', U1, G1), { granted: true }, 'cached')
  t.same(await cache.getOrLoad('generation', U1, G1, { fresh: true }), { granted: false }, 'fresh')
  t.same(cache.getGenerationAccess(G1, U1).value, { granted: false }, 'and stored')
  t.equal(db.calls.length, 2)
})

test('custom kinds load through their resolver', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  db.table.set(`document:d1:${U1}`, { granted: true, access: ['read'] })
  t.same(await cache.getOrLoad('document', U1, 'd1'), { granted: true, access: ['read'] })
  t.ok(cache.keys().includes(`auth:document:d1:user:${U1}:access`))
  t.equal(cache.invalidateByTags(['document:d1']), 1)
})

test('profiles load by user id and accept any object', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { profile: async ({ userId }) => userId === U1 ? { name: 'Ada' } as never : null } })
  t.teardown(() => cache.close())
  t.same(await cache.getOrLoad('profile', U1, undefined), { name: 'Ada' })
  t.same(await cache.getOrLoad('profile', U2, undefined), { granted: false })
  t.ok(cache.keys().includes(`auth:user:${U1}:profile`))
  t.equal(cache.invalidateByTags([`profile:${U1}`]), 1)
})

test('warming refreshes a hot entry before it expires', async (t) => {
  const clock = fakeClock()
  const db = tableResolver()
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, warmingEnabled: true, authTtlSeconds: 100, now: clock.now, random: () => 0, resolvers: { generation: db.resolver } })
  t.teardown(() => cache.close())
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  await cache.getOrLoad('generation', U1, G1)
  clock.tick(89_000)
  cache.getGenerationAccess(G1, U1)
  t.equal(db.calls.length, 1, 'no refresh before 90% of the TTL')
  clock.tick(2000)
  db.table.set(`generation:${G1}:${U1}`, { granted: true, access: ['read'] })
  t.same(cache.getGenerationAccess(G1, U1).value, { granted: true }, 'the hit is served at once')
  await flush()
  await flush()
  t.equal(db.calls.length, 2, 'and a refresh started in the background')
  clock.tick(50_000)
  t.same(cache.getGenerationAccess(G1, U1).value, { granted: true, access: ['read'] }, 'the refreshed entry lives on')
})

test('a failed refresh leaves the entry to expire as it would have', async (t) => {
  const clock = fakeClock()
  let fail = false
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, warmingEnabled: true, authTtlSeconds: 100, now: clock.now, random: () => 0, resolvers: { generation: async () => { if (fail) throw new Error('x'); return { granted: true } } } })
  t.teardown(() => cache.close())
  await cache.getOrLoad('generation', U1, G1)
  fail = true
  clock.tick(95_000)
  t.equal(cache.getGenerationAccess(G1, U1).hit, true)
  await flush()
  t.equal(cache.getStats().loaderErrors, 1)
  clock.tick(5000)
  t.equal(cache.getGenerationAccess(G1, U1).hit, false)
})

test('a load that ends after close stores nothing', async (t) => {
  const { cache, db } = setup()
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  const gate = db.hold()
  const pending = cache.getOrLoad('generation', U1, G1)
  await flush()
  cache.close()
  gate.resolve()
  await pending
  t.equal(cache.getStats().totalEntries, 0)
})
