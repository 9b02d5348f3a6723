import { test } from 'tap'
import fc from 'fast-check'
import { AuthzCache } from '../lib/cache.js'
import { MAX_SHARDS, shardHash, shardsFor } from '../lib/engine/kind-index.js'

test('shards grow with maxEntries, as a power of two, up to MAX_SHARDS', async (t) => {
  t.equal(shardsFor(1), 1)
  t.equal(shardsFor(1024), 1)
  t.equal(shardsFor(1025), 2)
  t.equal(shardsFor(1_000_000), 1024)
  t.equal(shardsFor(Number.POSITIVE_INFINITY), MAX_SHARDS)
  fc.assert(fc.property(fc.integer({ min: 1, max: 1e9 }), (n) => {
    const s = shardsFor(n)
    return s >= 1 && s <= MAX_SHARDS && (s & (s - 1)) === 0
  }))
})

test('the shard hash spreads UUIDs and counters evenly, and takes any string', async (t) => {
  for (const [name, id] of [['uuid', (i: number) => `3f2a9c1e-7b4d-4c1a-9e8f-${(i * 2654435761 >>> 0).toString(16).padStart(12, '0')}`], ['counter', (i: number) => String(i)]] as const) {
    const counts = new Array<number>(256).fill(0)
    for (let i = 0; i < 256_000; i++) counts[shardHash(id(i)) & 255]++
    t.ok(Math.max(...counts) < 2 * 1000, `${name}: the fullest of 256 shards holds ${Math.max(...counts)} of 256,000 (even: 1,000)`)
  }
  fc.assert(fc.property(fc.string({ unit: 'grapheme' }), (s) => Number.isInteger(shardHash(s))))
})

test('a cache of a million entries (1,024 shards) finds, lists and removes every entry', async (t) => {
  const cache = new AuthzCache({ maxEntries: 1_000_000, cleanupIntervalSeconds: 0 })
  t.teardown(() => cache.close())
  const ids = Array.from({ length: 3000 }, (_, i) => `g${i}`)
  for (const [i, id] of ids.entries()) cache.setGenerationAccess(id, `u${i % 7}`, { granted: true })
  // two users on one id: the slot holds a map
  cache.setGenerationAccess('g1', 'other', { granted: false })
  t.equal(cache.getStats().totalEntries, 3001)
  t.equal(cache.keys().length, 3001)
  for (const [i, id] of ids.entries()) if (cache.getGenerationAccess(id, `u${i % 7}`).hit !== true) t.fail(`lost ${id}`)
  t.equal(cache.getGenerationAccess('g1', 'other').value?.granted, false)
  t.equal(await cache.invalidate({ userId: 'u3' }), ids.filter((_, i) => i % 7 === 3).length)
  t.equal(await cache.invalidate({ generationId: 'g1' }), 2)
  t.equal(await cache.invalidate({ pattern: 'auth:gen:g2*' }), ids.filter((id, i) => id.startsWith('g2') && i % 7 !== 3).length)
  t.equal(cache.getStats().totalEntries, cache.keys().length)
})
