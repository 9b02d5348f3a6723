import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { G1, G2, U1, U2, tableResolver, thrown } from './helpers.js'

function engine (extra: Record<string, unknown> = {}): AuthzCache {
  const db = tableResolver()
  return new AuthzCache({ cleanupIntervalSeconds: 0, resolvers: { generation: db.resolver, project: db.resolver, team: db.resolver, profile: db.resolver }, ...extra })
}

test('seed manager methods store and read back with { value, hit }', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  t.same(cache.getGenerationAccess(G1, U1), { value: undefined, hit: false })
  cache.setGenerationAccess(G1, U1, { granted: true, access: ['read'] })
  t.same(cache.getGenerationAccess(G1, U1), { value: { granted: true, access: ['read'] }, hit: true })
  t.same(cache.getGenerationAccess(G1, U2), { value: undefined, hit: false }, 'other user misses')
  t.same(cache.getGenerationAccess(G2, U1), { value: undefined, hit: false }, 'other generation misses')

  cache.setProjectAccess('p1', U1, { granted: true, access: ['read', 'write'] })
  t.same(cache.getProjectAccess('p1', U1).value, { granted: true, access: ['read', 'write'] })
  cache.setTeamRole('t1', U1, { granted: true, role: 'admin' })
  t.equal(cache.getTeamRole('t1', U1).value?.role, 'admin')
  cache.setUserProfile(U1, { name: 'Ada', plan: 'pro' })
  t.same(cache.getUserProfile(U1), { value: { name: 'Ada', plan: 'pro' }, hit: true })
  cache.setUuidValidation(G1, 'upload', { valid: true })
  t.same(cache.getUuidValidation(G1, 'upload'), { value: { valid: true }, hit: true })
  t.same(cache.getUuidValidation(G1, 'download'), { value: undefined, hit: false })

  t.same(cache.keys().sort(), [
    `auth:gen:${G1}:user:${U1}:access`,
    `auth:project:p1:user:${U1}:access`,
    `auth:team:t1:user:${U1}:role`,
    `auth:user:${U1}:profile`,
    cache.keys().find((k) => k.startsWith('uuid:validation:'))
  ].sort(), 'keys follow the seed hierarchy')
  const uuidKey = cache.keys().find((k) => k.startsWith('uuid:validation:')) as string
  t.match(uuidKey, /^uuid:validation:[0-9a-f]{32}:context:upload$/)
  t.notOk(uuidKey.includes(G1), 'the uuid itself is hashed out of the key')
})

test('stored decisions are private frozen copies', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const decision = { granted: true, access: ['read'] }
  cache.setGenerationAccess(G1, U1, decision)
  decision.access.push('write')
  const read = cache.getGenerationAccess(G1, U1).value
  t.same(read, { granted: true, access: ['read'] }, 'later changes to the caller object do not leak in')
  t.ok(Object.isFrozen(read))
  t.ok(Object.isFrozen(read?.access))
  t.notOk(Object.isFrozen(decision), 'the caller object is left alone')
})

test('ids that are not non-empty strings are rejected with FST_AUTHZ_BAD_ID', async (t) => {
  const cache = engine({ maxIdLength: 10 })
  t.teardown(() => cache.close())
  for (const bad of ['', 42, null, undefined, {}, 'x'.repeat(11)]) {
    const error = thrown(t, () => cache.getGenerationAccess(bad as string, U1))
    t.equal(error.code, 'FST_AUTHZ_BAD_ID', `generation id ${String(bad)}`)
    t.equal(error.statusCode, 400)
    t.equal(thrown(t, () => cache.setGenerationAccess(G1, bad as string, { granted: true })).code, 'FST_AUTHZ_BAD_ID')
  }
  await t.rejects(cache.getOrLoad('generation', U1, ''), { code: 'FST_AUTHZ_BAD_ID' })
  await t.rejects(cache.getOrLoad('generation', '', 'g'), { code: 'FST_AUTHZ_BAD_ID' })
})

test('unknown kinds and invalid stored values are refused', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  t.equal(thrown(t, () => cache.kind('document')).code, 'FST_AUTHZ_UNKNOWN_KIND')
  await t.rejects(cache.getOrLoad('document', U1, 'd1'), { code: 'FST_AUTHZ_UNKNOWN_KIND' })
  t.notOk(cache.hasKind('document'))
  t.ok(cache.hasKind('generation'))
  t.same(cache.kinds.sort(), ['generation', 'profile', 'project', 'team'])
  t.equal(thrown(t, () => cache.setGenerationAccess(G1, U1, { granted: 'yes' } as never)).code, 'FST_AUTHZ_OPTIONS')
  t.equal(thrown(t, () => cache.setGenerationAccess(G1, U1, { granted: true, access: 'read' } as never)).code, 'FST_AUTHZ_OPTIONS')
  t.equal(thrown(t, () => cache.setGenerationAccess(G1, U1, { granted: true }, { ttlSeconds: -1 })).code, 'FST_AUTHZ_OPTIONS')
  t.equal(thrown(t, () => cache.setUuidValidation(G1, 'c', undefined)).code, 'FST_AUTHZ_OPTIONS')
  t.equal(cache.getStats().totalEntries, 0, 'nothing was stored')
})

test('a stored null is a denial, never null', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  cache.setGenerationAccess(G1, U1, null)
  t.same(cache.getGenerationAccess(G1, U1).value, { granted: false })
})

test('stats count hits and misses by kind and report targets', async (t) => {
  const cache = engine({ targetHitRatePercent: 50 })
  t.teardown(() => cache.close())
  cache.setGenerationAccess(G1, U1, { granted: true })
  for (let i = 0; i < 63; i++) cache.getGenerationAccess(G1, U1)
  cache.getGenerationAccess(G2, U1)
  cache.getProjectAccess('p', U1)
  const stats = cache.getStats()
  t.equal(stats.hits, 63)
  t.equal(stats.misses, 2)
  t.equal(stats.hitRatePercent, 96.92)
  t.same(stats.byKind.generation, { hits: 63, misses: 1, hitRatePercent: 98.44 })
  t.same(stats.byKind.project, { hits: 0, misses: 1, hitRatePercent: 0 })
  t.equal(stats.totalEntries, 1)
  t.ok(stats.totalSizeMb > 0)
  t.ok(stats.averageAccessTimeMs > 0, 'sampled hits were timed')
  t.ok(stats.p99AccessTimeMs >= 0)
  t.equal(stats.performanceTargets.targetHitRatePercent, 50)
  t.equal(stats.performanceTargets.meetingHitRateTarget, true)
  t.equal(stats.performanceTargets.targetAccessTimeMs, 5)
  t.equal(stats.performanceTargets.meetingAccessTimeTarget, true)
  const empty = engine()
  t.teardown(() => empty.close())
  t.equal(empty.getStats().performanceTargets.meetingHitRateTarget, false, 'no traffic is not meeting a hit-rate target')
})

test('warm preloads entries and validates them', async (t) => {
  const cache = engine()
  t.teardown(() => cache.close())
  const stored = await cache.warm([
    { kind: 'generation', userId: U1, id: G1, decision: { granted: true } },
    { kind: 'profile', userId: U2, decision: { granted: true, name: 'Bo' } }
  ])
  t.equal(stored, 2)
  t.equal(cache.getGenerationAccess(G1, U1).hit, true)
  t.equal(cache.getUserProfile(U2).value?.name, 'Bo')
  await t.rejects(cache.warm([null as never]), { code: 'FST_AUTHZ_OPTIONS' })
  await t.rejects(cache.warm([{ kind: 'nope', userId: U1, id: G1, decision: { granted: true } }]), { code: 'FST_AUTHZ_UNKNOWN_KIND' })
})
