import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { accountedBytes } from '../lib/engine/store.js'
import { MAX_SECOND_CHANCES } from '../lib/engine/eviction.js'
import { U1, entryBytes, tableResolver } from './helpers.js'

function engine (extra: Record<string, unknown> = {}): AuthzCache {
  return new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: tableResolver().resolver }, ...extra })
}

test('maxEntries is a hard cap, checked after every insert', async (t) => {
  const cache = engine({ maxEntries: 100 })
  t.teardown(() => cache.close())
  let peak = 0
  for (let i = 0; i < 1000; i++) {
    cache.setGenerationAccess(`g${i}`, U1, { granted: true })
    peak = Math.max(peak, cache.getStats().totalEntries)
    // quick-lru by itself would hold up to 2x maxSize; the engine never does.
    t.ok(cache.keys().length <= 100 || t.fail(`live keys over the cap at insert ${i}`))
  }
  t.equal(peak, 100)
  const stats = cache.getStats()
  t.equal(stats.totalEntries, 100)
  t.equal(stats.evictions, 900)
  t.same(cache.keys().length, 100)
  t.equal(cache.getGenerationAccess('g999', U1).hit, true, 'the newest survive')
  t.equal(cache.getGenerationAccess('g899', U1).hit, false, 'the oldest went first')
})

test('clock: eviction follows recency: an entry read recently outlives older unread ones', async (t) => {
  const cache = engine({ maxEntries: 10, evictionPolicy: 'clock' })
  t.teardown(() => cache.close())
  for (let i = 0; i < 10; i++) cache.setGenerationAccess(`g${i}`, U1, { granted: true })
  // Reading g0 marks it used: eviction gives it a second chance.
  for (let i = 10; i < 15; i++) {
    t.equal(cache.getGenerationAccess('g0', U1).hit, true, `g0 still there before insert ${i}`)
    cache.setGenerationAccess(`g${i}`, U1, { granted: true })
  }
  t.equal(cache.getGenerationAccess('g0', U1).hit, true, 'the hot entry was kept')
  t.equal(cache.getGenerationAccess('g1', U1).hit, false, 'the cold ones went')
  t.equal(cache.getStats().totalEntries, 10)
})

test('maxSizeMb holds: accounted bytes never pass the cap', async (t) => {
  const maxSizeMb = 0.05 // 52,428 bytes
  const cache = engine({ maxSizeMb, maxEntries: 100_000 })
  t.teardown(() => cache.close())
  const payload = 'x'.repeat(800)
  for (let i = 0; i < 500; i++) {
    // Ids of one length: every entry accounts the same bytes, whichever the policy kept.
    cache.setGenerationAccess(`g${String(i).padStart(3, '0')}`, U1, { granted: true, note: payload })
    const stats = cache.getStats()
    if (stats.totalSizeMb > maxSizeMb) t.fail(`over the byte cap at ${i}: ${stats.totalSizeMb}`)
  }
  const stats = cache.getStats()
  t.ok(stats.totalEntries > 20, `holds ${stats.totalEntries} entries`)
  t.ok(stats.totalEntries < 60)
  t.ok(stats.evictions > 400)
  const perEntry = accountedBytes(Buffer.byteLength(JSON.stringify({ granted: true, note: payload })), undefined, 'g400', U1, [])
  t.ok(Math.abs(entryBytes(stats) - stats.totalEntries * perEntry) < 2, 'bytes are the sum of the entries (and the sketch)')
})

test('a value larger than the whole cache is not stored', async (t) => {
  const cache = engine({ maxSizeMb: 0.001 })
  t.teardown(() => cache.close())
  cache.setGenerationAccess('small', U1, { granted: true })
  cache.setGenerationAccess('big', U1, { granted: true, blob: 'y'.repeat(5000) })
  t.equal(cache.getGenerationAccess('big', U1).hit, false)
  t.equal(cache.getGenerationAccess('small', U1).hit, true, 'and nothing was evicted for it')
})

test('replacing an entry keeps the counts and the tag index exact', async (t) => {
  const cache = engine({ maxEntries: 5 })
  t.teardown(() => cache.close())
  for (let i = 0; i < 20; i++) cache.setGenerationAccess('g', U1, { granted: i % 2 === 0, tags: [`round:${i}`] })
  t.equal(cache.getStats().totalEntries, 1)
  t.equal(cache.invalidateByTags(['round:0', 'round:18']), 0, 'old tags left with the old values')
  t.equal(cache.invalidateByTags(['round:19']), 1)
  t.equal(cache.getStats().totalEntries, 0)
  t.equal(entryBytes(cache.getStats()), 0)
})

test('evicted entries leave the tag index', async (t) => {
  const cache = engine({ maxEntries: 3 })
  t.teardown(() => cache.close())
  for (let i = 0; i < 10; i++) cache.setGenerationAccess(`g${i}`, `u${i}`, { granted: true, tags: ['shared'] })
  t.equal(cache.invalidateByTags(['shared']), 3, 'only live entries are still indexed')
  t.equal(cache.invalidateUserData('u0'), 0)
})

test('clock: after every entry was read, one insert evicts exactly one entry (the hand walks at most MAX_SECOND_CHANCES entries; it walked the whole cache)', async (t) => {
  const cache = engine({ maxEntries: 1000, evictionPolicy: 'clock' })
  t.teardown(() => cache.close())
  for (let i = 0; i < 1000; i++) cache.setGenerationAccess(`g${i}`, U1, { granted: true })
  for (let i = 0; i < 1000; i++) t.equal(cache.getGenerationAccess(`g${i}`, U1).hit, true) // every used bit set
  cache.setGenerationAccess('new', U1, { granted: true })
  const stats = cache.getStats()
  t.equal(stats.evictions, 1, 'one eviction')
  t.equal(stats.totalEntries, 1000, 'the cap holds')
  const gone = Array.from({ length: 1000 }, (_, i) => `g${i}`).filter((id) => !cache.getGenerationAccess(id, U1).hit)
  t.same(gone, [`g${MAX_SECOND_CHANCES}`], 'the hand cleared the bits of the first MAX_SECOND_CHANCES entries and took the next one')
  t.equal(cache.getGenerationAccess('new', U1).hit, true)
})
