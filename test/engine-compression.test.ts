import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { G1, G2, MB, U1, entryBytes } from './helpers.js'

const mediaUrls = Array.from({ length: 40 }, (_, i) => `https://cdn.example.com/media/${G1}/frame-${i}.png`)

test('values above the threshold are stored compressed and read back transparently', async (t) => {
  const on = new AuthzCache({ cleanupIntervalSeconds: 0, compressionEnabled: true, compressionThresholdBytes: 1024, resolvers: { generation: async () => null } })
  const off = new AuthzCache({ cleanupIntervalSeconds: 0, compressionEnabled: false, resolvers: { generation: async () => null } })
  t.teardown(() => { on.close(); off.close() })
  const big = { granted: true, access: ['read'], mediaUrls }
  t.ok(JSON.stringify(big).length > 1024)
  on.setGenerationAccess(G1, U1, big)
  off.setGenerationAccess(G1, U1, big)
  t.same(on.getGenerationAccess(G1, U1).value, big)
  t.same(on.getGenerationAccess(G1, U1).value, big, 'every read decodes the same value')
  const onBytes = entryBytes(on.getStats()) / MB
  const offBytes = entryBytes(off.getStats()) / MB
  t.ok(onBytes < offBytes / 2, `counted at the stored size (${onBytes} MB vs ${offBytes} MB)`)

  on.setGenerationAccess(G2, U1, { granted: true })
  t.ok(Object.isFrozen(on.getGenerationAccess(G2, U1).value), 'small values are kept as frozen objects')
  const unpacked = on.getGenerationAccess(G1, U1).value as unknown as { mediaUrls: string[] }
  t.ok(Object.isFrozen(unpacked) && Object.isFrozen(unpacked.mediaUrls), 'a compressed hit is frozen too (it was a mutable copy)')
})

test('cached() memoizes by arguments with one call at a time, and failures are not cached', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0 })
  t.teardown(() => cache.close())
  let calls = 0
  let fail = false
  async function quota (userId: string, opts: { plan: string, region?: string }): Promise<{ remaining: number }> {
    calls++
    await new Promise((resolve) => setImmediate(resolve))
    if (fail) throw new Error('quota service down')
    return { remaining: userId.length + opts.plan.length }
  }
  const cachedQuota = cache.cached(quota, { ttlSeconds: 60 })
  const [a, b] = await Promise.all([cachedQuota('u1', { plan: 'pro', region: 'eu' }), cachedQuota('u1', { region: 'eu', plan: 'pro' })])
  t.same(a, { remaining: 5 })
  t.same(b, a)
  t.equal(calls, 1, 'argument order inside objects does not matter')
  await cachedQuota('u2', { plan: 'pro' })
  t.equal(calls, 2)
  t.equal(cache.invalidateByPattern('cached:quota:*'), 2)
  fail = true
  await t.rejects(cachedQuota('u3', { plan: 'x' }), { code: 'FST_AUTHZ_RESOLVER_FAILED' })
  fail = false
  t.same(await cachedQuota('u3', { plan: 'x' }), { remaining: 3 })
  t.equal(calls, 4)

  const byKey = cache.cached(async (id: string) => ({ id, at: calls++ }), { kind: 'lookup', key: (id: string) => id.toLowerCase() })
  t.same(await byKey('ABC'), await byKey('abc'), 'a custom key decides what is shared')
  t.type(cache.cached(async () => 1), 'function', 'an anonymous function gets a kind of its own')
  t.throws(() => cache.cached(async function quota () { return 2 }), { code: 'FST_AUTHZ_OPTIONS' }, 'two functions cannot share a kind')
  t.throws(() => cache.cached(quota, { ttlSeconds: 0 }), { code: 'FST_AUTHZ_OPTIONS' })
  t.throws(() => cache.cached('x' as never), { code: 'FST_AUTHZ_OPTIONS' })
  const badKey = cache.cached(async () => 1, { kind: 'badkey', key: () => 5 as never })
  await t.rejects(badKey(), { code: 'FST_AUTHZ_OPTIONS' })
})
