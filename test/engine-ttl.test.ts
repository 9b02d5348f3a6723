import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { G1, G2, U1, fakeClock, tableResolver } from './helpers.js'

function engine (clock: { now: () => number }, extra: Record<string, unknown> = {}): AuthzCache {
  return new AuthzCache({ cleanupIntervalSeconds: 0, now: clock.now, random: () => 0, resolvers: { generation: tableResolver().resolver }, ...extra })
}

test('granted entries live authTtlSeconds, denials negativeTtlSeconds, fixed from the write', async (t) => {
  const clock = fakeClock()
  const cache = engine(clock, { authTtlSeconds: 600, negativeTtlSeconds: 30 })
  t.teardown(() => cache.close())
  cache.setGenerationAccess(G1, U1, { granted: true })
  cache.setGenerationAccess(G2, U1, { granted: false })
  clock.tick(29_999)
  t.equal(cache.getGenerationAccess(G2, U1).hit, true)
  clock.tick(1)
  t.equal(cache.getGenerationAccess(G2, U1).hit, false, 'a denial is gone after 30 s')
  clock.tick(500_000)
  t.equal(cache.getGenerationAccess(G1, U1).hit, true, 'reading does not extend the TTL...')
  clock.tick(70_000 - 1)
  t.equal(cache.getGenerationAccess(G1, U1).hit, true)
  clock.tick(1)
  t.equal(cache.getGenerationAccess(G1, U1).hit, false, '...it expires 600 s after the write')
  t.equal(cache.getStats().expirations, 2)
  t.equal(cache.getStats().totalEntries, 0)
})

test('a decision ttlSeconds and a set ttlSeconds override the kind TTL', async (t) => {
  const clock = fakeClock()
  const cache = engine(clock)
  t.teardown(() => cache.close())
  cache.setGenerationAccess(G1, U1, { granted: true, ttlSeconds: 5 })
  cache.setUserProfile(U1, { name: 'x' }, { ttlSeconds: 2 })
  clock.tick(2000)
  t.equal(cache.getUserProfile(U1).hit, false)
  t.equal(cache.getGenerationAccess(G1, U1).hit, true)
  clock.tick(3000)
  t.equal(cache.getGenerationAccess(G1, U1).hit, false)
})

test('uuid validations live uuidValidationTtlSeconds', async (t) => {
  const clock = fakeClock()
  const cache = engine(clock, { uuidValidationTtlSeconds: 3600 })
  t.teardown(() => cache.close())
  cache.setUuidValidation(G1, 'ctx', true)
  clock.tick(3_599_999)
  t.equal(cache.getUuidValidation(G1, 'ctx').value, true)
  clock.tick(1)
  t.equal(cache.getUuidValidation(G1, 'ctx').hit, false)
})

test('jitter only ever shortens a TTL, by at most ttlJitterPercent', async (t) => {
  const clock = fakeClock()
  let r = 0
  const cache = engine(clock, { random: () => r, ttlJitterPercent: 10, authTtlSeconds: 100 })
  t.teardown(() => cache.close())
  r = 0.999999
  cache.setGenerationAccess(G1, U1, { granted: true })
  r = 0
  cache.setGenerationAccess(G2, U1, { granted: true })
  clock.tick(89_999)
  t.equal(cache.getGenerationAccess(G1, U1).hit, true, 'never shorter than 90%')
  clock.tick(2)
  t.equal(cache.getGenerationAccess(G1, U1).hit, false, 'max jitter: 10% shorter')
  t.equal(cache.getGenerationAccess(G2, U1).hit, true)
  clock.tick(9_999)
  t.equal(cache.getGenerationAccess(G2, U1).hit, false, 'never longer than the TTL')
})

test('sweep removes expired entries and their tags without a read', async (t) => {
  const clock = fakeClock()
  const cache = engine(clock, { negativeTtlSeconds: 10 })
  t.teardown(() => cache.close())
  for (let i = 0; i < 50; i++) cache.setGenerationAccess(`g${i}`, U1, { granted: i % 2 === 0 })
  clock.tick(10_000)
  t.equal(cache.sweep(), 25)
  const stats = cache.getStats()
  t.equal(stats.totalEntries, 25)
  t.equal(stats.expirations, 25)
  t.equal(cache.invalidateUserData(U1), 25, 'the user tag only points at live entries')
})

test('the background sweep runs on its interval and stops on close', async (t) => {
  let now = 1_000_000
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0.02, negativeTtlSeconds: 1, now: () => now, random: () => 0, resolvers: { generation: tableResolver().resolver } })
  for (let i = 0; i < 30; i++) cache.setGenerationAccess(`g${i}`, U1, { granted: false })
  now += 1000
  await new Promise((resolve) => setTimeout(resolve, 120))
  t.equal(cache.getStats().expirations, 30, 'expired without being read')
  cache.close()
  t.equal(cache.getStats().totalEntries, 0)
})
