import { test, type Test } from 'tap'
import fc from 'fast-check'
import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import * as keys from '../lib/keys.js'
import { AuthzCache } from '../lib/cache.js'
import type { ResolvedRedisOptions } from '../lib/options.js'
import { deferred } from './helpers.js'
import { REDIS_URL, eventually, namespace, redisAvailable, resolvedRedis } from './redis-helpers.js'

const { compilePattern, escapeKeySegment, MAX_PATTERN_LENGTH, MAX_PATTERN_STARS } = keys

// Issue 8: '********x' hung an instance holding one entry, and over the Redis bus one admin request froze every instance.
const ADVERSARIAL = ['********x', '*a*a*a*a*a*a*a*a*a*a*b']
const LONG_ID = 'a'.repeat(100)

/** The compilePattern this project shipped before issue 8: the reference semantics (short inputs only, it backtracks). */
function oldRegex (pattern: string): RegExp {
  return new RegExp(`^${pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\/-]/g, '\\$&')).join('[\\s\\S]*')}$`)
}

/** The cost bound the matcher is held to: linear in key plus pattern, so also under 3 x key length x pattern length. */
const bound = (keyLength: number, patternLength: number): number => 3 * (keyLength + patternLength + 1)

/**
 * Comparisons counted and the budget they must stay under, across every
 * `test` the engine or the Redis layer makes. No timing: with the old
 * backtracking regex these tests do not finish (tap's timeout fails them).
 */
interface Meter { steps: number, budget: number, tests: number, redisTests: number }

/** The engine and Redis layer, loaded with a compilePattern that counts (same code, `meter` passed along). */
async function metered (t: Test): Promise<{ meter: Meter, AuthzCache: typeof AuthzCache, connectRedis: typeof import('../lib/redis.js').connectRedis }> {
  const meter: Meter = { steps: 0, budget: 0, tests: 0, redisTests: 0 }
  const counting = (redis: boolean) => (pattern: string): keys.KeyPattern => {
    const compiled = keys.compilePattern(pattern, meter)
    return {
      source: compiled.source,
      test (key: string): boolean {
        meter.tests++
        if (redis) meter.redisTests++
        meter.budget += bound(key.length, pattern.length)
        return compiled.test(key)
      }
    }
  }
  // The engine compiles patterns in its invalidation room: load that room with the counting compilePattern.
  const invalidation = await t.mockImport<typeof import('../lib/engine/invalidation.js')>('../lib/engine/invalidation.js', { '../lib/keys.js': { ...keys, compilePattern: counting(false) } })
  // t.mockImport replaces direct imports only: hand the metered room up the chain (engine, then the facade).
  const engine = await t.mockImport<typeof import('../lib/engine/engine.js')>('../lib/engine/engine.js', { '../lib/engine/invalidation.js': invalidation })
  const cache = await t.mockImport<typeof import('../lib/cache.js')>('../lib/cache.js', { '../lib/engine/engine.js': engine })
  const redis = await t.mockImport<typeof import('../lib/redis.js')>('../lib/redis.js', { '../lib/keys.js': { ...keys, compilePattern: counting(true) } })
  return { meter, AuthzCache: cache.AuthzCache, connectRedis: redis.connectRedis }
}

test('compilePattern: ********x and *a*a*...*b against a 100-a id cost comparisons linear in key + pattern (the old regex hung)', async (t) => {
  const targets = [
    `auth:user:${LONG_ID}:profile`,
    `auth:gen:${LONG_ID}:user:${LONG_ID}:access`,
    LONG_ID,
    'a'.repeat(10_000)
  ]
  for (const pattern of ADVERSARIAL) {
    for (const key of targets) {
      const meter = { steps: 0 }
      t.equal(compilePattern(pattern, meter).test(key), false, `${pattern} does not match a ${key.length}-character key`)
      t.ok(meter.steps <= bound(key.length, pattern.length), `${meter.steps} comparisons <= ${bound(key.length, pattern.length)} for ${pattern} on ${key.length} characters`)
    }
  }
  // The same shapes, made to match: the cost bound holds on success too.
  for (const [pattern, key, expected] of [
    ['********a', LONG_ID, true],
    ['*a*a*a*a*a*a*a*a*a*a*b', `${LONG_ID}b`, true],
    ['a*a*a*', LONG_ID, true],
    // Prefix and suffix fit, so every middle segment is searched through the whole key.
    ['*a*a*a*a*a*a*a*a*a*a*ab*b', `${LONG_ID}b`, false],
    [`a${'*a'.repeat(15)}*b*`, 'a'.repeat(10_000), false],
    // A segment that keeps almost matching: KMP falls back instead of starting over.
    ['*aaaaaaaaab*', 'a'.repeat(10_000), false]
  ] as const) {
    const meter = { steps: 0 }
    t.equal(compilePattern(pattern, meter).test(key), expected, `${pattern} on ${key.length} characters: ${expected}`)
    t.ok(meter.steps <= bound(key.length, pattern.length), `${meter.steps} comparisons <= ${bound(key.length, pattern.length)}`)
  }
  t.equal(compilePattern('a***b**').source, 'a*b*', 'runs of stars are collapsed')
})

test('compilePattern agrees with the old regex on random patterns and keys (fixed seed)', async (t) => {
  const seed = 20240808
  const alphabet = fc.constantFrom('a', 'b', '*', ':', '%', '.')
  const pattern = fc.string({ unit: alphabet, maxLength: 8 })
  const key = fc.string({ unit: fc.constantFrom('a', 'b', ':', '%', '.', '*'), maxLength: 14 })
  t.doesNotThrow(() => fc.assert(fc.property(pattern, key, (p, k) => {
    const meter = { steps: 0 }
    const ours = compilePattern(p, meter).test(k)
    return ours === oldRegex(p).test(k) && meter.steps <= bound(k.length, p.length)
  }), { seed, numRuns: 20_000 }), `seed ${seed}`)
  // Keys built to match: a pattern's literal pieces with random fillers for its stars.
  t.doesNotThrow(() => fc.assert(fc.property(pattern, fc.array(fc.string({ unit: alphabet, maxLength: 4 }), { minLength: 9, maxLength: 9 }), (p, fillers) => {
    const k = p.split('*').map((piece, i) => i === 0 ? piece : fillers[i - 1] + piece).join('')
    return compilePattern(p).test(k) && oldRegex(p).test(k)
  }), { seed, numRuns: 5000 }), `seed ${seed}`)
})

test('L1: one adversarial pattern no longer hangs an instance holding one entry', async (t) => {
  const { meter, AuthzCache } = await metered(t)
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => null } })
  t.teardown(() => cache.close())
  cache.setGenerationAccess(LONG_ID, LONG_ID, { granted: true })
  cache.setUserProfile(LONG_ID, { granted: true })
  for (const pattern of ADVERSARIAL) t.equal(cache.invalidateByPattern(pattern), 0, `${pattern} touches nothing`)
  t.equal(meter.tests, 4, 'each pattern was tested against both keys')
  t.ok(meter.steps <= meter.budget, `${meter.steps} comparisons within ${meter.budget}`)
  t.equal(cache.invalidateByPattern('auth:gen:*a*a*:user:*'), 1, 'a pattern of the same shape that matches removes the entry')
  t.equal(cache.getUserProfile(LONG_ID).hit, true)
})

test('L1: a load in flight is checked against adversarial patterns in linear time, and fenced by one that matches', async (t) => {
  const { meter, AuthzCache } = await metered(t)
  const gate = deferred<void>()
  let calls = 0
  const cache = new AuthzCache({
    cleanupIntervalSeconds: 0,
    resolvers: { generation: async () => { calls++; await gate.promise; return { granted: true } } }
  })
  t.teardown(() => cache.close())
  const pending = cache.getOrLoad('generation', LONG_ID, LONG_ID)
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(calls, 1, 'the load is in flight')
  for (const pattern of ADVERSARIAL) cache.invalidateByPattern(pattern)
  t.equal(meter.tests, 2, 'each pattern was tested against the load in flight')
  t.ok(meter.steps <= meter.budget, `${meter.steps} comparisons within ${meter.budget}`)
  cache.invalidateByPattern('*a*a*a*a*a*a*a*a*a*a*s')
  gate.resolve()
  t.same(await pending, { granted: true })
  t.equal(cache.getGenerationAccess(LONG_ID, LONG_ID).hit, false, 'the matching pattern fenced the load: its answer was not stored')
  t.ok(meter.steps <= meter.budget)
})

test('patterns longer than MAX_PATTERN_LENGTH or with more than MAX_PATTERN_STARS stars are refused, naming pattern', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => null } })
  t.teardown(() => cache.close())
  cache.setUserProfile('u1', { granted: true })
  t.equal(MAX_PATTERN_LENGTH, 1024)
  t.equal(MAX_PATTERN_STARS, 16)
  for (const pattern of ['a'.repeat(MAX_PATTERN_LENGTH + 1), '*'.repeat(MAX_PATTERN_STARS + 1), `${'*x'.repeat(MAX_PATTERN_STARS)}*`]) {
    t.throws(() => cache.invalidateByPattern(pattern), { code: 'FST_AUTHZ_OPTIONS', message: /Invalid option pattern/ })
    await t.rejects(cache.invalidate({ pattern }), { code: 'FST_AUTHZ_OPTIONS' })
  }
  t.equal(cache.getStats().totalEntries, 1, 'nothing removed')
  t.equal(cache.invalidateByPattern(`${'*'.repeat(MAX_PATTERN_STARS)}${'a'.repeat(MAX_PATTERN_LENGTH - MAX_PATTERN_STARS)}`), 0, 'the limits themselves are accepted')
  t.equal(cache.invalidateByPattern('auth:user:u1:*'), 1)
})

function logger (errors: unknown[][]): FastifyBaseLogger {
  const noop = (): void => {}
  const log = { level: 'info', fatal: noop, error: (...args: unknown[]) => { errors.push(args) }, warn: noop, info: noop, debug: noop, trace: noop, silent: noop, child: () => log }
  return log as unknown as FastifyBaseLogger
}

const available = await redisAvailable()
if (available === false) {
  test('pattern invalidation over Redis', { skip: `no Redis at ${REDIS_URL}` }, () => {})
} else {
  const redisOptions = (ns: ReturnType<typeof namespace>, client: Redis): ResolvedRedisOptions => resolvedRedis(ns, { client, url: undefined, ackTimeoutMs: 250 })

  test('L2 + bus: one adversarial pattern request no longer freezes every instance', async (t) => {
    const { meter, AuthzCache, connectRedis } = await metered(t)
    const ns = namespace()
    t.teardown(ns.cleanup)
    const client = new Redis(REDIS_URL)
    t.teardown(() => client.quit())
    const matches: string[] = []
    const scan = client.scan.bind(client) as unknown as (...args: Array<string | number>) => Promise<[string, string[]]>
    ;(client as unknown as { scan: typeof scan }).scan = (...args) => {
      matches.push(String(args[args.indexOf('MATCH') + 1]))
      return scan(...args)
    }
    const engines = [0, 1].map(() => new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => ({ granted: true }) } }))
    const errors: unknown[][] = []
    for (const engine of engines) {
      const layer = await connectRedis(engine, redisOptions(ns, client), logger(errors))
      t.teardown(async () => { engine.close(); await layer.close() })
    }
    const [a, b] = engines
    await a.getOrLoad('generation', LONG_ID, LONG_ID)
    await b.getOrLoad('generation', LONG_ID, LONG_ID)
    const l2Key = `${ns.keyPrefix}v:auth:gen:${LONG_ID}:user:${LONG_ID}:access`
    t.equal(await ns.raw.exists(l2Key), 1, 'in L2')
    t.equal(b.getGenerationAccess(LONG_ID, LONG_ID).hit, true, 'and in B L1')

    for (const pattern of ADVERSARIAL) await a.invalidate({ pattern })
    t.same(matches, [`${ns.keyPrefix}v:*x`, `${ns.keyPrefix}v:*a*a*a*a*a*a*a*a*a*a*b`], 'Redis MATCH got the patterns with runs of stars collapsed')
    t.ok(await eventually(() => (b.getStats().redis?.received ?? 0) === 2), 'B received both over the bus')
    t.equal(meter.tests, 4, 'A L1 and B L1 (from the bus) each tested both patterns')
    t.equal(meter.redisTests, 0, 'MATCH let no key through to the L2 filter')
    t.ok(meter.steps <= meter.budget, `${meter.steps} comparisons within ${meter.budget}`)
    t.equal(await ns.raw.exists(l2Key), 1, 'L2 kept the entry')
    t.equal(b.getGenerationAccess(LONG_ID, LONG_ID).hit, true, 'B kept it')
    t.same(errors, [], 'no message was refused')

    await a.invalidate({ pattern: 'auth:gen:*a*a*a*:user:**a:*' })
    t.equal(await ns.raw.exists(l2Key), 0, 'a matching pattern of the same shape reaches L2')
    t.ok(await eventually(() => !b.getGenerationAccess(LONG_ID, LONG_ID).hit), 'and B')
    t.equal(meter.redisTests, 1, 'the L2 SCAN filter tested the one key MATCH let through')
    t.ok(meter.steps <= meter.budget, `${meter.steps} comparisons within ${meter.budget}, the L2 filter included`)
  })

  test('the bus: a message the engine refuses now clears the instance instead of being ignored', async (t) => {
    const ns = namespace()
    t.teardown(ns.cleanup)
    const client = new Redis(REDIS_URL)
    t.teardown(() => client.quit())
    const { connectRedis } = await import('../lib/redis.js')
    const engine = new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: async () => null } })
    const errors: unknown[][] = []
    const layer = await connectRedis(engine, redisOptions(ns, client), logger(errors))
    t.teardown(async () => { engine.close(); await layer.close() })
    const messages = [
      'not json',
      'null',
      '42',
      JSON.stringify({ from: 'another-instance' }),
      JSON.stringify({ from: 'another-instance', request: { userId: 42 } }),
      JSON.stringify({ from: 'another-instance', request: { pattern: 'a'.repeat(MAX_PATTERN_LENGTH + 1) } }),
      JSON.stringify({ from: 'another-instance', request: { pattern: '*x'.repeat(MAX_PATTERN_STARS + 1) } })
    ]
    for (const [i, message] of messages.entries()) {
      engine.setGenerationAccess('g1', 'u1', { granted: true })
      engine.setGenerationAccess('g2', 'u2', { granted: true })
      await ns.raw.publish(ns.channel, message)
      t.ok(await eventually(() => engine.getStats().totalEntries === 0), `${message.slice(0, 40)}: every entry dropped`)
      t.equal(errors.length, i + 1, 'logged at error')
    }
    t.match(String(errors[0][1]), /malformed invalidation message/)
    engine.setGenerationAccess('g1', 'u1', { granted: true })
    engine.setGenerationAccess('g2', 'u2', { granted: true })
    await ns.raw.publish(ns.channel, JSON.stringify({ from: 'another-instance', request: { userId: 'u1' } }))
    t.ok(await eventually(() => engine.getStats().totalEntries === 1), 'a valid message still removes only what it names')
    t.equal(errors.length, messages.length)
  })
}

test('escaped ids keep adversarial characters literal in patterns', async (t) => {
  const id = '*a*:%'
  const p = compilePattern(`auth:user:${escapeKeySegment(id)}:*`)
  t.ok(p.test(`auth:user:${escapeKeySegment(id)}:profile`))
  t.notOk(p.test('auth:user:xaxx:profile'))
})
