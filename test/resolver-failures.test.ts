/**
 * Issue 8: every resolver failure is a 503, never a 500 and never a grant;
 * nothing is cached; it is counted (stats) and logged (the observer).
 */
import { test, type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { Writable } from 'node:stream'
import authzCache from '../lib/index.js'
import { AuthzCache } from '../lib/cache.js'
import { FST_AUTHZ_RESOLVER_TIMEOUT } from '../lib/errors.js'
import { resolveCacheOptions } from '../lib/options.js'
import type { CacheStats, Decision, Resolver } from '../lib/types.js'
import { SECRET } from './app.js'
import { G1, U1, deferred, thrown, blockFor } from './helpers.js'

const FAILED = 'FST_AUTHZ_RESOLVER_FAILED'
const TIMEOUT = 'FST_AUTHZ_RESOLVER_TIMEOUT'
const LOGGED = 'authz resolver failed; the check is denied with 503 and nothing is cached'

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

interface Observed { kind: string, id: string, userId: string, error: Error }
type Failure = Error & { code?: string, statusCode?: number, cause?: unknown }

function engine (t: Test, generation: Resolver, extra: Record<string, unknown> = {}): { cache: AuthzCache, observed: Observed[] } {
  const observed: Observed[] = []
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation }, ...extra })
  cache.observer = { loaderFailed: (kind, id, userId, error) => observed.push({ kind, id, userId, error }) }
  t.teardown(() => cache.close())
  return { cache, observed }
}

async function rejection (promise: Promise<unknown>): Promise<Failure | undefined> {
  return promise.then(() => undefined, (error: Failure) => error)
}

/** One failed load: rejected with `code` (503), counted once, observed once, nothing cached. */
async function failsClosed (t: Test, cache: AuthzCache, observed: Observed[], code: string): Promise<Failure | undefined> {
  const error = await rejection(cache.getOrLoad('generation', U1, G1))
  t.ok(error instanceof Error, 'rejects with an Error')
  t.equal(error?.code, code)
  t.equal(error?.statusCode, 503)
  const stats: CacheStats = cache.getStats()
  t.equal(stats.loaderErrors, code === FAILED ? 1 : 0, 'loaderErrors')
  t.equal(stats.loaderTimeouts, code === TIMEOUT ? 1 : 0, 'loaderTimeouts')
  t.equal(stats.totalEntries, 0, 'nothing stored')
  t.equal(cache.getGenerationAccess(G1, U1).hit, false, 'nothing cached')
  t.equal(observed.length, 1, 'observed once')
  t.ok(observed[0]?.error instanceof Error, 'the observer gets an Error')
  t.same([observed[0]?.kind, observed[0]?.id, observed[0]?.userId], ['generation', G1, U1])
  return error
}

class DbError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DbError'
  }
}

const THROWN: Array<[string, () => unknown]> = [
  ['null', () => null],
  ['undefined', () => undefined],
  ['a string', () => 'a string'],
  ['42', () => 42],
  ['a Symbol', () => Symbol('nope')],
  ['an object that is not an Error', () => ({ status: 500, detail: 'db down' })],
  ['an Error subclass', () => new DbError('db down')],
  ['an AggregateError', () => new AggregateError([new Error('replica 1'), new Error('replica 2')], 'all replicas down')]
]

for (const [name, make] of THROWN) {
  test(`a resolver that throws ${name} is a 503 FST_AUTHZ_RESOLVER_FAILED, counted, not a 500`, async (t) => {
    for (const mode of ['rejects', 'throws synchronously'] as const) {
      await t.test(mode, async (t) => {
        const value = make()
        const resolver: Resolver = mode === 'rejects'
          ? async () => { throw value }
          : () => { throw value }
        const { cache, observed } = engine(t, resolver)
        const error = await failsClosed(t, cache, observed, FAILED)
        t.equal(error?.cause, value, 'the thrown value is the cause')
        if (value instanceof Error) t.equal(observed[0].error, value, 'an Error is observed as is')
        else t.type(observed[0].error, TypeError, 'a non-Error is observed as a TypeError saying what was thrown')
      })
    }
  })
}

test('a resolver that throws its own FST_AUTHZ_RESOLVER_TIMEOUT is a counted resolver failure, not a 500 nor a timeout of ours', async (t) => {
  const values: Array<[string, unknown]> = [
    ['a plain object with the code', { code: TIMEOUT, statusCode: 200 }],
    ['the error of another cache', new FST_AUTHZ_RESOLVER_TIMEOUT('inner', 5)]
  ]
  for (const [name, value] of values) {
    await t.test(name, async (t) => {
      const { cache, observed } = engine(t, async () => { throw value })
      const error = await failsClosed(t, cache, observed, FAILED)
      t.not(error, value, 'the resolver never picks the error (or the status) the caller gets')
      t.equal(error?.cause, value)
    })
  }
})

function cyclic (): Record<string, unknown> {
  const decision: Record<string, unknown> = { granted: true }
  decision.self = decision
  return decision
}

const ANSWERS: Array<[string, () => unknown]> = [
  ['a BigInt field', () => ({ granted: true, quota: 10n })],
  ['a cycle', cyclic],
  ['a getter that throws', () => ({ granted: true, get mediaUrls (): never { throw new Error('lazy field failed') } })],
  ['a getter on granted that throws', () => ({ get granted (): never { throw new Error('lazy field failed') } })],
  ['a Proxy whose ownKeys trap throws', () => new Proxy({ granted: true }, { ownKeys () { throw new Error('trap') } })],
  ['a Proxy whose getPrototypeOf trap throws a non-Error', () => new Proxy({ granted: true }, { getPrototypeOf () { throw 'trap' } })], // eslint-disable-line no-throw-literal
  ['a toJSON that throws', () => ({ granted: true, toJSON () { throw new Error('no') } })],
  ['a toJSON that turns it into a string', () => ({ granted: true, toJSON () { return 'granted' } })],
  ['a function', () => () => ({ granted: true })],
  ['an array', () => [{ granted: true }]],
  ['a string', () => 'granted']
]

for (const [name, make] of ANSWERS) {
  test(`a resolver that answers ${name} is a 503 FST_AUTHZ_RESOLVER_FAILED, counted, not cached, not a 500`, async (t) => {
    const { cache, observed } = engine(t, async () => make() as Decision)
    const error = await failsClosed(t, cache, observed, FAILED)
    t.type(error?.cause, Error, 'the cause says what was wrong with the answer')
  })
}

test('an answer whose getter changes between reads is served and stored exactly as it was checked', async (t) => {
  let reads = 0
  const { cache } = engine(t, async () => ({ get granted () { return reads++ === 0 ? true : 'yes' } }) as unknown as Decision)
  t.same(await cache.getOrLoad('generation', U1, G1), { granted: true })
  t.same(cache.getGenerationAccess(G1, U1).value, { granted: true })
  t.equal(reads, 1, 'the answer was read once')
})

test('cached(fn) results JSON cannot hold (a function, a symbol, a BigInt) are a counted FST_AUTHZ_RESOLVER_FAILED, never cached', async (t) => {
  const results: Array<[string, unknown]> = [['a function', () => 1], ['a symbol', Symbol('s')], ['a BigInt', 5n], ['a cycle', cyclic()]]
  for (const [name, result] of results) {
    await t.test(name, async (t) => {
      const cache = new AuthzCache({ cleanupIntervalSeconds: 0 })
      t.teardown(() => cache.close())
      let calls = 0
      const load = cache.cached(async function lookupThing (_id: string) { calls++; return result }, { kind: 'thing' })
      for (let i = 1; i <= 2; i++) {
        const error = await rejection(load('x'))
        t.equal(error?.code, FAILED)
        t.equal(error?.statusCode, 503)
        t.equal(calls, i, 'not cached: the next call runs the function again')
      }
      t.equal(cache.getStats().loaderErrors, 2)
      t.equal(cache.getStats().totalEntries, 0)
    })
  }
})

test('cached(fn) returning undefined still answers undefined and caches nothing', async (t) => {
  const { cache, observed } = engine(t, async () => null)
  let calls = 0
  const load = cache.cached(async function nothing () { calls++ }, { kind: 'nothing' })
  t.equal(await load(), undefined)
  t.equal(await load(), undefined)
  t.equal(calls, 2)
  t.equal(cache.getStats().loaderErrors, 0)
  t.equal(observed.length, 0)
})

test('set*() with a value JSON cannot hold throws FST_AUTHZ_OPTIONS, not a bare TypeError, and stores nothing', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0 })
  t.teardown(() => cache.close())
  const cases: Array<[string, () => void]> = [
    ['setGenerationAccess with a BigInt', () => cache.setGenerationAccess(G1, U1, { granted: true, quota: 1n })],
    ['setGenerationAccess with a cycle', () => cache.setGenerationAccess(G1, U1, cyclic() as Decision)],
    ['setUuidValidation with a function', () => cache.setUuidValidation(G1, 'upload', () => true)],
    ['setUuidValidation with a BigInt', () => cache.setUuidValidation(G1, 'upload', 1n)]
  ]
  for (const [name, set] of cases) {
    const error = thrown(t, set)
    t.equal(error.code, 'FST_AUTHZ_OPTIONS', name)
    t.match(error.message, 'Invalid option value:', name)
  }
  t.equal(cache.getStats().totalEntries, 0)
})

test('a loaderFailed observer that throws does not turn a resolver failure into a 500', async (t) => {
  const { cache } = engine(t, async () => { throw new Error('db down') })
  cache.observer = { loaderFailed: () => { throw new Error('logger broke') } }
  const error = await rejection(cache.getOrLoad('generation', U1, G1))
  t.equal(error?.code, FAILED)
  t.equal(cache.getStats().loaderErrors, 1)
})

test('every caller gets the same deep-frozen copy; the resolver\'s own object is neither frozen nor kept', async (t) => {
  const mine = { granted: true, access: ['read'], meta: { urls: ['a.png'] } }
  const gate = deferred<void>()
  const { cache } = engine(t, async () => { await gate.promise; return mine })
  const waiters = [cache.getOrLoad('generation', U1, G1), cache.getOrLoad('generation', U1, G1), cache.getOrLoad('generation', U1, G1)]
  await flush()
  gate.resolve()
  const results = await Promise.all(waiters) as Array<typeof mine>
  for (const result of results) {
    t.equal(result, results[0], 'one copy for every waiter')
    t.not(result, mine, 'not the resolver\'s object')
    t.ok(Object.isFrozen(result) && Object.isFrozen(result.access) && Object.isFrozen(result.meta) && Object.isFrozen(result.meta.urls), 'deep-frozen')
  }
  t.throws(() => { results[0].granted = false }, TypeError, 'writing to it throws (strict mode)')
  t.throws(() => { results[0].access.push('admin') }, TypeError)
  t.notOk(Object.isFrozen(mine) || Object.isFrozen(mine.access) || Object.isFrozen(mine.meta), 'the resolver\'s object stays writable')
  // The user reuses its object: neither the callers nor the cache see it.
  mine.granted = false
  mine.access.push('admin')
  mine.meta.urls.length = 0
  const expected = { granted: true, access: ['read'], meta: { urls: ['a.png'] } }
  t.same(results[0], expected)
  t.same(cache.getGenerationAccess(G1, U1).value, expected)
})

test('a fenced load still hands its callers the frozen copy, and stores nothing', async (t) => {
  const mine = { granted: true, access: ['read'] }
  const gate = deferred<void>()
  const { cache } = engine(t, async () => { await gate.promise; return mine })
  const early = cache.getOrLoad('generation', U1, G1)
  await flush()
  cache.invalidateUserData(U1)
  gate.resolve()
  const result = await early
  t.not(result, mine)
  t.ok(Object.isFrozen(result) && Object.isFrozen(result.access))
  t.notOk(Object.isFrozen(mine))
  await flush()
  t.equal(cache.getGenerationAccess(G1, U1).hit, false, 'fenced: not stored')
})

test('cached(fn) hands every caller a frozen copy, never the function\'s own object', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0 })
  t.teardown(() => cache.close())
  const mine = { plan: 'pro', seats: [1, 2] }
  const load = cache.cached(async function billing (_org: string) { return mine }, { kind: 'billing' })
  const first = await load('o1')
  t.not(first, mine)
  t.ok(Object.isFrozen(first) && Object.isFrozen(first.seats))
  t.notOk(Object.isFrozen(mine))
  t.equal(await load('o1'), first, 'the hit is the same frozen copy')
})

test('an answer that arrives after loaderTimeoutMs because the event loop was blocked is a timeout, never used nor cached', async (t) => {
  const timeoutMs = 20
  let signal: AbortSignal | undefined
  const { cache, observed } = engine(t, ({ signal: s }) => {
    signal = s
    blockFor(3 * timeoutMs)
    return { granted: true }
  }, { loaderTimeoutMs: timeoutMs })
  await failsClosed(t, cache, observed, TIMEOUT)
  t.equal(signal?.aborted, true, 'the signal is aborted')
  t.equal((signal?.reason as Failure | undefined)?.code, TIMEOUT)
  t.equal(observed[0].error.message, `Authorization resolver for generation timed out after ${timeoutMs} ms`)
})

test('a resolver that blocks the event loop past loaderTimeoutMs and then throws is a timeout too', async (t) => {
  const timeoutMs = 20
  const { cache, observed } = engine(t, async () => {
    blockFor(3 * timeoutMs)
    throw new Error('too late anyway')
  }, { loaderTimeoutMs: timeoutMs })
  await failsClosed(t, cache, observed, TIMEOUT)
})

test('an unknown engine option fails with FST_AUTHZ_OPTIONS naming it, instead of being ignored', async (t) => {
  for (const options of [{ maxEntriez: 5 }, { loaderTimeout: 100 }, { maxEntries: 5, ttlSeconds: 60 }, { typo: undefined }]) {
    const name = Object.keys(options).find((key) => key !== 'maxEntries') as string
    const error = thrown(t, () => new AuthzCache(options as never))
    t.equal(error.code, 'FST_AUTHZ_OPTIONS', name)
    t.equal(error.message, `Invalid option ${name}: is not a known option`)
    t.throws(() => resolveCacheOptions(options as never), { code: 'FST_AUTHZ_OPTIONS' })
  }
  const cache = new AuthzCache({ preset: 'production', maxIdLength: 64, now: Date.now, random: Math.random, resolvers: {}, cleanupIntervalSeconds: 0 })
  cache.close()
  t.pass('every known name is accepted')
})

// ------------------------------------------------------------------ over HTTP

interface HttpApp { app: FastifyInstance, headers: { authorization: string }, lines: Array<Record<string, unknown>>, handled: () => number }

/** A logging app whose generation resolver does what `behave(id)` says. */
async function httpApp (t: Test, behave: (id: string) => unknown, extra: Record<string, unknown> = {}): Promise<HttpApp> {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(JSON.parse(chunk.toString())); cb() } })
  const app = Fastify({ logger: { level: 'error', stream } })
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(authzCache, { cleanupIntervalSeconds: 0, resolvers: { generation: async ({ id }) => behave(id) as Decision }, ...extra })
  let handled = 0
  app.get('/generations/:generationId/media', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => {
    handled++
    return { ok: true }
  })
  await app.ready()
  return { app, headers: { authorization: `Bearer ${app.jwt.sign({ sub: U1 })}` }, lines, handled: () => handled }
}

function is503 (t: Test, res: { statusCode: number, json: () => any }, code: string, name: string): void {
  t.equal(res.statusCode, 503, name)
  t.same(Object.keys(res.json()).sort(), ['code', 'error', 'message', 'statusCode'], `${name}: Fastify's error shape`)
  t.equal(res.json().code, code, name)
}

test('over HTTP, whatever a resolver throws is a 503 FST_AUTHZ_RESOLVER_FAILED, logged, and the handler never runs', async (t) => {
  const { app, headers, lines, handled } = await httpApp(t, (id) => { throw THROWN[Number(id)][1]() })
  for (const [i, [name]] of THROWN.entries()) {
    is503(t, await app.inject({ url: `/generations/${i}/media`, headers }), FAILED, `throws ${name}`)
  }
  t.equal(handled(), 0, 'the handler never ran')
  t.equal(app.authz.getStats().loaderErrors, THROWN.length)
  t.equal(app.authz.getStats().totalEntries, 0)
  t.equal(app.authz.getGenerationAccess('0', U1).hit, false)
  t.equal(lines.filter((l) => l.msg === LOGGED).length, THROWN.length, 'one log line per failure')
})

test('over HTTP, an answer that is not a Decision or that JSON cannot hold is a 503 FST_AUTHZ_RESOLVER_FAILED, logged, and the handler never runs', async (t) => {
  const { app, headers, lines, handled } = await httpApp(t, (id) => ANSWERS[Number(id)][1]())
  for (const [i, [name]] of ANSWERS.entries()) {
    is503(t, await app.inject({ url: `/generations/${i}/media`, headers }), FAILED, `answers ${name}`)
  }
  t.equal(handled(), 0, 'the handler never ran')
  t.equal(app.authz.getStats().loaderErrors, ANSWERS.length)
  t.equal(app.authz.getStats().totalEntries, 0)
  t.equal(lines.filter((l) => l.msg === LOGGED).length, ANSWERS.length, 'one log line per failure')
})

test('over HTTP, a grant that arrives after loaderTimeoutMs because the event loop was blocked is a 503 FST_AUTHZ_RESOLVER_TIMEOUT and never used', async (t) => {
  const timeoutMs = 20
  const { app, headers, lines, handled } = await httpApp(t, () => {
    blockFor(3 * timeoutMs)
    return { granted: true }
  }, { loaderTimeoutMs: timeoutMs })
  is503(t, await app.inject({ url: `/generations/${G1}/media`, headers }), TIMEOUT, 'blocked past the timeout')
  t.equal(handled(), 0, 'the handler never ran')
  t.equal(app.authz.getGenerationAccess(G1, U1).hit, false, 'the late grant was not cached')
  t.equal(app.authz.getStats().loaderTimeouts, 1)
  t.equal(lines.filter((l) => l.msg === LOGGED).length, 1)
})
