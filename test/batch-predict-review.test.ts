/**
 * Regression tests from an adversarial review of batch checks and
 * predictive warming: one per problem found, each a minimal repro named
 * after what broke (the numbered comments say what it was).
 */
import { test, type Test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { MAX_IDS_PER_BATCH_CHECK, PREDICTIONS_PER_MISS } from '../lib/engine/engine.js'
import type { CacheOptions } from '../lib/options.js'
import { connectRedis } from '../lib/redis.js'
import type { BatchResolverContext, Decision, ResolverContext, ResolverSpec } from '../lib/types.js'
import { deferred } from './helpers.js'
import { REDIS_URL, namespace, redisAvailable, resolvedRedis, silentLogger } from './redis-helpers.js'

const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
}
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function engine (t: Test, resolvers: Record<string, ResolverSpec>, extra: CacheOptions = {}): AuthzCache {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, ttlJitterPercent: 0, resolvers, ...extra })
  t.teardown(() => cache.close())
  return cache
}

const GRANT: Decision = { granted: true, access: ['read', 'write'] }
const DENY: Decision = { granted: false }

// ------------------------------------------------------------------------------------------------
// 1. The ids array handed to `many` is the array the engine then reads answers by (callBatchResolver).

const MUTATIONS: Array<[string, (ids: string[]) => void]> = [
  ['sorts it in place', (ids) => { ids.sort() }],
  ['reverses it', (ids) => { ids.reverse() }],
  ['drops its first id (splice)', (ids) => { ids.splice(0, 1) }],
  ['empties it', (ids) => { ids.length = 0 }]
]

for (const [what, mutate] of MUTATIONS) {
  test(`batch: a many() that ${what} (the ids array it was given) never gets one id's answer stored or served as another id's`, async (t) => {
    // Only g1 is granted. The resolver reads its rows from a copy, then does what it likes with the array it was given.
    const cache = engine(t, {
      generation: {
        many: async ({ ids }: BatchResolverContext) => {
          const asked = [...ids]
          mutate(ids)
          return new Map(asked.map((id) => [id, id === 'g1' ? GRANT : null]))
        }
      }
    })
    const found = await cache.getOrLoadMany('generation', 'u1', ['g3', 'g2', 'g1']).then((map) => map, (error: Error) => error)
    t.notOk(found instanceof Error, `the batch answers (got ${found instanceof Error ? `${found.name}: ${found.message}` : 'a Map'})`)
    if (!(found instanceof Error)) t.same([...found], [['g3', DENY], ['g2', DENY], ['g1', GRANT]], 'each id gets its own answer')
    for (const id of ['g2', 'g3']) {
      const { value, hit } = cache.getGenerationAccess(id, 'u1')
      t.notOk(hit && value?.granted === true, `u1 holds no cached grant on ${id}`)
    }
  })
}

test('prediction: a many() that sorts its ids in place never plants a grant through a predicted load (no batch API involved)', async (t) => {
  const rows = new Set(['project:p1:alice', 'project:p1:bob', 'generation:g1:alice', 'generation:g2:alice', 'generation:g3:alice', 'generation:g1:bob'])
  const answer = (kind: string, id: string, userId: string): Decision | null => rows.has(`${kind}:${id}:${userId}`) ? GRANT : null
  const cache = engine(t, {
    project: async ({ kind, id, userId }: ResolverContext) => answer(kind, id, userId),
    generation: {
      one: async ({ kind, id, userId }: ResolverContext) => answer(kind, id, userId),
      many: async ({ kind, ids, userId }: BatchResolverContext) => {
        const asked = [...ids]
        ids.sort()
        return new Map(asked.map((id) => [id, answer(kind, id, userId)]))
      }
    }
  }, { warmingEnabled: true })
  // Alice opens p1, then g3, g2, g1 one by one: the followers of p1 are g3 (and the chain g3 -> g2 -> g1).
  await cache.getOrLoad('project', 'alice', 'p1')
  await cache.getOrLoadMany('generation', 'alice', ['g3', 'g2', 'g1'])
  await cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  t.ok(cache.getStats().warming.predicted > 0, 'bob\'s generations were predicted')
  for (const id of ['g2', 'g3']) {
    t.same(await cache.getOrLoad('generation', 'bob', id), DENY, `bob is denied ${id}, which he does not hold`)
  }
})

// ------------------------------------------------------------------------------------------------
// 2. A profile follower is predicted for another user with the id of the user it was learned from.

test('prediction: the profile resolver is never called for one user with another user\'s id', async (t) => {
  const calls: Array<{ userId: string, id: string }> = []
  const cache = engine(t, {
    project: async () => ({ granted: true }),
    profile: async ({ userId, id }: ResolverContext) => { calls.push({ userId, id }); return { granted: true, name: id } }
  }, { warmingEnabled: true })
  await cache.getOrLoad('project', 'alice', 'p1')
  await cache.getOrLoad('profile', 'alice', undefined)
  await cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  t.same(calls.filter((call) => call.id !== call.userId), [], 'every profile load asks for the profile of the user it is for')
  t.same((await cache.getOrLoad('profile', 'bob', undefined) as Record<string, unknown>).name, 'bob', 'bob gets his own profile')
})

const redis = await redisAvailable()
test('prediction over Redis: a predicted profile never puts one user\'s profile under another user\'s L2 key', { skip: redis === false ? `no Redis at ${REDIS_URL}` : false }, async (t) => {
  const ns = namespace()
  t.teardown(ns.cleanup)
  const profiles: Record<string, Decision> = { alice: { granted: true, email: 'alice@example.com' }, bob: { granted: true, email: 'bob@example.com' } }
  // A resolver written against the documented context: for a profile, `id` is the user's id.
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    warmingEnabled: true,
    resolvers: { project: async () => ({ granted: true }), profile: async ({ id }: ResolverContext) => profiles[id] ?? null }
  })
  const layer = await connectRedis(cache, resolvedRedis(ns, { heartbeatMs: 200 }), silentLogger)
  t.teardown(async () => { cache.close(); await layer.close() })
  await cache.getOrLoad('project', 'alice', 'p1')
  await cache.getOrLoad('profile', 'alice', undefined)
  await cache.getOrLoad('project', 'bob', 'p1')
  await sleep(100)
  const l2 = (await ns.raw.getBuffer(`${ns.keyPrefix}v:auth:user:bob:profile`))?.toString('latin1') ?? ''
  t.notMatch(l2, /alice@example\.com/, 'bob\'s L2 key holds nothing of alice\'s')
  t.same(await cache.getOrLoad('profile', 'bob', undefined), profiles.bob, 'bob gets his own profile, not alice\'s')
})

// ------------------------------------------------------------------------------------------------
// 3. #predict flushes its batch whenever the kind changes: interleaved followers make one call per id.

test('prediction: followers of two kinds that interleave still make at most one many call per kind, not one per id', async (t) => {
  const calls: Array<{ kind: string, ids: string[] }> = []
  const one = async ({ kind, id }: ResolverContext): Promise<Decision | null> => { calls.push({ kind, ids: [id] }); return null }
  const many = async ({ kind, ids }: BatchResolverContext): Promise<Record<string, Decision>> => { calls.push({ kind, ids: [...ids] }); return {} }
  const cache = engine(t, { project: { one, many }, generation: { one, many } }, { warmingEnabled: true })
  // One user's misses teach p1 -> g0, q0, g1, q1, ... (two kinds, alternating, equal counts).
  await cache.getOrLoad('project', 'mallory', 'p1')
  for (let i = 0; i < 64; i++) {
    await cache.getOrLoadMany('generation', 'mallory', [`g${i}`])
    await cache.getOrLoadMany('project', 'mallory', [`q${i}`])
  }
  calls.length = 0
  await cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  const predicted = calls.slice(1)
  t.comment(`one real miss made ${calls.length} backend calls`)
  t.ok(predicted.filter((call) => call.kind === 'generation').length <= 1, 'at most one generation call for the prediction')
  t.ok(predicted.filter((call) => call.kind === 'project').length <= 1, 'at most one project call for the prediction')
})

// ------------------------------------------------------------------------------------------------
// 4. A batch check of a kind without `many` goes through load() per id: each id is learned as a real miss and predicts.

test('batch fan-out (a kind without many): a batch check predicts and learns exactly as one through many (nothing per id)', async (t) => {
  const run = async (withMany: boolean): Promise<{ predicted: number, chained: boolean }> => {
    const one = async (): Promise<Decision> => ({ granted: true })
    const many = async ({ ids }: BatchResolverContext): Promise<Map<string, Decision>> => new Map(ids.map((id) => [id, { granted: true }]))
    const cache = engine(t, { team: withMany ? { one, many } : one, generation: { one, many } }, { warmingEnabled: true })
    // Earlier visitors: after team tK, they listed 20 generations (a batch: learned as followers of tK).
    for (let k = 0; k < 10; k++) {
      await cache.getOrLoad('team', `v${k}`, `t${k}`)
      await cache.getOrLoadMany('generation', `v${k}`, Array.from({ length: 20 }, (_, i) => `g${k}-${i}`))
    }
    const before = cache.getStats().warming.predicted
    await cache.getOrLoadMany('team', 'victim', Array.from({ length: 10 }, (_, k) => `t${k}`))
    await flush()
    const predicted = cache.getStats().warming.predicted - before
    // Did the batch teach t0 -> t1 (one id of a batch as the follower of another)?
    const teams = cache.getStats().loads
    await cache.getOrLoad('team', 'carol', 't0')
    await flush()
    const chained = cache.getTeamRole('t1', 'carol').hit
    t.comment(`${withMany ? 'with' : 'without'} many: ${predicted} predicted decisions from one batch check; loads after carol's miss: ${cache.getStats().loads - teams}`)
    return { predicted, chained }
  }
  const viaMany = await run(true)
  const fanOut = await run(false)
  t.equal(fanOut.predicted, viaMany.predicted, `a fan-out batch check starts as many predicted loads as a batch through many (${viaMany.predicted})`)
  t.equal(fanOut.chained, viaMany.chained, 'and learns the same (no id of the batch becomes the follower of another)')
})

// ------------------------------------------------------------------------------------------------
// 5. A `fresh` check's answer is overwritten by an older load in flight for the key (here a prediction).

test('fresh: an older predicted load in flight does not overwrite what a fresh check stored', async (t) => {
  const rows = new Set(['project:p1:alice', 'project:p1:bob', 'generation:g1:alice', 'generation:g1:bob'])
  const answer = (kind: string, id: string, userId: string): Decision | null => rows.has(`${kind}:${id}:${userId}`) ? { granted: true } : null
  let gate: Promise<void> | undefined
  const cache = engine(t, {
    project: async ({ kind, id, userId }: ResolverContext) => answer(kind, id, userId),
    generation: {
      one: async ({ kind, id, userId }: ResolverContext) => answer(kind, id, userId),
      many: async ({ kind, ids, userId }: BatchResolverContext) => {
        const read = new Map(ids.map((id) => [id, answer(kind, id, userId)]))
        if (gate !== undefined) await gate
        return read
      }
    }
  }, { warmingEnabled: true })
  await cache.getOrLoad('project', 'alice', 'p1')
  await cache.getOrLoadMany('generation', 'alice', ['g1'])
  const held = deferred<void>()
  gate = held.promise
  await cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  gate = undefined
  t.equal(cache.getStats().warming.predicted, 1, 'bob\'s g1 is being predicted (its read saw the grant)')
  rows.delete('generation:g1:bob')
  t.same(await cache.getOrLoad('generation', 'bob', 'g1', { fresh: true }), { granted: false }, 'the sensitive operation reloads and sees the revocation')
  held.resolve()
  await flush()
  t.same(await cache.getOrLoad('generation', 'bob', 'g1'), { granted: false }, 'the next check gets what the fresh check stored, not the older prediction')
})

// ------------------------------------------------------------------------------------------------
// 6. Chains: every first hit on a predicted entry predicts up to PREDICTIONS_PER_MISS more, from the hit path.

test('prediction chain: after one real miss, hits on predicted entries cannot make the backend load unbounded work', async (t) => {
  let decisions = 0
  const one = async (): Promise<Decision> => { decisions++; return { granted: true } }
  const many = async ({ ids }: BatchResolverContext): Promise<Map<string, Decision>> => { decisions += ids.length; return new Map(ids.map((id) => [id, { granted: true }])) }
  const cache = engine(t, { project: { one, many }, generation: { one, many } }, { warmingEnabled: true, maxEntries: 100_000, maxSizeMb: 256 })
  // Trained by two users: p0 -> q0; q0 -> g0..g31; each gK -> 32 ids of its own.
  await cache.getOrLoad('project', 'm', 'p0')
  await cache.getOrLoadMany('project', 'm', ['q0'])
  await cache.getOrLoad('project', 'm', 'q0')
  await cache.getOrLoadMany('generation', 'm', Array.from({ length: 32 }, (_, i) => `g${i}`))
  for (let k = 0; k < 32; k++) {
    await cache.getOrLoad('generation', 'm2', `g${k}`)
    await cache.getOrLoadMany('generation', 'm2', Array.from({ length: 32 }, (_, i) => `h${k}-${i}`))
  }
  await flush()
  decisions = 0
  await cache.getOrLoad('project', 'victim', 'p0')
  await flush()
  const hitsBefore = cache.getStats().hits
  cache.getProjectAccess('q0', 'victim')
  await flush()
  for (let k = 0; k < 32; k++) {
    cache.getGenerationAccess(`g${k}`, 'victim')
    await flush()
  }
  const hits = cache.getStats().hits - hitsBefore
  t.comment(`1 real miss and ${hits} hits made the backend answer ${decisions} decisions`)
  t.ok(decisions <= 1 + 2 * PREDICTIONS_PER_MISS, `one real miss costs at most ${1 + 2 * PREDICTIONS_PER_MISS} decisions, its chain included (got ${decisions})`)
})

// ------------------------------------------------------------------------------------------------
// 7. A long batch keeps every id in Loads.#running for its whole run: every set*() and invalidation scans them all.

test('a batch check is bounded: more than MAX_IDS_PER_BATCH_CHECK ids is a 400 naming the field, before anything is looked up', async (t) => {
  let calls = 0
  const cache = engine(t, { generation: { many: async ({ ids }: BatchResolverContext) => { calls++; return Object.fromEntries(ids.map((id) => [id, { granted: true }])) } } })
  const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `g${i}`)
  await t.rejects(cache.getOrLoadMany('generation', 'u1', ids(MAX_IDS_PER_BATCH_CHECK + 1)), { code: 'FST_AUTHZ_BAD_ID', statusCode: 400, message: /generation ids: at most 1000 ids per batch check, got 1001/ })
  t.equal(calls, 0)
  t.equal(cache.getStats().misses, 0, 'nothing was looked up')
  t.equal((await cache.getOrLoadMany('generation', 'u1', ids(MAX_IDS_PER_BATCH_CHECK))).size, MAX_IDS_PER_BATCH_CHECK)
  t.equal(calls, 10, 'in calls of maxBatchSize')
})

// ------------------------------------------------------------------------------------------------
// 8. close() while chunks of a batch wait for a turn: they still call the resolver.

test('close() during a long batch: the calls not yet made are never made', async (t) => {
  let closed = false
  let afterClose = 0
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    loaderTimeoutMs: 60_000,
    maxBatchSize: 10,
    resolvers: {
      generation: {
        many: async ({ ids }: BatchResolverContext) => {
          if (closed) afterClose++
          await sleep(10)
          return Object.fromEntries(ids.map((id) => [id, { granted: true }]))
        }
      }
    }
  })
  const batch = cache.getOrLoadMany('generation', 'u1', Array.from({ length: 1000 }, (_, i) => `g${i}`)).catch(() => undefined)
  await sleep(2)
  cache.close()
  closed = true
  await batch
  t.equal(afterClose, 0, `no backend call after close() (got ${afterClose})`)
})

// ------------------------------------------------------------------------------------------------
// 9. A single check joins a batch chunk still queued behind BATCH_CONCURRENCY calls: it waits past loaderTimeoutMs.

test('a single check of an id a long batch has not called yet makes its own call at once, and the batch then joins it', async (t) => {
  const held: Array<{ ids: string[], release: () => void }> = []
  const asked: string[] = []
  const cache = engine(t, {
    generation: {
      many: async ({ ids }: BatchResolverContext) => {
        const gate = deferred<void>()
        held.push({ ids: [...ids], release: () => gate.resolve() })
        asked.push(...ids)
        await gate.promise
        return Object.fromEntries(ids.map((id) => [id, { granted: true }]))
      }
    }
  }, { maxBatchSize: 10 })
  const ids = Array.from({ length: 1000 }, (_, i) => `g${i}`)
  const batch = cache.getOrLoadMany('generation', 'u1', ids)
  await flush()
  const single = cache.getOrLoad('generation', 'u1', 'g999')
  await flush()
  t.equal(held.length, 5, 'the first wave (4 calls of 10) and the single check\'s own call')
  t.same(held[4].ids, ['g999'], 'the single check did not queue behind the batch')
  held[4].release()
  t.same(await single, { granted: true })
  for (let turn = 0; turn < 200 && held.some((h) => h.release !== undefined); turn++) {
    for (const h of held.splice(0)) h.release()
    await flush()
  }
  t.equal((await batch).size, 1000)
  t.equal(cache.getStats().batches, 100, '100 batch calls (the single check went through many() with one id, not as a batch)')
  t.same([...new Set(asked)].sort(), [...ids].sort(), 'every id asked')
  t.ok(asked.length <= ids.length + 1, 'each once, but g999 perhaps twice (the single check\'s answer came before the batch reached it)')
})

// ------------------------------------------------------------------------------------------------
// 10. The predictor's budget holds only while one source fits in it: long ids overflow maxSizeMb.

test('predictor memory: one source of long ids stays within the predictor budget and maxSizeMb', async (t) => {
  const many = async ({ ids }: BatchResolverContext): Promise<Record<string, Decision | null>> => Object.fromEntries(ids.map((id) => [id, null]))
  const cache = engine(t, { project: async () => ({ granted: true }), generation: { many } }, { warmingEnabled: true, maxSizeMb: 8, maxIdLength: 65_536 })
  await cache.getOrLoad('project', 'mallory', 'p1')
  const long = Array.from({ length: 128 }, (_, i) => `${i}-${'x'.repeat(60_000)}`)
  for (let from = 0; from < long.length; from += 16) await cache.getOrLoadMany('generation', 'mallory', long.slice(from, from + 16))
  const stats = cache.getStats()
  t.comment(`warming.bytes ${stats.warming.bytes}, totalSizeMb ${stats.totalSizeMb.toFixed(2)} of maxSizeMb ${stats.maxSizeMb}`)
  t.ok(stats.warming.bytes <= 256 * 1024, 'the predictor stays within its budget (1/32 of 8 MB)')
  t.ok(stats.totalSizeMb <= stats.maxSizeMb, 'the cache stays within maxSizeMb')
})
