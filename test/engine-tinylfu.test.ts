import { test } from 'tap'
import fc from 'fast-check'
import { AuthzCache } from '../lib/cache.js'
import { DENIAL_PENALTY, HASH_FLOOD_THRESHOLD, WINDOW_SHARE } from '../lib/engine/eviction.js'
import { FrequencySketch, HALVING_STEP_WORDS, MAX_COUNT, SAMPLE_FACTOR, addressHash, mix } from '../lib/engine/sketch.js'
import { MB, U1, U2, entryBytes, seededRandom as seeded } from './helpers.js'

function engine (extra: Record<string, unknown> = {}): AuthzCache {
  return new AuthzCache({ cleanupIntervalSeconds: 0, ttlJitterPercent: 0, maxSizeMb: 1024, ...extra })
}

/** Reads (kind generation, user U1) `times` times: misses count in the sketch like hits. */
function ask (cache: AuthzCache, id: string, times: number, userId = U1): void {
  for (let i = 0; i < times; i++) cache.getGenerationAccess(id, userId)
}

test('the sketch: the doorkeeper takes the first access, four counters the rest, saturating at MAX_COUNT', async (t) => {
  const sketch = new FrequencySketch(1000)
  const key = mix(12345)
  t.equal(sketch.estimate(key), 0, 'never seen')
  sketch.increment(key)
  t.equal(sketch.estimate(key), 1, 'the doorkeeper holds it')
  t.equal(sketch.additions, 0, 'a first access does not age the sketch')
  for (let i = 2; i <= 40; i++) {
    sketch.increment(key)
    t.equal(sketch.estimate(key), Math.min(i, MAX_COUNT + 1), `after ${i} accesses`)
  }
  t.equal(sketch.additions, MAX_COUNT, 'accesses past saturation add nothing either')
  t.equal(sketch.estimate(mix(54321)), 0, 'another key is still unseen')
})

test('the sketch halves every sampleSize recorded accesses, counters and doorkeeper alike', async (t) => {
  const capacity = 100
  const sketch = new FrequencySketch(capacity)
  t.equal(sketch.sampleSize, capacity * SAMPLE_FACTOR)
  const hot = mix(1)
  for (let i = 0; i < 20; i++) sketch.increment(hot)
  t.equal(sketch.estimate(hot), MAX_COUNT + 1)
  const halvedAfter: number[] = []
  // 100 entries round up to 128: 256 words of counters (4 a block: 64 blocks) and 128 x 32 doorkeeper bits.
  t.equal(sketch.bytes, 256 * 4 + 128 * 4)
  const blocks = 64
  for (let i = 2; halvedAfter.length < 3; i++) {
    const key = mix(i * 7919)
    // Keys outside the hot key's block leave its counters alone: the halvings alone move them.
    if ((key & (blocks - 1)) === (hot & (blocks - 1))) continue
    // Each key twice: the doorkeeper takes the first, the counters the second.
    for (let twice = 0; twice < 2; twice++) {
      const additions = sketch.additions
      const resets = sketch.resets
      sketch.increment(key)
      if (sketch.resets !== resets) {
        halvedAfter.push(additions + 1)
        t.equal(sketch.additions, 0, 'the count starts over')
        t.ok(sketch.halving, 'the halving has started')
        if (halvedAfter.length === 1) {
          // 256 words, 32 a step, one step per access that reaches the counters (from the next one on).
          const probe = key
          let steps = 0
          while (sketch.halving) {
            sketch.add(probe)
            steps++
          }
          t.equal(steps, 256 / HALVING_STEP_WORDS, 'in steps of HALVING_STEP_WORDS words')
          t.equal(sketch.estimate(hot), MAX_COUNT >>> 1, 'the hot key halved, its nibble did not borrow from a neighbour, and the doorkeeper forgot it')
        }
      }
    }
  }
  t.same(halvedAfter, [sketch.sampleSize, sketch.sampleSize, sketch.sampleSize], 'on schedule: on the sampleSize-th recorded access, every time')
  sketch.finishHalving()
  t.ok(sketch.estimate(hot) < MAX_COUNT >>> 1, 'it keeps ageing')
})

test('the sketch is sized by the caps: ~12 bytes per entry of maxEntries, never more than the bytes allow, counted in totalSizeMb', async (t) => {
  const small = engine({ maxEntries: 10_000 })
  const large = engine({ maxEntries: 100_000 })
  const bytesBound = engine({ maxEntries: 1_000_000, maxSizeMb: 1 })
  t.teardown(() => { small.close(); large.close(); bytesBound.close() })
  const s = small.getStats().eviction.sketchBytes
  const l = large.getStats().eviction.sketchBytes
  t.equal(s, FrequencySketch.bytesFor(10_000))
  t.ok(s >= 10_000 * 12 && s <= 2 * 10_000 * 12, `10k entries: ${s} bytes`)
  t.ok(l >= 8 * s, `scales with maxEntries: ${l} bytes for 100k`)
  const b = bytesBound.getStats()
  t.ok(b.eviction.sketchBytes <= MB / 8, `1M entries in 1 MiB: the sketch is sized for what 1 MiB holds (${b.eviction.sketchBytes} bytes)`)
  t.equal(Math.round(b.totalSizeMb * MB), b.eviction.sketchBytes, 'an empty cache accounts its sketch')
  const clock = engine({ maxEntries: 10_000, evictionPolicy: 'clock' })
  t.teardown(() => clock.close())
  t.same(clock.getStats().eviction, { policy: 'clock', windowEntries: 0, admitted: 0, rejected: 0, sketchResets: 0, sketchBytes: 0 })
})

test('evictionPolicy: a bad value fails with FST_AUTHZ_OPTIONS naming the option', async (t) => {
  for (const bad of ['lru', 'TinyLFU', 1, null]) {
    t.throws(() => new AuthzCache({ evictionPolicy: bad as any }), { code: 'FST_AUTHZ_OPTIONS', message: /evictionPolicy/ })
  }
})

test('a scan of 100k one-shot keys does not evict a key read 1,000 times (regression: CLOCK let a scan flush it)', async (t) => {
  for (const policy of ['tinylfu', 'clock'] as const) {
    const cache = engine({ evictionPolicy: policy, random: seeded(1) })
    t.teardown(() => cache.close())
    cache.setGenerationAccess('hot', U1, { granted: true })
    ask(cache, 'hot', 1000)
    for (let i = 0; i < 100_000; i++) {
      const id = `scan-${i}`
      if (!cache.getGenerationAccess(id, U2).hit) cache.setGenerationAccess(id, U2, { granted: true })
    }
    const stats = cache.getStats()
    t.equal(stats.totalEntries, 10_000, `${policy}: the cache is full`)
    const survived = cache.getGenerationAccess('hot', U1).hit
    if (policy === 'tinylfu') {
      t.equal(survived, true, 'tinylfu: the hot key survived the scan')
      t.ok(stats.eviction.rejected > 80_000, `tinylfu: the scan's keys lost their duels (${stats.eviction.rejected} rejected)`)
    } else {
      t.equal(survived, false, 'clock: the same scan evicts it (the test can fail)')
    }
  }
})

test('admission is deterministic under a seeded random source', async (t) => {
  const run = (seed: number): { keys: string[], admitted: number, rejected: number } => {
    const cache = engine({ maxEntries: 200, random: seeded(seed) })
    const random = seeded(99)
    for (let i = 0; i < 20_000; i++) {
      // Skewed ids: some hot, many one-shot.
      const id = `g${Math.floor(1000 * random() ** 3)}`
      if (!cache.getGenerationAccess(id, U1).hit) cache.setGenerationAccess(id, U1, { granted: random() < 0.8 })
    }
    const { admitted, rejected } = cache.getStats().eviction
    const keys = cache.keys().sort()
    cache.close()
    return { keys, admitted, rejected }
  }
  const a = run(7)
  t.ok(a.admitted > 0 && a.rejected > 0, `both outcomes happened (${a.admitted} admitted, ${a.rejected} rejected)`)
  t.same(run(7), a, 'same seed, same trace: the same duels and the same cache')
})

/**
 * A cache of 100 (window of one) whose main region holds 99 grants, each
 * read `victimReads` times after it was stored; then `candidate` is asked
 * for `candidateReads` times (misses), stored as a grant or a denial, and a
 * last insert makes the window push it into a duel.
 */
function duel (opts: { candidateReads: number, victimReads: number, denied: boolean, random?: () => number }): { admitted: boolean } {
  const cache = engine({ maxEntries: 100, random: opts.random ?? (() => 0.5) })
  try {
    for (let i = 0; i < 100; i++) cache.setGenerationAccess(`m${i}`, U1, { granted: true })
    for (let i = 0; i < 100; i++) ask(cache, `m${i}`, opts.victimReads)
    ask(cache, 'candidate', opts.candidateReads)
    cache.setGenerationAccess('candidate', U1, { granted: !opts.denied })
    const before = cache.getStats().eviction
    cache.setGenerationAccess('pusher', U1, { granted: true })
    const after = cache.getStats().eviction
    if (after.admitted + after.rejected !== before.admitted + before.rejected + 1) throw new Error('expected one duel')
    return { admitted: cache.getGenerationAccess('candidate', U1).hit }
  } finally {
    cache.close()
  }
}

test('a duel: the candidate stays only when asked for more often than the victim', async (t) => {
  t.equal(WINDOW_SHARE * 100, 1, 'a cache of 100 has a window of one')
  t.equal(duel({ candidateReads: 5, victimReads: 3, denied: false }).admitted, true, 'a grant asked for 5 times beats grants read 3 times')
  t.equal(duel({ candidateReads: 3, victimReads: 3, denied: false }).admitted, false, 'a tie keeps the victim')
  t.equal(duel({ candidateReads: 1, victimReads: 3, denied: false }).admitted, false, 'a one-shot key never gets in')
})

test('denials must be clearly hotter than the grant they would replace (DENIAL_PENALTY)', async (t) => {
  t.equal(DENIAL_PENALTY, 2)
  t.equal(duel({ candidateReads: 5, victimReads: 3, denied: true }).admitted, false, 'a denial asked for 5 times loses to grants read 3 times')
  t.equal(duel({ candidateReads: 5 + DENIAL_PENALTY, victimReads: 3, denied: true }).admitted, true, 'a denial asked for 7 times wins')
})

test('hash-flood defence: a warm candidate that loses is admitted once in 128 duels, decided by the random source', async (t) => {
  // Victims read 9 times: hotter than the candidate, and 900 hits stay under the sketch's first halving (1,000 for a cache of 100).
  const reads = HASH_FLOOD_THRESHOLD + 1
  t.equal(duel({ candidateReads: reads, victimReads: 9, denied: false, random: () => 0.5 }).admitted, false, 'random 0.5: rejected')
  t.equal(duel({ candidateReads: reads, victimReads: 9, denied: false, random: () => 0 }).admitted, true, 'random 0: admitted anyway')
  t.equal(duel({ candidateReads: 2, victimReads: 9, denied: false, random: () => 0 }).admitted, false, 'a cold candidate never')
})

test('one user streaming distinct denials does not evict other users\' grants (regression: 101,000 extra resolver calls)', async (t) => {
  const extraGrantLoads: Record<string, number> = {}
  for (const policy of ['tinylfu', 'clock'] as const) {
    let grantLoads = 0
    const cache = new AuthzCache({
      cleanupIntervalSeconds: 0,
      maxEntries: 300,
      random: seeded(3),
      evictionPolicy: policy,
      resolvers: {
        generation: async ({ userId }) => {
          if (userId === 'crawler') return { granted: false }
          grantLoads++
          return { granted: true }
        }
      }
    })
    t.teardown(() => cache.close())
    let denied = 0
    // 200 users' grants, read once a round, and 400 distinct denials a round: 600 keys a round through a cache of 300.
    for (let round = 0; round < 20; round++) {
      for (let u = 0; u < 200; u++) await cache.getOrLoad('generation', `user-${u}`, `g-${u}`)
      for (let i = 0; i < 400; i++) {
        const d = await cache.getOrLoad('generation', 'crawler', `probe-${denied++}`)
        if (d.granted) t.fail('a denial was served as a grant')
      }
    }
    extraGrantLoads[policy] = grantLoads - 200
  }
  t.ok(extraGrantLoads.clock > 1000, `clock reloads grants the denials pushed out: ${extraGrantLoads.clock} extra calls (the test can fail)`)
  t.ok(extraGrantLoads.tinylfu <= extraGrantLoads.clock / 100, `tinylfu: ${extraGrantLoads.tinylfu} extra calls against clock's ${extraGrantLoads.clock}`)
})

test('caps hold exactly under any sequence of inserts, reads, replacements and invalidations (fast-check), both policies', async (t) => {
  const op = fc.oneof(
    fc.record({ type: fc.constant('set' as const), id: fc.integer({ min: 0, max: 300 }), size: fc.integer({ min: 0, max: 3000 }), granted: fc.boolean() }),
    fc.record({ type: fc.constant('get' as const), id: fc.integer({ min: 0, max: 300 }), times: fc.integer({ min: 1, max: 20 }) }),
    fc.record({ type: fc.constant('invalidate' as const), id: fc.integer({ min: 0, max: 300 }) })
  )
  fc.assert(fc.property(
    fc.constantFrom('tinylfu' as const, 'clock' as const),
    fc.integer({ min: 1, max: 120 }),
    fc.double({ min: 0.02, max: 0.3, noNaN: true }),
    fc.integer(),
    fc.array(op, { maxLength: 400 }),
    (policy, maxEntries, maxSizeMb, seed, ops) => {
      const cache = engine({ evictionPolicy: policy, maxEntries, maxSizeMb, random: seeded(seed) })
      try {
        for (const o of ops) {
          if (o.type === 'set') cache.setGenerationAccess(`g${o.id}`, U1, { granted: o.granted, pad: 'p'.repeat(o.size) })
          else if (o.type === 'get') ask(cache, `g${o.id}`, o.times)
          else cache.invalidateGenerationData(`g${o.id}`)
          const stats = cache.getStats()
          if (stats.totalEntries > maxEntries) return false
          if (stats.totalSizeMb * MB > maxSizeMb * MB + 1) return false
          if (entryBytes(stats) < 0 || stats.eviction.windowEntries > stats.totalEntries) return false
          if (cache.keys().length !== stats.totalEntries) return false
        }
        return true
      } finally {
        cache.close()
      }
    }
  ), { numRuns: 300 })
  t.pass('caps held')
})

test('addressHash: every character counts, and the seed changes every hash', async (t) => {
  const a = addressHash(1, 0, 'generation-0001-suffix', U1)
  t.not(addressHash(1, 0, 'generation-0002-suffix', U1), a, 'a middle character')
  t.not(addressHash(1, 0, 'generation-0001-suffix', U2), a, 'the user')
  t.not(addressHash(1, 1, 'generation-0001-suffix', U1), a, 'the kind (salt)')
  t.not(addressHash(2, 0, 'generation-0001-suffix', U1), a, 'the seed')
  t.not(addressHash(1, 0, 'ab', 'c'), addressHash(1, 0, 'a', 'bc'), 'where the id ends')
})

test('while the window is not full, room comes from the main region (the byte cap binds first)', async (t) => {
  // 1,000 entries allowed (a window of 10; the bytes could hold 1,000 small ones), but only ~40 of these.
  const cache = engine({ maxEntries: 1000, maxSizeMb: 0.25, random: seeded(5) })
  t.teardown(() => cache.close())
  const pad = 'p'.repeat(4000)
  let i = 0
  while (cache.getStats().evictions === 0) cache.setGenerationAccess(`g${String(i++).padStart(3, '0')}`, U1, { granted: true, pad })
  const held = cache.getStats().totalEntries
  t.equal(cache.getStats().eviction.windowEntries, 10, 'the window is full')
  // The newest five sit in the window: invalidated, they leave it half empty.
  for (let k = i - 5; k < i; k++) cache.invalidateGenerationData(`g${String(k).padStart(3, '0')}`)
  t.equal(cache.getStats().eviction.windowEntries, 5)
  const before = cache.getStats().evictions
  cache.setGenerationAccess('big', U1, { granted: true, pad: 'q'.repeat(40_000) })
  const stats = cache.getStats()
  t.ok(stats.evictions - before > 1, `the big entry made room in the main region (${stats.evictions - before} evictions)`)
  t.equal(stats.eviction.windowEntries, 6, 'the window kept its five and took the big one')
  t.ok(stats.totalEntries < held)
  t.ok(stats.totalSizeMb <= 0.25)
  t.equal(cache.getGenerationAccess('big', U1).hit, true)
})
