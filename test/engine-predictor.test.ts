/**
 * Predictive warming (lib/engine/predictor.ts, the engine's #predict): what
 * it learns, what it loads and for whom, its bounds, and that its loads are
 * fenced like any other.
 */
import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { PREDICTIONS_PER_MISS, PREDICTIONS_PER_MISS_WITHOUT_MANY } from '../lib/engine/engine.js'
import type { KindState } from '../lib/engine/entry.js'
import { MAX_FOLLOWERS, Predictor } from '../lib/engine/predictor.js'
import type { BatchResolverContext, Decision, ResolverContext } from '../lib/types.js'
import { deferred, MB, seededRandom, type Deferred } from './helpers.js'

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** A backend of grants the test edits (`grants`: "kind:id:user"), logging every call; `hold()` holds calls until released. */
function backend () {
  const grants = new Set<string>()
  const calls: Array<{ kind: string, userId: string, ids: string[], batch: boolean }> = []
  let gate: Deferred<void> | undefined
  const answer = (kind: string, id: string, userId: string): Decision | null => grants.has(`${kind}:${id}:${userId}`) ? { granted: true, access: ['read'] } : null
  return {
    grants,
    calls,
    hold () { gate = deferred<void>(); return gate },
    release () { const g = gate; gate = undefined; g?.resolve() },
    one: async ({ kind, userId, id }: ResolverContext) => {
      calls.push({ kind, userId, ids: [id], batch: false })
      const value = answer(kind, id, userId)
      if (gate !== undefined) await gate.promise
      return value
    },
    many: async ({ kind, userId, ids }: BatchResolverContext) => {
      calls.push({ kind, userId, ids: [...ids], batch: true })
      const values = new Map(ids.map((id) => [id, answer(kind, id, userId)]))
      if (gate !== undefined) await gate.promise
      return values
    }
  }
}

function setup (extra: Record<string, unknown> = {}) {
  const db = backend()
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    warmingEnabled: true,
    resolvers: { project: { one: db.one, many: db.many }, generation: { one: db.one, many: db.many }, team: db.one },
    ...extra
  })
  return { cache, db }
}

const gens = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `g${from + i}`)

/** User `user` opens project `project` and lists `ids`: one miss, then a batch. */
async function visit (cache: AuthzCache, user: string, project: string, ids: string[]): Promise<void> {
  await cache.getOrLoad('project', user, project)
  await cache.getOrLoadMany('generation', user, ids)
}

test('after a project miss, the generations other users listed next are loaded for this user, in one batch call', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  for (const user of ['alice', 'bob']) {
    db.grants.add(`project:p1:${user}`)
    for (const id of gens(5)) db.grants.add(`generation:${id}:${user}`)
  }
  await visit(cache, 'alice', 'p1', gens(5))
  db.calls.length = 0
  await cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  t.same(db.calls, [
    { kind: 'project', userId: 'bob', ids: ['p1'], batch: false },
    { kind: 'generation', userId: 'bob', ids: gens(5), batch: true }
  ], 'the check, then one batch of what followed p1, for bob')
  t.equal(cache.getStats().warming.predicted, 5)
  const listed = await cache.getOrLoadMany('generation', 'bob', gens(5))
  t.equal(db.calls.length, 2, 'the list is answered from the cache')
  t.ok([...listed.values()].every((d) => d.granted), 'bob\'s own grants')
  const stats = cache.getStats()
  t.equal(stats.warming.used, 5)
  t.equal(stats.byKind.generation.hits, 5)
})

test('a prediction is never served to another user: it is a load of the predicted user\'s own decision', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  db.grants.add('project:p1:alice')
  db.grants.add('project:p1:mallory')
  for (const id of gens(4)) db.grants.add(`generation:${id}:alice`)
  await visit(cache, 'alice', 'p1', gens(4))
  await cache.getOrLoad('project', 'mallory', 'p1')
  await flush()
  const predicted = db.calls.filter((call) => call.batch && call.userId === 'mallory')
  t.equal(predicted.length, 1, 'mallory\'s generations were predicted')
  for (const id of gens(4)) {
    const decision = await cache.getOrLoad('generation', 'mallory', id)
    t.same(decision, { granted: false }, `mallory is denied ${id}, although alice holds it`)
    t.same(await cache.getOrLoad('generation', 'alice', id), { granted: true, access: ['read'] }, 'alice still holds it')
  }
  t.ok(db.calls.every((call) => call.kind !== 'generation' || call.userId === 'alice' || call.userId === 'mallory'))
  t.same(cache.keys().filter((key) => key.includes('mallory') && key.startsWith('auth:gen')).length, 4, 'mallory\'s entries are her own keys')
})

test('a predicted load fenced by an invalidation before it finishes stores nothing, and the next check sees the revocation', async (t) => {
  for (const revoke of ['generation', 'user', 'tag', 'project-tag'] as const) {
    const { cache, db } = setup()
    for (const user of ['alice', 'bob']) {
      db.grants.add(`project:p1:${user}`)
      for (const id of gens(3)) db.grants.add(`generation:${id}:${user}`)
    }
    await visit(cache, 'alice', 'p1', gens(3))
    const gate = db.hold()
    const check = cache.getOrLoad('project', 'bob', 'p1')
    await flush()
    t.equal(db.calls.filter((call) => call.userId === 'bob' && call.batch).length, 1, `${revoke}: bob's prediction is in flight`)
    db.grants.delete('generation:g1:bob')
    if (revoke === 'generation') cache.invalidateGenerationData('g1')
    else if (revoke === 'user') cache.invalidateUserData('bob')
    else if (revoke === 'tag') cache.invalidateByTags(['generation:g1'])
    else cache.invalidateByPattern('auth:gen:g1:*')
    gate.resolve()
    await check
    await flush()
    t.equal(cache.getGenerationAccess('g1', 'bob').hit, false, `${revoke}: the fenced prediction was not stored`)
    t.same(await cache.getOrLoad('generation', 'bob', 'g1'), { granted: false }, `${revoke}: the next check reloads and is denied`)
    if (revoke === 'generation') t.equal(cache.getGenerationAccess('g2', 'bob').hit, true, 'the other predicted ids were stored')
    cache.close()
  }
})

test('predictions obey their budget: one batch call per kind of at most PREDICTIONS_PER_MISS ids; a kind without many gets a few single calls', async (t) => {
  const { cache, db } = setup({ maxBatchSize: 1000 })
  t.teardown(() => cache.close())
  db.grants.add('project:p1:alice')
  db.grants.add('project:p1:bob')
  await cache.getOrLoad('project', 'alice', 'p1')
  // Alice goes on to 200 generations (more than a source keeps) and 10 teams (a kind with `one` only).
  await cache.getOrLoadMany('generation', 'alice', gens(MAX_FOLLOWERS + 72))
  for (let i = 0; i < 10; i++) await cache.getOrLoad('team', 'alice', `t${i}`)
  db.calls.length = 0
  // The team misses moved alice's source; bob starts from p1.
  await cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  const generation = db.calls.filter((call) => call.kind === 'generation')
  const team = db.calls.filter((call) => call.kind === 'team')
  t.equal(generation.length, 1, 'one batch call for the generations')
  t.ok(generation[0].ids.length <= PREDICTIONS_PER_MISS && generation[0].ids.length > 0, `at most ${PREDICTIONS_PER_MISS} ids (${generation[0].ids.length})`)
  t.ok(team.length <= PREDICTIONS_PER_MISS_WITHOUT_MANY, `at most ${PREDICTIONS_PER_MISS_WITHOUT_MANY} single calls for a kind without many (${team.length})`)
  t.ok(generation[0].ids.length + team.length <= PREDICTIONS_PER_MISS, 'within the per-miss budget in all')
})

test('what is cached or loading already is not predicted again', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  await visit(cache, 'alice', 'p1', gens(4))
  await cache.getOrLoad('generation', 'bob', 'g0')
  const gate = db.hold()
  const loading = cache.getOrLoad('generation', 'bob', 'g1')
  db.calls.length = 0
  const check = cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  const batch = db.calls.find((call) => call.batch)
  t.same(batch?.ids, ['g2', 'g3'], 'g0 is cached and g1 loading: only g2 and g3')
  gate.resolve()
  await Promise.all([loading, check])
})

test('wasted predictions are counted and stop being made; used ones are counted once', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  await visit(cache, 'alice', 'p1', ['g0'])
  let rounds = 0
  // Each visitor opens p1 and never uses g0; an invalidation takes the predicted entry away unused.
  for (let i = 0; i < 20; i++) {
    const before = cache.getStats().warming.predicted
    await cache.getOrLoad('project', `u${i}`, 'p1')
    await flush()
    if (cache.getStats().warming.predicted > before) rounds++
    cache.invalidateUserData(`u${i}`)
  }
  const stats = cache.getStats().warming
  t.equal(stats.wasted, stats.predicted, 'every prediction was wasted')
  t.ok(rounds > 0 && rounds < 5, `halved on each waste, the follower stops being predicted (${rounds} rounds)`)
  t.equal(stats.used, 0)

  // Used: a hit on a predicted entry counts once.
  await visit(cache, 'carol', 'p2', ['g9'])
  await cache.getOrLoad('project', 'dave', 'p2')
  await flush()
  await cache.getOrLoad('generation', 'dave', 'g9')
  await cache.getOrLoad('generation', 'dave', 'g9')
  t.equal(cache.getStats().warming.used, 1)
  t.same(db.calls.filter((call) => call.userId === 'dave' && call.kind === 'generation').map((call) => call.ids), [['g9']], 'the hits made no call')
})

test('a used prediction predicts what follows it: a dashboard of pages costs one miss for the next visitor', async (t) => {
  const { cache, db } = setup()
  t.teardown(() => cache.close())
  // The first visitor walks three projects and their pages, each a miss.
  for (let p = 0; p < 3; p++) await visit(cache, 'alice', `p${p}`, gens(5, p * 10))
  // The second: p0 misses; p1 is predicted with p0's followers, used, and predicts its own page.
  db.calls.length = 0
  await visit(cache, 'bob', 'p0', gens(5, 0))
  await flush()
  await visit(cache, 'bob', 'p1', gens(5, 10))
  await flush()
  await visit(cache, 'bob', 'p2', gens(5, 20))
  const misses = cache.getStats().byKind
  t.equal(db.calls.filter((call) => !call.batch).length, 1, 'one single call: the first project')
  t.ok(misses.project.hits >= 2, 'the next projects were hits')
})

test('the predictor\'s memory stays within its budget under a stream of 1M distinct keys', async (t) => {
  const budget = 256 * 1024
  const predictor = new Predictor(budget)
  const kind = { name: 'generation' } as unknown as KindState
  const random = seededRandom(7)
  let peak = 0
  for (let i = 0; i < 1_000_000; i++) {
    // Distinct users and ids, with the odd user coming back so that sources get followers.
    const user = random() < 0.3 ? `u${Math.floor(random() * 1000)}` : `user-${i}`
    predictor.missed(kind, `id-${i}-${'x'.repeat(i % 50)}`, user, i, (i & 3) === 0, 128)
    if (predictor.bytes > peak) peak = predictor.bytes
  }
  t.ok(peak <= budget, `peak ${peak} B <= budget ${budget} B`)
  t.ok(predictor.sources > 0 && predictor.users > 0, 'it still learns')
  t.ok(predictor.sources * 300 + predictor.users * 160 <= budget, 'the record counts are bounded by the budget')
})

test('the predictor\'s budget is counted in maxSizeMb and totalSizeMb; off without warmingEnabled or under 8 MB', async (t) => {
  const { cache } = setup({ maxSizeMb: 64 })
  t.teardown(() => cache.close())
  await visit(cache, 'alice', 'p1', gens(10))
  await cache.getOrLoad('project', 'alice', 'p2')
  const stats = cache.getStats()
  t.ok(stats.warming.bytes > 0)
  t.ok(stats.totalSizeMb * MB >= stats.warming.bytes + stats.eviction.sketchBytes, 'counted in totalSizeMb')

  for (const options of [{ warmingEnabled: false }, { maxSizeMb: 4 }]) {
    const { cache: off, db } = setup(options)
    await visit(off, 'alice', 'p1', gens(3))
    db.calls.length = 0
    await off.getOrLoad('project', 'bob', 'p1')
    await flush()
    t.equal(db.calls.length, 1, `${JSON.stringify(options)}: no prediction`)
    t.same(off.getStats().warming, { predicted: 0, used: 0, wasted: 0, bytes: 0 })
    off.close()
  }
})

test('a failing predicted load answers nothing, caches nothing, and never rejects unhandled', async (t) => {
  let fail = false
  const db = backend()
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    warmingEnabled: true,
    resolvers: {
      project: db.one,
      generation: { one: db.one, many: async (ctx: BatchResolverContext) => { if (fail) throw new Error('backend down'); return db.many(ctx) } }
    }
  })
  t.teardown(() => cache.close())
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => process.off('unhandledRejection', onUnhandled))
  await visit(cache, 'alice', 'p1', gens(3))
  fail = true
  t.same(await cache.getOrLoad('project', 'bob', 'p1'), { granted: false }, 'the check itself answers')
  await flush()
  await flush()
  t.equal(cache.getStats().loaderErrors, 1, 'the failed batch is counted')
  t.equal(cache.getGenerationAccess('g0', 'bob').hit, false, 'nothing was cached')
  t.same(unhandled, [])
})

test('close() during a predicted load stores nothing', async (t) => {
  const { cache, db } = setup()
  await visit(cache, 'alice', 'p1', gens(3))
  const gate = db.hold()
  const check = cache.getOrLoad('project', 'bob', 'p1')
  await flush()
  cache.close()
  gate.resolve()
  await check
  await flush()
  t.equal(cache.getStats().totalEntries, 0)
})
