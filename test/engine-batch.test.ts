/**
 * Batch checks (SPEC sections 2, 5, 6): `getOrLoadMany`, `request.authz.decisions`
 * and `filter`, resolvers as `{ one?, many? }`. Written as an attacker or an
 * operator would: every batch is fenced per id exactly like single loads,
 * fails closed as a whole, never grants an id its answer did not grant, and
 * never lets a bad id or a bad option through.
 *
 * Resolver calls are held by hand (each call is a deferred the test
 * releases), so every interleaving here is deterministic except the
 * randomized one, which prints its seed: BATCH_SEED=<seed> replays the run,
 * BATCH_TRIAL_SEED=<seed> one trial (each failure prints its trial's seed
 * and log), BATCH_TRIALS sets the number of trials (default 300).
 */
import { test, type Test } from 'tap'
import fc from 'fast-check'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import authzCache from '../lib/index.js'
import type { AuthzKind } from '../lib/check-types.js'
import { AuthzCache } from '../lib/cache.js'
import type { CacheOptions } from '../lib/options.js'
import { BATCH_CONCURRENCY } from '../lib/engine/loads.js'
import { connectRedis, type RedisLayer } from '../lib/redis.js'
import type { BatchResolverContext, CacheStats, Decision, ResolverContext, ResolverSpec } from '../lib/types.js'
import { SECRET, buildApp } from './app.js'
import { G1, G2, U1, U2, deferred, fakeClock, seededRandom, type Deferred, blockFor, envInt } from './helpers.js'
import { REDIS_URL, eventually, namespace, redisAvailable, resolvedRedis, silentLogger } from './redis-helpers.js'

const G3 = '0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f'
const FAILED = 'FST_AUTHZ_RESOLVER_FAILED'
const TIMEOUT = 'FST_AUTHZ_RESOLVER_TIMEOUT'
const BAD_ID = 'FST_AUTHZ_BAD_ID'

type Failure = Error & { code?: string, statusCode?: number, cause?: unknown }

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

async function rejection (promise: Promise<unknown>): Promise<Failure | undefined> {
  return promise.then(() => undefined, (error: Failure) => error)
}

// ------------------------------------------------------------ a held backend

/** One resolver call the test holds: what it was asked, the rows it read when it started, and how to answer it. */
interface HeldCall {
  readonly via: 'one' | 'many'
  readonly kind: string
  readonly userId: string
  readonly ids: string[]
  readonly signal: AbortSignal
  /** The rows as the query saw them when it ran (an answer already on its way). */
  readonly rows: Map<string, Decision | null>
  settled: boolean
  /** Answers from `rows`: a Map for `many`, the decision for `one`. */
  release: () => void
  /** Answers `raw` as is. */
  answer: (raw: unknown) => void
  fail: (error: unknown) => void
}

const row = (kind: string, id: string, userId: string): string => `${kind}:${id}:${userId}`

/**
 * The "database" behind `one` and `many` resolvers whose calls wait until the
 * test releases them. `calls` lists every call in order.
 */
function heldBackend (): {
  rows: Map<string, Decision | null>
  calls: HeldCall[]
  pending: () => HeldCall[]
  one: (ctx: ResolverContext) => Promise<Decision | null>
  many: (ctx: BatchResolverContext) => Promise<unknown>
  drain: () => Promise<void>
} {
  const rows = new Map<string, Decision | null>()
  const calls: HeldCall[] = []
  const hold = (via: 'one' | 'many', kind: string, userId: string, ids: string[], signal: AbortSignal): Promise<unknown> => {
    const seen = new Map<string, Decision | null>()
    for (const id of ids) seen.set(id, rows.get(row(kind, id, userId)) ?? null)
    const d: Deferred<unknown> = deferred<unknown>()
    const call: HeldCall = {
      via,
      kind,
      userId,
      ids: [...ids],
      signal,
      rows: seen,
      settled: false,
      release: () => call.answer(via === 'many' ? new Map(seen) : seen.get(ids[0])),
      answer: (raw) => { call.settled = true; d.resolve(raw) },
      fail: (error) => { call.settled = true; d.reject(error) }
    }
    calls.push(call)
    return d.promise
  }
  const backend = {
    rows,
    calls,
    pending: () => calls.filter((call) => !call.settled),
    one: (ctx: ResolverContext) => hold('one', ctx.kind, ctx.userId, [ctx.id], ctx.signal) as Promise<Decision | null>,
    many: (ctx: BatchResolverContext) => hold('many', ctx.kind, ctx.userId, ctx.ids, ctx.signal),
    /** Releases every held call, and those the releases start, until none is left. */
    drain: async () => {
      for (let round = 0; round < 50; round++) {
        await flush()
        const open = backend.pending()
        if (open.length === 0) return
        for (const call of open) call.release()
      }
      throw new Error('drain: resolver calls keep coming')
    }
  }
  return backend
}

/** A grant that says which version of which row it came from. */
const grant = (id: string, v = 1, extra: Partial<Decision> = {}): Decision => ({ granted: true, access: ['read'], tags: [`folder:${id}`], v, ...extra })
const revoked = (id: string, v = 2): Decision => ({ granted: false, tags: [`folder:${id}`], v })

/** Resolvers as a test writes them: hostile ones answer what the types forbid. */
type AnyResolvers = Record<string, unknown>

function batchEngine (t: Test, resolvers: AnyResolvers, extra: CacheOptions = {}): AuthzCache {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, ttlJitterPercent: 0, resolvers: resolvers as Record<string, ResolverSpec>, ...extra })
  t.teardown(() => cache.close())
  return cache
}

/** The counters a lookup or a load moves. */
function counters (stats: CacheStats): Record<string, unknown> {
  return { hits: stats.hits, misses: stats.misses, loads: stats.loads, batches: stats.batches, coalesced: stats.coalesced, totalEntries: stats.totalEntries, byKind: stats.byKind }
}

/** The cached value of (generation, id, user), or undefined on a miss. */
function cachedGeneration (cache: AuthzCache, id: string, userId: string): Decision | undefined {
  const { value, hit } = cache.getGenerationAccess(id, userId)
  return hit ? value : undefined
}

// ----------------------------------------------------- 1. fencing per id

interface FenceVariant {
  name: string
  /** The (id, user) pairs the invalidation reaches: their rows are revoked first. */
  reached: Array<[string, string]>
  invalidate: (cache: AuthzCache) => void
  /** A direct write: the reached keys then hold this value, not a reload. */
  written?: (id: string) => Decision
}

const FENCE_VARIANTS: FenceVariant[] = [
  { name: 'by generationId', reached: [[G2, U1], [G2, U2]], invalidate: (cache) => cache.invalidateGenerationData(G2) },
  { name: "by a tag from the decision's own tags", reached: [[G2, U1], [G2, U2]], invalidate: (cache) => cache.invalidateByTags([`folder:${G2}`]) },
  { name: 'by user', reached: [[G1, U2], [G2, U2], [G3, U2]], invalidate: (cache) => cache.invalidateUserData(U2) },
  { name: 'by pattern', reached: [[G2, U1]], invalidate: (cache) => cache.invalidateByPattern(`auth:gen:${G2}:user:${U1}:*`) },
  { name: 'by key', reached: [[G2, U1]], invalidate: (cache) => cache.invalidateKeys([`auth:gen:${G2}:user:${U1}:access`]) },
  {
    name: 'by a set*() direct write',
    reached: [[G2, U1]],
    invalidate: (cache) => cache.setGenerationAccess(G2, U1, revoked(G2, 3)),
    written: (id) => revoked(id, 3)
  }
]

for (const variant of FENCE_VARIANTS) {
  test(`batch fence ${variant.name}: an invalidation during a batch keeps exactly the keys it reaches out of the cache, and checks started after it reload`, async (t) => {
    const be = heldBackend()
    const cache = batchEngine(t, { generation: { many: be.many } })
    const ids = [G1, G2, G3]
    for (const u of [U1, U2]) for (const id of ids) be.rows.set(row('generation', id, u), grant(id))
    const reached = new Set(variant.reached.map(([id, u]) => `${id}|${u}`))
    const isReached = (id: string, u: string): boolean => reached.has(`${id}|${u}`)

    const early: Record<string, Promise<Map<string, Decision>>> = { [U1]: cache.getOrLoadMany('generation', U1, ids), [U2]: cache.getOrLoadMany('generation', U2, ids) }
    await flush()
    t.equal(be.calls.length, 2, 'one resolver call per user, both in flight')
    t.same(be.calls.map((call) => call.ids), [ids, ids])

    // The database revokes, then the cache is told (or written directly).
    for (const [id, u] of variant.reached) be.rows.set(row('generation', id, u), revoked(id))
    variant.invalidate(cache)
    const callsBefore = be.calls.length

    // Started after the invalidation returned: must never get the old answer.
    const lateSingles = variant.reached.map(([id, u]) => ({ id, u, promise: cache.getOrLoad('generation', u, id) }))
    const lateBatches = [U1, U2].map((u) => ({ u, promise: cache.getOrLoadMany('generation', u, ids) }))
    await flush()
    if (variant.written === undefined && !variant.name.includes('tag')) {
      // The fenced loads left the in-flight map: later checks did not wait for them, they reloaded at once.
      for (const [id, u] of variant.reached) {
        t.ok(be.calls.slice(callsBefore).some((call) => call.userId === u && call.ids.includes(id)), 'the reached key is reloaded before the stale batch even answers')
      }
    }

    // The batches that started before the invalidation are answered now.
    be.calls[0].release()
    be.calls[1].release()
    const answered: Record<string, Map<string, Decision>> = { [U1]: await early[U1], [U2]: await early[U2] }
    for (const u of [U1, U2]) {
      t.same([...answered[u].keys()], ids, 'the Map is in input order')
      for (const id of ids) t.same(answered[u].get(id), grant(id), 'the early caller gets the answer of the call it started (it began before the invalidation)')
    }

    for (const u of [U1, U2]) {
      for (const id of ids) {
        const cached = cachedGeneration(cache, id, u)
        if (!isReached(id, u)) t.same(cached, grant(id), `${id.slice(0, 2)}/${u.slice(0, 2)}: not reached, stored by the batch (a hit)`)
        else if (variant.written !== undefined) t.same(cached, variant.written(id), 'reached by the direct write: the written value, not the batch answer')
        else t.equal(cached, undefined, `${id.slice(0, 2)}/${u.slice(0, 2)}: reached, the batch did not store it (a miss)`)
      }
    }

    await be.drain()
    for (const { id, promise } of lateSingles) {
      t.same(await promise, variant.written?.(id) ?? revoked(id), 'a single check started after the invalidation sees the revoked answer')
    }
    for (const { u, promise } of lateBatches) {
      const late = await promise
      for (const id of ids) {
        t.same(late.get(id), isReached(id, u) ? (variant.written?.(id) ?? revoked(id)) : grant(id), 'a batch started after the invalidation sees the revoked answer for the reached keys only')
      }
    }
    const after = be.calls.slice(callsBefore)
    if (variant.written !== undefined) {
      t.equal(after.length, 0, 'after a direct write, nothing reloads: the written value is the answer')
    } else {
      for (const [id, u] of variant.reached) {
        t.ok(after.some((call) => call.userId === u && call.ids.includes(id)), 'each reached key was asked of the resolver again')
      }
      for (const call of after) {
        for (const id of call.ids) t.ok(isReached(id, call.userId), 'keys the invalidation did not reach are not asked again (they joined the loads in flight)')
      }
    }
    for (const [id, u] of variant.reached) t.same(cachedGeneration(cache, id, u), variant.written?.(id) ?? revoked(id), 'the reached keys now hold the revoked answer')
  })
}

test('batch fence: a check that joined a batch load before a decision-tag invalidation was logged still reloads (the tag was unknown until the answer)', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { generation: { many: be.many } })
  for (const id of [G1, G2]) be.rows.set(row('generation', id, U1), grant(id))
  const early = cache.getOrLoadMany('generation', U1, [G1, G2])
  await flush()
  // Joins G2's batch load: its tags are not known yet.
  const joinedBefore = cache.getOrLoad('generation', U1, G2)
  be.rows.set(row('generation', G2, U1), revoked(G2))
  cache.invalidateByTags([`folder:${G2}`])
  const joinedAfter = cache.getOrLoad('generation', U1, G2)
  await flush()
  t.equal(be.calls.length, 1, 'the later caller joined too (the load does not carry the tag yet)')
  be.calls[0].release()
  t.same((await early).get(G2), grant(G2))
  t.same(await joinedBefore, grant(G2), 'a caller that joined before the invalidation may take the answer')
  await be.drain()
  t.same(await joinedAfter, revoked(G2), 'a caller that joined after the invalidation reloads')
  t.equal(be.calls.length, 2)
  t.same(be.calls[1].ids, [G2])
  t.same(cachedGeneration(cache, G1, U1), grant(G1), 'the other id of the batch was stored')
})

test('batch fence: an `all` invalidation and close() during a batch store nothing', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { generation: { many: be.many } })
  for (const id of [G1, G2]) be.rows.set(row('generation', id, U1), grant(id))
  const early = cache.getOrLoadMany('generation', U1, [G1, G2])
  await flush()
  cache.clear()
  be.calls[0].release()
  await early
  t.equal(cache.getStats().totalEntries, 0, 'clear() fenced every id of the batch')
  const again = cache.getOrLoadMany('generation', U1, [G1, G2])
  await flush()
  cache.close()
  be.calls[1].release()
  await again
  t.equal(cache.getStats().totalEntries, 0, 'close() fenced every id of the batch')
})

test('a per-id failure in a batch is reported with the id that failed, not the first id of the batch', async (t) => {
  const observed: Array<{ kind: string, id: string, userId: string }> = []
  const cache = batchEngine(t, { generation: { many: () => new Map<string, unknown>([[G1, grant(G1)], [G2, { granted: 'yes' }], [G3, grant(G3)]]) } })
  cache.observer = { loaderFailed: (kind, id, userId) => observed.push({ kind, id, userId }) }
  t.equal((await rejection(cache.getOrLoadMany('generation', U1, [G1, G2, G3])))?.code, FAILED)
  t.equal(observed.length, 1, 'one failure reported')
  t.equal(observed[0]?.kind, 'generation')
  t.equal(observed[0]?.userId, U1)
  t.ok(observed[0]?.id.includes(G2), `the report names ${G2}, the id whose answer was bad (got ${observed[0]?.id})`)
  t.notOk(observed[0]?.id.startsWith(G1), 'not G1, whose answer was fine')
})

// -------------------------------------- 2. single and batch loads share loads

test('a batch joins a single load in flight: the shared id is not asked again', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { generation: { one: be.one, many: be.many } })
  for (const id of [G1, G2, G3]) be.rows.set(row('generation', id, U1), grant(id))
  const single = cache.getOrLoad('generation', U1, G2)
  await flush()
  const batch = cache.getOrLoadMany('generation', U1, [G1, G2, G3])
  await flush()
  t.same(be.calls.map((call) => [call.via, call.ids]), [['one', [G2]], ['many', [G1, G3]]], 'the batch asked only for the ids not in flight')
  t.equal(cache.getStats().coalesced, 1)
  await be.drain()
  t.same(await single, grant(G2))
  t.same([...(await batch).entries()], [[G1, grant(G1)], [G2, grant(G2)], [G3, grant(G3)]])
  t.equal(cache.getStats().loads, 3, 'one Load per id')
  t.equal(cache.getStats().batches, 1)
})

test('a single check joins the per-id load of a batch in flight', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { generation: { one: be.one, many: be.many } })
  for (const id of [G1, G2, G3]) be.rows.set(row('generation', id, U1), grant(id))
  const batch = cache.getOrLoadMany('generation', U1, [G1, G2, G3])
  await flush()
  const singles = [cache.getOrLoad('generation', U1, G2), cache.getOrLoad('generation', U1, G3), cache.getOrLoad('generation', U1, G2)]
  await flush()
  t.equal(be.calls.length, 1, 'no `one` call: the singles joined the batch')
  t.equal(cache.getStats().coalesced, 3)
  be.calls[0].release()
  t.same(await Promise.all(singles), [grant(G2), grant(G3), grant(G2)])
  await batch
  t.equal(be.calls.length, 1)
})

test('overlapping and repeated concurrent batches make one call per id', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { generation: { many: be.many } })
  const ids = Array.from({ length: 6 }, (_v, i) => `g${i}`)
  for (const id of ids) be.rows.set(row('generation', id, U1), grant(id))
  const first = cache.getOrLoadMany('generation', U1, ids.slice(0, 4))
  await flush()
  const same = Array.from({ length: 50 }, () => cache.getOrLoadMany('generation', U1, ids.slice(0, 4)))
  const overlapping = cache.getOrLoadMany('generation', U1, ids.slice(2))
  await flush()
  t.same(be.calls.map((call) => call.ids), [ids.slice(0, 4), ids.slice(4)], '50 identical batches joined; the overlap asked only for g4, g5')
  await be.drain()
  for (const result of [await first, ...(await Promise.all(same))]) t.same([...result.values()], ids.slice(0, 4).map((id) => grant(id)))
  t.same([...(await overlapping).values()], ids.slice(2).map((id) => grant(id)))
  const asked = be.calls.flatMap((call) => call.ids)
  t.equal(asked.length, new Set(asked).size, 'no id asked twice')
})

// -------------------------------------- 3. failures fail every id closed

const BATCH_FAILURES: Array<[string, () => unknown]> = [
  ['throws synchronously', () => { throw new Error('db down') }],
  ['rejects', async () => { throw new Error('db down') }],
  ['throws a non-Error', () => { throw 'db down' }], // eslint-disable-line no-throw-literal
  ['rejects with undefined', () => Promise.reject(undefined)], // eslint-disable-line prefer-promise-reject-errors
  ['throws an error carrying the timeout code', () => { throw Object.assign(new Error('fake'), { code: TIMEOUT, statusCode: 200 }) }],
  ['answers an array', () => [grant(G1), grant(G2)]],
  ['answers a string', () => 'granted'],
  ['answers undefined', () => undefined],
  ['answers null', () => null],
  ['answers a Set', () => new Set([G1, G2])],
  ['answers a function', () => () => grant(G1)],
  ['answers an object with a prototype', () => Object.create({ [G1]: grant(G1), [G2]: grant(G2) })],
  ['answers a class instance', () => new (class Answer { [G1] = grant(G1) })()],
  ['answers a Proxy whose getPrototypeOf throws', () => new Proxy({}, { getPrototypeOf () { throw new Error('trap') } })]
]

for (const [what, many] of BATCH_FAILURES) {
  test(`a batch resolver that ${what} fails every id with 503, caches nothing, and the next batch retries`, async (t) => {
    let calls = 0
    let healthy = false
    const cache = batchEngine(t, {
      generation: {
        many: ({ ids }: BatchResolverContext) => {
          calls++
          return healthy ? new Map(ids.map((id) => [id, grant(id)])) : many()
        }
      }
    })
    const error = await rejection(cache.getOrLoadMany('generation', U1, [G1, G2]))
    t.ok(error instanceof Error)
    t.equal(error?.code, FAILED)
    t.equal(error?.statusCode, 503)
    t.equal(cache.getStats().totalEntries, 0, 'nothing stored')
    t.equal(cachedGeneration(cache, G1, U1), undefined)
    t.equal(cachedGeneration(cache, G2, U1), undefined)
    t.equal(cache.getStats().loaderTimeouts, 0, 'a resolver cannot fake a timeout')
    healthy = true
    t.same([...(await cache.getOrLoadMany('generation', U1, [G1, G2])).values()], [grant(G1), grant(G2)])
    t.equal(calls, 2, 'the failure was not cached: the next batch asked again')
  })
}

test('a batch resolver slower than loaderTimeoutMs fails every id with 503 TIMEOUT, its signal is aborted, and its late answer is never stored', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { generation: { many: be.many } }, { loaderTimeoutMs: 20 })
  for (const id of [G1, G2]) be.rows.set(row('generation', id, U1), grant(id))
  const batch = rejection(cache.getOrLoadMany('generation', U1, [G1, G2]))
  const waiting = cache.getOrLoad('generation', U1, G1)
  const error = await batch
  t.equal(error?.code, TIMEOUT)
  t.equal(error?.statusCode, 503)
  t.equal((await rejection(waiting))?.code, TIMEOUT, 'a single check that joined the batch load times out with it')
  t.equal(be.calls.length, 1)
  t.equal(be.calls[0].signal.aborted, true, 'the signal passed to many is aborted')
  t.equal((be.calls[0].signal.reason as Failure).code, TIMEOUT)
  be.calls[0].release()
  await flush()
  t.equal(cache.getStats().totalEntries, 0, 'the late answer is not stored')
  t.equal(cachedGeneration(cache, G1, U1), undefined)
  t.equal(cache.getStats().loaderTimeouts, 1, 'one timeout: one call')

  // A call that rejects after its timeout: no unhandled rejection (it would crash the process), nothing stored.
  const second = rejection(cache.getOrLoadMany('generation', U1, [G3]))
  t.equal((await second)?.code, TIMEOUT)
  be.calls[1].fail(new Error('late failure'))
  await flush()
  t.equal(cache.getStats().totalEntries, 0)
  t.equal(cache.getStats().loaderErrors, 0, 'a failure after the timeout is not counted again')
})

test('a batch resolver that never answers fails every id with 503 TIMEOUT, and nothing is cached', async (t) => {
  let seen: AbortSignal | undefined
  const cache = batchEngine(t, { generation: { many: ({ signal }: BatchResolverContext) => { seen = signal; return new Promise<never>(() => {}) } } }, { loaderTimeoutMs: 15 })
  const results = await Promise.allSettled([cache.getOrLoadMany('generation', U1, [G1, G2, G3]), cache.getOrLoadMany('generation', U1, [G3])])
  for (const result of results) t.equal((result as PromiseRejectedResult).reason?.code, TIMEOUT)
  t.equal(seen?.aborted, true)
  t.equal(cache.getStats().totalEntries, 0)
})

for (const shape of ['synchronously', 'after an await'] as const) {
  test(`a batch resolver that blocks the event loop past the timeout and then answers grants (${shape}) fails with 503 TIMEOUT: the late grants are never used`, async (t) => {
    let seen: AbortSignal | undefined
    const answer = (ids: string[]): Map<string, Decision> => new Map(ids.map((id) => [id, grant(id)]))
    const many = shape === 'synchronously'
      ? ({ ids, signal }: BatchResolverContext) => { seen = signal; blockFor(60); return answer(ids) }
      : async ({ ids, signal }: BatchResolverContext) => { seen = signal; await Promise.resolve(); blockFor(60); return answer(ids) }
    const cache = batchEngine(t, { generation: { many } }, { loaderTimeoutMs: 20 })
    const error = await rejection(cache.getOrLoadMany('generation', U1, [G1, G2]))
    t.equal(error?.code, TIMEOUT)
    t.equal(error?.statusCode, 503)
    t.equal(seen?.aborted, true, 'the signal is aborted')
    t.equal(cache.getStats().totalEntries, 0, 'nothing stored')
    t.equal(cachedGeneration(cache, G1, U1), undefined)
  })
}

/** An app whose routes call `request.authz.decisions` and `filter` with the ids of the body. */
async function batchApp (t: Test, resolvers: AnyResolvers, extra: Record<string, unknown> = {}): Promise<{ app: FastifyInstance, headers: { authorization: string } }> {
  const { app, auth } = await buildApp(t, { resolvers: resolvers as Record<string, ResolverSpec>, ...extra }, (app) => {
    app.post('/decisions', async (request) => {
      const { kind, ids } = request.body as { kind: AuthzKind, ids: string[] }
      return { decisions: Object.fromEntries(await request.authz.decisions(kind, ids)) }
    })
    app.post('/filter', async (request) => {
      const { kind, ids, requirement } = request.body as { kind: AuthzKind, ids: string[], requirement?: { access?: string, role?: string } }
      return { ids: await request.authz.filter(kind, ids, requirement) }
    })
  })
  return { app, headers: auth(U1) }
}

test('over HTTP, a failing or timed-out batch answers 503 on decisions and filter, never 200 with data', async (t) => {
  const cases: Array<[string, unknown, string]> = [
    ['rejects', { many: async () => { throw new Error('db down') } }, FAILED],
    ['answers an array', { many: async () => [grant(G1)] }, FAILED],
    ['never answers', { many: () => new Promise<never>(() => {}) }, TIMEOUT],
    ['blocks and then grants', { many: ({ ids }: BatchResolverContext) => { blockFor(60); return Object.fromEntries(ids.map((id) => [id, grant(id)])) } }, TIMEOUT],
    ['one id not a Decision', { many: async () => ({ [G1]: grant(G1), [G2]: { granted: 'yes' } }) }, FAILED],
    ['fans out to a failing one', async ({ id }: ResolverContext) => { if (id === G2) throw new Error('db down'); return grant(id) }, FAILED]
  ]
  for (const [what, generation, code] of cases) {
    // Only the timeout cases get a short timeout: a slow machine must not turn a failure into a timeout.
    const { app, headers } = await batchApp(t, { generation }, { loaderTimeoutMs: code === TIMEOUT ? 20 : 60_000 })
    for (const url of ['/decisions', '/filter']) {
      const res = await app.inject({ method: 'POST', url, headers, payload: { kind: 'generation', ids: [G1, G2] } })
      t.equal(res.statusCode, 503, `${what} ${url}`)
      const body = res.json()
      t.equal(body.code, code, `${what} ${url}`)
      t.notOk('ids' in body || 'decisions' in body, 'no data in the body')
    }
    t.equal(app.authz.getStats().totalEntries, what === 'one id not a Decision' || what === 'fans out to a failing one' ? 1 : 0, `${what}: only ids answered with a Decision are stored`)
  }
})

// ---------------------------------------------- 4. answers, missing ids, hostile answers

test('ids missing from the batch answer, null and undefined are denials cached with the negative TTL', async (t) => {
  for (const container of ['Map', 'object', 'null-prototype object'] as const) {
    const clock = fakeClock()
    const make = (entries: Array<[string, Decision | null | undefined]>): unknown => {
      if (container === 'Map') return new Map(entries)
      const out: Record<string, unknown> = container === 'object' ? {} : Object.create(null)
      for (const [id, value] of entries) out[id] = value
      return out
    }
    let calls = 0
    const cache = batchEngine(t, { generation: { many: () => { calls++; return make([[G1, grant(G1)], [G2, null], [G3, undefined]]) } } }, { now: clock.now, authTtlSeconds: 600, negativeTtlSeconds: 30 })
    const result = await cache.getOrLoadMany('generation', U1, [G1, G2, G3, 'missing'])
    t.same([...result.entries()], [[G1, grant(G1)], [G2, { granted: false }], [G3, { granted: false }], ['missing', { granted: false }]], container)
    for (const value of result.values()) t.ok(Object.isFrozen(value), 'every caller gets a frozen decision')
    clock.tick(29_999)
    for (const id of [G2, G3, 'missing']) t.same(cachedGeneration(cache, id, U1), { granted: false }, `${container}: the denial is cached`)
    clock.tick(2)
    for (const id of [G2, G3, 'missing']) t.equal(cachedGeneration(cache, id, U1), undefined, `${container}: the denial expired after negativeTtlSeconds`)
    t.same(cachedGeneration(cache, G1, U1), grant(G1), `${container}: the grant lives authTtlSeconds`)
    t.equal(calls, 1)
  }
})

test('a batch answer cannot plant decisions for ids (or users) it was not asked about', async (t) => {
  const cache = batchEngine(t, { generation: { many: () => new Map([[G1, grant(G1)], [G2, grant(G2)], [G3, grant(G3)]]) } })
  const result = await cache.getOrLoadMany('generation', U1, [G1])
  t.same([...result.keys()], [G1])
  t.equal(cachedGeneration(cache, G2, U1), undefined, 'G2 was not asked: not stored')
  t.equal(cachedGeneration(cache, G3, U1), undefined)
  t.equal(cachedGeneration(cache, G1, U2), undefined)
  t.equal(cache.getStats().totalEntries, 1)
})

test('prototype names as ids are denials from a plain-object answer, never values found on Object.prototype', async (t) => {
  const names = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__', 'toLocaleString']
  for (const container of ['{}', 'Object.create(null)', 'JSON.parse', 'Map'] as const) {
    const cache = batchEngine(t, {
      generation: {
        many: () => container === '{}' ? {} : container === 'Object.create(null)' ? Object.create(null) : container === 'JSON.parse' ? JSON.parse('{}') : new Map()
      }
    })
    const result = await cache.getOrLoadMany('generation', U1, names)
    for (const name of names) t.same(result.get(name), { granted: false }, `${container} ${name}`)
  }
  // An answer that does hold those ids as own properties grants exactly them.
  const cache = batchEngine(t, { generation: { many: () => JSON.parse('{"__proto__":{"granted":true,"id":"__proto__"},"constructor":{"granted":true,"id":"constructor"}}') } })
  const result = await cache.getOrLoadMany('generation', U1, ['__proto__', 'constructor', 'toString'])
  t.same([...result.entries()], [['__proto__', { granted: true, id: '__proto__' }], ['constructor', { granted: true, id: 'constructor' }], ['toString', { granted: false }]])
})

test('a polluted Object.prototype cannot grant an id the batch answer left out', async (t) => {
  const polluted = 'polluted-id'
  const proto = Object.prototype as Record<string, unknown>
  const cache = batchEngine(t, { generation: { many: () => ({ [G1]: grant(G1) }) } })
  proto[polluted] = { granted: true, access: ['read', 'write'] }
  try {
    const result = await cache.getOrLoadMany('generation', U1, [G1, polluted])
    t.same(result.get(polluted), { granted: false }, 'the inherited value is not the answer')
    t.same(result.get(G1), grant(G1))
  } finally {
    delete proto[polluted]
  }
  t.same(cachedGeneration(cache, polluted, U1), { granted: false })
})

test('a Map subclass whose get throws fails the ids it throws for (503) and stores the others', async (t) => {
  class Hostile extends Map<string, unknown> {
    override get (key: string): unknown {
      if (key === G2) throw new Error('get trap')
      return super.get(key)
    }
  }
  const cache = batchEngine(t, { generation: { many: () => new Hostile([[G1, grant(G1)], [G2, grant(G2)], [G3, grant(G3)]]) } })
  const error = await rejection(cache.getOrLoadMany('generation', U1, [G1, G2, G3]))
  t.equal(error?.code, FAILED)
  t.equal(error?.statusCode, 503)
  t.same(cachedGeneration(cache, G1, U1), grant(G1))
  t.equal(cachedGeneration(cache, G2, U1), undefined, 'the id whose read threw is not cached')
  t.same(cachedGeneration(cache, G3, U1), grant(G3))

  class AlwaysThrows extends Map<string, unknown> {
    override get (): unknown { throw new Error('get trap') }
  }
  const all = batchEngine(t, { generation: { many: () => new AlwaysThrows([[G1, grant(G1)]]) } })
  t.equal((await rejection(all.getOrLoadMany('generation', U1, [G1, G2])))?.code, FAILED)
  t.equal(all.getStats().totalEntries, 0)
})

test('a Proxy answer never grants what its target does not own', async (t) => {
  const everything = (target: object): object => new Proxy(target, { get: (_target, key) => typeof key === 'string' ? { granted: true, key } : undefined })
  const proxies: Array<[string, () => unknown, 'denied' | 'failed']> = [
    ['a get trap granting every key over an empty object', () => everything({}), 'denied'],
    ['a get trap granting every key over a null-prototype object', () => everything(Object.create(null)), 'denied'],
    ['a Proxy of a Map', () => new Proxy(new Map([[G1, grant(G1)]]), {}), 'failed'],
    ['a getOwnPropertyDescriptor trap that throws', () => new Proxy({ [G1]: grant(G1) }, { getOwnPropertyDescriptor () { throw new Error('trap') } }), 'failed'],
    ['a get trap that throws', () => new Proxy({ [G1]: grant(G1) }, { get () { throw new Error('trap') } }), 'failed']
  ]
  for (const [what, many, outcome] of proxies) {
    const cache = batchEngine(t, { generation: { many } })
    const settled = await Promise.allSettled([cache.getOrLoadMany('generation', U1, [G1, G2])])
    const result = settled[0]
    if (outcome === 'denied') {
      t.equal(result.status, 'fulfilled', what)
      const value = (result as PromiseFulfilledResult<Map<string, Decision>>).value
      t.same([...value.values()], [{ granted: false }, { granted: false }], what)
    } else {
      t.equal(result.status, 'rejected', what)
      t.equal((result as PromiseRejectedResult).reason.code, FAILED, what)
      t.equal(cache.getStats().totalEntries, 0, `${what}: nothing stored`)
    }
  }
})

test('one id answered with something that is not a Decision fails that id (503), the other ids are stored, and only it is asked again', async (t) => {
  const bad: Array<[string, unknown]> = [
    ['a string', 'yes'],
    ['granted as a string', { granted: 'true' }],
    ['access not an array', { granted: true, access: 'read' }],
    ['a BigInt', { granted: true, n: 1n }],
    ['an array', [grant(G2)]],
    ['a Map', new Map([['granted', true]])],
    ['a getter that throws', { get granted (): boolean { throw new Error('getter') } }],
    ['a negative ttlSeconds', { granted: true, ttlSeconds: -1 }]
  ]
  for (const [what, value] of bad) {
    const calls: string[][] = []
    const cache = batchEngine(t, {
      generation: {
        many: ({ ids }: BatchResolverContext) => {
          calls.push(ids)
          return new Map<string, unknown>(ids.map((id) => [id, id === G2 && calls.length === 1 ? value : grant(id)]))
        }
      }
    })
    const error = await rejection(cache.getOrLoadMany('generation', U1, [G1, G2, G3]))
    t.equal(error?.code, FAILED, what)
    t.equal(error?.statusCode, 503)
    t.same(cachedGeneration(cache, G1, U1), grant(G1), `${what}: G1 stored`)
    t.equal(cachedGeneration(cache, G2, U1), undefined, `${what}: G2 not stored`)
    t.same(cachedGeneration(cache, G3, U1), grant(G3), `${what}: G3 stored`)
    t.same([...(await cache.getOrLoadMany('generation', U1, [G1, G2, G3])).values()], [grant(G1), grant(G2), grant(G3)])
    t.same(calls, [[G1, G2, G3], [G2]], `${what}: only the failed id is asked again`)
  }
})

test('property: a batch never grants an id its answer did not grant for exactly that id', async (t) => {
  const idArb = fc.oneof(
    fc.string({ minLength: 1, maxLength: 12 }),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }),
    fc.constantFrom('constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'size', 'get', 'has', 'length', '0', ':', '*', '%', '%3A', 'a:b', 'a*', 'user:x', 'A', 'a')
  )
  const choice = fc.constantFrom('grant', 'deny', 'null', 'undefined', 'absent', 'garbage')
  const container = fc.constantFrom('Map', 'own properties', 'null prototype', 'assignment', 'JSON.parse')
  await fc.assert(fc.asyncProperty(
    fc.uniqueArray(fc.tuple(idArb, choice), { minLength: 1, maxLength: 10, selector: ([id]) => id }),
    fc.array(idArb, { maxLength: 4 }),
    container,
    fc.array(fc.nat({ max: 9 }), { maxLength: 4 }),
    async (plan, decoys, shape, repeats) => {
      const ids = plan.map(([id]) => id)
      const intended = new Map(plan)
      const value = (id: string, what: string): unknown => what === 'grant'
        ? { granted: true, for: id }
        : what === 'deny' ? { granted: false, for: id } : what === 'null' ? null : what === 'undefined' ? undefined : { granted: 'maybe' }
      const entries: Array<[string, unknown]> = []
      for (const [id, what] of plan) if (what !== 'absent') entries.push([id, value(id, what)])
      for (const decoy of decoys) if (!intended.has(decoy)) entries.push([decoy, { granted: true, for: decoy, decoy: true }])
      const build = (): unknown => {
        switch (shape) {
          case 'Map': return new Map(entries)
          case 'JSON.parse': return JSON.parse(JSON.stringify(Object.fromEntries(entries.map(([id, v]) => [id, v === undefined ? null : v])), (_k, v: unknown) => v))
          case 'assignment': {
            const out: Record<string, unknown> = {}
            for (const [id, v] of entries) out[id] = v
            return out
          }
          default: {
            const out = shape === 'null prototype' ? Object.create(null) : {}
            for (const [id, v] of entries) Object.defineProperty(out, id, { value: v, enumerable: true, configurable: true, writable: true })
            return out
          }
        }
      }
      const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: { many: build } } as AnyResolvers as Record<string, ResolverSpec> })
      try {
        const asked = [...ids]
        for (const r of repeats) asked.push(ids[r % ids.length])
        const settled = (await Promise.allSettled([cache.getOrLoadMany('generation', U1, asked)]))[0]
        const check = (id: string, decision: Decision | undefined, where: string): void => {
          if (decision?.granted !== true) return
          if (intended.get(id) !== 'grant' || decision.for !== id || decision.decoy !== undefined) {
            throw new Error(`${where}: ${JSON.stringify(id)} granted ${JSON.stringify(decision)} but the answer said ${intended.get(id)} (shape ${shape})`)
          }
        }
        if (settled.status === 'fulfilled') {
          const result = settled.value
          if (JSON.stringify([...result.keys()]) !== JSON.stringify(ids)) throw new Error(`keys ${JSON.stringify([...result.keys()])}, expected ${JSON.stringify(ids)}`)
          for (const id of ids) check(id, result.get(id), 'result')
          if (shape === 'Map' || shape === 'own properties' || shape === 'null prototype') {
            for (const id of ids) {
              const expected = ['grant', 'deny'].includes(intended.get(id) as string)
              if (expected && result.get(id)?.for !== id) throw new Error(`${JSON.stringify(id)} answered ${JSON.stringify(result.get(id))}`)
            }
          }
        } else if ((settled.reason as Failure).code !== FAILED) {
          throw new Error(`rejected with ${String((settled.reason as Failure).code)}`)
        }
        for (const id of [...ids, ...decoys]) check(id, cachedGeneration(cache, id, U1), 'cached')
        for (const decoy of decoys) if (!intended.has(decoy) && cachedGeneration(cache, decoy, U1) !== undefined) throw new Error(`decoy ${JSON.stringify(decoy)} was stored`)
        for (const [id, what] of plan) if (what === 'garbage' && cachedGeneration(cache, id, U1) !== undefined) throw new Error(`garbage for ${JSON.stringify(id)} was stored`)
      } finally {
        cache.close()
      }
    }
  ), { numRuns: 300 })
  t.pass('300 runs')
})

// ---------------------------------------------------------------- 5. chunking

test('250 misses with maxBatchSize 100 make 3 calls of at most 100 ids, each id once, each call one user', async (t) => {
  const calls: BatchResolverContext[] = []
  const cache = batchEngine(t, {
    generation: {
      many: async (ctx: BatchResolverContext) => {
        calls.push({ ...ctx, ids: [...ctx.ids] })
        return new Map(ctx.ids.map((id) => [id, grant(id, 1, { user: ctx.userId })]))
      }
    }
  }, { maxBatchSize: 100 })
  const ids = Array.from({ length: 250 }, (_v, i) => `g${i}`)
  const withRepeats = [...ids, ...ids.slice(0, 40).reverse(), ids[7], ids[7]]
  const [mine, theirs] = await Promise.all([cache.getOrLoadMany('generation', U1, withRepeats), cache.getOrLoadMany('generation', U2, ids.slice(0, 120))])
  t.same([...mine.keys()], ids, 'a repeated id once, in the order of its first occurrence')
  t.equal(theirs.size, 120)
  const u1Calls = calls.filter((call) => call.userId === U1)
  t.same(u1Calls.map((call) => call.ids.length), [100, 100, 50])
  t.same(calls.filter((call) => call.userId === U2).map((call) => call.ids.length), [100, 20])
  const asked = u1Calls.flatMap((call) => call.ids)
  t.equal(asked.length, 250)
  t.equal(new Set(asked).size, 250, 'each id asked once')
  for (const [id, decision] of mine) t.equal(decision.user, U1, `${id}: answered for U1`)
  for (const [, decision] of theirs) t.equal(decision.user, U2, 'answered for U2')
  t.equal(cache.getStats().batches, 5)
  t.equal(cache.getStats().loads, 370, 'one Load per (id, user)')

  // Hits are served from the cache; only the misses are asked, still in chunks.
  calls.length = 0
  const more = Array.from({ length: 150 }, (_v, i) => `g${200 + i}`)
  const mixed = await cache.getOrLoadMany('generation', U1, more)
  t.same([...mixed.keys()], more, 'hits and misses in input order')
  t.same(calls.map((call) => call.ids.length), [100], '50 hits, 100 misses: one call')
  t.same(calls[0].ids, more.slice(50))
})

test('maxBatchSize 1 makes one call per id', async (t) => {
  const calls: string[][] = []
  const cache = batchEngine(t, { generation: { many: ({ ids }: BatchResolverContext) => { calls.push(ids); return {} } } }, { maxBatchSize: 1 })
  await cache.getOrLoadMany('generation', U1, [G1, G2, G3])
  t.same(calls, [[G1], [G2], [G3]])
})

// ------------------------------------------------ 6. kinds with only one / many

test('a kind with only `one`: a batch fans out, at most 8 calls at a time, every id once', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { project: { one: be.one } })
  const ids = Array.from({ length: 20 }, (_v, i) => `p${i}`)
  for (const id of ids) be.rows.set(row('project', id, U1), grant(id))
  const batch = cache.getOrLoadMany('project', U1, ids)
  let maxActive = 0
  for (let round = 0; round < 40; round++) {
    await flush()
    const open = be.pending()
    if (open.length === 0) break
    maxActive = Math.max(maxActive, open.length)
    // Release one call at a time (the newest first): a freed slot starts one more.
    open[open.length - 1]?.release()
  }
  await be.drain()
  t.equal(maxActive, 8, 'never more than FAN_OUT_CONCURRENCY calls at once, and it uses them')
  t.same([...(await batch).values()], ids.map((id) => grant(id)))
  t.equal(be.calls.length, 20)
  t.ok(be.calls.every((call) => call.via === 'one' && call.ids.length === 1 && call.userId === U1))
  t.equal(new Set(be.calls.map((call) => call.ids[0])).size, 20)
})

test('a kind with only `one`: one failure rejects the batch, and no further call is started', async (t) => {
  const be = heldBackend()
  const cache = batchEngine(t, { project: { one: be.one } })
  const ids = Array.from({ length: 20 }, (_v, i) => `p${i}`)
  for (const id of ids) be.rows.set(row('project', id, U1), grant(id))
  const batch = rejection(cache.getOrLoadMany('project', U1, ids))
  await flush()
  t.equal(be.pending().length, 8)
  be.calls[3].fail(new Error('db down'))
  const error = await batch
  t.equal(error?.code, FAILED)
  t.equal(error?.statusCode, 503)
  await be.drain()
  t.equal(be.calls.length, 8, 'after the failure, no new id was asked')
  t.equal(cache.getProjectAccess('p3', U1).hit, false, 'the failed id is not cached')
  t.equal(cache.getStats().totalEntries, 7, 'the calls already running stored their answers')
})

test('a kind with only `many`: single checks go through many with ids [id]', async (t) => {
  const calls: BatchResolverContext[] = []
  const cache = batchEngine(t, {
    document: {
      many: (ctx: BatchResolverContext) => {
        calls.push(ctx)
        return ctx.ids[0] === 'absent' ? new Map() : ctx.ids[0] === 'object' ? { object: grant('object') } : new Map([[ctx.ids[0], grant(ctx.ids[0])]])
      }
    }
  })
  t.same(await cache.getOrLoad('document', U1, G1), grant(G1))
  t.same(await cache.getOrLoad('document', U1, 'object'), grant('object'))
  t.same(await cache.getOrLoad('document', U1, 'absent'), { granted: false }, 'an id the answer leaves out is a denial')
  t.same(calls.map((call) => [call.kind, call.userId, call.ids]), [['document', U1, [G1]], ['document', U1, ['object']], ['document', U1, ['absent']]])
  t.ok(calls.every((call) => call.signal instanceof AbortSignal))
  const fresh = await cache.getOrLoad('document', U1, G1, { fresh: true })
  t.same(fresh, grant(G1))
  t.equal(calls.length, 4, 'fresh goes through many too')

  const hostile = batchEngine(t, { document: { many: () => [grant(G1)] } })
  t.equal((await rejection(hostile.getOrLoad('document', U1, '0')))?.code, FAILED, 'an array answer fails a single check too')
  const inherited = batchEngine(t, { document: { many: () => ({}) } })
  t.same(await inherited.getOrLoad('document', U1, 'constructor'), { granted: false }, 'a single check is not answered from Object.prototype')
})

test('over HTTP, a kind with only `many` serves request.authz single checks and route checks', async (t) => {
  const calls: string[][] = []
  const { app, auth } = await buildApp(t, {
    resolvers: { document: { many: ({ ids }: BatchResolverContext) => { calls.push(ids); return { [G1]: grant(G1) } } } }
  }, (app) => {
    app.get('/documents/:documentId', { config: { authz: { document: 'documentId', access: 'read' } } }, async () => ({ ok: true }))
    app.get('/can/:id', async (request) => ({ can: await request.authz.can('document', (request.params as { id: string }).id, { access: 'read' }) }))
  })
  t.equal((await app.inject({ url: `/documents/${G1}`, headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ url: `/documents/${G2}`, headers: auth(U1) })).statusCode, 403)
  t.same((await app.inject({ url: `/can/${G2}`, headers: auth(U1) })).json(), { can: false })
  t.same(calls, [[G1], [G2]], 'the second check of G2 was a hit')
})

// ------------------------------------------------------------- 7. bad input

test('bad ids fail with 400 FST_AUTHZ_BAD_ID naming the field, before anything is looked up or loaded', async (t) => {
  let calls = 0
  const cache = batchEngine(t, { generation: { many: () => { calls++; return {} } }, project: () => { calls++; return null } }, { maxIdLength: 64 })
  await cache.getOrLoadMany('generation', U1, [G1])
  calls = 0
  const bad: Array<[string, unknown, RegExp]> = [
    ['ids not an array (a string)', G1, /generation ids/],
    ['ids not an array (an object)', { 0: G1, length: 1 }, /generation ids/],
    ['ids undefined', undefined, /generation ids/],
    ['an empty-string id', [G2, '', G3], /generation id/],
    ['an over-long id', [G2, 'x'.repeat(65), G3], /generation id.*longer than 64/],
    ['a number id', [G2, 42], /generation id/],
    ['a null id', [G2, null], /generation id/],
    ['a hole in the array', [G2, , G3], /generation id/], // eslint-disable-line no-sparse-arrays
    ['an object id', [G2, { toString: () => G3 }], /generation id/]
  ]
  for (const [what, ids, message] of bad) {
    const before = counters(cache.getStats())
    const error = await rejection(cache.getOrLoadMany('generation', U1, ids as string[]))
    t.equal(error?.code, BAD_ID, what)
    t.equal(error?.statusCode, 400, what)
    t.match(error?.message, message, `${what}: the message names the field`)
    t.same(counters(cache.getStats()), before, `${what}: nothing looked up or loaded`)
  }
  for (const userId of ['', 'u'.repeat(65), undefined, 7]) {
    const before = counters(cache.getStats())
    const error = await rejection(cache.getOrLoadMany('generation', userId as string, [G1, G2]))
    t.equal(error?.code, BAD_ID)
    t.match(error?.message, /userId/)
    t.same(counters(cache.getStats()), before, 'a bad user id: nothing looked up or loaded')
  }
  t.equal((await rejection(cache.getOrLoadMany('project', U1, [G1, ''])))?.code, BAD_ID, 'fan-out kinds check ids first too')
  t.equal((await rejection(cache.getOrLoadMany('nope', U1, [G1])))?.code, 'FST_AUTHZ_UNKNOWN_KIND')
  t.equal(calls, 0, 'no resolver was called')
})

test('ids are read once: an array whose items change between reads cannot slip an unchecked id past validation', async (t) => {
  const asked: unknown[] = []
  const cache = batchEngine(t, { generation: { many: ({ ids }: BatchResolverContext) => { asked.push(...ids); return {} } } }, { maxIdLength: 64 })
  const shifty: string[] = [G1, G2]
  let reads = 0
  // Valid on the first read of index 1, then an over-long id.
  Object.defineProperty(shifty, 1, { get: () => reads++ === 0 ? G2 : 'x'.repeat(10_000), enumerable: true })
  const settled = (await Promise.allSettled([cache.getOrLoadMany('generation', U1, shifty)]))[0]
  const seen = settled.status === 'fulfilled' ? [...settled.value.keys()] : []
  for (const id of [...asked, ...seen]) t.ok(typeof id === 'string' && id.length > 0 && id.length <= 64, `no unchecked id reached the resolver or the result (got ${typeof id === 'string' ? `${id.length} chars` : typeof id})`)
  t.ok(cache.keys().every((key) => key.length < 200), 'no unchecked id was stored')
})

test('over HTTP, decisions and filter with a bad id answer 400 and load nothing', async (t) => {
  let calls = 0
  const { app, headers } = await batchApp(t, { generation: { many: () => { calls++; return {} } } }, { maxIdLength: 64 })
  for (const url of ['/decisions', '/filter']) {
    for (const ids of [[G1, ''], [G1, 'x'.repeat(65)], G1, [G1, 5]]) {
      const res = await app.inject({ method: 'POST', url, headers, payload: { kind: 'generation', ids } })
      t.equal(res.statusCode, 400, `${url} ${JSON.stringify(ids).slice(0, 40)}`)
      t.equal(res.json().code, BAD_ID)
      t.match(res.json().message, /generation id/)
    }
  }
  t.equal(calls, 0)
  t.equal(app.authz.getStats().misses, 0, 'nothing looked up')
  const anonymous = await app.inject({ method: 'POST', url: '/filter', payload: { kind: 'generation', ids: [G1] } })
  t.equal(anonymous.statusCode, 401, 'no token: 401 before anything else')
})

test('bad resolver objects and maxBatchSize fail with FST_AUTHZ_OPTIONS naming the option', async (t) => {
  const fn = (): null => null
  const bad: Array<[string, Record<string, unknown>, string]> = [
    ['one not a function', { resolvers: { generation: { one: 1 } } }, 'resolvers.generation.one'],
    ['many not a function', { resolvers: { generation: { many: 'x' } } }, 'resolvers.generation.many'],
    ['many null', { resolvers: { generation: { one: fn, many: null } } }, 'resolvers.generation.many'],
    ['an empty object', { resolvers: { generation: {} } }, 'resolvers.generation'],
    ['both undefined', { resolvers: { generation: { one: undefined, many: undefined } } }, 'resolvers.generation'],
    ['an unknown field', { resolvers: { generation: { many: fn, extra: fn } } }, 'resolvers.generation.extra'],
    ['a class instance', { resolvers: { generation: new (class { one = fn })() } }, 'resolvers.generation'],
    ['an array', { resolvers: { generation: [fn] } }, 'resolvers.generation'],
    ['null', { resolvers: { generation: null } }, 'resolvers.generation'],
    ['a custom kind', { resolvers: { document: { one: fn, many: 2 } } }, 'resolvers.document.many'],
    ['maxBatchSize 0', { maxBatchSize: 0 }, 'maxBatchSize'],
    ['maxBatchSize negative', { maxBatchSize: -1 }, 'maxBatchSize'],
    ['maxBatchSize fractional', { maxBatchSize: 1.5 }, 'maxBatchSize'],
    ['maxBatchSize a string', { maxBatchSize: '100' }, 'maxBatchSize'],
    ['maxBatchSize NaN', { maxBatchSize: Number.NaN }, 'maxBatchSize'],
    ['maxBatchSize Infinity', { maxBatchSize: Infinity }, 'maxBatchSize']
  ]
  for (const [what, options, name] of bad) {
    let error: Failure | undefined
    try {
      new AuthzCache({ cleanupIntervalSeconds: 0, ...options } as CacheOptions).close()
    } catch (e) {
      error = e as Failure
    }
    t.equal(error?.code, 'FST_AUTHZ_OPTIONS', `engine: ${what}`)
    t.ok(error?.message.includes(name), `engine: ${what}: the message names ${name} (${error?.message})`)

    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await app.register(fastifyJwt, { secret: SECRET })
    app.register(authzCache, { cleanupIntervalSeconds: 0, resolvers: { generation: fn }, ...options } as Record<string, unknown>)
    const boot = await rejection(Promise.resolve(app.ready()))
    t.equal(boot?.code, 'FST_AUTHZ_OPTIONS', `plugin: ${what}`)
    t.ok(boot?.message.includes(name), `plugin: ${what}: the message names ${name}`)
  }
  const ok = new AuthzCache({ cleanupIntervalSeconds: 0, maxBatchSize: 1, resolvers: { generation: { one: fn }, project: { many: () => ({}) }, team: { one: fn, many: () => ({}) } } })
  t.same(ok.kinds.sort(), ['generation', 'project', 'team'])
  ok.close()
})

// --------------------------------------------------------------- 8. filter

test('filter keeps order and repeats, applies access and role, and an unknown role fails before anything loads', async (t) => {
  let calls = 0
  const generation = { many: ({ ids }: BatchResolverContext) => { calls++; return Object.fromEntries(ids.map((id) => [id, id === 'r' ? { granted: true, access: ['read'] } : id === 'w' ? { granted: true, access: ['write'] } : id === 'all' ? { granted: true } : { granted: false, access: ['read'] }])) } }
  const roles: Record<string, Decision> = { v: { granted: true, role: 'viewer' }, m: { granted: true, role: 'member' }, a: { granted: true, role: 'admin' }, o: { granted: true, role: 'owner' }, x: { granted: false, role: 'owner' }, n: { granted: true } }
  const team = { many: ({ ids }: BatchResolverContext) => { calls++; return new Map(ids.map((id) => [id, roles[id]])) } }
  const { app, headers } = await batchApp(t, { generation, team })
  const filter = async (kind: string, ids: string[], requirement?: Record<string, unknown>): Promise<{ statusCode: number, body: { ids?: string[], code?: string } }> => {
    const res = await app.inject({ method: 'POST', url: '/filter', headers, payload: { kind, ids, requirement } })
    return { statusCode: res.statusCode, body: res.json() }
  }
  const ids = ['w', 'r', 'd', 'r', 'all', 'missing', 'w', 'r']
  t.same((await filter('generation', ids, { access: 'read' })).body.ids, ['r', 'r', 'all', 'r'], 'read: order and repeats kept; a denial with access read is still denied')
  t.same((await filter('generation', ids, { access: 'write' })).body.ids, ['w', 'all', 'w'])
  t.same((await filter('generation', ids, {})).body.ids, ['w', 'r', 'r', 'all', 'w', 'r'], 'no requirement: every grant')
  t.same((await filter('generation', ids)).body.ids, ['w', 'r', 'r', 'all', 'w', 'r'])
  t.same((await filter('generation', [], { access: 'read' })).body.ids, [])
  t.equal(calls, 1, 'one batch call; the later filters were hits')
  const teams = ['o', 'v', 'a', 'x', 'm', 'n', 'o']
  t.same((await filter('team', teams, { role: 'admin' })).body.ids, ['o', 'a', 'o'], 'admin: at or above admin; a denied owner is not kept; no role is not kept')
  t.same((await filter('team', teams, { role: 'viewer' })).body.ids, ['o', 'v', 'a', 'm', 'o'])
  t.same((await filter('team', teams, { role: 'owner', access: 'read' })).body.ids, ['o', 'o'])
  calls = 0
  const unknown = await filter('team', ['z1', 'z2'], { role: 'superuser' })
  t.equal(unknown.statusCode, 500)
  t.equal(unknown.body.code, 'FST_AUTHZ_ROUTE_CONFIG')
  t.equal(calls, 0, 'the unknown role failed before anything was loaded')
  t.equal(app.authz.getTeamRole('z1', U1).hit, false)
  const notObject = await filter('team', ['o'], 'admin' as unknown as Record<string, unknown>)
  t.equal(notObject.body.code, 'FST_AUTHZ_ROUTE_CONFIG', 'a requirement that is not an object is an error')
  const decisions = await app.inject({ method: 'POST', url: '/decisions', headers, payload: { kind: 'generation', ids: ['r', 'r', 'nope'] } })
  t.same(decisions.json(), { decisions: { r: { granted: true, access: ['read'] }, nope: { granted: false, access: ['read'] } } })
})

// ------------------------------------------------- 9. randomized interleavings

const SIM_KINDS = ['generation', 'document', 'project'] as const
type SimKind = typeof SIM_KINDS[number]
const SIM_IDS = ['a', 'b', 'c']
const SIM_USERS = ['u1', 'u2']
const keySegment: Record<SimKind, string> = { generation: 'gen', document: 'document', project: 'project' }

/** What the fake backend answers for a row at version `v`: revoking bumps the version and flips `granted`. */
function versioned (kind: SimKind, id: string, userId: string, v: number): Decision {
  return { granted: v % 2 === 1, access: [`v${v}`], v, tags: [`pair:${kind}:${id}:${userId}`] }
}

/**
 * One trial: random single checks, batch checks, revocations (each followed
 * by an invalidation of one of seven shapes) and releases of held resolver
 * calls. Answers the broken invariants, each with the seed and the tail of
 * the trial's log.
 */
async function interleaving (seed: number): Promise<string[]> {
  const rand = seededRandom(seed)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)]
  const clock = fakeClock()
  const warming = rand() < 0.5
  const log: string[] = [`seed=${seed} warming=${warming}`]
  const failures: string[] = []
  const fail = (what: string): void => { failures.push(`seed=${seed}: ${what}\n  ${log.slice(-40).join('\n  ')}`) }

  const version = new Map<string, number>()
  /** Per key: the version of the newest revocation whose invalidation has returned. */
  const required = new Map<string, number>()
  const vOf = (kind: string, id: string, u: string): number => version.get(row(kind, id, u)) ?? 1

  interface SimCall { label: string, kind: SimKind, userId: string, ids: string[], read: Map<string, number> | undefined, settled: boolean, d: Deferred<unknown>, via: 'one' | 'many' }
  const calls: SimCall[] = []
  let callNo = 0
  const hold = (via: 'one' | 'many', kind: SimKind, userId: string, ids: string[]): Promise<unknown> => {
    // Mostly the rows as the query saw them when it ran; sometimes as they are when it answers.
    const early = rand() < 0.8
    const read = early ? new Map(ids.map((id) => [id, vOf(kind, id, userId)])) : undefined
    const call: SimCall = { label: `c${callNo++}`, kind, userId, ids: [...ids], read, settled: false, d: deferred<unknown>(), via }
    calls.push(call)
    log.push(`${call.label} ${via} ${kind} ${userId} [${ids.join(',')}] ${early ? `read ${JSON.stringify([...(read as Map<string, number>)])}` : 'reads at release'}`)
    return call.d.promise
  }
  const release = (call: SimCall, ok: boolean): void => {
    call.settled = true
    if (!ok) {
      log.push(`${call.label} fails`)
      call.d.reject(new Error('backend down'))
      return
    }
    const answers = call.ids.map((id): [string, Decision] => [id, versioned(call.kind, id, call.userId, call.read?.get(id) ?? vOf(call.kind, id, call.userId))])
    log.push(`${call.label} answers ${JSON.stringify(answers.map(([id, d]) => `${id}:v${d.v as number}`))}`)
    if (call.via === 'one') call.d.resolve(answers[0][1])
    else call.d.resolve(rand() < 0.5 ? new Map(answers) : Object.fromEntries(answers))
  }
  const one = (kind: SimKind) => (ctx: ResolverContext) => hold('one', kind, ctx.userId, [ctx.id])
  const many = (kind: SimKind) => (ctx: BatchResolverContext) => hold('many', kind, ctx.userId, ctx.ids)
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    now: clock.now,
    random: rand,
    warmingEnabled: warming,
    loaderTimeoutMs: 600_000,
    maxBatchSize: 1 + Math.floor(rand() * 3),
    resolvers: {
      generation: { one: one('generation'), many: many('generation') },
      document: { many: many('document') },
      project: one('project')
    } as Record<string, unknown> as Record<string, ResolverSpec>
  })

  const checks: Array<Promise<void>> = []
  let checkNo = 0
  /** A check: what each id must at least see is fixed when it starts. */
  const observe = (label: string, kind: SimKind, userId: string, ids: string[], run: () => Promise<Map<string, Decision>>): void => {
    const need = new Map(ids.map((id) => [id, required.get(row(kind, id, userId)) ?? 0]))
    log.push(`${label} starts ${kind} ${userId} [${ids.join(',')}] needs ${JSON.stringify([...need])}`)
    let started: Promise<Map<string, Decision>>
    try {
      started = run()
    } catch (error) {
      fail(`${label} threw synchronously: ${String(error)}`)
      return
    }
    checks.push(started.then((answers) => {
      log.push(`${label} got ${JSON.stringify([...answers].map(([id, d]) => `${id}:v${String(d.v)}`))}`)
      for (const id of ids) {
        const decision = answers.get(id)
        const v = decision?.v
        if (typeof v !== 'number') fail(`${label}: ${kind} ${id} ${userId} answered ${JSON.stringify(decision)}, an answer no resolver gave`)
        else if (v < (need.get(id) as number)) fail(`${label}: ${kind} ${id} ${userId} got v${v}, loaded before the invalidation of v${need.get(id) as number} that returned before the check started`)
        else if (decision?.granted !== (v % 2 === 1)) fail(`${label}: ${kind} ${id} ${userId} v${v} has the wrong answer`)
      }
    }, (error: Failure) => {
      log.push(`${label} failed ${String(error.code)}`)
      if (error.code !== FAILED) fail(`${label} rejected with ${String(error.code)} ${error.message}`)
    }))
  }

  const revoke = (): void => {
    const kind = pick(SIM_KINDS)
    const id = pick(SIM_IDS)
    const u = pick(SIM_USERS)
    const key = row(kind, id, u)
    const v = vOf(kind, id, u) + 1
    version.set(key, v)
    const how = pick(['resource', 'user', 'tag', 'pattern', 'key', 'set', 'all'] as const)
    log.push(`revoke ${kind} ${id} ${u} -> v${v} by ${how}`)
    switch (how) {
      case 'resource':
        if (kind === 'generation') cache.invalidateGenerationData(id)
        else if (kind === 'project') cache.invalidateProjectData(id)
        else cache.invalidateByTags([`document:${id}`])
        break
      case 'user': cache.invalidateUserData(u); break
      case 'tag': cache.invalidateByTags([`pair:${kind}:${id}:${u}`]); break
      case 'pattern': cache.invalidateByPattern(`auth:${keySegment[kind]}:${id}:user:${u}:*`); break
      case 'key': cache.invalidateKeys([`auth:${keySegment[kind]}:${id}:user:${u}:access`]); break
      case 'set': cache.set(kind, u, id, versioned(kind, id, u, v)); break
      case 'all': cache.clear(); break
    }
    required.set(key, v)
  }

  const steps = 40 + Math.floor(rand() * 60)
  for (let step = 0; step < steps && failures.length === 0; step++) {
    const r = rand()
    if (r < 0.25) {
      const kind = pick(SIM_KINDS)
      const id = pick(SIM_IDS)
      const u = pick(SIM_USERS)
      const path = pick(['getOrLoad', 'getOrLoad', 'hit path', 'fresh'] as const)
      observe(`s${checkNo++} (${path})`, kind, u, [id], async () => {
        if (path === 'hit path') {
          const handle = cache.kind(kind)
          const hit = cache.lookup(handle, id, u)
          return new Map([[id, (hit ?? await cache.load(handle, id, u)) as Decision]])
        }
        return new Map([[id, await cache.getOrLoad(kind, u, id, { fresh: path === 'fresh' })]])
      })
    } else if (r < 0.45) {
      const kind = pick(SIM_KINDS)
      const u = pick(SIM_USERS)
      const ids = Array.from({ length: 1 + Math.floor(rand() * 5) }, () => pick(SIM_IDS))
      observe(`b${checkNo++}`, kind, u, ids, () => cache.getOrLoadMany(kind, u, ids))
    } else if (r < 0.6) {
      revoke()
    } else if (r < 0.9) {
      const open = calls.filter((call) => !call.settled)
      if (open.length > 0) release(pick(open), rand() < 0.85)
    } else if (r < 0.93) {
      const ms = Math.floor(rand() * 200_000)
      log.push(`tick ${ms}`)
      clock.tick(ms)
    }
    if (rand() < 0.6) await flush()
  }

  // Quiescence: answer everything still held (and what those answers start).
  for (let round = 0; round < 100; round++) {
    await flush()
    const open = calls.filter((call) => !call.settled)
    if (open.length === 0) break
    for (const call of open) release(call, true)
  }
  await Promise.all(checks)

  // Every revocation was followed by an invalidation: nothing cached may be older than the database.
  for (const kind of SIM_KINDS) {
    for (const id of SIM_IDS) {
      for (const u of SIM_USERS) {
        const cached = cache.lookup(kind, id, u) as Decision | undefined
        if (cached !== undefined && cached.v !== vOf(kind, id, u)) fail(`after quiescence ${kind} ${id} ${u} is cached at v${String(cached.v)}, the database is at v${vOf(kind, id, u)}`)
      }
    }
  }
  if (calls.some((call) => !call.settled)) fail('resolver calls still held after quiescence')
  cache.close()
  // A hit in the check above may have started a refresh-ahead load: answer it (closed, it stores nothing).
  for (let round = 0; round < 10; round++) {
    await flush()
    for (const call of calls) if (!call.settled) release(call, true)
  }
  return failures
}

test('randomized interleavings of single checks, batch checks, invalidations and releases: no check started after an invalidation returned gets an answer loaded before it', { timeout: 120_000 }, async (t) => {
  const only = envInt('BATCH_TRIAL_SEED')
  const base = (envInt('BATCH_SEED') ?? Date.now() % 2 ** 31) >>> 0
  const trials = only === undefined ? envInt('BATCH_TRIALS') ?? 300 : 1
  t.comment(only === undefined ? `BATCH_SEED=${base} (${trials} trials)` : `BATCH_TRIAL_SEED=${only}`)
  const failures: string[] = []
  let ran = 0
  for (let n = 0; n < trials && failures.length === 0; n++) {
    failures.push(...await interleaving(only ?? (base ^ Math.imul(n + 1, 0x9E3779B1)) >>> 0))
    ran++
  }
  t.same(failures.slice(0, 3), [], `BATCH_SEED=${base}: ${failures.length} broken invariants (replay the run with BATCH_SEED=${base}, or one trial with BATCH_TRIAL_SEED=<its seed=>)`)
  if (failures.length === 0) t.equal(ran, trials, 'every trial ran')
})

// -------------------------------------------------------- 10. Redis: L2 fencing

const available = await redisAvailable()
if (available === false) {
  test('batch checks over Redis', { skip: `no Redis at ${REDIS_URL}: start one, or set REDIS_URL, to run the multi-instance tests` }, () => {})
} else {
  /** An engine on a real Redis namespace, with the given resolvers. */
  const attach = async (t: Test, ns: ReturnType<typeof namespace>, resolvers: AnyResolvers): Promise<AuthzCache> => {
    const engine = new AuthzCache({ cleanupIntervalSeconds: 0, ttlJitterPercent: 0, resolvers: resolvers as Record<string, ResolverSpec> })
    const layer: RedisLayer = await connectRedis(engine, resolvedRedis(ns, { heartbeatMs: 200, ackTimeoutMs: 2000 }), silentLogger)
    t.teardown(async () => {
      engine.close()
      await layer.close()
    })
    return engine
  }
  const l2Value = async (ns: ReturnType<typeof namespace>, id: string, u: string): Promise<string | null> =>
    (await ns.raw.getBuffer(`${ns.keyPrefix}v:auth:gen:${id}:user:${u}:access`))?.toString('latin1') ?? null

  for (const origin of ['A', 'B'] as const) {
    test(`over Redis, a batch on A stores every id in L2, and an invalidation of one id (from ${origin}) during the batch keeps that id out of L1 and L2: B reloads it from the resolver`, async (t) => {
      await l2Fence(t, origin)
    })
  }

  async function l2Fence (t: Test, origin: 'A' | 'B'): Promise<void> {
    const ns = namespace()
    t.teardown(ns.cleanup)
    const be = heldBackend()
    const bCalls: string[][] = []
    const a = await attach(t, ns, { generation: { many: be.many } })
    const b = await attach(t, ns, {
      generation: {
        many: ({ ids, userId }: BatchResolverContext) => {
          bCalls.push(ids)
          return new Map(ids.map((id) => [id, be.rows.get(row('generation', id, userId)) ?? null]))
        }
      }
    })
    const ids = [G1, G2, G3]
    for (const id of ids) be.rows.set(row('generation', id, U1), grant(id))

    const early = a.getOrLoadMany('generation', U1, ids)
    t.ok(await eventually(() => be.calls.length > 0), 'the batch reached its resolver (after its L2 reads)')
    t.equal(be.calls.length, 1, "A's batch is in flight (after its L2 reads)")
    be.rows.set(row('generation', G2, U1), revoked(G2))
    await (origin === 'A' ? a : b).invalidateGenerationAuthorizationCache(G2)
    be.calls[0].release()
    t.same([...(await early).values()], ids.map((id) => grant(id)), 'A answers its own early caller')
    t.equal(cachedGeneration(a, G2, U1), undefined, 'A did not store G2 in L1')
    t.match(await l2Value(ns, G1, U1), /"granted":true/, 'G1 is in L2')
    t.match(await l2Value(ns, G3, U1), /"granted":true/, 'G3 is in L2')
    t.notMatch(String(await l2Value(ns, G2, U1)), /"granted":true/, 'G2 is not in L2')

    const onB = await b.getOrLoadMany('generation', U1, ids)
    t.same([...onB.values()], [grant(G1), revoked(G2), grant(G3)], 'B serves G1 and G3 from L2 and the revoked G2 from the resolver')
    t.same(bCalls, [[G2]], 'B asked its resolver for G2 only')
    t.equal(b.getStats().batches, 1)
  }

  test('over Redis, when L2 refuses the write of one id of a batch (an invalidation this instance has not heard of), that id stays out of L1 and the checks that joined its load reload', async (t) => {
    const ns = namespace()
    t.teardown(ns.cleanup)
    const be = heldBackend()
    const a = await attach(t, ns, { generation: { many: be.many } })
    // An instance that writes its invalidations to Redis but publishes none: A never hears of them.
    const silent = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: () => null } })
    const silentLayer = await connectRedis(silent, resolvedRedis(ns, { bus: false }), silentLogger)
    t.teardown(async () => { silent.close(); await silentLayer.close() })
    const ids = [G1, G2, G3]
    for (const id of ids) be.rows.set(row('generation', id, U1), grant(id))

    const early = a.getOrLoadMany('generation', U1, ids)
    t.ok(await eventually(() => be.calls.length > 0), 'the batch reached its resolver (after its L2 reads)')
    t.equal(be.calls.length, 1)
    const joined = a.getOrLoad('generation', U1, G2)
    be.rows.set(row('generation', G2, U1), revoked(G2))
    await silent.invalidate({ generationId: G2 })
    be.calls[0].release()
    t.same([...(await early).values()], ids.map((id) => grant(id)), 'the caller that started the batch gets its answer')
    t.ok(await eventually(() => be.calls.length > 1), 'a reload reached the resolver')
    t.same(be.calls.map((call) => call.ids), [ids, [G2]], 'the check that joined G2 reloads it')
    t.equal(cachedGeneration(a, G2, U1), undefined, 'the refused answer was not stored in L1')
    t.same(cachedGeneration(a, G1, U1), grant(G1), 'the other ids were')
    be.calls[1]?.release()
    t.same(await joined, revoked(G2), 'and sees the revocation')
    t.same(cachedGeneration(a, G1, U1), grant(G1))
    t.same(cachedGeneration(a, G3, U1), grant(G3))
    t.same(cachedGeneration(a, G2, U1), revoked(G2), 'only the reload was stored for G2')
    t.notMatch(String(await l2Value(ns, G2, U1)), /"granted":true/, 'L2 holds no grant for G2')
  })

  test('over Redis, a batch started after another instance invalidated one id reloads that id', async (t) => {
    const ns = namespace()
    t.teardown(ns.cleanup)
    const rows = new Map<string, Decision>([[G1, grant(G1)], [G2, grant(G2)]])
    const calls: Array<[string, string[]]> = []
    const resolver = (name: string): ResolverSpec => ({ many: ({ ids }: BatchResolverContext) => { calls.push([name, ids]); return new Map(ids.map((id) => [id, rows.get(id) ?? null])) } })
    const a = await attach(t, ns, { generation: resolver('A') })
    const b = await attach(t, ns, { generation: resolver('B') })
    await a.getOrLoadMany('generation', U1, [G1, G2])
    t.same([...(await b.getOrLoadMany('generation', U1, [G1, G2])).values()], [grant(G1), grant(G2)], 'B hits L2')
    t.same(calls, [['A', [G1, G2]]])
    rows.set(G2, revoked(G2))
    await b.invalidateGenerationAuthorizationCache(G2)
    t.same([...(await a.getOrLoadMany('generation', U1, [G1, G2])).values()], [grant(G1), revoked(G2)])
    t.same(calls, [['A', [G1, G2]], ['A', [G2]]], 'A asked for G2 only: G1 is still its L1 hit')
  })
}

test('a long batch check runs at most BATCH_CONCURRENCY calls at once', async (t) => {
  let running = 0
  let peak = 0
  const asked: string[][] = []
  const release: Array<() => void> = []
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    resolvers: {
      generation: {
        many: async ({ ids }: BatchResolverContext) => {
          asked.push([...ids])
          running++
          peak = Math.max(peak, running)
          await new Promise<void>((resolve) => release.push(resolve))
          running--
          return Object.fromEntries(ids.map((id) => [id, { granted: true }]))
        }
      }
    }
  })
  t.teardown(() => cache.close())
  const ids = Array.from({ length: 1000 }, (_, i) => `g${i}`)
  const batch = cache.getOrLoadMany('generation', U1, ids)
  for (let turn = 0; turn < 50 && asked.length < 10; turn++) {
    await new Promise((resolve) => setImmediate(resolve))
    release.splice(0).forEach((resolve) => resolve())
  }
  const found = await batch
  t.equal(found.size, 1000)
  t.equal(asked.length, 10, 'ten calls of 100')
  t.equal(peak, BATCH_CONCURRENCY, `never more than ${BATCH_CONCURRENCY} at once`)
  t.same(asked.flat(), ids, 'each id asked once, in order')
})
