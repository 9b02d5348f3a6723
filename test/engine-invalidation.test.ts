import { test } from 'tap'
import { AuthzCache } from '../lib/cache.js'
import { G1, G2, U1, U2, entryBytes, thrown } from './helpers.js'

function filled (): AuthzCache {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, maxEntries: 100_000, resolvers: { generation: async () => null, project: async () => null, team: async () => null, document: async () => null } })
  cache.setGenerationAccess(G1, U1, { granted: true, tags: ['project:p1'] })
  cache.setGenerationAccess(G1, U2, { granted: true })
  cache.setGenerationAccess(G2, U1, { granted: false })
  cache.setProjectAccess('p1', U1, { granted: true })
  cache.setProjectAccess('p1', U2, { granted: true })
  cache.setTeamRole('t1', U1, { granted: true, role: 'owner' })
  cache.setUserProfile(U1, { name: 'Ada' })
  cache.setUserProfile(U2, { name: 'Bo' })
  return cache
}

test('invalidateUserData removes every entry of that user and nothing else', async (t) => {
  const cache = filled()
  t.teardown(() => cache.close())
  const logged: Array<[unknown, number, string]> = []
  cache.observer = { invalidated: (request, removed, origin) => logged.push([request, removed, origin]) }
  t.equal(cache.invalidateUserData(U1), 5)
  t.equal(cache.getStats().totalEntries, 3)
  t.equal(cache.getUserProfile(U2).hit, true)
  t.equal(cache.getGenerationAccess(G1, U2).hit, true)
  t.equal(cache.getStats().invalidations, 5)
  t.same(logged, [[{ userId: U1 }, 5, 'local']])
})

test('generation, project and team data go by resource, across users', async (t) => {
  const cache = filled()
  t.teardown(() => cache.close())
  t.equal(cache.invalidateGenerationData(G1), 2)
  t.equal(cache.invalidateProjectData('p1'), 2)
  t.equal(cache.invalidateTeamData('t1'), 1)
  t.equal(cache.getStats().totalEntries, 3)
})

test('a decision tag invalidates with its resource', async (t) => {
  const cache = filled()
  t.teardown(() => cache.close())
  t.equal(cache.invalidateByTags(['project:p1']), 3, 'two project entries and the generation tagged with it')
  t.equal(cache.getGenerationAccess(G1, U1).hit, false)
})

test('tags, keys, patterns and all combine in one request', async (t) => {
  const cache = filled()
  t.teardown(() => cache.close())
  t.equal(await cache.invalidate({ keys: [`auth:user:${U2}:profile`, 'auth:nothing'], pattern: 'auth:team:*', tags: ['nope'] }), 2)
  t.equal(cache.getStats().totalEntries, 6)
  t.equal(await cache.invalidate({ userId: U2, generationId: G2 }), 3)
  t.equal(cache.clear(), 3)
  t.equal(cache.getStats().totalEntries, 0)
  t.equal(entryBytes(cache.getStats()), 0, 'only the sketch is left')
  t.same(cache.keys(), [])
})

test('malformed invalidation requests are refused before anything is removed', async (t) => {
  const cache = filled()
  t.teardown(() => cache.close())
  for (const [request, name] of [[{ userId: 42 }, 'userId'], [{ tags: 'x' }, 'tags'], [{ keys: [''] }, 'keys'], [{ pattern: '' }, 'pattern'], [{ all: 'yes' }, 'all'], [null, 'invalidation']] as const) {
    const error = thrown(t, () => cache.apply(request as never))
    t.equal(error.code, 'FST_AUTHZ_OPTIONS')
    t.match(error.message, name)
  }
  t.equal(cache.getStats().totalEntries, 8)
})

test('invalidating one user in a large cache touches only that user entries', async (t) => {
  const cache = new AuthzCache({ cleanupIntervalSeconds: 0, maxEntries: 200_000, maxSizeMb: 1024, resolvers: { generation: async () => null } })
  t.teardown(() => cache.close())
  for (let i = 0; i < 100_000; i++) cache.setGenerationAccess(`g${i}`, `u${i % 5000}`, { granted: true })
  t.equal(cache.invalidateUserData('u42'), 20)
  t.equal(cache.getStats().totalEntries, 99_980)
  t.equal(cache.invalidateUserData('u42'), 0)
})
